"""SQL injection through what users and files hand the pipeline: a run's conf, a spec, a CSV header.

Each attempt must be refused with a message, or its text stored as a quoted identifier or a bound
value; either way the sentinel table `raw.customers` is still there afterwards with its one row.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pyarrow as pa
import pytest
import yaml

from ml.core.errors import TidemarkError
from ml.core.settings import REPO_ROOT, Settings, parse_warehouse_url
from ml.core.spec import SPEC_DIR, Relation, SpecError, feature_schema, parse_spec
from ml.core.warehouse import Warehouse
from ml.ingest.csv_files import TableLoadError, load_csv
from ml.orchestration.intervals import requested_as_of, requested_interval
from tests.fixtures import parsed_dags

ATTACK = "2025-01-01'; drop table raw.customers; --"
NAME_ATTACK = 'customer_id"; drop table raw.customers; --'
SENTINEL = "raw.customers"


def _plant_sentinel(settings: Settings) -> None:
    with Warehouse.connect(settings) as wh:
        wh.replace_table(SENTINEL, pa.table({"customer_id": ["sentinel"]}))


def _sentinel_rows(settings: Settings) -> list[dict]:
    with Warehouse.connect(settings, read_only=True) as wh:
        assert wh.table_exists(SENTINEL), f"{SENTINEL} was dropped"
        return wh.read_arrow(f"select customer_id from {SENTINEL}").to_pylist()


@pytest.fixture
def sentinel_home(tmp_path) -> Settings:
    """A DuckDB warehouse under tmp_path holding only the sentinel table."""
    settings = Settings(home=tmp_path, warehouse=parse_warehouse_url(f"duckdb:///{tmp_path / 'warehouse.duckdb'}"))
    _plant_sentinel(settings)
    return settings


def _cli(settings: Settings, *args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "TIDEMARK_HOME": str(settings.home), "TIDEMARK_WAREHOUSE_URL": settings.warehouse.url}
    env.pop("TIDEMARK_REGISTRY_URI", None)
    return subprocess.run([sys.executable, "-m", "ml", *args], cwd=REPO_ROOT, env=env, capture_output=True,
                          text=True, timeout=180)


# -- a run's conf -----------------------------------------------------------------------------------
@pytest.mark.parametrize("conf", [{"start": ATTACK}, {"end": ATTACK}, {"start": "2025-01-01", "end": ATTACK}])
def test_conf_dates_with_sql_in_them_are_refused_naming_the_key(conf):
    with pytest.raises(TidemarkError, match="dag_run.conf (start|end) is .*drop table raw.customers.*not a date"):
        requested_interval(conf, None)


def test_a_conf_as_of_with_sql_in_it_is_refused():
    with pytest.raises(TidemarkError, match="dag_run.conf as_of is .*not a date"):
        requested_as_of({"as_of": ATTACK}, None)


def test_an_ingest_run_whose_conf_holds_sql_fails_before_touching_the_warehouse(airflow_settings, tmp_path, capfd):
    settings = Settings(home=airflow_settings.home,
                        warehouse=parse_warehouse_url(f"duckdb:///{tmp_path / 'warehouse.duckdb'}"))
    _plant_sentinel(settings)
    with parsed_dags(settings, file="ingest_raw.py") as dags:
        run = dags["ingest_raw"].test(run_conf={"start": ATTACK, "end": "2025-01-02"})
    assert run.state == "failed"
    logged = "".join(capfd.readouterr())
    assert "OrchestrationError: dag_run.conf start is" in logged and "not a date" in logged
    assert _sentinel_rows(settings) == [{"customer_id": "sentinel"}]


@pytest.mark.parametrize("args", [
    ["score", "--start", ATTACK, "--end", "2025-01-02"],
    ["monitor", "--date", ATTACK],
    ["train", "--as-of", ATTACK],
    ["features", "--as-of", ATTACK],
    ["simulate", "--start", ATTACK, "--days", "1"],
])
def test_command_line_dates_with_sql_in_them_are_usage_errors(sentinel_home, args):
    result = _cli(sentinel_home, *args)
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert "is not a date" in " ".join(result.stderr.replace("│", " ").split()), result.stderr
    assert _sentinel_rows(sentinel_home) == [{"customer_id": "sentinel"}]


def test_a_dbt_date_var_with_sql_in_it_is_refused_naming_the_var(sentinel_home):
    """The vars reach dbt's SQL only as checked dates, also when a user passes them to dbt directly."""
    result = _cli(sentinel_home, "dbt", "build", "--select", "customer_features_daily",
                  "--vars", json.dumps({"start_date": ATTACK, "end_date": "2025-01-02"}))
    output = " ".join((result.stdout + result.stderr).split())
    assert result.returncode != 0
    assert "var start_date is 2025-01-01'; drop table raw.customers; --, not a date" in output, output[-2000:]
    assert _sentinel_rows(sentinel_home) == [{"customer_id": "sentinel"}]


# -- a spec -----------------------------------------------------------------------------------------
def _churn_spec() -> dict:
    return yaml.safe_load((SPEC_DIR / "churn.yaml").read_text())


@pytest.mark.parametrize("field, path", [
    ("name", ["name"]),
    ("entity_key", ["entity_key"]),
    ("time_column", ["time_column"]),
    ("features.relation", ["features", "relation"]),
    ("label.column", ["label", "column"]),
    ("label.relation", ["label", "relation"]),
    ("candidates.0.name", ["candidates", 0, "name"]),
])
def test_a_spec_name_with_sql_in_it_is_refused_naming_the_field(sentinel_home, tmp_path, field, path):
    data = _churn_spec()
    holder = data
    for step in path[:-1]:
        holder = holder[step]
    holder[path[-1]] = NAME_ATTACK
    spec_file = tmp_path / "attack.yaml"
    spec_file.write_text(yaml.safe_dump(data))
    result = _cli(sentinel_home, "score", "--spec", str(spec_file), "--date", "2025-01-01")
    assert result.returncode == 2 and "Traceback" not in result.stderr, result.stderr
    assert "invalid model spec" in result.stderr and f"{field}:" in result.stderr, result.stderr
    assert "not a plain column or relation name" in result.stderr
    assert _sentinel_rows(sentinel_home) == [{"customer_id": "sentinel"}]


@pytest.mark.parametrize("field", ["include", "exclude", "categorical", "segments"])
def test_spec_feature_columns_with_sql_in_them_must_be_contract_columns(field):
    data = _churn_spec()
    if field == "segments":
        data["segments"] = [NAME_ATTACK]
    else:
        data["features"][field] = ["tenure_days", NAME_ATTACK] if field != "exclude" else [NAME_ATTACK]
    spec = parse_spec(data)
    relation = Relation("customer_features_daily", "marts", "customer_features_daily",
                        {"customer_id": "text", "as_of_date": "date", "tenure_days": "integer"}, enforced=True)
    with pytest.raises(SpecError, match="not in 'customer_features_daily'"):
        feature_schema(spec, relation)


# -- a CSV header -----------------------------------------------------------------------------------
HEADER = ['a"; drop table raw.customers; --', "from", "Order", "b'); drop table raw.customers; --"]


def test_a_csv_header_with_sql_in_it_becomes_quoted_snake_case_columns(warehouse_settings, tmp_path):
    _plant_sentinel(warehouse_settings)
    csv_file = tmp_path / "attack.csv"
    value = "x'); drop table raw.customers; --"
    csv_file.write_text(",".join(f'"{h.replace(chr(34), chr(34) * 2)}"' for h in HEADER) + f'\n1,2,3,"{value}"\n')
    assert load_csv(warehouse_settings, csv_file, "attack") == 1
    with Warehouse.connect(warehouse_settings, read_only=True) as wh:
        stored = wh.read_arrow("select * from raw.attack").to_pylist()
    assert stored == [{"a_drop_table_raw_customers": "1", "from": "2", "order": "3",
                       "b_drop_table_raw_customers": value, "source_row": 1}]
    assert _sentinel_rows(warehouse_settings) == [{"customer_id": "sentinel"}]


@pytest.mark.parametrize("table", ["t; drop table raw.customers", 'customers" cascade; --', "Customers"])
def test_a_table_name_with_sql_in_it_is_refused(sentinel_home, tmp_path, table):
    csv_file = tmp_path / "rows.csv"
    csv_file.write_text("a\n1\n")
    with pytest.raises(TableLoadError, match="is not valid: use lower-case letters, digits and _"):
        load_csv(sentinel_home, csv_file, table)
    result = _cli(sentinel_home, "load-csv", str(csv_file), table)
    assert result.returncode == 2 and result.stderr.startswith("error: table name"), result.stderr
    assert _sentinel_rows(sentinel_home) == [{"customer_id": "sentinel"}]


def test_a_csv_loaded_from_the_command_line_keeps_the_sentinel(sentinel_home, tmp_path):
    csv_file = Path(tmp_path / "attack.csv")
    csv_file.write_text('"a""; drop table raw.customers; --",select\n1,2\n')
    result = _cli(sentinel_home, "load-csv", str(csv_file), "attack")
    assert result.returncode == 0, result.stderr
    with Warehouse.connect(sentinel_home, read_only=True) as wh:
        assert wh.read_arrow("select * from raw.attack").column_names == [
            "a_drop_table_raw_customers", "select", "source_row"]
    assert _sentinel_rows(sentinel_home) == [{"customer_id": "sentinel"}]


# -- the Airflow metadata database's name -----------------------------------------------------------
@pytest.mark.postgres
def test_a_metadata_database_name_with_sql_in_it_is_created_under_exactly_that_name():
    import uuid

    import psycopg
    from psycopg import sql

    from ml.tools.service import _ensure_database
    from tests.fixtures import PG_ADMIN_DSN

    plain = f"tidemark_inj_{uuid.uuid4().hex[:8]}"
    odd = f'{plain}" template template0; --'
    try:
        _ensure_database(f"postgresql://postgres@127.0.0.1:5432/{odd}")
        with psycopg.connect(PG_ADMIN_DSN, autocommit=True) as admin:
            found = admin.execute("select datname from pg_database where datname like %s", (f"{plain}%",)).fetchall()
        assert found == [(odd,)]
    finally:
        with psycopg.connect(PG_ADMIN_DSN, autocommit=True) as admin:
            for name in (plain, odd):
                admin.execute(sql.SQL("drop database if exists {}").format(sql.Identifier(name)))
