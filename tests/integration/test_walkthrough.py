"""The README's "Bring your own model" walkthrough, run as written, in a copy of the repository.

The commands between the README's walkthrough markers run one by one in a shell, in a copy of this
checkout (so the files they write land in the copy), on a CSV of weekly customer snapshots that this
test generates. The new model must reach a promoted champion, get its own DAGs beside the shipped
models' ones, and be scored and monitored by them, with an off-grid day skipped.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from datetime import date, timedelta
from pathlib import Path

import numpy as np
import pytest

from ml.core.settings import REPO_ROOT

MONDAY = date(2025, 1, 6)
WEEKS, CUSTOMERS = 26, 300
MODEL = "shop_churn"
SKIP = {".venv", "var", ".git", "__pycache__", ".pytest_cache", ".ruff_cache", "logs"}
# At the top of the checkout only: a user's own specs folder.
SKIP_AT_TOP = {"specs"}


def walkthrough_commands() -> list[str]:
    """The commands of the README's walkthrough block, in order."""
    text = (REPO_ROOT / "README.md").read_text()
    block = re.search(r"<!-- walkthrough -->\s*```bash\n(.*?)```\s*<!-- /walkthrough -->", text, re.S)
    assert block, "README.md has no walkthrough block"
    return [line.strip() for line in block.group(1).splitlines() if line.strip() and not line.startswith("#")]


def write_csv(path: Path) -> None:
    """Weekly snapshots of a shop's customers, `;`-separated, with a churn label that the features explain."""
    rng = np.random.default_rng(5)
    segment = rng.choice(["retail", "pro", "trade"], size=CUSTOMERS, p=[0.6, 0.3, 0.1])
    loyalty = rng.normal(0, 1, size=CUSTOMERS)
    lines = ["customer_id;as_of_date;visits_30d;spend_90d;days_since_last_order;segment;churned"]
    for week in range(WEEKS):
        visits = rng.poisson(np.exp(1.2 + 0.5 * loyalty))
        spend = np.round(rng.gamma(2.0, 40.0, size=CUSTOMERS) * (1 + visits), 2)
        idle = rng.integers(0, 60, size=CUSTOMERS)
        logit = -1.0 - 0.9 * loyalty + 0.04 * idle - 0.2 * visits + np.where(segment == "pro", -0.5, 0.0)
        churned = rng.random(CUSTOMERS) < 1 / (1 + np.exp(-logit))
        day = MONDAY + timedelta(weeks=week)
        for i in range(CUSTOMERS):
            lines.append(f"{1000 + i};{day};{visits[i]};{spend[i]};{idle[i]};{segment[i]};{int(churned[i])}")
    path.write_text("\n".join(lines) + "\n")


def _copy_checkout(to: Path) -> Path:
    """This checkout without its virtualenv, state and caches (dbt's target stays: parsing starts warm)."""
    def skipped(folder: str, names: list[str]) -> list[str]:
        top = Path(folder) == REPO_ROOT
        return [n for n in names if n in SKIP or (top and n in SKIP_AT_TOP)]

    shutil.copytree(REPO_ROOT, to, ignore=skipped)
    return to


def _env() -> dict[str, str]:
    """The shell of a new user: the virtualenv first on PATH, nothing of this test session's settings."""
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("TIDEMARK_", "AIRFLOW", "DBT_TARGET_PATH", "PYTHONPATH", "PYTEST"))}
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}"
    return env


DAG_RUNS = """
import json, os, sys
from ml.core.settings import Settings
settings = Settings.from_env()
os.environ.update(settings.airflow_env())
from ml.orchestration.airflow_setup import init_airflow
init_airflow(settings)
from airflow.dag_processing.dagbag import DagBag
bag = DagBag(str(settings.repo_root / "dags"))
out = {"errors": bag.import_errors, "dags": sorted(bag.dag_ids), "runs": {}}
build = bag.dags["build_features"]
out["build_tasks"] = [t.task_id for t in build.tasks]
for name, dag_id, conf in json.loads(sys.argv[1]):
    run = bag.dags[dag_id].test(run_conf=conf)
    out["runs"][name] = {"state": str(run.state),
                         "tasks": {ti.task_id: str(ti.state) for ti in run.get_task_instances()}}
print("RESULT " + json.dumps(out))
"""


@pytest.fixture(scope="module")
def walked(tmp_path_factory):
    repo = _copy_checkout(tmp_path_factory.mktemp("walkthrough") / "tidemark")
    write_csv(repo / "shop_customers.csv")
    env, transcript = _env(), []
    for command in walkthrough_commands():
        proc = subprocess.run(["bash", "-c", command], cwd=repo, env=env, capture_output=True, text=True,
                              timeout=600)
        transcript.append({"command": command, "returncode": proc.returncode, "output": proc.stdout + proc.stderr})
        assert proc.returncode == 0, f"`{command}` failed:\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}"
    last = MONDAY + timedelta(weeks=WEEKS - 1)
    runs = [("score", f"score_{MODEL}", {"start": str(last - timedelta(days=27)), "end": str(last)}),
            ("monitor", f"monitor_{MODEL}", {"start": str(last - timedelta(days=27)), "end": str(last)}),
            ("off_grid", f"score_{MODEL}", {"start": str(last - timedelta(days=2)), "end": str(last - timedelta(days=1))})]
    proc = subprocess.run([sys.executable, "-c", DAG_RUNS, json.dumps(runs)], cwd=repo, env=env,
                          capture_output=True, text=True, timeout=600)
    result = next((line for line in proc.stdout.splitlines() if line.startswith("RESULT ")), None)
    assert proc.returncode == 0 and result, proc.stdout[-3000:] + proc.stderr[-3000:]
    listed = subprocess.run(["bash", "-c", f"python -m ml registry list {MODEL}"], cwd=repo, env=env,
                            capture_output=True, text=True, timeout=120)
    return {"repo": repo, "transcript": transcript, "dags": json.loads(result[len("RESULT "):]), "last": last,
            "registry": listed.stdout + listed.stderr}


def _output(walked, prefix: str) -> str:
    return next(step["output"] for step in walked["transcript"] if step["command"].startswith(prefix))


def test_the_walkthrough_loads_scaffolds_checks_and_promotes_a_champion(walked):
    loaded = _output(walked, "python -m ml load-csv")
    assert f"{WEEKS * CUSTOMERS:,}" in loaded and "semicolon" in loaded
    assert "ok" in _output(walked, "python -m ml spec check")
    trained = _output(walked, "python -m ml train")
    assert "challenger:" in trained
    assert re.search(r"v0001\s.*promoted", walked["registry"]), walked["registry"]
    repo = walked["repo"]
    assert (repo / "specs" / f"{MODEL}.yaml").exists()
    assert (repo / "dbt_project" / "models" / "staging" / MODEL / f"stg_{MODEL}__shop_customers.sql").exists()


def test_its_own_dags_score_and_monitor_it_beside_the_shipped_models(walked):
    dags = walked["dags"]
    assert dags["errors"] == {}
    for kind in ("train", "score", "monitor"):
        assert {f"{kind}_{MODEL}", f"{kind}_churn", f"{kind}_payment_default"} <= set(dags["dags"])
    # the user's model is not part of the simulator's build
    assert not [t for t in dags["build_tasks"] if MODEL in t]
    score, monitor = dags["runs"]["score"], dags["runs"]["monitor"]
    assert score["state"] == "success" and score["tasks"]["publish"] == "success", score
    assert monitor["state"] == "success" and monitor["tasks"]["track_performance"] == "success", monitor

    import duckdb

    with duckdb.connect(str(walked["repo"] / "var" / "warehouse.duckdb"), read_only=True) as con:
        scored = con.execute("select as_of_date, count(*) from ml.predictions where model_name = ? group by 1 "
                             "order by 1", [MODEL]).fetchall()
        realized = con.execute("select count(*) from ml.model_performance where model_name = ?", [MODEL]).fetchone()
        drift = con.execute("select count(distinct as_of_date) from ml.drift_metrics where model_name = ?",
                            [MODEL]).fetchone()
    last = walked["last"]
    # the four grid days (Mondays) of the four weeks asked for, every customer on each
    assert scored == [(last - timedelta(weeks=w), CUSTOMERS) for w in (3, 2, 1, 0)]
    assert drift == (4,) and realized[0] >= 4


def test_a_day_off_its_weekly_grid_is_skipped_not_failed(walked):
    off = walked["dags"]["runs"]["off_grid"]
    assert off["tasks"]["resolve_interval"] == "skipped" and off["state"] == "success", off
