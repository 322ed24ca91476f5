"""Daily incremental feature build against a full rebuild of marts.customer_features_daily.

1. Simulate and load `--days` of raw history into a throwaway warehouse (timed separately).
2. Full build: `dbt run --select +customer_features_daily --full-refresh`, every as_of_date.
3. Daily run: `dbt run --select customer_features_daily` with start_date = end_date = the last
   day D, repeated `--repeats` times after the full build; the median counts.

Reported as the ratio full/daily, for wall time (dbt start-up included) and for the model's own
execution time from run_results.json, and per as_of_date. To keep the comparison honest, the rows
for D after every daily run must equal the full build's rows for D: same count and the same
sha256 over every column in customer_id order.

A full build that runs past `--full-timeout` is stopped, and one that fails (e.g. DuckDB out of memory
and temp space) is recorded; either way the daily runs are still measured, and after a timeout the
ratio is reported as a lower bound. `--duckdb-memory-limit` / `--duckdb-temp-limit` cap DuckDB
through a copy of the project's profile. By default memory is DuckDB's own limit (80% of RAM) and
spilling stops at 40GB of temp files rather than DuckDB's 90% of the free disk.

    .venv/bin/python bench/bench_features.py                        # 1,000,000 customers x 90 days
    .venv/bin/python bench/bench_features.py --customers 5000 --days 30
    .venv/bin/python bench/bench_features.py --customers 125000 --duckdb-memory-limit 14GB --result-name bench_features_125k
"""

from __future__ import annotations

import argparse
import hashlib
import json
import sys
import threading
import time
from dataclasses import asdict
from datetime import date
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench._common import (  # noqa: E402
    ChildMemorySampler,
    console,
    fmt_ratio,
    in_child,
    kill_descendants,
    median,
    peak_rss_self_mib,
    print_table,
    ratio,
    scratch_settings,
    warehouse_size_bytes,
    write_result,
)
from ml.core.settings import Settings  # noqa: E402
from ml.ingest.simulate import SimConfig  # noqa: E402

NAME = "bench_features"
FEATURES = "marts.customer_features_daily"
MODEL_ID = "model.tidemark.customer_features_daily"


def _load_history(cfg: SimConfig, settings: Settings) -> dict:
    from ml.ingest.load import load_days

    report = load_days(cfg, settings=settings)
    return {"rows": dict(report.rows), "seconds": report.seconds, "peak_rss_mib": peak_rss_self_mib()}


class _Dbt:
    """Runs dbt through ml.dbt.run_dbt with target/ and logs/ in the scratch home, timing each run."""

    def __init__(self, settings: Settings, duckdb_settings: dict[str, str]):
        self.settings = settings
        self.target = settings.home / "dbt_target"
        self.flags = ["--target-path", str(self.target), "--log-path", str(settings.home / "dbt_logs")]
        if duckdb_settings and settings.warehouse.kind == "duckdb":
            self.flags += ["--profiles-dir", str(self._capped_profile(duckdb_settings))]

    def _capped_profile(self, duckdb_settings: dict[str, str]) -> Path:
        """A copy of the project's profiles.yml whose DuckDB output carries extra DuckDB settings."""
        import yaml

        profiles = yaml.safe_load((self.settings.dbt_project_dir / "profiles.yml").read_text())
        profiles["tidemark"]["outputs"]["duckdb"].setdefault("settings", {}).update(duckdb_settings)
        folder = self.settings.home / "dbt_profiles"
        folder.mkdir(exist_ok=True)
        (folder / "profiles.yml").write_text(yaml.safe_dump(profiles, sort_keys=False))
        return folder

    def __call__(
        self, args: list[str], vars: dict | None = None, timeout_s: float | None = None, allow_failure: bool = False
    ) -> dict:
        from ml.features.dbt import run_dbt

        timed_out = threading.Event()

        def stop() -> None:
            timed_out.set()
            kill_descendants()

        watchdog = threading.Timer(timeout_s, stop) if timeout_s else None
        with ChildMemorySampler() as memory:
            started = time.perf_counter()
            if watchdog:
                watchdog.start()
            try:
                result = run_dbt([*args, *self.flags], settings=self.settings, vars=vars, capture=True)
            finally:
                if watchdog:
                    watchdog.cancel()
            seconds = time.perf_counter() - started
        if timed_out.is_set():
            return {"stopped": "timed out", "timeout_s": timeout_s, "seconds": seconds, "peak_rss_mib": memory.peak_mib}
        if not result.success and allow_failure:
            errors = [line.strip() for line in result.output.splitlines() if "Error" in line]
            return {"stopped": "failed", "error": errors[-1] if errors else result.output[-2000:],
                    "seconds": seconds, "peak_rss_mib": memory.peak_mib}
        if not result.success:
            console.print(result.output[-4000:])
            raise SystemExit(f"dbt {' '.join(args)} failed against {self.settings.warehouse.url}; dbt's output is above")
        results = [] if args[0] == "parse" else json.loads((self.target / "run_results.json").read_text())["results"]
        node_seconds = {r["unique_id"]: r["execution_time"] for r in results}
        return {
            "stopped": None,
            "seconds": seconds,
            "model_seconds": node_seconds.get(MODEL_ID, 0.0),
            "nodes_seconds": sum(node_seconds.values()),
            "nodes": len(node_seconds),
            # wall time outside the nodes' own execution: interpreter and dbt start-up, parse, compile
            "dbt_overhead_seconds": seconds - sum(node_seconds.values()),
            "peak_rss_mib": memory.peak_mib,
        }


def _day_fingerprint(settings: Settings, day: date) -> dict:
    """Row count and sha256 over every column of the feature rows for `day`, in customer_id order."""
    from ml.core.warehouse import Warehouse

    with Warehouse.connect(settings, read_only=True) as wh:
        table = wh.read_arrow(f"select * from {FEATURES} where as_of_date = '{day}' order by customer_id")
    digest = hashlib.sha256()
    digest.update(table.schema.to_string().encode())
    for batch in table.combine_chunks().to_batches(max_chunksize=65_536):
        digest.update(batch.serialize().to_pybytes())
    return {"rows": table.num_rows, "sha256": digest.hexdigest()}


def _table_stats(settings: Settings) -> dict:
    from ml.core.warehouse import Warehouse

    with Warehouse.connect(settings, read_only=True) as wh:
        return {
            "rows": wh.scalar(f"select count(*) from {FEATURES}"),
            "as_of_dates": wh.scalar(f"select count(distinct as_of_date) from {FEATURES}"),
        }


def run(
    cfg: SimConfig,
    warehouse: str,
    repeats: int,
    full_timeout: float | None,
    duckdb_settings: dict,
    result_name: str | None = None,
) -> dict:
    day = cfg.end
    console.print(
        f"[bold]{NAME}[/bold]: {cfg.customers:,} customers x {cfg.days} days on {warehouse} (seed {cfg.seed}); "
        f"daily run for {day}, {repeats} repeat(s)" + (f"; DuckDB settings {duckdb_settings}" if duckdb_settings else "")
    )
    daily_vars = {"start_date": day.isoformat(), "end_date": day.isoformat()}
    with scratch_settings(NAME, warehouse) as settings:
        console.print(f"  loading the raw history into {settings.warehouse.url} ...")
        history = in_child(_load_history, cfg, settings)
        size = warehouse_size_bytes(settings)
        dbt = _Dbt(settings, duckdb_settings)
        console.print("  dbt parse (untimed warm-up) ...")
        dbt(["parse"])

        console.print("  full build ...")
        full = dbt(["run", "--select", "+customer_features_daily", "--full-refresh"], timeout_s=full_timeout,
                   allow_failure=True)
        if full["stopped"]:
            expected = None
            reason = f"--full-timeout {full_timeout:.0f}" if full["stopped"] == "timed out" else full["error"]
            console.print(f"  full build {full['stopped']} after {full['seconds']:.0f}s ({reason})")
            # The table was never built: a first, untimed daily run creates it, so that every timed run
            # takes the incremental (delete+insert) path.
            dbt(["run", "--select", "+customer_features_daily"], vars=daily_vars)
        else:
            full.update(_table_stats(settings))
            expected = _day_fingerprint(settings, day)
            console.print(f"  full build: {full['seconds']:.1f}s, {full['rows']:,} rows over {full['as_of_dates']} dates")

        daily_runs = []
        for i in range(repeats):
            console.print(f"  daily run {i + 1}/{repeats} ...")
            d = dbt(["run", "--select", "customer_features_daily"], vars=daily_vars)
            d["fingerprint"] = _day_fingerprint(settings, day)
            d["table_rows_after"] = _table_stats(settings)["rows"]
            daily_runs.append(d)
            console.print(f"    {d['seconds']:.1f}s, {d['fingerprint']['rows']:,} rows for {day}")

    reference = expected or daily_runs[0]["fingerprint"]
    mismatches = [d["fingerprint"] for d in daily_runs if d["fingerprint"] != reference]
    table_rows = full["rows"] if expected else daily_runs[0]["table_rows_after"]
    if any(d["table_rows_after"] != table_rows for d in daily_runs):
        mismatches.append({"table_rows_changed": [d["table_rows_after"] for d in daily_runs]})
    daily = {
        "seconds": median([d["seconds"] for d in daily_runs]),
        "model_seconds": median([d["model_seconds"] for d in daily_runs]),
        "nodes_seconds": median([d["nodes_seconds"] for d in daily_runs]),
        "dbt_overhead_seconds": median([d["dbt_overhead_seconds"] for d in daily_runs]),
        "rows": daily_runs[-1]["fingerprint"]["rows"],
        "as_of_dates": 1,
        "peak_rss_mib": max(d["peak_rss_mib"] for d in daily_runs),
        "runs": daily_runs,
    }
    if full["stopped"] == "failed":
        ratios = {}
    elif full["stopped"]:
        # The full build took at least its time limit, so these ratios are lower bounds.
        ratios = {
            "full_over_daily_wall_at_least": ratio(full["seconds"], daily["seconds"]),
            "full_over_daily_model_at_least": ratio(full["seconds"], daily["model_seconds"]),
        }
    else:
        ratios = {
            "full_over_daily_wall": ratio(full["seconds"], daily["seconds"]),
            "full_over_daily_model": ratio(full["model_seconds"], daily["model_seconds"]),
            "daily_over_full_per_as_of_date_wall": ratio(daily["seconds"], full["seconds"] / full["as_of_dates"]),
            "daily_over_full_per_as_of_date_model": ratio(
                daily["model_seconds"], full["model_seconds"] / full["as_of_dates"]
            ),
        }
    result = {
        "scale": {"customers": cfg.customers, "days": cfg.days, "seed": cfg.seed, "warehouse": warehouse},
        "config": asdict(cfg),
        "duckdb_settings": duckdb_settings,
        "daily_as_of_date": day.isoformat(),
        "history_load": {**history, "total_rows": sum(history["rows"].values()), "warehouse_bytes": size},
        "full_build": full,
        "daily_run": daily,
        "full_rows_for_day": expected,
        "daily_matches_full": None if expected is None else not mismatches,
        "daily_runs_agree": not mismatches,
        "mismatches": mismatches,
        "ratios": ratios,
    }
    _print(result)
    path = write_result(result_name or (NAME if warehouse == "duckdb" else f"{NAME}_{warehouse}"), result)
    console.print(f"wrote {path}")
    if mismatches:
        raise SystemExit(f"the daily runs' rows for {day} differ from the reference: {mismatches} vs {reference}")
    return result


def _print(r: dict) -> None:
    s, h, full, daily, ratios = r["scale"], r["history_load"], r["full_build"], r["daily_run"], r["ratios"]
    console.print(
        f"history: {h['total_rows']:,} raw rows loaded in {h['seconds']:.1f}s "
        f"({h['total_rows'] / h['seconds']:,.0f} rows/s, peak RSS {h['peak_rss_mib']:,.0f} MiB, "
        f"{h['warehouse_bytes'] / 2**20:,.0f} MiB on disk)"
    )

    def row(label, x, n_dates):
        if x.get("stopped") == "failed":
            return (label, f"{x['seconds']:.0f}", "failed", "", s["days"], "", "", "", f"{x['peak_rss_mib']:,.0f}")
        if x.get("stopped"):
            return (label, f">{x['seconds']:.0f}", "stopped", "", s["days"], f">{x['seconds'] / s['days']:.2f}", "", "",
                    f"{x['peak_rss_mib']:,.0f}")
        return (
            label,
            f"{x['seconds']:.1f}",
            f"{x['model_seconds']:.1f}",
            f"{x['rows']:,}",
            n_dates,
            f"{x['seconds'] / n_dates:.2f}",
            f"{x['model_seconds'] / n_dates:.2f}",
            f"{x['dbt_overhead_seconds']:.1f}",
            f"{x['peak_rss_mib']:,.0f}",
        )

    print_table(
        f"{s['customers']:,} customers x {s['days']} days, {s['warehouse']}: full rebuild vs daily run for "
        f"{r['daily_as_of_date']}",
        ["build", "wall s", "model s", "rows", "dates", "wall s/date", "model s/date", "dbt start-up s",
         "dbt peak RSS MiB"],
        [
            row("full rebuild", full, full.get("as_of_dates")),
            row(f"daily run (median of {len(daily['runs'])})", daily, 1),
        ],
    )
    if full["stopped"] == "failed":
        console.print(f"full/daily: no ratio, the full build failed after {full['seconds']:.0f}s: {full['error']}")
    elif full["stopped"]:
        console.print(
            f"full/daily: at least {fmt_ratio(ratios['full_over_daily_wall_at_least'])} wall, at least "
            f"{fmt_ratio(ratios['full_over_daily_model_at_least'])} against the daily model time "
            f"(the full build was stopped at its time limit)"
        )
    else:
        console.print(
            f"full/daily: {fmt_ratio(ratios['full_over_daily_wall'])} wall, "
            f"{fmt_ratio(ratios['full_over_daily_model'])} model time; per as_of_date the daily run costs "
            f"{fmt_ratio(ratios['daily_over_full_per_as_of_date_wall'])} (wall) / "
            f"{fmt_ratio(ratios['daily_over_full_per_as_of_date_model'])} (model) of the full build's"
        )
    counts = [d["fingerprint"]["rows"] for d in daily["runs"]]
    fp = r["full_rows_for_day"]
    if fp is None:
        verdict = "[green]agree[/green]" if r["daily_runs_agree"] else "[red]DISAGREE[/red]"
        console.print(f"rows for {r['daily_as_of_date']}: no full build to compare with; daily runs {counts}: {verdict}")
    else:
        verdict = "[green]match[/green]" if r["daily_matches_full"] else "[red]MISMATCH[/red]"
        console.print(
            f"rows for {r['daily_as_of_date']}: full build {fp['rows']:,} (sha256 {fp['sha256'][:12]}), "
            f"daily runs {counts}: {verdict}"
        )


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--warehouse", choices=["duckdb", "postgres"], default="duckdb")
    parser.add_argument("--customers", type=int, default=1_000_000, help="customers on day 0 (default: 1,000,000)")
    parser.add_argument("--days", type=int, default=90, help="days of raw history (default: 90)")
    parser.add_argument("--repeats", type=int, default=3, help="daily runs to take the median of (default: 3)")
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--start", type=date.fromisoformat, default=date(2025, 1, 1), help="first day, YYYY-MM-DD")
    parser.add_argument("--full-timeout", type=float, default=1200, metavar="SECONDS",
                        help="stop the full build after this long and report a lower bound (default: 1200; 0: none)")
    parser.add_argument("--duckdb-memory-limit", default=None, metavar="SIZE",
                        help="DuckDB memory_limit for the dbt runs, e.g. 12GB (default: DuckDB's, 80%% of RAM)")
    parser.add_argument("--duckdb-temp-limit", default="40GB", metavar="SIZE",
                        help="DuckDB max_temp_directory_size for spilling (default: 40GB rather than DuckDB's 90%% "
                             "of free disk; 'default' for DuckDB's)")
    parser.add_argument("--result-name", default=None, metavar="NAME",
                        help="write TIDEMARK_HOME/bench/NAME.json (default: bench_features[_postgres])")
    args = parser.parse_args(argv)
    if args.repeats < 1:
        parser.error("--repeats must be at least 1")
    try:
        cfg = SimConfig(seed=args.seed, customers=args.customers, start=args.start, days=args.days)
    except ValueError as exc:
        parser.error(str(exc))
    duckdb_settings = {
        key: value
        for key, value in (("memory_limit", args.duckdb_memory_limit), ("max_temp_directory_size", args.duckdb_temp_limit))
        if value and value != "default"
    }
    run(cfg, args.warehouse, args.repeats, args.full_timeout or None, duckdb_settings, args.result_name)


if __name__ == "__main__":
    main()
