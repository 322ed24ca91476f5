"""
### monitor_model

Watches the champion after it scores: runs whenever the `predictions` asset is updated (or with conf
`{"start": ..., "end": ...}` for a range of days), one day at a time in date order.

0. `resolve_interval` picks the days (conf `start`/`end`, else the triggering `predictions` events'
   interval, else the features watermark's day: the latest as-of date in the spec's feature
   relation, never a day read off the clock) and pins the run to one champion version: every later
   task watches that version, even if a promotion lands while the run is going. A run asked for a
   day after the features watermark is refused, naming the days and the watermark.
1. `check_drift` runs Evidently's DataDriftPreset on a bounded sample of each day's features and scores,
   drawn inside the warehouse, against the reference sample stored with the champion at training time.
   Per-column and dataset results go to `ml.drift_metrics`; the HTML and JSON reports go to the
   artifact store under `monitoring/<model>/<date>/` and their paths are logged.
2. `track_performance` scores the predictions of the as-of dates whose labels have matured (one label
   horizon earlier) into `ml.model_performance`.
3. `decide_retrain` updates the `monitoring` asset (the interval's rows are written), then asks for
   retraining on dataset drift on k days in a row, or when the realized primary metric falls below the
   champion's test metric by more than the spec's tolerance, unless a request was made within the cooldown.
   `request_retrain` then updates the `retrain_requested` asset, with the reason in its extra, which
   schedules train_model.
"""

from __future__ import annotations

import pendulum
from airflow.sdk import dag, task

from ml.core.settings import Settings
from ml.core.spec import load_spec
from ml.orchestration.airflow_setup import WAREHOUSE_POOL, priority
from ml.orchestration.assets import MONITORING, PREDICTIONS, RETRAIN_REQUESTED
from ml.orchestration.intervals import requested_interval

settings = Settings.from_env()
spec = load_spec(settings.model_spec)


@dag(
    schedule=[PREDICTIONS],
    start_date=pendulum.datetime(2025, 1, 1, tz="UTC"),
    catchup=False,
    max_active_runs=1,
    doc_md=__doc__,
    tags=["tidemark", "monitoring", spec.name],
    default_args={"owner": "tidemark", "retries": 1, "retry_delay": pendulum.duration(minutes=2),
                  **priority("monitor_model")},
)
def monitor_model():
    @task(task_id="resolve_interval", pool=WAREHOUSE_POOL)
    def resolve(dag_run=None, triggering_asset_events=None):
        """The as-of dates this run checks and the champion version it watches."""
        from ml.monitoring.steps import plan_monitoring

        asked = requested_interval(dag_run.conf, triggering_asset_events, asset_name=PREDICTIONS.name)
        return plan_monitoring(spec, settings, asked)

    @task(pool=WAREHOUSE_POOL)
    def check_drift(plan: dict) -> list[dict]:
        """Drift of features and scores per day, against the champion's reference sample."""
        from ml.monitoring.steps import drift_for_interval

        return drift_for_interval(spec, settings, plan)

    @task(pool=WAREHOUSE_POOL)
    def track_performance(plan: dict) -> list[dict]:
        """Realized metrics for the dates whose labels matured."""
        from ml.monitoring.steps import performance_for_interval

        return performance_for_interval(spec, settings, plan)

    @task(pool=WAREHOUSE_POOL, outlets=[MONITORING])
    def decide_retrain(plan: dict, drift: list[dict], performance: list[dict], outlet_events=None) -> dict:
        """`request`: the first day in the interval on which a trigger fires outside the cooldown, or None.

        Always a dict, so that a quiet interval still leaves an XCom for the tasks downstream to read.
        """
        from ml.monitoring.steps import decide_for_interval

        # The interval's drift and performance rows are written: announce them whatever is decided.
        outlet_events[MONITORING].extra = {"start": plan["start"], "end": plan["end"], "model": plan["model"],
                                            "version": plan["version"]}
        return {"request": decide_for_interval(spec, settings, plan)}

    @task.short_circuit
    def retrain_needed(decision: dict) -> bool:
        return decision["request"] is not None

    @task(outlets=[RETRAIN_REQUESTED])
    def request_retrain(decision: dict, outlet_events=None) -> dict:
        """Update `retrain_requested`; its extra carries the model, the reason and the as-of date."""
        outlet_events[RETRAIN_REQUESTED].extra = decision["request"]
        return decision["request"]

    plan = resolve()
    decision = decide_retrain(plan, check_drift(plan), track_performance(plan))
    retrain_needed(decision) >> request_retrain(decision)


monitor_model()
