"""The scheduler runs the loop by itself: from an empty service to scored, drifting and retrained days.

`python -m ml airflow start --no-bootstrap` starts the local profile (`make airflow`: LocalExecutor,
SQLite, DuckDB) on a throwaway TIDEMARK_HOME, with the simulated clock at one day every 20 seconds.
After that everything goes through REST: `python -m ml airflow bootstrap` unpauses the DAGs and
triggers the `bootstrap` DAG once, the test only polls, and the scheduler does the rest: ingest ticks,
asset-triggered feature builds, scoring and monitoring, the retrain request and the gate. `python -m ml airflow stop` then has to end every process it started.

To reach the drift event in a few simulated days, the world's drift day is the day after its
history ends, and the test spec asks for a retrain on the first day at least 5% of the watched
columns drift. Everything else is the shipped churn spec and the demo's world.
"""

from __future__ import annotations

import subprocess
import sys
import time
from datetime import date, timedelta

import pytest
import yaml

from ml.core.settings import REPO_ROOT, Settings
from ml.core.spec import SPEC_DIR
from ml.monitoring.drift import DATASET_ROW
from ml.tools.service import _alive, _port_free, loop_dags, read_state
from tests.fixtures import served_spec_env
from tests.server.test_airflow_service import Service, _free_port, _token

HISTORY_END = date(2025, 3, 14)  # the demo's first training date
DRIFT_DATE = HISTORY_END + timedelta(days=1)
SIM_DAY_SECONDS = 20
# A bound on a stalled loop, not a target: a loop that decides returns as soon as it has.
LOOP_TIMEOUT_S = 1500
pytestmark = pytest.mark.timeout(LOOP_TIMEOUT_S + 900)


@pytest.fixture(scope="module")
def loop(tmp_path_factory):
    """The service with the bootstrap done and the loop run until the gate decided on a retrain; stopped after."""
    home = tmp_path_factory.mktemp("loop")
    spec = yaml.safe_load((SPEC_DIR / "churn.yaml").read_text())
    spec["monitoring"].update(drift_share=0.05, consecutive_days=1)
    spec_path = home / "churn_loop.yaml"
    spec_path.write_text(yaml.safe_dump(spec))
    port = _free_port()
    env = {"TIDEMARK_HOME": str(home), "TIDEMARK_WAREHOUSE_URL": f"duckdb:///{home / 'warehouse.duckdb'}",
           "TIDEMARK_REGISTRY_URI": (home / "registry").as_uri(),  # empty: the bootstrap trains the first champion
           "TIDEMARK_AIRFLOW_PASSWORD": "loop-test-password", "TIDEMARK_AIRFLOW_PORT": str(port),
           "TIDEMARK_SIM_DAY_SECONDS": str(SIM_DAY_SECONDS), **served_spec_env(spec_path, home)}
    with pytest.MonkeyPatch.context() as mp:
        for key, value in env.items():
            mp.setenv(key, value)
        started_at = time.monotonic()
        started = subprocess.run([sys.executable, "-m", "ml", "airflow", "start", "--no-bootstrap"], cwd=REPO_ROOT,
                                 capture_output=True, text=True, timeout=400)
        assert started.returncode == 0, started.stdout[-3000:] + started.stderr[-3000:]
        url = f"http://127.0.0.1:{port}"
        service = Service(url, _token(url, "admin", env["TIDEMARK_AIRFLOW_PASSWORD"]), "admin",
                          env["TIDEMARK_AIRFLOW_PASSWORD"], Settings.from_env(), "", "")
        pids = [p["pid"] for p in read_state(service.settings)["processes"]]
        try:
            timings = _run_loop(service, started_at)
            runs = _snapshot(service)
        finally:
            # Stopped before the checks: DuckDB lets no reader in while a task writes.
            stopped = _cli("stop", "--grace", "10")
        stop = {"processes": len(pids), "returncode": stopped.returncode, "alive": [pid for pid in pids if _alive(pid)],
                "state": read_state(service.settings), "again": _again(),
                "port_free": _port_free("127.0.0.1", port), "start_output": started.stdout + started.stderr}
        yield service, timings, runs, stop


def _again() -> str:
    """What a second `stop` prints (the console writes to stderr)."""
    again = _cli("stop")
    return again.stdout + again.stderr


def _cli(*args: str, timeout_s: float = 120) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "ml", "airflow", *args], cwd=REPO_ROOT, capture_output=True,
                          text=True, timeout=timeout_s)


def _run_loop(service: Service, started_at: float) -> dict:
    """Trigger the bootstrap, then wait, without triggering anything else, for the gate's decision on a retrain."""
    # The command waits for the DAG processor, unpauses the loop's DAGs and triggers bootstrap over REST.
    triggered = _cli("bootstrap", "--drift-date", DRIFT_DATE.isoformat(), "--history-end", HISTORY_END.isoformat(),
                     timeout_s=400)
    assert triggered.returncode == 0, triggered.stdout[-3000:] + triggered.stderr[-3000:]
    timings = {}
    deadline = time.monotonic() + LOOP_TIMEOUT_S
    while time.monotonic() < deadline:
        _fail_on_failed_runs(service)
        if "first_scored" not in timings and _successful(service, "score_churn", with_task="publish"):
            timings["first_scored"] = time.monotonic() - started_at
        if len(_successful(service, "train_churn", with_task="promote")) >= 2:
            timings["retrain_decided"] = time.monotonic() - started_at
            return timings
        time.sleep(5)
    pytest.fail(f"no retrain was decided within {LOOP_TIMEOUT_S} s; runs: {_states(service)}")


def _snapshot(service: Service) -> dict[str, list[dict]]:
    """Every run of the loop's DAGs, oldest first, with its tasks' states: what the checks read once it stopped."""
    return {d: [{**r, "tasks": _tasks(service, d, r["dag_run_id"])} for r in _runs(service, d)] for d in loop_dags(service.settings)}


def _runs(service: Service, dag_id: str) -> list[dict]:
    return service.call("GET", f"/api/v2/dags/{dag_id}/dagRuns?limit=1000&order_by=run_after")["dag_runs"]


def _tasks(service: Service, dag_id: str, run_id: str) -> dict[str, str | None]:
    listed = service.call("GET", f"/api/v2/dags/{dag_id}/dagRuns/{run_id}/taskInstances?limit=500")
    return {t["task_id"]: t["state"] for t in listed["task_instances"]}


def _successful(service: Service, dag_id: str, *, with_task: str) -> list[dict]:
    """The runs that succeeded with `with_task` run (not skipped)."""
    return [r for r in _runs(service, dag_id)
            if r["state"] == "success" and _tasks(service, dag_id, r["dag_run_id"]).get(with_task) == "success"]


def _states(service: Service) -> dict[str, list[tuple[str, str]]]:
    return {d: [(r["dag_run_id"], r["state"]) for r in _runs(service, d)] for d in loop_dags(service.settings)}


def _fail_on_failed_runs(service: Service) -> None:
    failed = {d: [r["dag_run_id"] for r in _runs(service, d) if r["state"] == "failed"] for d in loop_dags(service.settings)}
    failed = {d: ids for d, ids in failed.items() if ids}
    if failed:
        logs = service.settings.airflow_home / "logs"
        pytest.fail(f"runs failed: {failed}; their task logs are under {logs}")


def _query(settings: Settings, sql: str) -> list[tuple]:
    import duckdb

    with duckdb.connect(str(settings.warehouse.path), read_only=True) as con:
        return con.execute(sql).fetchall()


def test_only_the_bootstrap_was_triggered_by_hand_and_the_clock_skipped_until_it_finished(loop):
    service, _, runs, _ = loop
    assert [r["run_type"] for r in runs["bootstrap"]] == ["manual"]
    assert {r["run_type"] for r in runs["ingest_raw"]} == {"scheduled"}
    # The bootstrap's build and first training were started by its trigger tasks; every later run by an asset.
    assert [r["run_type"] for r in runs["build_features"]][0] == "operator_triggered"
    assert {r["run_type"] for r in runs["build_features"][1:]} == {"asset_triggered"}
    assert {r["run_type"] for r in runs["score_churn"] + runs["monitor_churn"]} == {"asset_triggered"}
    train_types = [r["run_type"] for r in runs["train_churn"]]
    assert train_types.count("operator_triggered") == 1 and "asset_triggered" in train_types, train_types
    assert set(train_types) <= {"operator_triggered", "asset_triggered", "scheduled"}, train_types

    # Ticks before the clock started skipped with the reason; none loaded a day off the wall clock. The first
    # tick comes as `bootstrap` unpauses ingest_raw, so it may find no world yet rather than a stopped clock.
    skipped = [r for r in runs["ingest_raw"] if r["tasks"]["load_raw"] == "skipped"]
    assert skipped, "no tick ran before the bootstrap finished"
    reasons = ("the simulated clock has not started", "holds no simulated world yet")
    logs = service.settings.airflow_home / "logs" / "dag_id=ingest_raw" / f"run_id={skipped[0]['dag_run_id']}"
    text = "".join(p.read_text() for p in logs.rglob("*.log"))
    assert any(reason in text for reason in reasons), f"the first tick skipped without its reason: {text[-2000:]}"
    loaded = _query(service.settings, "select min(ingest_date), max(ingest_date), count(distinct ingest_date) "
                                      "from raw.usage_events")
    first, last, days = loaded[0]
    assert first == date(2024, 8, 1) and last > HISTORY_END and days == (last - first).days + 1
    assert last < date(2025, 12, 31), "a day off the wall clock was loaded"
    world = _query(service.settings, "select seed, customers, sim_start, drift_date, clock_started_at "
                                     "from ml.simulated_world")
    assert world[0][:4] == (7, 2_000, date(2024, 8, 1), DRIFT_DATE) and world[0][4] is not None and len(world) == 1


def test_every_built_day_after_the_history_was_scored_once_and_watched(loop):
    service, _, _, _ = loop
    scored = _query(service.settings, "select as_of_date, count(*), count(distinct entity_id), "
                                      "count(distinct model_version) from ml.predictions group by 1 order by 1")
    features = dict(_query(service.settings, "select as_of_date, count(*) from marts.customer_features_daily "
                                             f"where as_of_date > '{HISTORY_END}' group by 1"))
    days = [row[0] for row in scored]
    assert days and days[0] == HISTORY_END + timedelta(days=1)
    assert days == [days[0] + timedelta(days=i) for i in range(len(days))], days
    for day, rows, entities, versions in scored:
        assert rows == entities == features[day] and versions == 1, (day, rows, entities, features[day])
    drift = _query(service.settings, "select as_of_date, drift_share, dataset_drift from ml.drift_metrics "
                                     f"where column_name = '{DATASET_ROW}' order by 1")
    watched = [row[0] for row in drift]
    assert watched[0] == days[0] and set(watched) <= set(days)
    assert any(row[2] for row in drift), drift


def test_one_retrain_request_and_the_gate_decided_on_it(loop):
    service, _, runs, _ = loop
    requests = _query(service.settings, "select requested_on, reason, champion_version from ml.retrain_requests")
    assert len(requests) == 1, requests
    requested_on, reason, champion = requests[0]
    assert reason == "drift" and champion == "v0001" and requested_on >= DRIFT_DATE
    decisions = _query(service.settings, "select candidate_version, decision, champion_version, reasons "
                                         "from ml.model_promotions order by candidate_version")
    assert [d[:3] for d in decisions][0] == ("v0001", "promoted", None)
    assert len(decisions) == 2 and decisions[1][0] == "v0002" and decisions[1][2] == "v0001"
    assert decisions[1][1] in ("promoted", "rejected") and "roc_auc" in decisions[1][3]
    retrain = [r for r in runs["train_churn"] if r["run_type"] == "asset_triggered"]
    assert retrain and retrain[0]["state"] == "success" and retrain[0]["tasks"]["promote"] == "success", retrain


def test_the_loop_timings(loop):
    """Printed for the record (pytest -s); the bound only says the loop did not stall."""
    _, timings, _, _ = loop
    print(f"first scored day {timings['first_scored']:.0f} s after start; retrain decided "
          f"{timings['retrain_decided']:.0f} s after start")
    assert timings["first_scored"] < timings["retrain_decided"] < LOOP_TIMEOUT_S + 400


def test_start_printed_the_address_and_login_and_stop_ended_every_process(loop):
    service, _, _, stop = loop
    assert service.url in stop["start_output"] and "login: admin / loop-test-password" in stop["start_output"]
    assert stop["processes"] == 4 and stop["returncode"] == 0 and stop["alive"] == [] and stop["state"] is None and stop["port_free"]
    assert "nothing to stop" in stop["again"]
