"""Known-answer tests for ml.training.metrics: metrics, calibration, threshold, bootstrap, segments, importance."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
from sklearn.calibration import calibration_curve
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import f1_score, precision_score, recall_score, roc_auc_score

from ml.core.metric_names import FLOOR_METRICS, SCORE_METRICS
from ml.training.metrics import (
    METRICS,
    MetricError,
    choose_threshold,
    evaluate,
    feature_importance,
    paired_bootstrap,
    score,
    segment_regressions,
)


def _labels(n: int, positives: int, seed: int = 0) -> np.ndarray:
    y = np.zeros(n, dtype=int)
    y[np.random.default_rng(seed).choice(n, positives, replace=False)] = 1
    return y


def _logistic_data(n: int, seed: int, intercept: float = -1.5) -> tuple[np.ndarray, np.ndarray]:
    """Labels drawn from their own true probabilities, so p is calibrated and informative."""
    rng = np.random.default_rng(seed)
    p = 1.0 / (1.0 + np.exp(-(1.5 * rng.normal(size=n) + intercept)))
    return (rng.random(n) < p).astype(int), p


# --- overall metrics -------------------------------------------------------------------------


@pytest.mark.parametrize(("positives", "lift"), [(100, 10.0), (250, 4.0), (50, 10.0)])
def test_perfect_ranker_has_auc_one_and_maximal_lift(positives: int, lift: float) -> None:
    y = _labels(1000, positives)
    p = np.where(y == 1, 0.9, 0.1) + np.random.default_rng(1).uniform(-0.05, 0.05, 1000)
    result = evaluate(y, p, threshold=0.5)
    assert result["roc_auc"] == 1.0 and result["pr_auc"] == pytest.approx(1.0)
    # Top decile is 100 rows: all positive when positives >= 100 (lift = 1 / base rate), else 10x.
    assert result["lift_top_decile"] == pytest.approx(lift)
    if positives >= 100:
        assert result["lift_top_decile"] == pytest.approx(1 / result["base_rate"])
    assert (result["n"], result["positives"], result["precision"], result["recall"]) == (1000, positives, 1.0, 1.0)


def test_constant_scorer_is_uninformative() -> None:
    y = _labels(1000, 200)
    result = evaluate(y, np.full(1000, 0.2), threshold=0.5)
    assert result["roc_auc"] == 0.5
    assert result["lift_top_decile"] == pytest.approx(1.0)  # ties at the cutoff share the decile pro rata
    assert result["pr_auc"] == pytest.approx(0.2)
    assert result["brier"] == pytest.approx(0.8 * 0.04 + 0.2 * 0.64)
    assert (result["precision"], result["recall"], result["f1"]) == (0.0, 0.0, 0.0)


def test_ece_is_small_when_calibrated_and_large_when_shifted() -> None:
    rng = np.random.default_rng(2)
    p = rng.uniform(0.05, 0.75, 50_000)
    y = (rng.random(50_000) < p).astype(int)
    calibrated = evaluate(y, p, threshold=0.5)
    shifted = evaluate(y, p + 0.2, threshold=0.5)
    assert calibrated["ece"] < 0.02
    assert shifted["ece"] > 0.15 and shifted["ece"] == pytest.approx(0.2, abs=0.02)


def test_reliability_table_covers_every_row_and_matches_calibration_curve() -> None:
    y, p = _logistic_data(5000, seed=3)
    table = evaluate(y, p, threshold=0.5, n_bins=10)["reliability"]
    assert len(table) == 10 and sum(b["n"] for b in table) == 5000
    assert table[0]["bin_low"] == 0.0 and table[-1]["bin_high"] == 1.0
    filled = [b for b in table if b["n"]]
    prob_true, prob_pred = calibration_curve(y, p, n_bins=10, strategy="uniform")
    np.testing.assert_allclose([b["observed_rate"] for b in filled], prob_true)
    np.testing.assert_allclose([b["mean_score"] for b in filled], prob_pred)
    assert all(b["mean_score"] is None and b["observed_rate"] is None for b in table if not b["n"])


def test_threshold_metrics_match_sklearn_and_score_at_the_threshold_counts_as_positive() -> None:
    y, p = _logistic_data(3000, seed=4)
    threshold = float(np.sort(p)[-400])  # exactly one score value: that row must be predicted positive
    result = evaluate(y, p, threshold=threshold)
    y_hat = p >= threshold
    assert y_hat.sum() == 400
    assert result["precision"] == pytest.approx(precision_score(y, y_hat))
    assert result["recall"] == pytest.approx(recall_score(y, y_hat))
    assert result["f1"] == pytest.approx(f1_score(y, y_hat))
    assert result["roc_auc"] == pytest.approx(roc_auc_score(y, p))
    assert result["score_min"] == p.min() and result["score_max"] == p.max()


def test_max_f1_threshold_is_the_best_cut_and_beats_half_on_imbalanced_data() -> None:
    y, p = _logistic_data(600, seed=5, intercept=-3.5)
    assert 0.02 < y.mean() < 0.15
    chosen = choose_threshold(y, p, "max_f1")
    best = max(f1_score(y, p >= t) for t in p[y == 1])  # the best cut always sits at a positive's score
    assert f1_score(y, p >= chosen) == pytest.approx(best)
    assert f1_score(y, p >= chosen) > f1_score(y, p >= 0.5) + 0.05
    assert choose_threshold(y, p, "fixed", 0.3) == 0.3


def test_score_matches_sklearn_and_is_nan_when_undefined() -> None:
    y, p = _logistic_data(1000, seed=6)
    assert score("roc_auc", y, p) == pytest.approx(roc_auc_score(y, p))
    assert set(METRICS) == {"roc_auc", "pr_auc", "log_loss", "brier"}
    assert not METRICS["log_loss"].higher_is_better and METRICS["pr_auc"].higher_is_better
    assert np.isnan(score("roc_auc", np.zeros(10, int), np.linspace(0, 1, 10)))
    assert score("brier", np.zeros(4, int), np.full(4, 0.5)) == pytest.approx(0.25)


def test_metrics_agree_with_the_names_a_spec_may_use_and_their_directions() -> None:
    assert {name: m.higher_is_better for name, m in METRICS.items()} == dict(SCORE_METRICS)
    y, p = _logistic_data(4000, seed=16)
    noisy = np.clip(p + np.random.default_rng(17).normal(0, 0.3, 4000), 0.0, 1.0)
    good, bad = evaluate(y, p, threshold=0.3), evaluate(y, noisy, threshold=0.3)
    for name, higher_is_better in FLOOR_METRICS.items():  # every floor names a number evaluate() reports
        assert isinstance(good[name], float), name
        assert (good[name] > bad[name]) is higher_is_better, name  # the better model scores better by the table


# --- segments --------------------------------------------------------------------------------


def _segment_frame(n: int, seed: int) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    return pd.DataFrame(
        {
            "plan": rng.choice(["basic", "standard", "premium"], n),
            "region": rng.choice(["north", "south", "east", "west"], n),
        }
    )


def test_segments_report_per_value_metrics_and_blank_small_or_single_class_groups() -> None:
    y, p = _logistic_data(2000, seed=7)
    segments = _segment_frame(2000, seed=7)
    segments.loc[:29, "region"] = "tiny"  # 30 rows: below min_segment_rows
    segments.loc[30:99, "region"] = None  # 70 rows: missing values get their own key
    y[30:99] = 0  # and hold a single class
    result = evaluate(y, p, threshold=0.5, segments=segments, min_segment_rows=50)
    json.dumps(result, allow_nan=False)  # JSON-ready: NaN became None
    plans = result["segments"]["plan"]
    assert set(plans) == {"basic", "premium", "standard"}
    assert sum(v["n"] for v in plans.values()) == 2000
    basic = segments["plan"].to_numpy() == "basic"
    assert plans["basic"]["roc_auc"] == pytest.approx(roc_auc_score(y[basic], p[basic]))
    assert plans["basic"]["positives"] == int(y[basic].sum())
    regions = result["segments"]["region"]
    assert regions["tiny"]["n"] == 30 and regions["tiny"]["roc_auc"] is None and regions["tiny"]["brier"] is None
    missing = regions["<missing>"]
    assert (missing["n"], missing["positives"], missing["roc_auc"], missing["pr_auc"]) == (70, 0, None, None)
    assert missing["brier"] == pytest.approx(float(np.mean(p[30:100] ** 2)))


def test_segment_regressions_finds_only_the_planted_bad_segment() -> None:
    rng = np.random.default_rng(8)
    y, p_champion = _logistic_data(6000, seed=8)
    segments = _segment_frame(6000, seed=9)[["plan"]]  # regions would inherit the damage to one plan
    bad = segments["plan"].to_numpy() == "basic"
    p_challenger = p_champion.copy()
    p_challenger[bad] = rng.uniform(0, 1, bad.sum())  # pure noise on one plan only
    champion = evaluate(y, p_champion, threshold=0.5, segments=segments)
    challenger = evaluate(y, p_challenger, threshold=0.5, segments=segments)
    for metric in ("roc_auc", "brier", "log_loss"):
        found = segment_regressions(challenger, champion, metric=metric, tolerance=0.01)
        assert [(r["column"], r["value"]) for r in found] == [("plan", "basic")], metric
        assert found[0]["delta"] < -0.01 and found[0]["n"] == int(bad.sum())
    auc = segment_regressions(challenger, champion, metric="roc_auc", tolerance=0.01)[0]
    assert auc["delta"] == pytest.approx(auc["challenger"] - auc["champion"])
    assert segment_regressions(challenger, champion, metric="roc_auc", tolerance=0.5) == []
    assert segment_regressions(champion, challenger, metric="roc_auc", tolerance=0.01) == []


# --- paired bootstrap ------------------------------------------------------------------------


def test_bootstrap_of_identical_models_is_exactly_zero() -> None:
    y, p = _logistic_data(2000, seed=10)
    result = paired_bootstrap(y, p, p, metric="roc_auc", n_boot=50)
    assert (result["diff"], result["ci_low"], result["ci_high"], result["p_better"]) == (0.0, 0.0, 0.0, 0.0)
    assert result["n_boot"] == 50 and result["challenger"] == result["champion"]
    json.dumps(result, allow_nan=False)


@pytest.mark.parametrize("metric", ["roc_auc", "log_loss"])
def test_bootstrap_detects_a_clearly_better_challenger_in_either_orientation(metric: str) -> None:
    y, p = _logistic_data(2000, seed=11)
    noisy = np.clip(p + np.random.default_rng(12).normal(0, 0.25, 2000), 0.01, 0.99)
    better = paired_bootstrap(y, p, noisy, metric=metric, n_boot=100)
    assert better["ci_low"] > 0 and better["diff"] > 0 and better["p_better"] == 1.0
    assert better["ci_low"] <= better["diff"] <= better["ci_high"]
    if metric == "log_loss":
        assert better["challenger"] < better["champion"]  # lower loss reads as a positive difference
    worse = paired_bootstrap(y, noisy, p, metric=metric, n_boot=100)
    assert worse["diff"] == pytest.approx(-better["diff"]) and worse["ci_high"] < 0


def test_bootstrap_weights_equal_resampling_rows_and_are_reproducible() -> None:
    y, p_new = _logistic_data(1000, seed=13)
    p_old = np.clip(p_new + np.random.default_rng(14).normal(0, 0.1, 1000), 0, 1)
    result = paired_bootstrap(y, p_new, p_old, metric="pr_auc", n_boot=40, seed=3)
    # Reference: the same draws applied by copying rows.
    diffs = []
    for rng in np.random.default_rng(3).spawn(40):
        rows = rng.integers(0, 1000, size=1000)
        diffs.append(score("pr_auc", y[rows], p_new[rows]) - score("pr_auc", y[rows], p_old[rows]))
    assert result["ci_low"] == pytest.approx(np.quantile(diffs, 0.025), abs=1e-12)
    assert result["ci_high"] == pytest.approx(np.quantile(diffs, 0.975), abs=1e-12)
    assert result == paired_bootstrap(y, p_new, p_old, metric="pr_auc", n_boot=40, seed=3, n_jobs=2)
    assert result != paired_bootstrap(y, p_new, p_old, metric="pr_auc", n_boot=40, seed=4)


def test_bootstrap_skips_single_class_resamples() -> None:
    y = np.zeros(30, dtype=int)
    y[0] = 1  # one positive: about a third of resamples draw no positive at all
    p = np.linspace(0.01, 0.99, 30)
    result = paired_bootstrap(y, p, p[::-1].copy(), metric="roc_auc", n_boot=100)
    assert 15 < result["n_skipped"] < 60 and result["n_boot"] + result["n_skipped"] == 100


# --- feature importance ----------------------------------------------------------------------


@pytest.mark.parametrize("metric", ["roc_auc", "log_loss"])
def test_permutation_importance_ranks_signal_above_noise(metric: str) -> None:
    rng = np.random.default_rng(15)
    X = pd.DataFrame({"noise": rng.normal(size=3000), "signal": rng.normal(size=3000)})
    y = (X["signal"] + 0.5 * rng.normal(size=3000) > 0).astype(int).to_numpy()
    model = LogisticRegression().fit(X, y)
    importance = feature_importance(model, X, y, metric=metric, max_rows=1000)
    assert list(importance) == ["signal", "noise"]
    assert importance["signal"] > 0.1 and abs(importance["noise"]) < 0.01


# --- bad inputs ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("y", "p", "message"),
    [
        ([0, 1, 1], [0.1, 0.2], "y has 3 rows but p has 2"),
        ([0, 1, 1, 0], [0.1, np.nan, 1.5, -0.1], "p has 3 value(s) that are NaN or outside [0, 1]"),
        ([0, 1, 2], [0.1, 0.2, 0.3], "y must be binary 0/1 labels; found values ['0', '1', '2']"),
        ([0, 1], [[0.9, 0.1], [0.2, 0.8]], "predict_proba(X)[:, 1]"),
        ([], [], "non-empty"),
    ],
)
def test_bad_scores_or_labels_are_named(y: list, p: list, message: str) -> None:
    with pytest.raises(MetricError) as err:
        evaluate(y, p, threshold=0.5)
    assert message in str(err.value)


def test_bad_arguments_are_named() -> None:
    y, p = np.array([0, 1, 0, 1]), np.array([0.1, 0.9, 0.2, 0.8])
    with pytest.raises(MetricError, match="unknown metric 'auc'; valid metrics: roc_auc, pr_auc, log_loss, brier"):
        score("auc", y, p)
    with pytest.raises(MetricError, match="unknown metric 'f1'"):
        paired_bootstrap(y, p, p, metric="f1")
    with pytest.raises(MetricError, match="unknown threshold strategy 'youden'; valid: max_f1, fixed"):
        choose_threshold(y, p, "youden")
    with pytest.raises(MetricError, match="'fixed' needs a value"):
        choose_threshold(y, p, "fixed")
    with pytest.raises(MetricError, match="max_f1 needs both classes"):
        choose_threshold(np.zeros(4, int), p)
    with pytest.raises(MetricError, match="threshold must be in"):
        evaluate(y, p, threshold=1.5)
    with pytest.raises(MetricError, match=r"one row per score \(4\); got 3 rows"):
        evaluate(y, p, threshold=0.5, segments=pd.DataFrame({"plan": ["a", "b", "c"]}))
    with pytest.raises(MetricError, match="tolerance must be >= 0"):
        segment_regressions({}, {}, metric="roc_auc", tolerance=-1)
    with pytest.raises(MetricError, match="has no predict_proba"):
        feature_importance(object(), pd.DataFrame({"a": [1.0, 2.0]}), [0, 1])
