"""Shared pieces of the benchmarks: a throwaway warehouse, peak-memory probes, result output.

Each benchmark runs against its own warehouse under TIDEMARK_HOME/bench/ (or a fresh PostgreSQL
database), removes it afterwards, and writes its figures to TIDEMARK_HOME/bench/<name>.json.
"""

from __future__ import annotations

import json
import multiprocessing
import os
import platform
import resource
import shutil
import statistics
import sys
import threading
import uuid
from concurrent.futures import ProcessPoolExecutor
from contextlib import contextmanager
from datetime import datetime, timezone
from pathlib import Path
from typing import Iterator, Sequence

from rich.console import Console
from rich.table import Table

from ml.core.settings import Settings, parse_warehouse_url

PG_ADMIN_DSN = os.environ.get("TIDEMARK_BENCH_PG_ADMIN", "host=127.0.0.1 port=5432 user=postgres dbname=postgres")
PG_URL = os.environ.get("TIDEMARK_BENCH_PG_URL", "postgresql://postgres@127.0.0.1:5432")

# Logs redirected to a file get a wide table rather than rich's 80-column default.
console = Console() if sys.stdout.isatty() else Console(width=120)


def results_dir() -> Path:
    """TIDEMARK_HOME/bench: where results and scratch warehouses live."""
    return Settings.from_env().home / "bench"


@contextmanager
def scratch_settings(name: str, warehouse: str) -> Iterator[Settings]:
    """Settings for a throwaway home under TIDEMARK_HOME/bench and a throwaway warehouse in it.

    DuckDB: a file in that home. PostgreSQL: a fresh database on the server. Both are removed on exit,
    also when the benchmark fails.
    """
    tag = f"{name}-{uuid.uuid4().hex[:8]}"
    home = results_dir() / tag
    home.mkdir(parents=True)
    database = f"tidemark_{tag.replace('-', '_')}"
    try:
        if warehouse == "duckdb":
            yield Settings(home=home, warehouse=parse_warehouse_url(f"duckdb:///{home / 'warehouse.duckdb'}"))
        else:
            import psycopg

            try:
                with psycopg.connect(PG_ADMIN_DSN, autocommit=True) as admin:
                    admin.execute(f'create database "{database}"')
            except psycopg.OperationalError as exc:
                raise SystemExit(
                    f"--warehouse postgres needs a PostgreSQL server; could not connect with {PG_ADMIN_DSN!r} "
                    f"(set TIDEMARK_BENCH_PG_ADMIN to a libpq DSN): {exc}"
                )
            yield Settings(home=home, warehouse=parse_warehouse_url(f"{PG_URL}/{database}"))
    finally:
        if warehouse == "postgres":
            import psycopg

            try:
                with psycopg.connect(PG_ADMIN_DSN, autocommit=True) as admin:
                    admin.execute(f'drop database if exists "{database}" with (force)')
            except psycopg.OperationalError as exc:
                console.print(f"[yellow]warning:[/yellow] could not drop database {database}: {exc}")
        shutil.rmtree(home, ignore_errors=True)


def warehouse_size_bytes(settings: Settings) -> int:
    """On-disk size of the warehouse (DuckDB file, or pg_database_size)."""
    wh = settings.warehouse
    if wh.kind == "duckdb":
        return wh.path.stat().st_size if wh.path.exists() else 0
    import psycopg

    with psycopg.connect(wh.dsn()) as con:
        return con.execute("select pg_database_size(current_database())").fetchone()[0]


def in_child(fn, *args):
    """Run `fn(*args)` in a fresh spawned process (its peak RSS is its own) and return its result."""
    with ProcessPoolExecutor(max_workers=1, mp_context=multiprocessing.get_context("spawn")) as pool:
        return pool.submit(fn, *args).result()


def peak_rss_self_mib() -> float:
    """Peak resident set size of this process so far (Linux reports ru_maxrss in KiB)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


class ChildMemorySampler:
    """Samples the summed RSS of this process's descendants (e.g. a dbt subprocess) and keeps the peak."""

    def __init__(self, interval_s: float = 0.2):
        self.interval_s = interval_s
        self.peak_bytes = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self) -> "ChildMemorySampler":
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()

    @property
    def peak_mib(self) -> float:
        return self.peak_bytes / 2**20

    def _run(self) -> None:
        import psutil

        me = psutil.Process()
        while not self._stop.is_set():
            total = 0
            for child in me.children(recursive=True):
                try:
                    total += child.memory_info().rss
                except psutil.Error:
                    pass
            self.peak_bytes = max(self.peak_bytes, total)
            self._stop.wait(self.interval_s)


def kill_descendants() -> int:
    """Kill the processes this process started (e.g. a dbt run past its time limit); returns how many."""
    import psutil

    killed = 0
    for child in psutil.Process().children(recursive=True):
        try:
            child.kill()
            killed += 1
        except psutil.Error:
            pass
    return killed


def median(values: Sequence[float]) -> float:
    return statistics.median(values)


def ratio(numerator: float, denominator: float) -> float | None:
    return numerator / denominator if denominator else None


def fmt_ratio(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.2f}x"


def print_table(title: str, columns: Sequence[str], rows: Sequence[Sequence[object]]) -> None:
    table = Table(title=title, title_justify="left")
    for i, name in enumerate(columns):
        table.add_column(name, justify="left" if i == 0 else "right")
    for row in rows:
        table.add_row(*(str(cell) for cell in row))
    console.print(table)


def machine() -> dict:
    return {
        "python": platform.python_version(),
        "platform": platform.platform(),
        "cpus": os.cpu_count(),
        "memory_gib": round(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30, 1),
    }


def write_result(name: str, result: dict) -> Path:
    """Write TIDEMARK_HOME/bench/<name>.json with a timestamp and machine description added."""
    path = results_dir() / f"{name}.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    payload = {
        "benchmark": name,
        "finished_at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "machine": machine(),
        **result,
    }
    path.write_text(json.dumps(payload, indent=2, default=str) + "\n")
    return path
