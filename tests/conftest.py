"""The whole test session runs against a throwaway TIDEMARK_HOME.

Airflow reads its configuration once, when it is first imported, so the environment that points
it (metadata DB, DAGs folder, logs) and the DAGs' warehouse at a temporary folder is set here,
before any test module is collected.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path

import pytest

from ml.core.settings import Settings

SESSION_HOME = Path(tempfile.mkdtemp(prefix="tidemark-tests-"))
os.environ.update(Settings.from_env({"TIDEMARK_HOME": str(SESSION_HOME)}).airflow_env())
if os.environ.get("PYTEST_XDIST_WORKER"):
    # Parallel workers each keep dbt's artifacts (run results, partial parse) in a folder of their own.
    os.environ["DBT_TARGET_PATH"] = str(SESSION_HOME / "dbt-target")


def pytest_unconfigure(config) -> None:
    shutil.rmtree(SESSION_HOME, ignore_errors=True)


@pytest.fixture(scope="session")
def airflow_settings() -> Settings:
    """Settings of the session home, with Airflow's metadata DB migrated and the pools created."""
    from ml.orchestration.airflow_setup import init_airflow

    settings = Settings.from_env()
    init_airflow(settings)
    return settings
