"""Known-answer tests for ml.training.fairness: per-group rates, the differences between groups, the stored rows."""

from __future__ import annotations

import json
from datetime import date, datetime

import numpy as np
import pandas as pd
import pyarrow as pa
import pytest
from fairlearn.metrics import (
    MetricFrame,
    demographic_parity_difference,
    equalized_odds_difference,
    false_positive_rate,
    selection_rate,
    true_positive_rate,
)

from ml.core.tables import arrow_schema, fairness_metrics
from ml.training.fairness import (
    FairnessError,
    attribute_frame,
    differences,
    fairness_report,
    fairness_rows,
)
from ml.training.metrics import MISSING_SEGMENT, evaluate

# Group a: 8 rows, 4 positives; at 0.5 it selects 3 positives and 2 negatives.
Y_A, P_A = [1, 1, 1, 1, 0, 0, 0, 0], [0.9, 0.8, 0.7, 0.2, 0.6, 0.55, 0.2, 0.1]
# Group b: 4 rows, 2 positives; it selects 1 positive and no negative.
Y_B, P_B = [1, 1, 0, 0], [0.6, 0.4, 0.4, 0.1]
# Group c: 2 rows, under min_group_rows=4.
Y_C, P_C = [1, 0], [0.9, 0.9]


def _hand_case() -> tuple[np.ndarray, np.ndarray, pd.DataFrame]:
    y = np.array(Y_A + Y_B + Y_C)
    p = np.array(P_A + P_B + P_C)
    groups = pd.DataFrame({"region": ["a"] * 8 + ["b"] * 4 + ["c"] * 2})
    return y, p, groups


def test_rates_per_group_are_the_hand_counts():
    y, p, groups = _hand_case()
    report = fairness_report(y, p, 0.5, groups, min_group_rows=4)
    a, b = report["region"]["groups"]["a"], report["region"]["groups"]["b"]
    assert (a["rows"], a["positives"], b["rows"], b["positives"]) == (8, 4, 4, 2)
    assert a["selection_rate"] == pytest.approx(5 / 8) and b["selection_rate"] == pytest.approx(1 / 4)
    assert a["tpr"] == pytest.approx(3 / 4) and b["tpr"] == pytest.approx(1 / 2)
    assert a["fpr"] == pytest.approx(2 / 4) and b["fpr"] == 0.0
    assert a["mean_score"] == pytest.approx(4.05 / 8) and a["observed_rate"] == 0.5
    assert b["mean_score"] == pytest.approx(1.5 / 4) and b["observed_rate"] == 0.5
    # the group's calibration error is the one evaluate() reports for the group's rows alone
    assert a["ece"] == pytest.approx(evaluate(Y_A, P_A, threshold=0.5)["ece"])


def test_differences_are_the_hand_values_and_fairlearns():
    y, p, groups = _hand_case()
    entry = fairness_report(y, p, 0.5, groups, min_group_rows=4)["region"]
    # selection rates 5/8 and 1/4; TPR 3/4 and 1/2, FPR 1/2 and 0: the worse of the two gaps is FPR's
    assert entry["demographic_parity_difference"] == pytest.approx(5 / 8 - 1 / 4)
    assert entry["equalized_odds_difference"] == pytest.approx(0.5)
    sized = groups["region"].isin(["a", "b"]).to_numpy()  # c is too small to be compared
    y_hat = (p >= 0.5).astype(int)
    assert entry["demographic_parity_difference"] == pytest.approx(
        demographic_parity_difference(y[sized], y_hat[sized], sensitive_features=groups["region"][sized]))
    assert entry["equalized_odds_difference"] == pytest.approx(
        equalized_odds_difference(y[sized], y_hat[sized], sensitive_features=groups["region"][sized]))
    assert entry["compared"] == {"demographic_parity": ["a", "b"], "equalized_odds": ["a", "b"]}


def test_a_small_group_keeps_its_counts_but_gets_no_rates():
    y, p, groups = _hand_case()
    report = fairness_report(y, p, 0.5, groups, min_group_rows=4)
    assert report["region"]["groups"]["c"] == {
        "rows": 2, "positives": 1, "selection_rate": None, "tpr": None, "fpr": None, "mean_score": None,
        "observed_rate": None, "ece": None}
    assert "['c']" in report["region"]["note"]
    # with a smaller bound, c is compared too: it selects both rows, so the selection gap widens to 1 - 1/4
    wider = fairness_report(y, p, 0.5, groups, min_group_rows=2)["region"]
    assert wider["groups"]["c"]["selection_rate"] == 1.0
    assert wider["demographic_parity_difference"] == pytest.approx(0.75)


def test_per_group_rates_and_differences_match_fairlearn_on_many_rows():
    rng = np.random.default_rng(4)
    n = 6_000
    groups = pd.DataFrame({"channel": rng.choice(["organic", "paid", "referral"], n, p=[0.5, 0.3, 0.2]),
                           "region": rng.choice(["north", "south"], n)})
    p = rng.beta(2, 5, n) + np.where(groups["channel"] == "paid", 0.1, 0.0)
    y = (rng.random(n) < p).astype(int)
    report = fairness_report(y, p, 0.3, groups, min_group_rows=50)
    y_hat = (p >= 0.3).astype(int)
    for attribute in ("channel", "region"):
        frame = MetricFrame(metrics={"selection_rate": selection_rate, "tpr": true_positive_rate,
                                     "fpr": false_positive_rate},
                            y_true=y, y_pred=y_hat, sensitive_features=groups[attribute]).by_group
        for value, stats in report[attribute]["groups"].items():
            for name in ("selection_rate", "tpr", "fpr"):
                assert stats[name] == pytest.approx(frame.loc[value, name]), (attribute, value, name)
        entry = report[attribute]
        assert entry["demographic_parity_difference"] == pytest.approx(
            demographic_parity_difference(y, y_hat, sensitive_features=groups[attribute]))
        assert entry["equalized_odds_difference"] == pytest.approx(
            equalized_odds_difference(y, y_hat, sensitive_features=groups[attribute]))
    # the paid channel's scores run 0.1 higher, so it is selected more often than the others
    assert report["channel"]["demographic_parity_difference"] > 0.1
    assert sum(g["rows"] for g in report["channel"]["groups"].values()) == n


def test_a_group_with_one_class_has_no_tpr_and_is_left_out_of_equalized_odds():
    y = np.array([1, 0, 1, 0] * 5 + [0] * 10)
    p = np.array([0.8, 0.3, 0.4, 0.6] * 5 + [0.7] * 5 + [0.1] * 5)
    groups = pd.DataFrame({"g": ["x"] * 20 + ["y"] * 10})
    entry = fairness_report(y, p, 0.5, groups, min_group_rows=5)["g"]
    x, only_negatives = entry["groups"]["x"], entry["groups"]["y"]
    assert only_negatives["tpr"] is None and only_negatives["fpr"] == 0.5 and only_negatives["selection_rate"] == 0.5
    assert x["selection_rate"] == 0.5 and x["tpr"] == 0.5 and x["fpr"] == 0.5
    assert entry["demographic_parity_difference"] == 0.0  # both groups select half their rows
    assert entry["equalized_odds_difference"] is None  # one group with both classes: nothing to compare it with
    assert entry["compared"]["equalized_odds"] == ["x"] and "no equalized-odds difference" in entry["note"]


def test_missing_values_form_their_own_group_and_nothing_is_nan():
    y = np.array([1, 0] * 30)
    p = np.linspace(0.05, 0.95, 60)
    groups = pd.DataFrame({"region": ["north"] * 30 + [None] * 30, "flag": [1] * 60})
    report = fairness_report(y, p, 0.5, groups, min_group_rows=10)
    assert sorted(report["region"]["groups"]) == [MISSING_SEGMENT, "north"]
    assert list(report["flag"]["groups"]) == ["1"]  # integer attributes are grouped by their text
    # one group: no difference to take, given as None with the reason
    assert report["flag"]["demographic_parity_difference"] is None
    assert report["flag"]["equalized_odds_difference"] is None
    assert "1 group(s)" in report["flag"]["note"]
    json.dumps(report, allow_nan=False)  # raises on any NaN
    assert differences(report)["region"] == {
        "demographic_parity_difference": report["region"]["demographic_parity_difference"],
        "equalized_odds_difference": report["region"]["equalized_odds_difference"]}


def test_bad_input_is_named():
    y, p, groups = _hand_case()
    with pytest.raises(FairnessError, match="one row per score"):
        fairness_report(y, p, 0.5, groups.iloc[:3], min_group_rows=4)
    with pytest.raises(FairnessError, match="threshold"):
        fairness_report(y, p, 1.5, groups, min_group_rows=4)
    table = pa.table({"customer_id": [1, 2], "region": ["a", "b"]})
    with pytest.raises(FairnessError, match=r"\['acquisition_channel'\] are not columns of marts.customer_features"):
        attribute_frame(table, ["region", "acquisition_channel"], "marts.customer_features_daily")
    assert attribute_frame(table, ["region"], "x")["region"].tolist() == ["a", "b"]


def test_rows_have_the_table_schema_and_one_row_per_group():
    y, p, groups = _hand_case()
    report = fairness_report(y, p, 0.5, groups, min_group_rows=4)
    rows = fairness_rows(report, model_name="churn", model_version="v0003", as_of_date="2025-02-20",
                         source="test", computed_at=datetime(2025, 2, 21))
    assert rows.schema == arrow_schema(fairness_metrics)
    found = {r["group_value"]: r for r in rows.to_pylist()}
    assert sorted(found) == ["a", "b", "c"]
    assert found["a"]["as_of_date"] == date(2025, 2, 20) and found["a"]["source"] == "test"
    assert (found["a"]["rows"], found["a"]["tpr"], found["c"]["tpr"]) == (8, 0.75, None)
    assert [r["demographic_parity_difference"] for r in found.values()] == pytest.approx([0.375] * 3)
    with pytest.raises(FairnessError, match="source"):
        fairness_rows(report, model_name="churn", model_version="v1", as_of_date=None, source="live",
                      computed_at=datetime(2025, 2, 21))
