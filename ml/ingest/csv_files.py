"""Land a CSV file in the warehouse as a raw table of text columns, replacing the whole table.

The delimiter is a comma, semicolon, tab, pipe or runs of whitespace: `detect_delimiter` picks the one
that splits the header and the first lines into the same number of fields (more than one), unless the
caller names it. Raw keeps the file's values exactly as written (every column is text, a blank stays a blank
string); the dbt staging models do the renaming and casting. Column names are normalised to
snake_case by `snake_case`, and a `source_row` column records each record's position in the file,
since a SQL table has no row order of its own.
"""

from __future__ import annotations

import csv
import io
import logging
import re
from dataclasses import dataclass
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
WHITESPACE = " "  # stands for runs of spaces and tabs
DELIMITERS = {",": "comma", ";": "semicolon", "\t": "tab", "|": "pipe", WHITESPACE: "whitespace"}
_DELIMITER_NAMES = {**{name: char for char, name in DELIMITERS.items()}, "space": WHITESPACE, "\\t": "\t"}
SAMPLE_BYTES, SAMPLE_LINES = 64 * 1024, 50


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


@dataclass(frozen=True)
class CsvLoad:
    """What a CSV load wrote: rows, the table's columns (without `source_row`) and the delimiter it split on."""

    rows: int
    columns: tuple[str, ...]
    delimiter: str
    detected: bool

    @property
    def delimiter_name(self) -> str:
        return DELIMITERS.get(self.delimiter, repr(self.delimiter))


def parse_delimiter(value: str) -> str:
    """The delimiter a user named: one of , ; | or a tab, or comma, semicolon, tab, pipe, whitespace (or space)."""
    chosen = value if value in DELIMITERS else _DELIMITER_NAMES.get(value.strip().lower())
    if chosen is None:
        raise TableLoadError(f"delimiter {value!r} is not supported: use comma, semicolon, tab, pipe or whitespace "
                             "(or one of , ; |)")
    return chosen


def _split(lines: str, delimiter: str) -> list[list[str]]:
    """The records of `lines` split on `delimiter`, quotes honoured; blank lines are skipped."""
    if delimiter == WHITESPACE:
        lines = "\n".join(line.replace("\t", " ").strip() for line in lines.splitlines())
        reader = csv.reader(io.StringIO(lines), delimiter=" ", skipinitialspace=True)
    else:
        reader = csv.reader(io.StringIO(lines), delimiter=delimiter)
    return [record for record in reader if record]


def detect_delimiter(sample: str) -> str | None:
    """The delimiter that splits the header and every other record of `sample` into the same number of fields,
    more than one: the one giving the most fields of comma, semicolon, tab and pipe, else whitespace runs.
    None when none does (a one-column file, or a header and rows that disagree)."""
    counts = {}
    for delimiter in DELIMITERS:
        records = _split(sample, delimiter)
        widths = {len(record) for record in records}
        if records and len(records[0]) > 1 and widths == {len(records[0])}:
            counts[delimiter] = len(records[0])
    single = {d: n for d, n in counts.items() if d != WHITESPACE}
    if single:
        return max(single, key=single.get)
    return WHITESPACE if WHITESPACE in counts else None


def _sample(csv_path: Path) -> str:
    """The first whole lines of a file (at most SAMPLE_LINES of them, within SAMPLE_BYTES)."""
    with csv_path.open(newline="", encoding="utf-8-sig") as handle:
        text = handle.read(SAMPLE_BYTES)
        more = bool(handle.read(1))
    lines = text.splitlines(keepends=True)
    if more and len(lines) > 1:
        lines = lines[:-1]  # the last one may be cut short
    return "".join(lines[:SAMPLE_LINES])


def _separators(header: str) -> list[str]:
    """The delimiters, by name, that a header field holds (whitespace: between two words)."""
    held = [DELIMITERS[d] for d in DELIMITERS if d != WHITESPACE and d in header]
    return held + (["spaces"] if re.search(r"\S\s+\S", header) else [])


def read_text_csv(csv_path: Path, delimiter: str | None = None) -> tuple[pa.Table, str]:
    """Read a CSV with a header row into Arrow: snake_case names, every value a string, plus `source_row`;
    returns the table and the delimiter it split on.

    With `delimiter` None it is detected, and a file that then splits into one column although its header
    holds a separator is refused; a delimiter the caller names is used as given.
    """
    csv_path = Path(csv_path)
    if not csv_path.is_file():
        raise TableLoadError(f"CSV file not found: {csv_path}")
    sample = _sample(csv_path)
    chosen = delimiter or detect_delimiter(sample) or ","
    records = _split(sample, chosen)
    header = records[0] if records else None
    if not header:
        raise TableLoadError(f"CSV file {csv_path} is empty: it needs a header row and at least one data row")
    if delimiter is None and len(header) == 1 and _separators(header[0]):
        raise TableLoadError(
            f"CSV file {csv_path} splits into one column, named {header[0][:60]!r}, though its header holds "
            f"{' and '.join(_separators(header[0]))}: the delimiter could not be told from its first lines; "
            "name it with --delimiter comma, semicolon, tab, pipe or whitespace"
        )
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
    table = _read_whitespace(csv_path, names) if chosen == WHITESPACE else _read_delimited(csv_path, names, chosen)
    if table.num_rows == 0:
        raise TableLoadError(f"CSV file {csv_path} has a header but no data rows")
    return table.append_column(SOURCE_ROW, pa.array(range(1, table.num_rows + 1), pa.int64())), chosen


def _read_delimited(csv_path: Path, names: list[str], delimiter: str) -> pa.Table:
    """The data rows of a file with a one-character delimiter, every value a string."""
    try:
        return pacsv.read_csv(
            csv_path,
            read_options=pacsv.ReadOptions(column_names=names, skip_rows=1),
            parse_options=pacsv.ParseOptions(delimiter=delimiter),
            convert_options=pacsv.ConvertOptions(
                column_types={n: pa.string() for n in names}, strings_can_be_null=False
            ),
        )
    except pa.ArrowInvalid as exc:
        raise TableLoadError(f"CSV file {csv_path} cannot be parsed: {exc}") from exc


def _read_whitespace(csv_path: Path, names: list[str]) -> pa.Table:
    """The data rows of a file whose fields are separated by runs of spaces and tabs, every value a string."""
    records = _split(csv_path.read_text(encoding="utf-8-sig"), WHITESPACE)[1:]
    for number, record in enumerate(records, start=1):
        if len(record) != len(names):
            raise TableLoadError(f"CSV file {csv_path} cannot be parsed: data row {number} has {len(record)} "
                                 f"fields separated by whitespace, the header has {len(names)}")
    return pa.table({name: pa.array([r[i] for r in records], pa.string()) for i, name in enumerate(names)})


def load_csv_file(settings: Settings | None, csv_path: Path, table: str, *, schema: str = RAW_SCHEMA,
                  delimiter: str | None = None) -> CsvLoad:
    """Replace `schema.table` with the rows of `csv_path` in one transaction; what it wrote.

    `delimiter` (as `parse_delimiter` reads it) overrides the detected one.
    """
    for kind, name in (("table", table), ("schema", schema)):
        if not isinstance(name, str) or not _IDENTIFIER.fullmatch(name):
            raise TableLoadError(
                f"{kind} name {name!r} is not valid: use lower-case letters, digits and _ "
                "(not starting with a digit, at most 63 characters), e.g. telco_customers"
            )
    given = None if delimiter is None else parse_delimiter(delimiter)
    rows, used = read_text_csv(csv_path, given)
    with Warehouse.connect(settings) as wh:
        written = wh.replace_table(f"{schema}.{table}", rows)
    log.info("loaded %d rows from %s into %s.%s", written, csv_path, schema, table)
    columns = tuple(c for c in rows.column_names if c != SOURCE_ROW)
    return CsvLoad(written, columns, used, detected=given is None)


def load_csv(settings: Settings | None, csv_path: Path, table: str, *, schema: str = RAW_SCHEMA,
             delimiter: str | None = None) -> int:
    """Replace `schema.table` with the rows of `csv_path` in one transaction; returns the row count."""
    return load_csv_file(settings, csv_path, table, schema=schema, delimiter=delimiter).rows
