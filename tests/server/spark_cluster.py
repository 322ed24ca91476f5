"""Helpers of the Spark cluster tests: the environment that points Tidemark at a cluster, and what ran where."""

from __future__ import annotations

import json
import sys
import urllib.request
from pathlib import Path
from typing import TYPE_CHECKING

import psutil

if TYPE_CHECKING:
    from pyspark.sql import SparkSession


def cluster_env(master: str, home: Path) -> dict[str, str]:
    """Tidemark on the cluster at `master` (spark://host:port), its catalog under `home`, and the executors'
    Python workers on this interpreter (a cluster reads PYSPARK_PYTHON from the driver, not spark.pyspark.python)."""
    return {"TIDEMARK_HOME": str(home), "TIDEMARK_WAREHOUSE_URL": master, "PYSPARK_PYTHON": sys.executable}


def processes_under(folder: Path) -> list[psutil.Process]:
    """The live processes (zombies left out) working in `folder` or below: a cluster's daemons run in its
    folder, and its executors in the worker's work dir inside it."""
    folder, found = folder.resolve(), []
    for proc in psutil.process_iter(["status"]):
        try:
            if proc.info["status"] != psutil.STATUS_ZOMBIE and Path(proc.cwd()).is_relative_to(folder):
                found.append(proc)
        except psutil.Error:  # it ended while we looked, or is not ours to inspect
            pass
    return found


def tasks_by_executor(spark: "SparkSession") -> dict[str, int]:
    """Completed tasks per executor id ("driver" for the driver) of the session's application, from its
    monitoring REST API."""
    context = spark.sparkContext
    url = f"{context.uiWebUrl}/api/v1/applications/{context.applicationId}/executors"
    with urllib.request.urlopen(url, timeout=10) as answer:
        return {executor["id"]: executor["completedTasks"] for executor in json.loads(answer.read())}
