"""
### build_features

Builds the point-in-time feature and label marts with dbt whenever new raw days land (the `raw`
asset), for exactly the as-of dates those days cover.

1. `resolve_interval` picks the dates: dag_run.conf `{"start": ..., "end": ...}` when given (a
   backfill), else the dates in the triggering `raw` events. Either is refused, naming the dates and
   the watermark, when it asks for a day after the loaded watermark: the last raw `ingest_date` with
   no gap before it. A run with neither (a manual run with no conf) builds the days after the
   features watermark (the latest as-of date in the feature mart) up to the loaded watermark, or
   the loaded watermark's day alone when the features reach it; never a day read off the clock.
2. `dbt` is the dbt project rendered by Cosmos from its manifest: one task per model, each running
   `dbt build` on that model and its tests with the dates as the `start_date`/`end_date` vars; one
   task per raw source running its tests, so a bad raw row stops every model built on it. All dbt
   tasks share the one-slot `warehouse` pool.
3. `publish_features` emits the `features` asset with the dates in its extra, only when every dbt
   task succeeded.
"""

from __future__ import annotations

import pendulum
from airflow.sdk import dag, task
from cosmos import (
    DbtResourceType,
    DbtTaskGroup,
    ExecutionConfig,
    ProjectConfig,
    RenderConfig,
)
from cosmos.constants import (
    InvocationMode,
    LoadMode,
    SourceRenderingBehavior,
    TestBehavior,
)

from ml.core.settings import Settings
from ml.features.cosmos import (
    gate_on_detached_tests,
    require_manifest,
    source_tests_task,
    warehouse_profile,
)
from ml.features.dbt import dbt_executable
from ml.orchestration.airflow_setup import WAREHOUSE_POOL, priority
from ml.orchestration.assets import FEATURES, RAW

settings = Settings.from_env()
# The dbt vars of every dbt task, rendered from the resolve_interval task's result at run time.
DBT_VARS = {
    "start_date": "{{ ti.xcom_pull(task_ids='resolve_interval')['start'] }}",
    "end_date": "{{ ti.xcom_pull(task_ids='resolve_interval')['end'] }}",
}


@dag(
    schedule=[RAW],
    start_date=pendulum.datetime(2025, 1, 1, tz="UTC"),
    catchup=False,
    max_active_runs=1,
    doc_md=__doc__,
    tags=["tidemark", "features", "dbt"],
    default_args={"owner": "tidemark", "retries": 1, "retry_delay": pendulum.duration(minutes=2),
                  **priority("build_features")},
)
def build_features():
    @task(task_id="resolve_interval", pool=WAREHOUSE_POOL)
    def resolve(dag_run=None, triggering_asset_events=None):
        """The inclusive as-of dates this run builds, bounded by the loaded watermark."""
        from ml.orchestration.watermarks import resolve_build_interval

        return resolve_build_interval(settings, dag_run.conf, triggering_asset_events)

    @task(outlets=[FEATURES])
    def publish_features(interval: dict, outlet_events=None) -> dict:
        """Announce that the marts hold these dates."""
        outlet_events[FEATURES].extra = interval
        return interval

    interval = resolve()
    dbt = DbtTaskGroup(
        group_id="dbt",
        project_config=ProjectConfig(
            dbt_project_path=settings.dbt_project_dir,
            manifest_path=require_manifest(settings),
            install_dbt_deps=False,
        ),
        # PostgreSQL through the Airflow connection `tidemark_warehouse`: its password reaches dbt only
        # when a task runs, never this DAG's environment or its serialized form.
        profile_config=warehouse_profile(settings),
        # Each dbt node in its own process, so DuckDB's file lock is released when it ends.
        execution_config=ExecutionConfig(
            dbt_executable_path=dbt_executable(), invocation_mode=InvocationMode.SUBPROCESS
        ),
        render_config=RenderConfig(
            load_method=LoadMode.DBT_MANIFEST,
            test_behavior=TestBehavior.BUILD,
            source_rendering_behavior=SourceRenderingBehavior.WITH_TESTS_OR_FRESHNESS,
            # The public data sets are loaded and built on their own, not per simulated day; the
            # score marts are built by score_batch, once ml.predictions holds the new scores.
            exclude=["tag:public_data", "tag:scores"],
            # Under BUILD, Cosmos 1.15 would run only `dbt source freshness` for a source, not its tests.
            node_converters={DbtResourceType.SOURCE: source_tests_task},
            # A test across two nodes (relationships) runs in its own task once both exist.
            should_detach_multiple_parents_tests=True,
            # Downstream DAGs consume the one `features` asset below, not an asset per model.
            emit_datasets=False,
        ),
        operator_args={
            "vars": DBT_VARS,
            "env": settings.dbt_env(secrets=False),
            "pool": WAREHOUSE_POOL,
        },
    )
    gate_on_detached_tests(dbt)  # ...and the models built on those nodes wait for it
    interval >> dbt >> publish_features(interval)


build_features()
