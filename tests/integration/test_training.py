"""Training, evaluation and the promotion gate for real: dag.test() runs of train_model on simulated data.

The module builds one small warehouse (DuckDB) with a 14-day label horizon, so that a 100-day history
holds train, validation and test windows with their gaps. The DAG is parsed with its settings pointed
at that warehouse, a test spec and a local registry.
"""

from __future__ import annotations

import json
from datetime import date, timedelta

import pytest
import yaml

from ml.core.settings import Settings, parse_warehouse_url
from ml.core.spec import SPEC_DIR, load_spec
from ml.core.warehouse import Warehouse
from ml.features.dbt import run_dbt
from ml.ingest.load import load_days
from ml.ingest.simulate import SimConfig
from ml.registry import IntegrityError, Registry
from tests.fixtures import parsed_dags

# No drift event: the point here is the training machinery, so the test window behaves like the past.
SIM = SimConfig(seed=5, customers=800, start=date(2025, 1, 1), days=100, drift_date=None)
HORIZON = 14


def _test_spec(path) -> None:
    data = yaml.safe_load((SPEC_DIR / "churn.yaml").read_text())
    data["label"]["horizon_days"] = HORIZON
    data["split"].update(validation_days=10, test_days=10, sample_every_days=1)
    for cand in data["candidates"]:
        if cand["kind"] == "lightgbm":
            cand["params"].update(n_estimators=200)
        if cand["kind"] == "torch_mlp":
            cand["params"].update(max_epochs=4)
    data["search"] = {"budget_s": 30, "max_trials": 3}
    data["promotion"].update(floors={"roc_auc": 0.58}, max_ece=0.1, bootstrap_samples=200, min_segment_rows=100)
    path.write_text(yaml.safe_dump(data))


@pytest.fixture(scope="module")
def world(tmp_path_factory, airflow_settings):
    """A warehouse with features and 14-day labels, a spec file and an empty local registry."""
    home = tmp_path_factory.mktemp("training")
    settings = Settings(home=home, warehouse=parse_warehouse_url(f"duckdb:///{home / 'warehouse.duckdb'}"))
    load_days(SIM, None, settings=settings)
    built = run_dbt(["build", "--exclude", "tag:public_data"], settings=settings, vars={"horizon_days": HORIZON},
                    capture=True)
    assert built.success, built.output[-3000:]
    spec_path = home / "churn_test.yaml"
    _test_spec(spec_path)
    with parsed_dags(settings, spec_path, file="train_model.py") as dags:
        yield {"settings": settings, "dag": dags["train_churn"], "spec": load_spec(spec_path)}


def _states(run) -> dict[str, str]:
    return {f"{ti.task_id}[{ti.map_index}]" if ti.map_index >= 0 else ti.task_id: str(ti.state)
            for ti in run.get_task_instances()}


def _promotions(settings) -> list[dict]:
    with Warehouse.connect(settings, read_only=True) as wh:
        return wh.read_arrow("select * from ml.model_promotions order by decided_at").to_pylist()


def _champion_events(run_id: str) -> list[dict]:
    from airflow.models.asset import AssetEvent, AssetModel
    from airflow.utils.session import create_session
    from sqlalchemy import select

    with create_session() as session:
        query = (select(AssetEvent.extra).join(AssetModel, AssetModel.id == AssetEvent.asset_id)
                 .where(AssetModel.name == "champion.churn", AssetEvent.source_run_id == run_id))
        return list(session.scalars(query))


def test_first_run_promotes_a_champion_then_an_identical_challenger_is_rejected(world):
    settings, dag, spec = world["settings"], world["dag"], world["spec"]
    registry = Registry.from_settings(settings)
    as_of = SIM.start + timedelta(days=SIM.days - 1)

    first = dag.test(run_conf={"as_of": as_of.isoformat()})
    states = _states(first)
    assert first.state == "success", states
    assert {"train_cpu[0]", "train_cpu[1]", "train_gpu[0]"} <= set(states)
    champion = registry.alias(spec.name, "champion")
    assert champion.version == "v0001"
    manifest = registry.get(spec.name, "v0001").manifest
    assert manifest["metrics"]["roc_auc"] > 0.58
    assert manifest["training_window"]["test"]["end"] == (as_of - timedelta(days=HORIZON)).isoformat()
    assert manifest["data_fingerprint"] and manifest["dbt_manifest_sha256"] and manifest["feature_schema"]["numeric"]
    assert {"lightgbm", "torch", "scikit-learn"} <= set(manifest["libraries"])
    assert "reference.parquet" in manifest["files"] and "evaluation.json" in manifest["files"]
    assert _champion_events(first.run_id) == [{"model": spec.name, "version": "v0001"}]
    rows = _promotions(settings)
    assert [(r["candidate_version"], r["decision"], r["champion_version"]) for r in rows] == [("v0001", "promoted", None)]
    assert any("no champion yet" in reason for reason in json.loads(rows[0]["reasons"]))

    # The same data and seed give the same model again: it cannot beat the champion, so the gate says no.
    second = dag.test(run_conf={"as_of": as_of.isoformat()})
    states = _states(second)
    assert second.state == "success", states
    assert states["publish_champion"] == "skipped"
    assert _champion_events(second.run_id) == []
    assert registry.alias(spec.name, "champion").version == "v0001"
    rows = _promotions(settings)
    assert [(r["candidate_version"], r["decision"], r["champion_version"]) for r in rows][-1] == ("v0002", "rejected", "v0001")
    assert rows[-1]["diff_ci_low"] <= 0 <= rows[-1]["diff_ci_high"]
    reasons = json.loads(rows[-1]["reasons"])
    assert any(r.startswith("FAIL: roc_auc") and "gain +0.0000" in r for r in reasons), reasons
    decision = registry.records(spec.name, "decisions")[-1]
    assert decision["version"] == "v0002" and decision["decision"] == "rejected"


def test_a_tampered_champion_is_refused_and_stays_champion(world):
    from ml.training.steps import train

    settings, spec = world["settings"], world["spec"]
    registry = Registry.from_settings(settings)
    before = registry.alias(spec.name, "champion")
    assert before.version is not None
    root = settings.home / "registry" / spec.name / "versions" / before.version
    artifact = next(p for p in sorted(root.iterdir()) if p.name.startswith(("model.", "weights.")))
    artifact.write_bytes(artifact.read_bytes()[:-20])  # truncated

    with pytest.raises(IntegrityError, match=artifact.name):
        train(spec, settings, as_of=SIM.start + timedelta(days=SIM.days - 1), run_id="tampered", actor="test")
    after = registry.alias(spec.name, "champion")
    assert (after.version, after.etag) == (before.version, before.etag)
