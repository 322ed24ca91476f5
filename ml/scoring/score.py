"""Batch scoring: the champion scores the feature rows of some days, shard by shard, into ml.predictions, and
explains the scores it is asked to into ml.prediction_reasons.

A shard streams its rows out of the warehouse as Arrow record batches (memory stays bounded by a few
batches), scores each batch, and writes one Parquet file per day under the run's folder, with the reason
codes of its explained rows (ml.scoring.explain, the spec's `explain`) in a second file per day.
`publish_predictions` then replaces each day's (model_name, as_of_date) partition of both tables with the rows
of every shard's files, all days in one transaction, so a retry, a rerun or an overlapping backfill never
duplicates or drops a row, and reasons always belong to the scores beside them.

Which rows are explained, with `explain.rows: top_fraction`: exactly the day's top ceil(fraction x rows) scores
over all shards, ties broken by entity id. A shard cannot see the other shards' scores, so it counts the day's
rows (all shards') and keeps, in a running top-k across its batches, its best min(its rows, ceil(fraction x the
day's rows)) rows with their features: a superset of its share of the day's top, whatever that share is. It
explains the first of them, as many as its own share is likely to be (its fraction plus a margin), and writes
every candidate's entity and score to a candidates file, and the unexplained ones with their features to a
spare file. Publishing merges the shards' candidates, cuts the day's top, drops reasons below the cut and
explains the rare rows above it that a shard left unexplained. With one shard, the shard explains exactly the day's top. A shard's
memory grows with its candidates: at most twice the day's top rows and a batch, with their features.
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
from ml.core.tables import arrow_schema, prediction_reasons, predictions
from ml.core.warehouse import Warehouse
from ml.registry.champion import NoChampion, champion_version, resolve_champion
from ml.scoring.explain import contributions, top_reasons
from ml.training.candidates import load_candidate

log = logging.getLogger(__name__)

PREDICTIONS_TABLE = predictions.fullname
PREDICTIONS_SCHEMA = arrow_schema(predictions)
# Columns with one value per batch: dictionary-encoded in the shard files. Trying a dictionary on the
# others (one id and one score per row) would only cost time, and so would column statistics: publishing
# reads each file whole.
_REPEATED = ["as_of_date", "model_name", "model_version", "threshold", "scored_at"]
REASONS_TABLE = prediction_reasons.fullname
REASONS_SCHEMA = arrow_schema(prediction_reasons)
_REASONS_REPEATED = ["as_of_date", "model_name", "model_version", "feature"]
# The columns a shard's candidates file adds to the feature rows: the entity id as text and the score.
_ENTITY, _SCORE = "__entity_id", "__score"
_RANKING = [(_SCORE, "descending"), (_ENTITY, "ascending")]  # the day's order: best score first, then entity id


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
    """
    if not 0 <= shard < shards:
        raise ScoringError(f"shard {shard} is not in [0, {shards})")
    if not days:
        raise ScoringError("no days to score")
    model, manifest, version = load_champion(spec, settings, version)
    relation = dbt_relation(settings.dbt_manifest, spec.features.relation)
    schema: FeatureSchema = model.features
    missing = [c for c in [spec.entity_key, *schema.columns] if c not in relation.columns]
    if missing:
        raise ScoringError(f"{spec.name} {version} needs columns {missing}, which {relation.name!r} no longer has; "
                           "retrain the model on the current feature contract")
    constants = {"model_name": spec.name, "model_version": version, "threshold": float(manifest["threshold"]),
                 "scored_at": _utc_naive(scored_at)}
    folder = run_folder(settings, run_id)
    files = {}
    with Warehouse.connect(settings, read_only=True) as wh:
        for day in days:
            sql = _shard_sql(wh, spec, relation, schema, day, shard, shards)
            path = folder / day.isoformat() / f"shard-{shard}.parquet"
            reasons = None
            if spec.explain.top_k:
                keep = None  # explain every row, or keep the shard's candidates for the top of all shards' rows
                if _cuts(spec.explain.model_dump()):
                    day_rows = wh.scalar(sa.select(sa.func.count()).select_from(
                        _shard_sql(wh, spec, relation, schema, day, 0, 1).subquery()))
                    keep = math.ceil(spec.explain.fraction * day_rows)
                reasons = _DayReasons(model, spec, day, constants, reasons_folder(folder, day), shard, keep)
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


def _shard_sql(wh: Warehouse, spec: ModelSpec, relation: Relation, schema: FeatureSchema, day: date,
               shard: int, shards: int) -> sa.Select:
    keys = [spec.entity_key] + ([spec.time_column] if spec.time_column else [])
    cols = list(dict.fromkeys([*keys, *schema.columns]))
    features = named_table(relation.qualified, *cols)
    query = sa.select(*(features.c[c] for c in cols))
    if spec.time_column:
        query = query.where(features.c[spec.time_column] == day)
    if shards > 1:
        integer = "int" in relation.columns[spec.entity_key]
        query = query.where(wh.bucket(features.c[spec.entity_key], shards, integer=integer) == shard)
    return query


def _write_scores(batches, path: Path, model, spec: ModelSpec, day: date, constants: Mapping[str, Any],
                  reasons: "_DayReasons | None" = None) -> int:
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
        "as_of_date": _as_of(batch, spec, day),
        "model_name": pa.repeat(pa.scalar(constants["model_name"], pa.string()), n),
        "model_version": pa.repeat(pa.scalar(constants["model_version"], pa.string()), n),
        "score": pa.array(scores, pa.float64()),
        "predicted_label": pa.array((scores >= constants["threshold"]).astype(np.int32)),
        "threshold": pa.repeat(pa.scalar(constants["threshold"], pa.float64()), n),
        "scored_at": pa.repeat(pa.scalar(constants["scored_at"], pa.timestamp("us")), n),
    }
    return pa.record_batch(list(columns.values()), schema=PREDICTIONS_SCHEMA)


def _as_of(rows: pa.RecordBatch | pa.Table, spec: ModelSpec, day: date) -> pa.Array | pa.ChunkedArray:
    if spec.time_column:
        return pc.cast(rows.column(spec.time_column), pa.date32())
    return pa.repeat(pa.scalar(day, pa.date32()), rows.num_rows)


def predict(model, batch: pa.RecordBatch) -> np.ndarray:
    """P(label = 1) for each row of an Arrow batch holding the model's feature columns: the model's own
    `predict_proba` on the batch, through the encoding it was trained with."""
    return model.predict_proba(batch)[:, 1]


# -- reasons --------------------------------------------------------------------------------------
class _DayReasons:
    """The reason codes of one shard's day, written beside its scores: of every row (explain.rows: all), or of the
    shard's candidates for the day's top `keep` rows (top_fraction; see the module docstring)."""

    def __init__(self, model, spec: ModelSpec, day: date, constants: Mapping[str, Any], folder: Path, shard: int,
                 keep: int | None):
        self.model, self.spec, self.day, self.constants, self.keep = model, spec, day, constants, keep
        self.path = folder / f"shard-{shard}.parquet"
        self.candidates = folder / f"candidates-{shard}.parquet" if keep is not None else None
        self._pending: list[tuple[Path, Path]] = []  # (temporary file, its final name)
        self._writer: pq.ParquetWriter | None = None
        self._held: list[pa.Table] = []  # candidates (top_fraction): at most 2 x keep rows and a batch
        self._floor: pa.Scalar | None = None
        self._rows = 0
        self.result: dict[str, Any] = {}

    def add(self, batch: pa.RecordBatch, scored: pa.RecordBatch) -> None:
        """Explain the batch (rows: all), or keep its rows that are among the shard's best `keep` so far."""
        if self.keep is None:
            self._write(_reason_rows(self.model, batch, scored.column("entity_id"), self.spec, self.day,
                                     self.constants))
            return
        rows = batch.append_column(_ENTITY, scored.column("entity_id")).append_column(_SCORE, scored.column("score"))
        if self._floor is not None:  # the worst of `keep` rows held: a row below it is not among the best
            rows = rows.filter(pc.greater_equal(rows.column(_SCORE), self._floor))
        if self.keep and rows.num_rows:
            self._held.append(pa.Table.from_batches([rows]))
            if sum(part.num_rows for part in self._held) > 2 * self.keep:
                self._compact()

    def _compact(self) -> pa.Table | None:
        """The best `keep` of the rows held, which are held alone from now on."""
        if not self._held:
            return None
        pool = pa.concat_tables(self._held)
        pool = pool.take(pc.select_k_unstable(pool, min(self.keep, pool.num_rows), _RANKING))
        if pool.num_rows == self.keep:
            self._floor = pc.min(pool.column(_SCORE))
        self._held = [pool]
        return pool

    def close(self, shard_rows: int) -> None:
        """Explain the best candidates and write the files (top_fraction); put every file in place."""
        kept = 0
        if self.keep is not None:
            pool = self._compact()
            pool = pool.take(pc.sort_indices(pool, _RANKING)) if pool is not None else None
            kept = pool.num_rows if pool is not None else 0
            explained = min(kept, _likely_share(self.spec.explain.fraction, shard_rows))
            for start in range(0, explained, self.spec.scoring.batch_rows):
                chunk = pool.slice(start, min(self.spec.scoring.batch_rows, explained - start))
                self._write(_reason_rows(self.model, chunk, chunk.column(_ENTITY), self.spec, self.day,
                                         self.constants))
            ranking = pool.select([_ENTITY, _SCORE]) if pool is not None else pa.table(
                {_ENTITY: pa.array([], pa.string()), _SCORE: pa.array([], pa.float64())})
            pq.write_table(ranking, self._temporary(self.candidates), compression="lz4")
            if explained < kept:  # the candidates left unexplained, with their features, for publishing's cut
                spare = self.candidates.with_name(self.candidates.name.replace("candidates", "spare"))
                pq.write_table(pool.slice(explained), self._temporary(spare), compression="lz4")
        else:
            explained = shard_rows
        if self._writer is None:
            self._open()
        self._writer.close()
        spare = [str(path) for _, path in self._pending if path.name.startswith("spare-")]
        for tmp, path in self._pending:
            os.replace(tmp, path)
        self._pending = []
        self.result = {"path": str(self.path), "rows": self._rows, "explained": explained, "kept": kept,
                       "candidates": str(self.candidates) if self.candidates else None,
                       "spare": spare[0] if spare else None}

    def discard(self) -> None:
        """Remove the files of a day that failed; the files of an earlier run stay as they were."""
        if self._writer is not None:
            self._writer.close()
        for tmp, _ in self._pending:
            tmp.unlink(missing_ok=True)

    def _temporary(self, path: Path) -> Path:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".{path.name}.{uuid.uuid4().hex}")
        self._pending.append((tmp, path))
        return tmp

    def _open(self) -> None:
        self._writer = pq.ParquetWriter(self._temporary(self.path), REASONS_SCHEMA, compression="lz4",
                                        use_dictionary=_REASONS_REPEATED, write_statistics=False)

    def _write(self, reasons: pa.Table) -> None:
        if self._writer is None:
            self._open()
        self._writer.write_table(reasons)
        self._rows += reasons.num_rows


def _cuts(explain: Mapping[str, Any]) -> bool:
    """Whether explain settings explain the top of a day's scores, not all of them."""
    return explain["rows"] == "top_fraction" and explain["fraction"] < 1


def _likely_share(fraction: float, shard_rows: int) -> int:
    """How many of the day's top rows a shard of `shard_rows` random entities holds, with a margin of four
    standard deviations: what a shard explains of its candidates."""
    expected = fraction * shard_rows
    return math.ceil(expected + 4 * math.sqrt(expected)) + 8


def _reason_rows(model, rows: pa.RecordBatch | pa.Table, entity_ids: pa.Array | pa.ChunkedArray, spec: ModelSpec,
                 day: date, constants: Mapping[str, Any], top_k: int | None = None) -> pa.Table:
    """The rows of ml.prediction_reasons for feature rows: their top_k (default: the spec's) contributions,
    largest first."""
    top = top_reasons(contributions(model, rows), rows, spec.explain.top_k if top_k is None else top_k)
    at, n = top.column("row"), top.num_rows
    columns = {
        "entity_id": pc.take(entity_ids, at),
        "as_of_date": pc.take(_as_of(rows, spec, day), at),
        "model_name": pa.repeat(pa.scalar(constants["model_name"], pa.string()), n),
        "model_version": pa.repeat(pa.scalar(constants["model_version"], pa.string()), n),
        **{name: top.column(name) for name in ("reason_rank", "feature", "feature_value", "contribution",
                                               "base_value")},
    }
    return pa.table(columns, schema=REASONS_SCHEMA)


def _utc_naive(moment: datetime | str) -> datetime:
    value = datetime.fromisoformat(moment) if isinstance(moment, str) else moment
    return value.astimezone(timezone.utc).replace(tzinfo=None) if value.tzinfo else value


# -- publishing -----------------------------------------------------------------------------------
def publish_predictions(spec: ModelSpec, settings: Settings, shard_results: Sequence[Mapping[str, Any]]) -> dict:
    """Replace each scored day's partition of ml.predictions, and of ml.prediction_reasons, with every shard's
    rows, in one transaction. A run that explains nothing (explain.top_k 0) leaves those days without reasons.

    Returns the model, version, interval, and rows and reasons per day.
    """
    days = _check_shards(spec, shard_results)
    parts, reason_parts, rows, reasons = [], [], {}, {}
    for day in days:
        files = [Path(r["days"][day]["path"]) for r in shard_results]
        lost = [str(f) for f in files + [Path(f) for r in shard_results for f in _reason_files(r["days"][day])]
                if not f.is_file()]
        if lost:
            raise ScoringError(f"shard files {lost} are gone; score_shard and publish must share TIDEMARK_HOME "
                               "(rerun the run's shard tasks)")
        rows[day] = sum(r["days"][day]["rows"] for r in shard_results)
        parts.append(({"model_name": spec.name, "as_of_date": date.fromisoformat(day)}, files))
    empty = [day for day, n in rows.items() if n == 0]
    if empty:
        raise ScoringError(f"no feature rows to score on {empty} in {spec.features.relation!r}; build the features "
                           "for those dates first (the build_features DAG or `python -m ml dbt build`)")
    for day, (where, _) in zip(days, parts):
        files, reasons[day] = _day_reasons(spec, settings, shard_results, day, rows[day])
        reason_parts.append((where, files))
    started = time.perf_counter()
    plan = {PREDICTIONS_TABLE: (PREDICTIONS_SCHEMA, parts), REASONS_TABLE: (REASONS_SCHEMA, reason_parts)}
    with Warehouse.connect(settings) as wh:
        # Warehouse._replace: every table of the plan in one transaction (replace_rows takes one table).
        wh.replace_tables(plan, before_commit=_pause_for_tests(settings.publish_pause_s))
    seconds = time.perf_counter() - started
    log.info("published %d predictions and %d reasons of %s %s for %d day(s) in %.2f s", sum(rows.values()),
             sum(reasons.values()), spec.name, shard_results[0]["version"], len(days), seconds)
    return {"model": spec.name, "version": shard_results[0]["version"], "start": days[0], "end": days[-1],
            "rows": rows, "reasons": reasons, "seconds": round(seconds, 3)}


def _reason_files(day: Mapping[str, Any]) -> list[str]:
    """The reason, candidate and spare files of one shard's day."""
    entry = day.get("reasons")
    return [] if not entry else [f for f in (entry["path"], entry["candidates"], entry.get("spare")) if f]


def _day_reasons(spec: ModelSpec, settings: Settings, results: Sequence[Mapping[str, Any]], day: str,
                 day_rows: int) -> tuple[list[Path], int]:
    """The files holding a day's reasons, and how many rows they hold.

    With top_fraction, the day's top rows are cut from the shards' candidates: when the shards explained
    exactly those, their files are published as they are; otherwise a file of the day is written with the
    reasons of the rows above the cut, the rows that a shard left unexplained explained here.
    """
    entries = [r["days"][day].get("reasons") for r in results]
    if not all(entries):
        return [], 0
    files = [Path(e["path"]) for e in entries]
    explain = results[0]["explain"]
    if not _cuts(explain):
        return files, sum(e["rows"] for e in entries)
    top = math.ceil(explain["fraction"] * day_rows)
    chosen = []  # per shard: the places in its candidates file of its rows in the day's top
    candidates = []
    for s, e in enumerate(entries):
        table = pq.read_table(e["candidates"], columns=[_ENTITY, _SCORE])
        candidates.append(table.append_column("shard", pa.repeat(pa.scalar(s, pa.int32()), table.num_rows))
                          .append_column("place", pa.array(np.arange(table.num_rows), pa.int64())))
    pool = pa.concat_tables(candidates)
    best = pool.take(pc.select_k_unstable(pool, min(top, pool.num_rows), _RANKING)) if top else pool.slice(0, 0)
    shard_of, place = best.column("shard").to_numpy(), best.column("place").to_numpy()
    for s, (r, e) in enumerate(zip(results, entries)):
        # A top row that a shard did not keep would rank below all it kept: so a shard that kept `top` rows or
        # all of its rows kept every top row it has.
        if e["kept"] < min(top, r["days"][day]["rows"]):
            raise ScoringError(f"shard {s} kept {e['kept']} candidates for the top {top} rows of {day}, too few to "
                               "find them (the day's rows changed while it was scored); rescore the run's shards")
        chosen.append(np.sort(place[shard_of == s]))
    if all(len(mine) == e["explained"] and (not len(mine) or mine[-1] < e["explained"])
           for mine, e in zip(chosen, entries)):
        return files, sum(e["rows"] for e in entries)
    return _write_day_reasons(spec, settings, results, entries, chosen, day)


def _write_day_reasons(spec: ModelSpec, settings: Settings, results: Sequence[Mapping[str, Any]],
                       entries: Sequence[Mapping[str, Any]], chosen: Sequence[np.ndarray], day: str
                       ) -> tuple[list[Path], int]:
    """A file of the reasons of the `chosen` candidates of each shard: kept from its file when it explained
    them, explained now with the run's model version when it did not."""
    model = None
    constants = {"model_name": spec.name, "model_version": results[0]["version"]}
    path = Path(entries[0]["path"]).with_name("published.parquet")
    tmp = path.with_name(f".{path.name}.{uuid.uuid4().hex}")
    written = 0
    try:
        with pq.ParquetWriter(tmp, REASONS_SCHEMA, compression="lz4", use_dictionary=_REASONS_REPEATED,
                              write_statistics=False) as writer:
            for e, mine in zip(entries, chosen):
                done, extra = mine[mine < e["explained"]], mine[mine >= e["explained"]]
                if len(done):
                    ids = pq.read_table(e["candidates"], columns=[_ENTITY]).column(_ENTITY).take(pa.array(done))
                    kept = pq.read_table(e["path"])
                    kept = kept.filter(pc.is_in(kept.column("entity_id"), value_set=ids.combine_chunks()))
                    writer.write_table(kept)
                    written += kept.num_rows
                if len(extra):
                    if model is None:
                        model = load_champion(spec, settings, results[0]["version"])[0]
                    rows = pq.read_table(e["spare"]).take(pa.array(extra - e["explained"]))
                    log.info("explaining %d rows of %s above the day's cut that a shard left unexplained",
                             len(extra), day)
                    reasons = _reason_rows(model, rows, rows.column(_ENTITY), spec, date.fromisoformat(day),
                                           constants, results[0]["explain"]["top_k"])
                    writer.write_table(reasons)
                    written += reasons.num_rows
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return [path], written


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

    `on_day(shard, day, rows)` is called as each shard finishes each day, before anything is published.
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
