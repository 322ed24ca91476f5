"""One small interface over the two warehouses: DuckDB (embedded) and PostgreSQL (server).

Data moves in bulk as Arrow: registered Arrow tables into DuckDB, CSV streamed through COPY into
PostgreSQL, and Arrow out of both. Nothing is written row by row.
"""

from __future__ import annotations

import hashlib
import io
from contextlib import contextmanager
from datetime import date
from typing import Iterator, Mapping

import pyarrow as pa
import pyarrow.csv as pacsv

from ml.settings import Settings, WarehouseTarget

_DUCKDB_TYPES = {
    pa.int16(): "SMALLINT",
    pa.int32(): "INTEGER",
    pa.int64(): "BIGINT",
    pa.float64(): "DOUBLE",
    pa.string(): "VARCHAR",
    pa.date32(): "DATE",
    pa.timestamp("us"): "TIMESTAMP",
    pa.bool_(): "BOOLEAN",
}
_POSTGRES_TYPES = {**_DUCKDB_TYPES, pa.float64(): "DOUBLE PRECISION", pa.string(): "TEXT"}
# Money columns are stored as exact decimals in both warehouses.
DECIMAL_COLUMNS = frozenset({"monthly_price", "amount"})
_COPY_CHUNK = 1 << 20


# Catalog spellings of the types above that differ from how they are declared, after _type_key.
_TYPE_ALIASES = {"numeric(12,2)": "decimal(12,2)", "timestampwithouttimezone": "timestamp"}


def _type_key(declared: str) -> str:
    """A spelling of a column type that compares equal across declaration and catalog."""
    key = declared.lower().replace(" ", "")
    return _TYPE_ALIASES.get(key, key)


def _quote(identifier: str) -> str:
    """A double-quoted SQL identifier, the same in DuckDB and PostgreSQL."""
    return '"' + identifier.replace('"', '""') + '"'


class WarehouseError(RuntimeError):
    """A warehouse operation failed; the message says which table or query."""


class Warehouse:
    """A connection to the configured warehouse. Use as a context manager so it is always closed."""

    def __init__(self, target: WarehouseTarget, *, read_only: bool = False):
        self.target = target
        self.kind = target.kind
        if target.kind == "duckdb":
            import duckdb

            target.path.parent.mkdir(parents=True, exist_ok=True)
            self._con = duckdb.connect(str(target.path), read_only=read_only)
        else:
            import psycopg

            try:
                self._con = psycopg.connect(target.dsn(), autocommit=True)
            except psycopg.OperationalError as exc:
                raise WarehouseError(f"cannot connect to PostgreSQL at {target.url}: {exc}".strip()) from exc

    @classmethod
    def connect(cls, settings: Settings | None = None, *, read_only: bool = False) -> "Warehouse":
        return cls((settings or Settings.from_env()).warehouse, read_only=read_only)

    def __enter__(self) -> "Warehouse":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def close(self) -> None:
        self._con.close()

    # -- statements ---------------------------------------------------------------------------
    def execute(self, sql: str, params: tuple | None = None) -> None:
        if self.kind == "duckdb":
            self._con.execute(sql, params or ())
        else:
            self._con.execute(sql, params)

    def scalar(self, sql: str, params: tuple | None = None):
        if self.kind == "duckdb":
            rows = self._con.execute(sql, params or ()).fetchall()  # drains the result, freeing the connection
            row = rows[0] if rows else None
        else:
            row = self._con.execute(sql, params).fetchone()
        return None if row is None else row[0]

    @contextmanager
    def transaction(self) -> Iterator[None]:
        """All statements inside commit together or not at all."""
        if self.kind == "duckdb":
            self._con.execute("begin transaction")
            try:
                yield
            except BaseException:
                self._con.execute("rollback")
                raise
            self._con.execute("commit")
        else:
            with self._con.transaction():
                yield

    def table_exists(self, qualified: str) -> bool:
        schema, name = qualified.split(".", 1)
        sql = "select count(*) from information_schema.tables where table_schema = %s and table_name = %s"
        if self.kind == "duckdb":
            sql = sql.replace("%s", "?")
        return bool(self.scalar(sql, (schema, name)))

    # -- bulk data ----------------------------------------------------------------------------
    def ensure_table(self, qualified: str, schema: pa.Schema) -> None:
        """Create `qualified` (schema.table) with columns from an Arrow schema if it is missing."""
        types = _DUCKDB_TYPES if self.kind == "duckdb" else _POSTGRES_TYPES
        cols = []
        for field in schema:
            if field.name in DECIMAL_COLUMNS:
                cols.append(f"{field.name} DECIMAL(12, 2)")
            else:
                cols.append(f"{field.name} {types[field.type]}")
        schema_name = qualified.split(".", 1)[0]
        self.execute(f"create schema if not exists {schema_name}")
        self.execute(f"create table if not exists {qualified} ({', '.join(cols)})")

    def replace_partitions(self, partition_col: str, value: date, tables: Mapping[str, pa.Table]) -> int:
        """Atomically replace the rows where `partition_col = value` in each table with the given rows.

        All tables change in one transaction, so a failure leaves every table as it was.
        Returns the number of rows written.
        """
        for name, table in tables.items():
            self.ensure_table(name, table.schema)
            if self.kind == "postgres":  # DuckDB's zone maps serve the delete; PostgreSQL needs an index
                index = f"{name.split('.')[-1]}_{partition_col}_idx"
                self.execute(f"create index if not exists {index} on {name} ({partition_col})")
        written = 0
        with self.transaction():
            for name, table in tables.items():
                if self.kind == "duckdb":
                    self._con.execute(f"delete from {name} where {partition_col} = ?", (value,))
                    self._con.register("_tidemark_incoming", table)
                    try:
                        cols = ", ".join(table.column_names)
                        self._con.execute(f"insert into {name} ({cols}) select {cols} from _tidemark_incoming")
                    finally:
                        self._con.unregister("_tidemark_incoming")
                else:
                    self._con.execute(f"delete from {name} where {partition_col} = %s", (value,))
                    self._copy_in(name, table)
                written += table.num_rows
        return written

    def replace_table(self, qualified: str, table: pa.Table) -> int:
        """Atomically replace the whole of `qualified` (schema.table) with `table`; returns its rows.

        A table with the same columns is emptied and refilled, so views built on it stay in place.
        A table with other columns is dropped and created anew (on PostgreSQL with the views built
        on it, which dbt recreates on its next run). Column names are quoted as given.
        """
        schema_name = qualified.split(".", 1)[0]
        self.execute(f"create schema if not exists {schema_name}")
        wanted = [(f.name, self._column_type(f)) for f in table.schema]
        with self.transaction():
            if self._columns(qualified) == [(name, _type_key(kind)) for name, kind in wanted]:
                self.execute(f"truncate {qualified}" if self.kind == "postgres" else f"delete from {qualified}")
            else:
                self.execute(f"drop table if exists {qualified}" + (" cascade" if self.kind == "postgres" else ""))
                cols = ", ".join(f"{_quote(name)} {kind}" for name, kind in wanted)
                self.execute(f"create table {qualified} ({cols})")
            if self.kind == "duckdb":
                self._con.register("_tidemark_incoming", table)
                try:
                    cols = ", ".join(_quote(name) for name in table.column_names)
                    self._con.execute(f"insert into {qualified} ({cols}) select {cols} from _tidemark_incoming")
                finally:
                    self._con.unregister("_tidemark_incoming")
            else:
                self._copy_in(qualified, table)
        return table.num_rows

    def _column_type(self, field: pa.Field) -> str:
        if field.name in DECIMAL_COLUMNS:
            return "DECIMAL(12, 2)"
        types = _DUCKDB_TYPES if self.kind == "duckdb" else _POSTGRES_TYPES
        try:
            return types[field.type]
        except KeyError:
            raise WarehouseError(f"column {field.name!r} has Arrow type {field.type}, which has no warehouse type")

    def _columns(self, qualified: str) -> list[tuple[str, str]]:
        """(name, declared type) of each column of `qualified`, in order; empty when it does not exist."""
        schema, name = qualified.split(".", 1)
        if self.kind == "duckdb":
            sql = "select column_name, data_type from information_schema.columns "
            sql += "where table_schema = ? and table_name = ? order by ordinal_position"
            rows = self._con.execute(sql, (schema, name)).fetchall()
        else:
            sql = "select a.attname, format_type(a.atttypid, a.atttypmod) from pg_attribute a "
            sql += "where a.attrelid = to_regclass(%s) and a.attnum > 0 and not a.attisdropped order by a.attnum"
            rows = self._con.execute(sql, (f"{_quote(schema)}.{_quote(name)}",)).fetchall()
        return [(col, _type_key(kind)) for col, kind in rows]

    def _copy_in(self, name: str, table: pa.Table) -> None:
        buf = io.BytesIO()
        pacsv.write_csv(table, buf, pacsv.WriteOptions(include_header=False))
        data = buf.getbuffer()
        cols = ", ".join(_quote(col) for col in table.column_names)
        with self._con.cursor() as cur:
            with cur.copy(f"copy {name} ({cols}) from stdin with (format csv)") as copy:
                for start in range(0, len(data), _COPY_CHUNK):
                    copy.write(data[start : start + _COPY_CHUNK])

    def read_arrow(self, sql: str) -> pa.Table:
        """Run a query and return its result as one Arrow table."""
        if self.kind == "duckdb":
            return self._con.sql(sql).to_arrow_table()
        buf = io.BytesIO()
        with self._con.cursor() as cur:
            with cur.copy(f"copy ({sql}) to stdout with (format csv, header true)") as copy:
                for block in copy:
                    buf.write(block)
        buf.seek(0)
        if buf.getbuffer().nbytes == 0:
            return pa.table({})
        return pacsv.read_csv(buf, convert_options=pacsv.ConvertOptions(strings_can_be_null=True))

    def content_hash(self, qualified: str, key: str) -> str:
        """sha256 over a table's rows in key order, as Arrow IPC; stable for the same contents."""
        digest = hashlib.sha256()
        table = self.read_arrow(f"select * from {qualified} order by {key}")
        digest.update(table.schema.to_string().encode())
        for batch in table.combine_chunks().to_batches(max_chunksize=65_536):
            digest.update(batch.serialize().to_pybytes())
        return digest.hexdigest()
