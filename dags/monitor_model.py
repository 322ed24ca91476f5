"""
### `monitor_<model>`

One DAG per served model spec (`served: true`): watches the model's champion after it scores. Runs
whenever the model's `predictions.<model>` asset is updated (or with conf `{"start": ..., "end": ...}`
for a range of days), one day at a time in date order; on a weekly or monthly grid, the grid's days
only (a run with none skips, the reason logged).

0. `resolve_interval` picks the days (conf `start`/`end`, else the triggering `predictions` events'
   interval, else the features watermark's day: the latest as-of date in the spec's feature
   relation, never a day read off the clock) and pins the run to one champion version: every later
   task watches that version, even if a promotion lands while the run is going. A run asked for a
   day after the features watermark is refused, naming the days and the watermark.
1. `check_drift` runs Evidently's DataDriftPreset on a bounded sample of each day's features and scores,
   drawn inside the warehouse, against the reference sample stored with the champion at training time.
   Per-column and dataset results go to `ml.drift_metrics`; the HTML and JSON reports go to the
   artifact store under `monitoring/<model>/<date>/` and their paths are logged.
2. `track_performance` scores the predictions of the label relation's own as-of dates whose horizon
   closed in the interval (reaching one grid step further back on a weekly or monthly grid) into
   `ml.model_performance`.
3. `decide_retrain` updates the `monitoring.<model>` asset (the interval's rows are written), then asks for
   retraining on dataset drift on k days in a row, or when the realized primary metric falls below the
   champion's test metric by more than the spec's tolerance, unless a request was made within the cooldown.
   `request_retrain` then updates the `retrain_requested.<model>` asset, with the reason in its extra,
   which schedules `train_<model>`.
"""

from __future__ import annotations

import pendulum
from airflow.sdk import dag, task

from ml.core.settings import Settings
from ml.core.spec import ModelSpec
from ml.orchestration.airflow_setup import WAREHOUSE_POOL, priority
from ml.orchestration.assets import monitoring_asset, predictions_asset, retrain_requested_asset
from ml.orchestration.intervals import requested_interval
from ml.orchestration.served import add_model_dags

settings = Settings.from_env()


def monitor_model(spec: ModelSpec):
    """The monitor DAG of one model."""
    predictions, monitoring = predictions_asset(spec.name), monitoring_asset(spec.name)
    retrain_requested = retrain_requested_asset(spec.name)

    @dag(
        dag_id=f"monitor_{spec.name}",
        schedule=[predictions],
        start_date=pendulum.datetime(2025, 1, 1, tz="UTC"),
        catchup=False,
        max_active_runs=1,
        doc_md=__doc__,
        description=spec.description or None,
        tags=["tidemark", "monitoring", spec.name],
        default_args={"owner": "tidemark", "retries": 1, "retry_delay": pendulum.duration(minutes=2),
                      **priority("monitor_model")},
    )
    def monitor():
        @task(task_id="resolve_interval", pool=WAREHOUSE_POOL)
        def resolve(dag_run=None, triggering_asset_events=None):
            """The as-of dates this run checks and the champion version it watches."""
            from ml.monitoring.steps import plan_monitoring
            from ml.orchestration.skips import skip_when_idle

            asked = requested_interval(dag_run.conf, triggering_asset_events, asset_name=predictions.name)
            with skip_when_idle():  # no day of the interval on a weekly or monthly grid: skipped, the reason logged
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

        @task(pool=WAREHOUSE_POOL, outlets=[monitoring])
        def decide_retrain(plan: dict, drift: list[dict], performance: list[dict], outlet_events=None) -> dict:
            """`request`: the first day in the interval on which a trigger fires outside the cooldown, or None.

            Always a dict, so that a quiet interval still leaves an XCom for the tasks downstream to read.
            """
            from ml.monitoring.steps import decide_for_interval

            # The interval's drift and performance rows are written: announce them whatever is decided.
            outlet_events[monitoring].extra = {"start": plan["start"], "end": plan["end"], "model": plan["model"],
                                               "version": plan["version"]}
            return {"request": decide_for_interval(spec, settings, plan)}

        @task.short_circuit
        def retrain_needed(decision: dict) -> bool:
            return decision["request"] is not None

        @task(outlets=[retrain_requested])
        def request_retrain(decision: dict, outlet_events=None) -> dict:
            """Update `retrain_requested.<model>`; its extra carries the model, the reason and the as-of date."""
            outlet_events[retrain_requested].extra = decision["request"]
            return decision["request"]

        plan = resolve()
        decision = decide_retrain(plan, check_drift(plan), track_performance(plan))
        retrain_needed(decision) >> request_retrain(decision)

    return monitor()


add_model_dags(globals(), "monitor", monitor_model, settings)
