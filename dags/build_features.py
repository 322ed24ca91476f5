"""
### build_features

Builds the point-in-time feature and label marts of the simulated business's served models (the
shipped specs with `served: true`: their feature and label relations and everything upstream of them)
with dbt whenever new raw days land (the `raw` asset), for exactly the as-of dates those days cover.
A user's own dbt models are not in its selection, so they can never fail it.

1. `resolve_interval` picks the dates: dag_run.conf `{"start": ..., "end": ...}` when given (a
   backfill), else the dates in the triggering `raw` events. Either is refused, naming the dates and
   the watermark, when it asks for a day after the loaded watermark: the last raw `ingest_date` with
   no gap before it. A run with neither (a manual run with no conf) builds the days after the
   features watermark (the latest as-of date in the feature mart) up to the loaded watermark, or
   the loaded watermark's day alone when the features reach it; never a day read off the clock.
2. `dbt` is the dbt project rendered by Cosmos from its manifest in its watcher mode: the
   `dbt_producer_watcher` task runs one `dbt build` of the selection and its tests with the dates as the
   `start_date`/`end_date` vars, in one dbt process and the one-slot `warehouse` pool. Then a task
   per model (`<model>.run`), per model's tests (`<model>.test`) and per raw source's tests shows
   that node's result from the build, so a failure is seen on the node that failed. dbt skips
   every model built on a failed test, raw sources' tests included, and their tasks fail. A failed
   model's task retries by running that model alone.
3. `publish_features` emits the asset of each served feature relation (`features.<relation>`, which
   runs `score_<model>` of each model on it) with the dates in its extra, only when every dbt task
   succeeded.
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
    ExecutionMode,
    InvocationMode,
    LoadMode,
    SourceRenderingBehavior,
    TestBehavior,
)

from ml.core.settings import Settings
from ml.features.cosmos import (
    order_watchers_after_producer,
    require_manifest,
    source_tests_watcher,
    warehouse_profile,
)
from ml.features.dbt import dbt_executable
from ml.orchestration.airflow_setup import WAREHOUSE_POOL, priority
from ml.orchestration.assets import RAW, features_asset
from ml.orchestration.served import build_selection

settings = Settings.from_env()
# What this DAG builds: the served models' feature and label relations with everything upstream of them.
SELECT, RELATIONS = build_selection(settings)
FEATURES = [features_asset(relation) for relation in RELATIONS]
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

    @task(outlets=FEATURES)
    def publish_features(interval: dict, outlet_events=None) -> dict:
        """Announce that the served feature relations hold these dates."""
        for asset in FEATURES:
            outlet_events[asset].extra = interval
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
        # One `dbt build` of the whole selection in one dbt process (the producer task), in the warehouse
        # pool; a sensor per model and per model's tests shows that node's own result from it.
        execution_config=ExecutionConfig(
            execution_mode=ExecutionMode.WATCHER,
            dbt_executable_path=dbt_executable(),
            # A dbt process of its own frees DuckDB's file lock when it ends. On Spark, dbt runs in the task's
            # process: it shares that process's Spark session and the metastore that admits one process.
            invocation_mode=InvocationMode.DBT_RUNNER if settings.warehouse.kind == "spark" else InvocationMode.SUBPROCESS,
            # A second `dbt build` on retry would redo the whole selection; the failed nodes' own tasks
            # retry instead, each running its node alone.
            setup_operator_args={"retries": 0},
        ),
        render_config=RenderConfig(
            load_method=LoadMode.DBT_MANIFEST,
            test_behavior=TestBehavior.AFTER_EACH,
            select=SELECT,
            source_rendering_behavior=SourceRenderingBehavior.WITH_TESTS_OR_FRESHNESS,
            # The score marts are built by score_<model>, once ml.predictions holds the new scores.
            exclude=["tag:scores"],
            # A raw source's tests show as one task that reads their result from the build.
            node_converters={DbtResourceType.SOURCE: source_tests_watcher},
            node_conversion_by_task_group=True,
            # A test across two nodes (relationships) counts among the tests of each of them; dbt build
            # runs it once both exist and skips what is built on either when it fails.
            should_detach_multiple_parents_tests=False,
            # Downstream DAGs consume the feature relations' assets below, not an asset per dbt model.
            emit_datasets=False,
        ),
        operator_args={
            "vars": DBT_VARS,
            "env": settings.dbt_env(secrets=False),
            "pool": WAREHOUSE_POOL,
            # Cosmos gives its watcher tasks weights of their own; the DAG's place in the pool's order wins.
            **priority("build_features"),
        },
    )
    order_watchers_after_producer(dbt, after=interval)
    interval >> dbt >> publish_features(interval)


build_features()
