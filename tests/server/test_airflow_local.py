"""`make airflow`: the local profile on the embedded defaults starts, runs a DAG, and stops cleanly.

The profile runs api-server, scheduler, dag-processor and triggerer with the LocalExecutor, the
metadata in SQLite and the warehouse in DuckDB, all under a throwaway TIDEMARK_HOME.
"""

from __future__ import annotations

import subprocess
import sys

import pytest

from ml.core.settings import REPO_ROOT, Settings
from tests.server.test_airflow_service import Service, _free_port, _token, _wait_for_run


@pytest.fixture(scope="module")
def local_service(tmp_path_factory):
    home = tmp_path_factory.mktemp("local-service")
    port = _free_port()
    # The session's environment names a warehouse of its own: this service gets one under its home.
    env = {"TIDEMARK_HOME": str(home), "TIDEMARK_WAREHOUSE_URL": f"duckdb:///{home / 'warehouse.duckdb'}",
           "TIDEMARK_AIRFLOW_PASSWORD": "local-test-password"}
    with pytest.MonkeyPatch.context() as mp:
        for key, value in env.items():
            mp.setenv(key, value)
        mp.setenv("TIDEMARK_AIRFLOW_PORT", str(port))
        started = subprocess.run([sys.executable, "-m", "ml", "airflow", "start"], cwd=REPO_ROOT,
                                 capture_output=True, text=True, timeout=400)
        assert started.returncode == 0, started.stdout[-3000:] + started.stderr[-3000:]
        url = f"http://127.0.0.1:{port}"
        settings = Settings.from_env()
        try:
            yield Service(url, _token(url, "admin", env["TIDEMARK_AIRFLOW_PASSWORD"]), "admin",
                          env["TIDEMARK_AIRFLOW_PASSWORD"], settings, "", ""), started.stdout + started.stderr
        finally:
            subprocess.run([sys.executable, "-m", "ml", "airflow", "stop"], cwd=REPO_ROOT, capture_output=True,
                           text=True, timeout=120)


def test_start_prints_the_address_and_login_and_a_dag_runs_into_duckdb(local_service):
    service, output = local_service
    assert service.url in output
    assert "login: admin / local-test-password" in output
    service.call("PATCH", "/api/v2/dags/ingest_raw", {"is_paused": False})
    run = service.call("POST", "/api/v2/dags/ingest_raw/dagRuns", {
        "logical_date": None, "conf": {"start": "2025-01-01", "end": "2025-01-05", "customers": 200},
    })
    run = _wait_for_run(service, "ingest_raw", run["dag_run_id"], timeout_s=300)
    assert run["state"] == "success"
    # Unpausing also started the latest daily slot's run; DuckDB admits no reader while it writes.
    for other in service.call("GET", "/api/v2/dags/ingest_raw/dagRuns")["dag_runs"]:
        _wait_for_run(service, "ingest_raw", other["dag_run_id"], timeout_s=300)

    import duckdb

    with duckdb.connect(str(service.settings.warehouse.path), read_only=True) as con:
        days = con.execute("select count(distinct ingest_date) from raw.usage_events "
                           "where ingest_date between '2025-01-01' and '2025-01-05'").fetchone()[0]
    assert days == 5


def test_stop_ends_every_process_and_frees_the_port(local_service):
    from ml.tools.service import _alive, read_state

    service, _ = local_service
    pids = [p["pid"] for p in read_state(service.settings)["processes"]]
    assert len(pids) == 4
    stopped = subprocess.run([sys.executable, "-m", "ml", "airflow", "stop"], cwd=REPO_ROOT, capture_output=True,
                             text=True, timeout=120)
    assert stopped.returncode == 0, stopped.stderr[-2000:]
    assert not any(_alive(pid) for pid in pids)
    assert read_state(service.settings) is None
    again = subprocess.run([sys.executable, "-m", "ml", "airflow", "stop"], cwd=REPO_ROOT, capture_output=True,
                           text=True, timeout=60)
    assert "nothing to stop" in again.stdout + again.stderr
