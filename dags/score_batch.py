"""
### `score_<model>`

One DAG per served model spec (`served: true`): scores the feature rows of the days that the asset of
the spec's feature relation (`features.<relation>`) announces with the model's champion, into
`ml.predictions`. Runs whenever new days of that relation are built (`build_features` announces those
of the simulated business); a backfill is a manual run with conf
`{"start": "2025-03-01", "end": "2025-03-31"}`.

1. `resolve_interval` picks the days (conf `start`/`end`, else the triggering `features` events'
   interval, else the features watermark's day: the latest as-of date in the spec's feature
   relation, never a day read off the clock) and pins the run to one champion version and one
   `scored_at` time, so every shard and every retry writes the same rows. A run asked for a day
   after the features watermark is refused, naming the days and the watermark, before anything
   is written. Before the first champion exists, the run skips, with the reason in its log. On a
   weekly or monthly grid (the spec's `cadence`, else read from the relation's dates) only the
   days the relation holds are scored, and a run with no grid day skips, the reason logged.
2. `score_shard` is mapped over the spec's `scoring.shards` entity-hash shards. Each streams its rows
   from the warehouse as Arrow record batches, scores them, and writes one Parquet file per day under
   `TIDEMARK_HOME/runs/score/<run_id>/`, with the reason codes (the spec's `explain`: the top-k feature
   contributions of the rows it explains) beside them.
3. `publish` replaces each day's (model, as_of_date) partitions of `ml.predictions` and
   `ml.prediction_reasons` with the rows of every shard in one transaction (explaining, when a shard
   held more of the day's top fraction than it explained, the rows it left), then emits the `predictions.<model>` asset with
   `{"start", "end", "model", "version"}`. A retry or a rerun overwrites; nothing is appended twice.
4. `refresh_scores_mart` runs `dbt build --select tag:scores` (`marts.customer_churn_scores_latest`).

On Spark the shard tasks do nothing (they say so in their log), and `publish` scores and explains every
row on Spark's executors and overwrites the day's partitions of both tables (`ml.scoring.spark`).

Every task that opens the warehouse queues in the `warehouse` pool: DuckDB lets no reader in while
a writer holds the file. On PostgreSQL, give the pool more slots to score the shards in parallel.
"""

from __future__ import annotations

import pendulum
from airflow.sdk import dag, task

from ml.core.settings import Settings
from ml.core.spec import ModelSpec
from ml.orchestration.airflow_setup import WAREHOUSE_POOL, priority
from ml.orchestration.assets import features_asset, predictions_asset
from ml.orchestration.intervals import interval_days, requested_interval
from ml.orchestration.served import add_model_dags

settings = Settings.from_env()


def score_batch(spec: ModelSpec):
    """The score DAG of one model."""
    shards = list(range(spec.scoring.shards))
    features, predictions = features_asset(spec.features.relation), predictions_asset(spec.name)

    @dag(
        dag_id=f"score_{spec.name}",
        schedule=[features],
        start_date=pendulum.datetime(2025, 1, 1, tz="UTC"),
        catchup=False,
        max_active_runs=1,
        doc_md=__doc__,
        description=spec.description or None,
        tags=["tidemark", "scoring", spec.name],
        default_args={"owner": "tidemark", "retries": 1, "retry_delay": pendulum.duration(minutes=2),
                      **priority("score_batch")},
    )
    def score():
        @task(task_id="resolve_interval", pool=WAREHOUSE_POOL)
        def resolve(dag_run=None, triggering_asset_events=None) -> dict:
            """The days to score, the champion version and the run's scored_at time."""
            from ml.orchestration.skips import skip_when_idle
            from ml.scoring.score import plan_scoring

            asked = requested_interval(dag_run.conf, triggering_asset_events, asset_name=features.name)
            with skip_when_idle():  # before the first champion, or no grid day: skipped, the reason logged
                return plan_scoring(spec, settings, asked, dag_run.start_date or dag_run.run_after)

        @task(pool=WAREHOUSE_POOL)
        def score_shard(shard: int, plan: dict, dag_run=None) -> dict:
            """Score one entity-hash shard of every day into Parquet files."""
            from ml.scoring.score import score_shard

            return score_shard(spec, settings, interval_days(plan), shard, len(shards), dag_run.run_id,
                               plan["scored_at"], version=plan["version"])

        @task(pool=WAREHOUSE_POOL, outlets=[predictions])
        def publish(plan: dict, results: list[dict], outlet_events=None) -> dict:
            """Swap every day's partition of ml.predictions for the shards' rows, then announce it."""
            from ml.scoring.score import publish_predictions

            result = publish_predictions(spec, settings, list(results))
            outlet_events[predictions].extra = {"start": plan["start"], "end": plan["end"],
                                                "model": result["model"], "version": result["version"]}
            return result

        @task(pool=WAREHOUSE_POOL)
        def refresh_scores_mart(published: dict) -> dict:
            """Rebuild and test the dbt models on ml.predictions."""
            from ml.scoring.score import build_scores_mart

            build_scores_mart(settings)
            return published

        plan = resolve()
        results = score_shard.partial(plan=plan).expand(shard=shards)
        refresh_scores_mart(publish(plan, results))

    return score()


add_model_dags(globals(), "score", score_batch, settings)
