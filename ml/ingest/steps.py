"""What the ingest_raw DAG runs: the simulator's days for a run's interval, landed in the warehouse."""

from __future__ import annotations

from datetime import date
from typing import Any, Mapping

from ml.core.settings import Settings
from ml.orchestration.intervals import OrchestrationError, interval_days, parse_day

# Defaults of the simulator parameters that the ingest DAG exposes as Airflow Params.
SIM_DEFAULTS: dict[str, Any] = {"seed": 7, "customers": 5_000, "sim_start": "2025-01-01", "drift_date": "2025-04-01"}


def sim_config(params: Mapping[str, Any], through: date):
    """The simulator config for the DAG's params, long enough to reach `through`."""
    from ml.ingest.simulate import SimConfig

    p = {**SIM_DEFAULTS, **{k: v for k, v in params.items() if k in SIM_DEFAULTS}}
    start = parse_day(p["sim_start"], "param sim_start")
    if through < start:
        raise OrchestrationError(f"the interval ends {through}, before the simulation starts (sim_start={start})")
    drift = parse_day(p["drift_date"], "param drift_date") if p["drift_date"] else None
    days = (through - start).days + 1
    return SimConfig(seed=int(p["seed"]), customers=int(p["customers"]), start=start, days=days, drift_date=drift)


def ingest_interval(params: Mapping[str, Any], interval: Mapping[str, str], settings: Settings | None = None) -> dict:
    """Replace the raw partitions of every day in `interval` with simulated data; return rows per table."""
    from ml.ingest.load import load_days

    days = interval_days(interval)
    cfg = sim_config(params, days[-1])
    if days[0] < cfg.start:
        raise OrchestrationError(f"the interval starts {days[0]}, before the simulation starts ({cfg.start})")
    report = load_days(cfg, set(days), settings=settings)
    return {**interval, "days": len(report.days), "rows": report.rows}


