"""Reason codes: how much each feature moved a row's score, in the model's raw output (log-odds).

The one place contributions are computed. Every candidate kind explains itself with its `contributions`
method: LightGBM with TreeSHAP, the logistic baseline with the exact contributions of its linear model,
the MLP with DeepSHAP over its embedded inputs. For every row, base + the sum of the contributions is the
raw output, and predict_proba is the sigmoid of the raw output. `top_reasons` turns contributions into the
rows of ml.prediction_reasons; `mean_abs_contributions` is the global summary a model card shows.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from ml.core.errors import TidemarkError

MISSING = "missing"  # how a null feature value reads in a reason

REASONS_SCHEMA = pa.schema([
    pa.field("row", pa.int64()), pa.field("reason_rank", pa.int32()), pa.field("feature", pa.string()),
    pa.field("feature_value", pa.string()), pa.field("contribution", pa.float64()),
    pa.field("base_value", pa.float64()),
])


class ExplainError(TidemarkError, ValueError):
    """Contributions cannot be computed or do not fit the rows they explain."""


@dataclass
class Contributions:
    """The additive explanation of some rows: for each row, base + values.sum() == raw."""

    values: np.ndarray  # (n_rows, n_features), in the order of `features`
    features: list[str]  # FeatureSchema.columns order
    base: np.ndarray  # (n_rows,)
    raw: np.ndarray  # (n_rows,) the model's raw output (log-odds)

    def __len__(self) -> int:
        return len(self.raw)


def contributions(model: Any, X: Any) -> Contributions:
    """The contributions of each feature to each row's raw output, for any fitted candidate.

    X is what the model's predict_proba takes: an Arrow table or record batch, or a pandas frame, holding its
    feature columns.
    """
    explain = getattr(model, "contributions", None)
    features = list(getattr(getattr(model, "features", None), "columns", ()))
    if explain is None or not features:
        raise ExplainError(f"{type(model).__name__} is not a fitted candidate with a contributions method; "
                           "explain a model from ml.training.candidates")
    if len(X) == 0:
        return Contributions(np.empty((0, len(features))), features, np.empty(0), np.empty(0))
    values, base, raw = (np.asarray(a, dtype=np.float64) for a in explain(X))
    if values.shape != (len(X), len(features)) or base.shape != (len(X),) or raw.shape != (len(X),):
        raise ExplainError(f"{type(model).__name__}.contributions returned values of shape {values.shape} for "
                           f"{len(X)} rows and {len(features)} features; it must return one value per feature")
    return Contributions(values, features, base, raw)


def mean_abs_contributions(model: Any, X: Any, max_rows: int = 2000, seed: int = 0) -> dict[str, float]:
    """The global summary: each feature's mean |contribution| over at most `max_rows` rows of X (a fixed-seed
    sample), largest first."""
    n = len(X)
    if n > max_rows:
        rows = np.sort(np.random.default_rng(seed).choice(n, max_rows, replace=False))
        X = X.iloc[rows] if hasattr(X, "iloc") else X.take(pa.array(rows))
    c = contributions(model, X)
    means = np.abs(c.values).mean(axis=0) if len(c) else np.zeros(len(c.features))
    order = sorted(range(len(c.features)), key=lambda j: (-means[j], j))
    return {c.features[j]: float(means[j]) for j in order}


def top_reasons(c: Contributions, X: Any, k: int) -> pa.Table:
    """The k largest contributions in absolute value of each row, as a table with the columns of
    `REASONS_SCHEMA`: `row` (the row of X), `reason_rank` (1 the largest), `feature`, `feature_value` (the row's
    value as text, `format_values`), `contribution` and `base_value`.

    Contributions of exactly zero (a feature the model did not use for that row) are not reasons, so a row
    can have fewer than k. Ties keep the order of the features.
    """
    if k < 0:
        raise ExplainError(f"k must be 0 or more, got {k}")
    if len(X) != len(c):
        raise ExplainError(f"{len(c)} rows of contributions cannot explain {len(X)} rows of X")
    k = min(k, len(c.features))
    if k == 0 or len(c) == 0:
        return REASONS_SCHEMA.empty_table()
    order = np.argsort(-np.abs(c.values), axis=1, kind="stable")[:, :k]  # (rows, k) feature positions
    picked = np.take_along_axis(c.values, order, axis=1)
    rows, ranks = np.nonzero(picked != 0.0)  # row-major: by row, then rank
    features = order[rows, ranks]
    text = np.empty(len(rows), dtype=object)
    for j in np.unique(features):
        chosen = features == j
        text[chosen] = format_values(_column(X, c.features[j]).take(pa.array(rows[chosen]))).to_numpy(
            zero_copy_only=False)
    return pa.table({
        "row": pa.array(rows, pa.int64()),
        "reason_rank": pa.array(ranks + 1, pa.int32()),
        "feature": pa.array(np.asarray(c.features, dtype=object)[features], pa.string()),
        "feature_value": pa.array(text, pa.string()),
        "contribution": pa.array(c.values[rows, features], pa.float64()),
        "base_value": pa.array(c.base[rows], pa.float64()),
    }, schema=REASONS_SCHEMA)


def format_values(values: pa.Array | pa.ChunkedArray) -> pa.Array:
    """Feature values as the text a reason shows: whole numbers without decimals, other numbers with two decimals
    (three significant digits below 1), text and dates as they are, null and NaN as "missing"."""
    values = values.combine_chunks() if isinstance(values, pa.ChunkedArray) else values
    kind = values.type
    if pa.types.is_floating(kind) or pa.types.is_decimal(kind):
        numbers = pc.cast(values, pa.float64()).to_numpy(zero_copy_only=False)  # NaN where null
        with np.errstate(invalid="ignore"):
            whole = np.isfinite(numbers) & (numbers == np.round(numbers)) & (np.abs(numbers) < 1e15)
        text = pc.cast(pa.array(np.where(whole, numbers, 0).astype(np.int64)), pa.string()).to_numpy(
            zero_copy_only=False)
        text[np.isnan(numbers)] = MISSING
        rest = np.flatnonzero(~whole & np.isfinite(numbers))
        with np.errstate(divide="ignore"):  # two decimals, or three significant digits below 1
            places = np.where(np.abs(numbers[rest]) >= 1, 2, 2 - np.floor(np.log10(np.abs(numbers[rest])))).astype(int)
        text[rest] = [_trimmed("%.*f" % pair) for pair in zip(places.tolist(), numbers[rest].tolist())]
        infinite = np.isinf(numbers)
        text[infinite] = [str(v) for v in numbers[infinite].tolist()]
        return pa.array(text, pa.string())
    if pa.types.is_boolean(kind):
        text = pc.if_else(values, "true", "false")
    else:
        text = pc.cast(values, pa.string())
    return pc.fill_null(text, MISSING)


def _trimmed(number: str) -> str:
    """A number's text without trailing zeros after its decimal point."""
    return number.rstrip("0").rstrip(".") if "." in number else number


def _column(X: Any, name: str) -> pa.Array | pa.ChunkedArray:
    """One column of X (Arrow or pandas) as Arrow, null where missing."""
    if isinstance(X, (pa.Table, pa.RecordBatch)):
        return X.column(name)
    try:
        return pa.array(X[name], from_pandas=True)
    except (pa.ArrowInvalid, pa.ArrowTypeError):  # a column mixing types reads as its text
        return pa.array(X[name].astype("string"), from_pandas=True)
