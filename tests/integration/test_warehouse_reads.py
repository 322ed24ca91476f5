"""Query results come back as Arrow with the same column types and values from DuckDB and PostgreSQL."""

from __future__ import annotations

from datetime import date, datetime
from decimal import Decimal

import pyarrow as pa
import pytest

from ml.core.warehouse import Warehouse, WarehouseError
from ml.ingest.load import load_days, raw_table_hashes

# The types the pipeline declares, with the awkward values: NULLs, an empty string, a digits-only text.
SCHEMA = pa.schema([
    ("id", pa.int64()), ("n", pa.int32()), ("amount", pa.decimal128(12, 2)), ("ratio", pa.float64()),
    ("flag", pa.bool_()), ("day", pa.date32()), ("at", pa.timestamp("us")), ("label", pa.string()),
])
ROWS = pa.table({
    "id": [1, 2, 3], "n": [7, None, -1],
    "amount": [Decimal("12.50"), Decimal("-0.01"), None], "ratio": [0.25, None, 1e-9],
    "flag": [True, False, None], "day": [date(2025, 3, 1), None, date(1999, 12, 31)],
    "at": [datetime(2025, 3, 1, 12, 30, 5, 123456), None, datetime(2000, 1, 1)],
    "label": ["00123", "", None],
}, schema=SCHEMA)


@pytest.fixture
def stored(warehouse_settings):
    with Warehouse.connect(warehouse_settings) as wh:
        wh.execute("create schema if not exists t")
        wh.replace_table("t.kinds", ROWS)
    return warehouse_settings


def test_read_arrow_keeps_the_declared_types_and_values(stored):
    with Warehouse.connect(stored, read_only=True) as wh:
        table = wh.read_arrow("select * from t.kinds order by id")
    assert table.schema == SCHEMA
    assert table.to_pylist() == ROWS.to_pylist()


def test_stream_arrow_agrees_with_read_arrow_in_bounded_batches(stored):
    with Warehouse.connect(stored, read_only=True) as wh:
        batches = list(wh.stream_arrow("select * from t.kinds order by id", batch_rows=2))
        whole = wh.read_arrow("select * from t.kinds order by id")
    assert [b.num_rows for b in batches] == [2, 1]
    assert pa.Table.from_batches(batches).equals(whole)


def test_an_empty_result_is_an_empty_typed_table_and_no_batches(stored):
    empty = "select id, flag, label from t.kinds where id < 0"
    with Warehouse.connect(stored, read_only=True) as wh:
        table = wh.read_arrow(empty)
        assert list(wh.stream_arrow(empty)) == []
        with pytest.raises(WarehouseError, match="batch_rows must be at least 1"):
            list(wh.stream_arrow(empty, batch_rows=0))
    assert table.num_rows == 0
    assert table.schema == pa.schema([("id", pa.int64()), ("flag", pa.bool_()), ("label", pa.string())])


@pytest.mark.postgres
def test_the_same_raw_days_hash_the_same_on_both_warehouses(duckdb_settings, postgres_settings, small_sim):
    days = {small_sim.start, small_sim.start.replace(day=small_sim.start.day + 1)}
    for settings in (duckdb_settings, postgres_settings):
        load_days(small_sim, days, settings=settings)
    assert raw_table_hashes(duckdb_settings) == raw_table_hashes(postgres_settings)


def test_dbt_and_ml_open_the_warehouse_with_the_same_session_settings(warehouse_settings):
    """DuckDB: the memory limit of TIDEMARK_DUCKDB_MEMORY_LIMIT; PostgreSQL: JIT compilation off. Both in
    ml's connections and in dbt's, which read them through profiles.yml and PGOPTIONS."""
    from dataclasses import replace

    from ml.features.dbt import run_dbt

    if warehouse_settings.warehouse.kind == "duckdb":
        settings = replace(warehouse_settings, warehouse=replace(warehouse_settings.warehouse, memory_limit="512MB"))
        query, expected = "select current_setting('memory_limit')", "488.2 MiB"  # DuckDB shows 512 MB in MiB
    else:
        settings, query, expected = warehouse_settings, "select current_setting('jit')", "off"
    with Warehouse.connect(settings) as wh:
        assert wh.scalar(query) == expected
    result = run_dbt(["show", "--inline", f"{query} as value", "--output", "json"], settings=settings, capture=True)
    assert result.success, result.output[-3000:]
    assert f'"value": "{expected}"' in result.output
