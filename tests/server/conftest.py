"""Fixtures shared by the server tests: one standalone Spark cluster for the Spark modules."""

from __future__ import annotations

from typing import Iterator

import pytest


@pytest.fixture(scope="session")
def spark_master(tmp_path_factory) -> Iterator[str]:
    """The master URL of a standalone Spark cluster (a master and a worker, separate JVMs started from pyspark's
    own scripts) that the Spark modules build features, score, train and monitor against; stopped at the end."""
    pytest.importorskip("pyspark", reason="the Spark tests need pyspark: make install-spark")
    from ml.tools.spark_cluster import standalone_cluster

    with standalone_cluster(tmp_path_factory.mktemp("spark-cluster"), cores=2, memory="2g") as cluster:
        yield cluster.master
