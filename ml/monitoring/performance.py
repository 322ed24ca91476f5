"""Realized performance once labels mature, and the drift and performance history the triggers read.

A day's stored predictions are scored against its labels when they exist, one replaceable partition
per (model_name, as_of_date) of ml.model_performance; with the spec's fairness attributes, also per group,
one partition per (model_name, as_of_date) of ml.fairness_metrics with source 'realized'.
"""

from __future__ import annotations

import logging
from datetime import date, timedelta

import numpy as np
import pyarrow as pa
import sqlalchemy as sa

from ml.core.settings import Settings
from ml.core.spec import ModelSpec
from ml.core.sql import named_table
from ml.core.tables import arrow_schema, drift_metrics, model_performance, predictions
from ml.core.warehouse import Warehouse
from ml.monitoring.drift import (
    DATASET_ROW,
    MODEL_PERFORMANCE,
    PREDICTIONS,
    MonitoringError,
    _now,
    _num,
    replace_model_partition,
)
from ml.monitoring.workspace import add_performance_snapshot
from ml.orchestration.intervals import parse_day
from ml.training.data import relations
from ml.training.fairness import differences, fairness_report, fairness_rows, write_fairness
from ml.training.metrics import score

log = logging.getLogger(__name__)
PERFORMANCE_METRICS = ("roc_auc", "pr_auc", "brier")


def realized_performance(spec: ModelSpec, settings: Settings, day: date) -> dict | None:
    """ROC-AUC, PR-AUC and Brier of `day`'s predictions per model version, once its labels exist; else None.

    Replaces the partition (model, day) of ml.model_performance. The top-level metrics are those of the
    version that scored most of the day's rows. With fairness attributes in the spec, the per-group metrics at
    each version's threshold replace the realized partition (model, day) of ml.fairness_metrics, and the
    result's "fairness" holds the main version's differences per attribute.
    """
    key, when, label = spec.entity_key, spec.time_column, spec.label.column
    if when is None:
        raise MonitoringError(f"spec {spec.name!r} has no time_column; realized performance is per as_of_date")
    features, labels_relation, _ = relations(spec, settings)
    labels = named_table(labels_relation.qualified, key, when, label)
    known = sa.select(labels.c[key], labels.c[label]).where(labels.c[when] == day, labels.c[label].is_not(None))
    known = known.subquery("l")
    scores = predictions.alias("p")
    joined = scores.join(known, scores.c.entity_id == sa.cast(known.c[key], sa.String))
    columns = [scores.c.model_version, scores.c.score, scores.c.threshold, known.c[label].label("label")]
    attributes = spec.fairness.attributes
    if attributes:  # each row's groups, from the feature relation's row of the entity and day
        rows_of_day = named_table(features.qualified, key, when, *attributes)
        labelled = (rows_of_day.c[a].label(_group_column(i)) for i, a in enumerate(attributes))
        groups = sa.select(rows_of_day.c[key], *labelled).where(rows_of_day.c[when] == day).subquery("g")
        joined = joined.outerjoin(groups, groups.c[key] == known.c[key])
        columns += [groups.c[_group_column(i)] for i in range(len(attributes))]
    # In a fixed order: the metrics' float sums then come out the same to the last bit on every warehouse and run.
    scored = (sa.select(*columns).select_from(joined)
              .where(scores.c.model_name == spec.name, scores.c.as_of_date == day)
              .order_by(scores.c.model_version, scores.c.entity_id))
    with Warehouse.connect(settings, read_only=True) as wh:
        matured = int(wh.scalar(sa.select(sa.func.count()).select_from(known)))
        table = None if matured == 0 or not wh.table_exists(PREDICTIONS) else wh.read_arrow(scored)
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
                                pa.Table.from_pylist(rows, schema=arrow_schema(model_performance)))
    main = max(rows, key=lambda r: r["rows"])
    mine = versions == main["model_version"]
    threshold = float(table["threshold"][int(np.argmax(mine))].as_py())
    add_performance_snapshot(spec, settings, day, main["model_version"], y_all[mine], p_all[mine], threshold)
    by_version = [{k: r[k] for k in ("model_version", "rows", "positives", *PERFORMANCE_METRICS)} for r in rows]
    log.info("realized performance of %s on %s: %s", spec.name, day, by_version)
    result = {"model_name": spec.name, "as_of_date": day.isoformat(), "labelled_rows": matured,
              "rows": table.num_rows, **{k: main[k] for k in ("model_version", *PERFORMANCE_METRICS)},
              "versions": by_version}
    if attributes:
        result["fairness"] = _realized_fairness(spec, settings, day, table, main["model_version"])
    return result


def _group_column(i: int) -> str:
    """The name a fairness attribute is read under, clear of the other columns of the query."""
    return f"fairness_attribute_{i}"


def _realized_fairness(spec: ModelSpec, settings: Settings, day: date, table: pa.Table, main: str) -> dict:
    """Per version, the day's metrics per group of each fairness attribute, written as the realized partition
    (model, day) of ml.fairness_metrics; the differences per attribute of the version `main`."""
    attributes = spec.fairness.attributes
    groups = table.select([_group_column(i) for i in range(len(attributes))]).rename_columns(list(attributes))
    versions = np.asarray(table["model_version"].to_pylist())
    y_all = np.asarray(table["label"].to_pylist(), dtype=np.int8)
    p_all = np.asarray(table["score"].to_pylist(), dtype=np.float64)
    thresholds = np.asarray(table["threshold"].to_pylist(), dtype=np.float64)
    parts, found, now = [], {}, _now()
    for version in sorted(set(versions.tolist())):
        rows = np.flatnonzero(versions == version)
        threshold = float(thresholds[rows[0]])
        report = fairness_report(y_all[rows], p_all[rows], threshold, groups.take(rows).to_pandas(),
                                 spec.fairness.min_group_rows)
        found[version] = differences(report)
        parts.append(fairness_rows(report, model_name=spec.name, model_version=version, as_of_date=day,
                                   source="realized", computed_at=now))
    write_fairness(settings, pa.concat_tables(parts), model_name=spec.name, source="realized", as_of_date=day)
    log.info("realized fairness of %s on %s: %s", spec.name, day, found)
    return found[main]


def label_dates(spec: ModelSpec, settings: Settings, start: date, end: date) -> list[date]:
    """The label relation's own as-of dates from `start` to `end` that hold a known label, in order."""
    when, label = spec.time_column, spec.label.column
    if when is None:
        raise MonitoringError(f"spec {spec.name!r} has no time_column; realized performance is per as_of_date")
    relation = relations(spec, settings)[1]
    labels = named_table(relation.qualified, when, label)
    query = (sa.select(labels.c[when]).where(labels.c[when].between(start, end), labels.c[label].is_not(None))
             .distinct().order_by(labels.c[when]))
    with Warehouse.connect(settings, read_only=True) as wh:
        rows = wh.rows(query) if wh.table_exists(f"{relation.schema}.{relation.identifier}") else []
    return [parse_day(row[when], f"a {when} in {relation.name}") for row in rows]


# -- readers ----------------------------------------------------------------------------------------
def _history(settings: Settings, table: sa.Table, columns: list[str], model: str, until: date, days: int,
             *where: sa.ColumnElement[bool]) -> list[dict]:
    if days < 1:
        raise MonitoringError(f"need days >= 1; got days={days}")
    since = until - timedelta(days=days - 1)
    query = (sa.select(*(table.c[c] for c in columns))
             .where(table.c.model_name == model, table.c.as_of_date.between(since, until), *where)
             .order_by(table.c.as_of_date, table.c.model_version))
    with Warehouse.connect(settings, read_only=True) as wh:
        rows = wh.rows(query) if wh.table_exists(table.fullname) else []
    for row in rows:
        row["as_of_date"] = str(row["as_of_date"])[:10]
    return rows


def drift_history(settings: Settings, model: str, until: date, days: int) -> list[dict]:
    """The dataset-level drift rows of `model` for the `days` days ending at `until`, oldest first."""
    columns = ["as_of_date", "model_version", "drift_share", "threshold", "dataset_drift", "current_rows",
               "reference_rows"]
    return _history(settings, drift_metrics, columns, model, until, days, drift_metrics.c.column_name == DATASET_ROW)


def performance_history(settings: Settings, model: str, until: date, days: int) -> list[dict]:
    """Realized performance rows of `model` (one per version and day) for the `days` days ending at `until`."""
    columns = ["as_of_date", "model_version", "rows", "positives", *PERFORMANCE_METRICS]
    return _history(settings, model_performance, columns, model, until, days)
