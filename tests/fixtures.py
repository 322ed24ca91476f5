"""Shared fixtures: throwaway DuckDB warehouses, throwaway PostgreSQL databases, small simulations."""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import date
from pathlib import Path

import pytest

from ml.core.settings import (
    REPO_ROOT,
    WAREHOUSE_CONN_VARIABLE,
    Settings,
    parse_warehouse_url,
)
from ml.ingest.simulate import SimConfig

# The real public data sets live beside the repository (../shared/data), never inside it.
PUBLIC_DATA_CANDIDATES = [
    Path(p) for p in (Settings.from_env().public_data, REPO_ROOT.parent / "shared" / "data", "/work/shared/data") if p
]
PUBLIC_DATA_FILES = ("telco_customer_churn.csv", "bank_marketing.csv")


def public_data_dir() -> Path | None:
    """The first folder holding both public CSVs: $TIDEMARK_PUBLIC_DATA, ../shared/data, /work/shared/data."""
    for folder in PUBLIC_DATA_CANDIDATES:
        if all((folder / name).is_file() for name in PUBLIC_DATA_FILES):
            return folder
    return None


@contextmanager
def parsed_dags(settings: Settings | None = None, spec_path: Path | None = None, *, file: str | None = None
                ) -> Iterator[dict]:
    """The DAGs parsed and run with the environment pointed at `settings` and `spec_path`: the DAGs by id.

    With `spec_path`, the model of that spec is the one served model (`train_<model>` and so on).

    Parses `dags/` (or one `file` in it), fails on any import error, and turns retries off, since
    dag.test() would wait out the retry delay of a task that fails for good. The environment stays set
    until the block ends, so the tasks that dag.test() runs read the same warehouse (its Airflow
    connection included), registry and spec.
    """
    env = {}
    if settings is not None:
        env = {"TIDEMARK_WAREHOUSE_URL": settings.warehouse.url, "TIDEMARK_REGISTRY_URI": settings.registry_uri,
               "TIDEMARK_HOME": str(settings.home)}
        connection = settings.airflow_env().get(WAREHOUSE_CONN_VARIABLE)
        if connection:
            env[WAREHOUSE_CONN_VARIABLE] = connection
    if spec_path is not None:  # that spec alone is served, in place of a shipped one of its name
        env.update(served_spec_env(spec_path, Path(env.get("TIDEMARK_HOME") or spec_path.parent)))
    with pytest.MonkeyPatch.context() as mp:
        for key, value in env.items():
            mp.setenv(key, value)
        from airflow.dag_processing.dagbag import DagBag

        bag = DagBag(dag_folder=str(REPO_ROOT / "dags" / (file or "")))
        assert bag.import_errors == {}
        for dag in bag.dags.values():
            for task in dag.tasks:
                task.retries = 0
        yield bag.dags


def served_spec_env(spec_path: Path, home: Path) -> dict[str, str]:
    """The environment that serves the spec at `spec_path` alone: a copy of it, marked served, in a specs
    folder under `home`, which replaces a shipped spec of its name."""
    import yaml

    data = yaml.safe_load(spec_path.read_text())
    folder = home / "served_specs"
    folder.mkdir(parents=True, exist_ok=True)
    (folder / f"{data['name']}.yaml").write_text(yaml.safe_dump({**data, "served": True}, sort_keys=False))
    return {"TIDEMARK_SPECS_DIR": str(folder), "TIDEMARK_SERVED_MODELS": data["name"],
            "TIDEMARK_MODEL_SPEC": str(spec_path)}


PG_ADMIN_DSN = os.environ.get("TIDEMARK_TEST_PG_ADMIN", "host=127.0.0.1 port=5432 user=postgres dbname=postgres")


@pytest.fixture
def small_sim() -> SimConfig:
    """A small history with a drift event, quick to simulate and to build features on."""
    return SimConfig(seed=11, customers=300, start=date(2025, 1, 1), days=70, drift_date=date(2025, 2, 20))


@pytest.fixture
def duckdb_settings(tmp_path) -> Settings:
    return Settings(home=tmp_path, warehouse=parse_warehouse_url(f"duckdb:///{tmp_path / 'warehouse.duckdb'}"))


def create_database(prefix: str = "tidemark_test") -> str:
    """Create a uniquely named PostgreSQL database; its name. Fails the test, naming the server, if unreachable."""
    import psycopg

    name = f"{prefix}_{uuid.uuid4().hex[:10]}"
    try:
        admin = psycopg.connect(PG_ADMIN_DSN, autocommit=True)
    except psycopg.OperationalError as exc:
        pytest.fail(f"PostgreSQL is required for this test and is not reachable ({PG_ADMIN_DSN}): {exc}")
    with admin:
        admin.execute(f'create database "{name}"')
    return name


def drop_database(name: str) -> None:
    """Drop a database made by create_database, even with sessions still open on it."""
    import psycopg

    with psycopg.connect(PG_ADMIN_DSN, autocommit=True) as admin:
        admin.execute(f'drop database if exists "{name}" with (force)')


@contextmanager
def postgres_copy(source: Settings, table: str, home: Path, where: str = "true") -> Iterator[Settings]:
    """A fresh PostgreSQL database holding a copy of `table`'s rows (those matching `where`) from the DuckDB
    warehouse of `source`, with the same registry; dropped afterwards."""
    import duckdb
    import psycopg

    name = create_database()
    settings = Settings(home=home, warehouse=parse_warehouse_url(f"postgresql://postgres@127.0.0.1:5432/{name}"),
                        registry_uri=source.registry_uri)
    csv = home / "copy.csv"
    with duckdb.connect(str(source.warehouse.path), read_only=True) as con:
        columns = con.execute(f"describe {table}").fetchall()
        con.execute(f"copy (select * from {table} where {where}) to '{csv}' (header false)")
    try:
        with psycopg.connect(settings.warehouse.dsn(), autocommit=True) as con:
            con.execute(f"create schema {table.split('.')[0]}")
            con.execute(f"create table {table} ({', '.join(f'{c[0]} {c[1]}' for c in columns)})")
            with con.cursor().copy(f"copy {table} from stdin with (format csv)") as copy:
                copy.write(csv.read_bytes())
        yield settings
    finally:
        drop_database(name)


@pytest.fixture
def postgres_settings(tmp_path):
    """A fresh PostgreSQL database, dropped afterwards."""
    name = create_database()
    try:
        yield Settings(
            home=tmp_path, warehouse=parse_warehouse_url(f"postgresql://postgres@127.0.0.1:5432/{name}")
        )
    finally:
        drop_database(name)


@pytest.fixture(params=["duckdb", pytest.param("postgres", marks=pytest.mark.postgres)])
def warehouse_settings(request) -> Settings:
    """Each test using this runs once on DuckDB and once on a fresh PostgreSQL database."""
    return request.getfixturevalue(f"{request.param}_settings")


def kill_publish_in_its_transaction(settings: Settings, spec_path: Path, shards: list[dict], name: str) -> int:
    """Publish `shards` in a child process that pauses inside the publish transaction (after its deletes and
    inserts, before the commit), SIGKILL it there, and return its exit code."""
    import json
    import signal
    import subprocess
    import sys
    import time

    results = settings.home / f"{name}.json"
    results.write_text(json.dumps(shards))
    code = ("import json, logging; logging.basicConfig(level=logging.WARNING); "
            "from ml.scoring.score import publish_predictions; from ml.core.settings import Settings; "
            "from ml.core.spec import load_spec; "
            f"publish_predictions(load_spec({str(spec_path)!r}), Settings.from_env(), "
            f"json.load(open({str(results)!r})))")
    env = {**os.environ, "TIDEMARK_HOME": str(settings.home), "TIDEMARK_WAREHOUSE_URL": settings.warehouse.url,
           "TIDEMARK_REGISTRY_URI": settings.registry_uri, "TIDEMARK_TEST_PAUSE_IN_PUBLISH": "120"}
    proc = subprocess.Popen([sys.executable, "-c", code], cwd=REPO_ROOT, env=env, stderr=subprocess.PIPE, text=True)
    seen = []
    try:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            line = proc.stderr.readline()
            seen.append(line)
            if "inside the publish transaction" in line or not line:
                break
        assert "inside the publish transaction" in seen[-1], "".join(seen)[-3000:]
        proc.send_signal(signal.SIGKILL)
    finally:
        proc.kill()
        proc.wait()
        proc.stderr.close()
    return proc.returncode
