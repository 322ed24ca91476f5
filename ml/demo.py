"""The end-to-end demo on the embedded defaults: real Airflow task runs over a simulated history.

1. `ingest_raw` lands a history of raw days (one backfill run over a date range);
2. `build_features` builds the feature and label marts for that range with dbt (one task per model);
3. one more day goes through both DAGs the way the daily schedule runs it;
4. a summary of the marts is printed and written to TIDEMARK_HOME/demo/summary.json.
"""

from __future__ import annotations

import json
import os
import time
from datetime import date, timedelta
from typing import Any

from rich.console import Console
from rich.table import Table

from ml.settings import Settings

console = Console()

DEMO_SIM = {"seed": 7, "customers": 2_000, "sim_start": "2025-01-01", "drift_date": "2025-04-01"}
HISTORY_DAYS = 110


def run_demo(settings: Settings | None = None) -> dict[str, Any]:
    settings = settings or Settings.from_env()
    os.environ.update(settings.airflow_env())  # before Airflow is imported: it reads its config once
    os.environ.update({k: v for k, v in settings.dbt_env().items() if k.startswith(("DBT_", "DO_NOT"))})
    from airflow.dag_processing.dagbag import DagBag

    from ml.orchestration import describe_marts, init_airflow

    started = time.perf_counter()
    timeline: list[dict[str, Any]] = []
    with console.status("preparing Airflow's metadata database and pools"):
        init_airflow(settings)
    bag = DagBag(dag_folder=str(settings.repo_root / "dags"))
    if bag.import_errors:
        raise RuntimeError(f"DAG import errors: {bag.import_errors}")

    first = date.fromisoformat(DEMO_SIM["sim_start"])
    history = {"start": str(first), "end": str(first + timedelta(days=HISTORY_DAYS - 2))}
    daily_day = first + timedelta(days=HISTORY_DAYS - 1)
    daily = {"start": str(daily_day), "end": str(daily_day)}

    steps = [
        ("ingest_raw", history, "land the raw history (backfill)"),
        ("build_features", history, "build features and labels for the history"),
        ("ingest_raw", daily, "land one more day"),
        ("build_features", daily, "daily incremental feature build"),
    ]
    for dag_id, interval, what in steps:
        console.rule(f"[bold]{dag_id}[/bold] {interval['start']}..{interval['end']}: {what}")
        t0 = time.perf_counter()
        run = bag.dags[dag_id].test(run_conf={**DEMO_SIM, **interval} if dag_id == "ingest_raw" else interval)
        seconds = time.perf_counter() - t0
        states = {ti.task_id: str(ti.state) for ti in run.get_task_instances()}
        timeline.append({"dag": dag_id, **interval, "state": str(run.state), "tasks": len(states), "seconds": round(seconds, 1)})
        if str(run.state) != "success":
            failed = sorted(t for t, s in states.items() if s != "success")
            raise RuntimeError(f"{dag_id} run {run.run_id} ended {run.state}; tasks not successful: {failed}")

    marts = describe_marts(settings)
    summary = {
        "days": HISTORY_DAYS,
        "simulation": DEMO_SIM,
        "warehouse": settings.warehouse.url,
        "timeline": timeline,
        "marts": marts,
        "duration_s": round(time.perf_counter() - started, 1),
    }
    out = settings.home / "demo" / "summary.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(summary, indent=2, default=str))
    _print(summary, out)
    return summary


def _print(summary: dict[str, Any], path) -> None:
    table = Table(title="Airflow runs")
    for col in ("dag", "start", "end", "state", "tasks", "seconds"):
        table.add_column(col, justify="right" if col in ("tasks", "seconds") else "left")
    for row in summary["timeline"]:
        table.add_row(*(str(row[c]) for c in ("dag", "start", "end", "state", "tasks", "seconds")))
    console.print(table)
    marts = Table(title=f"what was built in {summary['warehouse']}")
    marts.add_column("relation")
    marts.add_column("summary")
    for name, info in summary["marts"].items():
        text = ", ".join(f"{k}={v}" for k, v in info.items()) if isinstance(info, dict) else str(info)
        marts.add_row(name, text)
    console.print(marts)
    console.print(f"demo finished in {summary['duration_s']}s; summary written to {path}")
