"""
### ingest_raw

The demo's stand-in for an upstream loader: it lands simulated raw tables in the warehouse, one
replaceable `ingest_date` partition per day, and emits the `raw` asset with the dates it loaded in
the event's extra (`{"start": ..., "end": ...}`), which schedules `build_features`.

A scheduled run, at midnight UTC, loads the day that just ended. Trigger with conf `{"start":
"2025-01-01", "end": "2025-04-30"}` to load (or reload) a whole range in one run. The simulator's
seed, size, first day and drift day are Params; the same Params always give the same rows.
"""

from __future__ import annotations

import pendulum
from airflow.sdk import Param, dag, task

from ml.ingest.steps import SIM_DEFAULTS, ingest_interval
from ml.orchestration.assets import RAW
from ml.orchestration.bootstrap import WAREHOUSE_POOL
from ml.orchestration.intervals import resolve_interval


@dag(
    schedule="@daily",
    start_date=pendulum.datetime(2025, 1, 1, tz="UTC"),
    catchup=False,
    doc_md=__doc__,
    tags=["tidemark", "ingest"],
    default_args={"owner": "tidemark", "retries": 2, "retry_delay": pendulum.duration(minutes=2)},
    params={
        "seed": Param(SIM_DEFAULTS["seed"], type="integer", description="Simulator seed."),
        "customers": Param(SIM_DEFAULTS["customers"], type="integer", minimum=1, description="Customers on day one."),
        "sim_start": Param(SIM_DEFAULTS["sim_start"], type="string", format="date", description="First simulated day."),
        "drift_date": Param(
            SIM_DEFAULTS["drift_date"], type=["null", "string"], description="Day of the price rise; null for none."
        ),
    },
)
def ingest_raw():
    @task(pool=WAREHOUSE_POOL, outlets=[RAW])
    def load_raw(params=None, dag_run=None, data_interval_start=None, data_interval_end=None, outlet_events=None):
        """Replace the raw partitions of the run's day(s) and put the interval on the `raw` event."""
        interval = resolve_interval(dag_run.conf, None, data_interval_start, data_interval_end)
        loaded = ingest_interval(params, interval)
        outlet_events[RAW].extra = interval
        return loaded

    load_raw()


ingest_raw()
