"""Spark local[N] against DuckDB, in one run, on the same inputs: a day's features and scoring a partition.

Everything runs in a throwaway TIDEMARK_HOME under the system's temp folder (a DuckDB file and a Spark
catalog with its embedded metastore), removed at the end. The figures go to TIDEMARK_HOME/bench/bench_spark.json.

1. Features of one day. One simulated history (`--customers` x `--days`, `--seed`) is loaded into both
   warehouses, and dbt builds `+customer_features_daily` on each (untimed setup; both times are recorded).
   Then the incremental build of the last day D alone (`dbt run --select customer_features_daily` with
   start_date = end_date = D) is timed three ways, `--repeats` times each, alternating the warehouses; the
   median counts:
   - cold: `dbt run` in a new process, as `python -m ml dbt run` starts it. On Spark that process starts its
     own JVM and opens the metastore. (`python -m ml dbt` also opens and releases the warehouse in its own
     process first; that costs one more session start, measured on its own below, and is not in these figures.)
   - session start: ml.core.spark.session in this process: JVM, SparkContext and the metastore's first query.
   - in-process: dbt's programmatic runner in this process, with the Spark session already up (dbt-spark's
     session method takes the running session). What remains is dbt's own start (partial parse, compile) and
     the queries. This is how `ml.features.dbt.invoke_dbt` runs dbt (the Airflow tasks' way on Spark); the
     bench calls dbt's runner itself to pass its own target folder and flags.
   For each, the wall time and the model's own execution time from run_results.json. Afterwards the rows
   for D must be the same on both warehouses (columns, types and values).

2. Scoring a partition. A synthetic `marts.customer_features_daily` day of `--rows` rows with the dbt
   contract's columns, generated in DuckDB SQL as bench/bench_scoring.py does, is copied to Spark through a
   Parquet file (a table partitioned by as_of_date, as dbt makes it there), and the churn spec's LightGBM
   candidate is fitted on `--train-rows` of it and promoted as champion (all untimed). `ml.scoring` then
   scores the day end to end (`score_shard` + `publish_predictions`, the entry points of every warehouse):
   DuckDB in one shard in this process, Spark on its executors (mapInArrow) with a partition overwrite.
   Once with scores only (explain.top_k 0), once with the spec's reason codes (its top 10%, top 3 each),
   `--score-repeats` times each after an untimed warm-up on each warehouse; the median counts. Both must
   publish the same row and reason counts.

The machine's cores, load and versions are printed with the results. On two cores a local[2] master has no
spare parallelism to gain: what these figures show is Spark's overhead, not its speed-up.

    .venv/bin/python bench/bench_spark.py                                   # 5,000 customers x 120 days; 5M rows
    .venv/bin/python bench/bench_spark.py --customers 500 --days 100 --rows 200000 --repeats 2 --score-repeats 1
    .venv/bin/python bench/bench_spark.py --only scoring --master 'local[4]'
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
from datetime import date, datetime, timezone
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench._common import (  # noqa: E402
    console,
    fmt_ratio,
    median,
    print_table,
    ratio,
    write_result,
)
from ml.core.settings import Settings  # noqa: E402
from ml.ingest.simulate import SimConfig  # noqa: E402

NAME = "bench_spark"
FEATURES = "marts.customer_features_daily"
MODEL_ID = "model.tidemark.customer_features_daily"
REPO = Path(__file__).resolve().parent.parent
PACKAGES = ("pyspark", "dbt-core", "dbt-spark", "dbt-duckdb", "duckdb", "lightgbm", "pyarrow")


def _settings(home: Path, url: str) -> Settings:
    """Settings for `home` and the warehouse `url`; TIDEMARK_SPARK_CONF of this environment applies."""
    env = {"TIDEMARK_HOME": str(home), "TIDEMARK_WAREHOUSE_URL": url}
    if os.environ.get("TIDEMARK_SPARK_CONF"):
        env["TIDEMARK_SPARK_CONF"] = os.environ["TIDEMARK_SPARK_CONF"]
    return Settings.from_env(env)


def _pair(home: Path, master: str) -> dict[str, Settings]:
    """A DuckDB warehouse and a Spark catalog in one home (one registry)."""
    home.mkdir(parents=True)
    return {"duckdb": _settings(home, f"duckdb:///{home / 'warehouse.duckdb'}"),
            "spark": _settings(home, _spark_url(master))}


def _spark_url(master: str) -> str:
    """The warehouse URL of a master given as local[N], host:7077 or spark://host:7077."""
    return master if master.startswith("spark://") else f"spark://{master}"


# -- 1. features of one day -------------------------------------------------------------------------
def _load_history(cfg: SimConfig, warehouses: dict[str, Settings]) -> dict[str, float]:
    """The simulated history into every warehouse's raw tables, each table in one replace of its ingest_date
    partitions (on Spark, a day at a time would be a Spark job per table per day). Seconds per warehouse."""
    import pyarrow as pa

    from ml.core.spark import release
    from ml.core.warehouse import Warehouse
    from ml.ingest.load import RAW_SCHEMA
    from ml.ingest.simulate import simulate

    plan: dict[str, tuple[pa.Schema, list]] = {}
    for day, tables in simulate(cfg):
        for name, rows in tables.items():
            plan.setdefault(f"{RAW_SCHEMA}.{name}", (rows.schema, []))[1].append(({"ingest_date": day}, rows))
    seconds = {}
    for kind, settings in warehouses.items():
        started = time.perf_counter()
        with Warehouse.connect(settings) as wh:
            wh.replace_tables(plan)
        seconds[kind] = time.perf_counter() - started
    release()  # dbt's processes open the same metastore next
    return seconds


class _Dbt:
    """dbt in a new process or in this one, its artifacts and logs in the warehouse's home; each run timed."""

    def __init__(self, settings: Settings):
        self.settings = settings
        self.target = settings.home / f"dbt_target_{settings.warehouse.kind}"
        self.flags = ["--target-path", str(self.target), "--log-path", str(settings.home / "dbt_logs")]

    def process(self, args: list[str], vars: dict | None = None, timeout_s: float | None = None) -> dict:
        """`dbt <args>` in a new process, as run_dbt starts it (without its warehouse check)."""
        from ml.features.dbt import dbt_executable

        cmd = [dbt_executable(), *args, *self.flags] + (["--vars", json.dumps(vars)] if vars else [])
        env = {**os.environ, **self.settings.dbt_env()}
        started = time.perf_counter()
        try:
            proc = subprocess.run(cmd, cwd=self.settings.dbt_project_dir, env=env, text=True,
                                  stdout=subprocess.PIPE, stderr=subprocess.STDOUT, timeout=timeout_s)
        except subprocess.TimeoutExpired:
            raise SystemExit(f"dbt {' '.join(args)} on {self.settings.warehouse.url} ran past {timeout_s:.0f}s "
                             "(--dbt-timeout); a smaller --customers or --days finishes sooner") from None
        seconds = time.perf_counter() - started
        if proc.returncode:
            console.print(proc.stdout[-4000:])
            raise SystemExit(f"dbt {' '.join(args)} failed on {self.settings.warehouse.url}; dbt's output is above")
        return self._timings(seconds)

    def in_process(self, args: list[str], vars: dict | None = None) -> dict:
        """`dbt <args>` through dbt's programmatic runner in this process; on Spark it takes this process's
        running session, if any."""
        from dbt.adapters.factory import cleanup_connections
        from dbt.cli.main import dbtRunner

        from ml.features.dbt import _environment

        project = ["--project-dir", str(self.settings.dbt_project_dir),
                   "--profiles-dir", str(self.settings.dbt_project_dir)]
        extra = ["--vars", json.dumps(vars)] if vars else []
        env = {**self.settings.dbt_env(), "TIDEMARK_DUCKDB_KEEP_OPEN": "False"}
        started = time.perf_counter()
        with _environment(env):
            try:
                outcome = dbtRunner().invoke([*args, *self.flags, *extra, *project, "--quiet", "--no-use-colors"])
            finally:
                cleanup_connections()  # closes the DuckDB file; a Spark session stays up
        seconds = time.perf_counter() - started
        if not outcome.success:
            raise SystemExit(f"dbt {' '.join(args)} failed in this process on {self.settings.warehouse.url}: "
                             f"{outcome.exception or 'see run_results.json in ' + str(self.target)}")
        return self._timings(seconds)

    def _timings(self, seconds: float) -> dict:
        results = json.loads((self.target / "run_results.json").read_text())["results"]
        nodes = {r["unique_id"]: r["execution_time"] for r in results}
        return {"seconds": seconds, "model_seconds": nodes.get(MODEL_ID, 0.0), "nodes": len(nodes),
                "outside_model_seconds": seconds - sum(nodes.values())}


def _session_start(settings: Settings) -> float:
    """Seconds to start this process's Spark session on `settings`' catalog: JVM, context, metastore."""
    from ml.core.spark import release, session

    release()
    started = time.perf_counter()
    session(settings.warehouse)  # its first query opens the metastore
    return time.perf_counter() - started


def _rows_of_day(settings: Settings, day: date):
    from ml.core.warehouse import Warehouse

    with Warehouse.connect(settings, read_only=True) as wh:
        return wh.read_arrow(f"select * from {FEATURES} where as_of_date = date '{day}'")


def _same_rows(spark, duck) -> tuple[bool, str]:
    """Whether two tables hold the same rows (Spark puts the partition column last); what differs if not."""
    if sorted(spark.column_names) != sorted(duck.column_names):
        return False, f"columns {spark.column_names} != {duck.column_names}"
    spark = spark.select(duck.column_names)
    if spark.schema != duck.schema:
        return False, f"types {spark.schema} != {duck.schema}"
    keys = [("customer_id", "ascending")]
    if not spark.sort_by(keys).equals(duck.sort_by(keys)):
        return False, f"values differ ({spark.num_rows:,} rows on Spark, {duck.num_rows:,} on DuckDB)"
    return True, f"{duck.num_rows:,} rows, same values"


def _features(cfg: SimConfig, home: Path, master: str, repeats: int, dbt_timeout: float) -> dict:
    from ml.core.spark import release

    warehouses = _pair(home, master)
    duck, spark = warehouses["duckdb"], warehouses["spark"]
    day = cfg.end
    daily = {"start_date": day.isoformat(), "end_date": day.isoformat()}
    select = ["run", "--select", "customer_features_daily"]
    console.print(f"[bold]1. features[/bold] of {day}: {cfg.customers:,} customers x {cfg.days} days "
                  f"(seed {cfg.seed}), dbt on DuckDB and on Spark {master}")
    console.print("  loading the raw history into both warehouses (untimed) ...")
    load = _load_history(cfg, warehouses)
    dbt = {kind: _Dbt(settings) for kind, settings in warehouses.items()}
    full = {}
    for kind in warehouses:
        console.print(f"  full build on {kind} (untimed) ...")
        full[kind] = dbt[kind].process(["run", "--select", "+customer_features_daily"], timeout_s=dbt_timeout)
        console.print(f"    {full[kind]['seconds']:.1f}s")

    cold = {"duckdb": [], "spark": []}
    for i in range(repeats):  # alternated, so that a change in the machine's load hits both alike
        for kind in warehouses:
            cold[kind].append(dbt[kind].process(select, daily, dbt_timeout))
        console.print(f"  cold {i + 1}/{repeats}: duckdb {cold['duckdb'][-1]['seconds']:.1f}s, "
                      f"spark {cold['spark'][-1]['seconds']:.1f}s")
    starts = []
    for i in range(repeats):
        starts.append(_session_start(spark))
        console.print(f"  Spark session start {i + 1}/{repeats}: {starts[-1]:.1f}s")
    try:
        # The first run in this process imports dbt and its adapters and parses: untimed.
        first = {kind: dbt[kind].in_process(select, daily) for kind in warehouses}
        warm = {"duckdb": [], "spark": []}
        for i in range(repeats):
            for kind in warehouses:
                warm[kind].append(dbt[kind].in_process(select, daily))
            console.print(f"  in-process {i + 1}/{repeats}: duckdb {warm['duckdb'][-1]['seconds']:.1f}s, "
                          f"spark {warm['spark'][-1]['seconds']:.1f}s (session up)")
        same, detail = _same_rows(_rows_of_day(spark, day), _rows_of_day(duck, day))
    finally:
        release()

    def summary(runs: list[dict]) -> dict:
        return {"seconds": median([r["seconds"] for r in runs]),
                "model_seconds": median([r["model_seconds"] for r in runs]),
                "outside_model_seconds": median([r["outside_model_seconds"] for r in runs]), "runs": runs}

    result = {
        "config": {"customers": cfg.customers, "days": cfg.days, "seed": cfg.seed, "start": cfg.start.isoformat()},
        "as_of_date": day.isoformat(), "repeats": repeats,
        "history_load_seconds": load, "full_build": full,
        "cold": {kind: summary(runs) for kind, runs in cold.items()},
        "session_start": {"seconds": median(starts), "runs": starts},
        "in_process_first": first,
        "in_process": {kind: summary(runs) for kind, runs in warm.items()},
        "rows_match": same, "rows_detail": detail,
    }
    c, w = result["cold"], result["in_process"]
    result["ratios_spark_over_duckdb"] = {
        "cold_wall": ratio(c["spark"]["seconds"], c["duckdb"]["seconds"]),
        "cold_model": ratio(c["spark"]["model_seconds"], c["duckdb"]["model_seconds"]),
        "in_process_wall": ratio(w["spark"]["seconds"], w["duckdb"]["seconds"]),
        "in_process_model": ratio(w["spark"]["model_seconds"], w["duckdb"]["model_seconds"]),
        "full_build_wall": ratio(full["spark"]["seconds"], full["duckdb"]["seconds"]),
    }
    return result


# -- 2. scoring a partition -------------------------------------------------------------------------
def _copy_features_to_spark(duck: Settings, spark: Settings, folder: Path) -> float:
    """The DuckDB feature table into Spark through Parquet, as a table partitioned by as_of_date."""
    import duckdb

    from ml.core.spark import session

    started = time.perf_counter()
    folder.mkdir(parents=True)
    con = duckdb.connect(str(duck.warehouse.path), read_only=True)
    try:
        con.execute(f"copy (select * from {FEATURES}) to '{folder / 'features.parquet'}' (format parquet)")
    finally:
        con.close()
    session_ = session(spark.warehouse)
    session_.sql("create database if not exists marts")
    session_.read.parquet(str(folder / "features.parquet")).write.format("parquet").partitionBy(
        "as_of_date").mode("overwrite").saveAsTable(FEATURES)
    shutil.rmtree(folder)
    return time.perf_counter() - started


def _score(settings: Settings, spec, run_id: str) -> dict:
    """ml.scoring end to end on the bench day: the shard (DuckDB: all of the scoring; Spark: nothing), then
    publishing (Spark: the scoring on the executors and the partition overwrite)."""
    from bench.bench_scoring import DAY
    from ml.scoring.score import publish_predictions, score_shard

    started = time.perf_counter()
    shard = score_shard(spec, settings, [DAY], 0, 1, run_id, datetime.now(timezone.utc))
    scored = time.perf_counter()
    published = publish_predictions(spec, settings, [shard])
    done = time.perf_counter()
    return {"seconds": done - started, "shard_seconds": scored - started, "publish_seconds": done - scored,
            "rows": published["rows"][DAY.isoformat()], "reasons": published["reasons"][DAY.isoformat()]}


def _scoring(home: Path, master: str, rows: int, train_rows: int, repeats: int) -> dict:
    from bench.bench_scoring import DAY, _synthesize, _train_champion
    from ml.core.spark import release
    from ml.core.spec import ExplainSpec, dbt_relation, feature_schema, load_spec

    warehouses = _pair(home, master)
    duck, spark = warehouses["duckdb"], warehouses["spark"]
    explaining = load_spec("churn")
    scores_only = explaining.model_copy(update={"explain": ExplainSpec(top_k=0)})
    specs = {"scores": scores_only, "explained": explaining}
    console.print(f"[bold]2. scoring[/bold] {rows:,} feature rows of {DAY} with the {explaining.name!r} spec's "
                  f"LightGBM: DuckDB (one shard) and Spark {master} (executors)")
    relation = dbt_relation(duck.dbt_manifest, explaining.features.relation)
    schema = feature_schema(explaining, relation)
    started = time.perf_counter()
    _synthesize(duck, explaining, relation, DAY, rows, 0)
    synthesized = time.perf_counter() - started
    champion = _train_champion(duck, explaining, schema, min(train_rows, rows))
    console.print(f"  synthesized in {synthesized:.1f}s; champion {champion['version']}: {champion['trees']} trees "
                  f"on {champion['train_rows']:,} rows in {champion['fit_seconds']}s")
    try:
        copied = _copy_features_to_spark(duck, spark, home / "parquet")
        console.print(f"  copied to Spark through Parquet in {copied:.1f}s (untimed)")
        # Untimed: caches the champion, creates the tables; on Spark ships the champion and starts the workers.
        first = {kind: _score(settings, explaining, f"warm-up-{kind}") for kind, settings in warehouses.items()}
        console.print(f"  warm-up: duckdb {first['duckdb']['seconds']:.1f}s, spark {first['spark']['seconds']:.1f}s")
        runs = {(kind, what): [] for kind in warehouses for what in specs}
        for i in range(repeats):  # alternated, so that a change in the machine's load hits all alike
            for what, spec in specs.items():
                for kind, settings in warehouses.items():
                    runs[kind, what].append(_score(settings, spec, f"{what}-{kind}-{i}"))
            console.print(f"  {i + 1}/{repeats}: " + ", ".join(
                f"{kind} {what} {r[-1]['seconds']:.1f}s" for (kind, what), r in runs.items()))
    finally:
        release()

    mismatches = [f"{what}: {kind} published {r['rows']:,} rows and {r['reasons']:,} reasons"
                  for (kind, what), results in runs.items() for r in results
                  if (r["rows"], r["reasons"]) != (runs["duckdb", what][0]["rows"], runs["duckdb", what][0]["reasons"])
                  or r["rows"] != rows]
    result = {"rows": rows, "as_of_date": DAY.isoformat(), "repeats": repeats, "champion": champion,
              "explain": {"fraction": explaining.explain.fraction, "top_k": explaining.explain.top_k,
                          "explained_rows": math.ceil(explaining.explain.fraction * rows)},
              "synthesize_seconds": synthesized, "copy_to_spark_seconds": copied, "warm_up": first,
              "mismatches": mismatches}
    for (kind, what), results in runs.items():
        seconds = median([r["seconds"] for r in results])
        result.setdefault(what, {})[kind] = {
            "seconds": seconds, "rows_per_s": rows / seconds,
            "shard_seconds": median([r["shard_seconds"] for r in results]),
            "publish_seconds": median([r["publish_seconds"] for r in results]),
            "reasons": results[0]["reasons"], "runs": results}
    result["ratios_spark_over_duckdb"] = {what: ratio(result[what]["spark"]["seconds"], result[what]["duckdb"]["seconds"])
                                          for what in specs}
    return result


# -- output ----------------------------------------------------------------------------------------
def _environment(master: str) -> dict:
    versions = {}
    for package in PACKAGES:
        try:
            versions[package] = version(package)
        except PackageNotFoundError:
            versions[package] = None
    try:
        java = subprocess.run(["java", "-version"], text=True, capture_output=True, timeout=60).stderr
        versions["java"] = java.strip().splitlines()[0] if java.strip() else None
    except (OSError, subprocess.TimeoutExpired):
        versions["java"] = None
    return {"cpus": os.cpu_count(), "cpus_usable": len(os.sched_getaffinity(0)), "spark_master": master,
            "python": platform.python_version(), "versions": versions,
            "load_average_at_start": [round(x, 2) for x in os.getloadavg()]}


def _print_environment(env: dict) -> None:
    versions = ", ".join(f"{k} {v}" for k, v in env["versions"].items() if v)
    console.print(f"environment: {env['cpus_usable']} usable cores of {env['cpus']}, Spark master {env['spark_master']}, "
                  f"Python {env['python']}; {versions}")
    console.print(f"load average (1, 5, 15 min): {env['load_average_at_start']} at the start, "
                  f"{env.get('load_average_at_end')} at the end")
    console.print(f"[yellow]note:[/yellow] {env['spark_master']} on {env['cpus_usable']} cores: Spark has no spare "
                  "cores to spread work over here, so these ratios show its overhead (JVM, scheduling, Python "
                  "workers, Parquet commits), not the speed-up a cluster would bring.")


def _dbt_rows(label: str, outside: str, timings: dict, ratios: dict, key: str) -> list[tuple[str, ...]]:
    """A way of running dbt's three rows: its wall time, the model's execution, and the time outside it."""
    def row(name: str, field: str, ratio_key: str | None) -> tuple[str, ...]:
        return (name, f"{timings['duckdb'][field]:.2f}", f"{timings['spark'][field]:.2f}",
                fmt_ratio(ratios[ratio_key]) if ratio_key else "")

    return [row(f"{label}: wall", "seconds", f"{key}_wall"),
            row("  the model's execution", "model_seconds", f"{key}_model"),
            row(f"  outside it ({outside})", "outside_model_seconds", None)]


def _print_features(f: dict) -> None:
    c, w, r = f["cold"], f["in_process"], f["ratios_spark_over_duckdb"]
    cfg = f["config"]
    print_table(
        f"features of {f['as_of_date']}, {cfg['customers']:,} customers x {cfg['days']} days: "
        f"dbt run --select customer_features_daily, median of {f['repeats']}",
        ["run", "DuckDB s", "Spark s", "Spark/DuckDB"],
        [
            *_dbt_rows("dbt in a new process (cold)", "Python, dbt start, Spark's JVM", c, r, "cold"),
            ("Spark session start in this process", "", f"{f['session_start']['seconds']:.2f}", ""),
            *_dbt_rows("dbt in this process, session up", "dbt's parse and compile", w, r, "in_process"),
            ("setup: full build, every date (1 run)", f"{f['full_build']['duckdb']['seconds']:.2f}",
             f"{f['full_build']['spark']['seconds']:.2f}", fmt_ratio(r["full_build_wall"])),
            ("setup: raw history load (1 run)", f"{f['history_load_seconds']['duckdb']:.2f}",
             f"{f['history_load_seconds']['spark']:.2f}",
             fmt_ratio(ratio(f["history_load_seconds"]["spark"], f["history_load_seconds"]["duckdb"]))),
        ],
    )
    fixed = {kind: c[kind]["seconds"] - w[kind]["seconds"] for kind in c}
    console.print(f"fixed costs of a cold run (cold wall - in-process wall): Spark {fixed['spark']:.1f}s, DuckDB "
                  f"{fixed['duckdb']:.1f}s; in the model, a fresh JVM's first queries take Spark "
                  f"{c['spark']['model_seconds'] - w['spark']['model_seconds']:.1f}s more than a warm session's")
    verdict = "[green]match[/green]" if f["rows_match"] else "[red]DIFFER[/red]"
    console.print(f"rows for {f['as_of_date']} on Spark and DuckDB: {verdict} ({f['rows_detail']})")


def _print_scoring(s: dict) -> None:
    r, e = s["ratios_spark_over_duckdb"], s["explain"]
    labels = {"scores": "scores only (explain.top_k 0)",
              "explained": f"with reason codes (top {e['fraction']:.0%}, {e['top_k']} each)"}
    rows = []
    for what, label in labels.items():
        d, sp = s[what]["duckdb"], s[what]["spark"]
        rows.append((label, f"{d['seconds']:.2f}", f"{d['rows_per_s']:,.0f}", f"{sp['seconds']:.2f}",
                     f"{sp['rows_per_s']:,.0f}", fmt_ratio(r[what])))
    w = s["warm_up"]
    rows.append(("first run, reason codes (untimed warm-up)", f"{w['duckdb']['seconds']:.2f}", "",
                 f"{w['spark']['seconds']:.2f}", "", fmt_ratio(ratio(w["spark"]["seconds"], w["duckdb"]["seconds"]))))
    print_table(f"scoring {s['rows']:,} rows end to end (ml.scoring: score + publish), {s['champion']['trees']}-tree "
                f"LightGBM, median of {s['repeats']}",
                ["run", "DuckDB s", "DuckDB rows/s", "Spark s", "Spark rows/s", "Spark/DuckDB"], rows)
    d = s["scores"]["duckdb"]
    console.print(f"DuckDB's scores-only run: {d['shard_seconds']:.2f}s scoring to Parquet, {d['publish_seconds']:.2f}s "
                  "publishing; Spark scores inside publishing (its shard does nothing)")
    if s["mismatches"]:
        console.print(f"[red]published counts differ:[/red] {s['mismatches']}")
    else:
        console.print(f"published counts agree: {s['rows']:,} rows per run, {s['explained']['duckdb']['reasons']:,} "
                      f"reasons with reason codes ({e['explained_rows']:,} rows explained)")


def run(cfg: SimConfig, master: str, repeats: int, rows: int, train_rows: int, score_repeats: int,
        only: str | None, dbt_timeout: float, keep: bool) -> dict:
    started = time.perf_counter()
    env = _environment(master)
    # The executors' Python workers import this repository's `ml`, whatever folder the benchmark runs from.
    os.environ["PYTHONPATH"] = os.pathsep.join(p for p in (str(REPO), os.environ.get("PYTHONPATH")) if p)
    os.environ.setdefault("PYSPARK_PYTHON", sys.executable)
    root = Path(tempfile.mkdtemp(prefix=f"{NAME}-"))
    console.print(f"[bold]{NAME}[/bold]: Spark {master} against DuckDB; scratch TIDEMARK_HOME {root}")
    result: dict = {"environment": env}
    try:
        if only in (None, "features"):
            result["features"] = _features(cfg, root / "features", master, repeats, dbt_timeout)
            _print_features(result["features"])
        if only in (None, "scoring"):
            result["scoring"] = _scoring(root / "scoring", master, rows, train_rows, score_repeats)
            _print_scoring(result["scoring"])
    finally:
        from ml.core.spark import release

        release()
        if keep:
            console.print(f"kept {root}")
        else:
            shutil.rmtree(root, ignore_errors=True)
    env["load_average_at_end"] = [round(x, 2) for x in os.getloadavg()]
    result["wall_seconds"] = time.perf_counter() - started
    _print_environment(env)
    console.print(f"the whole benchmark took {result['wall_seconds']:.0f}s")
    path = write_result(NAME, result)
    console.print(f"wrote {path}")
    failed = ([] if result.get("features", {}).get("rows_match", True) else ["the day's feature rows differ"]) + \
        result.get("scoring", {}).get("mismatches", [])
    if failed:
        raise SystemExit(f"Spark and DuckDB disagree: {failed}")
    return result


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--master", default="local[2]",
                        help="Spark master: local[N], local[*] or spark://host:7077 (default: local[2])")
    parser.add_argument("--only", choices=["features", "scoring"], default=None, help="run one part (default: both)")
    parser.add_argument("--customers", type=int, default=5_000, help="customers of the history (default: 5,000)")
    parser.add_argument("--days", type=int, default=120, help="days of raw history (default: 120)")
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--start", type=date.fromisoformat, default=date(2025, 1, 1), help="first day, YYYY-MM-DD")
    parser.add_argument("--repeats", type=int, default=3, help="timed runs of the day's build per way (default: 3)")
    parser.add_argument("--dbt-timeout", type=float, default=3600, metavar="SECONDS",
                        help="give up on a dbt process after this long (default: 3600)")
    parser.add_argument("--rows", type=int, default=5_000_000, help="feature rows scored (default: 5,000,000)")
    parser.add_argument("--train-rows", type=int, default=200_000, help="rows the champion is fitted on")
    parser.add_argument("--score-repeats", type=int, default=2, help="timed scoring runs per case (default: 2)")
    parser.add_argument("--keep", action="store_true", help="keep the scratch TIDEMARK_HOME")
    args = parser.parse_args(argv)
    for name in ("customers", "days", "repeats", "rows", "train_rows", "score_repeats"):
        if getattr(args, name) < 1:
            parser.error(f"--{name.replace('_', '-')} must be at least 1")
    from ml.core.settings import parse_warehouse_url

    try:
        parse_warehouse_url(_spark_url(args.master), variable="--master")
    except ValueError as exc:
        parser.error(f"--master {args.master!r} is not a Spark master ({exc}); give local[N], local[*] or "
                     "spark://host:7077")
    try:
        cfg = SimConfig(seed=args.seed, customers=args.customers, start=args.start, days=args.days)
    except ValueError as exc:
        parser.error(str(exc))
    run(cfg, args.master, args.repeats, args.rows, args.train_rows, args.score_repeats, args.only,
        args.dbt_timeout, args.keep)


if __name__ == "__main__":
    main()
