"""Scoring on Spark: the champion scores and explains a day's feature rows on Spark's executors, and publishing
overwrites the day's partitions with what the executors computed; no feature or score row passes the driver.

Where the work happens. The score DAG fans a day out over shard tasks because elsewhere each task streams its
share of the rows through its own process. On Spark the executors split the work themselves, and the embedded
metastore admits one driver at a time, so shard tasks would only queue for it and hand files to each other. So
on Spark `score_shard` only pins the run (`planned_shard`: no rows read, no files written) and
`publish_predictions` does all the work in one task (`score_and_publish`), behind the same entry points that the
CLI and the DAG call on every warehouse. A retry of publish scores again with the run's pinned version and
scoring time, so it writes the same rows.

1. A day's feature rows are the query the shards use (`ml.scoring.score.day_sql`), as a Spark DataFrame.
   `mapInArrow` scores its Arrow batches on the executors through `_prediction_batch`, the encoding and predict
   path of every warehouse, with the champion loaded once per Python worker.
2. The champion's verified files reach the executors as a zip archive (`SparkContext.addArchive`) that each
   executor unpacks into its SparkFiles folder: executors on a cluster do not see the driver's disk, and Spark
   takes a local directory in `addFile` on a local master only.
3. Reason codes (`explain.rows: top_fraction`): exactly the day's top ceil(fraction x rows) scores, ties broken
   by entity id, found by an ordered limit over the scores on the executors, joined back to their feature rows
   and explained by a second `mapInArrow` through `_reason_rows`; with `rows: all`, every row.
4. `Warehouse.replace_tables` writes both DataFrames: an INSERT OVERWRITE of exactly the run's (model_name,
   as_of_date) partitions, predictions first, then reasons (ml.core.spark_tables). A rerun or retry overwrites
   the same partitions, so every entity keeps one row per day. A kill leaves each table's partitions old or new,
   never both; as the two tables commit one after the other, a day's reasons can be the previous run's until the
   retry.

The scores and reasons are cached on the executors between counting them and writing them, so each is computed
once. The executors' Python (PYSPARK_PYTHON of the driver) needs the tidemark package and the model libraries,
as the Airflow workers do.
"""

from __future__ import annotations

import hashlib
import logging
import math
import os
import shutil
import time
import uuid
from datetime import date, datetime
from functools import partial, reduce
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Iterator, Mapping, Sequence

import pyarrow as pa
import sqlalchemy as sa

from ml.core.settings import Settings
from ml.core.spec import ModelSpec, dbt_relation
from ml.core.sql import dialect, quote
from ml.core.tables import prediction_reasons, predictions
from ml.core.warehouse import Warehouse
from ml.registry.champion import champion_version, resolve_champion
from ml.registry.registry import MANIFEST
from ml.scoring.reasons import REASONS_SCHEMA, REASONS_TABLE, _reason_rows, cuts
from ml.scoring.score import (
    PREDICTIONS_SCHEMA,
    PREDICTIONS_TABLE,
    _prediction_batch,
    check_columns,
    check_rows,
    day_sql,
    load_champion,
    run_constants,
)
from ml.training.candidates import load_candidate

if TYPE_CHECKING:
    from pyspark.sql import DataFrame, SparkSession

log = logging.getLogger(__name__)

# Beside each score, the entity key as the feature rows hold it, so that the day's top scores find their feature
# rows again; beside each of those rows, the entity id of its prediction.
_KEY, _ENTITY = "__key", "__entity_id"
_BATCH_ROWS = "spark.sql.execution.arrow.maxRecordsPerBatch"
_loaded: dict[str, Any] = {}  # in each Python worker: the champions it has loaded, by archive name


def planned_shard(spec: ModelSpec, settings: Settings, days: Sequence[date], shard: int, shards: int, run_id: str,
                  scored_at: datetime, version: str | None) -> dict:
    """A shard's result on Spark: the run's version, scoring time and days, nothing scored (publishing scores)."""
    version = version or champion_version(settings, spec.name)
    log.info("on Spark, publishing scores every row on the executors: shard %d/%d of %s %s has nothing to do",
             shard, shards, spec.name, version)
    return {"model": spec.name, "version": version, "run_id": run_id, "shard": shard, "shards": shards,
            "scored_at": scored_at.isoformat(), "explain": spec.explain.model_dump(), "scored_in": "publish",
            "days": {day.isoformat(): {"path": None, "rows": None, "reasons": None} for day in days}}


def score_and_publish(spec: ModelSpec, settings: Settings, days: Sequence[str], version: str, scored_at: str,
                      *, before_commit: Callable[[], None] | None = None) -> dict:
    """Score and explain `days` with `version` on the executors, then overwrite the days' partitions of
    ml.predictions and ml.prediction_reasons with the results (`before_commit` runs between the two).

    Returns the model, version, interval, and rows and reasons per day, as publish_predictions does.
    """
    from pyspark.sql import functions as F

    from ml.core.spark_tables import SparkTables

    started = time.perf_counter()
    model, manifest, version = load_champion(spec, settings, version)
    relation = dbt_relation(settings.dbt_manifest, spec.features.relation)
    check_columns(spec, relation, model.features, version)
    constants = run_constants(spec, manifest, version, scored_at)
    tables = SparkTables(settings.warehouse)
    archive = ship_champion(tables.spark, settings, spec.name, version)
    when = {day: date.fromisoformat(day) for day in days}
    cached: list[DataFrame] = []
    # The spec's rows per Arrow batch, as the other warehouses stream them: a batch is one call of the model.
    previous = tables.spark.conf.get(_BATCH_ROWS)
    tables.spark.conf.set(_BATCH_ROWS, str(spec.scoring.batch_rows))
    try:
        features = {day: tables.frame(day_sql(spec, relation, model.features, when[day])) for day in days}
        scores = _cache(cached, _union([_scores(features[day], archive, spec, when[day], constants) for day in days]))
        rows = _per_day(scores, days)  # one job: every row scored, into the cache
        check_rows(spec, rows)
        day_of = {day: F.col("as_of_date") == F.lit(when[day]) for day in days}
        frames = [_reasons(features[day], scores.where(day_of[day]), rows[day], archive, spec, when[day], constants)
                  for day in days]
        frames = [frame for frame in frames if frame is not None]
        reasons = _cache(cached, _union(frames)) if frames else None
        explained = _per_day(reasons, days) if reasons is not None else dict.fromkeys(days, 0)  # one job, cached
        scoring = time.perf_counter() - started
        where = {day: {"model_name": spec.name, "as_of_date": when[day]} for day in days}
        plan = {
            PREDICTIONS_TABLE: (PREDICTIONS_SCHEMA, [(where[day], scores.where(day_of[day]).select(
                *PREDICTIONS_SCHEMA.names)) for day in days]),
            # A day without reasons (explain.top_k 0) is a part without rows: its partition is dropped.
            REASONS_TABLE: (REASONS_SCHEMA, [(where[day], reasons.where(day_of[day]) if reasons is not None else [])
                                             for day in days]),
        }
        with Warehouse.connect(settings) as wh:
            wh.replace_tables(plan, before_commit=before_commit)
    finally:
        tables.spark.conf.set(_BATCH_ROWS, previous)
        for frame in cached:
            frame.unpersist()
    seconds = time.perf_counter() - started
    log.info("scored %d rows and explained %d of %s %s for %d day(s) on Spark's executors in %.2f s, published in "
             "%.2f s", sum(rows.values()), sum(explained.values()), spec.name, version, len(days), scoring,
             seconds - scoring)
    return {"model": spec.name, "version": version, "start": days[0], "end": days[-1], "rows": rows,
            "reasons": explained, "seconds": round(seconds, 3)}


def ship_champion(spark: "SparkSession", settings: Settings, model_name: str, version: str) -> str:
    """Send a version's verified files to every executor as a zip archive; returns the name that
    `SparkFiles.get` finds its unpacked folder by (the same name for the same files)."""
    champion = resolve_champion(settings, model_name, version)
    digest = hashlib.sha256((champion.directory / MANIFEST).read_bytes()).hexdigest()[:16]
    name = f"{model_name}-{version}-{digest}"
    archive = settings.home / "cache" / "spark" / f"{name}.zip"
    if not archive.is_file():
        archive.parent.mkdir(parents=True, exist_ok=True)
        made = shutil.make_archive(str(archive.with_name(f".{name}.{uuid.uuid4().hex}")), "zip", champion.directory)
        os.replace(made, archive)  # whole or absent, for a process that ships the same version at the same time
    spark.sparkContext.addArchive(f"{archive}#{name}")  # a second add of the same archive is ignored
    return name


# -- on the driver: the plan of each day ------------------------------------------------------------
def _scores(features: "DataFrame", archive: str, spec: ModelSpec, day: date,
            constants: Mapping[str, Any]) -> "DataFrame":
    """The day's prediction rows, each with its entity key as `_KEY`, scored on the executors."""
    key = features.schema[spec.entity_key].dataType.simpleString()
    schema = ", ".join([f"{quote(_KEY, 'spark')} {key}", *_columns(predictions)])
    return features.mapInArrow(partial(_score_batches, archive, spec, day, constants), schema)


def _reasons(features: "DataFrame", scores: "DataFrame", rows: int, archive: str, spec: ModelSpec, day: date,
             constants: Mapping[str, Any]) -> "DataFrame | None":
    """The reason codes of the day's explained rows, explained on the executors; None when nothing is explained."""
    from pyspark.sql import functions as F

    if not spec.explain.top_k:
        return None
    chosen = scores
    if cuts(spec.explain.model_dump()):  # the day's best scores, ties by entity id, as on every warehouse
        chosen = scores.orderBy(F.col("score").desc(), F.col("entity_id").asc()).limit(
            math.ceil(spec.explain.fraction * rows))
    ids = chosen.select(F.col(_KEY), F.col("entity_id").alias(_ENTITY))
    if chosen is not scores:  # a fraction of the day: sent whole to each task of the feature rows
        ids = F.broadcast(ids)
    rows_of = features.join(ids, features[spec.entity_key] == ids[_KEY]).drop(_KEY)
    return rows_of.mapInArrow(partial(_explain_batches, archive, spec, day, constants),
                              ", ".join(_columns(prediction_reasons)))


def _columns(table: sa.Table) -> list[str]:
    """A declared table's columns as Spark's DDL spells them."""
    return [f"{quote(c.name, 'spark')} {c.type.compile(dialect=dialect('spark'))}" for c in table.columns]


def _union(frames: Sequence["DataFrame"]) -> "DataFrame":
    return reduce(lambda a, b: a.unionByName(b), frames)


def _per_day(frame: "DataFrame", days: Sequence[str]) -> dict[str, int]:
    """The rows of each day (`as_of_date`) of `frame`, counted in one job, 0 for a day without any."""
    counted = {row["as_of_date"].isoformat(): row["count"] for row in frame.groupBy("as_of_date").count().collect()}
    return {day: counted.get(day, 0) for day in days}


def _cache(cached: list["DataFrame"], frame: "DataFrame") -> "DataFrame":
    cached.append(frame.persist())
    return frame


# -- on the executors ---------------------------------------------------------------------------------
def _score_batches(archive: str, spec: ModelSpec, day: date, constants: Mapping[str, Any],
                   batches: Iterator[pa.RecordBatch]) -> Iterator[pa.RecordBatch]:
    """mapInArrow: batches of feature rows as batches of prediction rows, each with its entity key first."""
    model = _champion(archive)
    for batch in batches:
        if batch.num_rows:
            scored = _prediction_batch(batch, model, spec, day, constants)
            yield _for_spark(pa.RecordBatch.from_arrays([batch.column(spec.entity_key), *scored.columns],
                                                        names=[_KEY, *scored.schema.names]))


def _explain_batches(archive: str, spec: ModelSpec, day: date, constants: Mapping[str, Any],
                     batches: Iterator[pa.RecordBatch]) -> Iterator[pa.RecordBatch]:
    """mapInArrow: batches of feature rows, each with its entity id, as batches of their reason rows."""
    model = _champion(archive)
    for batch in batches:
        if batch.num_rows:
            for part in _reason_rows(model, batch, batch.column(_ENTITY), spec, day, constants).to_batches():
                yield _for_spark(part)


def _champion(archive: str) -> Any:
    """The champion unpacked from `archive` on this executor, loaded once per Python worker."""
    model = _loaded.get(archive)
    if model is None:
        from pyspark import SparkFiles

        model = _loaded[archive] = load_candidate(Path(SparkFiles.get(archive)))
    return model


def _for_spark(batch: pa.RecordBatch) -> pa.RecordBatch:
    """A batch as Spark takes it back: timestamps (UTC without a zone here) marked as UTC, as Spark's are."""
    schema = pa.schema([pa.field(f.name, pa.timestamp("us", tz="UTC")) if pa.types.is_timestamp(f.type) else f
                        for f in batch.schema])
    return batch if schema == batch.schema else batch.cast(schema)
