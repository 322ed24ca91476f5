"""Model specs: validation errors name the field; features come from the dbt contract."""

from __future__ import annotations

from datetime import date, timedelta

import pyarrow as pa
import pytest
import yaml

from ml.core.settings import Settings
from ml.core.spec import (
    SPEC_DIR,
    SpecError,
    dbt_relation,
    feature_schema,
    load_spec,
    parse_spec,
)
from ml.training.data import LABEL, DataError, split


def _churn() -> dict:
    return yaml.safe_load((SPEC_DIR / "churn.yaml").read_text())


def test_every_shipped_spec_is_valid():
    names = sorted(p.stem for p in SPEC_DIR.glob("*.yaml"))
    assert "churn" in names
    for name in names:
        assert load_spec(name).name == name


@pytest.mark.parametrize(
    "change, field, words",
    [
        (lambda d: d.pop("entity_key"), "entity_key", "Field required"),
        (lambda d: d["candidates"][0].update(kind="xgboost"), "candidates.0.kind", "lightgbm"),
        (lambda d: d["split"].update(gap_days=3), "(top level)", "labels would leak"),
        (lambda d: d.update(primary_metric="accuracy"), "primary_metric",
         "unknown metric 'accuracy'; the primary metric is one of roc_auc, pr_auc, log_loss, brier"),
        (lambda d: d.update(primary_metric="f1"), "primary_metric", "one of roc_auc, pr_auc, log_loss, brier"),
        (lambda d: d["promotion"].update(floors={"roc_auc": 0.6, "auc": 0.7, "accuracy": 0.8}), "promotion.floors",
         "unknown metric(s) ['accuracy', 'auc']; floors may name roc_auc, pr_auc, log_loss, brier, precision, "
         "recall, f1, lift_top_decile"),
        (lambda d: d["promotion"].update(floors={"ece": 0.05}), "promotion.floors", "its own bound, max_ece"),
        (lambda d: d["features"].update(relation="drop table x"), "features.relation", "plain column"),
        (lambda d: d.update(colour="blue"), "colour", "Extra inputs"),
        (lambda d: d.update(time_column=None), "(top level)", "needs a time_column"),
        (lambda d: d.update(candidates=[d["candidates"][0], d["candidates"][0]]), "(top level)", "unique"),
        (lambda d: d["threshold"].update(strategy="fixed"), "threshold", "needs a value"),
    ],
)
def test_a_bad_spec_is_refused_with_the_field_named(change, field, words):
    data = _churn()
    change(data)
    with pytest.raises(SpecError) as err:
        parse_spec(data, source="churn.yaml")
    text = str(err.value)
    assert "churn.yaml" in text and field in text and words in text


def test_floors_on_any_reported_metric_are_accepted_when_the_spec_is_loaded(tmp_path):
    data = _churn()
    data["promotion"]["floors"] = {"pr_auc": 0.1, "log_loss": 0.3, "f1": 0.2, "lift_top_decile": 2.0}
    data["primary_metric"] = "brier"
    path = tmp_path / "churn_floors.yaml"
    path.write_text(yaml.safe_dump(data))
    spec = load_spec(path)
    assert spec.primary_metric == "brier" and spec.promotion.floors["lift_top_decile"] == 2.0
    data["promotion"]["floors"]["precision_at_10"] = 0.5
    path.write_text(yaml.safe_dump(data))
    with pytest.raises(SpecError, match=r"churn_floors.yaml: invalid model spec\n  promotion.floors: .*precision_at_10"):
        load_spec(path)


def test_an_unknown_spec_name_lists_the_known_ones():
    with pytest.raises(SpecError, match="known specs: .*churn"):
        load_spec("no_such_model")


def test_features_come_from_the_enforced_contract():
    settings = Settings.from_env()
    spec = load_spec("churn")
    schema = feature_schema(spec, dbt_relation(settings.dbt_manifest, spec.features.relation))
    assert set(schema.categorical) == {"plan_code", "region", "acquisition_channel"}
    assert "tenure_days" in schema.numeric and "monthly_price" in schema.numeric
    for reserved in ("customer_id", "as_of_date", "churned"):
        assert reserved not in schema.columns
    data = _churn()
    data["features"]["exclude"] = ["monthly_price", "no_such_column"]
    with pytest.raises(SpecError, match="no_such_column"):
        feature_schema(parse_spec(data), dbt_relation(settings.dbt_manifest, "customer_features_daily"))


def _daily_table(days: int, per_day: int = 20) -> pa.Table:
    start = date(2025, 1, 1)
    dates = [start + timedelta(days=d) for d in range(days) for _ in range(per_day)]
    return pa.table({
        "customer_id": list(range(per_day)) * days,
        "as_of_date": pa.array(dates, pa.date32()),
        LABEL: [i % 2 for i in range(days * per_day)],
    })


def test_the_time_split_leaves_gaps_of_at_least_the_horizon():
    data = _churn()
    data["split"].update(sample_every_days=1)
    spec = parse_spec(data)  # horizon 30, validation 14, test 14
    parts = split(spec, _daily_table(120))
    ends = {name: (min(t["as_of_date"].to_pylist()), max(t["as_of_date"].to_pylist())) for name, t in parts.items()}
    assert ends["test"][1] == date(2025, 1, 1) + timedelta(days=119)
    assert (ends["test"][1] - ends["test"][0]).days + 1 == 14
    assert (ends["validation"][1] - ends["validation"][0]).days + 1 == 14
    # a label at t is known at t + horizon: it must be known before the next window starts
    assert ends["validation"][0] - ends["train"][1] > timedelta(days=30)
    assert ends["test"][0] - ends["validation"][1] > timedelta(days=30)
    assert sum(t.num_rows for t in parts.values()) == 20 * (120 - 2 * 30)


def test_sampling_every_k_days_thins_only_the_training_window():
    data = _churn()
    data["split"].update(sample_every_days=3)
    parts = split(parse_spec(data), _daily_table(120))
    train_days = sorted(set(parts["train"]["as_of_date"].to_pylist()))
    assert len(train_days) > 3 and all((b - a).days == 3 for a, b in zip(train_days, train_days[1:]))
    assert len(set(parts["test"]["as_of_date"].to_pylist())) == 14


def test_too_short_a_history_says_how_much_is_needed():
    with pytest.raises(DataError, match=r"needs at least 89 days .* has 60"):
        split(parse_spec(_churn()), _daily_table(60))
