"""How the dbt project becomes Airflow tasks: what Cosmos' own configuration does not cover.

The build_features DAG uses these at parse time; they read the parsed manifest and profiles.yml,
never run dbt and never look up a connection.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml
from cosmos import ProfileConfig
from cosmos.operators.watcher import DbtTestWatcherOperator
from cosmos.profiles import PostgresUserPasswordProfileMapping

from ml.core.errors import TidemarkError
from ml.core.settings import WAREHOUSE_CONN_ID, Settings

PROFILE_NAME = "tidemark"


class ManifestMissing(TidemarkError, FileNotFoundError):
    """The dbt manifest that the DAG is rendered from has not been built."""


def require_manifest(settings: Settings) -> Path:
    """The parsed dbt manifest that the DAG is rendered from; a clear error if it was never built."""
    manifest = settings.dbt_manifest
    if not manifest.exists():
        raise ManifestMissing(
            f"dbt manifest not found at {manifest}. Run `make install` (or `python -m ml dbt parse`) "
            "so the build_features DAG can be rendered without running dbt at parse time."
        )
    return manifest


class WarehouseProfileMapping(PostgresUserPasswordProfileMapping):
    """Cosmos' PostgreSQL mapping, which also accepts a user without a password (trust or peer auth).

    Cosmos reads the connection only when a task runs, and hands the password to that task's dbt
    process as an environment variable that the profile it writes refers to.
    """

    def get_dbt_value(self, name: str) -> Any:
        value = super().get_dbt_value(name)
        return "" if name == "password" and value is None else value


def warehouse_profile(settings: Settings) -> ProfileConfig:
    """The dbt profile of the dbt tasks, with no secret in it.

    DuckDB and Spark: dbt_project/profiles.yml, whose database path or Spark settings come from the operators'
    env. PostgreSQL:
    the Airflow connection WAREHOUSE_CONN_ID (Settings.airflow_env defines it), with the schema and
    threads of the postgres output in profiles.yml.
    """
    target, profiles_yml = settings.warehouse.dbt_target, settings.dbt_project_dir / "profiles.yml"
    if settings.warehouse.kind in ("duckdb", "spark"):  # their profiles hold no secret
        return ProfileConfig(profile_name=PROFILE_NAME, target_name=target, profiles_yml_filepath=profiles_yml)
    output = yaml.safe_load(profiles_yml.read_text())[PROFILE_NAME]["outputs"][target]
    mapping = WarehouseProfileMapping(
        conn_id=WAREHOUSE_CONN_ID, profile_args={key: output[key] for key in ("schema", "threads")}
    )
    return ProfileConfig(profile_name=PROFILE_NAME, target_name=target, profile_mapping=mapping)


class SourceTestsWatcher(DbtTestWatcherOperator):
    """The aggregated result of one raw source's tests, read from the producer's `dbt build`; run alone (a
    retry, or a build that never reached them), `dbt test --select source:<source>.<table>`."""

    def _fallback_to_non_watcher_run(self, try_number: int, context) -> bool:
        source = self.model_unique_id.split(".", 2)[2]  # source.<project>.<source>.<table>
        self.build_and_run_cmd(context, cmd_flags=["--select", f"source:{source}"])
        return True


def source_tests_watcher(*, dag, task_group, node, task_args: dict, **_):
    """Cosmos node converter (watcher mode): a raw source's tests as one task that reads their result from
    the producer's `dbt build`, which runs them before any model built on that source.

    Cosmos' own source task would show only `dbt source freshness`. A source without tests gets no task.
    """
    if not node.has_test:
        return None
    args = {k: v for k, v in task_args.items() if k not in ("select", "exclude", "selector", "emit_datasets")}
    return SourceTestsWatcher(
        task_id=f"{node.name}_source",
        dag=dag,
        task_group=task_group,
        extra_context={"dbt_node_config": {"unique_id": node.unique_id, "resource_name": node.resource_name}},
        **args,
    )


def order_watchers_after_producer(group, after) -> None:
    """Let the watcher tasks read the producer's results once its `dbt build` has ended.

    Cosmos starts them beside the producer and lets them wait; under `dag.test()`, which runs one
    task at a time, one that started first would wait forever. Here the producer comes first, and
    the tasks that were roots run once it has ended, failed or not (all_done_min_one_success over
    the producer and `after`), so each shows its own node's result; when `after` fails, none runs.
    """
    from cosmos.constants import PRODUCER_WATCHER_TASK_ID

    producer = group.tasks_map[PRODUCER_WATCHER_TASK_ID]
    # No task reads source freshness (the sources declare none): no `dbt source freshness` before the build.
    producer._check_source_freshness = False
    inside = {task.task_id for task in group.iter_tasks()}
    for task in list(group.iter_tasks()):
        if task is producer or task.upstream_task_ids & inside:
            continue
        producer >> task
        after >> task
        task.trigger_rule = "all_done_min_one_success"
