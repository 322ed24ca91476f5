"""Evaluation of binary churn scores: metrics, calibration, segments, importance and champion/challenger.

Every function is pure and returns JSON-ready values (plain floats, ints, strings, lists and dicts;
an undefined metric is None). Metrics come from sklearn.metrics; only ECE and lift, which sklearn
does not provide, are assembled here from binned counts.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from functools import partial
from typing import Any, Callable

import numpy as np
import pandas as pd
from joblib import Parallel, delayed
from sklearn.inspection import permutation_importance
from sklearn.metrics import (
    average_precision_score,
    brier_score_loss,
    f1_score,
    log_loss,
    make_scorer,
    precision_recall_curve,
    precision_score,
    recall_score,
    roc_auc_score,
)

from ml.core.errors import TidemarkError
from ml.core.metric_names import SCORE_METRICS

MISSING_SEGMENT = "<missing>"
THRESHOLD_STRATEGIES = ("max_f1", "fixed")


class MetricError(TidemarkError, ValueError):
    """Bad input to an evaluation function; the message says what and how to fix it."""


@dataclass(frozen=True)
class Metric:
    """A score over labels and positive-class probabilities; fn accepts an optional sample_weight."""

    name: str
    fn: Callable[..., float]
    higher_is_better: bool


_SCORERS: dict[str, Callable[..., float]] = {
    "roc_auc": roc_auc_score,
    "pr_auc": average_precision_score,
    "log_loss": partial(log_loss, labels=[0, 1]),
    "brier": partial(brier_score_loss, pos_label=1),
}
# The names and directions are the ones a spec may name (ml.core.metric_names); this adds the functions.
METRICS: dict[str, Metric] = {name: Metric(name, _SCORERS[name], higher) for name, higher in SCORE_METRICS.items()}
RANKING_METRICS = ("roc_auc", "pr_auc")  # undefined unless both classes are present


def _metric(name: str) -> Metric:
    if name not in METRICS:
        raise MetricError(f"unknown metric {name!r}; valid metrics: {', '.join(METRICS)}")
    return METRICS[name]


def _labels(y: Any) -> np.ndarray:
    """y as int8 0/1 after checking it is 1-D, non-empty and binary."""
    y_arr = np.asarray(y)
    if y_arr.ndim != 1 or len(y_arr) == 0:
        raise MetricError(f"y must be a non-empty 1-D array of 0/1 labels; got shape {y_arr.shape}")
    found = pd.unique(y_arr).tolist()
    if not set(found) <= {0, 1}:
        raise MetricError(f"y must be binary 0/1 labels; found values {sorted(map(str, found))[:5]}")
    return y_arr.astype(np.int8)


def _check(y: Any, p: Any) -> tuple[np.ndarray, np.ndarray]:
    """Return (y as int8 0/1, p as float64) after checking shapes, labels and the probability range."""
    y_arr, p_arr = _labels(y), np.asarray(p)
    if p_arr.ndim != 1:
        hint = "; pass the positive-class column, predict_proba(X)[:, 1]" if p_arr.ndim == 2 else ""
        raise MetricError(f"p must be 1-D probabilities of class 1; got shape {p_arr.shape}{hint}")
    if len(y_arr) != len(p_arr):
        raise MetricError(f"y has {len(y_arr)} rows but p has {len(p_arr)}; they must describe the same rows")
    try:
        p_arr = p_arr.astype(np.float64)
    except (TypeError, ValueError) as exc:
        raise MetricError(f"p must be numeric probabilities ({exc})") from None
    bad = int(np.count_nonzero(~((p_arr >= 0.0) & (p_arr <= 1.0))))  # NaN fails both comparisons
    if bad:
        raise MetricError(f"p has {bad} value(s) that are NaN or outside [0, 1]; pass probabilities of class 1")
    return y_arr, p_arr


def _num(x: Any) -> float | None:
    x = float(x)
    return x if math.isfinite(x) else None


def _both_classes(y: np.ndarray) -> bool:
    return 0 < int(y.sum()) < len(y)


def _value(name: str, y: np.ndarray, p: np.ndarray) -> float | None:
    """A metric on checked arrays; None when undefined (a ranking metric over one class)."""
    if name in RANKING_METRICS and not _both_classes(y):
        return None
    return _num(METRICS[name].fn(y, p))


def score(metric: str, y: Any, p: Any) -> float:
    """The named metric of scores p against labels y (NaN when undefined, e.g. AUC with one class)."""
    _metric(metric)
    value = _value(metric, *_check(y, p))
    return float("nan") if value is None else value


def choose_threshold(y: Any, p: Any, strategy: str = "max_f1", value: float | None = None) -> float:
    """Decision threshold: `value` for "fixed", or the score maximizing F1 for "max_f1"."""
    if strategy == "fixed":
        if value is None or not 0.0 <= value <= 1.0:
            raise MetricError(f"strategy 'fixed' needs a value in [0, 1]; got {value!r}")
        return float(value)
    if strategy != "max_f1":
        raise MetricError(f"unknown threshold strategy {strategy!r}; valid: {', '.join(THRESHOLD_STRATEGIES)}")
    y_arr, p_arr = _check(y, p)
    if not _both_classes(y_arr):
        raise MetricError("max_f1 needs both classes in y; use strategy='fixed' instead")
    precision, recall, thresholds = precision_recall_curve(y_arr, p_arr)
    precision, recall = precision[:-1], recall[:-1]  # the last point has no threshold
    total = precision + recall
    f1 = np.divide(2 * precision * recall, total, out=np.zeros_like(total), where=total > 0)
    return float(thresholds[int(np.argmax(f1))])


def _reliability(y: np.ndarray, p: np.ndarray, n_bins: int) -> list[dict[str, Any]]:
    """Equal-width bins over [0, 1] as sklearn's calibration_curve cuts them: bin i holds (i/k, (i+1)/k].

    Bin 0 also holds 0. Empty bins are kept, with None for their mean score and observed rate.
    """
    edges = np.linspace(0.0, 1.0, n_bins + 1)
    ids = np.searchsorted(edges[1:-1], p)
    n = np.bincount(ids, minlength=n_bins)
    sum_p = np.bincount(ids, weights=p, minlength=n_bins)
    sum_y = np.bincount(ids, weights=y, minlength=n_bins)
    return [
        {
            "bin_low": float(edges[i]),
            "bin_high": float(edges[i + 1]),
            "n": int(n[i]),
            "mean_score": float(sum_p[i] / n[i]) if n[i] else None,
            "observed_rate": float(sum_y[i] / n[i]) if n[i] else None,
        }
        for i in range(n_bins)
    ]


def _ece(table: list[dict[str, Any]]) -> float:
    """Expected calibration error: row-weighted mean |observed rate - mean score| over non-empty bins."""
    total = sum(b["n"] for b in table)
    return float(sum(b["n"] * abs(b["observed_rate"] - b["mean_score"]) for b in table if b["n"]) / total)


def _lift_top_decile(y: np.ndarray, p: np.ndarray) -> float | None:
    """Positive rate among the top 10% by score over the base rate; ties at the cutoff count pro rata."""
    base_rate = y.mean()
    if base_rate == 0:
        return None
    k = max(1, math.ceil(0.1 * len(y)))
    cutoff = np.sort(p)[-k]
    above, tied = p > cutoff, p == cutoff
    positives = y[above].sum() + (k - above.sum()) * y[tied].mean()
    return float(positives / k / base_rate)


def _segment_metrics(y: np.ndarray, p: np.ndarray, min_rows: int) -> dict[str, Any]:
    """Counts and every metric of one segment; metrics are None below min_rows rows."""
    values = {name: _value(name, y, p) if len(y) >= min_rows else None for name in METRICS}
    return {"n": len(y), "positives": int(y.sum()), **values}


def _segments(y: np.ndarray, p: np.ndarray, segments: pd.DataFrame, min_rows: int) -> dict[str, Any]:
    if not isinstance(segments, pd.DataFrame) or len(segments) != len(y):
        got = f"{len(segments)} rows" if isinstance(segments, pd.DataFrame) else type(segments).__name__
        raise MetricError(f"segments must be a DataFrame with one row per score ({len(y)}); got {got}")
    result: dict[str, Any] = {}
    for column in segments.columns:
        codes, values = pd.factorize(segments[column], use_na_sentinel=True)
        names = [str(v) for v in values] + [MISSING_SEGMENT]  # code -1 indexes the last name
        result[str(column)] = {
            names[code]: _segment_metrics(y[codes == code], p[codes == code], min_rows)
            for code in sorted(set(codes.tolist()), key=lambda c: names[c])
        }
    return result


def evaluate(
    y: Any,
    p: Any,
    *,
    threshold: float,
    segments: pd.DataFrame | None = None,
    n_bins: int = 10,
    min_segment_rows: int = 50,
) -> dict[str, Any]:
    """Overall, calibration, threshold, lift and per-segment metrics of scores p on labels y."""
    y_arr, p_arr = _check(y, p)
    if not 0.0 <= threshold <= 1.0:
        raise MetricError(f"threshold must be in [0, 1]; got {threshold!r}")
    if n_bins < 1:
        raise MetricError(f"n_bins must be at least 1; got {n_bins}")
    table = _reliability(y_arr, p_arr, n_bins)
    y_hat = (p_arr >= threshold).astype(np.int64)
    result: dict[str, Any] = {"n": len(y_arr), "positives": int(y_arr.sum()), "base_rate": float(y_arr.mean())}
    result.update({name: _value(name, y_arr, p_arr) for name in METRICS})
    result.update(
        ece=_ece(table),
        reliability=table,
        threshold=float(threshold),
        precision=float(precision_score(y_arr, y_hat, zero_division=0)),
        recall=float(recall_score(y_arr, y_hat, zero_division=0)),
        f1=float(f1_score(y_arr, y_hat, zero_division=0)),
        lift_top_decile=_lift_top_decile(y_arr, p_arr),
        score_min=float(p_arr.min()),
        score_max=float(p_arr.max()),
        score_mean=float(p_arr.mean()),
        segments={} if segments is None else _segments(y_arr, p_arr, segments, min_segment_rows),
    )
    return result


def paired_bootstrap(
    y: Any,
    p_challenger: Any,
    p_champion: Any,
    *,
    metric: str,
    n_boot: int = 500,
    seed: int = 0,
    alpha: float = 0.05,
    n_jobs: int = 1,
) -> dict[str, Any]:
    """Challenger-minus-champion difference in `metric` (positive = challenger better) with a paired CI.

    Each resample draws rows with replacement, the same rows for both models, from its own child of
    `seed` (so the result does not depend on n_jobs). The draw reaches sklearn as bootstrap counts in
    sample_weight, which scores exactly like the duplicated rows. Resamples holding one class are
    skipped and counted in n_skipped; the CI is the percentile interval of the kept resamples.
    """
    m = _metric(metric)
    y_arr, p_new = _check(y, p_challenger)
    _, p_old = _check(y, p_champion)
    if not _both_classes(y_arr):
        raise MetricError("paired_bootstrap needs both classes in y")
    if n_boot < 1 or not 0.0 < alpha < 1.0:
        raise MetricError(f"need n_boot >= 1 and 0 < alpha < 1; got n_boot={n_boot}, alpha={alpha}")
    sign = 1.0 if m.higher_is_better else -1.0
    n, positive = len(y_arr), y_arr == 1
    # Rows pre-sorted by each model's score: sklearn's stable argsort then runs in linear time.
    views = [(o, y_arr[o], p[o]) for p in (p_new, p_old) for o in [np.argsort(p, kind="stable")]]

    def one(rng: np.random.Generator) -> float | None:
        counts = np.bincount(rng.integers(0, n, size=n), minlength=n)
        if int(counts[positive].sum()) in (0, n):
            return None
        values = []
        for order, y_sorted, p_sorted in views:
            w = counts[order]
            kept = w > 0  # rows not drawn carry zero weight; leaving them out changes no metric
            values.append(m.fn(y_sorted[kept], p_sorted[kept], sample_weight=w[kept]))
        return sign * (values[0] - values[1])

    children = np.random.default_rng(seed).spawn(n_boot)
    drawn = Parallel(n_jobs=n_jobs, prefer="threads")(delayed(one)(g) for g in children)
    boot = np.asarray([d for d in drawn if d is not None])
    if len(boot) == 0:
        raise MetricError("every bootstrap resample held a single class; the sample is too small to compare")
    challenger, champion = float(m.fn(y_arr, p_new)), float(m.fn(y_arr, p_old))
    return {
        "metric": metric,
        "n_boot": len(boot),
        "n_skipped": n_boot - len(boot),
        "diff": sign * (challenger - champion),
        "ci_low": float(np.quantile(boot, alpha / 2)),
        "ci_high": float(np.quantile(boot, 1 - alpha / 2)),
        "challenger": challenger,
        "champion": champion,
        "p_better": float(np.mean(boot > 0)),
    }


def segment_regressions(
    challenger_eval: dict[str, Any], champion_eval: dict[str, Any], *, metric: str, tolerance: float
) -> list[dict[str, Any]]:
    """Segments where the challenger is worse than the champion by more than `tolerance`, worst first.

    delta is challenger minus champion oriented so that negative means worse; segments where either
    model's metric is undefined (None) are not judged.
    """
    m = _metric(metric)
    if tolerance < 0:
        raise MetricError(f"tolerance must be >= 0; got {tolerance}")
    sign = 1.0 if m.higher_is_better else -1.0
    found = []
    for column, values in challenger_eval.get("segments", {}).items():
        for value, new in values.items():
            old = champion_eval.get("segments", {}).get(column, {}).get(value)
            if old is None or new.get(metric) is None or old.get(metric) is None:
                continue
            delta = sign * (new[metric] - old[metric])
            if delta < -tolerance:
                row = {"column": column, "value": value, "challenger": new[metric], "champion": old[metric]}
                found.append({**row, "delta": delta, "n": new["n"]})
    return sorted(found, key=lambda r: r["delta"])


def feature_importance(
    model: Any,
    X: pd.DataFrame,
    y: Any,
    *,
    metric: str = "roc_auc",
    n_repeats: int = 3,
    seed: int = 0,
    max_rows: int = 20000,
) -> dict[str, float]:
    """Permutation importance per column, largest first: how much worse `metric` gets when it is shuffled.

    Positive means the model relies on the column (for losses the scorer is negated, as in sklearn).
    """
    m = _metric(metric)
    if not isinstance(X, pd.DataFrame):
        raise MetricError(f"X must be a pandas DataFrame; got {type(X).__name__}")
    if not hasattr(model, "predict_proba"):
        raise MetricError(f"model {type(model).__name__} has no predict_proba; it must be a fitted classifier")
    y_arr = np.asarray(y)
    if len(y_arr) != len(X):
        raise MetricError(f"X has {len(X)} rows but y has {len(y_arr)}")
    rows = np.random.default_rng(seed).permutation(len(X))[:max_rows]
    scorer = make_scorer(m.fn, response_method="predict_proba", greater_is_better=m.higher_is_better)
    X_sample, y_sample = X.iloc[np.sort(rows)], _labels(y_arr[np.sort(rows)])
    if metric in RANKING_METRICS and not _both_classes(y_sample):
        raise MetricError(f"{metric} needs both classes in the {len(y_sample)} sampled rows of y")
    result = permutation_importance(
        model, X_sample, y_sample, scoring=scorer, n_repeats=n_repeats, random_state=seed
    )
    pairs = zip(map(str, X.columns), result.importances_mean.tolist())
    return dict(sorted(pairs, key=lambda kv: kv[1], reverse=True))
