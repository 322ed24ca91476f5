"""The training set: read from the warehouse as Arrow, split out of time, kept as Parquet between tasks."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import date, timedelta
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import sqlalchemy as sa

from ml.core.errors import TidemarkError
from ml.core.settings import Settings
from ml.core.spec import (
    FeatureSchema,
    ModelSpec,
    Relation,
    SpecError,
    dbt_relation,
    feature_schema,
)
from ml.core.sql import named_table
from ml.core.warehouse import Warehouse, arrow_sha256
from ml.training.encoding import feature_columns

log = logging.getLogger(__name__)
SPLITS = ("train", "validation", "test")
LABEL = "__label__"


class DataError(TidemarkError, RuntimeError):
    """The warehouse does not hold enough labelled rows for the spec's split; the message says what is missing."""


class NoLabels(DataError):
    """No labelled row is known at the as-of date yet."""


@dataclass(frozen=True)
class Extract:
    """Where a split training set was written, with its windows and a fingerprint of the rows."""

    directory: Path
    schema: FeatureSchema
    windows: dict[str, dict]
    fingerprint: str
    as_of: str | None

    def to_dict(self) -> dict:
        return {
            "directory": str(self.directory), "schema": self.schema.to_dict(), "windows": self.windows,
            "fingerprint": self.fingerprint, "as_of": self.as_of,
        }

    @classmethod
    def from_dict(cls, data: dict) -> "Extract":
        return cls(Path(data["directory"]), FeatureSchema.from_dict(data["schema"]), data["windows"],
                   data["fingerprint"], data["as_of"])


def relations(spec: ModelSpec, settings: Settings) -> tuple[Relation, Relation, FeatureSchema]:
    features = dbt_relation(settings.dbt_manifest, spec.features.relation)
    labels = dbt_relation(settings.dbt_manifest, spec.label_relation)
    if spec.label.column not in labels.columns:
        raise SpecError(f"label.column {spec.label.column!r} is not a column of {labels.name!r}")
    unknown = [c for c in spec.fairness.attributes if c not in features.columns]
    if unknown:
        raise SpecError(f"fairness.attributes of spec {spec.name!r}: {unknown} not in {features.name!r} "
                        f"(columns: {list(features.columns)}); name columns of the feature relation")
    return features, labels, feature_schema(spec, features)


def training_sql(spec: ModelSpec, features: Relation, labels: Relation, schema: FeatureSchema,
                 as_of: date | None) -> sa.Select:
    """One query for every labelled row known at `as_of`: label time plus horizon on or before it. The rows carry
    the segments and fairness attributes that are not features, for evaluation to group by."""
    keys = [spec.entity_key] + ([spec.time_column] if spec.time_column else [])
    extra = [c for c in (*spec.segments, *spec.fairness.attributes) if c not in schema.columns]
    cols = list(dict.fromkeys([*keys, *schema.columns, *extra]))
    label = spec.label.column
    f = named_table(features.qualified, *cols, label).alias("f")
    lab = named_table(labels.qualified, *keys, label).alias("l") if labels.name != features.name else f
    query = sa.select(*(f.c[c] for c in cols), lab.c[label].label(LABEL)).where(lab.c[label].is_not(None))
    if lab is not f:
        query = query.select_from(f.join(lab, sa.and_(*(lab.c[k] == f.c[k] for k in keys))))
    if as_of is not None and spec.time_column:
        query = query.where(f.c[spec.time_column] <= as_of - timedelta(days=spec.label.horizon_days))
    return query.order_by(*(f.c[k] for k in keys))


def extract(spec: ModelSpec, settings: Settings, directory: Path, *, as_of: date | None = None) -> Extract:
    """Read the labelled rows as Arrow, split them, and write one Parquet file per split."""
    features, labels, schema = relations(spec, settings)
    sql = training_sql(spec, features, labels, schema, as_of)
    with Warehouse.connect(settings, read_only=True) as wh:
        table = wh.read_arrow(sql)
    if table.num_rows == 0:
        raise NoLabels(
            f"no labelled rows for spec {spec.name!r} in {features.name!r}"
            + (f" with labels known by {as_of}" if as_of else "") + "; build the features and labels first"
        )
    parts = split(spec, table)
    directory.mkdir(parents=True, exist_ok=True)
    windows = {}
    for name, part in parts.items():
        pq.write_table(part, directory / f"{name}.parquet")
        windows[name] = _window(spec, part)
    log.info("extracted %s rows for %s: %s", table.num_rows, spec.name, windows)
    return Extract(directory, schema, windows, arrow_sha256(table), as_of.isoformat() if as_of else None)


def split(spec: ModelSpec, table: pa.Table) -> dict[str, pa.Table]:
    """Train, validation and test: by time with gaps of at least the label horizon, or stratified at random."""
    if spec.split.strategy == "random":
        return _random_split(spec, table)
    s = spec.split
    times = pc.cast(table[spec.time_column], pa.date32())
    table = table.set_column(table.schema.get_field_index(spec.time_column), spec.time_column, times)
    last = pc.max(times).as_py()
    test_start = last - timedelta(days=s.test_days - 1)
    val_end = test_start - timedelta(days=spec.gap_days + 1)
    val_start = val_end - timedelta(days=s.validation_days - 1)
    train_end = val_start - timedelta(days=spec.gap_days + 1)
    first = pc.min(times).as_py()
    if train_end < first:
        need = s.test_days + s.validation_days + 2 * spec.gap_days + 1
        have = (last - first).days + 1
        raise DataError(
            f"spec {spec.name!r} needs at least {need} days of labelled history (test {s.test_days}, validation "
            f"{s.validation_days}, two gaps of {spec.gap_days}) but the warehouse has {have} ({first} to {last})"
        )
    train_start = max(first, train_end - timedelta(days=s.train_days - 1)) if s.train_days else first
    window = pc.and_(pc.greater_equal(times, train_start), pc.less_equal(times, train_end))
    in_train = pc.and_(window, pc.is_in(times, value_set=sampled_dates(times.filter(window), s.sample_every_days)))
    return {
        "train": table.filter(in_train),
        "validation": table.filter(pc.and_(pc.greater_equal(times, val_start), pc.less_equal(times, val_end))),
        "test": table.filter(pc.greater_equal(times, test_start)),
    }


def sampled_dates(times: pa.ChunkedArray, every: int) -> pa.Array:
    """Every `every`-th distinct date of `times`, counted back from the latest: on any grid, daily or not,
    the latest date is kept and so is one in `every` of the dates the data holds."""
    distinct = sorted(pc.unique(times).to_pylist(), reverse=True)
    return pa.array(distinct[::every], pa.date32())


def _random_split(spec: ModelSpec, table: pa.Table) -> dict[str, pa.Table]:
    from sklearn.model_selection import train_test_split

    y = table[LABEL].to_numpy(zero_copy_only=False)
    idx = np.arange(table.num_rows)
    rest, test = train_test_split(idx, test_size=spec.split.test_fraction, stratify=y, random_state=spec.seed)
    val_share = spec.split.validation_fraction / (1 - spec.split.test_fraction)
    train, val = train_test_split(rest, test_size=val_share, stratify=y[rest], random_state=spec.seed)
    return {name: table.take(np.sort(rows)) for name, rows in (("train", train), ("validation", val), ("test", test))}


def _window(spec: ModelSpec, part: pa.Table) -> dict:
    y = part[LABEL].to_numpy(zero_copy_only=False)
    window = {"rows": part.num_rows, "positives": int(np.nansum(y))}
    if spec.time_column and spec.split.strategy == "time" and part.num_rows:
        window["start"] = pc.min(part[spec.time_column]).as_py().isoformat()
        window["end"] = pc.max(part[spec.time_column]).as_py().isoformat()
    if part.num_rows == 0 or window["positives"] in (0, part.num_rows):
        raise DataError(f"a split of spec {spec.name!r} has {part.num_rows} rows and {window['positives']} positives; "
                        "it needs both classes")
    return window


def load_split(extract_: Extract, name: str) -> tuple[pd.DataFrame, np.ndarray]:
    """One split as a model-ready frame (numerics float, categoricals str) and its 0/1 labels."""
    table = pq.read_table(extract_.directory / f"{name}.parquet")
    return to_frame(table, extract_.schema), table[LABEL].to_numpy(zero_copy_only=False).astype(np.int8)


def to_frame(table: pa.Table, schema: FeatureSchema, *, keep: tuple[str, ...] = ()) -> pd.DataFrame:
    """Arrow to a frame of the feature columns as models encode them (ml.training.encoding: numerics float64
    with NaN, categoricals str with None); `keep` carries extra columns (keys, segments) through unchanged."""
    missing = [c for c in schema.columns if c not in table.column_names]
    if missing:
        raise DataError(f"columns {missing} are missing from the rows read")
    columns = feature_columns(table, schema)
    frame = pd.DataFrame({col: columns.column(col).to_numpy() for col in schema.columns}, index=range(table.num_rows))
    for col in keep:
        if col not in frame:
            frame[col] = table[col].to_pandas()
    return frame
