"""How DAG parsing grows with the number of served models: 1 spec against 20, parsed in the same run.

Each parse is a fresh interpreter that fills a DagBag from dags/ (what the DAG processor does per
file, for all six files), serving N models: churn and N - 1 copies of its spec (`churn_02` ...
`churn_N`, in TIDEMARK_SPECS_DIR), named by TIDEMARK_SERVED_MODELS. Reported per N: the median
seconds of the DagBag fill and of each DAG file, the DAG count, and the heavy modules that parsing
imported (none may be). The ceiling is linear growth: 20 specs may cost at most 20x one spec's
per-model files; the shared files (ingest_raw, build_features, bootstrap) should not grow at all.

    .venv/bin/python bench/bench_dag_parse.py                 # 1 and 20 specs, 5 parses each
    .venv/bin/python bench/bench_dag_parse.py --counts 1 5 20 --repeats 3
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

import yaml

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench._common import console, fmt_ratio, median, print_table, ratio, write_result  # noqa: E402
from ml.core.settings import REPO_ROOT  # noqa: E402
from ml.core.spec import SPEC_DIR  # noqa: E402

HEAVY = ("pandas", "numpy", "pyarrow", "duckdb", "psycopg", "torch", "lightgbm", "sklearn", "evidently")
PARSE = """
import json, sys, time
from pathlib import Path
from airflow.dag_processing.dagbag import DagBag
started = time.perf_counter()
bag = DagBag(sys.argv[1])
total = time.perf_counter() - started
files = {}
for path in sorted(Path(sys.argv[1]).glob("*.py")):
    t0 = time.perf_counter()
    DagBag(str(path))
    files[path.stem] = time.perf_counter() - t0
print(json.dumps({"seconds": total, "files": files, "dags": len(bag.dag_ids), "errors": list(bag.import_errors),
                  "heavy": sorted(m for m in sys.argv[2].split(",") if m in sys.modules)}))
"""


def parse_once(count: int, folder: Path) -> dict:
    """One fresh-interpreter parse of dags/ serving churn and `count` - 1 copies of its spec."""
    for old in folder.glob("*.yaml"):
        old.unlink()
    churn = yaml.safe_load((SPEC_DIR / "churn.yaml").read_text())
    names = ["churn", *(f"churn_{i:02d}" for i in range(2, count + 1))]
    for name in names[1:]:
        (folder / f"{name}.yaml").write_text(yaml.safe_dump({**churn, "name": name, "served": True}))
    env = {**os.environ, "TIDEMARK_SPECS_DIR": str(folder), "TIDEMARK_SERVED_MODELS": ",".join(names),
           "AIRFLOW__CORE__LOAD_EXAMPLES": "False"}
    proc = subprocess.run([sys.executable, "-c", PARSE, str(REPO_ROOT / "dags"), ",".join(HEAVY)], env=env,
                          capture_output=True, text=True, cwd=REPO_ROOT)
    if proc.returncode != 0:
        raise SystemExit(f"parsing with {count} specs failed:\n{proc.stderr[-3000:]}")
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    if result["errors"] or result["dags"] != 3 + 3 * count:
        raise SystemExit(f"parsing with {count} specs gave {result['dags']} DAGs and errors {result['errors']}")
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--counts", type=int, nargs="+", default=[1, 20])
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    runs: dict[int, list[dict]] = {n: [] for n in args.counts}
    with tempfile.TemporaryDirectory() as tmp:
        for _ in range(args.repeats):  # alternated, so load on the machine falls on every count alike
            for count in args.counts:
                runs[count].append(parse_once(count, Path(tmp)))
    rows, result = [], {}
    base = args.counts[0]
    for count in args.counts:
        found = runs[count]
        files = {name: median([r["files"][name] for r in found]) for name in found[0]["files"]}
        model_files = sum(files[f] for f in ("train_model", "score_batch", "monitor_model"))
        result[count] = {"seconds": median([r["seconds"] for r in found]), "files": files, "dags": found[0]["dags"],
                         "model_files": model_files, "heavy": sorted({m for r in found for m in r["heavy"]})}
    for count in args.counts:
        r = result[count]
        growth = ratio(r["model_files"], result[base]["model_files"])
        rows.append([str(count), str(r["dags"]), f"{r['seconds']:.2f}", f"{r['model_files']:.2f}",
                     fmt_ratio(growth), f"{count / base:.0f}x", ", ".join(r["heavy"]) or "none"])
    print_table("DAG parse time by served specs (median of fresh interpreters)",
                ["specs", "DAGs", "dags/ s", "train+score+monitor files s", "growth", "linear ceiling", "heavy imports"],
                rows)
    per_file = [[name, *(f"{result[c]['files'][name]:.3f}" for c in args.counts)] for name in result[base]["files"]]
    print_table("seconds per DAG file", ["file", *(f"{c} specs" for c in args.counts)], per_file)
    write_result("dag_parse", {"repeats": args.repeats, "counts": result})
    console.print("heavy modules imported while parsing: "
                  + (", ".join(sorted({m for r in result.values() for m in r["heavy"]})) or "none"))


if __name__ == "__main__":
    main()
