"""Fairness per group: selection rate, TPR, FPR and calibration per value of each of the spec's fairness
attributes, with the demographic-parity and equalized-odds differences between the groups.

The per-group rates and the differences come from fairlearn (MetricFrame, demographic_parity_difference,
equalized_odds_difference). A group with fewer than `min_group_rows` rows keeps its counts but gets no rates,
and the differences are taken over the groups that have enough rows. Every value is a plain float or None:
an undefined rate (a TPR without positives) is None, never NaN.

The report is stored with the version (fairness.json) and in ml.fairness_metrics: source 'test' for a
version's test rows, source 'realized' for a day's scores once its labels matured.
"""

from __future__ import annotations

import math
from datetime import date, datetime
from typing import Any, Iterable, Literal

import numpy as np
import pandas as pd
import pyarrow as pa
from fairlearn.metrics import (
    MetricFrame,
    demographic_parity_difference,
    equalized_odds_difference,
    false_positive_rate,
    selection_rate,
    true_positive_rate,
)

from ml.core.errors import TidemarkError
from ml.core.settings import Settings
from ml.core.tables import arrow_schema, fairness_metrics
from ml.core.warehouse import Warehouse
from ml.training.metrics import MISSING_SEGMENT, _check, _ece, _reliability

FAIRNESS_TABLE = fairness_metrics.fullname
SOURCES = ("test", "realized")
CALIBRATION_BINS = 10
DIFFERENCES = ("demographic_parity_difference", "equalized_odds_difference")


class FairnessError(TidemarkError, ValueError):
    """Fairness cannot be computed or stored as asked; the message names the columns or keys at fault."""


def attribute_frame(table: pa.Table, attributes: Iterable[str], relation: str) -> pd.DataFrame:
    """The fairness attributes of `table`'s rows as a frame; FairnessError naming the missing ones and `relation`."""
    attributes = list(attributes)
    missing = [name for name in attributes if name not in table.column_names]
    if missing:
        raise FairnessError(f"fairness attributes {missing} are not columns of {relation} (its columns: "
                            f"{table.column_names}); fix fairness.attributes in the spec or add them to the relation")
    return table.select(attributes).to_pandas()


def _num(value: Any) -> float | None:
    value = float(value)
    return value if math.isfinite(value) else None


def _group_values(column: pd.Series) -> np.ndarray:
    """Each row's group as text; a missing value is its own group, MISSING_SEGMENT."""
    codes, values = pd.factorize(column, use_na_sentinel=True)
    names = np.asarray([str(v) for v in values] + [MISSING_SEGMENT], dtype=object)  # code -1 takes the last
    return names[codes]


def _group(y: np.ndarray, p: np.ndarray, min_rows: int) -> dict[str, Any]:
    """A group's counts, with its mean score, observed rate and ECE when it has at least `min_rows` rows; the
    decision rates are filled in from fairlearn once the groups are compared."""
    stats = {"rows": len(y), "positives": int(y.sum()), "selection_rate": None, "tpr": None, "fpr": None,
             "mean_score": None, "observed_rate": None, "ece": None}
    if len(y) >= min_rows:
        stats.update(mean_score=_num(p.mean()), observed_rate=_num(y.mean()),
                     ece=_num(_ece(_reliability(y, p, CALIBRATION_BINS))))
    return stats


def _tally(y: np.ndarray, y_hat: np.ndarray, groups: np.ndarray) -> pd.DataFrame:
    """The rows counted per (group, label, decision): fairlearn scores these with the counts as sample weights,
    which gives the rates of the rows themselves at the cost of a few rows per group."""
    frame = pd.DataFrame({"group": groups, "y": y.astype(np.int64), "y_hat": y_hat.astype(np.int64)})
    return frame.groupby(["group", "y", "y_hat"]).size().rename("n").reset_index()


def _rates(tally: pd.DataFrame) -> pd.DataFrame:
    """Selection rate, TPR and FPR of each group of a tally (fairlearn's MetricFrame), one row per group."""
    metrics = {"selection_rate": selection_rate, "tpr": true_positive_rate, "fpr": false_positive_rate}
    frame = MetricFrame(metrics=metrics, y_true=tally["y"], y_pred=tally["y_hat"],
                        sensitive_features=tally["group"],
                        sample_params={name: {"sample_weight": tally["n"]} for name in metrics})
    return frame.by_group


def _difference(function, tally: pd.DataFrame) -> float | None:
    """A fairlearn between-groups difference over a tally's groups; None with fewer than two groups."""
    if tally["group"].nunique() < 2:
        return None
    return _num(function(tally["y"], tally["y_hat"], sensitive_features=tally["group"], sample_weight=tally["n"]))


def _attribute(y: np.ndarray, y_hat: np.ndarray, p: np.ndarray, column: pd.Series, min_rows: int) -> dict:
    """The report of one attribute: its groups and the differences between them."""
    groups = _group_values(column)
    names, codes = np.unique(groups, return_inverse=True)
    found = {value: _group(y[codes == code], p[codes == code], min_rows) for code, value in enumerate(names.tolist())}
    sized = [value for value, stats in found.items() if stats["rows"] >= min_rows]
    # Equalized odds compares TPR and FPR, so its groups must hold both classes.
    both = [value for value in sized if 0 < found[value]["positives"] < found[value]["rows"]]
    tally = _tally(y, y_hat, groups)
    tally = tally[tally["group"].isin(sized)]
    if sized:
        rates = _rates(tally)
        for value in sized:
            stats = found[value]
            stats["selection_rate"] = _num(rates.loc[value, "selection_rate"])
            # fairlearn reads a rate without its denominator as 0; it is undefined
            stats["tpr"] = _num(rates.loc[value, "tpr"]) if stats["positives"] else None
            stats["fpr"] = _num(rates.loc[value, "fpr"]) if stats["positives"] < stats["rows"] else None
    dp = _difference(demographic_parity_difference, tally)
    eo = _difference(equalized_odds_difference, tally[tally["group"].isin(both)])
    notes = []
    if dp is None:
        notes.append(f"{len(sized)} group(s) with at least {min_rows} rows: no demographic-parity difference")
    if eo is None:
        notes.append(f"{len(both)} group(s) with at least {min_rows} rows and both classes: "
                     "no equalized-odds difference")
    left_out = [value for value in found if value not in both]
    if left_out and eo is not None:
        notes.append(f"groups {left_out} have fewer than {min_rows} rows or one class and are not compared")
    return {"groups": found, "demographic_parity_difference": dp, "equalized_odds_difference": eo,
            "compared": {"demographic_parity": sized, "equalized_odds": both}, "note": "; ".join(notes) or None}


def fairness_report(y: Any, p: Any, threshold: float, groups: pd.DataFrame, min_group_rows: int) -> dict:
    """Per attribute (each column of `groups`): its groups' rows, positives, selection rate, TPR, FPR, mean
    score, observed rate and ECE at the decision `p >= threshold`, and the demographic-parity and
    equalized-odds differences (fairlearn's, between groups) over the groups with at least `min_group_rows`
    rows (and, for equalized odds, both classes). Rates of smaller groups and differences over fewer than
    two groups are None."""
    y_arr, p_arr = _check(y, p)
    if not 0.0 <= threshold <= 1.0:
        raise FairnessError(f"threshold must be in [0, 1]; got {threshold!r}")
    if min_group_rows < 1:
        raise FairnessError(f"min_group_rows must be at least 1; got {min_group_rows}")
    if not isinstance(groups, pd.DataFrame) or len(groups) != len(y_arr):
        got = f"{len(groups)} rows" if isinstance(groups, pd.DataFrame) else type(groups).__name__
        raise FairnessError(f"groups must be a DataFrame with one row per score ({len(y_arr)}); got {got}")
    y_hat = (p_arr >= threshold).astype(np.int8)
    return {str(name): _attribute(y_arr, y_hat, p_arr, groups[name], min_group_rows) for name in groups.columns}


def differences(report: dict) -> dict[str, dict[str, float | None]]:
    """Each attribute's demographic-parity and equalized-odds differences, without the groups."""
    return {name: {key: entry.get(key) for key in DIFFERENCES} for name, entry in report.items()}


# -- the warehouse ------------------------------------------------------------------------------------
def fairness_rows(report: dict, *, model_name: str, model_version: str | None, as_of_date: date | str | None,
                  source: Literal["test", "realized"], computed_at: datetime) -> pa.Table:
    """One row of ml.fairness_metrics per attribute and group of a report, with its attribute's differences."""
    if source not in SOURCES:
        raise FairnessError(f"source must be one of {SOURCES}; got {source!r}")
    day = date.fromisoformat(as_of_date[:10]) if isinstance(as_of_date, str) else as_of_date
    rows = []
    for attribute, entry in report.items():
        for value, stats in entry["groups"].items():
            rows.append({
                "model_name": model_name, "model_version": model_version, "as_of_date": day, "source": source,
                "attribute": attribute, "group_value": value,
                **{key: stats.get(key) for key in ("rows", "positives", "selection_rate", "tpr", "fpr",
                                                   "mean_score", "observed_rate")},
                **{key: entry.get(key) for key in DIFFERENCES}, "computed_at": computed_at,
            })
    return pa.Table.from_pylist(rows, schema=arrow_schema(fairness_metrics))


def write_fairness(settings: Settings, rows: pa.Table, *, model_name: str, source: Literal["test", "realized"],
                   model_version: str | None = None, as_of_date: date | None = None) -> int:
    """Replace one partition of ml.fairness_metrics with `rows`: (model_name, model_version, source) for 'test'
    rows, (model_name, as_of_date, source) for 'realized' ones. Returns the rows written."""
    if source == "test" and model_version is not None:
        where = {"model_name": model_name, "model_version": model_version, "source": source}
    elif source == "realized" and as_of_date is not None:
        where = {"model_name": model_name, "as_of_date": as_of_date, "source": source}
    else:
        raise FairnessError(f"fairness rows of source {source!r} need model_version (source 'test') or "
                            f"as_of_date (source 'realized'); got model_version={model_version!r}, "
                            f"as_of_date={as_of_date!r}")
    with Warehouse.connect(settings) as wh:
        return wh.replace_rows(FAIRNESS_TABLE, rows.schema, [(where, rows)])
