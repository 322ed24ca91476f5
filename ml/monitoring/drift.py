"""Daily data drift of a deployed model's inputs and scores.

Drift compares a bounded sample of one day's features and scores, drawn inside the warehouse, with the
reference sample stored with the model version at training time, through Evidently's DataDriftPreset.
Realized performance scores a day's stored predictions against its labels when they exist. Both write
one replaceable partition per (model_name, as_of_date): to ml.drift_metrics and ml.model_performance.
Each day's drift snapshot also goes into the model's project of the Evidently workspace (see
ml/monitoring/workspace.py), where Evidently's UI shows the days side by side.
"""

from __future__ import annotations

import json
import logging
import os
import time
from datetime import date, datetime, timezone
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import sqlalchemy as sa

from ml.core.errors import TidemarkError
from ml.core.settings import Settings
from ml.core.spec import FeatureSchema, ModelSpec
from ml.core.sql import named_table
from ml.core.tables import arrow_schema, drift_metrics, model_performance, predictions
from ml.core.warehouse import Warehouse
from ml.monitoring.workspace import add_drift_snapshot
from ml.registry import Registry
from ml.training.data import relations, to_frame

log = logging.getLogger(__name__)
PREDICTIONS = predictions.fullname
DRIFT_METRICS = drift_metrics.fullname
MODEL_PERFORMANCE = model_performance.fullname
DATASET_ROW = "__dataset__"
SCORE = "score"
REFERENCE = "reference.parquet"
PREPARED_REFERENCE = "drift_reference.parquet"

class MonitoringError(TidemarkError, RuntimeError):
    """A monitoring check cannot run on its input; the message says what is missing and what to do."""


# -- the reference ------------------------------------------------------------------------------
def _manifest(version_dir: Path) -> dict:
    path = Path(version_dir) / "manifest.json"
    if not path.is_file():
        raise MonitoringError(f"{version_dir} is not a downloaded model version (no manifest.json); "
                           "fetch it with Registry.download(model, version, dest)")
    return json.loads(path.read_text())


def prepare_reference(spec: ModelSpec, version_dir: Path) -> Path:
    """Cache reference.parquet as the typed frame drift checks read: numbers as float64, categories as strings.

    Works on a candidate directory at training time and on a downloaded version; reruns reuse the cache.
    """
    version_dir = Path(version_dir)
    source, target = version_dir / REFERENCE, version_dir / PREPARED_REFERENCE
    if not source.is_file():
        raise MonitoringError(f"{version_dir} has no {REFERENCE}; the version was trained without a drift reference, "
                           "so retrain it to monitor drift")
    if target.is_file() and target.stat().st_mtime >= source.stat().st_mtime:
        return target
    table = pq.read_table(source)
    if SCORE not in table.column_names:
        raise MonitoringError(f"{source} has no {SCORE!r} column; retrain the model to write a complete reference")
    forced = set(spec.features.categorical or ())
    columns = {}
    for field in table.schema:
        if field.name in (spec.entity_key, spec.time_column):
            continue
        numeric = field.name not in forced and (pa.types.is_integer(field.type) or pa.types.is_floating(field.type)
                                                or pa.types.is_decimal(field.type))
        columns[field.name] = table[field.name].cast(pa.float64() if numeric else pa.string())
    tmp = target.with_name(f".{target.name}.{os.getpid()}.tmp")
    pq.write_table(pa.table(columns), tmp)
    os.replace(tmp, target)
    return target


def drift_columns(spec: ModelSpec, schema: FeatureSchema) -> FeatureSchema:
    """The features a drift check looks at: monitoring.columns (default every feature) less monitoring.exclude."""
    mon = spec.monitoring
    wanted = [c for c in (mon.columns or schema.columns) if c != SCORE]
    unknown = [c for c in [*wanted, *mon.exclude] if c not in schema.columns and c != SCORE]
    if unknown:
        raise MonitoringError(f"monitoring columns {unknown} of spec {spec.name!r} are not features of the model "
                           f"(features: {list(schema.columns)})")
    keep = [c for c in wanted if c not in mon.exclude]
    if not keep:
        raise MonitoringError(f"spec {spec.name!r} excludes every feature from drift checks")
    return FeatureSchema(tuple(c for c in keep if c in schema.numeric),
                         tuple(c for c in keep if c in schema.categorical))


# -- the current sample ---------------------------------------------------------------------------
def sample_sql(spec: ModelSpec, features: str, columns: FeatureSchema, day: date, *, rows: int,
               partition_rows: int, seed: int, score_version: str | None) -> sa.Select:
    """One day of the features relation sampled to at most `rows` inside the warehouse, with the day's scores.

    The sample is the rows with the smallest seeded md5 of their key: the same rows on every run, thread
    count and warehouse, whatever order the rows were stored in (a reservoir sample's REPEATABLE holds only
    single-threaded, and PostgreSQL's TABLESAMPLE ... REPEATABLE depends on the table's physical layout).
    """
    key, when = spec.entity_key, spec.time_column
    cols = list(dict.fromkeys([key, *columns.columns]))
    source = named_table(features, *cols, when)
    sampled = sa.select(*(source.c[c] for c in cols)).where(source.c[when] == day)
    if partition_rows > rows:
        sampled = sampled.order_by(sa.func.md5(sa.cast(source.c[key], sa.String) + str(seed))).limit(rows)
    if score_version is None:
        return sampled
    s, p = sampled.subquery("s"), predictions.alias("p")
    scored = sa.and_(p.c.model_name == spec.name, p.c.as_of_date == day, p.c.model_version == score_version,
                     p.c.entity_id == sa.cast(s.c[key], sa.String))
    return sa.select(s, p.c.score.label(SCORE)).select_from(s.outerjoin(p, scored))


def _scored_by(wh: Warehouse, model: str, day: date) -> dict[str, int]:
    if not wh.table_exists(PREDICTIONS):
        return {}
    query = (sa.select(predictions.c.model_version, sa.func.count().label("n"))
             .where(predictions.c.model_name == model, predictions.c.as_of_date == day)
             .group_by(predictions.c.model_version))
    return {str(r["model_version"]): int(r["n"]) for r in wh.rows(query)}


# -- Evidently ------------------------------------------------------------------------------------
def _run_evidently(current, reference, columns: FeatureSchema, drift_share: float, day: date | None = None):
    """DataDriftPreset over the given columns; returns Evidently's snapshot, stamped with the as-of date `day`
    (None: now)."""
    os.environ.setdefault("DO_NOT_TRACK", "1")  # Evidently's switch for its usage telemetry
    from evidently import DataDefinition, Dataset, Report
    from evidently.presets import DataDriftPreset

    definition = DataDefinition(numerical_columns=list(columns.numeric), categorical_columns=list(columns.categorical))
    report = Report([DataDriftPreset(columns=list(columns.columns), drift_share=drift_share)], include_tests=True)
    return report.run(current_data=Dataset.from_pandas(current, data_definition=definition),
                      reference_data=Dataset.from_pandas(reference, data_definition=definition),
                      timestamp=None if day is None else datetime(day.year, day.month, day.day))


def read_snapshot(result: dict) -> tuple[list[dict], float]:
    """Per-column (column, stattest, score, threshold, drifted) and the drifted share from snapshot.dict()."""
    failed = {t["metric_config"]["metric_id"]: t["status"] == "FAIL" for t in result["tests"] if t["id"] == "drift"}
    columns, share = [], None
    for metric in result["metrics"]:
        config = metric["config"]
        if config["type"].endswith(":ValueDrift"):
            columns.append({"column_name": config["column"], "stattest": config["method"],
                            "score": float(metric["value"]), "threshold": float(config["threshold"]),
                            "drifted": failed[metric["id"]]})
        elif config["type"].endswith(":DriftedColumnsCount"):
            share = float(metric["value"]["share"])
    if share is None or not columns:
        raise MonitoringError("the Evidently snapshot holds no DriftedColumnsCount or ValueDrift results")
    return columns, share


# -- writes -----------------------------------------------------------------------------------------
def replace_model_partition(wh: Warehouse, qualified: str, model: str, day: date, rows: pa.Table) -> int:
    """Atomically replace the rows of (model_name, as_of_date) in `qualified` with `rows`; returns how many."""
    return wh.replace_rows(qualified, rows.schema, [({"model_name": model, "as_of_date": day}, rows)])


def _now() -> datetime:
    return datetime.now(timezone.utc).replace(tzinfo=None)


def _num(value: float) -> float | None:
    return None if value is None or not np.isfinite(value) else float(value)


# -- the checks -------------------------------------------------------------------------------------
def _current(spec: ModelSpec, settings: Settings, day: date, columns: FeatureSchema, model_version: str):
    """The day's sample as Arrow, the partition's row count, and whether the version's scores came with it."""
    features = relations(spec, settings)[0]
    seed = (spec.seed * 100_003 + day.toordinal()) % 2**31
    with Warehouse.connect(settings, read_only=True) as wh:
        source = named_table(features.qualified, spec.time_column)
        partition_rows = int(wh.scalar(sa.select(sa.func.count()).select_from(source)
                                       .where(source.c[spec.time_column] == day)))
        if partition_rows == 0:
            raise MonitoringError(f"{features.name} has no rows for {spec.time_column} = {day}; build that day's "
                               "features first")
        scored = _scored_by(wh, spec.name, day)
        version = model_version if model_version in scored else None
        sql = sample_sql(spec, features.qualified, columns, day, rows=spec.monitoring.sample_rows,
                         partition_rows=partition_rows, seed=seed, score_version=version)
        sample = wh.read_arrow(sql)
    note = None
    if version is None:
        by = f" (scored by {sorted(scored)})" if scored else ""
        note = f"no predictions of {spec.name} {model_version} for {day}{by}; checked the features only"
        log.warning(note)
    return sample, partition_rows, note


def check_drift(spec: ModelSpec, settings: Settings, day: date, *, model_version: str, version_dir: Path) -> dict:
    """Drift of `day`'s features (and scores, when predictions exist) against the version's reference.

    Writes the partition (model, day) of ml.drift_metrics, the HTML and JSON reports to the registry's
    store under monitoring/<model>/<day>/ and the day's snapshot to the Evidently workspace, and returns a
    JSON-ready summary.
    """
    started = time.perf_counter()
    if spec.time_column is None:
        raise MonitoringError(f"spec {spec.name!r} has no time_column; daily drift checks need one")
    manifest = _manifest(version_dir)
    if manifest.get("version") not in (None, model_version):
        raise MonitoringError(f"{version_dir} holds {manifest['version']}, not model_version {model_version!r}")
    columns = drift_columns(spec, FeatureSchema.from_dict(manifest["feature_schema"]))
    sample, partition_rows, note = _current(spec, settings, day, columns, model_version)
    steps = {"sample": time.perf_counter() - started}
    if note is None:
        columns = FeatureSchema(columns.numeric + (SCORE,), columns.categorical)
    reference = to_frame(pq.read_table(prepare_reference(spec, version_dir)), columns)
    current = to_frame(sample, columns)
    empty = [c for c in columns.columns if current[c].isna().all() or reference[c].isna().all()]
    if empty:
        raise MonitoringError(f"columns {empty} have no values on {day} or in the reference of {model_version}; "
                           "fix the features or list them in monitoring.exclude")
    snapshot = _run_evidently(current, reference, columns, spec.monitoring.drift_share, day)
    per_column, share = read_snapshot(snapshot.dict())
    dataset_drift = share >= spec.monitoring.drift_share
    steps["evidently"] = time.perf_counter() - started - sum(steps.values())

    registry, prefix = Registry.from_settings(settings), f"monitoring/{spec.name}/{day.isoformat()}"
    html_uri = registry.put_bytes(f"{prefix}/report.html", snapshot.get_html_str(as_iframe=False).encode())
    json_uri = registry.put_bytes(f"{prefix}/report.json", snapshot.json().encode())
    steps["reports"] = time.perf_counter() - started - sum(steps.values())
    base = {"model_name": spec.name, "model_version": model_version, "as_of_date": day, "drift_share": None,
            "dataset_drift": None, "current_rows": len(current), "reference_rows": len(reference), "checked_at": _now()}
    rows = [{**base, **c} for c in per_column] + [{
        **base, "column_name": DATASET_ROW, "stattest": None, "score": share, "threshold": spec.monitoring.drift_share,
        "drifted": dataset_drift, "drift_share": share, "dataset_drift": dataset_drift}]
    with Warehouse.connect(settings) as wh:
        replace_model_partition(wh, DRIFT_METRICS, spec.name, day,
                                pa.Table.from_pylist(rows, schema=arrow_schema(drift_metrics)))
    written = time.perf_counter()
    snapshot_id = add_drift_snapshot(spec, settings, day, snapshot, model_version=model_version)
    steps["workspace"] = time.perf_counter() - written
    drifted = [c["column_name"] for c in per_column if c["drifted"]]
    log.info("drift of %s %s on %s: share %.3f (%s), drifted %s; report at %s", spec.name, model_version, day, share,
             "dataset drift" if dataset_drift else "no dataset drift", drifted or "none", html_uri)
    return {
        "model_name": spec.name, "as_of_date": day.isoformat(), "model_version": model_version, "drift_share": share,
        "dataset_drift": dataset_drift, "drifted_columns": drifted, "columns": len(per_column),
        "current_rows": len(current), "partition_rows": partition_rows, "reference_rows": len(reference),
        "predictions": note is None, "note": note, "report_html": html_uri, "report_json": json_uri,
        "workspace_snapshot": snapshot_id,
        "seconds": round(time.perf_counter() - started, 3),
        "seconds_by_step": {step: round(seconds, 3) for step, seconds in steps.items()},
    }
