"""Training and monitoring on Spark for real: the same rows in, the same rows out as on DuckDB.

The module simulates a small history with a drift event on DuckDB, builds its feature and label marts with
dbt, and copies both marts into a Spark warehouse (the standalone cluster of tests/server/conftest.py, its metastore in the same home, so one
registry serves both). A logistic champion is trained on Spark, which also writes its promotion and fairness
rows there. The same predictions go into both warehouses, and monitoring one day on each must write the
same drift, realized performance and fairness rows: DuckDB's are the reference.
"""

from __future__ import annotations

import json
import time
from datetime import date, datetime, timedelta, timezone
from pathlib import Path

import pyarrow as pa
import pyarrow.compute as pc
import pytest
import sqlalchemy as sa
import yaml

from ml.core.settings import Settings
from ml.core.spark import release
from ml.core.spec import SPEC_DIR, FeatureSchema, ModelSpec, parse_spec
from ml.core.tables import drift_metrics, fairness_metrics, model_performance, model_promotions
from ml.core.warehouse import Warehouse, arrow_sha256
from ml.features.dbt import run_dbt
from ml.ingest.load import load_days
from ml.ingest.simulate import SimConfig

SIM = SimConfig(seed=5, customers=150, start=date(2025, 1, 1), days=170, drift_date=date(2025, 5, 20))
MARTS = ("marts.customer_features_daily", "marts.churn_labels")
AS_OF = date(2025, 5, 15)  # labels known through 2025-04-15: a test window of two weeks after two gaps
DAY = date(2025, 6, 1)  # monitored: after the drift event, its labels' as-of date 30 days earlier has matured
MATURED = DAY - timedelta(days=30)


def _spec() -> ModelSpec:
    """The churn spec with one quick candidate, a gate that promotes a sane first model, and drift checks on a
    sample smaller than a day's rows (so the sample is drawn by the seeded md5 order in the warehouse)."""
    data = yaml.safe_load((SPEC_DIR / "churn.yaml").read_text())
    data["candidates"] = [c for c in data["candidates"] if c["kind"] == "logistic"]
    data["promotion"].update(floors={}, max_ece=0.5, bootstrap_samples=50, min_segment_rows=50)
    data["search"] = {"budget_s": 0, "max_trials": 1}
    data["monitoring"] = {"exclude": ["tenure_days"], "drift_share": 0.1, "sample_rows": 100}
    return parse_spec(data, source="Spark stages test spec")


@pytest.fixture(scope="module")
def world(tmp_path_factory, spark_master: str):
    """DuckDB and Spark settings in one home, both holding the marts; the champion trained on Spark, downloaded;
    the Spark session released afterwards."""
    home = tmp_path_factory.mktemp("spark_stages")
    duck = Settings.from_env({"TIDEMARK_HOME": str(home)})
    spark = Settings.from_env({"TIDEMARK_HOME": str(home), "TIDEMARK_WAREHOUSE_URL": spark_master})
    try:
        yield _world(home, duck, spark)
    finally:
        release()


def _world(home: Path, duck: Settings, spark: Settings) -> dict:
    from ml.registry import Registry
    from ml.training.steps import train

    spec = _spec()
    load_days(SIM, None, settings=duck)
    built = run_dbt(["run", "--select", "+customer_features_daily", "+churn_labels"], settings=duck, capture=True)
    assert built.success, built.output[-3000:]
    with Warehouse.connect(duck, read_only=True) as source, Warehouse.connect(spark) as target:
        for mart in MARTS:
            target.replace_table(mart, source.read_arrow(f"select * from {mart}"))
    outcome = train(spec, spark, as_of=AS_OF, run_id="spark-stages", actor="test")["outcome"]
    assert outcome["champion_after"] == "v0001", outcome
    version_dir = Registry.from_settings(spark).download("churn", "v0001", home / "champion")
    return {"home": home, "duckdb": duck, "spark": spark, "spec": spec, "version_dir": version_dir}


def _predictions(settings: Settings, version_dir: Path, days: list[date]) -> pa.Table:
    """The champion's scores of `days`' feature rows, as the scoring step writes them to ml.predictions."""
    from ml.training.candidates import load_candidate
    from ml.training.data import to_frame

    manifest = json.loads((version_dir / "manifest.json").read_text())
    schema, model = FeatureSchema.from_dict(manifest["feature_schema"]), load_candidate(version_dir)
    dates = ", ".join(f"date '{day}'" for day in days)
    with Warehouse.connect(settings, read_only=True) as wh:
        table = wh.read_arrow(f"select * from {MARTS[0]} where as_of_date in ({dates}) order by as_of_date, customer_id")
    p = model.predict_proba(to_frame(table, schema))[:, 1]
    n = table.num_rows
    return pa.table({
        "entity_id": pc.cast(table["customer_id"], pa.string()), "as_of_date": table["as_of_date"],
        "model_name": pa.array(["churn"] * n), "model_version": pa.array(["v0001"] * n), "score": p,
        "predicted_label": pa.array((p >= manifest["threshold"]).astype("int32")),
        "threshold": pa.array([manifest["threshold"]] * n, pa.float64()),
        "scored_at": pa.array([datetime(2025, 7, 1)] * n, pa.timestamp("us")),
    })


def _written(settings: Settings, table: sa.Table, *where: sa.ColumnElement[bool]) -> pa.Table:
    """The rows of a monitoring table for the module's model, in a fixed order, without the time they were
    written."""
    keys = [c for c in ("as_of_date", "source", "column_name", "attribute", "group_value", "model_version")
            if c in table.c]
    stamp = [c.name for c in table.c if c.name.endswith("_at")]
    with Warehouse.connect(settings, read_only=True) as wh:
        if not wh.table_exists(table.fullname):
            return pa.table({})
        rows = wh.read_arrow(sa.select(table).where(table.c.model_name == "churn", *where)
                             .order_by(*(table.c[k] for k in keys)))
    return rows.drop_columns(stamp)


def test_the_training_extract_read_from_spark_is_the_one_read_from_duckdb(world):
    from ml.training.data import relations, training_sql

    spec, duck, spark = world["spec"], world["duckdb"], world["spark"]
    features, labels, schema = relations(spec, duck)
    query = training_sql(spec, features, labels, schema, AS_OF)
    with Warehouse.connect(duck, read_only=True) as wh:
        want = wh.read_arrow(query)
    with Warehouse.connect(spark, read_only=True) as wh:
        got = wh.read_arrow(query)
    assert want.num_rows > 10_000
    assert got.schema == want.schema  # the same Arrow types: decimals, int32 counts, dates, strings
    assert got.equals(want)
    # The champion's extract, read from Spark when it was trained, has the fingerprint of DuckDB's rows.
    manifest = json.loads((world["version_dir"] / "manifest.json").read_text())
    assert manifest["data_fingerprint"] == arrow_sha256(want)


def test_training_on_spark_records_its_promotion_and_fairness_rows_there(world):
    spark = world["spark"]
    promotions = _written(spark, model_promotions).to_pylist()
    assert [(r["candidate_version"], r["decision"], r["run_id"]) for r in promotions] == [
        ("v0001", "promoted", "spark-stages")]
    report = json.loads((world["version_dir"] / "fairness.json").read_text())["report"]
    groups = {(attribute, group) for attribute, entry in report.items() for group in entry["groups"]}
    rows = _written(spark, fairness_metrics, fairness_metrics.c.source == "test").to_pylist()
    assert {(r["attribute"], r["group_value"]) for r in rows} == groups and len(rows) == len(groups)
    assert {r["as_of_date"] for r in rows} == {AS_OF}


def test_monitoring_a_day_on_spark_writes_the_rows_duckdb_writes(world):
    from ml.monitoring.steps import monitor_days

    spec, duck, spark = world["spec"], world["duckdb"], world["spark"]
    scored = _predictions(duck, world["version_dir"], [MATURED, DAY])
    results = {}
    for settings in (duck, spark):
        with Warehouse.connect(settings) as wh:
            wh.replace_rows("ml.predictions", scored.schema, [
                ({"model_name": "churn", "as_of_date": day}, scored.filter(pc.equal(scored["as_of_date"], day)))
                for day in (MATURED, DAY)])
        results[settings.warehouse.kind] = monitor_days(spec, settings, {"start": str(DAY), "end": str(DAY)})

    want, got = results["duckdb"], results["spark"]
    drift = want["drift"][0]
    assert drift["current_rows"] == 100 and drift["dataset_drift"] is True and "score" in drift["drifted_columns"]
    assert [(d["drift_share"], d["drifted_columns"]) for d in got["drift"]] == [
        (d["drift_share"], d["drifted_columns"]) for d in want["drift"]]
    assert [p["as_of_date"] for p in want["performance"]] == [str(MATURED)]
    assert got["performance"] == want["performance"] and got["request"] == want["request"]

    for table in (drift_metrics, model_performance):
        mine, theirs = _written(spark, table), _written(duck, table)
        assert mine.schema == theirs.schema, table.fullname
        assert mine.num_rows > 0 and mine.equals(theirs), table.fullname
    realized = fairness_metrics.c.source == "realized"
    mine, theirs = _written(spark, fairness_metrics, realized), _written(duck, fairness_metrics, realized)
    assert mine.num_rows > 0 and mine.equals(theirs)


def test_the_simulated_clock_starts_on_spark_in_utc_whatever_the_local_zone(world, monkeypatch):
    from ml.ingest.world import fix_world, read_record, start_clock

    spark = world["spark"]
    monkeypatch.setenv("TZ", "America/New_York")  # Spark's Python side converts naive datetimes in the local zone
    time.tzset()
    try:
        before = datetime.now(timezone.utc).replace(tzinfo=None)
        assert fix_world(spark, {"seed": 3, "customers": 40}).customers == 40
        record = start_clock(spark)
        after = datetime.now(timezone.utc).replace(tzinfo=None)
    finally:
        monkeypatch.undo()
        time.tzset()
    assert record.world.seed == 3 and record == read_record(spark)
    slack = timedelta(seconds=1)
    assert before - slack <= record.recorded_at <= record.clock_started_at <= after + slack, (before, record, after)
