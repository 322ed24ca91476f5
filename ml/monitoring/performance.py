"""Realized performance once labels mature, and the drift and performance history the triggers read.

A day's stored predictions are scored against its labels when they exist, one replaceable partition
per (model_name, as_of_date) of ml.model_performance.
"""

from __future__ import annotations

import logging
from datetime import date, timedelta

import numpy as np
import pyarrow as pa

from ml.core.settings import Settings
from ml.core.spec import IDENTIFIER, ModelSpec
from ml.core.warehouse import Warehouse
from ml.monitoring.drift import (
    DATASET_ROW,
    DRIFT_METRICS,
    MODEL_PERFORMANCE,
    PREDICTIONS,
    MonitoringError,
    _lit,
    _now,
    _num,
    replace_model_partition,
)
from ml.training.data import relations
from ml.training.metrics import score

log = logging.getLogger(__name__)
PERFORMANCE_METRICS = ("roc_auc", "pr_auc", "brier")
PERFORMANCE_SCHEMA = pa.schema([
    ("model_name", pa.string()), ("model_version", pa.string()), ("as_of_date", pa.date32()), ("rows", pa.int32()),
    ("positives", pa.int32()), *((m, pa.float64()) for m in PERFORMANCE_METRICS), ("computed_at", pa.timestamp("us")),
])


def realized_performance(spec: ModelSpec, settings: Settings, day: date) -> dict | None:
    """ROC-AUC, PR-AUC and Brier of `day`'s predictions per model version, once its labels exist; else None.

    Replaces the partition (model, day) of ml.model_performance. The top-level metrics are those of the
    version that scored most of the day's rows.
    """
    key, when, label = spec.entity_key, spec.time_column, spec.label.column
    if when is None:
        raise MonitoringError(f"spec {spec.name!r} has no time_column; realized performance is per as_of_date")
    labels = relations(spec, settings)[1]
    known = f"select {key}, {label} from {labels.qualified} where {when} = {_lit(day)} and {label} is not null"
    with Warehouse.connect(settings, read_only=True) as wh:
        matured = int(wh.scalar(f"select count(*) from ({known}) l"))
        table = None if matured == 0 or not wh.table_exists(PREDICTIONS) else wh.read_arrow(
            f"select p.model_version, p.score, l.{label} as label from {PREDICTIONS} p join ({known}) l "
            f"on p.entity_id = cast(l.{key} as varchar) "
            f"where p.model_name = {_lit(spec.name)} and p.as_of_date = {_lit(day)}")
    if table is None or table.num_rows == 0:
        log.info("no realized performance of %s for %s: %d matured labels, %d of them scored", spec.name, day,
                 matured, 0 if table is None else table.num_rows)
        return None
    versions = np.asarray(table["model_version"].to_pylist())
    y_all = np.asarray(table["label"].to_pylist(), dtype=np.int8)
    p_all = np.asarray(table["score"].to_pylist(), dtype=np.float64)
    rows = []
    for version in sorted(set(versions.tolist())):
        y, p = y_all[versions == version], p_all[versions == version]
        rows.append({"model_name": spec.name, "model_version": version, "as_of_date": day, "rows": len(y),
                     "positives": int(y.sum()), **{m: _num(score(m, y, p)) for m in PERFORMANCE_METRICS},
                     "computed_at": _now()})
    with Warehouse.connect(settings) as wh:
        replace_model_partition(wh, MODEL_PERFORMANCE, spec.name, day,
                                pa.Table.from_pylist(rows, schema=PERFORMANCE_SCHEMA))
    main = max(rows, key=lambda r: r["rows"])
    by_version = [{k: r[k] for k in ("model_version", "rows", "positives", *PERFORMANCE_METRICS)} for r in rows]
    log.info("realized performance of %s on %s: %s", spec.name, day, by_version)
    return {"model_name": spec.name, "as_of_date": day.isoformat(), "labelled_rows": matured, "rows": table.num_rows,
            **{k: main[k] for k in ("model_version", *PERFORMANCE_METRICS)}, "versions": by_version}


# -- readers ----------------------------------------------------------------------------------------
def _history(settings: Settings, table: str, select: str, model: str, until: date, days: int,
             where: str = "") -> list[dict]:
    if not IDENTIFIER.match(model) or days < 1:
        raise MonitoringError(f"need a plain model name and days >= 1; got model={model!r}, days={days}")
    since = until - timedelta(days=days - 1)
    sql = (f"select {select} from {table} where model_name = {_lit(model)} and as_of_date between {_lit(since)} "
           f"and {_lit(until)}{where} order by as_of_date, model_version")
    with Warehouse.connect(settings, read_only=True) as wh:
        rows = wh.read_arrow(sql).to_pylist() if wh.table_exists(table) else []
    for row in rows:
        row["as_of_date"] = str(row["as_of_date"])[:10]
    return rows


def drift_history(settings: Settings, model: str, until: date, days: int) -> list[dict]:
    """The dataset-level drift rows of `model` for the `days` days ending at `until`, oldest first."""
    select = "as_of_date, model_version, drift_share, threshold, dataset_drift, current_rows, reference_rows"
    return _history(settings, DRIFT_METRICS, select, model, until, days, f" and column_name = '{DATASET_ROW}'")


def performance_history(settings: Settings, model: str, until: date, days: int) -> list[dict]:
    """Realized performance rows of `model` (one per version and day) for the `days` days ending at `until`."""
    select = f"as_of_date, model_version, rows, positives, {', '.join(PERFORMANCE_METRICS)}"
    return _history(settings, MODEL_PERFORMANCE, select, model, until, days)
