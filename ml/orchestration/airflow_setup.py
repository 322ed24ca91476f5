"""The one-time Airflow setup: the metadata database and the pools the DAGs use.

Nothing here imports Airflow: it runs the `airflow` command line, so the DAG files can import the
pool names at parse time.
"""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Mapping

from ml.core.settings import Settings
from ml.orchestration.intervals import OrchestrationError

log = logging.getLogger(__name__)

WAREHOUSE_POOL = "warehouse"
GPU_POOL = "gpu"
POOLS = {
    WAREHOUSE_POOL: "One slot: DuckDB allows one writer, so every task that writes the warehouse queues here.",
    GPU_POOL: "One slot: training tasks that use the GPU run one at a time.",
}

# Which waiting task gets a free warehouse slot first (absolute weights, so the number of tasks downstream does not
# count): the later the stage, the sooner, so scores and monitoring never wait behind a stream of feature builds.
# The simulated clock's ticks are short and go before the builds' dbt tasks: the clock keeps its pace, and each
# build covers every day that landed since the one before.
PRIORITY = {"bootstrap": 50, "train_model": 40, "monitor_model": 30, "score_batch": 20, "ingest_raw": 15,
            "build_features": 10}


def priority(dag_id: str) -> dict[str, object]:
    """The default_args that give a DAG's tasks its place in PRIORITY, by its DAG file: every `train_<model>`
    has train_model's place, and so on."""
    return {"priority_weight": PRIORITY[dag_id], "weight_rule": "absolute"}


def init_airflow(settings: Settings, env: Mapping[str, str] | None = None) -> None:
    """Create or upgrade Airflow's metadata DB (SQLite under TIDEMARK_HOME unless `env` names another)
    and create the pools. Idempotent."""
    env = {**os.environ, **settings.airflow_env()} if env is None else dict(env)
    settings.airflow_home.mkdir(parents=True, exist_ok=True)
    _airflow(["db", "migrate"], env)
    pools = {name: {"slots": 1, "description": text} for name, text in POOLS.items()}
    with tempfile.NamedTemporaryFile("w", suffix=".json", dir=settings.airflow_home, delete=False) as fh:
        json.dump(pools, fh)
    try:
        _airflow(["pools", "import", fh.name], env)
    finally:
        os.unlink(fh.name)
    # Also pin Cosmos telemetry off in airflow.cfg, for processes started without our environment.
    _pin_config(settings.airflow_home / "airflow.cfg", "cosmos", "enable_telemetry", "False")
    log.info("Airflow is ready in %s (pools: %s)", settings.airflow_home, ", ".join(POOLS))


def _airflow(args: list[str], env: Mapping[str, str]) -> None:
    exe = Path(sys.executable).with_name("airflow")
    cmd = [str(exe) if exe.exists() else "airflow", *args]
    proc = subprocess.run(cmd, env=dict(env), text=True, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    if proc.returncode:
        raise OrchestrationError(f"`airflow {' '.join(args)}` failed ({proc.returncode}):\n{proc.stdout[-3000:]}")


def _pin_config(path: Path, section: str, key: str, value: str) -> None:
    """Set `key = value` in `[section]` of an ini file, keeping every other line as it is."""
    lines = path.read_text().splitlines() if path.exists() else []
    stripped = [line.strip() for line in lines]
    if f"[{section}]" not in stripped:
        lines += ["", f"[{section}]"]
        stripped += ["", f"[{section}]"]
    at = stripped.index(f"[{section}]") + 1
    end = next((i for i in range(at, len(lines)) if stripped[i].startswith("[")), len(lines))
    current = [i for i in range(at, end) if stripped[i].split("=")[0].strip() == key]
    if current:
        lines[current[0]] = f"{key} = {value}"
    else:
        lines.insert(at, f"{key} = {value}")
    path.write_text("\n".join(lines) + "\n")


