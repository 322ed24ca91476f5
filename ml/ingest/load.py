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
        for day, tables in simulate(cfg, only=days):
            qualified = {f"{RAW_SCHEMA}.{name}": table for name, table in tables.items()}
            n = wh.replace_partitions("ingest_date", day, qualified)
            for name, table in tables.items():
                report.rows[name] = report.rows.get(name, 0) + table.num_rows
            report.days.append(day)
            if on_day:
                on_day(day, n)
    report.seconds = time.perf_counter() - started
    log.info("loaded %d raw rows for %d day(s) in %.1fs", report.total_rows, len(report.days), report.seconds)
    return report


def raw_table_hashes(settings: Settings | None = None) -> dict[str, str]:
    """Content hash per raw table, to check that the same seed gives the same bytes."""
    with Warehouse.connect(settings, read_only=True) as wh:
        return {name: wh.content_hash(f"{RAW_SCHEMA}.{name}", key) for name, key in RAW_KEYS.items()}
