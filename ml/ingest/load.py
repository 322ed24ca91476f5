"""Land simulated raw days in the warehouse, one atomic, replaceable partition per day."""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from datetime import date
from typing import Callable

from ml.core.settings import Settings
from ml.core.warehouse import Warehouse
from ml.ingest.raw_tables import RAW_KEYS
from ml.ingest.simulate import SimConfig, simulate

log = logging.getLogger(__name__)
RAW_SCHEMA = "raw"
# Days per replace on Spark (see load_days).
_SPARK_BATCH_DAYS = 31


@dataclass
class IngestReport:
    """What a load wrote: rows per table and how long it took."""

    days: list[date] = field(default_factory=list)
    rows: dict[str, int] = field(default_factory=dict)
    seconds: float = 0.0

    @property
    def total_rows(self) -> int:
        return sum(self.rows.values())


def load_days(
    cfg: SimConfig,
    days: set[date] | None = None,
    *,
    settings: Settings | None = None,
    on_day: Callable[[date, int], None] | None = None,
) -> IngestReport:
    """Simulate `cfg` and replace each requested day's raw partitions (all days when `days` is None)."""
    if days is not None:
        for day in days:
            cfg.day_index(day)  # raises a clear error for a day outside the simulation
    report = IngestReport()
    started = time.perf_counter()
    with Warehouse.connect(settings) as wh:
        # Spark overwrites partitions in one job per table, whose fixed cost dwarfs a day's rows: days go in
        # batches there, each day still its own partition. Elsewhere each day is its own transaction.
        batch_days = _SPARK_BATCH_DAYS if wh.kind == "spark" else 1
        pending: list[tuple[date, dict]] = []

        def flush() -> None:
            plan: dict[str, tuple] = {}
            for day, tables in pending:
                for name, table in tables.items():
                    schema, parts = plan.setdefault(f"{RAW_SCHEMA}.{name}", (table.schema, []))
                    parts.append(({"ingest_date": day}, table))
            if plan:
                wh.replace_tables(plan)
            for day, tables in pending:
                report.days.append(day)
                if on_day:
                    on_day(day, sum(table.num_rows for table in tables.values()))
            pending.clear()

        for day, tables in simulate(cfg, only=days):
            for name, table in tables.items():
                report.rows[name] = report.rows.get(name, 0) + table.num_rows
            pending.append((day, tables))
            if len(pending) >= batch_days:
                flush()
        flush()
    report.seconds = time.perf_counter() - started
    log.info("loaded %d raw rows for %d day(s) in %.1fs", report.total_rows, len(report.days), report.seconds)
    return report


def raw_table_hashes(settings: Settings | None = None) -> dict[str, str]:
    """Content hash per raw table, to check that the same seed gives the same bytes."""
    with Warehouse.connect(settings, read_only=True) as wh:
        return {name: wh.content_hash(f"{RAW_SCHEMA}.{name}", key) for name, key in RAW_KEYS.items()}
