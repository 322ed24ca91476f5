"""
### bootstrap

Takes an empty service to a running loop through the scheduler; `make airflow` triggers it on a new
home, and `python -m ml airflow bootstrap` on a running one.

1. `land_history` records the simulated world (the Params) in the warehouse and lands its history,
   `sim_start` to `history_end`. It skips, with the reason in its log, when the warehouse was
   bootstrapped before; a warehouse that holds another world refuses, naming both.
2. `build_history` triggers `build_features` for the history and waits for it.
3. `train_first_<model>` triggers `train_<model>` of each served model of the simulated business
   as of `history_end` and waits for its gate.
4. `start_clock` checks that each of them has a champion and starts the simulated clock. From then on
   each scheduled `ingest_raw` run loads the next day, and the assets run the rest: `build_features`,
   each model's `score_<model>` and `monitor_<model>`, and `train_<model>` when its monitoring asks
   for a retrain.
"""

from __future__ import annotations

import pendulum
from airflow.providers.standard.operators.trigger_dagrun import TriggerDagRunOperator
from airflow.sdk import Param, dag, task

from ml.core.settings import Settings
from ml.ingest.world import DEFAULT_HISTORY_END, DEFAULT_WORLD
from ml.orchestration.airflow_setup import WAREHOUSE_POOL, priority
from ml.orchestration.served import loop_specs

settings = Settings.from_env()
MODELS = [spec.name for spec in loop_specs(settings)]
WAIT = {"wait_for_completion": True, "poke_interval": 10, "allowed_states": ["success"], "failed_states": ["failed"]}
world = DEFAULT_WORLD.params()


@dag(
    schedule=None,
    start_date=pendulum.datetime(2025, 1, 1, tz="UTC"),
    catchup=False,
    max_active_runs=1,
    doc_md=__doc__,
    tags=["tidemark", "bootstrap", *MODELS],
    default_args={"owner": "tidemark", "retries": 1, "retry_delay": pendulum.duration(minutes=1),
                  **priority("bootstrap")},
    params={
        "seed": Param(world["seed"], type="integer", description="Simulator seed."),
        "customers": Param(world["customers"], type="integer", minimum=1, description="Customers on day one."),
        "sim_start": Param(world["sim_start"], type="string", format="date", description="First simulated day."),
        "drift_date": Param(world["drift_date"], type=["null", "string"],
                            description="Day of the price rise and new channel; null for none."),
        "history_end": Param(DEFAULT_HISTORY_END.isoformat(), type="string", format="date",
                             description="Last day of the history; the first champion is trained as of it."),
    },
)
def bootstrap():
    @task(pool=WAREHOUSE_POOL)
    def land_history(params=None) -> dict:
        """Record the world and land its history, one replaceable partition per day."""
        from ml.ingest.world import land_history
        from ml.orchestration.skips import skip_when_idle

        with skip_when_idle():
            return land_history(settings, params)

    build = TriggerDagRunOperator(
        task_id="build_history", trigger_dag_id="build_features",
        conf={"start": "{{ ti.xcom_pull(task_ids='land_history')['start'] }}",
              "end": "{{ ti.xcom_pull(task_ids='land_history')['end'] }}"}, **WAIT,
    )
    train = [
        TriggerDagRunOperator(
            task_id=f"train_first_{model}", trigger_dag_id=f"train_{model}",
            conf={"as_of": "{{ ti.xcom_pull(task_ids='land_history')['end'] }}"}, **WAIT,
        )
        for model in MODELS
    ]

    @task(pool=WAREHOUSE_POOL)
    def start_clock() -> dict:
        """Check that the gate promoted a champion of each model, then let the scheduled ingest runs move the
        clock."""
        from ml.ingest.world import start_clock
        from ml.registry.champion import champion_version

        versions = {model: champion_version(settings, model) for model in MODELS}
        record = start_clock(settings)
        return {"champions": versions, "clock_started_at": record.clock_started_at.isoformat()}

    land_history() >> build >> train >> start_clock()


bootstrap()
