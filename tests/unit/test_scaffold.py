"""The pure parts of `new-model`: type inference, the label's 0/1 cast, the default entity, the rendered files."""

from __future__ import annotations

from datetime import date
from pathlib import Path

import pyarrow as pa
import pytest
import yaml

from ml.core.spec import parse_spec
from ml.features.scaffold import ScaffoldError, default_entity, infer_type, label_sql, output_name, plan_model


@pytest.mark.parametrize("values, expected", [
    (["1", " 2", "", "-3"], "integer"),
    (["1", "3000000000"], "bigint"),
    (["1.5", "2", " "], "double precision"),
    (["01234", "2"], "varchar"),  # a leading zero: a code, not a number
    (["2025-01-31", ""], "date"),
    (["2025-01-31 10:00:00", "2025-02-01"], "timestamp"),
    (["a", "1"], "varchar"),
    (["", " "], "varchar"),
    (pa.array([1, 2], pa.int64()), "integer"),
    (pa.array([0.5]), "double precision"),
    (pa.array([True, None]), "boolean"),
    (pa.array([date(2025, 1, 1)]), "date"),
])
def test_a_columns_type_is_inferred_from_its_values(values, expected):
    assert infer_type(values if isinstance(values, pa.Array) else pa.array(values, pa.string())) == expected


@pytest.mark.parametrize("values, sql", [
    (pa.array(["Yes", "no", " YES", ""]), "cast(case lower(trim(churn)) when 'yes' then 1 when 'no' then 0 end as integer)"),
    (pa.array(["1", "0", None]), "cast(nullif(trim(churn), '') as integer)"),
    (pa.array(["T", "f"]), "cast(case lower(trim(churn)) when 't' then 1 when 'f' then 0 end as integer)"),
    (pa.array([0, 1, None]), "cast(churn as integer)"),
    (pa.array([True, False]), "cast(churn as integer)"),
])
def test_a_binary_label_is_cast_to_a_0_1_integer(values, sql):
    assert label_sql("churn", values, "clients") == sql


@pytest.mark.parametrize("values, shown", [
    (pa.array(["gold", "silver", "bronze"]), "it holds 'bronze', 'gold', 'silver'"),
    (pa.array([0, 1, 2]), "it holds 0, 1, 2"),
    (pa.array(["yes", "no", "1"]), "it holds '1', 'no', 'yes'"),
])
def test_a_label_that_is_not_binary_is_refused_naming_its_values(values, shown):
    with pytest.raises(ScaffoldError) as refused:
        label_sql("tier", values, "clients")
    assert str(refused.value) == (f"--label 'tier': raw.clients.tier is not binary ({shown}); a label is 0/1, "
                                  "true/false or yes/no: name such a column, or derive one in the file")


def test_the_entity_is_the_id_column_that_is_unique_per_time_value():
    daily = pa.table({"client_id": ["1", "2", "1", "2"], "day": ["2025-01-01"] * 2 + ["2025-01-02"] * 2,
                      "source_row": [1, 2, 3, 4]})
    assert default_entity(daily, "clients", "day") == "client_id"
    assert default_entity(pa.table({"id": [1, 2], "clients_id": [3, 3]}), "clients", None) == "id"
    with pytest.raises(ScaffoldError, match=r"raw.clients: client_id is not unique; name the column that identifies "
                                            r"a row with --entity COLUMN \(columns unique: source_row\)"):
        default_entity(daily, "clients", None)


def test_a_reserved_word_is_renamed():
    assert (output_name("order"), output_name("plan")) == ("order_value", "plan")


def _clients() -> pa.Table:
    return pa.table({
        "client_id": ["1", "2", "3", "1", "2", "3"],
        "day": ["2025-01-01"] * 3 + ["2025-01-31"] * 3,
        "order": ["5", "6", "7", "5", "6", "7"],
        "signed_up": ["2024-12-01"] * 6,
        "churned": ["yes", "no", "no", "no", "yes", ""],
        "source_row": list(range(1, 7)),
    })


def test_a_time_model_gets_a_typed_staging_model_with_a_contract_and_a_spec_split_by_time(tmp_path):
    plan = plan_model(_clients(), name="acme", raw_table="clients", label="churned", entity=None, time="day",
                      dbt_project=tmp_path / "dbt", specs_dir=tmp_path / "specs")
    folder = tmp_path / "dbt" / "models" / "staging" / "acme"
    assert plan.relation == "stg_acme__clients"
    assert sorted(plan.files) == sorted([folder / "_acme__sources.yml", folder / "stg_acme__clients.sql",
                                         folder / "_acme__models.yml", tmp_path / "specs" / "acme.yaml"])
    sql = plan.files[folder / "stg_acme__clients.sql"]
    assert "select * from {{ source('acme', 'clients') }}" in sql and "source_row" not in sql
    assert 'cast(nullif(trim("order"), \'\') as integer) as order_value,' in sql
    model = yaml.safe_load(plan.files[folder / "_acme__models.yml"])["models"][0]
    assert model["config"] == {"contract": {"enforced": True}}
    assert {c["name"]: c["data_type"] for c in model["columns"]} == {
        "client_id": "integer", "day": "date", "order_value": "integer", "signed_up": "date", "churned": "integer"}
    source = yaml.safe_load(plan.files[folder / "_acme__sources.yml"])["sources"][0]
    assert (source["name"], source["schema"], source["tables"][0]["name"]) == ("acme", "raw", "clients")

    spec = parse_spec(yaml.safe_load(plan.files[tmp_path / "specs" / "acme.yaml"]))
    assert (spec.served, spec.entity_key, spec.time_column, spec.label.column) == (True, "client_id", "day", "churned")
    assert spec.features.relation == "stg_acme__clients" and spec.features.exclude == ("signed_up",)
    assert (spec.split.strategy, spec.split.validation_days, spec.split.test_days) == ("time", 6, 6)  # 31 days
    assert [c.kind for c in spec.candidates] == ["lightgbm", "logistic"]
    assert spec.promotion.floors == {"roc_auc": 0.6} and spec.promotion.max_ece == 0.1
    text = plan.files[tmp_path / "specs" / "acme.yaml"]
    comments = [line for line in text.splitlines() if line.lstrip().startswith("#")]
    assert len(comments) >= 20 and "horizon_days: 0" in text


def test_a_snapshot_model_is_split_at_random_and_keeps_source_row_when_it_is_the_entity(tmp_path):
    table = _clients().filter(pa.compute.equal(_clients()["day"], "2025-01-01"))
    plan = plan_model(table, name="acme", raw_table="clients", label="churned", entity="source_row", time=None,
                      dbt_project=tmp_path, specs_dir=tmp_path)
    spec = parse_spec(yaml.safe_load(plan.files[Path(tmp_path / "acme.yaml")]))
    assert (spec.time_column, spec.split.strategy, spec.entity_key, spec.schedule) == (None, "random", "source_row", None)
    assert "cast(source_row as integer) as source_row" in plan.files[
        tmp_path / "models" / "staging" / "acme" / "stg_acme__clients.sql"]


def test_a_time_column_without_dates_is_refused(tmp_path):
    with pytest.raises(ScaffoldError, match=r"--time 'order': raw.clients.order holds values that are not dates "
                                            r"such as '5'"):
        plan_model(_clients(), name="acme", raw_table="clients", label="churned", entity="client_id", time="order",
                   dbt_project=tmp_path, specs_dir=tmp_path)
