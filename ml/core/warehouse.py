"""One small interface over the warehouses: DuckDB (embedded), PostgreSQL (server) and Spark (a cluster).

Statements are SQLAlchemy Core, compiled for the warehouse with their values bound (ml.core.sql).
Data moves in bulk as Arrow: registered Arrow tables and Parquet files into DuckDB, CSV streamed
through COPY into PostgreSQL, Arrow batches into Spark (ml.core.spark_tables), and Arrow out of all
three. Nothing is written row by row.
"""

from __future__ import annotations

import hashlib
import io
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Callable, Iterable, Iterator, Mapping, Sequence, Union

import pyarrow as pa
import pyarrow.csv as pacsv
import sqlalchemy as sa
from sqlalchemy.dialects.postgresql import BIT

from ml.core.connect_errors import POSTGRES_CONNECT_TIMEOUT_S, duckdb_problem, postgres_problem
from ml.core.errors import TidemarkError
from ml.core.settings import Settings, WarehouseTarget
from ml.core.sql import (
    Statement,
    compiled,
    dialect,
    named_table,
    qualify,
    quote,
    split_name,
)
from ml.core.tables import declared, from_arrow

_COPY_CHUNK = 1 << 20
# Rows to write: an Arrow table, or Parquet files read in batches; on Spark also a pyspark DataFrame computed on
# the executors (ml.core.spark_tables), written from there.
Rows = Union[pa.Table, Sequence[Path]]
# A part of a replace: the rows matching every `column = value`, and the rows that replace them.
Part = tuple[Mapping[str, Any], Rows]


# PostgreSQL type OIDs of query results, and the Arrow type each is read as.
_POSTGRES_OIDS = {
    16: pa.bool_(), 20: pa.int64(), 21: pa.int16(), 23: pa.int32(), 700: pa.float32(), 701: pa.float64(),
    1082: pa.date32(), 1114: pa.timestamp("us"), 1184: pa.timestamp("us", tz="UTC"),
}
_NUMERIC_OID = 1700


# Spellings of one column type in DDL and in either catalog, after _type_key.
_TYPE_ALIASES = {"varchar": "text", "doubleprecision": "double", "timestampwithouttimezone": "timestamp"}

# The catalog views that table_exists and _columns read.
_TABLES = named_table("information_schema.tables", "table_schema", "table_name")
_COLUMNS = named_table("information_schema.columns", "table_schema", "table_name", "column_name", "data_type",
                 "ordinal_position")
_PG_ATTRIBUTE = named_table("pg_catalog.pg_attribute", "attrelid", "attname", "atttypid", "atttypmod", "attnum",
                      "attisdropped")


def _type_key(declared: str) -> str:
    """A spelling of a column type that compares equal across DDL and both catalogs."""
    key = declared.lower().replace(" ", "").replace("numeric", "decimal")
    return _TYPE_ALIASES.get(key, key)


class WarehouseError(TidemarkError, RuntimeError):
    """A warehouse operation failed; the message says which table or query."""


class Warehouse:
    """A connection to the configured warehouse. Use as a context manager so it is always closed."""

    def __init__(self, target: WarehouseTarget, *, read_only: bool = False):
        self.target = target
        self.kind = target.kind
        if target.kind == "duckdb":
            import duckdb

            try:
                target.path.parent.mkdir(parents=True, exist_ok=True)
                self._con = duckdb.connect(str(target.path), read_only=read_only, config=target.duckdb_config)
            except (duckdb.Error, OSError) as exc:
                raise WarehouseError(duckdb_problem(target.path, exc)) from exc
        elif target.kind == "spark":
            from ml.core.spark import SparkUnavailable
            from ml.core.spark_tables import SparkTables

            try:
                self._spark = SparkTables(target)
            except SparkUnavailable as exc:
                raise WarehouseError(str(exc)) from exc
            self._con = None
        else:
            import psycopg

            try:
                self._con = psycopg.connect(target.dsn(), autocommit=True, connect_timeout=POSTGRES_CONNECT_TIMEOUT_S)
            except psycopg.OperationalError as exc:
                raise WarehouseError(postgres_problem(target, exc)) from exc

    @classmethod
    def connect(cls, settings: Settings | None = None, *, read_only: bool = False) -> "Warehouse":
        """The settings' warehouse (from the environment when not given); WarehouseError saying what to do
        when it cannot be opened."""
        return cls((settings or Settings.from_env()).warehouse, read_only=read_only)

    def __enter__(self) -> "Warehouse":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def close(self) -> None:
        """Close the connection. Spark's session stays up for the process (ml.core.spark.release ends it)."""
        if self._con is not None:
            self._con.close()

    # -- statements ---------------------------------------------------------------------------
    def execute(self, statement: Statement) -> None:
        """Run a Core statement (compiled for this warehouse, values bound) or SQL text that holds no values."""
        if self.kind == "spark":
            return self._spark.execute(statement)
        self._con.execute(*compiled(statement, self.kind))

    def rows(self, statement: Statement) -> list[dict[str, Any]]:
        """The rows of a small query, as dicts."""
        if self.kind == "spark":
            return self._spark.rows(statement)
        cur = self._con.execute(*compiled(statement, self.kind))
        names = [col[0] for col in cur.description]
        return [dict(zip(names, row)) for row in cur.fetchall()]

    def scalar(self, statement: Statement) -> Any:
        """The first value of a query's first row; None when it has no rows."""
        if self.kind == "spark":
            rows = self._spark.rows(statement)
            return next(iter(rows[0].values())) if rows else None
        rows = self._con.execute(*compiled(statement, self.kind)).fetchall()  # drains the result, freeing DuckDB
        return rows[0][0] if rows else None

    @contextmanager
    def transaction(self) -> Iterator[None]:
        """All statements inside commit together or not at all (Spark has no transactions: they run as they come)."""
        if self.kind == "spark":
            yield
        elif self.kind == "duckdb":
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
        if self.kind == "spark":
            return self._spark.table_exists(qualified)
        schema, name = split_name(qualified)
        query = sa.select(sa.func.count()).select_from(_TABLES).where(_TABLES.c.table_schema == schema,
                                                                      _TABLES.c.table_name == name)
        return bool(self.scalar(query))

    def ensure_table(self, qualified: str, schema: pa.Schema | None = None) -> sa.Table:
        """Create `qualified` (schema.table) if it is missing and return it.

        A table declared in ml.core.tables is created as declared (and `schema`, when given, must
        name only its columns); any other with the columns of the Arrow `schema`.
        """
        target = declared(qualified, schema)
        unknown = [name for name in (schema.names if schema is not None else ()) if name not in target.c]
        if unknown:
            raise WarehouseError(f"{qualified} has no columns {unknown} (its columns: {list(target.c.keys())}); "
                                 "write rows with the columns declared in ml.core.tables")
        if self.kind == "spark":
            self._spark.create(target)
            return target
        self.execute(sa.schema.CreateSchema(target.schema, if_not_exists=True))
        self.execute(sa.schema.CreateTable(target, if_not_exists=True))
        return target

    # -- bulk writes ----------------------------------------------------------------------------
    def replace_partitions(self, partition_col: str, value: Any, tables: Mapping[str, pa.Table]) -> int:
        """Atomically replace the rows where `partition_col = value` in each table with the given rows.

        All tables change in one transaction, so a failure leaves every table as it was.
        Returns the number of rows written.
        """
        return self._replace({name: (rows.schema, [({partition_col: value}, rows)]) for name, rows in tables.items()})

    def replace_rows(self, qualified: str, schema: pa.Schema, parts: Sequence[Part], *,
                     before_commit: Callable[[], None] | None = None) -> int:
        """Replace row sets of `qualified` with new rows, all in one transaction.

        `parts` pairs a filter (`{column: value}`, all must hold) with the rows that replace the rows
        it matches: an Arrow table, or Parquet files. A failure at any point, the process dying
        included, leaves the table as it was. `before_commit` runs after the last insert, inside the
        transaction. Returns the rows inserted.
        """
        return self.replace_tables({qualified: (schema, parts)}, before_commit=before_commit)

    def replace_tables(self, plan: Mapping[str, tuple[pa.Schema, Sequence[Part]]], *,
                       before_commit: Callable[[], None] | None = None) -> int:
        """Replace row sets of several tables (`{qualified: (schema, parts)}`), as `replace_rows` does for one,
        all in one transaction. Returns the rows inserted."""
        for qualified, (_, parts) in plan.items():
            keys = list(parts[0][0]) if parts else []
            if any(list(where) != keys for where, _ in parts):
                raise WarehouseError(f"replacing rows of {qualified}: every part must filter on the same columns {keys}")
        return self._replace(plan, before_commit)

    def _replace(self, plan: Mapping[str, tuple[pa.Schema, Sequence[Part]]],
                 before_commit: Callable[[], None] | None = None) -> int:
        """Per table, delete what each part's filter matches and insert its rows, in one transaction."""
        if self.kind == "spark":  # no deletes, no transactions: partition overwrites (ml.core.spark_tables)
            tables = {name: declared(name, schema) for name, (schema, _) in plan.items()}
            return self._spark.replace(plan, tables, before_commit)
        targets = {name: self.ensure_table(name, schema) for name, (schema, _) in plan.items()}
        for name, (_, parts) in plan.items():
            keys = list(parts[0][0]) if parts else []
            if self.kind == "postgres" and keys:  # DuckDB's zone maps serve the deletes; PostgreSQL needs an index
                index = quote(f"{split_name(name)[1]}_{'_'.join(keys)}_idx")
                self.execute(f"create index if not exists {index} on {qualify(name)} ({', '.join(map(quote, keys))})")
        written = 0
        with self.transaction():
            for name, (schema, parts) in plan.items():
                target = targets[name]
                for where, rows in parts:
                    self.execute(sa.delete(target).where(*(target.c[key] == value for key, value in where.items())))
                    written += self._insert(name, schema.names, rows)
            if before_commit is not None:
                before_commit()
        return written

    def replace_table(self, qualified: str, table: pa.Table) -> int:
        """Atomically replace the whole of `qualified` (schema.table) with `table`; returns its rows.

        A table with the same columns is emptied and refilled, so views built on it stay in place.
        A table with other columns is dropped and created anew (on PostgreSQL with the views built
        on it, which dbt recreates on its next run). Column names are kept as given.
        """
        target = from_arrow(qualified, table.schema)
        if self.kind == "spark":
            self._spark.replace_table(target, table)
            return table.num_rows
        self.execute(sa.schema.CreateSchema(target.schema, if_not_exists=True))
        wanted = [(c.name, _type_key(c.type.compile(dialect=dialect(self.kind)))) for c in target.columns]
        with self.transaction():
            if self._columns(qualified) == wanted:
                self.execute(f"truncate {qualify(qualified)}" if self.kind == "postgres" else sa.delete(target))
            else:
                cascade = " cascade" if self.kind == "postgres" else ""
                self.execute(f"drop table if exists {qualify(qualified)}{cascade}")
                self.execute(sa.schema.CreateTable(target))
            self._insert(qualified, table.column_names, table)
        return table.num_rows

    def column_types(self, qualified: str) -> dict[str, str]:
        """Each column of `qualified` with its type, spelled alike on both warehouses (`date`, `timestamp`, `text`,
        `double`, ...), in order; empty when it does not exist."""
        return dict(self._columns(qualified))

    def _columns(self, qualified: str) -> list[tuple[str, str]]:
        """(name, type key) of each column of `qualified`, in order; empty when it does not exist."""
        if self.kind == "spark":
            return [(col, _type_key(kind)) for col, kind in self._spark.columns(qualified)]
        schema, name = split_name(qualified)
        if self.kind == "duckdb":
            c = _COLUMNS.c
            query = sa.select(c.column_name, c.data_type).where(c.table_schema == schema, c.table_name == name)
            query = query.order_by(c.ordinal_position)
        else:  # format_type spells numeric(12,2) in full, where information_schema says numeric
            a = _PG_ATTRIBUTE.c
            query = sa.select(a.attname, sa.func.format_type(a.atttypid, a.atttypmod)).where(
                a.attrelid == sa.func.to_regclass(qualify(qualified)), a.attnum > 0, sa.not_(a.attisdropped),
            ).order_by(a.attnum)
        return [(col, _type_key(kind)) for col, kind in self._con.execute(*compiled(query, self.kind)).fetchall()]

    def _insert(self, qualified: str, names: Sequence[str], rows: Rows) -> int:
        """Append `rows` (an Arrow table or Parquet files) to the columns `names` of `qualified`; returns how many."""
        import pyarrow.parquet as pq

        cols = ", ".join(quote(name) for name in names)
        into = f"{qualify(qualified)} ({cols})"
        if isinstance(rows, pa.Table):
            if self.kind == "postgres":
                self._copy_in(into, [rows])
                return rows.num_rows
            self._con.register("_tidemark_incoming", rows)
            try:
                self._con.execute(f"insert into {into} select {cols} from _tidemark_incoming")
            finally:
                self._con.unregister("_tidemark_incoming")
            return rows.num_rows
        files = [Path(f) for f in rows]
        if not files:
            return 0
        if self.kind == "duckdb":
            self._con.execute(f"insert into {into} select {cols} from read_parquet(?)", ([str(f) for f in files],))
        else:
            self._copy_in(into, (batch for path in files
                                 for batch in pq.ParquetFile(path).iter_batches(batch_size=65_536, columns=names)))
        return sum(pq.ParquetFile(f).metadata.num_rows for f in files)

    def _copy_in(self, into: str, parts: Iterable[pa.Table | pa.RecordBatch]) -> None:
        """COPY Arrow rows into PostgreSQL as CSV, part by part."""
        with self._con.cursor() as cur, cur.copy(f"copy {into} from stdin with (format csv)") as copy:
            for part in parts:
                buf = io.BytesIO()
                pacsv.write_csv(part, buf, pacsv.WriteOptions(include_header=False))
                data = buf.getbuffer()
                for start in range(0, len(data), _COPY_CHUNK):
                    copy.write(data[start : start + _COPY_CHUNK])
                del data

    # -- bulk reads -----------------------------------------------------------------------------
    def read_arrow(self, statement: Statement) -> pa.Table:
        """Run a query and return its result as one Arrow table, typed by the query's columns on every warehouse."""
        if self.kind == "spark":
            return self._spark.read_arrow(statement)
        if self.kind == "duckdb":
            return self._duckdb_relation(statement).to_arrow_table()
        sql = self._inline(statement)
        schema = self._result_schema(sql)
        return pa.Table.from_batches(list(self._copy_out(sql, schema, 1 << 20)), schema=schema)

    def stream_arrow(self, statement: Statement, batch_rows: int = 200_000) -> Iterator[pa.RecordBatch]:
        """Run a query and yield its result as Arrow record batches of at most `batch_rows` rows.

        Memory stays bounded by a few batches, whatever the result's size: DuckDB hands over its
        result batch by batch, PostgreSQL's COPY output is parsed as it arrives. Spark collects the
        result to the driver first: work over many rows runs on its executors instead (ml.scoring.spark).
        """
        if batch_rows < 1:
            raise WarehouseError(f"batch_rows must be at least 1, got {batch_rows}")
        if self.kind == "spark":
            yield from _rebatched(self._spark.read_arrow(statement).to_batches(), batch_rows)
            return
        if self.kind == "duckdb":
            reader = self._duckdb_relation(statement).to_arrow_reader(batch_rows)
            yield from _rebatched(reader, batch_rows)
            return
        sql = self._inline(statement)
        schema = self._result_schema(sql)
        yield from _rebatched(self._copy_out(sql, schema, batch_rows), batch_rows)

    def _duckdb_relation(self, statement: Statement):
        sql, params = compiled(statement, "duckdb")
        return self._con.sql(sql, params=params or None)

    def _inline(self, statement: Statement) -> str:
        """A PostgreSQL query as one text with its values bound by psycopg: COPY takes no server-side parameters."""
        from psycopg import ClientCursor

        sql, params = compiled(statement, "postgres")
        return sql if params is None else ClientCursor(self._con).mogrify(sql, params)

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

    def bucket(self, column: sa.ColumnElement, buckets: int, *, integer: bool) -> sa.ColumnElement:
        """`column` mapped to a bucket in [0, buckets), the same in both warehouses.

        Integers go by their absolute value modulo `buckets`; anything else by the first 32 bits of
        the MD5 of its text form.
        """
        if integer:
            return sa.func.abs(column) % buckets
        digest = sa.func.substr(sa.func.md5(sa.cast(column, sa.String)), 1, 8)
        if self.kind == "spark":
            number = sa.cast(sa.func.conv(digest, 16, 10), sa.BigInteger)
        elif self.kind == "duckdb":
            number = sa.cast(sa.literal("0x") + digest, sa.BigInteger)
        else:
            number = sa.cast(sa.cast(sa.literal("x") + digest, BIT(32)), sa.BigInteger)
        return number % buckets

    def content_hash(self, qualified: str, key: str) -> str:
        """sha256 over a table's rows in key order (`arrow_sha256`); stable for the same contents."""
        return arrow_sha256(self.read_arrow(f"select * from {qualify(qualified, self.kind)} order by {quote(key, self.kind)}"))


def arrow_sha256(table: pa.Table) -> str:
    """sha256 of an Arrow table's schema and rows, as Arrow IPC: the same for the same contents."""
    digest = hashlib.sha256(table.schema.to_string().encode())
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
