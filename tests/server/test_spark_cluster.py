"""Spark as the warehouse on a real standalone cluster: a master and a worker in JVMs of their own.

The module starts the cluster with ml.tools.spark_cluster (the scripts in the pyspark package), points
TIDEMARK_WAREHOUSE_URL at its master, and writes and reads a partitioned table through the Warehouse
interface; the work must run on the worker's executor, and nothing of the cluster may be left running.
"""

from __future__ import annotations

import socket
import sys
import time
from datetime import date, datetime
from pathlib import Path
from typing import Iterator

import pyarrow as pa
import pytest
import sqlalchemy as sa

from ml.core.settings import Settings
from ml.core.spark import release, session
from ml.core.tables import arrow_schema, predictions
from ml.core.warehouse import Warehouse, WarehouseError
from ml.tools.spark_cluster import SparkClusterError, StandaloneCluster, standalone_cluster
from tests.server.spark_cluster import cluster_env, processes_under, tasks_by_executor

pytest.importorskip("pyspark", reason="the Spark tests need pyspark: make install-spark")

FIRST, SECOND = date(2025, 3, 1), date(2025, 3, 2)


@pytest.fixture(scope="module")
def cluster_dir(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("spark-cluster")


@pytest.fixture(scope="module")
def cluster(cluster_dir: Path) -> Iterator[StandaloneCluster]:
    with standalone_cluster(cluster_dir, cores=2, memory="2g") as running:
        yield running
    left = processes_under(cluster_dir)
    assert not left, f"the cluster left processes running: {[(p.pid, p.name()) for p in left]}"


@pytest.fixture(scope="module")
def settings(cluster: StandaloneCluster, tmp_path_factory) -> Iterator[Settings]:
    """The environment of a Tidemark user on the cluster; the session ends before the cluster does."""
    with pytest.MonkeyPatch.context() as patch:
        for name, value in cluster_env(cluster.master, tmp_path_factory.mktemp("home")).items():
            patch.setenv(name, value)
        yield Settings.from_env()
        release()


def _scores(day: date, version: str, n: int) -> pa.Table:
    schema = arrow_schema(predictions)
    return pa.table({
        "entity_id": [f"c{i:04d}" for i in range(n)], "as_of_date": [day] * n, "model_name": ["churn"] * n,
        "model_version": [version] * n, "score": [i / n for i in range(n)], "predicted_label": [i % 2 for i in range(n)],
        "threshold": [0.5] * n, "scored_at": [datetime(2025, 3, 3, 6, 0)] * n,
    }, schema=schema)


def test_the_session_is_an_application_of_the_cluster(cluster: StandaloneCluster, settings: Settings) -> None:
    with Warehouse.connect() as wh:
        assert wh.rows("select 1 as one") == [{"one": 1}]
    context = session(settings.warehouse).sparkContext
    assert context.master == cluster.master
    apps = {app["id"]: app for app in cluster.state()["activeapps"]}
    assert context.applicationId in apps, f"the master runs {list(apps)}, not {context.applicationId}"
    assert apps[context.applicationId]["name"] == "tidemark"
    assert apps[context.applicationId]["cores"] >= 1  # the worker granted it an executor


def test_a_partitioned_table_is_written_and_read_back_by_the_executor(cluster: StandaloneCluster, cluster_dir: Path,
                                                                     settings: Settings) -> None:
    schema = arrow_schema(predictions)
    with Warehouse.connect() as wh:
        written = wh.replace_rows("ml.predictions", schema, [
            ({"model_name": "churn", "as_of_date": FIRST}, _scores(FIRST, "v0001", 50)),
            ({"model_name": "churn", "as_of_date": SECOND}, _scores(SECOND, "v0001", 50)),
        ])
        assert written == 100
        # A rerun of one day replaces that day's partition alone.
        assert wh.replace_rows("ml.predictions", schema,
                               [({"model_name": "churn", "as_of_date": SECOND}, _scores(SECOND, "v0002", 20))]) == 20
        counts = wh.read_arrow(sa.select(predictions.c.as_of_date, predictions.c.model_version,
                                         sa.func.count().label("n"))
                               .group_by(predictions.c.as_of_date, predictions.c.model_version)
                               .order_by(predictions.c.as_of_date)).to_pylist()
    assert counts == [{"as_of_date": FIRST, "model_version": "v0001", "n": 50},
                      {"as_of_date": SECOND, "model_version": "v0002", "n": 20}]
    day_folder = settings.warehouse.spark_dir / "warehouse" / "ml.db" / "predictions" / "model_name=churn"
    assert list((day_folder / f"as_of_date={SECOND}").glob("*.parquet")), "no Parquet files in the day's partition"

    spark = session(settings.warehouse)
    done = tasks_by_executor(spark)
    assert any(executor != "driver" and n > 0 for executor, n in done.items()), f"tasks per executor: {done}"
    executors = [p for p in processes_under(cluster_dir / "work") if "CoarseGrainedExecutorBackend" in " ".join(p.cmdline())]
    assert executors, "no executor JVM runs in the worker's work dir"


def test_the_executors_run_python_on_the_drivers_interpreter(settings: Settings) -> None:
    spark = session(settings.warehouse)
    used = spark.sparkContext.parallelize(range(4), 2).map(lambda _: sys.executable).distinct().collect()
    assert used == [sys.executable]


def test_a_worker_that_cannot_start_is_reported_and_nothing_is_left(tmp_path: Path) -> None:
    with pytest.raises(SparkClusterError) as failed:
        with standalone_cluster(tmp_path, memory="plenty"):
            pass
    assert "the Spark worker exited" in str(failed.value)
    assert str(tmp_path / "logs" / "worker.log") in str(failed.value)
    assert not processes_under(tmp_path)


def test_a_master_that_is_not_there_is_a_short_warehouse_error(tmp_path: Path) -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]  # free: nothing listens there
    nowhere = Settings.from_env(cluster_env(f"spark://127.0.0.1:{port}", tmp_path))
    started = time.monotonic()
    with pytest.raises(WarehouseError) as failed:
        Warehouse.connect(nowhere)
    message = str(failed.value)
    assert f"127.0.0.1:{port}" in message
    assert "\n" not in message and len(message) < 400, message
    assert "Exception" not in message and "py4j" not in message, message
    assert time.monotonic() - started < 30
