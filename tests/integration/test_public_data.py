"""The two real public data sets: landed as raw text, typed by the dbt staging views, on both warehouses."""

from __future__ import annotations

import pytest

from ml.core.warehouse import Warehouse
from ml.features.dbt import run_dbt
from ml.ingest.csv_files import TableLoadError, load_csv
from tests.fixtures import PUBLIC_DATA_CANDIDATES, public_data_dir

DATA_DIR = public_data_dir() or PUBLIC_DATA_CANDIDATES[0]
TELCO, BANK = DATA_DIR / "telco_customer_churn.csv", DATA_DIR / "bank_marketing.csv"
pytestmark = pytest.mark.skipif(
    public_data_dir() is None, reason=f"the public data sets are in none of {[str(p) for p in PUBLIC_DATA_CANDIDATES]}"
)

TELCO_COLUMNS = [
    "customer_id", "gender", "senior_citizen", "partner", "dependents", "tenure", "phone_service",
    "multiple_lines", "internet_service", "online_security", "online_backup", "device_protection",
    "tech_support", "streaming_tv", "streaming_movies", "contract", "paperless_billing", "payment_method",
    "monthly_charges", "total_charges", "churned",
]  # fmt: skip
BANK_COLUMNS = [
    "contact_id", "contact_date", "age", "job", "marital", "education", "credit_default", "balance",
    "housing", "loan", "contact", "contact_day", "contact_month", "duration", "campaign", "pdays",
    "previous", "poutcome", "subscribed",
]  # fmt: skip


def _load_both(settings) -> dict[str, int]:
    return {
        "telco_customers": load_csv(settings, TELCO, "telco_customers"),
        "bank_contacts": load_csv(settings, BANK, "bank_contacts"),
    }


def _columns(wh: Warehouse, schema: str, name: str) -> list[str]:
    sql = "select column_name from information_schema.columns where table_schema = '{}' and table_name = '{}' "
    table = wh.read_arrow(sql.format(schema, name) + "order by ordinal_position")
    return table.column("column_name").to_pylist()


def test_public_data_loads_and_builds_typed_staging_views(warehouse_settings):
    assert _load_both(warehouse_settings) == {"telco_customers": 7_043, "bank_contacts": 45_211}
    with Warehouse.connect(warehouse_settings) as wh:
        # raw is lossless text: the blank TotalCharges (a single space in the file) is kept as written
        assert wh.scalar("select count(*) from raw.telco_customers where total_charges = ' '") == 11
        assert _columns(wh, "raw", "telco_customers")[:3] == ["customer_id", "gender", "senior_citizen"]

    result = run_dbt(["build", "--select", "tag:public_data"], settings=warehouse_settings, capture=True)
    assert result.success, result.failures or result.output[-3000:]

    # reloading after the views exist replaces the rows and leaves the views working
    assert _load_both(warehouse_settings) == {"telco_customers": 7_043, "bank_contacts": 45_211}
    with Warehouse.connect(warehouse_settings) as wh:
        assert _columns(wh, "staging", "stg_public_data__telco_customers") == TELCO_COLUMNS
        assert _columns(wh, "staging", "stg_public_data__bank_contacts") == BANK_COLUMNS
        telco = wh.read_arrow(
            "select count(*) as n, count(distinct customer_id) as customers,"
            " sum(case when total_charges is null then 1 else 0 end) as blank_total,"
            " sum(case when total_charges is null and tenure = 0 then 1 else 0 end) as blank_new,"
            " sum(churned) as churners, avg(cast(churned as double precision)) as churn_rate,"
            " sum(senior_citizen) as seniors, sum(total_charges) as total_charges"
            " from staging.stg_public_data__telco_customers"
        ).to_pylist()[0]
        bank = wh.read_arrow(
            "select count(*) as n, min(contact_id) as first_id, max(contact_id) as last_id,"
            " sum(subscribed) as subscribers, avg(cast(subscribed as double precision)) as subscribe_rate,"
            " min(contact_date) as first_date, max(contact_date) as last_date"
            " from staging.stg_public_data__bank_contacts"
        ).to_pylist()[0]
        first_call = wh.read_arrow(
            "select age, balance, duration, contact_date"
            " from staging.stg_public_data__bank_contacts where contact_id = 1"
        ).to_pylist()[0]
        out_of_order = wh.scalar(
            "select count(*) from (select contact_date, lag(contact_date) over (order by contact_id) as previous_date"
            " from staging.stg_public_data__bank_contacts) as calls where contact_date < previous_date"
        )

    assert telco["n"] == telco["customers"] == 7_043
    assert telco["blank_total"] == telco["blank_new"] == 11
    assert telco["churners"] == 1_869
    assert telco["churn_rate"] == pytest.approx(0.2654, abs=0.001)
    assert telco["seniors"] == 1_142
    assert float(telco["total_charges"]) == pytest.approx(16_056_168.70, abs=0.005)

    assert (bank["n"], bank["first_id"], bank["last_id"]) == (45_211, 1, 45_211)
    assert bank["subscribers"] == 5_289
    assert bank["subscribe_rate"] == pytest.approx(0.117, abs=0.001)
    assert str(bank["first_date"])[:7] == "2008-05" and str(bank["last_date"])[:7] == "2010-11"
    assert {**first_call, "contact_date": str(first_call["contact_date"])} == {
        "age": 58, "balance": 2143, "duration": 261, "contact_date": "2008-05-05"
    }
    assert out_of_order == 0  # contact_id follows the file's chronological order


def test_load_csv_names_what_is_wrong_with_its_input(duckdb_settings, tmp_path):
    missing = tmp_path / "nowhere" / "telco.csv"
    with pytest.raises(TableLoadError, match=f"CSV file not found: {missing}"):
        load_csv(duckdb_settings, missing, "telco_customers")

    empty = tmp_path / "empty.csv"
    empty.write_text("")
    with pytest.raises(TableLoadError, match="empty.csv is empty"):
        load_csv(duckdb_settings, empty, "telco_customers")
    header_only = tmp_path / "header_only.csv"
    header_only.write_text("customerID,Churn\n")
    with pytest.raises(TableLoadError, match="header_only.csv has a header but no data rows"):
        load_csv(duckdb_settings, header_only, "telco_customers")

    clash = tmp_path / "clash.csv"
    clash.write_text("TotalCharges,total_charges\n1,2\n")
    with pytest.raises(TableLoadError, match=r"\['TotalCharges', 'total_charges'\]"):
        load_csv(duckdb_settings, clash, "telco_customers")

    unnamed = tmp_path / "unnamed.csv"
    unnamed.write_text("customerID,,Churn\n1,2,No\n")
    with pytest.raises(TableLoadError, match="unnamed.csv: column name '' has no letters or digits"):
        load_csv(duckdb_settings, unnamed, "telco_customers")

    for bad in ("Telco", "telco customers", "raw.telco", "1telco", ""):
        with pytest.raises(TableLoadError, match="table name .* is not valid"):
            load_csv(duckdb_settings, TELCO, bad)
    with pytest.raises(TableLoadError, match="schema name 'raw; drop' is not valid"):
        load_csv(duckdb_settings, TELCO, "telco_customers", schema="raw; drop")
    assert not (tmp_path / "warehouse.duckdb").exists()  # nothing was connected to, let alone written
