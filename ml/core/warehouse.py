"""One small interface over the two warehouses: DuckDB (embedded) and PostgreSQL (server).

Data moves in bulk as Arrow: registered Arrow tables into DuckDB, CSV streamed through COPY into
PostgreSQL, and Arrow out of both. Nothing is written row by row.
"""

from __future__ import annotations

import hashlib
import io
from contextlib import contextmanager
from datetime import date
from pathlib import Path
from typing import Any, Callable, Iterator, Mapping, Sequence

import pyarrow as pa
import pyarrow.csv as pacsv

from ml.core.errors import TidemarkError
from ml.core.settings import Settings, WarehouseTarget

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


# PostgreSQL type OIDs of query results, and the Arrow type each is read as.
_POSTGRES_OIDS = {
    16: pa.bool_(), 20: pa.int64(), 21: pa.int16(), 23: pa.int32(), 700: pa.float32(), 701: pa.float64(),
    1082: pa.date32(), 1114: pa.timestamp("us"), 1184: pa.timestamp("us", tz="UTC"),
}
_NUMERIC_OID = 1700


# Catalog spellings of the types above that differ from how they are declared, after _type_key.
_TYPE_ALIASES = {"numeric(12,2)": "decimal(12,2)", "timestampwithouttimezone": "timestamp"}


def _type_key(declared: str) -> str:
    """A spelling of a column type that compares equal across declaration and catalog."""
    key = declared.lower().replace(" ", "")
    return _TYPE_ALIASES.get(key, key)


def _quote(identifier: str) -> str:
    """A double-quoted SQL identifier, the same in DuckDB and PostgreSQL."""
    return '"' + identifier.replace('"', '""') + '"'


class WarehouseError(TidemarkError, RuntimeError):
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
        """Run a query and return its result as one Arrow table, typed by the query's columns on both warehouses."""
        if self.kind == "duckdb":
            return self._con.sql(sql).to_arrow_table()
        schema = self._result_schema(sql)
        return pa.Table.from_batches(list(self._copy_out(sql, schema, 1 << 20)), schema=schema)

    def stream_arrow(self, sql: str, batch_rows: int = 200_000) -> Iterator[pa.RecordBatch]:
        """Run a query and yield its result as Arrow record batches of at most `batch_rows` rows.

        Memory stays bounded by a few batches, whatever the result's size: DuckDB hands over its
        result batch by batch, PostgreSQL's COPY output is parsed as it arrives.
        """
        if batch_rows < 1:
            raise WarehouseError(f"batch_rows must be at least 1, got {batch_rows}")
        if self.kind == "duckdb":
            reader = self._con.sql(sql).to_arrow_reader(batch_rows)
            yield from _rebatched(reader, batch_rows)
            return
        schema = self._result_schema(sql)
        yield from _rebatched(self._copy_out(sql, schema, batch_rows), batch_rows)

    def _copy_out(self, sql: str, schema: pa.Schema, batch_rows: int) -> Iterator[pa.RecordBatch]:
        """A PostgreSQL query's rows through COPY ... TO STDOUT, parsed as they arrive into `schema`."""
        block_size = max(1 << 20, min(64 << 20, 24 * batch_rows * len(schema)))
        read = pacsv.ReadOptions(column_names=schema.names, block_size=block_size)
        convert = pacsv.ConvertOptions(column_types=schema, strings_can_be_null=True, quoted_strings_can_be_null=False,
                                       true_values=["t"], false_values=["f"])
        with self._con.cursor() as cur:
            with cur.copy(f"copy ({sql}) to stdout with (format csv)") as copy:
                stream = io.BufferedReader(_CopyStream(copy), buffer_size=1 << 20)
                if not stream.peek(1):  # no rows: pyarrow refuses an empty CSV, so there is nothing to parse
                    return
                yield from pacsv.open_csv(stream, read_options=read, convert_options=convert)

    def _result_schema(self, sql: str) -> pa.Schema:
        """The Arrow schema that a PostgreSQL query's columns are read as (unknown types: strings)."""
        with self._con.cursor() as cur:
            cur.execute(f"select * from ({sql}) as q limit 0")
            fields = []
            for col in cur.description:
                if col.type_code == _NUMERIC_OID:  # numeric(p, s); unconstrained or wider ones as double
                    exact = col.precision and col.precision <= 38
                    kind = pa.decimal128(col.precision, col.scale) if exact else pa.float64()
                else:
                    kind = _POSTGRES_OIDS.get(col.type_code, pa.string())
                fields.append(pa.field(col.name, kind))
        return pa.schema(fields)

    def bucket_sql(self, expression: str, buckets: int, *, integer: bool) -> str:
        """A SQL expression mapping `expression` to a bucket in [0, buckets), the same in both warehouses.

        Integers go by their absolute value modulo `buckets`; anything else by the first 32 bits of
        the MD5 of its text form.
        """
        if integer:
            return f"(abs({expression}) % {int(buckets)})"
        digest = f"substr(md5(cast({expression} as varchar)), 1, 8)"
        number = f"('0x' || {digest})::bigint" if self.kind == "duckdb" else f"('x' || {digest})::bit(32)::bigint"
        return f"({number} % {int(buckets)})"

    def replace_rows(
        self,
        qualified: str,
        schema: pa.Schema,
        parts: Sequence[tuple[Mapping[str, Any], Sequence[Path]]],
        *,
        before_commit: Callable[[], None] | None = None,
    ) -> int:
        """Replace row sets of `qualified` with the rows of Parquet files, all in one transaction.

        `parts` pairs a filter (`{column: value}`, all must hold) with the files whose rows replace the
        rows it matches. A failure at any point, the process dying included, leaves the table as it was.
        `before_commit` runs after the last insert, inside the transaction. Returns the rows inserted.
        """
        import pyarrow.parquet as pq

        self.ensure_table(qualified, schema)
        keys = list(parts[0][0]) if parts else []
        if any(list(where) != keys for where, _ in parts):
            raise WarehouseError(f"replace_rows into {qualified}: every part must filter on the same columns {keys}")
        if self.kind == "postgres" and keys:  # the deletes need an index on PostgreSQL
            index = f"{qualified.split('.')[-1]}_{'_'.join(keys)}_idx"
            self.execute(f"create index if not exists {index} on {qualified} ({', '.join(keys)})")
        marker = "?" if self.kind == "duckdb" else "%s"
        condition = " and ".join(f"{_quote(key)} = {marker}" for key in keys) or "true"
        cols = ", ".join(_quote(name) for name in schema.names)
        written = 0
        with self.transaction():
            for where, files in parts:
                self.execute(f"delete from {qualified} where {condition}", tuple(where.values()))
                files = [Path(f) for f in files]
                if not files:
                    continue
                if self.kind == "duckdb":
                    listed = ", ".join("'" + str(f).replace("'", "''") + "'" for f in files)
                    self.execute(f"insert into {qualified} ({cols}) select {cols} from read_parquet([{listed}])")
                else:
                    with self._con.cursor() as cur:
                        with cur.copy(f"copy {qualified} ({cols}) from stdin with (format csv)") as copy:
                            for path in files:
                                for batch in pq.ParquetFile(path).iter_batches(batch_size=65_536, columns=schema.names):
                                    buf = io.BytesIO()
                                    pacsv.write_csv(batch, buf, pacsv.WriteOptions(include_header=False))
                                    copy.write(buf.getbuffer())
                written += sum(pq.ParquetFile(f).metadata.num_rows for f in files)
            if before_commit is not None:
                before_commit()
        return written

    def content_hash(self, qualified: str, key: str) -> str:
        """sha256 over a table's rows in key order, as Arrow IPC; stable for the same contents."""
        digest = hashlib.sha256()
        table = self.read_arrow(f"select * from {qualified} order by {key}")
        digest.update(table.schema.to_string().encode())
        for batch in table.combine_chunks().to_batches(max_chunksize=65_536):
            digest.update(batch.serialize().to_pybytes())
        return digest.hexdigest()


class _CopyStream(io.RawIOBase):
    """A readable byte stream over the data blocks of a psycopg COPY ... TO STDOUT."""

    def __init__(self, copy):
        self._blocks = iter(copy)
        self._rest = memoryview(b"")

    def readable(self) -> bool:
        return True

    def readinto(self, buffer) -> int:
        size, filled = len(buffer), 0
        while filled < size:
            if not self._rest:
                block = next(self._blocks, None)
                if block is None:
                    break
                self._rest = memoryview(block)
            n = min(size - filled, len(self._rest))
            buffer[filled : filled + n] = self._rest[:n]
            self._rest, filled = self._rest[n:], filled + n
        return filled


def _rebatched(reader, batch_rows: int) -> Iterator[pa.RecordBatch]:
    """The batches of a reader, sliced so that none holds more than `batch_rows` rows; empty ones dropped."""
    for batch in reader:
        for start in range(0, batch.num_rows, batch_rows):
            yield batch.slice(start, batch_rows)
