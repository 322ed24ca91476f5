"""Watermarks: the last day whose inputs have landed, and the days a run may produce under it.

Two watermarks bound the pipeline. The loaded watermark is the last raw `ingest_date` with no gap
before it: every day from the first one loaded into any raw table up to it has landed (the loader
writes all of a day's raw tables in one transaction). The features watermark is the latest as-of
date in a feature relation. build_features builds no day after the loaded watermark; scoring and
monitoring touch no day after the features watermark. A run asked for later days is refused with
the days and the watermark named; a run asked for no days covers the watermark, never the clock.

The functions without a `settings` argument are pure; the others read the warehouse read-only.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date, timedelta
from typing import TYPE_CHECKING, Any, Iterable, Mapping

from ml.core.settings import Settings
from ml.orchestration.intervals import (
    RAW_ASSET_NAME,
    OrchestrationError,
    parse_day,
    requested_interval,
)

if TYPE_CHECKING:
    from ml.core.spec import ModelSpec

LOADED = ("the loaded watermark", "the last raw ingest_date with no gap before it")
BUILD_HINT = "build their features first (the build_features DAG, or `python -m ml dbt build`)"


class WatermarkError(OrchestrationError):
    """A run asked for days after its inputs' watermark, or none of its inputs have landed."""


@dataclass(frozen=True)
class Landed:
    """The raw days that landed with no gap: the first one, and the last one (the loaded watermark)."""

    first: date
    watermark: date


# -- pure -----------------------------------------------------------------------------------------
def landed_span(days: Iterable[date]) -> Landed | None:
    """The unbroken run of days that starts at the earliest of `days`; None when there are none."""
    ordered = sorted(set(days))
    if not ordered:
        return None
    last = ordered[0]
    for day in ordered[1:]:
        if day != last + timedelta(days=1):
            break
        last = day
    return Landed(ordered[0], last)


def build_interval(requested: Mapping[str, str] | None, landed: Landed | None,
                   features_watermark: date | None) -> dict[str, str]:
    """The as-of dates build_features builds, as {"start", "end"}.

    Asked for days: those days, refused when any is after the loaded watermark. Asked for none: the
    days after the features watermark up to the loaded watermark (from the first landed day when
    there are no features yet), or the loaded watermark's day alone when the features reach it.
    """
    if landed is None:
        raise WatermarkError("no raw day has landed in the warehouse, so there are no features to build; load "
                             "days first (the ingest_raw DAG, or `python -m ml simulate`)")
    if requested is not None:
        _refuse_after(requested, landed.watermark, "build features for", LOADED,
                      "load those days first (the ingest_raw DAG, or `python -m ml simulate --only-day D`)")
        return {"start": requested["start"], "end": requested["end"]}
    start = landed.first if features_watermark is None else features_watermark + timedelta(days=1)
    start = min(max(start, landed.first), landed.watermark)
    return {"start": start.isoformat(), "end": landed.watermark.isoformat()}


def features_interval(requested: Mapping[str, str] | None, watermark: date | None, *, action: str,
                      relation: str) -> dict[str, str]:
    """The as-of dates a run may `action` on the features of `relation`, as {"start", "end"}.

    Asked for days: those days, refused when any is after the features watermark. Asked for none:
    the watermark's day.
    """
    if watermark is None:
        raise WatermarkError(f"{relation} holds no feature rows, so there is nothing to {action}; {BUILD_HINT}")
    if requested is None:
        return {"start": watermark.isoformat(), "end": watermark.isoformat()}
    _refuse_after(requested, watermark, action, ("the features watermark", f"the latest as-of date in {relation}"),
                  BUILD_HINT)
    return {"start": requested["start"], "end": requested["end"]}


def _refuse_after(requested: Mapping[str, str], watermark: date, action: str, named: tuple[str, str],
                  remedy: str) -> None:
    """Raise a WatermarkError naming the requested days after `watermark`, if there are any.

    `named` is the watermark's name and what it means, both for the message.
    """
    start, end = date.fromisoformat(requested["start"]), date.fromisoformat(requested["end"])
    if end <= watermark:
        return
    first_late = max(start, watermark + timedelta(days=1))
    late = f"{first_late} is" if first_late == end else f"{first_late}..{end} are"
    raise WatermarkError(f"refusing to {action} {_span(start, end)}: {late} after {named[0]} {watermark} "
                         f"({named[1]}); {remedy}, or ask for days up to {watermark}")


def _span(start: date, end: date) -> str:
    return start.isoformat() if start == end else f"{start}..{end}"


# -- read from the warehouse ----------------------------------------------------------------------
def loaded_days(settings: Settings) -> list[date]:
    """Every ingest_date found in any raw table, in no particular order."""
    import sqlalchemy as sa

    from ml.core.sql import named_table
    from ml.core.warehouse import Warehouse
    from ml.ingest.raw_tables import RAW_SCHEMAS

    if not has_warehouse(settings):
        return []
    with Warehouse.connect(settings, read_only=True) as wh:
        tables = [named_table(f"raw.{name}", "ingest_date") for name in RAW_SCHEMAS if wh.table_exists(f"raw.{name}")]
        if not tables:
            return []
        selects = [sa.select(t.c.ingest_date).distinct() for t in tables]
        rows = wh.rows(sa.union(*selects) if len(selects) > 1 else selects[0])
    return [parse_day(row["ingest_date"], "a raw ingest_date") for row in rows]


def latest_day(settings: Settings, relation: str, column: str) -> date | None:
    """The latest `column` in `relation` (schema.table); None when it is missing or empty."""
    import sqlalchemy as sa

    from ml.core.sql import named_table
    from ml.core.warehouse import Warehouse

    if not has_warehouse(settings):
        return None
    with Warehouse.connect(settings, read_only=True) as wh:
        if not wh.table_exists(relation):
            return None
        value = wh.scalar(sa.select(sa.func.max(named_table(relation, column).c[column])))
    return None if value is None else parse_day(value, f"the latest {column} in {relation}")


def has_warehouse(settings: Settings) -> bool:
    """False for a DuckDB file that does not exist yet: nothing has landed, and read-only cannot create it."""
    return settings.warehouse.kind != "duckdb" or settings.warehouse.path.exists()


# -- what the DAG tasks and commands call ---------------------------------------------------------
def resolve_build_interval(settings: Settings, conf: Mapping[str, Any] | None,
                           triggering_asset_events: Mapping[Any, Iterable[Any]] | None) -> dict[str, str]:
    """The days a build_features run builds: `build_interval` over the warehouse's two watermarks."""
    from ml.features.marts import FEATURES_TABLE

    requested = requested_interval(conf, triggering_asset_events, asset_name=RAW_ASSET_NAME)
    landed = landed_span(loaded_days(settings))
    features = None if requested is not None else latest_day(settings, FEATURES_TABLE, "as_of_date")
    return build_interval(requested, landed, features)


def resolve_features_interval(spec: "ModelSpec", settings: Settings, requested: Mapping[str, str] | None, *,
                              action: str) -> dict[str, str]:
    """The days a scoring or monitoring run covers: `features_interval` over the spec's features watermark.

    A spec without a time column reads a snapshot, which has no watermark: its runs must name their days.
    """
    from ml.core.spec import dbt_relation

    if spec.time_column is None:
        if requested is None:
            raise WatermarkError(f"spec {spec.name!r} has no time_column, so its features have no watermark; name "
                                 f"the days to {action} (dag_run.conf {{\"start\": ..., \"end\": ...}} or --date)")
        return {"start": requested["start"], "end": requested["end"]}
    relation = dbt_relation(settings.dbt_manifest, spec.features.relation)
    name = f"{relation.schema}.{relation.identifier}"
    watermark = latest_day(settings, relation.qualified, spec.time_column)
    interval = features_interval(requested, watermark, action=action, relation=name)
    cadence = spec.cadence or infer_cadence(as_of_dates(settings, relation.qualified, spec.time_column,
                                                        until=watermark, latest=12))
    if cadence == "daily":
        return interval
    held = as_of_dates(settings, relation.qualified, spec.time_column, since=date.fromisoformat(interval["start"]),
                       until=date.fromisoformat(interval["end"]))
    return grid_interval(interval, held, cadence=cadence, action=action, relation=name)


# -- the as-of grid -------------------------------------------------------------------------------
CADENCE_DAYS = {"daily": 1, "weekly": 7, "monthly": 31}


def infer_cadence(days: Iterable[date]) -> str:
    """daily, weekly or monthly: the typical gap between the distinct as-of dates `days` (daily when too few)."""
    ordered = sorted(set(days))
    gaps = sorted((b - a).days for a, b in zip(ordered, ordered[1:]))
    if not gaps:
        return "daily"
    typical = gaps[len(gaps) // 2]
    return "daily" if typical <= 1 else "weekly" if typical <= 7 else "monthly"


def grid_interval(interval: Mapping[str, str], held: Iterable[date], *, cadence: str, action: str,
                  relation: str) -> dict[str, Any]:
    """The interval with `days`: those of its days that are on a weekly or monthly grid (the as-of dates
    the relation holds). NothingToDo, naming the grid, when none of them is."""
    from ml.core.errors import NothingToDo

    start, end = date.fromisoformat(interval["start"]), date.fromisoformat(interval["end"])
    days = sorted(d for d in set(held) if start <= d <= end)
    if not days:
        raise NothingToDo(f"no {cadence} as-of date of {relation} falls on {_span(start, end)}, so there is "
                          f"nothing to {action}; its grid's dates are the ones it holds")
    return {"start": interval["start"], "end": interval["end"], "cadence": cadence,
            "days": [d.isoformat() for d in days]}


def as_of_dates(settings: Settings, relation: str, column: str, *, until: date, since: date | None = None,
                latest: int | None = None) -> list[date]:
    """The distinct values of `column` in `relation` from `since` (or the first) to `until`, latest first; only the
    `latest` ones when given."""
    import sqlalchemy as sa

    from ml.core.sql import named_table
    from ml.core.warehouse import Warehouse

    col = named_table(relation, column).c[column]
    query = sa.select(col).where(col <= until, *([col >= since] if since else [])).distinct().order_by(col.desc())
    with Warehouse.connect(settings, read_only=True) as wh:
        rows = wh.rows(query.limit(latest) if latest else query)
    return [parse_day(row[column], f"a {column} in {relation}") for row in rows]
