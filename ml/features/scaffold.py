"""Scaffold a user's model from a raw table: a dbt source, a typed staging model, and a spec to train it.

`plan_model` is pure: from the raw table's rows it infers each column's type and renders the files.
The staging model follows the shape of dbt_project/models/staging/public_data/: rename and cast only,
blanks become nulls, the label becomes a 0/1 integer and the time column a date, and its `.yml`
enforces a contract with the inferred `data_type`s. The spec starts from documented defaults that
`python -m ml spec check` then checks against the built model.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import date
from pathlib import Path

import pyarrow as pa
import pyarrow.compute as pc

from ml.core.errors import TidemarkError
from ml.core.settings import Settings
from ml.core.spec import SPEC_DIR
from ml.core.spec_check import near_names
from ml.core.sql import quote
from ml.core.warehouse import Warehouse
from ml.ingest.csv_files import SOURCE_ROW
from ml.ingest.load import RAW_SCHEMA

NAME = re.compile(r"^[a-z][a-z0-9_]{0,62}$")
INTEGER_MAX = 2**31 - 1
# Text that reads as a number but is a code: a leading zero (zip codes, account numbers) keeps it text.
_LEADING_ZERO = r"^[+-]?0[0-9]"
# The spellings of a binary label, (positive, negative), compared trimmed and lower-cased.
LABEL_PAIRS = (("1", "0"), ("true", "false"), ("t", "f"), ("yes", "no"), ("y", "n"))
_TEXT_TYPES = (("integer", pa.int64()), ("double precision", pa.float64()), ("date", pa.date32()),
               ("timestamp", pa.timestamp("us")))


class ScaffoldError(TidemarkError, ValueError):
    """A model cannot be scaffolded from the raw table; the message names the problem and what to pass instead."""


@dataclass(frozen=True)
class Column:
    """One column of the staging model: its raw name, its name and contract type, and the SQL that makes it."""

    raw: str
    name: str
    data_type: str
    sql: str


@dataclass(frozen=True)
class Scaffold:
    """A planned model: its spec name, the staging relation it reads, and each file's path and text."""

    name: str
    relation: str
    files: dict[Path, str]


# -- inference --------------------------------------------------------------------------------------
def _is_text(values: pa.Array) -> bool:
    return pa.types.is_string(values.type) or pa.types.is_large_string(values.type)


def _present(values: pa.Array) -> pa.Array:
    """Text values trimmed, without blanks and nulls."""
    trimmed = pc.utf8_trim_whitespace(values)
    return trimmed.filter(pc.not_equal(trimmed, "")).drop_null()


def _integer_type(values: pa.Array) -> str:
    low, high = pc.min(values).as_py(), pc.max(values).as_py()
    return "integer" if low is None or -INTEGER_MAX <= low and high <= INTEGER_MAX else "bigint"


def infer_type(values: pa.Array) -> str:
    """The contract data_type of a raw column from its values: integer, bigint, double precision, date,
    timestamp, boolean or varchar. Text is read trimmed with blanks as missing; text numbers with a
    leading zero are codes and stay varchar, and so does a column with no values at all."""
    values = values.combine_chunks() if isinstance(values, pa.ChunkedArray) else values
    kind = values.type
    if _is_text(values):
        return _infer_text(_present(values))
    if pa.types.is_integer(kind):
        return _integer_type(values)
    if pa.types.is_floating(kind) or pa.types.is_decimal(kind):
        return "double precision"
    if pa.types.is_date(kind):
        return "date"
    if pa.types.is_timestamp(kind):
        return "timestamp"
    if pa.types.is_boolean(kind):
        return "boolean"
    return "varchar"


def _infer_text(present: pa.Array) -> str:
    if len(present) == 0 or pc.any(pc.match_substring_regex(present, _LEADING_ZERO)).as_py():
        return "varchar"
    for name, arrow_type in _TEXT_TYPES:
        try:
            parsed = pc.cast(present, arrow_type)
        except (pa.ArrowInvalid, pa.ArrowNotImplementedError):
            continue
        return _integer_type(parsed) if name == "integer" else name
    return "varchar"


def label_sql(column: str, values: pa.Array, table: str) -> str:
    """The SQL that turns a raw label into a 0/1 integer; ScaffoldError when its values are not binary."""
    values = values.combine_chunks() if isinstance(values, pa.ChunkedArray) else values
    source = quote(column)
    if _is_text(values):
        seen = set(pc.unique(pc.utf8_lower(_present(values))).to_pylist())
        pair = next((pair for pair in LABEL_PAIRS if seen <= set(pair)), None)
        if pair == ("1", "0"):
            return f"cast(nullif(trim({source}), '') as integer)"
        if pair is not None:
            yes, no = pair
            return f"cast(case lower(trim({source})) when '{yes}' then 1 when '{no}' then 0 end as integer)"
    else:
        seen = set(pc.unique(values.drop_null()).to_pylist())
        if seen <= {0, 1}:
            return f"cast({source} as integer)"
    shown = ", ".join(repr(v) for v in sorted(seen, key=str)[:8]) + (", ..." if len(seen) > 8 else "")
    raise ScaffoldError(f"--label {column!r}: {RAW_SCHEMA}.{table}.{column} is not binary (it holds {shown}); "
                        "a label is 0/1, true/false or yes/no: name such a column, or derive one in the file")


def _time_sql(column: str, values: pa.Array, data_type: str, table: str) -> str:
    """The SQL that makes the raw time column a date; ScaffoldError when it holds no dates."""
    source = quote(column)
    if not _is_text(values) and data_type in ("date", "timestamp"):
        return f"cast({source} as date)"
    if data_type == "date":
        return f"cast(nullif(trim({source}), '') as date)"
    if data_type == "timestamp":
        return f"cast(cast(nullif(trim({source}), '') as timestamp) as date)"
    present = _present(values) if _is_text(values) else values.drop_null()
    example = f" such as {present[0].as_py()!r}" if len(present) else ""
    raise ScaffoldError(f"--time {column!r}: {RAW_SCHEMA}.{table}.{column} holds values that are not dates{example}; "
                        "name a column of dates (YYYY-MM-DD) or timestamps, or leave --time out for a snapshot")


def _value_sql(column: str, values: pa.Array, data_type: str) -> str:
    source = quote(column)
    if not _is_text(values):
        return f"cast({source} as {data_type})"
    return source if data_type == "varchar" else f"cast(nullif(trim({source}), '') as {data_type})"


def output_name(raw: str) -> str:
    """The staging model's name for a raw column: the same, unless SQL reserves it (then with `_value`)."""
    return raw if quote(raw) == raw else f"{raw}_value"


def _unique(table: pa.Table, column: str, time: str | None) -> bool:
    """Whether `column` holds each value once (once per time value, with `time`)."""
    grain = [column, *filter(None, [time])]
    return table.select(grain).group_by(grain).aggregate([]).num_rows == table.num_rows


def default_entity(table: pa.Table, raw_table: str, time: str | None) -> str:
    """The column named id or <table>_id (or <singular>_id) that is unique (per time value); ScaffoldError if none."""
    names = ["id", f"{raw_table}_id"] + ([f"{raw_table[:-1]}_id"] if raw_table.endswith("s") else [])
    keys = [name for name in names if name in table.column_names]
    for key in keys:
        if _unique(table, key, time):
            return key
    per = f" per {time}" if time else ""
    found = f"{keys[0]} is not unique{per}" if keys else f"no column is named {' or '.join(names)}"
    unique = [c for c in table.column_names if c != time and _unique(table, c, time)]
    listed = f"unique{per}: {', '.join(unique)}" if unique else f"none is unique{per}"
    raise ScaffoldError(f"{RAW_SCHEMA}.{raw_table}: {found}; name the column that identifies a row{per} with "
                        f"--entity COLUMN (columns {listed})")


# -- the plan ---------------------------------------------------------------------------------------
def _require_column(table: pa.Table, raw_table: str, option: str, column: str) -> None:
    if column not in table.column_names:
        near = near_names(column, table.column_names)
        hint = f" (near names: {', '.join(near)})" if near else ""
        raise ScaffoldError(f"{option} {column!r} is not a column of {RAW_SCHEMA}.{raw_table}{hint}; its columns: "
                            f"{', '.join(table.column_names)}")


def plan_model(table: pa.Table, *, name: str, raw_table: str, label: str, entity: str | None, time: str | None,
               dbt_project: Path, specs_dir: Path) -> Scaffold:
    """The files of a model named `name` over the rows `table` of raw.`raw_table`, checked and rendered."""
    for option, column in (("--label", label), ("--entity", entity), ("--time", time)):
        if column is not None:
            _require_column(table, raw_table, option, column)
    label_expression = label_sql(label, table[label], raw_table)
    entity = entity or default_entity(table, raw_table, time)
    columns = []
    for raw in table.column_names:
        if raw == SOURCE_ROW and entity != SOURCE_ROW:
            continue  # the record's position in the file: an identifier, never a feature
        values = table[raw].combine_chunks()
        data_type = "integer" if raw == label else infer_type(values)
        if raw == label:
            sql = label_expression
        elif raw == time:
            sql, data_type = _time_sql(raw, values, data_type, raw_table), "date"
        else:
            sql = _value_sql(raw, values, data_type)
        columns.append(Column(raw, output_name(raw), data_type, sql))
    names = {c.raw: c.name for c in columns}
    relation = f"stg_{name}__{raw_table}"
    folder = dbt_project / "models" / "staging" / name
    roles = {"entity": names[entity], "time": time and names[time], "label": names[label]}
    span = _span(table[time]) if time else None
    return Scaffold(name, relation, {
        folder / f"_{name}__sources.yml": _sources_yml(name, raw_table, relation),
        folder / f"{relation}.sql": _staging_sql(name, raw_table, columns),
        folder / f"_{name}__models.yml": _models_yml(relation, raw_table, columns, roles),
        specs_dir / f"{name}.yaml": _spec_yaml(name, raw_table, relation, columns, roles, span),
    })


def _span(values: pa.ChunkedArray) -> int:
    """Days from the first to the last date of a time column (inclusive), as the staging model casts it."""
    values = values.combine_chunks()
    present = _present(values) if _is_text(values) else values.drop_null()
    dates = pc.cast(pc.cast(present, pa.timestamp("us")), pa.date32()) if len(present) else present
    first: date | None = pc.min(dates).as_py() if len(dates) else None
    return (pc.max(dates).as_py() - first).days + 1 if first else 1


# -- rendering --------------------------------------------------------------------------------------
def _sources_yml(name: str, raw_table: str, relation: str) -> str:
    return f"""version: 2

sources:
  - name: {name}
    description: >
      The raw table of the model {name}, landed by `python -m ml load-csv` (every column text as in
      the file, plus source_row, the record's position in the file). Reloading replaces it.
    schema: {RAW_SCHEMA}
    tables:
      - name: {raw_table}
        description: "The rows that {relation} renames and types."
"""


def _staging_sql(name: str, raw_table: str, columns: list[Column]) -> str:
    lines = []
    for i, col in enumerate(columns):
        comma = "," if i < len(columns) - 1 else ""
        if col.name != col.raw:
            lines.append(f"        -- {col.raw} is a reserved word in SQL, so it is renamed")
        lines.append(f"        {col.name if col.sql == col.name else f'{col.sql} as {col.name}'}{comma}")
    body = "\n".join(lines)
    return f"""with

source as (
    select * from {{{{ source('{name}', '{raw_table}') }}}}
),

renamed as (
    select
{body}
    from source
)

select * from renamed
"""


def _models_yml(relation: str, raw_table: str, columns: list[Column], roles: dict) -> str:
    entity, time, label = roles["entity"], roles["time"], roles["label"]
    grain = f"one row per {entity} per {time}" if time else f"one row per {entity}"
    tests = (f"""    data_tests:
      - unique_combination:
          arguments:
            columns: ["{time}", "{entity}"]
""" if time else "")
    described = {entity: "The entity key: what one row describes.", label: "The label: 1 or 0 (blank: unknown).",
                 **({time: "The as-of date of the row."} if time else {})}
    column_tests = {entity: "[not_null]" if time else "[not_null, unique]", **({time: "[not_null]"} if time else {})}
    entries = []
    for col in columns:
        entry = [f"      - name: {col.name}", f"        data_type: {col.data_type}",
                 f'        description: "{described.get(col.name, f"{col.raw} in the file.")}"']
        if col.name in column_tests:
            entry.append(f"        data_tests: {column_tests[col.name]}")
        if col.name == label:
            entry += ["        data_tests:", "          - accepted_values:", "              arguments:",
                      "                values: [0, 1]", "                quote: false"]
        entries.append("\n".join(entry))
    listed = "\n".join(entries)
    return f"""version: 2

models:
  - name: {relation}
    description: >
      {grain[0].upper() + grain[1:]}, renamed and typed from {RAW_SCHEMA}.{raw_table}. The types were
      inferred from the values by `python -m ml new-model`; blanks become nulls and the label
      {label} a 0/1 integer. The enforced contract below is what the spec's features are read from.
    config:
      contract:
        enforced: true
{tests}    columns:
{listed}
"""


def _spec_yaml(name: str, raw_table: str, relation: str, columns: list[Column], roles: dict, span: int | None) -> str:
    entity, time, label = roles["entity"], roles["time"], roles["label"]
    dates = [c.name for c in columns if c.data_type in ("date", "timestamp") and c.name != time]
    exclude = ""
    if dates:
        exclude = f"""  # Dates are not features: derive a number from one in the staging model (e.g. days since) to use it.
  exclude: [{', '.join(dates)}]
"""
    if time:
        window = max(1, min(14, (span or 1) // 5))
        keys = f"""# The as-of date of each row: training as of a day reads only the rows (and labels) known by then.
time_column: {time}
# The as-of grid: daily, weekly or monthly; null reads it from the dates the relation holds.
cadence: null"""
        split = f"""split:
  # time: train on the past, pick the best candidate on the validation days after it, test on the latest
  # days (random: rows drawn at random, stratified by the label).
  strategy: time
  # Days in each held-out window; the history has {span} days. Longer windows give steadier metrics and
  # leave fewer days to train on (the windows and two horizon gaps must fit in the history).
  validation_days: {window}
  test_days: {window}
  # Train on every k-th date only: raise it when the rows of one {entity} on neighbouring dates are near duplicates.
  sample_every_days: 1"""
    else:
        keys = """# No time column: the rows are one snapshot, split at random.
time_column: null"""
        split = """split:
  # random: rows drawn at random, stratified by the label (there is no time to split on).
  strategy: random
  # Shares of the rows held out to pick the best candidate (validation) and to test it (test).
  validation_fraction: 0.2
  test_fraction: 0.2"""
    horizon = ""
    if time:
        horizon = f"""  # Days after {time} until the label is known (e.g. 30 for "within 30 days"); 0: known on the day.
  # Training as of D reads labels dated D minus this or earlier, and the time split leaves this many
  # days between its windows, so that no label leaks from one window into the next.
  horizon_days: 0
"""
    return f"""# {name}: a model over {RAW_SCHEMA}.{raw_table}, scaffolded by `python -m ml new-model`. Edit any setting,
# then `python -m ml spec check {name}` says whether the spec, the dbt models and the warehouse agree.
# The model's name (in the registry, the DAGs and `--spec`) and what it predicts.
name: {name}
description: Probability that {label} is 1, per {entity}{f' per {time}' if time else ''}, from {RAW_SCHEMA}.{raw_table}.
# true: the platform runs the train, score and monitor DAGs of this model; false: the command line only.
served: true
# The column that identifies what a row describes; one row per value{f" per {time}" if time else ""}.
entity_key: {entity}
{keys}
features:
  # The dbt model read; every column of its enforced contract but the key, time and label is a feature.
  relation: {relation}
{exclude}label:
  # The 0/1 outcome to predict (rows where it is null are not trained on).
  column: {label}
{horizon}{split}
# Each candidate is fitted on the training rows; the best on validation roc_auc becomes the challenger.
candidates:
  # Gradient-boosted trees, usually the strongest on tables. Lower num_leaves or raise min_child_samples
  # for small or noisy data; early stopping on the validation rows picks the number of trees up to
  # n_estimators (a lower learning_rate needs more of them).
  - name: lightgbm
    kind: lightgbm
    params: {{learning_rate: 0.05, num_leaves: 15, min_child_samples: 50, n_estimators: 1000, early_stopping_rounds: 50}}
  # A regularised logistic regression, the baseline to beat: C is the inverse strength of the
  # regularisation (lower: a simpler model); raise max_iter if it did not converge.
  - name: logistic
    kind: logistic
    params: {{C: 1.0, max_iter: 1000}}
# The metric that ranks the candidates and decides challenger against champion (roc_auc, pr_auc, log_loss, brier).
primary_metric: roc_auc
promotion:
  # The least a challenger must reach on the test rows to be promoted at all. A ROC-AUC of 0.6 is only
  # a little better than chance: raise it towards what the model reaches once you know that.
  floors: {{roc_auc: 0.6}}
  # The largest calibration error allowed: how far the predicted probabilities may be from the observed
  # rates (0.1: ten points). Lower it where the probabilities themselves are used, not just the ranking.
  max_ece: 0.1
  # How much a challenger must beat the champion by (the lower end of a bootstrap interval of the gain).
  min_improvement: 0.0
  # With fairness attributes below, the largest equalized-odds difference allowed across their groups:
  # max_disparity: 0.1
  # true: a person approves each promotion the gate passed, in the Airflow UI's required actions.
  approval: {{required: false, timeout_hours: 72}}
# Reason codes: the top_k features that moved each score most, for the top fraction of each day's scores.
explain: {{top_k: 3, rows: top_fraction, fraction: 0.1}}
# Columns to report selection rate, TPR, FPR and calibration per group of (e.g. an age band or a region).
fairness: {{attributes: []}}
# Cron of the regular retraining; null retrains only when monitoring asks for it.
schedule: {'"@weekly"' if time else "null"}
# Seed of the split and of the fits: the same rows and seed give the same model.
seed: 0
"""


# -- the command ------------------------------------------------------------------------------------
def scaffold(settings: Settings, name: str, raw_table: str, *, label: str, entity: str | None = None,
             time: str | None = None, dbt_project: Path | None = None, force: bool = False) -> Scaffold:
    """Read raw.`raw_table`, plan the model `name` and write its files; existing files only with `force`."""
    if not NAME.match(name):
        raise ScaffoldError(f"model name {name!r} is not valid: use lower-case letters, digits and _, starting "
                            "with a letter, e.g. churn_v2")
    raw_table = raw_table.removeprefix(f"{RAW_SCHEMA}.")
    if not NAME.match(raw_table):
        raise ScaffoldError(f"--table {raw_table!r} is not a raw table name: use the name given to "
                            "`python -m ml load-csv FILE TABLE`, e.g. telco_customers")
    qualified = f"{RAW_SCHEMA}.{raw_table}"
    with Warehouse.connect(settings, read_only=True) as wh:
        if not wh.table_exists(qualified):
            raise ScaffoldError(f"{qualified} is not in the warehouse ({settings.warehouse.url}); load it with "
                                f"`python -m ml load-csv FILE {raw_table}`")
        rows = wh.read_arrow(f"select * from {quote(RAW_SCHEMA)}.{quote(raw_table)}")
    plan = plan_model(rows, name=name, raw_table=raw_table, label=label, entity=entity, time=time,
                      dbt_project=dbt_project or settings.dbt_project_dir,
                      specs_dir=settings.specs_dir or SPEC_DIR)
    existing = [str(path) for path in plan.files if path.exists()]
    if existing and not force:
        raise ScaffoldError(f"model {name!r} would overwrite {', '.join(existing)}; pick another name, or pass "
                            "--force to replace them")
    for path, text in plan.files.items():
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    return plan
