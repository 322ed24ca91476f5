"""A person approves, rejects or never answers a promotion, through the REST API of a running Airflow.

The module starts the `local` profile of ml/tools/service.py (api-server, scheduler, dag-processor and
triggerer; LocalExecutor, SQLite metadata, a DuckDB warehouse and a local registry) serving one small churn
spec whose promotions need approval, with a timeout of 0.01 h (36 s) so that the scheduler's sweep times one
out during the test. The spec's one candidate is fitted on the same data each run, so the first three runs
each train a first model (no champion yet) that the gate passes, and the fourth an identical challenger that
it rejects. Every run is triggered, found waiting and answered through the REST API v2, as a reviewer's
client or the UI's required actions would.
"""

from __future__ import annotations

import json
import re
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from datetime import timedelta

import pytest
import yaml

from ml.core.settings import Settings
from ml.core.warehouse import Warehouse
from ml.features.dbt import DbtResult, run_dbt
from ml.ingest.load import load_days
from ml.registry import Registry
from tests.fixtures import served_spec_env
from tests.integration.test_training import HORIZON, SIM, _test_spec
from tests.server.faults import poll, shorten_retry_delay
from tests.server.test_airflow_service import Service, _free_port, _token, _wait_for_run

AS_OF = SIM.start + timedelta(days=SIM.days - 1)
TIMEOUT_HOURS = 0.01
DAG = "/api/v2/dags/train_churn"
RUN_TIMEOUT_S = 300


@pytest.fixture(scope="module")
def service(tmp_path_factory):
    """The local profile serving the approval spec, train_churn unpaused, features built; stopped after."""
    from ml.tools.service import ServiceConfig, start, stop

    home = tmp_path_factory.mktemp("approval")
    spec_path = home / "churn_test.yaml"
    _test_spec(spec_path)
    # One quick candidate, a floor it clears, retraining on request only, and a person's approval.
    spec = yaml.safe_load(spec_path.read_text())
    spec.update(candidates=[c for c in spec["candidates"] if c["kind"] == "logistic"], schedule=None)
    spec["promotion"].update(floors={"roc_auc": 0.5}, bootstrap_samples=50,
                             approval={"required": True, "timeout_hours": TIMEOUT_HOURS})
    spec_path.write_text(yaml.safe_dump(spec))
    password = uuid.uuid4().hex
    env = {"TIDEMARK_HOME": str(home), "TIDEMARK_WAREHOUSE_URL": f"duckdb:///{home / 'warehouse.duckdb'}",
           # a registry of its own: the champions it leaves must not reach the session's other services
           "TIDEMARK_REGISTRY_URI": (home / "registry").as_uri(),
           "TIDEMARK_AIRFLOW_PASSWORD": password, **served_spec_env(spec_path, home),
           # The scheduler's timeout sweep of waiting tasks, every 5 s instead of 15.
           "AIRFLOW__SCHEDULER__TRIGGER_TIMEOUT_CHECK_INTERVAL": "5"}
    cfg = ServiceConfig(profile="local", port=_free_port(), worker_log_ports=(_free_port(), _free_port()),
                        triggerer_log_port=_free_port(), password=password, paused=True)
    with pytest.MonkeyPatch.context() as mp:
        for key, value in env.items():
            mp.setenv(key, value)
        settings = Settings.from_env()
        try:
            shorten_retry_delay(settings.airflow_home, timedelta(seconds=3))  # a failing task fails the test sooner
            with ThreadPoolExecutor(1) as pool:  # the warehouse is filled while Airflow starts
                built = pool.submit(_build_features, settings)
                start(settings, cfg)
                assert built.result().success, built.result().output[-3000:]
            service = Service(cfg.url, _token(cfg.url, cfg.user, password), cfg.user, password, settings, "", "")
            poll("train_churn parsed", lambda: "train_churn" in {
                d["dag_id"] for d in service.call("GET", "/api/v2/dags?limit=100")["dags"]}, 120, every_s=2)
            service.call("PATCH", DAG, {"is_paused": False})
            yield service
        finally:
            stop(settings)


def _build_features(settings: Settings) -> DbtResult:
    load_days(SIM, None, settings=settings)
    return run_dbt(["build", "--exclude", "tag:public_data"], settings=settings, vars={"horizon_days": HORIZON},
                   capture=True)


def _trigger(service: Service) -> str:
    return service.call("POST", f"{DAG}/dagRuns", {"logical_date": None, "conf": {"as_of": AS_OF.isoformat()}})["dag_run_id"]


def _instances(service: Service, run_id: str) -> list[dict]:
    return service.call("GET", f"{DAG}/dagRuns/{run_id}/taskInstances?limit=100")["task_instances"]


def _tasks(service: Service, run_id: str) -> dict[str, str | None]:
    return {t["task_id"]: t["state"] for t in _instances(service, run_id)}  # one candidate: one instance per task


def _awaiting_review(service: Service, run_id: str) -> dict:
    """The run's pending request, once its review task waits for an answer (fails if the run ends first)."""
    def waiting() -> bool | None:
        tasks = _tasks(service, run_id)
        assert "failed" not in tasks.values() and "upstream_failed" not in tasks.values(), tasks
        assert tasks.get("review") != "skipped", f"the gate rejected the challenger, so no one was asked: {tasks}"
        return tasks.get("review") == "awaiting_input" or None

    poll(f"run {run_id} waiting for a review", waiting, RUN_TIMEOUT_S, every_s=0.5)
    return service.call("GET", f"{DAG}/dagRuns/{run_id}/taskInstances/review/-1/hitlDetails")


def _answer(service: Service, run_id: str, option: str, reason: str) -> dict:
    """Answer once the scheduler has seen the review task park. (Airflow 3.3.2's scheduler takes an answer that
    lands before it processed the parked try's exit for a task killed externally, and retries the review.)"""
    log = service.settings.airflow_home / "service" / "logs" / "scheduler.log"
    seen = f"TaskInstance Finished: dag_id=train_churn, task_id=review, run_id={run_id},"
    poll("the scheduler seeing the review wait", lambda: any(
        seen in line and "state=awaiting_input" in line
        for line in log.read_text(errors="replace").splitlines()), 30, every_s=0.5)
    return service.call("PATCH", f"{DAG}/dagRuns/{run_id}/taskInstances/review/-1/hitlDetails",
                        {"chosen_options": [option], "params_input": {"reason": reason}})


def _finished(service: Service, run_id: str) -> dict[str, str | None]:
    """The states of a run's tasks once it succeeded, each task in its first try."""
    run = _wait_for_run(service, "train_churn", run_id, RUN_TIMEOUT_S)
    instances = _instances(service, run_id)
    assert run["state"] == "success", {t["task_id"]: t["state"] for t in instances}
    assert {t["task_id"]: t["try_number"] for t in instances if t["try_number"] > 1} == {}
    return {t["task_id"]: t["state"] for t in instances}


def _promotion(service: Service, run_id: str) -> dict:
    """The run's row in ml.model_promotions, its reasons decoded."""
    with Warehouse.connect(service.settings, read_only=True) as wh:
        rows = wh.read_arrow(f"select * from ml.model_promotions where run_id = '{run_id}'").to_pylist()
    assert len(rows) == 1, rows
    return {**rows[0], "reasons": json.loads(rows[0]["reasons"])}


def _registry(service: Service) -> Registry:
    return Registry.from_settings(service.settings)


def test_a_rejection_is_asked_for_with_the_gates_reasons_and_recorded_with_the_reviewers(service):
    run_id = _trigger(service)
    request = _awaiting_review(service, run_id)
    # The UI's required actions list it as waiting for an answer.
    pending = service.call("GET", "/api/v2/dags/~/dagRuns/~/hitlDetails?response_received=false")["hitl_details"]
    assert [(p["task_instance"]["dag_run_id"], p["task_instance"]["task_id"]) for p in pending] == [(run_id, "review")]
    assert request["subject"] == "Promote the logistic challenger of churn to champion?"
    assert (request["options"], request["defaults"], request["multiple"]) == (["Approve", "Reject"], ["Reject"], False)
    assert request["response_received"] is False and request["responded_by_user"] is None
    assert request["params"]["reason"]["value"] == ""
    body = request["body"]
    assert "The promotion gate of **churn** says **promoted**:" in body
    assert "- no champion yet: the first model is promoted if it clears the floors and sanity checks" in body
    assert re.search(r"^- pass: roc_auc 0\.\d{4} against the floor 0\.5$", body, re.M), body
    assert re.search(r"^card: (not available|`.+`|\[.+\]\(.+\))$", body, re.M), body
    assert f"No answer within {TIMEOUT_HOURS:g} h rejects the promotion." in body

    answered = _answer(service, run_id, "Reject", "hold until the Q3 audit")
    assert answered["responded_by"] == {"id": service.user, "name": service.user}
    tasks = _finished(service, run_id)
    assert tasks["promote"] == "success" and tasks["publish_champion"] == "skipped", tasks
    row = _promotion(service, run_id)
    assert (row["candidate_version"], row["decision"], row["champion_version"]) == ("v0001", "rejected", None)
    assert row["reasons"][-1] == f"rejected by {service.user}: hold until the Q3 audit"
    assert _registry(service).alias("churn").version is None  # published, recorded, not champion
    assert "v0001" in _registry(service).version_ids("churn")


def test_no_answer_within_the_timeout_rejects_the_promotion(service):
    run_id = _trigger(service)
    _awaiting_review(service, run_id)
    started = time.monotonic()
    tasks = _finished(service, run_id)  # the scheduler answers the defaults once the timeout passed
    assert time.monotonic() - started < TIMEOUT_HOURS * 3600 + 60
    assert tasks["review"] == "success" and tasks["publish_champion"] == "skipped", tasks
    answer = service.call("GET", f"{DAG}/dagRuns/{run_id}/taskInstances/review/-1/hitlDetails")
    assert answer["chosen_options"] == ["Reject"] and answer["responded_by_user"] is None
    row = _promotion(service, run_id)
    assert (row["candidate_version"], row["decision"]) == ("v0002", "rejected")
    assert row["reasons"][-1] == f"no answer within {TIMEOUT_HOURS:g} h: rejected"
    assert _registry(service).alias("churn").version is None


def test_an_approval_promotes_through_the_alias_in_the_approvers_name(service):
    run_id = _trigger(service)
    _awaiting_review(service, run_id)
    _answer(service, run_id, "Approve", "card and segments reviewed")
    tasks = _finished(service, run_id)
    assert tasks["promote"] == "success" and tasks["publish_champion"] == "success", tasks
    champion = _registry(service).alias("churn")
    assert champion.version == "v0003"
    moved = champion.history[-1]
    assert (moved["from"], moved["to"], moved["actor"]) == (None, "v0003", service.user), moved
    row = _promotion(service, run_id)
    assert (row["candidate_version"], row["decision"], row["champion_version"]) == ("v0003", "promoted", None)
    assert row["reasons"][-1] == f"approved by {service.user}: card and segments reviewed"


def test_a_challenger_the_gate_rejects_is_put_to_no_one(service):
    """The same data and seed again: the challenger cannot beat the champion it equals."""
    assert _registry(service).alias("churn").version == "v0003", "run the approval test first (module order)"
    run_id = _trigger(service)
    tasks = _finished(service, run_id)
    assert tasks["request_review"] == "success" and tasks["review"] == "skipped", tasks
    assert tasks["promote"] == "success" and tasks["publish_champion"] == "skipped", tasks
    asked = service.call("GET", f"/api/v2/dags/train_churn/dagRuns/{run_id}/hitlDetails")
    assert asked["total_entries"] == 0, asked
    row = _promotion(service, run_id)
    assert (row["candidate_version"], row["decision"], row["champion_version"]) == ("v0004", "rejected", "v0003")
    assert any(r.startswith("FAIL: roc_auc") for r in row["reasons"]), row["reasons"]
    assert not [r for r in row["reasons"] if r.startswith(("approved by", "rejected by", "no answer"))], row["reasons"]
    assert _registry(service).alias("churn").version == "v0003"
