"""Drift checks and realized performance for real, on a small simulated business with a drift event.

The module builds one DuckDB warehouse: 1,500 customers from 2024-10-01 to 2025-03-20 (so every 90-day
feature window is full by the test window of the model), a price rise and a new acquisition channel on
2025-03-01, and a logistic champion trained as of 2025-02-20, whose drift reference is its test window
(2025-01-08 to 2025-01-21). Predictions are written here by scoring the features with the champion.

The monitoring spec leaves out tenure_days: every surviving customer ages a day a day, so its normed
Wasserstein distance to the reference grows by design (0.03 two weeks after the reference window, 0.085
five weeks after, 0.11 six weeks after) and would cross Evidently's 0.1 by itself around the drift date.
With the other 19 features and the score, a quiet day flags at most one column (0.05 of 20), and the
drift event flags monthly_price and the score from its first day and amount_paid_90d from a few days
on, so drift_share is set to 0.1: two drifted columns of twenty.
"""

from __future__ import annotations

import json
from datetime import date, datetime

import pyarrow as pa
import pyarrow.compute as pc
import pytest
import yaml

from ml.core.settings import Settings, parse_warehouse_url
from ml.core.spec import SPEC_DIR, FeatureSchema, parse_spec
from ml.core.warehouse import Warehouse
from ml.features.dbt import run_dbt
from ml.ingest.load import load_days
from ml.ingest.simulate import SimConfig
from ml.monitoring.drift import (
    DATASET_ROW,
    MonitoringError,
    check_drift,
    drift_columns,
    read_snapshot,
    sample_sql,
)
from ml.monitoring.performance import (
    drift_history,
    performance_history,
    realized_performance,
)
from ml.registry import Registry
from ml.training.candidates import load_candidate
from ml.training.data import to_frame
from ml.training.steps import train
from tests.fixtures import parsed_dags

SIM = SimConfig(seed=3, customers=1500, start=date(2024, 10, 1), days=171, drift_date=date(2025, 3, 1))
AS_OF = date(2025, 2, 20)
STABLE = (date(2025, 2, 21), date(2025, 2, 27))  # after the training as-of date, before the drift
DRIFTED = (date(2025, 3, 6), date(2025, 3, 12))
MATURED = date(2025, 2, 10)  # labels close 30 days later, inside the simulated history
RESAMPLED = date(2025, 3, 10)
UNSCORED = date(2025, 3, 13)
FEATURES = "marts.customer_features_daily"


def _spec(**monitoring):
    data = yaml.safe_load((SPEC_DIR / "churn.yaml").read_text())
    data["candidates"] = [c for c in data["candidates"] if c["kind"] == "logistic"]
    data["promotion"].update(floors={"roc_auc": 0.55}, max_ece=0.2, bootstrap_samples=50, min_segment_rows=100)
    data["search"] = {"budget_s": 0, "max_trials": 1}
    data["monitoring"] = {"exclude": ["tenure_days"], "drift_share": 0.1, **monitoring}
    return parse_spec(data, source="monitoring test spec")


def _write_predictions(settings: Settings, version_dir, version: str, days) -> int:
    """Score each day's features with the version into ml.predictions, as the scoring step would; the rows written."""
    manifest = json.loads((version_dir / "manifest.json").read_text())
    schema, model = FeatureSchema.from_dict(manifest["feature_schema"]), load_candidate(version_dir)
    written = 0
    with Warehouse.connect(settings) as wh:
        for day in days:
            table = wh.read_arrow(f"select * from {FEATURES} where as_of_date = date '{day}'")
            p = model.predict_proba(to_frame(table, schema))[:, 1]
            n = len(p)
            rows = pa.table({
                "entity_id": pc.cast(table["customer_id"], pa.string()), "as_of_date": table["as_of_date"],
                "model_name": pa.array(["churn"] * n), "model_version": pa.array([version] * n), "score": p,
                "predicted_label": pa.array((p >= manifest["threshold"]).astype("int32")),
                "threshold": pa.array([manifest["threshold"]] * n),
                "scored_at": pa.array([datetime(2025, 1, 1)] * n, pa.timestamp("us")),
            })
            wh.replace_partitions("as_of_date", day, {"ml.predictions": rows})
            written += n
    return written


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    """The warehouse, a champion with its downloaded version, predictions, and the first drift checks."""
    home = tmp_path_factory.mktemp("monitoring")
    settings = Settings(home=home, warehouse=parse_warehouse_url(f"duckdb:///{home / 'warehouse.duckdb'}"))
    load_days(SIM, settings=settings)
    built = run_dbt(["build", "--exclude", "tag:public_data"], settings=settings, capture=True)
    assert built.success, built.output[-3000:]
    spec = _spec()
    outcome = train(spec, settings, as_of=AS_OF, run_id="monitoring-test", actor="test")["outcome"]
    assert outcome["champion_after"] == "v0001", outcome
    registry = Registry.from_settings(settings)
    version_dir = registry.download("churn", "v0001", home / "champion" / "v0001")
    _write_predictions(settings, version_dir, "v0001", (*STABLE, *DRIFTED, MATURED, RESAMPLED))
    checks = {day: check_drift(spec, settings, day, model_version="v0001", version_dir=version_dir)
              for day in (*STABLE, *DRIFTED)}
    return {"settings": settings, "spec": spec, "registry": registry, "version_dir": version_dir, "checks": checks}


def _drift_rows(settings: Settings, day: date) -> list[dict]:
    with Warehouse.connect(settings, read_only=True) as wh:
        return wh.read_arrow(f"select * from ml.drift_metrics where as_of_date = date '{day}' "
                             "order by column_name").to_pylist()


def test_drift_shows_after_the_drift_event_and_not_on_a_stable_stretch(world):
    for day in STABLE:
        check = world["checks"][day]
        assert check["dataset_drift"] is False and check["drift_share"] <= 0.05, check
        assert "monthly_price" not in check["drifted_columns"] and "score" not in check["drifted_columns"]
    for day in DRIFTED:
        check = world["checks"][day]
        assert check["dataset_drift"] is True and check["drift_share"] >= 0.15, check
        assert {"monthly_price", "amount_paid_90d", "score"} <= set(check["drifted_columns"]), check
    check = world["checks"][DRIFTED[0]]
    assert check["columns"] == 20 and check["predictions"] is True and check["note"] is None
    # A day's partition (about 1,400 customers) is below sample_rows, so the whole day is compared.
    assert 1_200 < check["current_rows"] == check["partition_rows"] < 1_500
    assert check["reference_rows"] == 5_000


def test_drift_metrics_hold_a_row_per_column_plus_the_dataset_row(world):
    day, check = DRIFTED[0], world["checks"][DRIFTED[0]]
    rows = _drift_rows(world["settings"], day)
    assert len(rows) == 21
    dataset = [r for r in rows if r["column_name"] == DATASET_ROW]
    assert len(dataset) == 1 and dataset[0]["drift_share"] == pytest.approx(check["drift_share"])
    assert dataset[0]["dataset_drift"] is True and dataset[0]["threshold"] == 0.1
    columns = {r["column_name"]: r for r in rows if r["column_name"] != DATASET_ROW}
    assert "tenure_days" not in columns and "score" in columns
    assert columns["monthly_price"]["stattest"] == "Wasserstein distance (normed)"
    assert columns["acquisition_channel"]["stattest"] == "Jensen-Shannon distance"
    assert {r["threshold"] for r in columns.values()} == {0.1}
    assert all(r["drifted"] == (r["score"] >= r["threshold"]) for r in columns.values())
    assert columns["monthly_price"]["score"] > 0.4  # the 25% price rise
    assert sorted(c for c, r in columns.items() if r["drifted"]) == sorted(check["drifted_columns"])


def test_a_rerun_replaces_the_day_and_a_sample_is_drawn_in_the_warehouse(world):
    settings, small = world["settings"], _spec(sample_rows=500)
    first = check_drift(small, settings, RESAMPLED, model_version="v0001", version_dir=world["version_dir"])
    before = {r["column_name"]: r["score"] for r in _drift_rows(settings, RESAMPLED)}
    second = check_drift(small, settings, RESAMPLED, model_version="v0001", version_dir=world["version_dir"])
    after = _drift_rows(settings, RESAMPLED)
    assert first["current_rows"] == second["current_rows"] == 500 < first["partition_rows"]
    assert len(after) == 21 and {r["column_name"]: r["score"] for r in after} == before  # same seeded sample
    assert second["dataset_drift"] is True and "monthly_price" in second["drifted_columns"]
    with Warehouse.connect(settings, read_only=True) as wh:
        per_day = wh.read_arrow("select as_of_date, count(*) as n from ml.drift_metrics group by 1").to_pylist()
    assert {r["as_of_date"]: r["n"] for r in per_day if r["as_of_date"] in world["checks"]} == {
        day: 21 for day in world["checks"]}


def test_reports_are_stored_in_the_registry(world):
    day, check = DRIFTED[0], world["checks"][DRIFTED[0]]
    prefix = f"monitoring/churn/{day}"
    assert check["report_html"] == world["registry"].store.uri_for(f"{prefix}/report.html")
    html = world["registry"].get_bytes(f"{prefix}/report.html").decode()
    share = check["drift_share"] * 100
    assert f"Drift is detected for {share:.1f}% of columns ({len(check['drifted_columns'])} out of 20)" in html
    report = json.loads(world["registry"].get_bytes(f"{prefix}/report.json"))
    columns, json_share = read_snapshot(report)
    assert json_share == pytest.approx(check["drift_share"])
    assert sorted(c["column_name"] for c in columns if c["drifted"]) == sorted(check["drifted_columns"])


def test_a_day_without_predictions_checks_the_features_only(world):
    check = check_drift(world["spec"], world["settings"], UNSCORED, model_version="v0001",
                        version_dir=world["version_dir"])
    assert check["predictions"] is False and "no predictions of churn v0001" in check["note"]
    assert check["columns"] == 19 and "score" not in check["drifted_columns"]
    assert check["dataset_drift"] is True and "monthly_price" in check["drifted_columns"]


def test_realized_performance_waits_for_matured_labels(world):
    settings, spec = world["settings"], world["spec"]
    result = realized_performance(spec, settings, MATURED)
    assert result["model_version"] == "v0001" and 1_300 < result["rows"] == result["labelled_rows"] < 1_600
    assert 0.52 < result["roc_auc"] < 0.75 and 0.05 < result["pr_auc"] < 0.5 and result["brier"] < 0.15
    assert [v["model_version"] for v in result["versions"]] == ["v0001"]
    assert 50 < result["versions"][0]["positives"] < 400
    assert realized_performance(spec, settings, DRIFTED[0]) is None  # scored, but its labels close in April
    realized_performance(spec, settings, MATURED)
    history = performance_history(settings, "churn", date(2025, 3, 20), 60)
    assert [(r["as_of_date"], r["model_version"]) for r in history] == [("2025-02-10", "v0001")]
    assert history[0]["roc_auc"] == pytest.approx(result["roc_auc"])


def test_each_checked_day_and_realized_day_is_a_snapshot_in_the_evidently_workspace(world):
    from ml.monitoring.workspace import runs

    realized_performance(world["spec"], world["settings"], MATURED)
    stored = runs(world["settings"], "churn")
    drift = {r["as_of_date"]: r for r in stored if r["kind"] == "drift"}
    assert set(world["checks"]) <= {date.fromisoformat(d) for d in drift}
    day = DRIFTED[0]
    assert drift[day.isoformat()]["snapshot_id"] == world["checks"][day]["workspace_snapshot"]
    performance = [r for r in stored if r["kind"] == "performance"]
    assert [(r["as_of_date"], r["model_version"]) for r in performance] == [(MATURED.isoformat(), "v0001")]


def test_drift_history_lists_the_dataset_rows_by_date(world):
    history = drift_history(world["settings"], "churn", date(2025, 3, 6), 14)
    assert [(r["as_of_date"], r["dataset_drift"]) for r in history] == [
        ("2025-02-21", False), ("2025-02-27", False), ("2025-03-06", True)]
    assert history[-1]["drift_share"] == pytest.approx(world["checks"][DRIFTED[0]]["drift_share"])
    assert drift_history(world["settings"], "other_model", date(2025, 3, 6), 14) == []


def test_a_run_watches_the_version_it_pinned_even_after_a_promotion(world, tmp_path):
    """monitor_model resolves the champion once: a promotion between its tasks does not reach the later ones."""
    import shutil
    from dataclasses import replace

    from ml.monitoring.steps import decide_for_interval, drift_for_interval, plan_monitoring

    # A registry of its own, so the module's champion stays as the other tests expect it.
    settings = replace(world["settings"], home=tmp_path, registry_uri=(tmp_path / "registry").as_uri())
    registry, spec = Registry.from_settings(settings), world["spec"]
    manifest = json.loads((world["version_dir"] / "manifest.json").read_text())
    artifacts = tmp_path / "artifacts"
    shutil.copytree(world["version_dir"], artifacts, ignore=shutil.ignore_patterns("manifest.json"))
    metadata = {k: v for k, v in manifest.items() if k not in ("files", "model", "version", "created_at")}
    first = registry.publish("churn", artifacts, metadata).version
    registry.promote("churn", first, actor="test", reason="first")

    plan = plan_monitoring(spec, settings, {"start": str(STABLE[0]), "end": str(STABLE[0])})
    second = registry.publish("churn", artifacts, metadata).version
    registry.promote("churn", second, actor="test", reason="lands while the run is going")

    [drift] = drift_for_interval(spec, settings, plan)
    assert (plan["version"], drift["model_version"]) == (first, first) != second
    assert decide_for_interval(spec, settings, plan) is None  # one stable day: nothing to request
    assert [r["model_version"] for r in drift_history(settings, "churn", STABLE[0], 1)] == [first]
    assert plan_monitoring(spec, settings, plan)["version"] == second  # the next run watches the new champion


def test_monitoring_columns_must_be_features():
    schema = FeatureSchema(numeric=("monthly_price", "tenure_days"), categorical=("region",))
    assert drift_columns(_spec(), schema) == FeatureSchema(("monthly_price",), ("region",))
    with pytest.raises(MonitoringError, match=r"\['nope'\] of spec 'churn' are not features"):
        drift_columns(_spec(columns=["monthly_price", "nope"]), schema)


def _copy_to_postgres(world, pg: Settings) -> None:
    """The rows the checks read, moved to PostgreSQL under the same names (decimals travel as floats)."""
    days = f"date '{DRIFTED[0]}', date '{MATURED}'"
    queries = {
        FEATURES: f"select * from {FEATURES} where as_of_date in ({days})",
        "marts.churn_labels": f"select * from marts.churn_labels where as_of_date = date '{MATURED}'",
        "ml.predictions": f"select * from ml.predictions where as_of_date in ({days})",
    }
    with Warehouse.connect(world["settings"], read_only=True) as src, Warehouse.connect(pg) as dst:
        for name, sql in queries.items():
            table = src.read_arrow(sql)
            for i, field in enumerate(table.schema):
                if pa.types.is_decimal(field.type):
                    table = table.set_column(i, field.name, table[field.name].cast(pa.float64()))
            dst.replace_table(name, table)


@pytest.mark.postgres
def test_drift_metrics_and_realized_performance_on_postgresql(world, postgres_settings):
    pg, small = postgres_settings, _spec(sample_rows=500)
    _copy_to_postgres(world, pg)
    for _ in range(2):
        check = check_drift(small, pg, DRIFTED[0], model_version="v0001", version_dir=world["version_dir"])
    assert check["current_rows"] == 500 < check["partition_rows"] == world["checks"][DRIFTED[0]]["partition_rows"]
    # the sample is the same 500 customers on both warehouses, whatever order the rows were copied in
    sql = sample_sql(small, FEATURES, FeatureSchema(("monthly_price",), ()), DRIFTED[0], rows=500,
                     partition_rows=check["partition_rows"], seed=7, score_version=None)
    sampled = []
    for settings in (world["settings"], pg):
        with Warehouse.connect(settings, read_only=True) as wh:
            sampled.append(sorted(wh.read_arrow(sql)["customer_id"].to_pylist()))
    assert len(sampled[0]) == 500 and sampled[0] == sampled[1]
    assert check["dataset_drift"] is True and {"monthly_price", "score"} <= set(check["drifted_columns"])
    assert len(_drift_rows(pg, DRIFTED[0])) == 21
    assert drift_history(pg, "churn", DRIFTED[0], 1)[0]["dataset_drift"] is True

    on_pg = realized_performance(world["spec"], pg, MATURED)
    on_duckdb = realized_performance(world["spec"], world["settings"], MATURED)
    for metric in ("rows", "roc_auc", "pr_auc", "brier"):
        assert on_pg[metric] == pytest.approx(on_duckdb[metric], rel=1e-9), metric
    assert realized_performance(world["spec"], pg, DRIFTED[0]) is None
    assert performance_history(pg, "churn", MATURED, 1)[0]["rows"] == on_duckdb["rows"]


# -- the loop through Airflow: score, monitor, request a retrain once, retrain, gate -------------
LOOP_SCORED = (date(2025, 2, 28), date(2025, 3, 9))
LOOP_FIRST = (date(2025, 2, 28), date(2025, 3, 5))   # the drift event is on 03-01
LOOP_LATER = (date(2025, 3, 6), date(2025, 3, 9))    # still drifting, inside the cooldown


def _events(asset: str, run_id: str) -> list[dict]:
    from airflow.models.asset import AssetEvent, AssetModel
    from airflow.utils.session import create_session
    from sqlalchemy import select

    with create_session() as session:
        query = (select(AssetEvent.extra).join(AssetModel, AssetModel.id == AssetEvent.asset_id)
                 .where(AssetModel.name == asset, AssetEvent.source_run_id == run_id))
        return list(session.scalars(query))


def _returned(run_id: str, task_id: str):
    """What a task of the DAG run `run_id` returned, read from its XCom in Airflow's metadata DB."""
    from airflow.models.xcom import XComModel
    from airflow.utils.session import create_session
    from sqlalchemy import select

    with create_session() as session:
        row = session.scalars(select(XComModel).where(XComModel.run_id == run_id, XComModel.task_id == task_id,
                                                      XComModel.key == "return_value")).one()
        return XComModel.deserialize_value(row)


def _states(run) -> dict[str, str]:
    return {f"{ti.task_id}[{ti.map_index}]" if ti.map_index >= 0 else ti.task_id: str(ti.state)
            for ti in run.get_task_instances()}


def _interval(pair) -> dict:
    return {"start": pair[0].isoformat(), "end": pair[1].isoformat()}


@pytest.fixture(scope="module")
def loop_dags(world, airflow_settings):
    """The DAGs parsed with their settings pointed at this module's warehouse, registry and spec."""
    settings = world["settings"]
    spec_path = settings.home / "loop_spec.yaml"
    spec_path.write_text(yaml.safe_dump(world["spec"].model_dump(mode="json")))
    with parsed_dags(settings, spec_path) as dags:
        yield dags


def test_drift_requests_one_retrain_the_cooldown_holds_and_the_gate_decides(world, loop_dags):
    settings = world["settings"]
    scored = loop_dags["score_churn"].test(run_conf=_interval(LOOP_SCORED))
    assert scored.state == "success", _states(scored)

    first = loop_dags["monitor_churn"].test(run_conf=_interval(LOOP_FIRST))
    states = _states(first)
    assert first.state == "success", states
    assert states["request_retrain"] == "success"
    [request] = _events("retrain_requested.churn", first.run_id)
    assert _returned(first.run_id, "decide_retrain") == {"request": request}
    assert request["reason"] == "drift" and request["model"] == "churn"
    # two drifted days in a row, the first of them on or after the drift event
    requested_on = date.fromisoformat(request["as_of"])
    assert date(2025, 3, 2) <= requested_on <= LOOP_FIRST[1]
    assert all(d >= "2025-03-01" for d in request["detail"]["drift_share"])
    with Warehouse.connect(settings, read_only=True) as wh:
        assert wh.scalar("select count(*) from ml.retrain_requests") == 1

    later = loop_dags["monitor_churn"].test(run_conf=_interval(LOOP_LATER))
    states = _states(later)
    assert later.state == "success", states
    assert states["check_drift"] == "success" and states["request_retrain"] == "skipped"
    assert _returned(later.run_id, "decide_retrain") == {"request": None}  # a quiet interval still answers
    assert _events("retrain_requested.churn", later.run_id) == []
    history = drift_history(settings, "churn", until=LOOP_LATER[1], days=4)
    assert [r["dataset_drift"] for r in history] == [True] * 4  # still drifting: only the cooldown held it

    retrain = loop_dags["train_churn"].test(run_conf={"as_of": request["as_of"]})
    assert retrain.state == "success", _states(retrain)
    with Warehouse.connect(settings, read_only=True) as wh:
        rows = wh.read_arrow("select candidate_version, decision, champion_version, reasons "
                             "from ml.model_promotions order by candidate_version").to_pylist()
    assert rows[-1]["candidate_version"] == "v0002" and rows[-1]["champion_version"] == "v0001"
    assert rows[-1]["decision"] in ("promoted", "rejected")
    reasons = json.loads(rows[-1]["reasons"])
    assert any("bootstrap CI" in r for r in reasons) and any("segment" in r for r in reasons)
    expected = "v0002" if rows[-1]["decision"] == "promoted" else "v0001"
    assert world["registry"].alias("churn").version == expected


def test_monitoring_past_the_features_watermark_is_refused_and_no_days_mean_the_watermark_day(world):
    from datetime import timedelta

    from ml.core.errors import TidemarkError
    from ml.monitoring.steps import monitor_days, plan_monitoring

    settings, spec = world["settings"], world["spec"]
    late = SIM.end + timedelta(days=1)
    with Warehouse.connect(settings, read_only=True) as wh:
        before = wh.scalar("select count(*) from ml.drift_metrics")
    with pytest.raises(TidemarkError, match=rf"refusing to monitor churn {SIM.end}\.\.{late}: {late} is after the "
                                            rf"features watermark {SIM.end} \(the latest as-of date in {FEATURES}\)"):
        monitor_days(spec, settings, {"start": str(SIM.end), "end": str(late)})
    with Warehouse.connect(settings, read_only=True) as wh:
        assert wh.scalar("select count(*) from ml.drift_metrics") == before

    plan = plan_monitoring(spec, settings, None)
    assert (plan["start"], plan["end"], plan["version"]) == (str(SIM.end), str(SIM.end), "v0001")
