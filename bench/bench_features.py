"""A full rebuild of marts.customer_features_daily against a daily incremental run, and against its peers.

1. Simulate and load `--days` of raw history into a throwaway warehouse (timed separately).
2. Full build: `dbt run --select +customer_features_daily --full-refresh`, every as_of_date (the
   mart's `windows` formulation: range frames over each customer's days).
3. Daily run: `dbt run --select customer_features_daily` with start_date = end_date = the last
   day D, repeated `--repeats` times after the full build; the median counts. `auto` takes the `join`
   formulation for it; the same daily run with the `windows` formulation is timed too.
4. PostgreSQL only: the daily run again with JIT compilation on (`PGOPTIONS=-c jit=on`), against the
   pipeline's setting (off).
5. `--per-day-peer`: the `join` formulation run one as_of_date per query over the whole history, as a
   microbatch build would run it (one batch per day, each reading its 90-day window); its rows must
   equal the mart's.

Reported as the ratio full/daily, for wall time (dbt start-up included) and for the model's own
execution time from run_results.json, and per as_of_date, with the peak RSS of each dbt process. To
keep the comparison honest, the rows for D after every daily run must equal the full build's rows for
D: same count and the same sha256 over every column in customer_id order.

DuckDB runs under TIDEMARK_DUCKDB_MEMORY_LIMIT (`--duckdb-memory-limit`, default 6GB here) and spills
to TIDEMARK_DUCKDB_TEMP_DIR; `--duckdb-temp-limit` caps the spill (default 40GB). A full build that
runs past `--full-timeout` is stopped, and one that fails (e.g. out of memory and temp space) is
recorded; either way the daily runs are still measured, and after a timeout the ratio is reported as
a lower bound.

    .venv/bin/python bench/bench_features.py                        # 1,000,000 customers x 90 days
    .venv/bin/python bench/bench_features.py --customers 250000 --days 365
    .venv/bin/python bench/bench_features.py --customers 125000 --per-day-peer
    .venv/bin/python bench/bench_features.py --warehouse postgres --customers 100000
"""

from __future__ import annotations

import argparse
import hashlib
import json
import sys
import threading
import time
from dataclasses import asdict, replace
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
        profiles["tidemark"]["outputs"]["duckdb"].setdefault("config_options", {}).update(duckdb_settings)
        folder = self.settings.home / "dbt_profiles"
        folder.mkdir(exist_ok=True)
        (folder / "profiles.yml").write_text(yaml.safe_dump(profiles, sort_keys=False))
        return folder

    def __call__(
        self, args: list[str], vars: dict | None = None, timeout_s: float | None = None, allow_failure: bool = False,
        env: dict[str, str] | None = None,
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
                result = run_dbt([*args, *self.flags], settings=self.settings, vars=vars, capture=True, env=env)
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


def _per_day_peer(settings: Settings, dbt: "_Dbt", cfg: SimConfig) -> dict:
    """The mart's join formulation run one as_of_date per query over the whole history, into a scratch table:
    what a microbatch build runs, one batch per day, each reading that day's 90-day window."""
    from datetime import timedelta

    from ml.core.warehouse import Warehouse

    first = cfg.start.isoformat()
    dbt(["compile", "--select", "customer_features_daily"],
        vars={"start_date": first, "end_date": first, "features_formulation": "join"})
    compiled = (dbt.target / "compiled" / "tidemark" / "models" / "marts" / "customer_features_daily.sql").read_text()
    if compiled.count(f"'{first}'") < 2:
        raise SystemExit(f"the compiled reference does not name {first} as its bounds; cannot run it per day")
    seconds, rows = [], 0
    with Warehouse.connect(settings) as wh:
        wh.execute(f"create table marts.features_by_join as select * from ({compiled}) as r where false")
        for i in range(cfg.days):
            day = (cfg.start + timedelta(days=i)).isoformat()
            started = time.perf_counter()
            wh.execute(f"insert into marts.features_by_join select * from ({compiled.replace(repr(first), repr(day))}) as r")
            seconds.append(time.perf_counter() - started)
        rows = wh.scalar("select count(*) from marts.features_by_join")
        extra = wh.scalar(f"select count(*) from (select * from marts.features_by_join except all "
                          f"select * from {FEATURES}) as d")
    return {"seconds": sum(seconds), "slowest_day_seconds": max(seconds), "rows": rows,
            "rows_not_in_mart": extra}


def run(
    cfg: SimConfig,
    warehouse: str,
    repeats: int,
    full_timeout: float | None,
    duckdb_settings: dict,
    result_name: str | None = None,
    memory_limit: str | None = None,
    per_day_peer: bool = False,
) -> dict:
    day = cfg.end
    console.print(
        f"[bold]{NAME}[/bold]: {cfg.customers:,} customers x {cfg.days} days on {warehouse} (seed {cfg.seed}); "
        f"daily run for {day}, {repeats} repeat(s)" + (f"; DuckDB settings {duckdb_settings}" if duckdb_settings else "")
    )
    daily_vars = {"start_date": day.isoformat(), "end_date": day.isoformat()}
    with scratch_settings(NAME, warehouse) as settings:
        if memory_limit and warehouse == "duckdb":
            settings = replace(settings, warehouse=replace(settings.warehouse, memory_limit=memory_limit))
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

        # The same daily run with the windows formulation, which `auto` leaves to longer runs.
        windows_daily = []
        for i in range(repeats):
            console.print(f"  daily run with the windows formulation {i + 1}/{repeats} ...")
            windows_daily.append(dbt(["run", "--select", "customer_features_daily"],
                                     vars={**daily_vars, "features_formulation": "windows"}))
        jit_on = []
        if warehouse == "postgres":
            # The same daily run with PostgreSQL's JIT compilation back on (the pipeline turns it off).
            for i in range(repeats):
                console.print(f"  daily run with JIT on {i + 1}/{repeats} ...")
                jit_on.append(dbt(["run", "--select", "customer_features_daily"], vars=daily_vars,
                                  env={"PGOPTIONS": "-c jit=on"}))
        peer = None
        if per_day_peer and not full["stopped"]:
            console.print(f"  the join formulation, one as_of_date per query, {cfg.days} dates ...")
            peer = _per_day_peer(settings, dbt, cfg)

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
    daily["windows_formulation"] = {
        "seconds": median([d["seconds"] for d in windows_daily]),
        "model_seconds": median([d["model_seconds"] for d in windows_daily]),
        "runs": windows_daily,
    }
    if jit_on:
        daily["jit_on"] = {
            "seconds": median([d["seconds"] for d in jit_on]),
            "model_seconds": median([d["model_seconds"] for d in jit_on]),
            "runs": jit_on,
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
    if jit_on:
        ratios["daily_model_jit_on_over_off"] = ratio(daily["jit_on"]["model_seconds"], daily["model_seconds"])
    if peer:
        ratios["per_day_join_over_full"] = ratio(peer["seconds"], full["model_seconds"])
    result = {
        "per_day_join_peer": peer,
        "memory_limit": memory_limit,
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
    w = daily["windows_formulation"]
    console.print(f"the daily run with the join formulation (auto's choice): {daily['model_seconds']:.2f}s in the model; "
                  f"with the windows formulation: {w['model_seconds']:.2f}s")
    if "jit_on" in daily:
        console.print(
            f"PostgreSQL JIT: the daily model ran {daily['model_seconds']:.2f}s with JIT off (the pipeline's setting) and "
            f"{daily['jit_on']['model_seconds']:.2f}s with it on: on/off {fmt_ratio(ratios['daily_model_jit_on_over_off'])}"
        )
    if r.get("per_day_join_peer"):
        p = r["per_day_join_peer"]
        console.print(
            f"the join formulation one date per query: {p['seconds']:.1f}s for {s['days']} dates ({p['rows']:,} rows, "
            f"{p['rows_not_in_mart']} not in the mart), {fmt_ratio(ratios['per_day_join_over_full'])} the full "
            "rebuild's model time"
        )
    console.print(f"peak RSS of the dbt process: full rebuild {full['peak_rss_mib']:,.0f} MiB, daily run "
                  f"{daily['peak_rss_mib']:,.0f} MiB" + (f" (DuckDB memory_limit {r['memory_limit']})" if r["memory_limit"] else ""))
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
    parser.add_argument("--duckdb-memory-limit", default="6GB", metavar="SIZE",
                        help="TIDEMARK_DUCKDB_MEMORY_LIMIT for the dbt runs (default: 6GB; 'default' for the "
                             "setting's own default, 80%% of RAM)")
    parser.add_argument("--per-day-peer", action="store_true",
                        help="also run the join definition one as_of_date per query over the history (slow at scale)")
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
    duckdb_settings = {"max_temp_directory_size": args.duckdb_temp_limit} if args.duckdb_temp_limit != "default" else {}
    memory_limit = None if args.duckdb_memory_limit == "default" else args.duckdb_memory_limit
    run(cfg, args.warehouse, args.repeats, args.full_timeout or None, duckdb_settings, args.result_name,
        memory_limit, args.per_day_peer)


if __name__ == "__main__":
    main()
