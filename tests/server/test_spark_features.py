"""The dbt project builds the same feature and label marts on Spark as on DuckDB, from the same history.

One small simulated history is loaded into a DuckDB warehouse and into a Spark catalog of its own
(the standalone cluster of tests/server/conftest.py, an embedded metastore under the module's home), and dbt builds the marts on each.
The first build runs dbt in a process of its own, as `python -m ml dbt` does: the metastore admits one process
at a time, so run_dbt releases this process's Spark (ml.core.spark.release) before dbt starts. The daily runs
after it run dbt in this process, as the Airflow tasks do on Spark (invoke_dbt): dbt takes the session this
process has open, and no other JVM starts.
"""

from __future__ import annotations

import json
from concurrent.futures import ThreadPoolExecutor
from datetime import date, timedelta
from pathlib import Path

import pyarrow as pa
import pyarrow.compute as pc
import pytest

from ml.core.settings import Settings
from ml.core.spark import release
from ml.core.warehouse import Warehouse
from ml.features.dbt import DbtResult, invoke_dbt, run_dbt
from ml.ingest.load import load_days
from ml.ingest.simulate import SimConfig

pytest.importorskip("pyspark", reason="the Spark warehouse needs pyspark: make install-spark")

# 45 days: the 30-day churn and 33-day payment-default horizons close on the first 15 and 12. Spark's cost
# here is per partition (a day of each raw table and mart), not per row.
SIM = SimConfig(seed=11, customers=150, start=date(2025, 1, 1), days=45, drift_date=date(2025, 1, 31))
LAST_DAY = SIM.start + timedelta(days=SIM.days - 1)
MARTS = ("marts.customer_features_daily", "marts.churn_labels", "marts.payment_default_labels")
# Built too, from empty stand-ins: nothing has scored yet, so ml.predictions does not exist.
SCORES = "marts.customer_churn_scores_latest"
KEYS = [("as_of_date", "ascending"), ("customer_id", "ascending")]
SELECT = ["--select", "+customer_features_daily", "+churn_labels", "+payment_default_labels", "tag:scores"]


def _settings(home: Path, url: str) -> Settings:
    return Settings.from_env({"TIDEMARK_HOME": str(home), "TIDEMARK_WAREHOUSE_URL": url})


def _dbt(settings: Settings, command: str, *args: str, vars: dict | None = None) -> DbtResult:
    """dbt with its artifacts and logs in the warehouse's home, apart from other runs in this checkout."""
    env = {"DBT_TARGET_PATH": str(settings.home / "dbt-target"), "DBT_LOG_PATH": str(settings.home / "dbt-logs")}
    return run_dbt([command, *args], settings=settings, vars=vars, capture=True, env=env)


def _dbt_here(settings: Settings, command: str, *args: str, vars: dict | None = None) -> DbtResult:
    """dbt in this process, on this process's Spark session, its artifacts and logs in the warehouse's home."""
    paths = ["--target-path", str(settings.home / "dbt-target"), "--log-path", str(settings.home / "dbt-logs")]
    return invoke_dbt([command, *args, *(["--vars", json.dumps(vars)] if vars else []), *paths], settings=settings)


def _marts(settings: Settings, where: str = "true") -> dict[str, pa.Table]:
    """The rows of each mart matching `where`, sorted by (as_of_date, customer_id)."""
    with Warehouse.connect(settings) as wh:
        return {mart: wh.read_arrow(f"select * from {mart} where {where}").sort_by(KEYS) for mart in (*MARTS, SCORES)}


def _assert_same_rows(spark: pa.Table, duckdb: pa.Table, mart: str) -> None:
    """Same columns (Spark puts the as_of_date partition column last), types and values, decimals exactly."""
    assert sorted(spark.column_names) == sorted(duckdb.column_names), mart
    spark = spark.select(duckdb.column_names)
    assert spark.schema == duckdb.schema, f"{mart}: {spark.schema} != {duckdb.schema}"
    assert spark.num_rows == duckdb.num_rows, mart
    if not spark.equals(duckdb):
        first = next(i for i, (a, b) in enumerate(zip(spark.to_pylist(), duckdb.to_pylist())) if a != b)
        pytest.fail(f"{mart} row {first} differs: spark {spark.slice(first, 1).to_pylist()} "
                    f"duckdb {duckdb.slice(first, 1).to_pylist()}")


@pytest.fixture(scope="module")
def warehouses(tmp_path_factory, spark_master: str) -> dict[str, Settings]:
    """The same history and marts built on DuckDB and on Spark; the DuckDB side while Spark loads."""
    duckdb_home = tmp_path_factory.mktemp("duckdb")
    duckdb = _settings(duckdb_home, f"duckdb:///{duckdb_home / 'warehouse.duckdb'}")
    spark = _settings(tmp_path_factory.mktemp("spark"), spark_master)

    def build_duckdb() -> DbtResult:
        load_days(SIM, None, settings=duckdb)
        return _dbt(duckdb, "run", *SELECT)

    try:
        with ThreadPoolExecutor(1) as pool:
            duckdb_built = pool.submit(build_duckdb)
            load_days(SIM, None, settings=spark)  # on Spark in batches of days
            spark_built = _dbt(spark, "run", *SELECT)
            for result in (duckdb_built.result(), spark_built):
                assert result.success, result.output[-4000:]
        yield {"duckdb": duckdb, "spark": spark}
    finally:
        release()


def test_spark_builds_the_marts_duckdb_builds(warehouses):
    spark, duckdb = _marts(warehouses["spark"]), _marts(warehouses["duckdb"])
    for mart in (*MARTS, SCORES):
        _assert_same_rows(spark[mart], duckdb[mart], mart)
    assert spark["marts.customer_features_daily"].num_rows > SIM.days * 100
    assert spark[SCORES].num_rows == 0
    # the labels exist where their horizons closed: as_of_date + 30 (33) on or before the last day
    labelled = pc.max(spark["marts.churn_labels"]["as_of_date"]).as_py()
    assert labelled == LAST_DAY - timedelta(days=30)
    assert pc.max(spark["marts.payment_default_labels"]["as_of_date"]).as_py() <= LAST_DAY - timedelta(days=33)


def test_a_daily_run_on_spark_replaces_its_day_only(warehouses):
    spark = warehouses["spark"]
    day, before = LAST_DAY, LAST_DAY - timedelta(days=1)
    counts = {mart: rows.num_rows for mart, rows in _marts(spark).items()}
    features = _marts(spark, f"as_of_date between '{before}' and '{day}'")["marts.customer_features_daily"]
    # Spoil the run's day (every row twice, sessions_90d -1) and the day before it (sessions_90d -1).
    spoiled = features.set_column(features.schema.get_field_index("sessions_90d"), "sessions_90d",
                                  pa.array([-1] * features.num_rows, pa.int32()))
    of_day = spoiled.filter(pc.equal(spoiled["as_of_date"], pa.scalar(day)))
    with Warehouse.connect(spark) as wh:
        wh.replace_rows("marts.customer_features_daily", spoiled.schema, [
            ({"as_of_date": day}, pa.concat_tables([of_day, of_day])),
            ({"as_of_date": before}, spoiled.filter(pc.equal(spoiled["as_of_date"], pa.scalar(before)))),
        ])

    result = _dbt_here(spark, "run", "--select", "customer_features_daily", "churn_labels", "payment_default_labels",
                       vars={"start_date": str(day), "end_date": str(day)})
    assert result.success, result.output[-4000:]
    # a date that has not landed is refused, naming it, before anything is replaced
    refused = _dbt_here(spark, "run", "--select", "customer_features_daily",
                        vars={"start_date": str(day + timedelta(days=1)), "end_date": str(day + timedelta(days=1))})
    assert not refused.success
    assert f"refusing as-of dates that have not landed: {day + timedelta(days=1)}" in refused.output

    after = _marts(spark)
    release()
    assert {mart: rows.num_rows for mart, rows in after.items()} == counts
    rebuilt = after["marts.customer_features_daily"]
    of_day = rebuilt.filter(pc.equal(rebuilt["as_of_date"], pa.scalar(day)))
    _assert_same_rows(of_day, features.filter(pc.equal(features["as_of_date"], pa.scalar(day))), "the run's day")
    untouched = rebuilt.filter(pc.equal(rebuilt["as_of_date"], pa.scalar(before)))
    assert untouched.num_rows > 100 and set(untouched["sessions_90d"].to_pylist()) == {-1}
