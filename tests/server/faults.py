"""Process faults for the Celery service tests: find a running task's process and its warehouse backend, and
check afterwards that what the runs stored is there exactly once.

Under the CeleryExecutor each Celery pool process supervises a task in a child process of its own, which
titles itself `airflow worker -- <task instance id>`. That child is the worker process these tests kill
with SIGKILL: its supervisor sees it die at once, reports the attempt failed, and Airflow's scheduler
retries it after the task's retry delay. (Killing the whole Celery worker would leave the attempt to the
scheduler's heartbeat timeout, minutes by default.)

The warehouse connection a task holds is found through the TCP port its process connects from, which
PostgreSQL reports as `client_port` in pg_stat_activity, so a test terminates that task's backend only.
"""

from __future__ import annotations

import time
from datetime import date, timedelta
from pathlib import Path
from typing import Callable, TypeVar

import psutil
import psycopg
import pytest

from ml.core.settings import Settings
from ml.core.spec import dbt_relation, load_spec
from ml.registry import Registry

T = TypeVar("T")
PG_PORT = 5432


def shorten_retry_delay(airflow_home: Path, delay: timedelta) -> Path:
    """Install a cluster policy (`<AIRFLOW_HOME>/config/airflow_local_settings.py`) giving every task `delay`
    between tries. The retries stay Airflow's own; only the two-minute wait of the DAGs' default_args goes."""
    path = airflow_home / "config" / "airflow_local_settings.py"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(
        '"""Test profile: a short wait between a task\'s tries."""\n\n'
        "from datetime import timedelta\n\n\n"
        "def task_policy(task):\n"
        f"    task.retry_delay = timedelta(seconds={delay.total_seconds()})\n"
    )
    return path


def poll(what: str, probe: Callable[[], T | None], timeout_s: float, every_s: float = 0.1) -> T:
    """The first truthy answer of `probe`, or a failure naming what never happened."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        found = probe()
        if found:
            return found
        time.sleep(every_s)
    pytest.fail(f"{what}: not seen within {timeout_s:.0f} s")


def task_process(ti_id: str) -> psutil.Process | None:
    """The process running the task instance `ti_id` (its title names the id), if there is one now."""
    title = f"airflow worker -- {ti_id}"
    for proc in psutil.process_iter(["cmdline"]):
        if title in " ".join(proc.info["cmdline"] or ()):
            return proc
    return None


def attempt_log(airflow_home: Path, dag_id: str, run_id: str, task_id: str, map_index: int, attempt: int) -> Path:
    """The file Airflow's default log template gives one try of a task."""
    folder = airflow_home / "logs" / f"dag_id={dag_id}" / f"run_id={run_id}" / f"task_id={task_id}"
    if map_index >= 0:
        folder = folder / f"map_index={map_index}"
    return folder / f"attempt={attempt}.log"


def logged(path: Path, text: str) -> bool:
    """`text` appears in the log file at `path`."""
    try:
        return text in path.read_text(errors="replace")
    except FileNotFoundError:
        return False


def task_instances(call: Callable[..., dict], dag_id: str, run_id: str) -> dict[str, dict]:
    """The run's task instances over the REST API, keyed `task_id[map_index]`."""
    tis = call("GET", f"/api/v2/dags/{dag_id}/dagRuns/{run_id}/taskInstances?limit=100")["task_instances"]
    return {f"{t['task_id']}[{t['map_index']}]": t for t in tis}


def running(call: Callable[..., dict], dag_id: str, run_id: str, task: str, timeout_s: float = 300) -> dict:
    """The task instance `task` (`task_id[map_index]`) once it is running."""
    def probe() -> dict | None:
        ti = task_instances(call, dag_id, run_id).get(task)
        return ti if ti and ti["state"] == "running" else None

    return poll(f"{task} of {run_id} running", probe, timeout_s, every_s=0.5)


def kill_task_when(call: Callable[..., dict], dag_id: str, run_id: str, task: str,
                   ready: Callable[[psutil.Process], object]) -> dict:
    """Wait until the first try of `task` runs in a process and `ready(process)` holds, then SIGKILL that process."""
    ti = running(call, dag_id, run_id, task)
    assert ti["try_number"] == 1, ti
    proc = poll(f"the process of {task} (task instance {ti['id']})", lambda: task_process(ti["id"]), 60)
    poll(f"{task} mid-task", lambda: ready(proc), 120, every_s=0.02)
    proc.kill()
    return ti


def warehouse_backend(proc: psutil.Process, database: str) -> dict | None:
    """The pg_stat_activity row of `proc`'s connection to `database`, matched by its client port."""
    try:
        ports = [c.laddr.port for c in proc.net_connections(kind="tcp") if c.raddr and c.raddr.port == PG_PORT]
    except psutil.NoSuchProcess:
        return None
    if not ports:
        return None
    with psycopg.connect(f"host=127.0.0.1 port={PG_PORT} user=postgres dbname={database}", autocommit=True) as conn:
        row = conn.execute(
            "select pid, state, xact_start is not null from pg_stat_activity "
            "where datname = %s and client_port = any(%s)", (database, ports),
        ).fetchone()
    return {"pid": row[0], "state": row[1], "in_transaction": row[2]} if row else None


def terminate_backend(database: str, pid: int) -> bool:
    """pg_terminate_backend on one backend of `database`; whether PostgreSQL signalled it."""
    with psycopg.connect(f"host=127.0.0.1 port={PG_PORT} user=postgres dbname={database}", autocommit=True) as conn:
        return conn.execute("select pg_terminate_backend(pid) from pg_stat_activity where pid = %s and datname = %s",
                            (pid, database)).fetchone() == (True,)


# -- exactly once ------------------------------------------------------------------------------------------
def published_once(settings: Settings, registry: Registry, model: str, run_id: str) -> None:
    """The training run left one registry version, one decision record and one ml.model_promotions row, and
    no version number was claimed without being published."""
    versions = registry.versions(model)
    assert {k.split("/")[2] for k in registry.store.list(f"{model}/versions/")} == {v.version for v in versions}
    assert [v.manifest["run_id"] for v in versions].count(run_id) == 1, [v.manifest["run_id"] for v in versions]
    decisions = [d["run_id"] for d in registry.records(model, "decisions")]
    assert decisions.count(run_id) == 1, decisions
    with psycopg.connect(settings.warehouse.dsn()) as conn:
        rows = conn.execute("select candidate_version, run_id from ml.model_promotions").fetchall()
    assert sorted(v for v, _ in rows) == sorted(v.version for v in versions), rows
    assert [r for _, r in rows].count(run_id) == 1, rows


def predictions_per_day(settings: Settings, start: date, end: date) -> tuple[dict, dict, dict]:
    """Per day from `start` to `end`: rows in ml.predictions, distinct (entity, version, scored_at) among them,
    and rows of the spec's feature relation."""
    spec = load_spec(settings.model_spec)
    features = dbt_relation(settings.dbt_manifest, spec.features.relation)
    queries = [
        "select as_of_date, count(*) from ml.predictions where as_of_date between %s and %s group by 1",
        "select as_of_date, count(distinct (entity_id, model_version, scored_at)) from ml.predictions "
        "where as_of_date between %s and %s group by 1",
        f"select {spec.time_column}, count(*) from {features.qualified} where {spec.time_column} between %s and %s "
        "group by 1",
    ]
    with psycopg.connect(settings.warehouse.dsn()) as conn:
        scored, distinct, expected = (dict(conn.execute(sql, (start, end)).fetchall()) for sql in queries)
    return scored, distinct, expected
