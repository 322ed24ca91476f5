"""The tables the ml package writes, declared once; the Arrow schema each writer needs comes from here.

Every table is one replaceable partition per key: ml.predictions, ml.prediction_reasons, ml.drift_metrics and
ml.model_performance per (model_name, as_of_date), ml.fairness_metrics per (model_name, model_version, source)
for test rows and per (model_name, as_of_date, source) for realized ones, ml.retrain_requests per request_id,
ml.model_promotions per promotion_id. ml.simulated_world holds one row: the world the raw tables hold.
"""

from __future__ import annotations

from functools import lru_cache

import pyarrow as pa
import sqlalchemy as sa

from ml.core.errors import TidemarkError
from ml.core.sql import split_name

METADATA = sa.MetaData(schema="ml")


def _declare(name: str, *columns: tuple[str, type[sa.types.TypeEngine]]) -> sa.Table:
    return sa.Table(name, METADATA, *(sa.Column(column, kind) for column, kind in columns))


# The key of a model's daily partitions, and the version that wrote them.
_MODEL_DAY = (("model_name", sa.Text), ("model_version", sa.Text), ("as_of_date", sa.Date))

predictions = _declare(
    "predictions", ("entity_id", sa.Text), ("as_of_date", sa.Date), ("model_name", sa.Text),
    ("model_version", sa.Text), ("score", sa.Double), ("predicted_label", sa.Integer), ("threshold", sa.Double),
    ("scored_at", sa.DateTime),
)
# Reason codes: the top-k feature contributions (in the model's raw output: log-odds) of each explained row,
# rank 1 the largest in absolute value. base_value + the sum of all (not only the top-k) contributions is
# the row's raw output. Published with the predictions of the same (model_name, as_of_date), in one transaction.
prediction_reasons = _declare(
    "prediction_reasons", ("entity_id", sa.Text), ("as_of_date", sa.Date), ("model_name", sa.Text),
    ("model_version", sa.Text), ("reason_rank", sa.Integer), ("feature", sa.Text), ("feature_value", sa.Text),
    ("contribution", sa.Double), ("base_value", sa.Double),
)
# Per-group metrics of a fairness attribute: source 'test' (one version's out-of-time test rows, as_of_date
# its as-of date) or 'realized' (one as-of date's scores once its labels matured).
fairness_metrics = _declare(
    "fairness_metrics", *_MODEL_DAY, ("source", sa.Text), ("attribute", sa.Text), ("group_value", sa.Text),
    ("rows", sa.Integer), ("positives", sa.Integer), ("selection_rate", sa.Double), ("tpr", sa.Double),
    ("fpr", sa.Double), ("mean_score", sa.Double), ("observed_rate", sa.Double),
    ("demographic_parity_difference", sa.Double), ("equalized_odds_difference", sa.Double),
    ("computed_at", sa.DateTime),
)
drift_metrics = _declare(
    "drift_metrics", *_MODEL_DAY, ("column_name", sa.Text), ("stattest", sa.Text), ("score", sa.Double),
    ("threshold", sa.Double), ("drifted", sa.Boolean), ("drift_share", sa.Double), ("dataset_drift", sa.Boolean),
    ("current_rows", sa.Integer), ("reference_rows", sa.Integer), ("checked_at", sa.DateTime),
)
model_performance = _declare(
    "model_performance", *_MODEL_DAY, ("rows", sa.Integer), ("positives", sa.Integer), ("roc_auc", sa.Double),
    ("pr_auc", sa.Double), ("brier", sa.Double), ("computed_at", sa.DateTime),
)
retrain_requests = _declare(
    "retrain_requests", ("request_id", sa.Text), ("model_name", sa.Text), ("requested_on", sa.Date),
    ("reason", sa.Text), ("detail", sa.Text), ("champion_version", sa.Text), ("requested_at", sa.DateTime),
)
model_promotions = _declare(
    "model_promotions", ("promotion_id", sa.Text), ("model_name", sa.Text), ("candidate", sa.Text),
    ("candidate_version", sa.Text), ("champion_version", sa.Text), ("decision", sa.Text),
    ("primary_metric", sa.Text), ("challenger_metric", sa.Double), ("champion_metric", sa.Double),
    ("diff_ci_low", sa.Double), ("diff_ci_high", sa.Double), ("reasons", sa.Text), ("decided_at", sa.DateTime),
    ("run_id", sa.Text),
)

# The simulated world a warehouse holds (one row): fixed at its first load, with the clock's start.
simulated_world = _declare(
    "simulated_world", ("seed", sa.BigInteger), ("customers", sa.BigInteger), ("sim_start", sa.Date),
    ("drift_date", sa.Date), ("recorded_at", sa.DateTime), ("clock_started_at", sa.DateTime),
)

# On Spark, whose Parquet tables cannot delete rows, a replace overwrites whole partitions: these tables are
# partitioned by their replace key. Any other declared table is small and rewritten whole; an undeclared one
# (a raw table) is partitioned by the key it is first replaced on.
SPARK_PARTITIONS = {table.fullname: ("model_name", "as_of_date")
                    for table in (predictions, prediction_reasons, drift_metrics, model_performance)}

# Each Arrow type and the column type it is stored as, in both directions.
_TYPES = (
    (pa.int16(), sa.SmallInteger), (pa.int32(), sa.Integer), (pa.int64(), sa.BigInteger), (pa.float64(), sa.Double),
    (pa.string(), sa.Text), (pa.date32(), sa.Date), (pa.timestamp("us"), sa.DateTime), (pa.bool_(), sa.Boolean),
)
# Money columns are stored as exact decimals in both warehouses, whatever Arrow type they arrive as.
DECIMAL_COLUMNS = frozenset({"monthly_price", "amount"})


class TableTypeError(TidemarkError, TypeError):
    """A column whose type has no counterpart on the other side (Arrow or warehouse)."""


@lru_cache(maxsize=None)
def arrow_schema(table: sa.Table) -> pa.Schema:
    """The Arrow schema of a declared table's rows: what its writers build and its readers get back."""
    arrow = {kind: arrow_type for arrow_type, kind in _TYPES}
    fields = []
    for column in table.columns:
        kind = column.type
        if type(kind) is sa.Numeric:
            fields.append(pa.field(column.name, pa.decimal128(kind.precision, kind.scale)))
        elif type(kind) in arrow:
            fields.append(pa.field(column.name, arrow[type(kind)]))
        else:
            raise TableTypeError(f"column {table.fullname}.{column.name} has type {kind!r}, which has no Arrow "
                                 "type; declare it with one of the types in ml.core.tables._TYPES")
    return pa.schema(fields)


def column_type(field: pa.Field) -> sa.types.TypeEngine:
    """The warehouse column type that stores an Arrow field."""
    if field.name in DECIMAL_COLUMNS:
        return sa.Numeric(12, 2)
    if pa.types.is_decimal(field.type):
        return sa.Numeric(field.type.precision, field.type.scale)
    for arrow_type, kind in _TYPES:
        if field.type == arrow_type:
            return kind()
    stored = ", ".join(str(arrow_type) for arrow_type, _ in _TYPES)
    raise TableTypeError(f"column {field.name!r} has Arrow type {field.type}, which has no warehouse type; "
                         f"cast it to one of {stored} or a decimal")


def from_arrow(qualified: str, schema: pa.Schema) -> sa.Table:
    """A table `qualified` (schema.table) with a column for each field of an Arrow schema."""
    schema_name, name = split_name(qualified)
    return sa.Table(name, sa.MetaData(), *(sa.Column(f.name, column_type(f)) for f in schema), schema=schema_name)


def spark_partitions(qualified: str, keys: tuple[str, ...]) -> tuple[str, ...]:
    """The partition columns a Spark table gets when a replace on `keys` creates it (SPARK_PARTITIONS)."""
    name = ".".join(split_name(qualified))
    if name in METADATA.tables:
        return SPARK_PARTITIONS.get(name, ())
    return keys


def declared(qualified: str, schema: pa.Schema | None = None) -> sa.Table:
    """The table `qualified` (schema.table): its declaration above, else one with the columns of `schema`."""
    table = METADATA.tables.get(".".join(split_name(qualified)))
    if table is not None:
        return table
    if schema is None:
        raise TableTypeError(f"{qualified} is not declared in ml.core.tables; give the Arrow schema of its rows")
    return from_arrow(qualified, schema)
