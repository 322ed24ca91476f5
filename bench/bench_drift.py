"""A day's drift check on a warehouse sample against Evidently on the whole day, in one run.

1. Synthesize one day of `--rows` rows x 29 features in DuckDB with SQL (hash-based, reproducible),
   half of them shifted against the reference distribution by 0.05 to 0.6 standard deviations, plus
   ml.predictions with a score for every row, and a model version directory whose reference.parquet
   holds 5,000 rows of the undrifted distribution. A minimal dbt manifest declares the synthetic
   relation, so `ml.monitor.check_drift` runs unchanged: count, sample in the warehouse with the
   predictions joined, Evidently's DataDriftPreset on the sample, HTML and JSON reports, ml.drift_metrics.
2. Full data: the whole day (features and scores) read into pandas and run through the same Evidently
   preset (`--full-rows` caps it when the whole day would take too long; the cap is reported).
3. Reported: wall time of each and their ratio, and the share of the 30 checked columns where the two
   drift decisions agree (and where each agrees with the designed drift).
4. With `--sim`, the same comparison on the simulated drift event: a small churn world with a logistic
   champion, each day checked on a 500-row sample and on its whole partition (about 1,400 rows).

    .venv/bin/python bench/bench_drift.py                       # 1,000,000 rows, full data on all of them
    .venv/bin/python bench/bench_drift.py --rows 200000 --repeats 1
    .venv/bin/python bench/bench_drift.py --sim
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
import time
from datetime import date, timedelta
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

NAME = "bench_drift"
DAY = date(2025, 6, 1)
RELATION = "bench_features"
NUMERIC, CATEGORICAL, CATEGORIES = 24, 5, "abcdef"
# Mean shifts in reference standard deviations, cycled over the drifted numeric columns: the first two stay
# under Evidently's 0.1 normed Wasserstein threshold by design, the rest cross it.
SHIFTS = (0.05, 0.08, 0.15, 0.25, 0.4, 0.6)
DRIVER = "x11"  # the score follows this column, which shifts by 0.6
REFERENCE_ROWS = 5_000


def _uniform(k: int, salt: int) -> str:
    return f"((hash(i, {k}, {salt}) % 1000003) + 0.5) / 1000003"


def _normal(k: int, salt: int) -> str:
    return f"sqrt(-2 * ln({_uniform(2 * k, salt)})) * cos(2 * pi() * {_uniform(2 * k + 1, salt)})"


def design() -> dict[str, float]:
    """Each checked column and the drift built into the current day (0: none)."""
    shifts = {f"x{k}": SHIFTS[k // 2 % len(SHIFTS)] if k % 2 else 0.0 for k in range(NUMERIC)}
    shifts.update({f"c{j}": (1.0 if j % 2 else 0.0) for j in range(CATEGORICAL)})  # category draws skewed by u**2
    shifts["score"] = shifts[DRIVER]
    return shifts


def generation_sql(rows: int, salt: int, drifted: bool) -> str:
    """Rows of the synthetic relation; with `drifted`, the designed shifts applied."""
    shifts, cols = design(), []
    for k in range(NUMERIC):
        shift = shifts[f"x{k}"] if drifted else 0.0
        value = f"({_normal(k, salt)} + {shift})"
        if k % 4 == 3:  # a count-like column: non-negative integers
            cols.append(f"greatest(0, round(5 + 2 * {value}))::double as x{k}")
        else:
            cols.append(f"round({10 * (k + 1)} + {k + 1} * {value}, 3) as x{k}")
    for j in range(CATEGORICAL):
        power = 1 + (shifts[f"c{j}"] if drifted else 0.0)
        cols.append(f"substr('{CATEGORIES}', 1 + floor(pow({_uniform(100 + j, salt)}, {power}) * 6)::int, 1) as c{j}")
    driver = int(DRIVER[1:])
    score = f"1 / (1 + exp(-(0.8 * ({_normal(driver, salt)} + {shifts[DRIVER] if drifted else 0.0}) - 2)))"
    return (f"select i as id, date '{DAY}' as as_of_date, {', '.join(cols)}, 0 as label, {score} as _score "
            f"from range({rows}) r(i)")


def spec(sample_rows: int):
    from ml.core.spec import parse_spec

    return parse_spec({
        "name": "bench", "entity_key": "id", "time_column": "as_of_date", "features": {"relation": RELATION},
        "label": {"column": "label"}, "candidates": [{"name": "logistic", "kind": "logistic"}],
        "monitoring": {"sample_rows": sample_rows, "drift_share": 0.3},
    })


def build(settings: Settings, rows: int) -> tuple[Settings, Path]:
    """The synthetic day, its predictions, a version directory with its reference, and a manifest declaring it."""
    import pyarrow.parquet as pq

    from ml.core.warehouse import Warehouse

    with Warehouse.connect(settings) as wh:
        wh.execute("create schema if not exists marts")
        wh.execute("create schema if not exists ml")
        wh.execute(f"create table marts.{RELATION} as {generation_sql(rows, 1, drifted=True)}")
        wh.execute(f"create table ml.predictions as select cast(id as varchar) as entity_id, as_of_date, "
                   f"'bench' as model_name, 'v0001' as model_version, _score as score, "
                   f"cast(_score >= 0.5 as integer) as predicted_label, 0.5 as threshold, "
                   f"timestamp '2025-06-02 00:00:00' as scored_at from marts.{RELATION}")
        reference = wh.read_arrow(generation_sql(REFERENCE_ROWS, 2, drifted=False))
    version_dir = settings.home / "version"
    version_dir.mkdir()
    reference = reference.rename_columns([("score" if c == "_score" else c) for c in reference.column_names])
    pq.write_table(reference.drop_columns(["label"]), version_dir / "reference.parquet")
    features = {"numeric": [f"x{k}" for k in range(NUMERIC)], "categorical": [f"c{j}" for j in range(CATEGORICAL)]}
    (version_dir / "manifest.json").write_text(json.dumps({"version": "v0001", "feature_schema": features}))
    columns = {"id": "bigint", "as_of_date": "date", "label": "integer",
               **{c: "double" for c in features["numeric"]}, **{c: "varchar" for c in features["categorical"]}}
    node = {"resource_type": "model", "name": RELATION, "schema": "marts", "alias": RELATION,
            "columns": {c: {"data_type": t} for c, t in columns.items()}, "config": {"contract": {"enforced": True}}}
    repo = settings.home / "repo"
    (repo / "dbt_project" / "target").mkdir(parents=True)
    (repo / "dbt_project" / "target" / "manifest.json").write_text(json.dumps({"nodes": {f"model.bench.{RELATION}": node}}))
    return dataclasses.replace(settings, repo_root=repo), version_dir


def _decisions(settings: Settings, model: str, day: date) -> dict[str, dict]:
    from ml.core.warehouse import Warehouse

    with Warehouse.connect(settings, read_only=True) as wh:
        rows = wh.read_arrow(f"select column_name, score, drifted from ml.drift_metrics where model_name = '{model}' "
                             f"and as_of_date = date '{day}' and column_name <> '__dataset__'").to_pylist()
    return {r["column_name"]: {"score": r["score"], "drifted": r["drifted"]} for r in rows}


def full_data(spec_, settings: Settings, version_dir: Path, cap: int | None) -> dict:
    """Evidently's preset on the whole day (or a seeded sample of `cap` rows of it)."""
    import pyarrow.parquet as pq

    from ml.core.spec import FeatureSchema
    from ml.core.warehouse import Warehouse
    from ml.monitoring.drift import (
        SCORE,
        _run_evidently,
        drift_columns,
        prepare_reference,
        read_snapshot,
        sample_sql,
    )
    from ml.training.data import relations, to_frame

    manifest = json.loads((version_dir / "manifest.json").read_text())
    base = drift_columns(spec_, FeatureSchema.from_dict(manifest["feature_schema"]))
    columns = FeatureSchema(base.numeric + (SCORE,), base.categorical)
    features = relations(spec_, settings)[0]
    started = time.perf_counter()
    with Warehouse.connect(settings, read_only=True) as wh:
        total = int(wh.scalar(f"select count(*) from {features.qualified} where as_of_date = date '{DAY}'"))
        rows = min(total, cap or total)
        sql = sample_sql(spec_, features.qualified, base, DAY, rows=rows, partition_rows=total, seed=11,
                         score_version="v0001")
        table = wh.read_arrow(sql)
    current = to_frame(table, columns)
    read_s = time.perf_counter() - started
    reference = to_frame(pq.read_table(prepare_reference(spec_, version_dir)), columns)
    started = time.perf_counter()
    snapshot = _run_evidently(current, reference, columns, spec_.monitoring.drift_share)
    evidently_s = time.perf_counter() - started
    per_column, share = read_snapshot(snapshot.dict())
    return {"rows": len(current), "partition_rows": total, "read_seconds": read_s, "evidently_seconds": evidently_s,
            "seconds": read_s + evidently_s, "drift_share": share,
            "columns": {c["column_name"]: {"score": c["score"], "drifted": c["drifted"]} for c in per_column}}


def compare(ours: dict[str, dict], full: dict[str, dict], designed: dict[str, float] | None = None) -> dict:
    names = sorted(full)
    agree = [n for n in names if ours[n]["drifted"] == full[n]["drifted"]]
    out = {"columns": len(names), "agree": len(agree), "agreement": len(agree) / len(names),
           "disagree": [n for n in names if n not in agree],
           "max_abs_score_diff": max(abs(ours[n]["score"] - full[n]["score"]) for n in names)}
    if designed:
        truth = {n: designed[n] >= 0.1 for n in names}
        out["sample_matches_design"] = sum(ours[n]["drifted"] == truth[n] for n in names) / len(names)
        out["full_matches_design"] = sum(full[n]["drifted"] == truth[n] for n in names) / len(names)
    return out


def synthetic(rows: int, sample_rows: int, repeats: int, full_cap: int | None) -> dict:
    from ml.monitoring.drift import check_drift

    with scratch_settings(NAME, "duckdb") as scratch:
        started = time.perf_counter()
        settings, version_dir = build(scratch, rows)
        build_s = time.perf_counter() - started
        console.print(f"  built {rows:,} rows x {NUMERIC + CATEGORICAL} features in {build_s:.1f}s")
        started = time.perf_counter()
        import evidently  # noqa: F401  (timed apart: a one-off cost per process)

        import_s = time.perf_counter() - started
        spec_ = spec(sample_rows)
        checks, scores = [], []
        for i in range(repeats):
            checks.append(check_drift(spec_, settings, DAY, model_version="v0001", version_dir=version_dir))
            scores.append(_decisions(settings, "bench", DAY))
            console.print(f"  our check {i + 1}/{repeats}: {checks[-1]['seconds']:.2f}s, "
                          f"{checks[-1]['current_rows']:,} sampled rows, share {checks[-1]['drift_share']:.3f}")
        console.print(f"  full data on {min(rows, full_cap or rows):,} rows ...")
        full = full_data(spec_, settings, version_dir, full_cap)
        console.print(f"  full data: read {full['read_seconds']:.1f}s, Evidently {full['evidently_seconds']:.1f}s")
    ours_s = median([c["seconds"] for c in checks])
    return {
        "rows": rows, "sample_rows": sample_rows, "build_seconds": build_s, "evidently_import_seconds": import_s,
        "check": {"seconds": ours_s, "runs": checks, "repeatable": all(s == scores[0] for s in scores)},
        "full": full, "full_capped": full["rows"] < rows,
        "full_over_check": ratio(full["seconds"], ours_s),
        "agreement": compare(scores[0], full["columns"], design()),
    }


def simulated(sample_rows: int) -> dict:
    """The simulated drift event: 500-row samples against whole partitions, day by day."""
    import pyarrow as pa
    import pyarrow.compute as pc
    import yaml

    from ml.core.spec import SPEC_DIR, FeatureSchema, parse_spec
    from ml.core.warehouse import Warehouse
    from ml.features.dbt import run_dbt
    from ml.ingest.load import load_days
    from ml.ingest.simulate import SimConfig
    from ml.monitoring.drift import check_drift
    from ml.registry import Registry
    from ml.training.candidates import load_candidate
    from ml.training.data import to_frame
    from ml.training.steps import train

    cfg = SimConfig(seed=3, customers=1500, start=date(2024, 10, 1), days=171, drift_date=date(2025, 3, 1))
    days = [date(2025, 2, 21) + timedelta(days=3 * i) for i in range(8)]
    data = yaml.safe_load((SPEC_DIR / "churn.yaml").read_text())
    data["candidates"] = [c for c in data["candidates"] if c["kind"] == "logistic"]
    data["promotion"].update(floors={"roc_auc": 0.55}, max_ece=0.2, bootstrap_samples=50)
    data["search"] = {"budget_s": 0}
    results = {}
    with scratch_settings(f"{NAME}_sim", "duckdb") as settings:
        load_days(cfg, settings=settings)
        built = run_dbt(["build", "--exclude", "tag:public_data"], settings=settings, capture=True)
        if not built.success:
            raise SystemExit(f"dbt build of the simulated world failed:\n{built.output[-3000:]}")
        base = parse_spec(data)
        train(base, settings, as_of=date(2025, 2, 20), run_id="bench", actor="bench")
        version_dir = Registry.from_settings(settings).download("churn", "v0001", settings.home / "v0001")
        manifest = json.loads((version_dir / "manifest.json").read_text())
        model, schema = load_candidate(version_dir), FeatureSchema.from_dict(manifest["feature_schema"])
        with Warehouse.connect(settings) as wh:
            for day in days:
                t = wh.read_arrow(f"select * from marts.customer_features_daily where as_of_date = date '{day}'")
                p = model.predict_proba(to_frame(t, schema))[:, 1]
                wh.replace_partitions("as_of_date", day, {"ml.predictions": pa.table({
                    "entity_id": pc.cast(t["customer_id"], pa.string()), "as_of_date": t["as_of_date"],
                    "model_name": pa.array(["churn"] * len(p)), "model_version": pa.array(["v0001"] * len(p)),
                    "score": p})})
        for day in days:
            runs = {}
            for label, rows in (("sample", sample_rows), ("full", 1_000_000)):
                data["monitoring"] = {"exclude": ["tenure_days"], "drift_share": 0.1, "sample_rows": rows}
                check = check_drift(parse_spec(data), settings, day, model_version="v0001", version_dir=version_dir)
                runs[label] = {"check": check, "columns": _decisions(settings, "churn", day)}
            results[day.isoformat()] = {
                "partition_rows": runs["full"]["check"]["partition_rows"],
                "sample_dataset_drift": runs["sample"]["check"]["dataset_drift"],
                "full_dataset_drift": runs["full"]["check"]["dataset_drift"],
                "sample_drifted": runs["sample"]["check"]["drifted_columns"],
                "full_drifted": runs["full"]["check"]["drifted_columns"],
                **compare(runs["sample"]["columns"], runs["full"]["columns"]),
            }
            console.print(f"  {day}: dataset drift sample {results[day.isoformat()]['sample_dataset_drift']} / full "
                          f"{results[day.isoformat()]['full_dataset_drift']}, columns agree "
                          f"{results[day.isoformat()]['agreement']:.0%}")
    agree = [r["agree"] for r in results.values()]
    total = [r["columns"] for r in results.values()]
    return {"sample_rows": sample_rows, "days": results, "column_agreement": sum(agree) / sum(total),
            "dataset_agreement": sum(r["sample_dataset_drift"] == r["full_dataset_drift"] for r in results.values())
            / len(results)}


def _print(result: dict) -> None:
    s = result["synthetic"]
    full, check, agreement = s["full"], s["check"], s["agreement"]
    capped = f" (capped at {full['rows']:,} of {s['rows']:,} rows)" if s["full_capped"] else ""
    print_table(
        f"drift check of one day: {s['rows']:,} rows x {agreement['columns']} checked columns, DuckDB",
        ["run", "rows compared", "wall s", "drift share", "decisions as designed"],
        [
            (f"our check (median of {len(check['runs'])})", f"{check['runs'][0]['current_rows']:,}",
             f"{check['seconds']:.2f}", f"{check['runs'][0]['drift_share']:.3f}",
             f"{agreement['sample_matches_design']:.0%}"),
            (f"Evidently on the full day{capped}", f"{full['rows']:,}", f"{full['seconds']:.1f}",
             f"{full['drift_share']:.3f}", f"{agreement['full_matches_design']:.0%}"),
        ],
    )
    console.print(
        f"full/check: {fmt_ratio(s['full_over_check'])} wall; per-column decisions agree on "
        f"{agreement['agree']}/{agreement['columns']} ({agreement['agreement']:.0%}), disagree on "
        f"{agreement['disagree'] or 'none'}; largest score difference {agreement['max_abs_score_diff']:.4f}; "
        f"sample repeatable: {check['repeatable']}; Evidently import (once per process) {s['evidently_import_seconds']:.1f}s"
    )
    steps = check["runs"][0]["seconds_by_step"]
    console.print("our check by step (first run): " + ", ".join(f"{k} {v:.2f}s" for k, v in steps.items())
                  + f", the rest (drift_metrics write) {check['runs'][0]['seconds'] - sum(steps.values()):.2f}s")
    if "simulated" in result:
        sim = result["simulated"]
        console.print(f"simulated drift event, {sim['sample_rows']}-row samples vs whole partitions: columns agree "
                      f"{sim['column_agreement']:.0%}, dataset decisions agree {sim['dataset_agreement']:.0%}")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rows", type=int, default=1_000_000, help="rows in the checked day (default: 1,000,000)")
    parser.add_argument("--sample-rows", type=int, default=5_000, help="monitoring.sample_rows (default: 5,000)")
    parser.add_argument("--repeats", type=int, default=3, help="our checks to take the median of (default: 3)")
    parser.add_argument("--full-rows", type=int, default=0,
                        help="cap the full-data run at this many rows (default: 0, the whole day)")
    parser.add_argument("--sim", action="store_true", help="also compare on the simulated drift event (~2 min)")
    parser.add_argument("--sim-sample-rows", type=int, default=500)
    args = parser.parse_args(argv)
    if args.rows < REFERENCE_ROWS or args.repeats < 1 or args.sample_rows < 100:
        parser.error(f"need --rows >= {REFERENCE_ROWS}, --repeats >= 1 and --sample-rows >= 100")
    console.print(f"[bold]{NAME}[/bold]: {args.rows:,} rows, sample {args.sample_rows:,}, {args.repeats} repeat(s)")
    result = {"synthetic": synthetic(args.rows, args.sample_rows, args.repeats, args.full_rows or None)}
    if args.sim:
        console.print("simulated drift event ...")
        result["simulated"] = simulated(args.sim_sample_rows)
    _print(result)
    console.print(f"wrote {write_result(NAME, result)}")


if __name__ == "__main__":
    main()
