"""The warehouse interface's operations on Spark (ml.core.warehouse delegates to these).

Statements are the same SQLAlchemy Core, compiled by the Spark variant of the dialect and run by
`spark.sql` with their values as named arguments. Rows arrive as Arrow (a DataFrame made from Arrow
batches, or Parquet files read by Spark), or as a DataFrame computed on the executors (written from
there, never collected), and leave as Arrow (`DataFrame.toArrow`).

Spark's Parquet tables cannot delete rows and have no transactions, so a replace overwrites whole
partitions: a table partitioned by its replace key (ml.core.tables.SPARK_PARTITIONS) has exactly
the partitions of the replaced rows overwritten (dynamic partition overwrite); any other table is
small and rewritten whole. Each table's overwrite is one Spark job whose output becomes visible when
the job commits; a replace of several tables commits them one after another, not together. A
failed or killed overwrite leaves a partition as it was, or, in the moment its new files are moved
in, without rows until the replace is run again; it never holds both.
"""

from __future__ import annotations

from datetime import datetime, timezone
from functools import reduce
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Mapping, Sequence

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import sqlalchemy as sa

from ml.core.spark import session
from ml.core.sql import Statement, compiled, dialect, qualify, quote, split_name
from ml.core.tables import spark_partitions

if TYPE_CHECKING:
    from pyspark.sql import DataFrame

    from ml.core.settings import WarehouseTarget

# Spark's names of column types, and the spelling that ml.core.warehouse compares across warehouses.
_TYPE_KEYS = {"string": "text", "int": "integer", "timestamp_ntz": "timestamp", "float": "real",
              "tinyint": "smallint"}


class SparkTables:
    """Statements, reads and replaces over this process's Spark session."""

    def __init__(self, target: "WarehouseTarget"):
        self.spark = session(target)

    def frame(self, statement: Statement) -> "DataFrame":
        sql, params = compiled(statement, "spark")
        # pyspark reads a naive datetime argument in this process's local zone; ml's naive datetimes are UTC
        args = {k: v.replace(tzinfo=timezone.utc) if isinstance(v, datetime) and v.tzinfo is None else v
                for k, v in (params or {}).items()}
        return self.spark.sql(sql, args=args or None)

    def execute(self, statement: Statement) -> None:
        self.frame(statement)  # commands run when spark.sql is called

    def rows(self, statement: Statement) -> list[dict[str, Any]]:
        # Through Arrow, not collect(): collect() turns timestamps into this process's local time.
        return _normalized(self.frame(statement).toArrow()).to_pylist()

    def table_exists(self, qualified: str) -> bool:
        schema, name = split_name(qualified)
        return self.spark.catalog.databaseExists(schema) and self.spark.catalog.tableExists(f"{schema}.{name}")

    def columns(self, qualified: str) -> list[tuple[str, str]]:
        """(name, type in Spark's simple form) of each column of `qualified`, in order; empty when it does not exist."""
        if not self.table_exists(qualified):
            return []
        fields = self.spark.table(qualify(qualified, "spark")).schema.fields
        return [(field.name, _TYPE_KEYS.get(field.dataType.simpleString(), field.dataType.simpleString()))
                for field in fields]

    def create(self, table: sa.Table, partitions: Sequence[str] = ()) -> None:
        """CREATE TABLE IF NOT EXISTS as Parquet, partitioned by `partitions` (Spark puts those columns last)."""
        spark_dialect = dialect("spark")
        if not self.spark.catalog.databaseExists(table.schema):
            self.execute(f"create schema if not exists {quote(table.schema, 'spark')}")
        cols = ", ".join(f"{quote(c.name, 'spark')} {c.type.compile(dialect=spark_dialect)}" for c in table.columns)
        parted = f" partitioned by ({', '.join(quote(k, 'spark') for k in partitions)})" if partitions else ""
        self.execute(f"create table if not exists {qualify(table.fullname, 'spark')} ({cols}) using parquet{parted}")

    # -- writes ----------------------------------------------------------------------------------
    def replace(self, plan: Mapping[str, tuple[pa.Schema, Sequence[tuple[Mapping[str, Any], Any]]]],
                tables: Mapping[str, sa.Table], before_commit: Callable[[], None] | None = None) -> int:
        """Per table, overwrite what each part's filter matches with its rows; see the module's note."""
        written = 0
        for i, (name, (schema, parts)) in enumerate(plan.items()):
            if i == len(plan) - 1 and before_commit is not None:
                before_commit()  # before the last table's overwrite, as inside the other warehouses' transaction
            keys = tuple(parts[0][0]) if parts else ()
            self.create(tables[name], spark_partitions(name, keys))
            written += self._overwrite(name, schema, parts)
        if not plan and before_commit is not None:
            before_commit()
        return written

    def _overwrite(self, qualified: str, schema: pa.Schema, parts: Sequence[tuple[Mapping[str, Any], Any]]) -> int:
        target = qualify(qualified, "spark")
        partitions = self._partition_columns(qualified)
        keys = tuple(parts[0][0]) if parts else ()
        incoming = [self._incoming(schema, rows) for _, rows in parts]
        counts = [n for _, n in incoming]
        order = [name for name, _ in self.columns(qualified)]
        if partitions and set(keys) == set(partitions):
            frames = [frame for frame, n in incoming if n]
            if frames:
                reduce(lambda a, b: a.unionByName(b), frames).select(*order).write.insertInto(target, overwrite=True)
            for (where, _), n in zip(parts, counts):
                if not n:  # no rows: nothing overwrites the partition, so it is dropped
                    spec = ", ".join(f"{quote(k, 'spark')} = {_literal(v)}" for k, v in where.items())
                    self.execute(f"alter table {target} drop if exists partition ({spec})")
            return sum(counts)
        # A small table: kept rows and new rows, read to the driver, then the table rewritten whole.
        kept = self.spark.table(target).toArrow()
        for where, _ in parts:
            match = reduce(pc.and_, [pc.fill_null(pc.equal(kept[k], pa.scalar(v)), False) for k, v in where.items()])
            kept = kept.filter(pc.invert(match))
        new = [frame.toArrow() for frame, n in incoming if n]
        whole = pa.concat_tables([_normalized(kept), *[_normalized(t) for t in new]], promote_options="permissive")
        self._frame_of(whole.select(order)).write.insertInto(target, overwrite=True)
        return sum(counts)

    def replace_table(self, table: sa.Table, rows: pa.Table) -> None:
        """The whole of a table replaced by `rows`: refilled when its columns are the same, else made anew."""
        wanted = [(c.name, _TYPE_KEYS.get(s, s)) for c, s in
                  ((c, c.type.compile(dialect=dialect("spark")).lower().replace(" ", "")) for c in table.columns)]
        if self.columns(table.fullname) != wanted:
            self.execute(f"drop table if exists {qualify(table.fullname, 'spark')}")
            self.create(table)
        self._frame_of(rows).select(*[c.name for c in table.columns]).write.insertInto(
            qualify(table.fullname, "spark"), overwrite=True)

    def _partition_columns(self, qualified: str) -> list[str]:
        return [c.name for c in self.spark.catalog.listColumns(qualify(qualified, "spark")) if c.isPartition]

    def _incoming(self, schema: pa.Schema, rows) -> tuple["DataFrame", int]:
        """A part's rows as a DataFrame, with how many there are (a DataFrame's are counted: cache it first when
        computing it twice costs)."""
        from pyspark.sql import DataFrame

        if isinstance(rows, pa.Table):
            return self._frame_of(rows.select(schema.names)), rows.num_rows
        if isinstance(rows, DataFrame):
            return rows.select(*schema.names), rows.count()
        files = [str(Path(f)) for f in rows]
        n = sum(pq.ParquetFile(f).metadata.num_rows for f in files)
        frame = self.spark.read.parquet(*files).select(*schema.names) if files else None
        return frame, n

    def _frame_of(self, table: pa.Table) -> "DataFrame":
        return self.spark.createDataFrame(table)

    # -- reads -----------------------------------------------------------------------------------
    def read_arrow(self, statement: Statement) -> pa.Table:
        """A query's result as one Arrow table, typed as on the other warehouses (timestamps without a zone)."""
        return _normalized(self.frame(statement).toArrow())


def _normalized(table: pa.Table) -> pa.Table:
    """Arrow from Spark in the types ml reads everywhere: UTC timestamps without a zone, plain strings."""
    fields = []
    for field in table.schema:
        kind = field.type
        if pa.types.is_timestamp(kind):
            kind = pa.timestamp("us")
        elif pa.types.is_large_string(kind):
            kind = pa.string()
        fields.append(pa.field(field.name, kind))
    schema = pa.schema(fields)
    return table if schema == table.schema else table.cast(schema)


def _literal(value: Any) -> str:
    """A partition value as a Spark SQL literal."""
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return str(value)
    return "'" + str(value).replace("\\", "\\\\").replace("'", "\\'") + "'"
