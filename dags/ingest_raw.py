"""
### ingest_raw

The demo's stand-in for an upstream loader: it lands simulated raw tables in the warehouse, one
replaceable `ingest_date` partition per day, and emits the `raw` asset with the dates it loaded in
the event's extra (`{"start": ..., "end": ...}`), which schedules `build_features`.

A scheduled run is a tick of the simulated clock: it loads the day after the loaded watermark (the
last raw day with no gap before it), never a day read off the wall clock. It runs every
`TIDEMARK_SIM_DAY_SECONDS` (default 60), and skips, with the reason in its log, until the
`bootstrap` DAG has landed the history and trained a first champion.

Trigger with conf `{"start": "2025-01-01", "end": "2025-04-30"}` to load (or reload) a range in one
run. A warehouse holds one simulated world: the first load records its seed, size, first day and
drift day, and a load that asks for others is refused with both named. Leave the Params empty to
load the recorded world.
"""

from __future__ import annotations

from datetime import timedelta

import pendulum
from airflow.sdk import Param, dag, task

from ml.core.settings import Settings
from ml.orchestration.airflow_setup import WAREHOUSE_POOL, priority
from ml.orchestration.assets import RAW

settings = Settings.from_env()
RECORDED = "empty: the warehouse's recorded world, or the default world at the first load"


@dag(
    schedule=timedelta(seconds=settings.sim_day_seconds),
    start_date=pendulum.datetime(2025, 1, 1, tz="UTC"),
    catchup=False,
    max_active_runs=1,
    doc_md=__doc__,
    tags=["tidemark", "ingest"],
    default_args={"owner": "tidemark", "retries": 2, "retry_delay": pendulum.duration(minutes=2),
                  **priority("ingest_raw")},
    params={
        "seed": Param(None, type=["null", "integer"], description=f"Simulator seed; {RECORDED}."),
        "customers": Param(None, type=["null", "integer"], minimum=1, description=f"Customers on day one; {RECORDED}."),
        "sim_start": Param(None, type=["null", "string"], description=f"First simulated day; {RECORDED}."),
        "drift_date": Param(None, type=["null", "string"], description=f"Day of the price rise ('none': no drift); "
                                                                      f"{RECORDED}."),
    },
)
def ingest_raw():
    @task(pool=WAREHOUSE_POOL, outlets=[RAW])
    def load_raw(params=None, dag_run=None, outlet_events=None):
        """Land the conf's days, else the clock's next day, and put the interval on the `raw` event."""
        from ml.ingest.world import ingest_run
        from ml.orchestration.skips import skip_when_idle

        with skip_when_idle():
            loaded = ingest_run(settings, params, dag_run.conf)
        outlet_events[RAW].extra = {"start": loaded["start"], "end": loaded["end"]}
        return loaded

    load_raw()


ingest_raw()
