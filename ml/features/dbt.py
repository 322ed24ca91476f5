"""Run dbt against the configured warehouse, with the environment derived from one setting."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator, Mapping, Sequence

from ml.core.settings import Settings

# dbt commands that never open the warehouse; run_dbt checks that it can be opened before any other.
_NO_WAREHOUSE = frozenset({"clean", "debug", "deps", "docs", "init", "list", "ls", "parse"})


@dataclass(frozen=True)
class DbtResult:
    success: bool
    returncode: int
    output: str
    failures: list[str]


def run_dbt(
    args: Sequence[str],
    *,
    settings: Settings | None = None,
    vars: dict | None = None,
    capture: bool = False,
    env: Mapping[str, str] | None = None,
) -> DbtResult:
    """Run `dbt <args>` in dbt_project/ in a subprocess (so DuckDB's file lock is released on exit).

    `env` adds to (and overrides) the environment derived from the settings.
    With `capture`, output is returned rather than streamed, and the names of failing nodes are
    read from run_results.json.
    """
    settings = settings or Settings.from_env()
    _check_warehouse(args, settings)
    env = {**os.environ, **settings.dbt_env(), **(env or {})}
    cmd = [dbt_executable(), *args]
    if vars:
        cmd += ["--vars", json.dumps(vars)]
    proc = subprocess.run(
        cmd,
        cwd=settings.dbt_project_dir,
        env=env,
        text=True,
        stdout=subprocess.PIPE if capture else None,
        stderr=subprocess.STDOUT if capture else None,
    )
    failures = _failed_nodes(_target_path(args, settings.dbt_project_dir) / "run_results.json") if proc.returncode else []
    return DbtResult(proc.returncode == 0, proc.returncode, proc.stdout or "", failures)


def invoke_dbt(args: Sequence[str], *, settings: Settings | None = None) -> DbtResult:
    """Run `dbt <args>` in this process (dbt's programmatic runner), for a short build inside a task.

    It spares the few seconds a new dbt process takes to start. The warehouse connections are closed
    when the command ends, so DuckDB's file lock is released as with run_dbt. The output holds dbt's
    warnings and errors; the failing nodes come from run_results.json, as with run_dbt.
    """
    from dbt.cli.main import dbtRunner

    settings = settings or Settings.from_env()
    _check_warehouse(args, settings, in_process=True)
    lines: list[str] = []

    def keep(event) -> None:
        if event.info.level in ("warn", "error") and event.info.msg:
            lines.append(event.info.msg)

    project = ["--project-dir", str(settings.dbt_project_dir), "--profiles-dir", str(settings.dbt_project_dir)]
    with _environment({**settings.dbt_env(), "TIDEMARK_DUCKDB_KEEP_OPEN": "False"}):
        try:
            outcome = dbtRunner(callbacks=[keep]).invoke([*args, *project, "--quiet", "--no-use-colors"])
        finally:
            # dbt leaves its adapters' connections open in the process; closing them closes the DuckDB
            # file (keep_open is off), so that it is free for the next process that writes it.
            from dbt.adapters.factory import cleanup_connections

            cleanup_connections()
    failures = [] if outcome.success else _failed_nodes(_target_path(args, settings.dbt_project_dir) / "run_results.json")
    if outcome.exception is not None:
        lines.append(f"{type(outcome.exception).__name__}: {outcome.exception}")
    return DbtResult(outcome.success, 0 if outcome.success else 1, "\n".join(lines), failures)


@contextmanager
def _environment(values: Mapping[str, str]) -> Iterator[None]:
    """os.environ with `values` set for the duration (profiles.yml reads them through env_var)."""
    saved = {key: os.environ.get(key) for key in values}
    os.environ.update(values)
    try:
        yield
    finally:
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


def _check_warehouse(args: Sequence[str], settings: Settings, *, in_process: bool = False) -> None:
    """Open and close the warehouse before a dbt command that needs it, so that a warehouse which cannot be
    opened is one WarehouseError saying what to do rather than dbt's tracebacks."""
    command = next((arg for arg in args if not arg.startswith("-")), None)
    if command is None or command in _NO_WAREHOUSE:
        return
    from ml.core.warehouse import Warehouse, WarehouseError

    if settings.warehouse.kind == "spark":
        # Starting a session to check would cost a JVM, and hold the metastore that dbt's own session needs:
        # check what Spark needs to start. dbt in this process takes this process's session; a dbt process of
        # its own needs the metastore, so this process's session ends first.
        from ml.core.spark import SparkUnavailable, check_startable, release

        try:
            check_startable(settings.warehouse)
        except SparkUnavailable as exc:
            raise WarehouseError(str(exc)) from exc
        if not in_process:
            release()
        return
    with Warehouse.connect(settings):
        pass


def dbt_executable() -> str:
    """The dbt installed next to this Python (the project's virtualenv), else `dbt` on PATH."""
    candidate = Path(sys.executable).with_name("dbt")
    return str(candidate) if candidate.exists() else "dbt"


def _target_path(args: Sequence[str], project_dir: Path) -> Path:
    """Where this invocation writes its artifacts: `--target-path` when given, else DBT_TARGET_PATH or
    dbt_project/target."""
    args = list(args)
    for i, arg in enumerate(args):
        if arg == "--target-path" and i + 1 < len(args):
            return project_dir / args[i + 1]
        if arg.startswith("--target-path="):
            return project_dir / arg.split("=", 1)[1]
    return project_dir / os.environ.get("DBT_TARGET_PATH", "target")


def _failed_nodes(run_results: Path) -> list[str]:
    if not run_results.exists():
        return []
    results = json.loads(run_results.read_text()).get("results", [])
    return [r["unique_id"] for r in results if r.get("status") in ("error", "fail", "runtime error")]
