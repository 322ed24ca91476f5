"""Fairness per group for real: a training run reports it per region and acquisition channel, the version carries
it (fairness.json), ml.fairness_metrics holds it, and monitoring adds the realized groups once labels mature.

The module builds one small DuckDB warehouse (800 customers over 100 days, 14-day labels, no drift event) and
trains the churn spec's logistic candidate twice: the first run promotes v0001, the second has it as champion.
"""

from __future__ import annotations

import json
from datetime import date, datetime, timedelta
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import yaml

from ml.core.settings import Settings, parse_warehouse_url
from ml.core.spec import SPEC_DIR, SpecError, dbt_relation, load_spec, parse_spec
from ml.core.warehouse import Warehouse
from ml.features.dbt import run_dbt
from ml.ingest.load import load_days
from ml.ingest.simulate import REGIONS, SimConfig
from ml.monitoring.performance import realized_performance
from ml.registry import Registry
from ml.training.data import relations
from ml.training.fairness import FairnessError, fairness_rows, write_fairness
from ml.training.records import record_fairness
from ml.training.steps import train
from tests.integration.test_monitoring import _write_predictions

SIM = SimConfig(seed=5, customers=800, start=date(2025, 1, 1), days=100, drift_date=None)
HORIZON = 14
AS_OF = SIM.start + timedelta(days=SIM.days - 1)
MATURED = AS_OF - timedelta(days=HORIZON + 6)  # its labels closed inside the history
CHANNELS = ["organic", "paid_search", "partner", "referral"]  # social_promo arrives only with the drift event


def _spec(**changes):
    data = yaml.safe_load((SPEC_DIR / "churn.yaml").read_text())
    data["label"]["horizon_days"] = HORIZON
    data["split"].update(validation_days=10, test_days=10, sample_every_days=1)
    data["candidates"] = [c for c in data["candidates"] if c["kind"] == "logistic"]
    data["promotion"].update(floors={"roc_auc": 0.5}, max_ece=0.2, bootstrap_samples=50, min_segment_rows=100)
    data["search"] = {"budget_s": 0, "max_trials": 1}
    data.update(changes)
    return parse_spec(data, source="fairness test spec")


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    """The warehouse, two training runs of one spec, and the published champion's directory."""
    home = tmp_path_factory.mktemp("fairness")
    settings = Settings(home=home, warehouse=parse_warehouse_url(f"duckdb:///{home / 'warehouse.duckdb'}"))
    load_days(SIM, None, settings=settings)
    built = run_dbt(["build", "--exclude", "tag:public_data"], settings=settings, vars={"horizon_days": HORIZON},
                    capture=True)
    assert built.success, built.output[-3000:]
    spec = _spec()
    first = train(spec, settings, as_of=AS_OF, run_id="fairness-first", actor="test")
    assert first["outcome"]["champion_after"] == "v0001", first["outcome"]
    second = train(spec, settings, as_of=AS_OF, run_id="fairness-second", actor="test")
    registry = Registry.from_settings(settings)
    version_dir = registry.download("churn", "v0001", home / "champion" / "v0001")
    return {"settings": settings, "spec": spec, "first": first, "second": second, "registry": registry,
            "version_dir": version_dir}


def _fairness_rows(settings: Settings, where: str) -> list[dict]:
    with Warehouse.connect(settings, read_only=True) as wh:
        return wh.read_arrow(f"select * from ml.fairness_metrics where {where} "
                             "order by model_version, attribute, group_value").to_pylist()


def test_the_challenger_reports_each_attribute_per_group_on_its_test_rows(world):
    challenger = world["first"]["evaluation"]["challenger"]
    report = challenger["fairness"]
    assert sorted(report) == ["acquisition_channel", "region"]
    assert sorted(report["region"]["groups"]) == sorted(REGIONS)
    assert sorted(report["acquisition_channel"]["groups"]) == CHANNELS
    test = pq.read_table(Path(world["first"]["extract"]["directory"]) / "test.parquet")
    scores = np.load(Path(challenger["directory"]).parent / f"{challenger['candidate']}.test.npy")
    selected = int((scores >= challenger["threshold"]).sum())
    for attribute in ("region", "acquisition_channel"):
        groups = report[attribute]["groups"]
        counts = dict(zip(*np.unique(test[attribute].to_numpy(zero_copy_only=False), return_counts=True)))
        assert {value: g["rows"] for value, g in groups.items()} == {str(k): int(v) for k, v in counts.items()}
        assert sum(g["positives"] for g in groups.values()) == challenger["test"]["positives"]
        # the groups' selections add up to the challenger's selections at its threshold
        assert sum(round(g["rows"] * g["selection_rate"]) for g in groups.values()) == selected
        assert all(0 <= g["tpr"] <= 1 and 0 <= g["fpr"] <= 1 and g["mean_score"] > 0 for g in groups.values())
        rates = [g["selection_rate"] for g in groups.values()]
        assert report[attribute]["demographic_parity_difference"] == pytest.approx(max(rates) - min(rates))
        assert 0 <= report[attribute]["equalized_odds_difference"] < 1


def test_the_version_carries_fairness_json_and_the_champion_is_reported_too(world):
    challenger = world["first"]["evaluation"]["challenger"]
    manifest = world["registry"].get("churn", "v0001").manifest
    assert "fairness.json" in manifest["files"]
    stored = json.loads((world["version_dir"] / "fairness.json").read_text())
    assert stored["attributes"] == ["region", "acquisition_channel"] and stored["min_group_rows"] == 50
    assert stored["threshold"] == challenger["threshold"] and stored["report"] == challenger["fairness"]
    assert manifest["fairness"] == challenger["fairness"]  # and in the manifest, beside the test metrics
    # The second run scores v0001 as champion on the same test rows: the same model gives the same report.
    second = world["second"]["evaluation"]
    assert second["champion"]["version"] == "v0001"
    assert second["champion"]["fairness"] == challenger["fairness"]
    assert second["challenger"]["fairness"] == challenger["fairness"]


def test_a_versions_test_rows_are_recorded_once(world):
    settings, challenger = world["settings"], world["first"]["evaluation"]["challenger"]
    # Training's promote step wrote each published version's rows.
    trained = _fairness_rows(settings, "source = 'test'")
    assert sorted({r["model_version"] for r in trained}) == ["v0001", "v0002"] and len(trained) == 16
    for _ in range(2):  # a rerun replaces the version's rows
        written = record_fairness(settings, model_name="churn", model_version="v0001", as_of=AS_OF.isoformat(),
                                  report=challenger["fairness"])
    assert written == 8
    rows = _fairness_rows(settings, "source = 'test' and model_version = 'v0001'")
    assert len(rows) == 8 and {(r["model_version"], r["as_of_date"]) for r in rows} == {("v0001", AS_OF)}
    north = next(r for r in rows if (r["attribute"], r["group_value"]) == ("region", "north"))
    expected = challenger["fairness"]["region"]
    assert north["tpr"] == pytest.approx(expected["groups"]["north"]["tpr"])
    assert north["equalized_odds_difference"] == pytest.approx(expected["equalized_odds_difference"])
    assert record_fairness(settings, model_name="churn", model_version="v0002", as_of=None, report={}) == 0


def test_monitoring_writes_the_realized_groups_once_labels_mature(world):
    settings, spec = world["settings"], world["spec"]
    scored = _write_predictions(settings, world["version_dir"], "v0001", [MATURED])
    result = realized_performance(spec, settings, MATURED)
    assert result["model_version"] == "v0001" and result["rows"] > 500
    assert sorted(result["fairness"]) == ["acquisition_channel", "region"]
    rows = _fairness_rows(settings, f"source = 'realized' and as_of_date = date '{MATURED}'")
    assert len(rows) == 8 and {r["model_version"] for r in rows} == {"v0001"}
    for attribute in ("region", "acquisition_channel"):
        groups = [r for r in rows if r["attribute"] == attribute]
        assert sum(r["rows"] for r in groups) == result["rows"] <= scored
        assert sum(r["positives"] for r in groups) == result["versions"][0]["positives"]
        rates = [r["selection_rate"] for r in groups]
        assert result["fairness"][attribute]["demographic_parity_difference"] == pytest.approx(max(rates) - min(rates))
    # the realized partition is the day's alone: a rerun replaces it and leaves the test rows alone
    realized_performance(spec, settings, MATURED)
    assert len(_fairness_rows(settings, f"source = 'realized' and as_of_date = date '{MATURED}'")) == 8
    assert len(_fairness_rows(settings, "source = 'test'")) == 16


def test_a_spec_without_attributes_changes_nothing_in_monitoring(world):
    settings = world["settings"]
    day = MATURED - timedelta(days=1)
    _write_predictions(settings, world["version_dir"], "v0001", [day])
    plain = _spec(fairness={"attributes": []})
    result = realized_performance(plain, settings, day)
    assert result is not None and "fairness" not in result
    assert _fairness_rows(settings, f"as_of_date = date '{day}' and source = 'realized'") == []


def test_an_attribute_outside_the_feature_relation_is_refused_with_its_name(world):
    spec = _spec(fairness={"attributes": ["region", "age_band"]})
    with pytest.raises(SpecError, match=r"fairness.attributes of spec 'churn': \['age_band'\] not in "
                                        r"'customer_features_daily'"):
        relations(spec, world["settings"])


def test_every_shipped_specs_attributes_are_columns_of_its_feature_relation(world):
    for name in ("churn", "payment_default", "telco", "bank"):
        spec = load_spec(name)
        columns = dbt_relation(world["settings"].dbt_manifest, spec.features.relation).columns
        assert spec.fairness.attributes and set(spec.fairness.attributes) <= set(columns), name


def test_fairness_partitions_replace_on_both_warehouses(warehouse_settings):
    report = {"region": {"groups": {"north": {"rows": 60, "positives": 6, "selection_rate": 0.2, "tpr": 0.5,
                                              "fpr": 0.166, "mean_score": 0.1, "observed_rate": 0.1}},
                         "demographic_parity_difference": None, "equalized_odds_difference": None}}
    now = datetime(2025, 3, 1)

    def write(source, version, day):
        rows = fairness_rows(report, model_name="churn", model_version=version, as_of_date=day, source=source,
                             computed_at=now)
        return write_fairness(warehouse_settings, rows, model_name="churn", source=source, model_version=version,
                              as_of_date=day)

    for _ in range(2):
        write("test", "v0001", date(2025, 2, 20))
        write("test", "v0002", date(2025, 2, 27))
        write("realized", "v0001", date(2025, 2, 1))
        write("realized", "v0001", date(2025, 2, 2))
    with Warehouse.connect(warehouse_settings, read_only=True) as wh:
        found = wh.read_arrow("select source, model_version, as_of_date, tpr, demographic_parity_difference "
                              "from ml.fairness_metrics order by source, as_of_date").to_pylist()
    assert [(r["source"], r["model_version"], str(r["as_of_date"])) for r in found] == [
        ("realized", "v0001", "2025-02-01"), ("realized", "v0001", "2025-02-02"),
        ("test", "v0001", "2025-02-20"), ("test", "v0002", "2025-02-27")]
    assert found[0]["tpr"] == 0.5 and found[0]["demographic_parity_difference"] is None
    with pytest.raises(FairnessError, match="need model_version"):
        write_fairness(warehouse_settings, pa.table({}), model_name="churn", source="realized")
