"""Airflow as a service, driven the way an operator drives it.

The module starts the `celery` profile of `ml/tools/service.py` on free ports: api-server, scheduler,
dag-processor, triggerer and two Celery workers (one on the `default` queue, one on the `gpu` queue)
with the metadata DB in a fresh PostgreSQL database and Redis as the broker. The warehouse is another
fresh PostgreSQL database and the registry a bucket on moto's S3 server, so every worker reaches the
data over the network, as in production. Everything after start-up goes through the REST API v2 with a
token, or through the UI in headless Chromium.

The training and scoring tests also strike mid-task: they SIGKILL a task's process and terminate the
publish's PostgreSQL backend (tests/server/faults.py), then check that Airflow's own retries finish the
runs and that versions, decision records and prediction rows are stored exactly once.
"""

from __future__ import annotations

import json
import math
import os
import socket
import time
import urllib.error
import urllib.request
import uuid
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path

import psutil
import psycopg
import pytest
import yaml

from ml.core.settings import REPO_ROOT, Settings
from ml.core.spec import load_spec
from ml.features.dbt import run_dbt
from ml.ingest.load import load_days
from ml.registry import Registry
from tests.fixtures import create_database, drop_database, served_spec_env
from tests.integration.test_training import HORIZON, SIM, _test_spec
from tests.s3 import DUMMY_AWS_ENV
from tests.server.faults import (
    attempt_log,
    kill_task_when,
    logged,
    poll,
    predictions_per_day,
    published_once,
    running,
    shorten_retry_delay,
    task_instances,
    task_process,
    terminate_backend,
    warehouse_backend,
)

CHROMIUM = Path(os.environ.get("TIDEMARK_CHROMIUM", "/usr/bin/chromium"))
SCREENSHOTS = REPO_ROOT / "var" / "screenshots"
BROKER_DB = 9  # a Redis database of its own, emptied before the workers start
AS_OF = SIM.start + timedelta(days=SIM.days - 1)
# The service serves the test's churn spec alone (tests.fixtures.served_spec_env).
DAG_IDS = {"bootstrap", "ingest_raw", "build_features", "train_churn", "score_churn", "monitor_churn"}
SHARDS = 2
SCORED_DAYS = 30
PUBLISH_PAUSE_S = 2  # every publish waits this long inside its transaction, where the fault tests strike
RETRY_DELAY = timedelta(seconds=3)  # Airflow's own retries, sooner than the DAGs' two minutes (a cluster policy)


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@dataclass
class Service:
    url: str
    token: str
    user: str
    password: str
    settings: Settings
    bucket: str
    endpoint: str

    def call(self, method: str, path: str, body: dict | None = None) -> dict:
        """One REST API v2 request with the bearer token; the JSON answer, or a failure naming the status."""
        request = urllib.request.Request(
            f"{self.url}{path}", method=method, data=json.dumps(body).encode() if body is not None else None,
            headers={"Authorization": f"Bearer {self.token}", "Content-Type": "application/json"},
        )
        try:
            with urllib.request.urlopen(request, timeout=30) as resp:
                return json.loads(resp.read() or b"{}")
        except urllib.error.HTTPError as exc:
            pytest.fail(f"{method} {path} answered {exc.code}: {exc.read()[:2000]!r}")


def _token(url: str, user: str, password: str) -> str:
    request = urllib.request.Request(
        f"{url}/auth/token", method="POST", data=json.dumps({"username": user, "password": password}).encode(),
        headers={"Content-Type": "application/json"},
    )
    with urllib.request.urlopen(request, timeout=30) as resp:
        return json.loads(resp.read())["access_token"]


@pytest.fixture(scope="module")
def service(tmp_path_factory, s3_server):
    import boto3
    import redis

    from ml.tools.service import ServiceConfig, start, stop

    metadata_db, warehouse_db = create_database("tidemark_af"), create_database("tidemark_wh")
    bucket = f"tidemark-af-{uuid.uuid4().hex[:8]}"
    home = tmp_path_factory.mktemp("service")
    spec_path = home / "churn_test.yaml"
    _test_spec(spec_path)
    # Retrain on request only: unpausing a weekly DAG would also start a run for the last weekly slot.
    # Two scoring shards, so a killed shard is retried beside one that finished; a search bound by its trial
    # count alone, so a retried training task fits the same trials however loaded the machine is.
    spec_path.write_text(yaml.safe_dump({**yaml.safe_load(spec_path.read_text()), "schedule": None,
                                         "scoring": {"shards": SHARDS}, "search": {"budget_s": 3600, "max_trials": 3}}))
    password = uuid.uuid4().hex
    env = {
        **DUMMY_AWS_ENV,
        "TIDEMARK_HOME": str(home),
        "TIDEMARK_WAREHOUSE_URL": f"postgresql://postgres@127.0.0.1:5432/{warehouse_db}",
        "TIDEMARK_REGISTRY_URI": f"s3://{bucket}/models",
        "TIDEMARK_S3_ENDPOINT_URL": s3_server,
        **served_spec_env(spec_path, home),
        "TIDEMARK_AIRFLOW_PASSWORD": password,
        "TIDEMARK_TEST_PAUSE_IN_PUBLISH": str(PUBLISH_PAUSE_S),
        "TIDEMARK_SIM_DAY_SECONDS": "10",
    }
    boto3.client("s3", endpoint_url=s3_server, **{k.lower(): v for k, v in DUMMY_AWS_ENV.items()
                                                  if k.startswith("AWS_") and "KEY" in k}).create_bucket(Bucket=bucket)
    redis.Redis(port=6379, db=BROKER_DB).flushdb()
    cfg = ServiceConfig(
        profile="celery", port=_free_port(),
        metadata_db=f"postgresql://postgres@127.0.0.1:5432/{metadata_db}",
        broker_url=f"redis://127.0.0.1:6379/{BROKER_DB}",
        worker_log_ports=(_free_port(), _free_port()), triggerer_log_port=_free_port(), password=password,
        paused=True,  # each test unpauses the DAGs it drives
    )
    with pytest.MonkeyPatch.context() as mp:
        for key, value in env.items():
            mp.setenv(key, value)
        settings = Settings.from_env()
        try:
            load_days(SIM, None, settings=settings)
            built = run_dbt(["build", "--exclude", "tag:public_data"], settings=settings,
                            vars={"horizon_days": HORIZON}, capture=True)
            assert built.success, built.output[-3000:]
            shorten_retry_delay(settings.airflow_home, RETRY_DELAY)
            start(settings, cfg)
            yield Service(cfg.url, _token(cfg.url, cfg.user, password), cfg.user, password, settings, bucket,
                          s3_server)
        finally:
            stop(settings)
            drop_database(metadata_db)
            drop_database(warehouse_db)


def test_rest_api_lists_every_dag_documented_owned_and_no_import_errors(service):
    assert service.call("GET", "/api/v2/importErrors")["total_entries"] == 0
    dags = {d["dag_id"]: d for d in service.call("GET", "/api/v2/dags?limit=100")["dags"]}
    assert set(dags) == DAG_IDS
    for dag_id, dag in dags.items():
        assert dag["owners"] == ["tidemark"], dag_id
        assert "tidemark" in {t["name"] for t in dag["tags"]}, dag_id
        details = service.call("GET", f"/api/v2/dags/{dag_id}/details")
        kind = dag_id.split("_")[0]
        title = f"### `{kind}_<model>`" if kind in ("train", "score", "monitor") else f"### {dag_id}"
        assert details["doc_md"].lstrip().startswith(title), dag_id


def test_asset_graph_reads_raw_features_predictions_monitoring_retrain_champion(service):
    assets = {a["name"]: a for a in service.call("GET", "/api/v2/assets?limit=100")["assets"]}
    producers = {name: {t["dag_id"] for t in a["producing_tasks"]} for name, a in assets.items()}
    consumers = {name: {d["dag_id"] for d in a["scheduled_dags"]} for name, a in assets.items()}
    chain = [("raw", "ingest_raw", {"build_features"}),
             ("features.customer_features_daily", "build_features", {"score_churn"}),
             ("predictions.churn", "score_churn", {"monitor_churn"}), ("monitoring.churn", "monitor_churn", set()),
             ("retrain_requested.churn", "monitor_churn", {"train_churn"}), ("champion.churn", "train_churn", set())]
    for name, producer, scheduled in chain:
        assert producers[name] == {producer}, name
        assert consumers[name] == scheduled, name


def _wait_for_run(service: Service, dag_id: str, run_id: str, timeout_s: float) -> dict:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        run = service.call("GET", f"/api/v2/dags/{dag_id}/dagRuns/{run_id}")
        if run["state"] in ("success", "failed"):
            return run
        time.sleep(3)
    pytest.fail(f"{dag_id} run {run_id} still {run['state']} after {timeout_s:.0f} s")


def _retried_once(service: Service, dag_id: str, run_id: str, struck: set[str]) -> tuple[dict, list[dict]]:
    """The run and its task instances, once it succeeded with a second try of each struck task (`task_id[map_index]`)
    and one try of every other task that ran."""
    run = _wait_for_run(service, dag_id, run_id, timeout_s=600)
    tis = task_instances(service.call, dag_id, run_id)
    assert run["state"] == "success", {key: t["state"] for key, t in tis.items()}
    tries = {key: t["try_number"] for key, t in tis.items()}
    assert {key for key, n in tries.items() if n == 2} == struck, tries
    assert {n for key, n in tries.items() if key not in struck} <= {0, 1}, tries  # 0: skipped, never tried
    return run, list(tis.values())


def test_training_runs_on_celery_with_the_pytorch_candidate_on_the_gpu_worker_through_a_killed_task(service):
    service.call("PATCH", "/api/v2/dags/train_churn", {"is_paused": False})
    run = service.call("POST", "/api/v2/dags/train_churn/dagRuns",
                       {"logical_date": None, "conf": {"as_of": AS_OF.isoformat()}})
    # A CPU candidate's task process is SIGKILLed once its search has fitted a trial; Airflow retries it.
    spec = load_spec(service.settings.home / "churn_test.yaml")
    index, searched = next((i, c.name) for i, c in enumerate(c for c in spec.candidates if not c.uses_gpu) if c.search)
    log = attempt_log(service.settings.airflow_home, "train_churn", run["dag_run_id"], "train_cpu", index, 1)
    kill_task_when(service.call, "train_churn", run["dag_run_id"], f"train_cpu[{index}]",
                   lambda proc: logged(log, f"search {searched} trial 0:"))
    run, tis = _retried_once(service, "train_churn", run["dag_run_id"], {f"train_cpu[{index}]"})
    # Unpausing did not also start a run for the last weekly slot: the DAG waits for the next one.
    runs = service.call("GET", "/api/v2/dags/train_churn/dagRuns")["dag_runs"]
    assert [r["run_type"] for r in runs] == ["manual"], [(r["dag_run_id"], r["run_type"], r["state"]) for r in runs]

    fitted = {}
    for ti in tis:
        if ti["task_id"] not in ("train_cpu", "train_gpu"):
            continue
        xcom = service.call(
            "GET", f"/api/v2/dags/train_churn/dagRuns/{run['dag_run_id']}/taskInstances/{ti['task_id']}"
                   f"/xcomEntries/return_value?map_index={ti['map_index']}&deserialize=true")
        value = xcom["value"] if isinstance(xcom["value"], dict) else json.loads(xcom["value"])
        fitted[value["candidate"]] = {"task": ti["task_id"], "queue": ti["queue"], "worker": value["worker"],
                                      "kind": value["kind"]}
    assert set(fitted) == {c.name for c in spec.candidates}
    for name, info in fitted.items():
        if info["kind"] == "torch_mlp":
            assert info == {"task": "train_gpu", "queue": "gpu", "worker": "worker-gpu", "kind": "torch_mlp"}, name
        else:
            assert (info["task"], info["queue"], info["worker"]) == ("train_cpu", "default", "worker-default"), name

    # The run published to the S3 registry and promoted the first champion there, once.
    registry = Registry.from_uri(f"s3://{service.bucket}/models", endpoint_url=service.endpoint)
    assert registry.alias(spec.name).version is not None
    published_once(service.settings, registry, spec.name, run["dag_run_id"])


@pytest.mark.skipif(not CHROMIUM.exists(), reason=f"no Chromium at {CHROMIUM}: `make test-server` installs "
                                                  "Debian's chromium; or set TIDEMARK_CHROMIUM")
def test_ui_in_headless_chromium_logs_in_and_shows_the_dags_a_graph_and_the_asset_lineage(service):
    from playwright.sync_api import sync_playwright

    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    flags = ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run", "--disable-background-networking",
             "--disable-component-update", "--disable-sync", "--disable-dev-shm-usage"]
    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=str(CHROMIUM), headless=True, args=flags)
        page = browser.new_page(viewport={"width": 1600, "height": 1000})
        try:
            page.goto(service.url, wait_until="networkidle")
            page.fill("input[name=username]", service.user)
            page.fill("input[name=password]", service.password)
            page.click("button[type=submit]")
            page.wait_for_url(lambda u: "/auth/login" not in u, timeout=30_000)

            page.goto(f"{service.url}/dags", wait_until="networkidle")
            for dag_id in sorted(DAG_IDS):
                page.get_by_text(dag_id, exact=True).first.wait_for(timeout=30_000)
            page.screenshot(path=str(SCREENSHOTS / "dag_list.png"), full_page=True)

            page.goto(f"{service.url}/dags/train_churn", wait_until="networkidle")
            page.get_by_role("button", name="Show Graph").click()
            graph = page.locator(".react-flow")
            graph.wait_for(timeout=30_000)
            for task_id in ("extract", "train_gpu", "promote", "publish_champion"):
                graph.get_by_text(task_id).first.wait_for(timeout=30_000)
            page.wait_for_load_state("networkidle")
            page.screenshot(path=str(SCREENSHOTS / "train_model_graph.png"), full_page=True)

            # The lineage of one asset shows the whole chain, DAGs and assets alternating.
            assets = service.call("GET", "/api/v2/assets?limit=100")["assets"]
            predictions = next(a["id"] for a in assets if a["name"] == "predictions.churn")
            page.goto(f"{service.url}/assets/{predictions}", wait_until="networkidle")
            lineage = page.locator(".react-flow")
            lineage.wait_for(timeout=30_000)
            for node in ("ingest_raw", "raw", "build_features", "features.customer_features_daily", "score_churn",
                         "monitor_churn", "monitoring.churn", "retrain_requested.churn", "train_churn",
                         "champion.churn"):
                lineage.get_by_text(node, exact=True).first.wait_for(timeout=30_000)
            page.wait_for_load_state("networkidle")
            page.screenshot(path=str(SCREENSHOTS / "asset_graph.png"), full_page=True)
        except Exception:
            page.screenshot(path=str(SCREENSHOTS / "failure.png"), full_page=True)  # what the page showed
            raise
        finally:
            browser.close()
    for name in ("dag_list.png", "train_model_graph.png", "asset_graph.png"):
        assert (SCREENSHOTS / name).stat().st_size > 10_000, name


def test_scoring_runs_finish_exactly_once_through_a_killed_shard_a_terminated_and_a_killed_publish(service):
    """Scores with the champion that the training test promoted."""
    registry = Registry.from_uri(f"s3://{service.bucket}/models", endpoint_url=service.endpoint)
    assert registry.alias("churn").version, "no champion: run the training test first (module order)"
    start, end = AS_OF - timedelta(days=SCORED_DAYS - 1), AS_OF  # enough days that a shard is killed between two
    conf = {"start": start.isoformat(), "end": end.isoformat()}
    home, database = service.settings.airflow_home, service.settings.warehouse.database

    def publishing(proc: psutil.Process) -> dict | None:
        """The publish's warehouse backend while it is inside the transaction that replaces the days."""
        backend = warehouse_backend(proc, database)
        return backend if backend and backend["in_transaction"] else None

    # Run 1: shard 0's process dies after its first day's file; the publish's backend is terminated inside
    # its transaction.
    service.call("PATCH", "/api/v2/dags/score_churn", {"is_paused": False})
    run_id = service.call("POST", "/api/v2/dags/score_churn/dagRuns", {"logical_date": None, "conf": conf})
    run_id = run_id["dag_run_id"]
    shard_log = attempt_log(home, "score_churn", run_id, "score_shard", 0, 1)
    kill_task_when(service.call, "score_churn", run_id, "score_shard[0]",
                   lambda proc: logged(shard_log, f"scored {start.isoformat()} shard 0/"))
    publish = running(service.call, "score_churn", run_id, "publish[-1]")
    proc = poll("the publish process", lambda: task_process(publish["id"]), 60)
    assert terminate_backend(database, poll("the publish transaction", lambda: publishing(proc), 120)["pid"])
    _retried_once(service, "score_churn", run_id, {"score_shard[0]", "publish[-1]"})
    scored, distinct, expected = predictions_per_day(service.settings, start, end)
    assert len(expected) == SCORED_DAYS and scored == distinct == expected, (scored, distinct, expected)
    _reasons_match_the_predictions(service, start, end, expected)

    # Run 2 rescores the same days; its publish process is SIGKILLed inside the transaction.
    run_id = service.call("POST", "/api/v2/dags/score_churn/dagRuns", {"logical_date": None, "conf": conf})
    run_id = run_id["dag_run_id"]
    kill_task_when(service.call, "score_churn", run_id, "publish[-1]", publishing)
    _retried_once(service, "score_churn", run_id, {"publish[-1]"})
    scored, distinct, expected = predictions_per_day(service.settings, start, end)
    assert scored == distinct == expected, (scored, distinct, expected)
    _reasons_match_the_predictions(service, start, end, expected)
    plan = service.call("GET", f"/api/v2/dags/score_churn/dagRuns/{run_id}/taskInstances/resolve_interval"
                               "/xcomEntries/return_value?deserialize=true")["value"]
    plan = plan if isinstance(plan, dict) else json.loads(plan)
    with psycopg.connect(service.settings.warehouse.dsn()) as conn:
        stamps = conn.execute("select distinct scored_at from ml.predictions where as_of_date between %s and %s",
                              (start, end)).fetchall()
    # Every row is run 2's: its retry replaced run 1's rows rather than adding to them.
    assert stamps == [(datetime.fromisoformat(plan["scored_at"]).replace(tzinfo=None),)], (stamps, plan)


def _reasons_match_the_predictions(service: Service, start, end, expected: dict) -> None:
    """Reason codes were published with the scores, exactly once: the top tenth of each day's rows (the spec's
    default worklist), no (entity, rank) twice, and every reason row belongs to a published prediction."""
    with psycopg.connect(service.settings.warehouse.dsn()) as conn:
        found = conn.execute(
            "select r.as_of_date, count(*), count(distinct (r.entity_id, r.reason_rank)), count(distinct r.entity_id),"
            " count(*) filter (where p.entity_id is null) from ml.prediction_reasons r left join ml.predictions p"
            " using (entity_id, as_of_date, model_name, model_version)"
            " where r.model_name = 'churn' and r.as_of_date between %s and %s group by 1", (start, end)).fetchall()
    got = {day: (rows, pairs, entities, orphans) for day, rows, pairs, entities, orphans in found}
    assert got == {day: (rows, rows, math.ceil(0.1 * expected[day]), 0) for day, (rows, *_) in got.items()}, got
    assert sorted(got) == sorted(expected), (sorted(got), sorted(expected))


def test_the_clock_moves_the_next_day_through_features_and_scores_on_celery(service):
    """The scheduler loop of tests/server/test_scheduler_loop.py, shortened for this profile: with the world
    recorded and the clock started (what the bootstrap DAG does last), the scheduler alone loads the next day,
    builds its features and scores it. Runs last: it moves the warehouse on by days."""
    from ml.ingest.world import fix_world, start_clock

    fix_world(service.settings, {"seed": SIM.seed, "customers": SIM.customers, "sim_start": str(SIM.start),
                                 "drift_date": "none"})
    start_clock(service.settings)
    day = SIM.start + timedelta(days=SIM.days)  # the first day after the loaded history
    for dag_id in ("ingest_raw", "build_features", "score_churn"):
        service.call("PATCH", f"/api/v2/dags/{dag_id}", {"is_paused": False})

    def scored() -> bool:
        rows, _, features = predictions_per_day(service.settings, day, day)
        return bool(rows) and rows == features or None

    try:
        poll(f"the scheduler to score {day}", scored, timeout_s=600, every_s=5)
    finally:
        service.call("PATCH", "/api/v2/dags/ingest_raw", {"is_paused": True})  # stop the clock
    rows, distinct, features = predictions_per_day(service.settings, day, day)
    assert rows == distinct == features and rows[day] > 0
    ticks = service.call("GET", "/api/v2/dags/ingest_raw/dagRuns?limit=100")["dag_runs"]
    assert {r["run_type"] for r in ticks} == {"scheduled"}, ticks
    builds = service.call("GET", "/api/v2/dags/build_features/dagRuns?limit=100")["dag_runs"]
    assert any(r["run_type"] == "asset_triggered" and r["state"] == "success" for r in builds), builds
