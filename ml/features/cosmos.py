"""How the dbt project becomes Airflow tasks: what Cosmos' own configuration does not cover.

The build_features DAG uses these at parse time; they read the parsed manifest and profiles.yml,
never run dbt and never look up a connection.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Mapping

import yaml
from cosmos import ProfileConfig
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

    DuckDB: dbt_project/profiles.yml, whose database path comes from the operators' env. PostgreSQL:
    the Airflow connection WAREHOUSE_CONN_ID (Settings.airflow_env defines it), with the schema and
    threads of the postgres output in profiles.yml.
    """
    target, profiles_yml = settings.warehouse.dbt_target, settings.dbt_project_dir / "profiles.yml"
    if settings.warehouse.kind == "duckdb":
        return ProfileConfig(profile_name=PROFILE_NAME, target_name=target, profiles_yml_filepath=profiles_yml)
    output = yaml.safe_load(profiles_yml.read_text())[PROFILE_NAME]["outputs"][target]
    mapping = WarehouseProfileMapping(
        conn_id=WAREHOUSE_CONN_ID, profile_args={key: output[key] for key in ("schema", "threads")}
    )
    return ProfileConfig(profile_name=PROFILE_NAME, target_name=target, profile_mapping=mapping)


def source_tests_task(*, dag, task_group, node, task_id: str, task_args: dict, detached_from_parent=None, **_):
    """Cosmos node converter: run a dbt source's tests as one task (`dbt test --select source:<name>`).

    Under TestBehavior.BUILD, Cosmos 1.15 renders a source as `dbt source freshness` and never runs
    its tests (astronomer-cosmos#1825). Tests with several parents are left to their own tasks.
    """
    from cosmos.operators.local import DbtTestLocalOperator

    if not node.has_test:
        return None
    detached = [test.resource_name.split(".")[0] for test in (detached_from_parent or {}).get(node.unique_id, [])]
    args = {k: v for k, v in task_args.items() if k not in ("select", "exclude", "emit_datasets")}
    return DbtTestLocalOperator(
        task_id=task_id,
        dag=dag,
        task_group=task_group,
        select=f"source:{node.resource_name}",
        exclude=" ".join(detached) or None,
        emit_datasets=False,
        **args,
    )


def gate_on_detached_tests(group) -> None:
    """Make the tasks downstream of a multi-parent test's parents wait for that test.

    Cosmos runs a test with several parents (a `relationships` test) in its own task once all its
    parents are built, but nothing waits for it. Here it also gates its parents' children (except
    those upstream of the test), so a failing relationship stops the models built on that data,
    just as a failing single-parent test does under TestBehavior.BUILD.
    """
    nodes, tasks = group.dbt_graph.filtered_nodes, group.tasks_map
    for test_id, test in nodes.items():
        if test.resource_type.value != "test" or test_id not in tasks:
            continue
        parents = set(test.depends_on)
        upstream = _ancestors(nodes, parents)
        children = [
            child_id
            for child_id, child in nodes.items()
            if parents.intersection(child.depends_on) and child.resource_type.value != "test"
        ]
        for child_id in children:
            if child_id in tasks and child_id not in upstream:
                tasks[test_id] >> tasks[child_id]


def _ancestors(nodes: Mapping[str, Any], ids: set[str]) -> set[str]:
    seen, todo = set(), list(ids)
    while todo:
        node_id = todo.pop()
        if node_id not in seen:
            seen.add(node_id)
            todo.extend(nodes[node_id].depends_on if node_id in nodes else [])
    return seen
