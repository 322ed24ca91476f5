"""Which days a DAG run was asked for: from its conf or the asset events that triggered it.

Pure functions of the run's context, imported by the DAG files at parse time. No run reads its days
off the clock: a run asked for none covers a watermark (ml.orchestration.watermarks), and the
simulated clock loads the day after the loaded watermark (ml.ingest.world).
"""

from __future__ import annotations

from datetime import date, datetime, timedelta
from typing import Any, Iterable, Mapping

from ml.core.errors import TidemarkError

RAW_ASSET_NAME = "raw"


class OrchestrationError(TidemarkError, RuntimeError):
    """Airflow could not be prepared, or a run was asked for something it cannot do; the message says what."""


def requested_interval(
    conf: Mapping[str, Any] | None,
    triggering_asset_events: Mapping[Any, Iterable[Any]] | None,
    *,
    asset_name: str = RAW_ASSET_NAME,
) -> dict[str, str] | None:
    """The inclusive as-of dates a run was asked for, or None when neither its conf nor its events name any.

    dag_run.conf `start`/`end` (either alone means one day); else the min start and max end in the
    extras of the triggering `asset_name` events.
    """
    conf = conf or {}
    if conf.get("start") or conf.get("end"):
        start = parse_day(conf.get("start") or conf["end"], "dag_run.conf start")
        end = parse_day(conf.get("end") or conf["start"], "dag_run.conf end")
        return _interval(start, end, "dag_run.conf")

    starts, ends = [], []
    for asset, events in (triggering_asset_events or {}).items():
        if getattr(asset, "name", asset) != asset_name:
            continue
        for event in events:
            extra = (event.get("extra") if isinstance(event, Mapping) else getattr(event, "extra", None)) or {}
            if extra.get("start") and extra.get("end"):
                starts.append(parse_day(extra["start"], f"the {asset_name} asset event's start"))
                ends.append(parse_day(extra["end"], f"the {asset_name} asset event's end"))
    if starts:
        return _interval(min(starts), max(ends), f"the triggering {asset_name} asset events")
    return None


def requested_as_of(conf: Mapping[str, Any] | None,
                    triggering_asset_events: Mapping[Any, Iterable[Any]] | None) -> date | None:
    """The as-of date a training run was asked for: conf `as_of`, else the latest `as_of`/`end` in the
    triggering asset events' extras; None when neither names one (a scheduled run)."""
    conf = conf or {}
    if conf.get("as_of"):
        return parse_day(conf["as_of"], "dag_run.conf as_of")
    found = []
    for events in (triggering_asset_events or {}).values():
        for event in events:
            extra = (event.get("extra") if isinstance(event, Mapping) else getattr(event, "extra", None)) or {}
            value = extra.get("as_of") or extra.get("end")
            if value:
                found.append(parse_day(value, "the triggering asset event's as_of"))
    return max(found) if found else None


def interval_days(interval: Mapping[str, Any]) -> list[date]:
    """The days of an interval from resolve_interval, in order: its `days` when it lists them (the dates of
    a weekly or monthly grid), else every day from start to end."""
    if interval.get("days"):
        return [date.fromisoformat(day) for day in interval["days"]]
    start, end = date.fromisoformat(interval["start"]), date.fromisoformat(interval["end"])
    return [start + timedelta(days=i) for i in range((end - start).days + 1)]


def parse_day(value: Any, what: str) -> date:
    if isinstance(value, datetime):
        return value.date()
    if isinstance(value, date):
        return value
    try:
        return datetime.fromisoformat(str(value)).date()
    except ValueError:
        raise OrchestrationError(f"{what} is {value!r}, not a date; use YYYY-MM-DD, e.g. 2025-01-31") from None


def _interval(start: date, end: date, source: str) -> dict[str, str]:
    if end < start:
        raise OrchestrationError(f"{source} gives end {end} before start {start}")
    return {"start": start.isoformat(), "end": end.isoformat()}


