"""The pure parts of `spec check`: near names, the label and horizon problems, and how a problem reads."""

from __future__ import annotations

import yaml

from ml.core.spec import SPEC_DIR, parse_spec
from ml.core.spec_check import Problem, horizon_problem, label_problem, near_names


def _churn(horizon: int):
    data = yaml.safe_load((SPEC_DIR / "churn.yaml").read_text())
    data["label"]["horizon_days"] = horizon
    return parse_spec(data)


def test_near_names_offer_the_models_spelled_alike_closest_first():
    models = ["churn_labels", "customer_features_daily", "stg_acme__clients", "stg_acme__contracts"]
    assert near_names("stg_acme_clients", models) == ["stg_acme__clients", "stg_acme__contracts"]
    assert near_names("churn_label", models) == ["churn_labels"]
    assert near_names("invoices", models) == []


def test_a_binary_label_with_both_classes_is_no_problem():
    assert label_problem("m", "churned", [(0, 90), (1, 10)]) is None
    assert label_problem("m", "churned", [(False, 3), (True, 4)]) is None


def test_a_label_that_is_not_binary_names_the_values_seen_and_how_to_make_it_binary():
    counted = label_problem("stg_x", "churned", [(0, 5), (1, 4), (2, 1)])
    assert counted.message == "label.column 'churned' of stg_x is not binary: it holds 0, 1, 2"
    assert "cast(churned > 0 as integer)" in counted.fix
    text = label_problem("stg_x", "churn", [("No", 5), ("Yes", 4)])
    assert text.message.endswith("it holds 'No', 'Yes'")
    assert "cast(case churn when 'yes' then 1 when 'no' then 0 end as integer)" in text.fix
    many = label_problem("stg_x", "amount", [(v, 1) for v in range(10)], more=True)
    assert many.message.endswith("it holds 0, 1, 2, 3, 4, 5, 6, 7, 8, 9, ...")


def test_a_label_of_one_class_has_nothing_to_learn():
    problem = label_problem("stg_x", "churned", [(0, 1_200)])
    assert problem.message == "label.column 'churned' of stg_x is 0 on all 1,200 labelled rows: there is nothing to learn"


def test_a_horizon_other_than_the_declared_one_names_both_numbers():
    assert horizon_problem(_churn(30), [30], "its horizon_days column") is None
    assert horizon_problem(_churn(30), [], "") is None
    problem = horizon_problem(_churn(90), [30], "its horizon_days column")
    assert problem.message == ("label.horizon_days is 90 in the spec but churn_labels declares 30 (its horizon_days "
                               "column): labels would leak across the split")
    assert problem.fix.startswith("set label.horizon_days: 30 in the spec")
    mixed = horizon_problem(_churn(30), [30, 14], "its horizon_days column")
    assert "declares 14, 30" in mixed.message and "with one horizon, 30 days" in mixed.fix


def test_a_problem_reads_as_its_message_then_its_fix():
    assert str(Problem("the dbt manifest x does not exist", "run `python -m ml dbt parse`")) == (
        "the dbt manifest x does not exist\n    fix: run `python -m ml dbt parse`")
