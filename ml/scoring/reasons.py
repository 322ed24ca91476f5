"""Reason codes beside the scores: which rows of a day are explained, the shard files of their reasons, and the
day's cut across shards when publishing.

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
import uuid
from datetime import date
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from ml.core.errors import TidemarkError
from ml.core.spec import ModelSpec
from ml.core.tables import arrow_schema, prediction_reasons
from ml.scoring.explain import contributions, top_reasons

log = logging.getLogger(__name__)

REASONS_TABLE = prediction_reasons.fullname
REASONS_SCHEMA = arrow_schema(prediction_reasons)
_REASONS_REPEATED = ["as_of_date", "model_name", "model_version", "feature"]
# The columns a shard's candidates file adds to the feature rows: the entity id as text and the score.
_ENTITY, _SCORE = "__entity_id", "__score"
_RANKING = [(_SCORE, "descending"), (_ENTITY, "ascending")]  # the day's order: best score first, then entity id


class ReasonsError(TidemarkError, RuntimeError):
    """A day's reasons cannot be cut from the shards' files: they do not fit together."""


# -- reasons --------------------------------------------------------------------------------------
class DayReasons:
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


def cuts(explain: Mapping[str, Any]) -> bool:
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
        "as_of_date": pc.take(as_of_column(rows, spec, day), at),
        "model_name": pa.repeat(pa.scalar(constants["model_name"], pa.string()), n),
        "model_version": pa.repeat(pa.scalar(constants["model_version"], pa.string()), n),
        **{name: top.column(name) for name in ("reason_rank", "feature", "feature_value", "contribution",
                                               "base_value")},
    }
    return pa.table(columns, schema=REASONS_SCHEMA)


def reason_files(day: Mapping[str, Any]) -> list[str]:
    """The reason, candidate and spare files of one shard's day."""
    entry = day.get("reasons")
    return [] if not entry else [f for f in (entry["path"], entry["candidates"], entry.get("spare")) if f]


def day_reasons(spec: ModelSpec, results: Sequence[Mapping[str, Any]], day: str, day_rows: int,
                load_model: Callable[[], Any]) -> tuple[list[Path], int]:
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
    if not cuts(explain):
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
            raise ReasonsError(f"shard {s} kept {e['kept']} candidates for the top {top} rows of {day}, too few to "
                               "find them (the day's rows changed while it was scored); rescore the run's shards")
        chosen.append(np.sort(place[shard_of == s]))
    if all(len(mine) == e["explained"] and (not len(mine) or mine[-1] < e["explained"])
           for mine, e in zip(chosen, entries)):
        return files, sum(e["rows"] for e in entries)
    return _write_day_reasons(spec, results, entries, chosen, day, load_model)


def _write_day_reasons(spec: ModelSpec, results: Sequence[Mapping[str, Any]], entries: Sequence[Mapping[str, Any]],
                       chosen: Sequence[np.ndarray], day: str, load_model: Callable[[], Any]) -> tuple[list[Path], int]:
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
                        model = load_model()
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


def as_of_column(rows: pa.RecordBatch | pa.Table, spec: ModelSpec, day: date) -> pa.Array | pa.ChunkedArray:
    if spec.time_column:
        return pc.cast(rows.column(spec.time_column), pa.date32())
    return pa.repeat(pa.scalar(day, pa.date32()), rows.num_rows)
