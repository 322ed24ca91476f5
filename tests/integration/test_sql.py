"""One way to write SQL: values bound, identifiers quoted once, the ml tables declared once, writes in bulk."""

from __future__ import annotations

from datetime import date, datetime, timedelta

import pyarrow as pa
import pytest
import sqlalchemy as sa

from ml.core.sql import compiled, named_table, quote, split_name
from ml.core.tables import (
    METADATA,
    arrow_schema,
    drift_metrics,
    model_performance,
    predictions,
    retrain_requests,
)
from ml.core.warehouse import Warehouse, WarehouseError
from ml.features.marts import FEATURES_TABLE, LABELS_TABLE, describe_marts
from ml.monitoring.drift import DATASET_ROW, replace_model_partition
from ml.monitoring.performance import drift_history, performance_history
from ml.monitoring.triggers import last_request

DAY = date(2025, 3, 1)
MODEL = "o'brien"  # a value with a quote: data, never SQL


def _drift_rows(n: int, model: str = MODEL, day: date = DAY) -> pa.Table:
    rows = [{"model_name": model, "model_version": "v0001", "as_of_date": day, "column_name": f"col {i}'s",
             "score": i / n, "threshold": 0.1, "drifted": i % 2 == 0, "checked_at": datetime(2025, 3, 2)}
            for i in range(n - 1)]
    rows.append({"model_name": model, "model_version": "v0001", "as_of_date": day, "column_name": DATASET_ROW,
                 "score": 0.4, "threshold": 0.3, "drift_share": 0.4, "dataset_drift": True, "current_rows": n,
                 "reference_rows": 7, "checked_at": datetime(2025, 3, 2)})
    return pa.Table.from_pylist(rows, schema=arrow_schema(drift_metrics))


def test_quote_leaves_plain_names_and_quotes_keywords_capitals_and_odd_characters():
    assert quote("model_name") == "model_name"
    assert [quote(name) for name in ("at", "order", "customerID")] == ['"at"', '"order"', '"customerID"']
    assert quote('it\'s a "name"') == '"it\'s a ""name"""'
    assert split_name('"marts"."odd ""x"""') == ("marts", 'odd "x"')
    with pytest.raises(ValueError, match="schema-qualified"):
        split_name("no_schema")


def test_values_are_bound_parameters_in_each_drivers_style():
    query = sa.select(retrain_requests.c.reason).where(retrain_requests.c.model_name == MODEL,
                                                      retrain_requests.c.requested_on <= DAY)
    duck_sql, duck_params = compiled(query, "duckdb")
    pg_sql, pg_params = compiled(query, "postgres")
    assert MODEL not in duck_sql and MODEL not in pg_sql and "2025" not in duck_sql + pg_sql
    assert duck_sql.count("?") == 2 and duck_params == (MODEL, DAY)
    assert sorted(pg_params.values(), key=str) == sorted([MODEL, DAY], key=str) and "%(" in pg_sql


def test_a_model_name_with_a_quote_is_written_and_read_back_by_every_reader(warehouse_settings):
    request = {"request_id": f"{MODEL}/{DAY}", "model_name": MODEL, "requested_on": DAY, "reason": "drift",
               "detail": "{}", "champion_version": "v0001", "requested_at": datetime(2025, 3, 1, 6)}
    performance = {"model_name": MODEL, "model_version": "v0001", "as_of_date": DAY, "rows": 10, "positives": 2,
                   "roc_auc": 0.7, "pr_auc": 0.3, "brier": 0.1, "computed_at": datetime(2025, 3, 2)}
    with Warehouse.connect(warehouse_settings) as wh:
        replace_model_partition(wh, drift_metrics.fullname, MODEL, DAY, _drift_rows(3))
        replace_model_partition(wh, model_performance.fullname, MODEL, DAY,
                                pa.Table.from_pylist([performance], schema=arrow_schema(model_performance)))
        wh.replace_partitions("request_id", request["request_id"], {
            retrain_requests.fullname: pa.Table.from_pylist([request], schema=arrow_schema(retrain_requests))})

    assert last_request(warehouse_settings, MODEL, DAY + timedelta(days=3)) == {"requested_on": DAY, "reason": "drift"}
    assert last_request(warehouse_settings, MODEL, DAY - timedelta(days=1)) is None
    [drift] = drift_history(warehouse_settings, MODEL, DAY, days=2)
    assert (drift["as_of_date"], drift["drift_share"], drift["dataset_drift"]) == ("2025-03-01", 0.4, True)
    [realized] = performance_history(warehouse_settings, MODEL, DAY, days=1)
    assert (realized["model_version"], realized["rows"], realized["roc_auc"]) == ("v0001", 10, 0.7)
    assert drift_history(warehouse_settings, "o", DAY, days=2) == []


def test_a_model_partition_of_6000_rows_is_written_in_bulk_and_replaced_whole(warehouse_settings, monkeypatch):
    # 6,000 rows of 13 columns as one parameter per value would pass PostgreSQL's 65,535-parameter limit
    statements, execute = [], Warehouse.execute

    def recorded(self, statement, *args):
        statements.append(str(statement))
        return execute(self, statement, *args)

    monkeypatch.setattr(Warehouse, "execute", recorded)
    with Warehouse.connect(warehouse_settings) as wh:
        assert replace_model_partition(wh, drift_metrics.fullname, MODEL, DAY, _drift_rows(6_000)) == 6_000
        replace_model_partition(wh, drift_metrics.fullname, "other", DAY, _drift_rows(5, "other"))
        stored = wh.read_arrow(sa.select(drift_metrics).where(drift_metrics.c.model_name == MODEL)
                               .order_by(drift_metrics.c.column_name))
        assert stored.num_rows == 6_000
        assert stored.sort_by("column_name").equals(_drift_rows(6_000).sort_by("column_name"))
        assert replace_model_partition(wh, drift_metrics.fullname, MODEL, DAY, _drift_rows(4)) == 4
        counts = wh.rows(sa.select(drift_metrics.c.model_name, sa.func.count().label("n"))
                         .group_by(drift_metrics.c.model_name).order_by(drift_metrics.c.model_name))
    assert counts == [{"model_name": MODEL, "n": 4}, {"model_name": "other", "n": 5}]
    assert not [s for s in statements if s.lstrip().lower().startswith("insert")], "rows went in as SQL values"


@pytest.mark.postgres
def test_the_declared_tables_have_the_same_columns_and_types_on_duckdb_and_postgresql(duckdb_settings,
                                                                                      postgres_settings):
    catalogs = []
    for settings in (duckdb_settings, postgres_settings):
        with Warehouse.connect(settings) as wh:
            for table in METADATA.sorted_tables:
                wh.ensure_table(table.fullname)
                assert wh.read_arrow(sa.select(table)).schema == arrow_schema(table), (wh.kind, table.fullname)
            catalogs.append({table.fullname: wh._columns(table.fullname) for table in METADATA.sorted_tables})
    assert catalogs[0] == catalogs[1]
    assert [name for name, _ in catalogs[0]["ml.predictions"]] == arrow_schema(predictions).names
    assert dict(catalogs[0]["ml.model_performance"])["rows"] == "integer"


def test_rows_with_a_column_the_declaration_lacks_are_refused(warehouse_settings):
    rows = _drift_rows(2).append_column("extra", pa.array([1, 2], pa.int64()))
    with Warehouse.connect(warehouse_settings) as wh, pytest.raises(WarehouseError, match=r"no columns \['extra'\]"):
        replace_model_partition(wh, drift_metrics.fullname, MODEL, DAY, rows)


def test_replace_table_keeps_column_names_with_quotes_and_spaces(warehouse_settings):
    odd = 'it\'s a "name"'
    first = pa.table({odd: ["o'brien", 'say "hi"'], "at": [1, 2]})
    second = pa.table({odd: ["again"], "at": [3]})
    with Warehouse.connect(warehouse_settings) as wh:
        wh.replace_table("t.odd", first)
        wh.replace_table("t.odd", second)  # same columns: emptied and refilled
        assert wh.read_arrow("select * from t.odd").to_pylist() == [{odd: "again", "at": 3}]
        wh.replace_table("t.odd", first)
        source = named_table("t.odd", odd, "at")
        read = wh.read_arrow(sa.select(source.c[odd]).where(source.c[odd] == "o'brien"))
    assert read.column_names == [odd] and read.to_pylist() == [{odd: "o'brien"}]


def test_the_marts_summary_counts_the_asked_day(warehouse_settings):
    days = [DAY, DAY, DAY + timedelta(days=1)]
    with Warehouse.connect(warehouse_settings) as wh:
        wh.replace_table(FEATURES_TABLE, pa.table({"as_of_date": pa.array(days, pa.date32())}))
        wh.replace_table(LABELS_TABLE, pa.table({"churned": pa.array([1, 0, 0, 0], pa.int32())}))
    summary = describe_marts(warehouse_settings, as_of=DAY)
    assert summary[FEATURES_TABLE] == {"rows": 3, "min_as_of_date": DAY, "max_as_of_date": DAY + timedelta(days=1),
                                       "as_of_date": DAY, "rows_on_as_of_date": 2}
    assert summary[LABELS_TABLE] == {"rows": 4, "positive_rate": 0.25}
