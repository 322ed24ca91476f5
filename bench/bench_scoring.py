"""Batch scoring, warehouse to warehouse, against the ceiling (LightGBM alone) and the naive pandas peer.

Setup (untimed): a throwaway DuckDB warehouse gets a synthetic `marts.customer_features_daily` with
the columns and types of the feature mart's dbt contract, generated in SQL from `range()` and
`hash()` (deterministic, no dbt run): `--rows` rows on one as_of_date for the ratios and
`--rss-rows` rows on another for the memory probe. The churn spec's LightGBM candidate is fitted
through the candidate API on a `--train-rows` sample with a synthetic label (a logistic function of a
few features plus noise), published to a local registry and promoted to champion.

Measured on the same `--rows` rows, in this run:

- ours: `ml.scoring.score` end to end: stream the partition out of DuckDB as Arrow batches, score, write the
  shard's Parquet file, and replace the (model, as_of_date) partition of ml.predictions in one
  transaction, with no rows explained (explain.top_k 0). Median of `--repeats`.
- explained: the same run with the churn spec's reason codes: the day's top 10% of scores explained
  (TreeSHAP, top 3 contributions per row) and published with the scores into ml.prediction_reasons in the
  same transaction. Median of `--repeats`, each run right after one of ours. Its extra time over ours, as a
  multiple of ours, has a ceiling of 1.0.
- ceiling: `booster.predict` alone on the same rows already in memory as a float64 numpy matrix. Median
  of `--repeats`, each run right after one of ours.
- naive: `pandas.read_sql` through DuckDB's DBAPI connection, `predict_proba` on the frame, then
  `DataFrame.to_sql` (append, multi-row INSERTs of 1,000). Its inserts run at a few thousand rows/s,
  so it is timed on the first `--naive-rows` rows of the partition (by customer_id); its cost is
  linear in rows, and the ratio compares rows/s.

Memory: our path, with the spec's reason codes, scores the `--rss-rows` partition in a child process,
which reports its own peak RSS (VmHWM of /proc/self/status). `resource.getrusage(RUSAGE_CHILDREN).ru_maxrss`
is recorded as well, but on Linux it is an upper bound only: a child started by fork + exec inherits the
parent's RSS at fork time as its starting high-water mark, and this parent holds the ceiling's matrix by then.

    .venv/bin/python bench/bench_scoring.py                    # 1,000,000 rows for ratios, 5,000,000 for RSS
    .venv/bin/python bench/bench_scoring.py --rows 200000 --rss-rows 1000000 --naive-rows 20000
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import time
import warnings
from datetime import date, datetime, timezone
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench._common import (  # noqa: E402
    console,
    fmt_ratio,
    median,
    print_table,
    ratio,
    scratch_settings,
    write_result,
)
from ml.core.settings import Settings  # noqa: E402

NAME = "bench_scoring"
DAY, RSS_DAY = date(2025, 3, 1), date(2025, 3, 2)
FEATURES = '"marts"."customer_features_daily"'
CATEGORIES = {
    "plan_code": ("basic", "standard", "premium"),
    "region": ("north", "south", "east", "west"),
    "acquisition_channel": ("organic", "paid_search", "referral", "partner", "social_promo"),
}


def _column_sql(name: str, kind: str, spec) -> str:
    """A deterministic pseudo-random value of the contract type, a function of the row number `i`."""
    h = f"hash(i, '{name}')"
    if name == spec.entity_key:
        return f"cast(i as {kind}) as {name}"
    if name in CATEGORIES:
        values = ", ".join(f"'{v}'" for v in CATEGORIES[name])
        return f"([{values}])[1 + cast({h} % {len(CATEGORIES[name])} as integer)] as {name}"
    if kind.startswith(("numeric", "decimal")):
        return f"cast(({h} % 100000) / 100.0 as {kind}) as {name}"
    if "int" in kind:
        return f"cast({h} % 60 as {kind}) as {name}"
    return f"cast(null as {kind}) as {name}"


def _synthesize(settings: Settings, spec, relation, day: date, rows: int, offset: int) -> None:
    from ml.core.warehouse import Warehouse

    cols = [f"date '{day}' as {name}" if name == spec.time_column else _column_sql(name, kind, spec)
            for name, kind in relation.columns.items()]
    select = f"select {', '.join(cols)} from range({offset}, {offset + rows}) as r(i)"
    with Warehouse.connect(settings) as wh:
        wh.execute("create schema if not exists marts")
        if wh.table_exists("marts.customer_features_daily"):
            wh.execute(f"insert into {FEATURES} {select}")
        else:
            wh.execute(f"create table {FEATURES} as {select}")


def synthetic_label(X, seed: int):
    """A churn label for synthetic feature rows: a logistic function of a few features plus noise. Returns
    (labels, the true probability of each)."""
    import numpy as np

    rng = np.random.default_rng(seed)
    z = lambda col: (X[col] - X[col].mean()) / X[col].std()  # noqa: E731
    logit = (-2.2 + 0.9 * z("days_since_last_activity") - 0.7 * z("sessions_30d") + 0.6 * z("failed_payments_90d")
             + 0.5 * (X["plan_code"] == "premium") - 0.4 * z("tenure_days")
             + 0.3 * z("tickets_30d") * z("monthly_price"))
    p = 1 / (1 + np.exp(-logit))
    return (rng.random(len(X)) < p).astype(int), p


def _train_champion(settings: Settings, spec, schema, train_rows: int) -> dict:
    """Fit the spec's LightGBM candidate on a sample with a synthetic label; publish and promote it."""
    from ml.core.warehouse import Warehouse
    from ml.registry import Registry
    from ml.training.candidates import build_candidate
    from ml.training.data import to_frame
    from ml.training.metrics import choose_threshold

    with Warehouse.connect(settings, read_only=True) as wh:
        table = wh.read_arrow(f"select * from {FEATURES} where {spec.time_column} = date '{DAY}' "
                              f"order by {spec.entity_key} limit {train_rows}")
    X = to_frame(table, schema)
    y, _ = synthetic_label(X, spec.seed)
    cut = int(len(X) * 0.8)
    cand = spec.candidate("lightgbm")
    started = time.perf_counter()
    model = build_candidate(cand.kind, dict(cand.params), schema, spec.seed).fit(X[:cut], y[:cut], X[cut:], y[cut:])
    fit_seconds = time.perf_counter() - started
    threshold = choose_threshold(y[cut:], model.predict_proba(X[cut:])[:, 1], spec.threshold.strategy)
    directory = settings.home / "champion"
    model.save(directory)
    registry = Registry.from_settings(settings)
    info = registry.publish(spec.name, directory, {
        "threshold": threshold, "feature_schema": schema.to_dict(), "entity_key": spec.entity_key,
        "time_column": spec.time_column, "kind": cand.kind, "params": dict(cand.params),
    })
    registry.promote(spec.name, info.version, actor="bench", reason="synthetic benchmark champion")
    return {"version": info.version, "trees": model.best_iteration_, "threshold": threshold,
            "train_rows": cut, "fit_seconds": round(fit_seconds, 2), "positive_rate": round(float(y.mean()), 4)}


def _ours(settings: Settings, spec, run_id: str) -> dict:
    from ml.scoring.score import publish_predictions, score_shard

    scored_at = datetime.now(timezone.utc)
    started = time.perf_counter()
    shard = score_shard(spec, settings, [DAY], 0, 1, run_id, scored_at)
    scored = time.perf_counter()
    published = publish_predictions(spec, settings, [shard])
    done = time.perf_counter()
    return {"seconds": done - started, "score_seconds": scored - started, "publish_seconds": done - scored,
            "rows": published["rows"][DAY.isoformat()], "reasons": published["reasons"][DAY.isoformat()],
            "explained": shard["days"][DAY.isoformat()]["reasons"]["explained"] if spec.explain.top_k else 0}


def _ceiling(settings: Settings, spec) -> dict:
    """booster.predict on the partition's rows already in memory as a C-ordered float64 matrix."""
    import numpy as np

    from ml.core.warehouse import Warehouse
    from ml.scoring.score import load_champion
    from ml.training.data import to_frame

    model, _, _ = load_champion(spec, settings)
    with Warehouse.connect(settings, read_only=True) as wh:
        table = wh.read_arrow(f"select * from {FEATURES} where {spec.time_column} = date '{DAY}'")
    matrix = np.ascontiguousarray(model._matrix(to_frame(table, model.features)))
    del table
    started = time.perf_counter()
    scores = model.booster_.predict(matrix, num_iteration=model.best_iteration_)
    return {"seconds": time.perf_counter() - started, "rows": len(scores)}


def _naive(settings: Settings, spec, rows: int) -> dict:
    """pandas.read_sql -> predict_proba -> DataFrame.to_sql, on the first `rows` rows of the partition."""
    import duckdb
    import pandas as pd

    from ml.scoring.score import load_champion

    model, manifest, version = load_champion(spec, settings)
    con = duckdb.connect(str(settings.warehouse.path))
    try:
        con.execute("drop table if exists naive_predictions")
        with warnings.catch_warnings():  # pandas warns that it has not tested DBAPI connections other than sqlite3
            warnings.simplefilter("ignore", UserWarning)
            started = time.perf_counter()
            frame = pd.read_sql(f"select * from {FEATURES} where {spec.time_column} = date '{DAY}' "
                                f"order by {spec.entity_key} limit {rows}", con)
            read = time.perf_counter()
            scores = model.predict_proba(frame)[:, 1]
            predicted = time.perf_counter()
            out = pd.DataFrame({
                "entity_id": frame[spec.entity_key].astype(str), "as_of_date": frame[spec.time_column],
                "model_name": spec.name, "model_version": version, "score": scores,
                "predicted_label": (scores >= manifest["threshold"]).astype("int32"),
                "threshold": manifest["threshold"], "scored_at": pd.Timestamp.now(tz="UTC").tz_localize(None),
            })
            out.to_sql("naive_predictions", con, index=False, if_exists="append", method="multi", chunksize=1_000)
            done = time.perf_counter()
        written = con.execute("select count(*) from naive_predictions").fetchone()[0]
    finally:
        con.close()
    return {"seconds": done - started, "read_seconds": read - started, "predict_seconds": predicted - read,
            "write_seconds": done - predicted, "rows": written}


CHILD = """
import json, logging, resource, sys, time
from datetime import date, datetime, timezone
from ml.core.settings import Settings
from ml.core.spec import load_spec
from ml.scoring.score import publish_predictions, score_shard
logging.basicConfig(level=logging.INFO, format="    %(message)s")
def peak():
    try:  # the high-water mark of this process's own memory; ru_maxrss also counts the parent's at fork
        return int(open("/proc/self/status").read().split("VmHWM:")[1].split()[0]) / 1024
    except (OSError, IndexError, ValueError):
        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
spec, settings = load_spec("churn"), Settings.from_env()
started = time.perf_counter()
shard = score_shard(spec, settings, [date.fromisoformat(sys.argv[1])], 0, 1, "rss", datetime.now(timezone.utc))
scored, after_score = time.perf_counter(), peak()
result = publish_predictions(spec, settings, [shard])
print(json.dumps({"rows": sum(result["rows"].values()), "seconds": time.perf_counter() - started,
                  "score_seconds": scored - started, "peak_rss_after_score_mib": after_score,
                  "self_peak_rss_mib": peak()}))
"""


def _rss(settings: Settings) -> dict:
    """Score the RSS partition in a child process; its own peak RSS, and RUSAGE_CHILDREN once it exited."""
    env = {**os.environ, "TIDEMARK_HOME": str(settings.home), "TIDEMARK_WAREHOUSE_URL": settings.warehouse.url,
           "TIDEMARK_REGISTRY_URI": settings.registry_uri}
    repo = Path(__file__).resolve().parent.parent
    proc = subprocess.run([sys.executable, "-c", CHILD, RSS_DAY.isoformat()], cwd=repo, env=env, text=True,
                          stdout=subprocess.PIPE)
    if proc.returncode:
        raise SystemExit(f"the scoring child failed ({proc.returncode}); its log is above")
    child = json.loads(proc.stdout.strip().splitlines()[-1])
    return {**child, "peak_rss_mib": child["self_peak_rss_mib"],
            "rusage_children_maxrss_mib": resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024}


def run(rows: int, rss_rows: int, naive_rows: int, train_rows: int, repeats: int) -> dict:
    from ml.core.spec import ExplainSpec, dbt_relation, feature_schema, load_spec

    explaining = load_spec("churn")
    spec = explaining.model_copy(update={"explain": ExplainSpec(top_k=0)})  # scores only
    naive_rows = min(naive_rows, rows)
    console.print(f"[bold]{NAME}[/bold]: {rows:,} rows for the ratios (naive peer on {naive_rows:,}), "
                  f"{rss_rows:,} rows for peak RSS; spec {spec.name!r}, batch_rows {spec.scoring.batch_rows:,}")
    with scratch_settings(NAME, "duckdb") as settings:
        relation = dbt_relation(settings.dbt_manifest, spec.features.relation)
        schema = feature_schema(spec, relation)
        started = time.perf_counter()
        _synthesize(settings, spec, relation, DAY, rows, 0)
        _synthesize(settings, spec, relation, RSS_DAY, rss_rows, rows)
        console.print(f"  synthesized {rows + rss_rows:,} feature rows in {time.perf_counter() - started:.1f}s")
        champion = _train_champion(settings, spec, schema, train_rows)
        console.print(f"  champion {champion['version']}: {champion['trees']} trees, fitted on "
                      f"{champion['train_rows']:,} rows in {champion['fit_seconds']}s")
        _ours(settings, explaining, "warm-up")  # caches the champion, creates ml.predictions and ml.prediction_reasons
        ours, ceiling, explained = [], [], []
        for i in range(repeats):  # alternated, so that a change in the machine's load hits all alike
            ours.append(_ours(settings, spec, f"ours-{i}"))
            ceiling.append(_ceiling(settings, spec))
            explained.append(_ours(settings, explaining, f"explained-{i}"))
            console.print(f"  {i + 1}/{repeats}: ours {ours[-1]['seconds']:.2f}s, ceiling "
                          f"{ceiling[-1]['seconds']:.2f}s, explained {explained[-1]['seconds']:.2f}s "
                          f"({explained[-1]['explained']:,} rows)")
        naive = _naive(settings, spec, naive_rows)
        console.print(f"  naive: {naive['seconds']:.2f}s for {naive['rows']:,} rows")
        console.print(f"  peak RSS: scoring {rss_rows:,} rows in a child process ...")
        rss = _rss(settings)

    ours_s = median([o["seconds"] for o in ours])
    result = {
        "rows": rows, "rss_rows": rss_rows, "naive_rows": naive_rows, "batch_rows": spec.scoring.batch_rows,
        "data": "synthetic marts.customer_features_daily from SQL range()/hash() with the dbt contract's columns; "
                "no dbt run",
        "champion": champion,
        "ours": {"seconds": ours_s, "rows_per_s": rows / ours_s,
                 "score_seconds": median([o["score_seconds"] for o in ours]),
                 "publish_seconds": median([o["publish_seconds"] for o in ours]), "runs": ours},
        "ceiling": {"seconds": median([c["seconds"] for c in ceiling]), "rows": ceiling[0]["rows"],
                    "rows_per_s": rows / median([c["seconds"] for c in ceiling]), "runs": ceiling},
        "naive": {**naive, "rows_per_s": naive["rows"] / naive["seconds"]},
        "explained": {"seconds": median([e["seconds"] for e in explained]),
                      "score_seconds": median([e["score_seconds"] for e in explained]),
                      "publish_seconds": median([e["publish_seconds"] for e in explained]),
                      "explained_rows": explained[0]["explained"], "reasons": explained[0]["reasons"],
                      "fraction": explaining.explain.fraction, "top_k": explaining.explain.top_k, "runs": explained},
        "rss": rss,
    }
    result["ratios"] = {
        "ours_over_ceiling": ratio(result["ours"]["rows_per_s"], result["ceiling"]["rows_per_s"]),
        "ours_over_naive": ratio(result["ours"]["rows_per_s"], result["naive"]["rows_per_s"]),
        # the explanation's extra time as a multiple of scoring alone, end to end and in the shard step
        "explain_extra_over_scoring": (result["explained"]["seconds"] - ours_s) / ours_s,
        "explain_extra_over_score_step": (result["explained"]["score_seconds"] - result["ours"]["score_seconds"])
        / result["ours"]["score_seconds"],
    }
    _print(result)
    path = write_result(NAME, result)
    console.print(f"wrote {path}")
    return result


def _print(r: dict) -> None:
    o, c, n = r["ours"], r["ceiling"], r["naive"]
    print_table(
        f"scoring {r['rows']:,} rows with a {r['champion']['trees']}-tree LightGBM champion (DuckDB)",
        ["path", "rows", "seconds", "rows/s", "vs ours"],
        [
            ("ours: stream + score + publish", f"{r['rows']:,}", f"{o['seconds']:.2f}", f"{o['rows_per_s']:,.0f}",
             "1.00x"),
            ("  of which score to Parquet", "", f"{o['score_seconds']:.2f}", "", ""),
            ("  of which publish (one transaction)", "", f"{o['publish_seconds']:.2f}", "", ""),
            (f"explained: ours + reasons of the top {r['explained']['fraction']:.0%}", f"{r['rows']:,}",
             f"{r['explained']['seconds']:.2f}", f"{r['rows'] / r['explained']['seconds']:,.0f}",
             fmt_ratio(ratio(o["seconds"], r["explained"]["seconds"]))),
            ("ceiling: booster.predict on numpy", f"{c['rows']:,}", f"{c['seconds']:.2f}", f"{c['rows_per_s']:,.0f}",
             fmt_ratio(ratio(c["rows_per_s"], o["rows_per_s"]))),
            ("naive: read_sql + predict_proba + to_sql", f"{n['rows']:,}", f"{n['seconds']:.2f}",
             f"{n['rows_per_s']:,.0f}", fmt_ratio(ratio(n["rows_per_s"], o["rows_per_s"]))),
        ],
    )
    console.print(f"naive breakdown: read_sql {n['read_seconds']:.2f}s, predict {n['predict_seconds']:.2f}s, "
                  f"to_sql {n['write_seconds']:.2f}s")
    ratios = r["ratios"]
    console.print(f"ours/ceiling: {fmt_ratio(ratios['ours_over_ceiling'])} (target >= 0.8x); "
                  f"ours/naive: {fmt_ratio(ratios['ours_over_naive'])} (target >= 30x)")
    e = r["explained"]
    console.print(f"reason codes: explaining the top {e['fraction']:.0%} ({e['explained_rows']:,} rows, "
                  f"{e['reasons']:,} reasons) takes {e['seconds']:.2f}s end to end against {o['seconds']:.2f}s "
                  f"without: extra/scoring {ratios['explain_extra_over_scoring']:.2f} (ceiling 1.0); in the shard "
                  f"step alone {e['score_seconds']:.2f}s against {o['score_seconds']:.2f}s: "
                  f"{ratios['explain_extra_over_score_step']:.2f}")
    rss = r["rss"]
    console.print(f"peak RSS scoring {rss['rows']:,} rows: {rss['peak_rss_mib']:,.0f} MiB (target < 2048 MiB; "
                  f"{rss['peak_rss_after_score_mib']:,.0f} MiB before publishing), "
                  f"{rss['seconds']:.1f}s, {rss['rows'] / rss['seconds']:,.0f} rows/s; RUSAGE_CHILDREN says "
                  f"{rss['rusage_children_maxrss_mib']:,.0f} MiB, the parent's RSS at fork included")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rows", type=int, default=1_000_000, help="rows scored for the ratios (default: 1,000,000)")
    parser.add_argument("--rss-rows", type=int, default=5_000_000, help="rows scored for peak RSS (default: 5,000,000)")
    parser.add_argument("--naive-rows", type=int, default=50_000,
                        help="rows the naive peer is timed on, at most --rows (default: 50,000)")
    parser.add_argument("--train-rows", type=int, default=200_000, help="sample the champion is fitted on")
    parser.add_argument("--repeats", type=int, default=3, help="runs of ours and the ceiling; the median counts")
    args = parser.parse_args(argv)
    for name in ("rows", "rss_rows", "naive_rows", "train_rows", "repeats"):
        if getattr(args, name) < 1:
            parser.error(f"--{name.replace('_', '-')} must be at least 1")
    run(args.rows, args.rss_rows, args.naive_rows, args.train_rows, args.repeats)


if __name__ == "__main__":
    main()
