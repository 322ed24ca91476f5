"""The one way SQL is written for the warehouses: SQLAlchemy Core, compiled by one PostgreSQL dialect.

DuckDB reads PostgreSQL's SQL, so one dialect serves both; its identifier quoting also covers
DuckDB's own keywords. Spark SQL takes the same statements with backquoted identifiers and Spark's
type names, a variant of that dialect. Values are always bound parameters, in the style each driver
takes: `?` for DuckDB, `%(name)s` for psycopg, `:name` for Spark. Identifiers in SQL text go
through `quote`, the one quoting rule.
"""

from __future__ import annotations

import re
from functools import lru_cache
from typing import Any, Union

import sqlalchemy as sa
from sqlalchemy.dialects.postgresql.base import (
    RESERVED_WORDS,
    PGDialect,
    PGIdentifierPreparer,
    PGTypeCompiler,
)
from sqlalchemy.sql.expression import ClauseElement

# A Core statement (values bound), or SQL text that holds no values: DDL, or a fixed query.
Statement = Union[ClauseElement, str]
_PARAMSTYLES = {"duckdb": "qmark", "postgres": "pyformat", "spark": "named"}
# One part of "schema.table": double-quoted (with "" for a quote) or plain.
_PART = re.compile(r'"((?:[^"]|"")*)"|([^."]+)')


@lru_cache(maxsize=1)
def _duckdb_keywords() -> frozenset[str]:
    """The installed DuckDB's keywords that cannot name a column unquoted."""
    import duckdb

    with duckdb.connect() as con:
        rows = con.execute("select keyword_name from duckdb_keywords() "
                           "where keyword_category in ('reserved', 'type_function')").fetchall()
    return frozenset(row[0].lower() for row in rows)


class _Preparer(PGIdentifierPreparer):
    """PostgreSQL's identifier quoting, which also quotes DuckDB's keywords."""

    def __init__(self, dialect, **kwargs):
        super().__init__(dialect, **kwargs)
        self.reserved_words = RESERVED_WORDS | _duckdb_keywords()


class _Dialect(PGDialect):
    preparer = _Preparer
    supports_statement_cache = True


class _SparkPreparer(_Preparer):
    """Spark SQL quotes identifiers in backquotes: a double-quoted word is a string there."""

    def __init__(self, dialect, **kwargs):
        super().__init__(dialect, initial_quote="`", escape_quote="`", **kwargs)


class _SparkTypes(PGTypeCompiler):
    """Spark SQL's names of the column types that PostgreSQL spells otherwise."""

    def visit_VARCHAR(self, type_, **kw):
        return "STRING"

    visit_TEXT = visit_CHAR = visit_NVARCHAR = visit_VARCHAR

    def visit_DOUBLE_PRECISION(self, type_, **kw):
        return "DOUBLE"

    visit_FLOAT = visit_DOUBLE = visit_DOUBLE_PRECISION

    def visit_TIMESTAMP(self, type_, **kw):
        return "TIMESTAMP"

    visit_DATETIME = visit_TIMESTAMP

    def visit_NUMERIC(self, type_, **kw):
        return f"DECIMAL({type_.precision}, {type_.scale})" if type_.precision is not None else "DECIMAL(38, 10)"

    visit_DECIMAL = visit_NUMERIC


class _SparkDialect(_Dialect):
    preparer = _SparkPreparer
    type_compiler_cls = _SparkTypes


@lru_cache(maxsize=None)
def dialect(kind: str = "postgres") -> PGDialect:
    """The dialect that compiles statements for a warehouse kind ("duckdb", "postgres" or "spark")."""
    return (_SparkDialect if kind == "spark" else _Dialect)(paramstyle=_PARAMSTYLES[kind])


def quote(identifier: str, kind: str = "postgres") -> str:
    """`identifier` as SQL, quoted where it needs it (capitals, keywords, other characters): double quotes,
    backquotes on Spark."""
    return dialect(kind).identifier_preparer.quote(identifier)


def split_name(qualified: str) -> tuple[str, str]:
    """(schema, table) of "schema.table", either part possibly double-quoted."""
    parts = [plain or quoted.replace('""', '"') for quoted, plain in _PART.findall(qualified)]
    if len(parts) != 2:
        raise ValueError(f"{qualified!r} is not a schema-qualified table name (schema.table)")
    return parts[0], parts[1]


def qualify(qualified: str, kind: str = "postgres") -> str:
    """"schema.table" as SQL text, each part quoted by `quote`."""
    return ".".join(quote(part, kind) for part in split_name(qualified))


def named_table(qualified: str, *columns: str) -> sa.TableClause:
    """A table the ml package does not declare (a dbt relation, a catalog view) with the columns a query uses."""
    schema, name = split_name(qualified)
    return sa.table(name, *(sa.column(c) for c in dict.fromkeys(columns)), schema=schema)


def compiled(statement: Statement, kind: str) -> tuple[str, Any]:
    """SQL text and parameters for `kind`'s driver: a tuple for DuckDB, a dict for psycopg and Spark (None for
    plain text)."""
    if isinstance(statement, str):
        return statement, (() if kind == "duckdb" else None)
    out = statement.compile(dialect=dialect(kind), compile_kwargs={"render_postcompile": True})
    if kind == "duckdb":
        return str(out), tuple(out.params[name] for name in getattr(out, "positiontup", None) or ())
    return str(out), out.params
