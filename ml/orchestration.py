"""The typed functions that Airflow tasks call, and the one-time Airflow setup.

Nothing here imports Airflow, Cosmos, numpy or a database driver at module level: DAG files import
this module at parse time.
"""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
import tempfile
from datetime import date, datetime, timedelta
from pathlib import Path
from typing import Any, Iterable, Mapping

from ml.settings import Settings

log = logging.getLogger(__name__)

WAREHOUSE_POOL = "warehouse"
GPU_POOL = "gpu"
# Celery queue of the tasks that can use a GPU; executors without queues ignore it.
GPU_QUEUE = os.environ.get("TIDEMARK_GPU_QUEUE", "gpu")
POOLS = {
    WAREHOUSE_POOL: "One slot: DuckDB allows one writer, so every task that writes the warehouse queues here.",
    GPU_POOL: "One slot: training tasks that use the GPU run one at a time.",
}
RAW_ASSET_NAME = "raw"

# Defaults of the simulator parameters that the ingest DAG exposes as Airflow Params.
SIM_DEFAULTS: dict[str, Any] = {"seed": 7, "customers": 5_000, "sim_start": "2025-01-01", "drift_date": "2025-04-01"}


class OrchestrationError(RuntimeError):
    """Airflow could not be prepared, or a run was asked for something it cannot do; the message says what."""


# -- one-time setup ------------------------------------------------------------------------------
def init_airflow(settings: Settings, env: Mapping[str, str] | None = None) -> None:
    """Create or upgrade Airflow's metadata DB (SQLite under TIDEMARK_HOME unless `env` names another)
    and create the pools. Idempotent."""
    env = {**os.environ, **settings.airflow_env()} if env is None else dict(env)
    settings.airflow_home.mkdir(parents=True, exist_ok=True)
    _airflow(["db", "migrate"], env)
    pools = {name: {"slots": 1, "description": text} for name, text in POOLS.items()}
    with tempfile.NamedTemporaryFile("w", suffix=".json", dir=settings.airflow_home, delete=False) as fh:
        json.dump(pools, fh)
    try:
        _airflow(["pools", "import", fh.name], env)
    finally:
        os.unlink(fh.name)
    # Also pin Cosmos telemetry off in airflow.cfg, for processes started without our environment.
    _pin_config(settings.airflow_home / "airflow.cfg", "cosmos", "enable_telemetry", "False")
    log.info("Airflow is ready in %s (pools: %s)", settings.airflow_home, ", ".join(POOLS))


def _airflow(args: list[str], env: Mapping[str, str]) -> None:
    exe = Path(sys.executable).with_name("airflow")
    cmd = [str(exe) if exe.exists() else "airflow", *args]
    proc = subprocess.run(cmd, env=dict(env), text=True, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    if proc.returncode:
        raise OrchestrationError(f"`airflow {' '.join(args)}` failed ({proc.returncode}):\n{proc.stdout[-3000:]}")


def _pin_config(path: Path, section: str, key: str, value: str) -> None:
    """Set `key = value` in `[section]` of an ini file, keeping every other line as it is."""
    lines = path.read_text().splitlines() if path.exists() else []
    stripped = [line.strip() for line in lines]
    if f"[{section}]" not in stripped:
        lines += ["", f"[{section}]"]
        stripped += ["", f"[{section}]"]
    at = stripped.index(f"[{section}]") + 1
    end = next((i for i in range(at, len(lines)) if stripped[i].startswith("[")), len(lines))
    current = [i for i in range(at, end) if stripped[i].split("=")[0].strip() == key]
    if current:
        lines[current[0]] = f"{key} = {value}"
    else:
        lines.insert(at, f"{key} = {value}")
    path.write_text("\n".join(lines) + "\n")


# -- intervals -----------------------------------------------------------------------------------
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
    give) covers the last whole day before it.
    """
    conf = conf or {}
    if conf.get("start") or conf.get("end"):
        start = _day(conf.get("start") or conf["end"], "dag_run.conf start")
        end = _day(conf.get("end") or conf["start"], "dag_run.conf end")
        return _interval(start, end, "dag_run.conf")

    starts, ends = [], []
    for asset, events in (triggering_asset_events or {}).items():
        if getattr(asset, "name", asset) != asset_name:
            continue
        for event in events:
            extra = (event.get("extra") if isinstance(event, Mapping) else getattr(event, "extra", None)) or {}
            if extra.get("start") and extra.get("end"):
                starts.append(_day(extra["start"], f"the {asset_name} asset event's start"))
                ends.append(_day(extra["end"], f"the {asset_name} asset event's end"))
    if starts:
        return _interval(min(starts), max(ends), f"the triggering {asset_name} asset events")

    if data_interval_start is None or data_interval_end is None:
        raise OrchestrationError(
            "this run has no interval: pass dag_run.conf like {\"start\": \"2025-01-01\", \"end\": \"2025-01-31\"}"
        )
    if data_interval_end <= data_interval_start:
        day = data_interval_start.date() - timedelta(days=1)
        return _interval(day, day, "the data interval")
    end = (data_interval_end - timedelta(microseconds=1)).date()
    return _interval(data_interval_start.date(), end, "the data interval")


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
        return _day(conf["as_of"], "dag_run.conf as_of")
    found = []
    for events in (triggering_asset_events or {}).values():
        for event in events:
            extra = (event.get("extra") if isinstance(event, Mapping) else getattr(event, "extra", None)) or {}
            value = extra.get("as_of") or extra.get("end")
            if value:
                found.append(_day(value, "the triggering asset event's as_of"))
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


def _day(value: Any, what: str) -> date:
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


# -- ingest --------------------------------------------------------------------------------------
def sim_config(params: Mapping[str, Any], through: date):
    """The simulator config for the DAG's params, long enough to reach `through`."""
    from ml.simulate import SimConfig

    p = {**SIM_DEFAULTS, **{k: v for k, v in params.items() if k in SIM_DEFAULTS}}
    start = _day(p["sim_start"], "param sim_start")
    if through < start:
        raise OrchestrationError(f"the interval ends {through}, before the simulation starts (sim_start={start})")
    drift = _day(p["drift_date"], "param drift_date") if p["drift_date"] else None
    days = (through - start).days + 1
    return SimConfig(seed=int(p["seed"]), customers=int(p["customers"]), start=start, days=days, drift_date=drift)


def ingest_interval(params: Mapping[str, Any], interval: Mapping[str, str], settings: Settings | None = None) -> dict:
    """Replace the raw partitions of every day in `interval` with simulated data; return rows per table."""
    from ml.ingest import load_days

    days = interval_days(interval)
    cfg = sim_config(params, days[-1])
    if days[0] < cfg.start:
        raise OrchestrationError(f"the interval starts {days[0]}, before the simulation starts ({cfg.start})")
    report = load_days(cfg, set(days), settings=settings)
    return {**interval, "days": len(report.days), "rows": report.rows}


# -- marts ---------------------------------------------------------------------------------------
FEATURES_TABLE = "marts.customer_features_daily"
LABELS_TABLE = "marts.churn_labels"
EXAMPLES_TABLE = "marts.training_examples"


def describe_marts(settings: Settings, as_of: date | None = None) -> dict[str, Any]:
    """Row counts and date ranges of the feature, label and training marts; missing tables are named."""
    from ml.warehouse import Warehouse

    summary: dict[str, Any] = {"warehouse": settings.warehouse.url}
    wh_path = settings.warehouse.path
    if settings.warehouse.kind == "duckdb" and not wh_path.exists():
        summary["error"] = f"no warehouse at {wh_path}; load data first (`python -m ml simulate`)"
        return summary
    with Warehouse.connect(settings, read_only=True) as wh:

        def missing(table: str) -> dict[str, Any] | None:
            if wh.table_exists(table):
                return None
            return {"exists": False, "hint": "run `python -m ml dbt build` or the build_features DAG"}

        features = missing(FEATURES_TABLE)
        if features is None:
            hi = wh.scalar(f"select max(as_of_date) from {FEATURES_TABLE}")
            day = as_of or hi
            features = {
                "rows": wh.scalar(f"select count(*) from {FEATURES_TABLE}"),
                "min_as_of_date": wh.scalar(f"select min(as_of_date) from {FEATURES_TABLE}"),
                "max_as_of_date": hi,
                "as_of_date": day,
                "rows_on_as_of_date": wh.scalar(f"select count(*) from {FEATURES_TABLE} where as_of_date = '{day}'")
                if day else 0,
            }
        labels = missing(LABELS_TABLE)
        if labels is None:
            rate = wh.scalar(f"select avg(churned) from {LABELS_TABLE}")
            labels = {
                "rows": wh.scalar(f"select count(*) from {LABELS_TABLE}"),
                "positive_rate": None if rate is None else round(float(rate), 4),
            }
        examples = missing(EXAMPLES_TABLE) or {"rows": wh.scalar(f"select count(*) from {EXAMPLES_TABLE}")}
    summary.update({FEATURES_TABLE: features, LABELS_TABLE: labels, EXAMPLES_TABLE: examples})
    return summary

