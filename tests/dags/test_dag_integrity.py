"""Every DAG parses without errors, credentials or heavy imports, and is documented, owned and retried."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from ml.core.settings import (
    REPO_ROOT,
    WAREHOUSE_CONN_ID,
    WAREHOUSE_CONN_VARIABLE,
    Settings,
    parse_warehouse_url,
)
from ml.features.cosmos import ManifestMissing, require_manifest, warehouse_profile
from ml.orchestration.airflow_setup import POOLS, WAREHOUSE_POOL

DAGS_DIR = REPO_ROOT / "dags"
# The served models of the shipped specs: each has its own train, score and monitor DAGs.
MODELS = ("churn", "payment_default")
MODEL_DAGS = ("train", "score", "monitor")
DAG_IDS = {"bootstrap", "ingest_raw", "build_features", *(f"{kind}_{m}" for kind in MODEL_DAGS for m in MODELS)}
HEAVY_MODULES = ("pandas", "numpy", "pyarrow", "duckdb", "psycopg", "torch", "lightgbm", "sklearn", "evidently")


@pytest.fixture(scope="module")
def dagbag():
    from airflow.dag_processing.dagbag import DagBag

    return DagBag(dag_folder=str(DAGS_DIR), known_pools={"default_pool", *POOLS})


@pytest.fixture(scope="module")
def manifest() -> dict:
    return json.loads(require_manifest(Settings.from_env()).read_text())


def test_every_dag_imports_without_errors_or_unknown_pools(dagbag):
    assert dagbag.import_errors == {}
    assert set(dagbag.dag_ids) == DAG_IDS
    assert dagbag.dag_warnings == set()


@pytest.mark.parametrize("dag_id", sorted(DAG_IDS))
def test_every_dag_is_documented_tagged_owned_and_retried(dagbag, dag_id):
    dag = dagbag.dags[dag_id]
    kind = dag_id.split("_")[0]
    title = f"### `{kind}_<model>`" if kind in MODEL_DAGS else f"### {dag_id}"
    assert dag.doc_md and dag.doc_md.lstrip().startswith(title)
    assert "tidemark" in dag.tags
    assert dag.catchup is False
    assert dag.start_date.utcoffset().total_seconds() == 0
    for task in dag.tasks:
        assert task.owner == "tidemark", task.task_id
        # build_features' one `dbt build` is not repeated: each failed node's own task retries that node
        assert task.retries >= 1 or task.task_id == "dbt.dbt_producer_watcher", task.task_id


def test_parsing_imports_nothing_heavy_touches_no_database_and_is_quick(tmp_path):
    """Parse in a fresh interpreter whose metadata DB and warehouse do not exist: nothing may connect."""
    out = tmp_path / "parse.json"
    code = f"""
import json, sys, time
from airflow.dag_processing.dagbag import DagBag
started = time.perf_counter()
bag = DagBag({str(DAGS_DIR)!r})
seconds = time.perf_counter() - started
from cosmos import telemetry
profile = bag.dags["build_features"].get_task("dbt.dbt_producer_watcher").profile_config
json.dump({{
    "errors": bag.import_errors,
    "dags": sorted(bag.dag_ids),
    "seconds": seconds,
    "heavy": sorted(m for m in {HEAVY_MODULES!r} if m in sys.modules),
    "cosmos_telemetry": telemetry.should_emit(),
    "target": profile.target_name,
    "conn_id": profile.profile_mapping.conn_id,
}}, open({str(out)!r}, "w"))
"""
    env = {
        **os.environ,
        "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": f"sqlite:///{tmp_path / 'missing' / 'airflow.db'}",
        "TIDEMARK_WAREHOUSE_URL": "postgresql://nobody:secret@127.0.0.1:9/nowhere",
    }
    env.pop(WAREHOUSE_CONN_VARIABLE, None)  # parsing never looks the connection up
    proc = subprocess.run([sys.executable, "-c", code], env=env, cwd=tmp_path, capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr[-3000:]
    result = json.loads(out.read_text())
    assert result["errors"] == {}
    assert result["dags"] == sorted(DAG_IDS)
    assert result["heavy"] == []
    assert result["seconds"] < 5, f"parsing dags/ took {result['seconds']:.1f}s"
    assert result["cosmos_telemetry"] is False
    assert (result["target"], result["conn_id"]) == ("postgres", WAREHOUSE_CONN_ID)


def test_a_warehouse_password_stays_out_of_the_environment_and_every_serialized_dag_and_reaches_dbt(tmp_path):
    """Parse the DAGs against a password-protected warehouse in a fresh interpreter, then render the
    profile that a dbt task hands dbt, as Cosmos does when the task runs."""
    secret = "s3cret-Pw-91"
    url = f"postgresql://tidemark:{secret}@db.example:5432/warehouse"
    code = f"""
import json, os, yaml
from airflow.dag_processing.dagbag import DagBag
from airflow.serialization.serialized_objects import DagSerialization
before = dict(os.environ)
bag = DagBag({str(DAGS_DIR)!r})
changed = sorted(k for k in {{*before, *os.environ}} if before.get(k) != os.environ.get(k))
task = next(t for t in bag.dags["build_features"].tasks if t.task_id.startswith("dbt."))
serialized = [json.dumps(DagSerialization.to_dict(dag)) for dag in bag.dags.values()]
with task.profile_config.ensure_profile() as (path, dbt_env):
    profile = yaml.safe_load(path.read_text())["tidemark"]["outputs"]["postgres"]
print(json.dumps({{"errors": list(bag.import_errors), "serialized": "\\n".join(serialized), "dags": len(serialized),
                   "changed": changed, "profile": profile, "dbt_env": dbt_env, "task_env": task.env}}))
"""
    cache = tmp_path / "cosmos_cache"
    env = {**os.environ, "TIDEMARK_HOME": str(tmp_path), "TIDEMARK_WAREHOUSE_URL": url,
           "AIRFLOW__COSMOS__CACHE_DIR": str(cache), WAREHOUSE_CONN_VARIABLE: Settings.from_env(
               {"TIDEMARK_WAREHOUSE_URL": url}).airflow_env()[WAREHOUSE_CONN_VARIABLE]}
    env.pop("TIDEMARK_PG_PASSWORD", None)
    proc = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, cwd=REPO_ROOT)
    assert proc.returncode == 0, proc.stderr[-3000:]
    parsed = json.loads(proc.stdout.strip().splitlines()[-1])
    assert parsed["errors"] == [] and parsed["dags"] == len(DAG_IDS)
    assert parsed["changed"] == [], "parsing the DAGs changed os.environ"
    assert secret not in parsed["serialized"] and secret not in json.dumps(parsed["task_env"])
    # the profile names the user and database and refers to the password, which only dbt's environment holds
    password_var = "COSMOS_CONN_POSTGRES_PASSWORD"
    assert parsed["profile"] == {"type": "postgres", "host": "db.example", "port": 5432, "user": "tidemark",
                                 "dbname": "warehouse", "schema": "public", "threads": 2,
                                 "password": f"{{{{ env_var('{password_var}') }}}}"}
    assert parsed["dbt_env"] == {password_var: secret}
    written = [p for p in cache.rglob("*") if p.is_file()]
    assert written and not [p for p in written if secret in p.read_text(errors="replace")]


def test_a_warehouse_user_without_a_password_hands_dbt_an_empty_one(monkeypatch):
    """Trust or peer authentication: the dbt tasks still get a profile (Cosmos' mapping alone refuses)."""
    settings = Settings.from_env({"TIDEMARK_WAREHOUSE_URL": "postgresql://postgres@127.0.0.1:5432/w"})
    monkeypatch.setenv(WAREHOUSE_CONN_VARIABLE, settings.airflow_env()[WAREHOUSE_CONN_VARIABLE])
    mapping = warehouse_profile(settings).profile_mapping
    assert mapping.env_vars == {"COSMOS_CONN_POSTGRES_PASSWORD": ""}
    assert (mapping.profile["user"], mapping.profile["dbname"]) == ("postgres", "w")


def test_build_features_runs_one_dbt_build_and_shows_each_model_and_its_tests(dagbag, manifest):
    """One producer task runs `dbt build` of the whole selection with the run's dates, in the warehouse pool;
    every model has a task for its own result and one for its tests', read from that build."""
    dag = dagbag.dags["build_features"]
    producer = dag.get_task("dbt.dbt_producer_watcher")
    assert producer.base_cmd == ["build"]
    assert producer.pool == WAREHOUSE_POOL and producer.retries == 0
    assert producer.vars == {
        "start_date": "{{ ti.xcom_pull(task_ids='resolve_interval')['start'] }}",
        "end_date": "{{ ti.xcom_pull(task_ids='resolve_interval')['end'] }}",
    }
    assert producer.env["DBT_SEND_ANONYMOUS_USAGE_STATS"] == "false"
    assert producer._check_source_freshness is False  # no `dbt source freshness` before the build
    assert producer.upstream_task_ids == {"resolve_interval"}
    dbt_processes = [t.task_id for t in dag.tasks if type(t).__name__.startswith("Dbt") and "Watcher" not in type(t).__name__]
    assert dbt_processes == []  # every other dbt task reads the producer's results

    models = {n["name"] for n in _simulator_nodes(manifest["nodes"]) if n["resource_type"] == "model"}
    assert {t.task_id.removeprefix("dbt.").removesuffix(".run") for t in dag.tasks if t.task_id.endswith(".run")} == models
    for name in models:
        run, tests = dag.get_task(f"dbt.{name}.run"), dag.get_task(f"dbt.{name}.test")
        assert (run.model_unique_id, tests.model_unique_id) == (f"model.tidemark.{name}",) * 2
        assert tests.is_test_sensor and run.task_id in tests.upstream_task_ids
        assert run.pool == tests.pool == WAREHOUSE_POOL  # a retry runs its node's dbt alone, in the pool
        assert "dbt.dbt_producer_watcher" in run.get_flat_relative_ids(upstream=True)


def test_raw_source_tests_gate_the_staging_models(dagbag, manifest):
    dag = dagbag.dags["build_features"]
    for source in _simulator_nodes(manifest["sources"]):
        task = dag.get_task(f"dbt.{source['source_name']}_{source['name']}_source")
        assert task.is_test_sensor and task.model_unique_id == source["unique_id"]
        # it reads the build's results once the build has ended, failed or not; not when resolve_interval failed
        assert task.upstream_task_ids == {"dbt.dbt_producer_watcher", "resolve_interval"}
        assert task.trigger_rule == "all_done_min_one_success"
        staging = f"dbt.stg_{source['source_name']}__{source['name']}.run"
        assert staging in task.get_flat_relative_ids(upstream=False)


def test_build_features_leaves_out_the_public_data_sets(dagbag, manifest):
    nodes = [*manifest["nodes"].values(), *manifest["sources"].values()]
    public = [n["name"] for n in nodes if "public_data" in n["tags"]]
    assert {"stg_public_data__telco_customers", "telco_customers", "bank_contacts"} <= set(public)
    assert [t for t in dagbag.dags["build_features"].task_ids if "public_data" in t] == []


def _simulator_nodes(nodes: dict) -> list[dict]:
    """The manifest nodes that build_features renders: the served models' feature and label relations and
    every node upstream of them, with the tests on any of them."""
    from ml.orchestration.served import loop_specs

    manifest = json.loads(require_manifest(Settings.from_env()).read_text())
    everything = {**manifest["nodes"], **manifest["sources"]}
    by_name = {n["name"]: uid for uid, n in manifest["nodes"].items() if n["resource_type"] == "model"}
    todo = [by_name[r] for spec in loop_specs(Settings.from_env()) for r in (spec.features.relation, spec.label_relation)]
    selected: set[str] = set()
    while todo:
        uid = todo.pop()
        if uid not in selected:
            selected.add(uid)
            todo.extend(everything[uid].get("depends_on", {}).get("nodes", []))
    return [n for uid, n in nodes.items() if uid in selected]


def test_features_are_published_only_after_every_dbt_task(dagbag):
    dag = dagbag.dags["build_features"]
    publish = dag.get_task("publish_features")
    dbt_tasks = {t.task_id for t in dag.tasks if t.task_id.startswith("dbt.")}
    assert dbt_tasks <= publish.get_flat_relative_ids(upstream=True)
    assert [o.name for o in publish.outlets] == ["features.customer_features_daily"]
    assert [a.name for a in dag.timetable.asset_condition.objects] == ["raw"]


def test_ingest_writes_through_the_warehouse_pool_and_emits_raw(dagbag):
    load = dagbag.dags["ingest_raw"].get_task("load_raw")
    assert load.pool == WAREHOUSE_POOL
    assert [o.name for o in load.outlets] == ["raw"]


def test_a_missing_manifest_says_to_run_make_install(tmp_path):
    settings = Settings(home=tmp_path, warehouse=parse_warehouse_url("duckdb:///x.duckdb"), repo_root=tmp_path)
    with pytest.raises(ManifestMissing, match="Run `make install`"):
        require_manifest(settings)


def test_train_model_maps_one_task_per_candidate_and_routes_pytorch_to_the_gpu_pool(dagbag):
    from ml.core.spec import load_spec

    dag = dagbag.dags["train_churn"]
    spec = load_spec("churn")
    cpu, gpu = dag.get_task("train_cpu"), dag.get_task("train_gpu")
    assert cpu.op_kwargs_expand_input.value["candidate"] == [c.name for c in spec.candidates if c.kind != "torch_mlp"]
    assert gpu.op_kwargs_expand_input.value["candidate"] == [c.name for c in spec.candidates if c.kind == "torch_mlp"]
    assert (gpu.pool, gpu.queue) == ("gpu", "gpu")
    assert dag.get_task("extract").pool == WAREHOUSE_POOL and dag.get_task("promote").pool == WAREHOUSE_POOL
    chain = ["extract", "evaluate", "gate", "promote", "champion_changed", "publish_champion"]
    for upstream, downstream in zip(chain, chain[1:]):
        assert upstream in dag.get_task(downstream).upstream_task_ids
    assert {"train_cpu", "train_gpu"} <= dag.get_task("evaluate").upstream_task_ids
    assert [o.name for o in dag.get_task("publish_champion").outlets] == ["champion.churn"]
    # weekly, and also whenever retraining is requested
    assert "retrain_requested.churn" in str(dag.timetable.asset_condition)
    assert dag.timetable.timetable.expression == "0 0 * * 0"  # @weekly


def _scheduling_assets(condition) -> set[str]:
    """Names of the assets in a DAG's asset condition (nested any/all included)."""
    if condition is None:
        return set()
    if hasattr(condition, "objects"):
        return set().union(*(_scheduling_assets(obj) for obj in condition.objects))
    return {condition.name}


def test_assets_chain_raw_features_predictions_monitoring_retrain_champion(dagbag):
    """The asset graph in the UI reads as the pipeline: each asset has one producer and the next DAG waits on it."""
    producers: dict[str, set[str]] = {}
    for dag_id, dag in dagbag.dags.items():
        for task in dag.tasks:
            for outlet in task.outlets:
                producers.setdefault(outlet.name, set()).add(dag_id)
    consumers = {dag_id: _scheduling_assets(getattr(dag.timetable, "asset_condition", None))
                 for dag_id, dag in dagbag.dags.items()}
    features = "features.customer_features_daily"
    assert producers == {
        "raw": {"ingest_raw"},
        features: {"build_features"},
        **{f"predictions.{m}": {f"score_{m}"} for m in MODELS},
        **{f"monitoring.{m}": {f"monitor_{m}"} for m in MODELS},
        **{f"retrain_requested.{m}": {f"monitor_{m}"} for m in MODELS},
        **{f"champion.{m}": {f"train_{m}"} for m in MODELS},
    }
    assert consumers == {
        "bootstrap": set(),
        "ingest_raw": set(),
        "build_features": {"raw"},
        **{f"score_{m}": {features} for m in MODELS},
        **{f"monitor_{m}": {f"predictions.{m}"} for m in MODELS},
        **{f"train_{m}": {f"retrain_requested.{m}"} for m in MODELS},
    }


def test_later_stages_take_a_free_warehouse_slot_first(dagbag):
    """Scores and monitoring never queue behind a stream of feature builds; the clock's short ticks go before the
    builds' dbt tasks, so the clock keeps its pace and a build covers every day landed since the last."""
    weights = {dag_id: {(t.priority_weight, str(t.weight_rule)) for t in dag.tasks} for dag_id, dag in dagbag.dags.items()}
    assert all(len(w) == 1 and next(iter(w))[1] == "absolute" for w in weights.values()), weights
    for model in MODELS:
        order = ["build_features", "ingest_raw", f"score_{model}", f"monitor_{model}", f"train_{model}", "bootstrap"]
        ranked = [next(iter(weights[dag_id]))[0] for dag_id in order]
        assert ranked == sorted(set(ranked)), dict(zip(order, ranked))


def test_a_broken_served_spec_is_an_import_error_of_its_own_dags_only(tmp_path, monkeypatch):
    """A user's spec that does not load stops its own model's DAGs, named in the import error; every other model
    keeps its DAGs."""
    from airflow.dag_processing.dagbag import DagBag

    folder = tmp_path / "specs"
    folder.mkdir()
    (folder / "upsell.yaml").write_text("name: upsell\nserved: true\nentity_key: customer_id\n")
    monkeypatch.setenv("TIDEMARK_SPECS_DIR", str(folder))
    bag = DagBag(dag_folder=str(DAGS_DIR), known_pools={"default_pool", *POOLS})
    assert sorted(Path(f).name for f in bag.import_errors) == ["monitor_model.py", "score_batch.py", "train_model.py"]
    for error in bag.import_errors.values():
        assert "served model(s) 'upsell' have no DAGs" in error and "candidates: Field required" in error
    assert set(bag.dag_ids) == DAG_IDS
