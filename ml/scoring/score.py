"""Batch scoring: the champion scores the feature rows of some days, shard by shard, into ml.predictions, and
explains the scores it is asked to into ml.prediction_reasons.

A shard streams its rows out of the warehouse as Arrow record batches (memory stays bounded by a few
batches), scores each batch, and writes one Parquet file per day under the run's folder, with the reason
codes of its explained rows (ml.scoring.explain, the spec's `explain`) in a second file per day.
`publish_predictions` then replaces each day's (model_name, as_of_date) partition of both tables with the rows
of every shard's files, all days in one transaction, so a retry, a rerun or an overlapping backfill never
duplicates or drops a row, and reasons always belong to the scores beside them. Which rows are explained, and
how publishing cuts a day's top across shards: ml.scoring.reasons.

On Spark the shards do nothing: publishing scores and explains every row on Spark's executors and overwrites
the days' partitions from there, one table after the other (ml.scoring.spark says why and what a kill leaves).
"""

from __future__ import annotations

import logging
import math
import os
import re
import time
import uuid
from datetime import date, datetime, timezone
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import sqlalchemy as sa

from ml.core.errors import NothingToDo, TidemarkError
from ml.core.settings import Settings
from ml.core.spec import FeatureSchema, ModelSpec, Relation, dbt_relation
from ml.core.sql import named_table
from ml.core.tables import arrow_schema, predictions
from ml.core.warehouse import Warehouse
from ml.registry.champion import NoChampion, champion_version, resolve_champion
from ml.scoring.reasons import (
    REASONS_SCHEMA,
    REASONS_TABLE,
    DayReasons,
    as_of_column,
    cuts,
    day_reasons,
    reason_files,
)
from ml.training.candidates import load_candidate

log = logging.getLogger(__name__)

PREDICTIONS_TABLE = predictions.fullname
PREDICTIONS_SCHEMA = arrow_schema(predictions)
# Columns with one value per batch: dictionary-encoded in the shard files. Trying a dictionary on the
# others (one id and one score per row) would only cost time, and so would column statistics: publishing
# reads each file whole.
_REPEATED = ["as_of_date", "model_name", "model_version", "threshold", "scored_at"]


class ScoringError(TidemarkError, RuntimeError):
    """Scoring cannot go on: no champion, no feature rows, or shard results that do not fit together."""


# -- the champion ---------------------------------------------------------------------------------
def load_champion(spec: ModelSpec, settings: Settings, version: str | None = None) -> tuple[Any, dict, str]:
    """The champion (or the pinned `version`) as (model, registry manifest, version), verified and cached."""
    champion = resolve_champion(settings, spec.name, version)
    if not isinstance(champion.manifest.get("threshold"), (int, float)):
        raise ScoringError(f"{spec.name} {champion.version}: the registry manifest has no decision threshold; "
                           "retrain it")
    return load_candidate(champion.directory), champion.manifest, champion.version


# -- one shard ------------------------------------------------------------------------------------
def score_shard(
    spec: ModelSpec,
    settings: Settings,
    days: Sequence[date],
    shard: int,
    shards: int,
    run_id: str,
    scored_at: datetime | str,
    *,
    version: str | None = None,
    on_day: Callable[[int, date, int], None] | None = None,
) -> dict:
    """Score the rows of entity-hash shard `shard` of `shards` for each day into one Parquet file per day, and
    the reasons of the rows it explains into another.

    Returns the model, version, run and explain settings, and per day the files and their row counts.
    Rerunning it rewrites the same files. `on_day(shard, day, rows)` is called as each day's files are written.
    On Spark it scores nothing and writes no files: publishing scores every row there (ml.scoring.spark).
    """
    if not 0 <= shard < shards:
        raise ScoringError(f"shard {shard} is not in [0, {shards})")
    if not days:
        raise ScoringError("no days to score")
    if settings.warehouse.kind == "spark":
        from ml.scoring.spark import planned_shard

        return planned_shard(spec, settings, days, shard, shards, run_id, _utc_naive(scored_at), version)
    model, manifest, version = load_champion(spec, settings, version)
    relation = dbt_relation(settings.dbt_manifest, spec.features.relation)
    schema: FeatureSchema = model.features
    check_columns(spec, relation, schema, version)
    constants = run_constants(spec, manifest, version, scored_at)
    folder = run_folder(settings, run_id)
    files = {}
    with Warehouse.connect(settings, read_only=True) as wh:
        for day in days:
            sql = _shard_sql(wh, spec, relation, schema, day, shard, shards)
            path = folder / day.isoformat() / f"shard-{shard}.parquet"
            reasons = None
            if spec.explain.top_k:
                keep = None  # explain every row, or keep the shard's candidates for the top of all shards' rows
                if cuts(spec.explain.model_dump()):
                    day_rows = wh.scalar(sa.select(sa.func.count()).select_from(
                        _shard_sql(wh, spec, relation, schema, day, 0, 1).subquery()))
                    keep = math.ceil(spec.explain.fraction * day_rows)
                reasons = DayReasons(model, spec, day, constants, reasons_folder(folder, day), shard, keep)
            started = time.perf_counter()
            rows = _write_scores(wh.stream_arrow(sql, spec.scoring.batch_rows), path, model, spec, day, constants,
                                 reasons)
            seconds = time.perf_counter() - started
            explained = reasons.result["explained"] if reasons else 0
            log.info("scored %s shard %d/%d: %d rows, %d explained, in %.2f s (%.0f rows/s)", day, shard, shards,
                     rows, explained, seconds, rows / seconds if seconds else 0.0)
            files[day.isoformat()] = {"path": str(path), "rows": rows, "reasons": reasons.result if reasons else None}
            if on_day is not None:
                on_day(shard, day, rows)
    return {"model": spec.name, "version": version, "run_id": run_id, "shard": shard, "shards": shards,
            "scored_at": constants["scored_at"].isoformat(), "explain": spec.explain.model_dump(), "days": files}


def run_folder(settings: Settings, run_id: str) -> Path:
    """TIDEMARK_HOME/runs/score/<run_id>: where a run's shard files live."""
    return settings.home / "runs" / "score" / re.sub(r"[^A-Za-z0-9_.-]+", "_", run_id)


def reasons_folder(folder: Path, day: date) -> Path:
    """<run folder>/reasons/<day>: a day's reason and candidate files, beside the folder of its score files."""
    return folder / "reasons" / day.isoformat()


def check_columns(spec: ModelSpec, relation: Relation, schema: FeatureSchema, version: str) -> None:
    """ScoringError when the feature relation lacks a column that the model version needs."""
    missing = [c for c in [spec.entity_key, *schema.columns] if c not in relation.columns]
    if missing:
        raise ScoringError(f"{spec.name} {version} needs columns {missing}, which {relation.name!r} no longer has; "
                           "retrain the model on the current feature contract")


def run_constants(spec: ModelSpec, manifest: Mapping[str, Any], version: str, scored_at: datetime | str) -> dict:
    """The values every prediction row of a run shares: model, version, decision threshold and scoring time."""
    return {"model_name": spec.name, "model_version": version, "threshold": float(manifest["threshold"]),
            "scored_at": _utc_naive(scored_at)}


def day_sql(spec: ModelSpec, relation: Relation, schema: FeatureSchema, day: date) -> sa.Select:
    """The feature rows of a day that the model scores: the entity key, the time column and the model's columns."""
    keys = [spec.entity_key] + ([spec.time_column] if spec.time_column else [])
    cols = list(dict.fromkeys([*keys, *schema.columns]))
    features = named_table(relation.qualified, *cols)
    query = sa.select(*(features.c[c] for c in cols))
    if spec.time_column:
        query = query.where(features.c[spec.time_column] == day)
    return query


def _shard_sql(wh: Warehouse, spec: ModelSpec, relation: Relation, schema: FeatureSchema, day: date,
               shard: int, shards: int) -> sa.Select:
    query = day_sql(spec, relation, schema, day)
    if shards > 1:
        key = query.selected_columns[spec.entity_key]
        integer = "int" in relation.columns[spec.entity_key]
        query = query.where(wh.bucket(key, shards, integer=integer) == shard)
    return query


def _write_scores(batches, path: Path, model, spec: ModelSpec, day: date, constants: Mapping[str, Any],
                  reasons: DayReasons | None = None) -> int:
    """Score every batch into a Parquet file written next to `path` and renamed onto it when complete; `reasons`
    sees each batch with its scores and writes its own files just before."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{uuid.uuid4().hex}")
    rows = 0
    try:
        with pq.ParquetWriter(tmp, PREDICTIONS_SCHEMA, compression="lz4", use_dictionary=_REPEATED,
                              write_statistics=False) as writer:
            for batch in batches:
                if batch.num_rows:
                    scored = _prediction_batch(batch, model, spec, day, constants)
                    writer.write_batch(scored)
                    if reasons is not None:
                        reasons.add(batch, scored)
                    rows += batch.num_rows
        if reasons is not None:
            reasons.close(rows)
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        if reasons is not None:
            reasons.discard()
        raise
    return rows


def _prediction_batch(batch: pa.RecordBatch, model, spec: ModelSpec, day: date,
                      constants: Mapping[str, Any]) -> pa.RecordBatch:
    scores = predict(model, batch)
    n = batch.num_rows
    columns = {
        "entity_id": pc.cast(batch.column(spec.entity_key), pa.string()),
        "as_of_date": as_of_column(batch, spec, day),
        "model_name": pa.repeat(pa.scalar(constants["model_name"], pa.string()), n),
        "model_version": pa.repeat(pa.scalar(constants["model_version"], pa.string()), n),
        "score": pa.array(scores, pa.float64()),
        "predicted_label": pa.array((scores >= constants["threshold"]).astype(np.int32)),
        "threshold": pa.repeat(pa.scalar(constants["threshold"], pa.float64()), n),
        "scored_at": pa.repeat(pa.scalar(constants["scored_at"], pa.timestamp("us")), n),
    }
    return pa.record_batch(list(columns.values()), schema=PREDICTIONS_SCHEMA)


def predict(model, batch: pa.RecordBatch) -> np.ndarray:
    """P(label = 1) for each row of an Arrow batch holding the model's feature columns: the model's own
    `predict_proba` on the batch, through the encoding it was trained with."""
    return model.predict_proba(batch)[:, 1]


def _utc_naive(moment: datetime | str) -> datetime:
    value = datetime.fromisoformat(moment) if isinstance(moment, str) else moment
    return value.astimezone(timezone.utc).replace(tzinfo=None) if value.tzinfo else value


# -- publishing -----------------------------------------------------------------------------------
def publish_predictions(spec: ModelSpec, settings: Settings, shard_results: Sequence[Mapping[str, Any]]) -> dict:
    """Replace each scored day's partition of ml.predictions, and of ml.prediction_reasons, with every shard's
    rows, in one transaction. A run that explains nothing (explain.top_k 0) leaves those days without reasons.
    On Spark, it scores and explains the days on the executors first (ml.scoring.spark.score_and_publish).

    Returns the model, version, interval, and rows and reasons per day.
    """
    days = _check_shards(spec, shard_results)
    if settings.warehouse.kind == "spark":
        from ml.scoring.spark import score_and_publish

        return score_and_publish(spec, settings, days, shard_results[0]["version"], shard_results[0]["scored_at"],
                                 before_commit=_pause_for_tests(settings.publish_pause_s))
    if any(r.get("scored_in") == "publish" for r in shard_results):
        raise ScoringError(f"the shard results of run {shard_results[0]['run_id']!r} were planned for Spark, which "
                           f"scores in publish, but the warehouse is {settings.warehouse.kind}; rerun the run's "
                           "shard tasks on this warehouse")
    parts, reason_parts, rows, reasons = [], [], {}, {}
    for day in days:
        files = [Path(r["days"][day]["path"]) for r in shard_results]
        lost = [str(f) for f in files + [Path(f) for r in shard_results for f in reason_files(r["days"][day])]
                if not f.is_file()]
        if lost:
            raise ScoringError(f"shard files {lost} are gone; score_shard and publish must share TIDEMARK_HOME "
                               "(rerun the run's shard tasks)")
        rows[day] = sum(r["days"][day]["rows"] for r in shard_results)
        parts.append(({"model_name": spec.name, "as_of_date": date.fromisoformat(day)}, files))
    check_rows(spec, rows)
    for day, (where, _) in zip(days, parts):
        files, reasons[day] = day_reasons(spec, shard_results, day, rows[day],
                                         lambda: load_champion(spec, settings, shard_results[0]["version"])[0])
        reason_parts.append((where, files))
    started = time.perf_counter()
    plan = {PREDICTIONS_TABLE: (PREDICTIONS_SCHEMA, parts), REASONS_TABLE: (REASONS_SCHEMA, reason_parts)}
    with Warehouse.connect(settings) as wh:
        wh.replace_tables(plan, before_commit=_pause_for_tests(settings.publish_pause_s))
    seconds = time.perf_counter() - started
    log.info("published %d predictions and %d reasons of %s %s for %d day(s) in %.2f s", sum(rows.values()),
             sum(reasons.values()), spec.name, shard_results[0]["version"], len(days), seconds)
    return {"model": spec.name, "version": shard_results[0]["version"], "start": days[0], "end": days[-1],
            "rows": rows, "reasons": reasons, "seconds": round(seconds, 3)}


def check_rows(spec: ModelSpec, rows: Mapping[str, int]) -> None:
    """ScoringError naming the days (of `{day: rows}`) that have no feature rows to score."""
    empty = [day for day, n in rows.items() if n == 0]
    if empty:
        raise ScoringError(f"no feature rows to score on {empty} in {spec.features.relation!r}; build the features "
                           "for those dates first (the build_features DAG or `python -m ml dbt build`)")


def _check_shards(spec: ModelSpec, results: Sequence[Mapping[str, Any]]) -> list[str]:
    """The days of a complete, consistent set of shard results, in order."""
    if not results:
        raise ScoringError("no shard results to publish")
    first = results[0]
    for r in results:
        for key in ("model", "version", "run_id", "shards", "scored_at", "explain"):
            if r.get(key) != first.get(key):
                raise ScoringError(f"shard results disagree on {key}: {r.get(key)!r} vs {first.get(key)!r}")
        if sorted(r["days"]) != sorted(first["days"]):
            raise ScoringError(f"shard {r['shard']} scored days {sorted(r['days'])}, shard {first['shard']} "
                               f"{sorted(first['days'])}")
    if first["model"] != spec.name:
        raise ScoringError(f"shard results are for model {first['model']!r}, not {spec.name!r}")
    got = sorted(r["shard"] for r in results)
    if got != list(range(first["shards"])):
        raise ScoringError(f"publishing needs each of shards 0..{first['shards'] - 1} exactly once, got {got}")
    return sorted(first["days"])


def _pause_for_tests(seconds: float) -> Callable[[], None] | None:
    """Test hook (TIDEMARK_TEST_PAUSE_IN_PUBLISH): wait inside the transaction, so a test can kill it there."""
    if seconds <= 0:
        return None

    def pause() -> None:
        log.warning("TIDEMARK_TEST_PAUSE_IN_PUBLISH: pausing %.0f s inside the publish transaction", seconds)
        time.sleep(seconds)

    return pause


# -- in one process -------------------------------------------------------------------------------
def plan_scoring(spec: ModelSpec, settings: Settings, interval: Mapping[str, str] | None,
                 scored_at: datetime | str) -> dict:
    """The days to score with the one champion version and `scored_at` time that every shard and retry of a
    run uses. Days after the features watermark are refused (a WatermarkError); no interval means its day.
    NothingToDo before the first champion, and when no day of the interval is on a weekly or monthly grid."""
    from ml.orchestration.watermarks import resolve_features_interval

    try:
        version = champion_version(settings, spec.name)
    except NoChampion as exc:
        raise NothingToDo(f"nothing to score yet: {exc}") from None
    days = resolve_features_interval(spec, settings, interval, action=f"score {spec.name}")
    return {**days, "model": spec.name, "version": version,
            "scored_at": scored_at if isinstance(scored_at, str) else scored_at.isoformat()}


def score_days(
    spec: ModelSpec,
    settings: Settings,
    days: Sequence[date],
    run_id: str,
    *,
    scored_at: datetime | None = None,
    shards: int | None = None,
    version: str | None = None,
    on_day: Callable[[int, date, int], None] | None = None,
) -> dict:
    """Score and publish `days` with every shard in this process: what the command line and demo run.

    `on_day(shard, day, rows)` is called as each shard finishes each day, before anything is published (on
    Spark, where the shards score nothing, it is not called).
    """
    version = version or champion_version(settings, spec.name)
    scored_at = scored_at or datetime.now(timezone.utc)
    shards = shards or spec.scoring.shards
    results = [score_shard(spec, settings, days, s, shards, run_id, scored_at, version=version, on_day=on_day)
               for s in range(shards)]
    return publish_predictions(spec, settings, results)


def build_scores_mart(settings: Settings) -> None:
    """`dbt build --select tag:scores`: the marts read from ml.predictions, with their tests, in this process
    (a dbt process would spend more time starting than building)."""
    from ml.features.dbt import invoke_dbt

    result = invoke_dbt(["build", "--select", "tag:scores"], settings=settings)
    if not result.success:
        raise ScoringError(f"dbt build --select tag:scores failed (failing nodes: {result.failures or 'see output'}):\n"
                           + result.output[-3000:])
