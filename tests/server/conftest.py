"""Fixtures shared by the server tests: one standalone Spark cluster for the Spark modules; and how `make
test-server` splits the modules between its two workers (`-n 2 --dist loadgroup`).

One worker runs the modules that start Airflow's services (and the short Terraform and monitoring UI modules),
one module after another as without workers: their schedulers, workers and API server keep to deadlines. The
other runs the heavy modules that start no scheduler (Spark and the server demo) beside them, at a lower CPU
priority, so that where both want the two cores the side with deadlines keeps its pace. The two sides take
about as long (on a quiet machine alone: 776 s and 768 s). Without `-n` the groups change nothing.
"""

from __future__ import annotations

import os
from typing import Iterator

import pytest

BESIDE_THE_SERVICES = ("test_spark_", "test_demo_server")
NICENESS_BESIDE = 10


def _group(item: pytest.Item) -> str:
    module = item.path.stem
    return "beside" if module.startswith(BESIDE_THE_SERVICES) else "services"


@pytest.hookimpl(tryfirst=True)
def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        item.add_marker(pytest.mark.xdist_group(_group(item)))


@pytest.hookimpl(tryfirst=True)
def pytest_runtest_setup(item: pytest.Item) -> None:
    """In a worker of `make test-server`, the side without deadlines yields the CPU before its first fixtures
    start anything (the processes they start inherit the priority)."""
    if os.environ.get("PYTEST_XDIST_WORKER") and _group(item) == "beside" and os.nice(0) < NICENESS_BESIDE:
        os.nice(NICENESS_BESIDE - os.nice(0))


@pytest.fixture(scope="session")
def spark_master(tmp_path_factory) -> Iterator[str]:
    """The master URL of a standalone Spark cluster (a master and a worker, separate JVMs started from pyspark's
    own scripts) that the Spark modules build features, score, train and monitor against; stopped at the end."""
    pytest.importorskip("pyspark", reason="the Spark tests need pyspark: make install-spark")
    from ml.tools.spark_cluster import standalone_cluster

    with standalone_cluster(tmp_path_factory.mktemp("spark-cluster"), cores=2, memory="2g") as cluster:
        yield cluster.master
