"""Simulator + warehouse load at scale, against the simulator alone and a plain bulk-write ceiling.

Three phases, each in a fresh child process so that its peak RSS is its own:

  simulate only    iterate ml.simulate.simulate(cfg) and drop the tables (the in-run peer)
  simulate + load  ml.ingest.load_days(cfg) into a throwaway warehouse (the thing measured); the
                   time spent inside Warehouse.replace_partitions is recorded as its write time
  write ceiling    DuckDB only: the same Arrow tables written with plain CREATE TABLE AS / INSERT
                   ... SELECT * (no delete, no transaction, no DECIMAL cast), timing the writes only

Results go to TIDEMARK_HOME/bench/bench_simulate.json (bench_simulate_postgres.json for PostgreSQL).
Reported as ratios: end-to-end rows/s over simulate-only rows/s (load overhead), write rows/s
over ceiling rows/s (write efficiency), and peak RSS of the load over the simulator's.

    .venv/bin/python bench/bench_simulate.py                         # 1,000,000 customers x 30 days, DuckDB
    .venv/bin/python bench/bench_simulate.py --customers 2000 --days 10
    .venv/bin/python bench/bench_simulate.py --warehouse postgres     # 100,000 customers x 30 days
"""

from __future__ import annotations

import argparse
import sys
import time
from dataclasses import asdict
from datetime import date
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench._common import (  # noqa: E402
    console,
    fmt_ratio,
    in_child,
    peak_rss_self_mib,
    print_table,
    ratio,
    scratch_settings,
    warehouse_size_bytes,
    write_result,
)
from ml.core.settings import Settings  # noqa: E402
from ml.ingest.simulate import SimConfig  # noqa: E402

NAME = "bench_simulate"
DEFAULT_CUSTOMERS = {"duckdb": 1_000_000, "postgres": 100_000}


def _baseline() -> dict:
    """Peak RSS of a child that has only imported the libraries the phases use."""
    import duckdb  # noqa: F401
    import pyarrow  # noqa: F401

    import ml.ingest.load  # noqa: F401

    return {"peak_rss_mib": peak_rss_self_mib()}


def _simulate_only(cfg: SimConfig) -> dict:
    from ml.ingest.simulate import simulate

    rows: dict[str, int] = {}
    started = time.perf_counter()
    for _, tables in simulate(cfg):
        for name, table in tables.items():
            rows[name] = rows.get(name, 0) + table.num_rows
    return {"rows": rows, "seconds": time.perf_counter() - started, "peak_rss_mib": peak_rss_self_mib()}


def _load(cfg: SimConfig, settings: Settings) -> dict:
    from ml.core.warehouse import Warehouse
    from ml.ingest.load import load_days

    write_seconds = 0.0
    replace = Warehouse.replace_partitions

    def timed_replace(self, *args, **kwargs):
        nonlocal write_seconds
        started = time.perf_counter()
        try:
            return replace(self, *args, **kwargs)
        finally:
            write_seconds += time.perf_counter() - started

    Warehouse.replace_partitions = timed_replace
    started = time.perf_counter()
    report = load_days(cfg, settings=settings)
    seconds = time.perf_counter() - started
    return {
        "rows": dict(report.rows),
        "seconds": seconds,
        "write_seconds": write_seconds,
        "peak_rss_mib": peak_rss_self_mib(),
    }


def _ctas_ceiling(cfg: SimConfig, path: str) -> dict:
    import duckdb

    from ml.ingest.simulate import simulate

    con = duckdb.connect(path)
    created: set[str] = set()
    rows = 0
    write_seconds = 0.0
    started = time.perf_counter()
    for _, tables in simulate(cfg):
        for name, table in tables.items():
            t0 = time.perf_counter()
            con.register("incoming", table)
            if name in created:
                con.execute(f"insert into {name} select * from incoming")
            else:
                con.execute(f"create table {name} as select * from incoming")
                created.add(name)
            con.unregister("incoming")
            write_seconds += time.perf_counter() - t0
            rows += table.num_rows
    con.execute("checkpoint")
    con.close()
    return {
        "rows": rows,
        "seconds": time.perf_counter() - started,
        "write_seconds": write_seconds,
        "peak_rss_mib": peak_rss_self_mib(),
    }


def _rate(rows: int, seconds: float) -> float:
    return rows / seconds if seconds else 0.0


def run(cfg: SimConfig, warehouse: str, ceiling: bool) -> dict:
    console.print(
        f"[bold]{NAME}[/bold]: {cfg.customers:,} customers x {cfg.days} days into {warehouse} "
        f"(seed {cfg.seed}); each phase in its own process"
    )
    baseline = in_child(_baseline)
    console.print("  simulate only ...")
    sim = in_child(_simulate_only, cfg)
    with scratch_settings(NAME, warehouse) as settings:
        console.print(f"  simulate + load into {settings.warehouse.url} ...")
        load = in_child(_load, cfg, settings)
        size = warehouse_size_bytes(settings)
        ceil = None
        if ceiling and warehouse == "duckdb":
            console.print("  write ceiling (plain CTAS/INSERT of the same Arrow tables) ...")
            ceil = in_child(_ctas_ceiling, cfg, str(settings.home / "ceiling.duckdb"))

    if load["rows"] != sim["rows"]:
        raise SystemExit(f"row counts differ between the simulator and the load: {sim['rows']} vs {load['rows']}")
    total = sum(load["rows"].values())
    sim_rate = _rate(total, sim["seconds"])
    e2e_rate = _rate(total, load["seconds"])
    write_rate = _rate(total, load["write_seconds"])
    ceil_rate = _rate(ceil["rows"], ceil["write_seconds"]) if ceil else None
    result = {
        "scale": {"customers": cfg.customers, "days": cfg.days, "seed": cfg.seed, "warehouse": warehouse},
        "config": asdict(cfg),
        "rows": load["rows"],
        "total_rows": total,
        "warehouse_bytes": size,
        "child_baseline_peak_rss_mib": baseline["peak_rss_mib"],
        "simulate_only": {**sim, "rows_per_s": sim_rate},
        "simulate_and_load": {**load, "rows_per_s": e2e_rate, "write_rows_per_s": write_rate},
        "write_ceiling": None if ceil is None else {**ceil, "rows_per_s": ceil_rate},
        "ratios": {
            "load_overhead_e2e_over_simulate_rows_per_s": ratio(e2e_rate, sim_rate),
            "write_over_ceiling_rows_per_s": None if ceil_rate is None else ratio(write_rate, ceil_rate),
            "load_over_simulate_peak_rss": ratio(load["peak_rss_mib"], sim["peak_rss_mib"]),
        },
    }
    _print(result)
    path = write_result(NAME if warehouse == "duckdb" else f"{NAME}_{warehouse}", result)
    console.print(f"wrote {path}")
    return result


def _print(r: dict) -> None:
    print_table(
        "raw rows written",
        ["table", "rows"],
        [*[(name, f"{n:,}") for name, n in r["rows"].items()], ("total", f"{r['total_rows']:,}")],
    )
    sim, load, ceil, ratios = r["simulate_only"], r["simulate_and_load"], r["write_ceiling"], r["ratios"]
    rows = [
        ("simulate only (peer)", f"{sim['seconds']:.1f}", f"{sim['rows_per_s']:,.0f}", f"{sim['peak_rss_mib']:,.0f}", "1.00x"),
        (
            "simulate + load (end to end)",
            f"{load['seconds']:.1f}",
            f"{load['rows_per_s']:,.0f}",
            f"{load['peak_rss_mib']:,.0f}",
            fmt_ratio(ratios["load_overhead_e2e_over_simulate_rows_per_s"]),
        ),
        (
            "  of which writes (replace_partitions)",
            f"{load['write_seconds']:.1f}",
            f"{load['write_rows_per_s']:,.0f}",
            "",
            "" if ceil is None else f"{fmt_ratio(ratios['write_over_ceiling_rows_per_s'])} of ceiling",
        ),
    ]
    if ceil is not None:
        rows.append(
            ("plain CTAS ceiling (writes only)", f"{ceil['write_seconds']:.1f}", f"{ceil['rows_per_s']:,.0f}",
             f"{ceil['peak_rss_mib']:,.0f}", "1.00x")
        )
    s = r["scale"]
    print_table(
        f"{s['customers']:,} customers x {s['days']} days, {s['warehouse']}",
        ["phase", "seconds", "rows/s", "peak RSS MiB", "ratio"],
        rows,
    )
    console.print(
        f"load overhead: end-to-end runs at {fmt_ratio(ratios['load_overhead_e2e_over_simulate_rows_per_s'])} "
        f"of simulate-only rows/s; peak RSS {fmt_ratio(ratios['load_over_simulate_peak_rss'])} of the simulator's "
        f"(a child that only imports the libraries peaks at {r['child_baseline_peak_rss_mib']:,.0f} MiB); "
        f"warehouse on disk {r['warehouse_bytes'] / 2**20:,.0f} MiB"
    )


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--warehouse", choices=["duckdb", "postgres"], default="duckdb")
    parser.add_argument("--customers", type=int, default=None,
                        help="customers on day 0 (default: 1,000,000 on DuckDB, 100,000 on PostgreSQL)")
    parser.add_argument("--days", type=int, default=30, help="days to simulate and load (default: 30)")
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--start", type=date.fromisoformat, default=date(2025, 1, 1), help="first day, YYYY-MM-DD")
    parser.add_argument("--no-ceiling", dest="ceiling", action="store_false",
                        help="skip the plain CTAS write ceiling (DuckDB only)")
    args = parser.parse_args(argv)
    customers = args.customers or DEFAULT_CUSTOMERS[args.warehouse]
    try:
        cfg = SimConfig(seed=args.seed, customers=customers, start=args.start, days=args.days)
    except ValueError as exc:
        parser.error(str(exc))
    run(cfg, args.warehouse, args.ceiling)


if __name__ == "__main__":
    main()
