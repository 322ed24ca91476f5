"""Which days a DAG run covers: from its conf, the asset events that triggered it, or its data interval.

Pure functions of the run's context, imported by the DAG files at parse time.
"""

from __future__ import annotations

from datetime import date, datetime, timedelta
from typing import Any, Iterable, Mapping

from ml.core.errors import TidemarkError

RAW_ASSET_NAME = "raw"


class OrchestrationError(TidemarkError, RuntimeError):
    """Airflow could not be prepared, or a run was asked for something it cannot do; the message says what."""


def resolve_interval(
    conf: Mapping[str, Any] | None,
    triggering_asset_events: Mapping[Any, Iterable[Any]] | None,
    data_interval_start: datetime | None,
    data_interval_end: datetime | None,
    *,
    asset_name: str = RAW_ASSET_NAME,
) -> dict[str, str]:
    """The inclusive as-of dates a run covers, as {"start": ISO date, "end": ISO date}.

    In order: dag_run.conf `start`/`end` (either alone means one day); else the min start and max
    end in the extras of the triggering `asset_name` events; else the run's data interval, whose end
    is exclusive. A point-in-time interval (start == end, as trigger timetables and manual runs
    give) covers the last whole day before it. Only a loader may read days off the clock like this:
    the DAGs that build on loaded data bound their days by a watermark (ml.orchestration.watermarks).
    """
    requested = requested_interval(conf, triggering_asset_events, asset_name=asset_name)
    if requested is not None:
        return requested
    if data_interval_start is None or data_interval_end is None:
        raise OrchestrationError(
            "this run has no interval: pass dag_run.conf like {\"start\": \"2025-01-01\", \"end\": \"2025-01-31\"}"
        )
    if data_interval_end <= data_interval_start:
        day = data_interval_start.date() - timedelta(days=1)
        return _interval(day, day, "the data interval")
    end = (data_interval_end - timedelta(microseconds=1)).date()
    return _interval(data_interval_start.date(), end, "the data interval")


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


def resolve_as_of(
    conf: Mapping[str, Any] | None,
    triggering_asset_events: Mapping[Any, Iterable[Any]] | None,
    data_interval_end: datetime | None,
    run_after: datetime | None = None,
) -> date:
    """The as-of date of a training run: conf `as_of`, else the latest `as_of`/`end` in the triggering
    asset events' extras, else the day before the data interval's end (or before run_after)."""
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
    if found:
        return max(found)
    moment = data_interval_end or run_after
    if moment is None:
        raise OrchestrationError('this run has no as-of date: pass dag_run.conf like {"as_of": "2025-04-01"}')
    return (moment - timedelta(microseconds=1)).date()


def interval_days(interval: Mapping[str, str]) -> list[date]:
    """Every day in an interval from resolve_interval, in order."""
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


