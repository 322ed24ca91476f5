"""Land a CSV file in the warehouse as a raw table of text columns, replacing the whole table.

Raw keeps the file's values exactly as written (every column is text, a blank stays a blank
string); the dbt staging models do the renaming and casting. Column names are normalised to
snake_case by `snake_case`, and a `source_row` column records each record's position in the file,
since a SQL table has no row order of its own.
"""

from __future__ import annotations

import csv
import logging
import re
from pathlib import Path

import pyarrow as pa
import pyarrow.csv as pacsv

from ml.core.errors import TidemarkError
from ml.core.settings import Settings
from ml.core.warehouse import Warehouse
from ml.ingest.load import RAW_SCHEMA

log = logging.getLogger(__name__)
SOURCE_ROW = "source_row"
_IDENTIFIER = re.compile(r"[a-z_][a-z0-9_]{0,62}")


class TableLoadError(TidemarkError, ValueError):
    """A CSV file or a table name cannot be loaded; the message names it and says why."""


def snake_case(name: str) -> str:
    """A column name in snake_case: `customerID` -> `customer_id`, `TotalCharges` -> `total_charges`.

    The rule: split before an upper-case letter that follows a lower-case letter or digit, and
    before the last capital of a run of capitals followed by a lower-case letter (`HTTPCode` ->
    `http_code`); lower-case; turn every run of other characters into one `_`; strip `_` at the
    ends; prefix `c_` when the result starts with a digit.
    """
    spaced = re.sub(r"([A-Z]+)([A-Z][a-z])", r"\1_\2", name.strip())
    spaced = re.sub(r"([a-z0-9])([A-Z])", r"\1_\2", spaced)
    snake = re.sub(r"[^a-z0-9]+", "_", spaced.lower()).strip("_")
    if not snake:
        raise TableLoadError(f"column name {name!r} has no letters or digits to name a column by")
    return f"c_{snake}" if snake[0].isdigit() else snake


def read_text_csv(csv_path: Path) -> pa.Table:
    """Read a CSV with a header row into Arrow: snake_case names, every value a string, plus `source_row`."""
    csv_path = Path(csv_path)
    if not csv_path.is_file():
        raise TableLoadError(f"CSV file not found: {csv_path}")
    with csv_path.open(newline="", encoding="utf-8-sig") as handle:
        header = next(csv.reader(handle), None)
    if not header:
        raise TableLoadError(f"CSV file {csv_path} is empty: it needs a header row and at least one data row")
    try:
        names = [snake_case(column) for column in header]
    except TableLoadError as exc:
        raise TableLoadError(f"CSV file {csv_path}: {exc}; name every column in the header") from None
    clashes = sorted({n for n in names if names.count(n) > 1 or n == SOURCE_ROW})
    if clashes:
        originals = [column for column, n in zip(header, names) if n in clashes]
        raise TableLoadError(
            f"CSV file {csv_path}: columns {originals} give the same or a reserved snake_case name {clashes}; "
            "rename them in the header"
        )
    try:
        table = pacsv.read_csv(
            csv_path,
            read_options=pacsv.ReadOptions(column_names=names, skip_rows=1),
            convert_options=pacsv.ConvertOptions(
                column_types={n: pa.string() for n in names}, strings_can_be_null=False
            ),
        )
    except pa.ArrowInvalid as exc:
        raise TableLoadError(f"CSV file {csv_path} cannot be parsed: {exc}") from exc
    if table.num_rows == 0:
        raise TableLoadError(f"CSV file {csv_path} has a header but no data rows")
    return table.append_column(SOURCE_ROW, pa.array(range(1, table.num_rows + 1), pa.int64()))


def load_csv(settings: Settings | None, csv_path: Path, table: str, *, schema: str = RAW_SCHEMA) -> int:
    """Replace `schema.table` with the rows of `csv_path` in one transaction; returns the row count."""
    for kind, name in (("table", table), ("schema", schema)):
        if not isinstance(name, str) or not _IDENTIFIER.fullmatch(name):
            raise TableLoadError(
                f"{kind} name {name!r} is not valid: use lower-case letters, digits and _ "
                "(not starting with a digit, at most 63 characters), e.g. telco_customers"
            )
    rows = read_text_csv(csv_path)
    with Warehouse.connect(settings) as wh:
        written = wh.replace_table(f"{schema}.{table}", rows)
    log.info("loaded %d rows from %s into %s.%s", written, csv_path, schema, table)
    return written
