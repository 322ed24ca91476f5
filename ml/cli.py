"""`python -m ml`: the command line for every pipeline stage."""

from __future__ import annotations

import json
import os
import shlex
from datetime import date
from typing import List, Optional

import typer
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from ml.settings import Settings, SettingsError

app = typer.Typer(add_completion=False, no_args_is_help=True, help="Tidemark: batch ML on Airflow, dbt and a warehouse.")
console = Console(stderr=True)


def _settings() -> Settings:
    try:
        return Settings.from_env()
    except SettingsError as exc:
        console.print(f"[red]configuration error:[/red] {exc}")
        raise typer.Exit(2)


def _parse_day(value: str, option: str) -> date:
    try:
        return date.fromisoformat(value)
    except ValueError:
        raise typer.BadParameter(f"{value!r} is not a date; use YYYY-MM-DD, e.g. 2025-01-01", param_hint=option)


@app.command()
def simulate(
    seed: int = typer.Option(7, help="Random seed; the same seed and arguments give identical tables."),
    customers: int = typer.Option(5_000, min=1, help="Customers on the first day."),
    start: str = typer.Option("2025-01-01", help="First simulated day (YYYY-MM-DD)."),
    days: int = typer.Option(120, min=1, help="Number of days to simulate."),
    drift_date: Optional[str] = typer.Option("2025-04-01", help="Day of the price rise and new channel; 'none' to disable."),
    only_day: List[str] = typer.Option([], "--only-day", help="Load only these days (repeatable)."),
    hash_: bool = typer.Option(False, "--hash", help="Print a content hash per raw table afterwards."),
) -> None:
    """Simulate raw operational tables and load them into the warehouse, one replaceable day at a time."""
    from ml.ingest import load_days, raw_table_hashes
    from ml.simulate import SimConfig

    settings = _settings()
    drift = None if drift_date in (None, "", "none") else _parse_day(drift_date, "--drift-date")
    try:
        cfg = SimConfig(seed=seed, customers=customers, start=_parse_day(start, "--start"), days=days, drift_date=drift)
        wanted = {_parse_day(d, "--only-day") for d in only_day} or None
        with Progress(
            TextColumn("[bold]simulate"), BarColumn(), MofNCompleteColumn(), TextColumn("{task.description}"),
            TimeElapsedColumn(), console=console, transient=not console.is_terminal,
        ) as progress:
            task = progress.add_task("", total=len(wanted) if wanted else cfg.days)
            report = load_days(
                cfg, wanted, settings=settings,
                on_day=lambda day, n: progress.update(task, advance=1, description=f"{day} {n:,} rows"),
            )
    except ValueError as exc:
        console.print(f"[red]error:[/red] {exc}")
        raise typer.Exit(2)
    table = Table(title=f"raw tables loaded into {settings.warehouse.url}")
    table.add_column("table")
    table.add_column("rows", justify="right")
    for name, rows in report.rows.items():
        table.add_row(name, f"{rows:,}")
    console.print(table)
    rate = report.total_rows / report.seconds if report.seconds else 0.0
    console.print(f"{report.total_rows:,} rows for {len(report.days)} day(s) in {report.seconds:.1f}s ({rate:,.0f} rows/s)")
    if hash_:
        for name, digest in raw_table_hashes(settings).items():
            typer.echo(f"{name}\t{digest}")


@app.command("dbt", context_settings={"allow_extra_args": True, "ignore_unknown_options": True})
def dbt_command(ctx: typer.Context) -> None:
    """Run dbt in dbt_project/ against the configured warehouse, e.g. `python -m ml dbt build`."""
    from ml.dbt import run_dbt

    result = run_dbt(list(ctx.args), settings=_settings())
    raise typer.Exit(0 if result.success else 1)


@app.command()
def env(shell: bool = typer.Option(True, help="Print as shell `export` lines.")) -> None:
    """Print the environment that dbt and Airflow need, derived from TIDEMARK_* settings."""
    settings = _settings()
    values = {**settings.airflow_env(), **settings.dbt_env()}
    if shell:
        for key, value in values.items():
            typer.echo(f"export {key}={shlex.quote(value)}")
    else:
        typer.echo(json.dumps(values, indent=2))


@app.command("airflow-init")
def airflow_init() -> None:
    """Prepare Airflow's metadata database under TIDEMARK_HOME and create the pools the DAGs use."""
    from ml.orchestration import init_airflow

    init_airflow(_settings())


@app.command()
def features(
    as_of: Optional[str] = typer.Option(None, help="Show this as_of_date (default: the latest)."),
) -> None:
    """Summarize what the feature marts hold."""
    from ml.orchestration import describe_marts

    settings = _settings()
    summary = describe_marts(settings, None if as_of is None else _parse_day(as_of, "--as-of"))
    typer.echo(json.dumps(summary, indent=2, default=str))


@app.command()
def demo() -> None:
    """Run the end-to-end demo: simulate a history and build its features through real Airflow runs."""
    from ml.demo import run_demo

    try:
        run_demo(_settings())
    except RuntimeError as exc:
        console.print(f"[red]demo failed:[/red] {exc}")
        raise typer.Exit(1)


def main() -> None:
    os.environ.setdefault("DBT_SEND_ANONYMOUS_USAGE_STATS", "false")
    app()
