"""Pipeline commands: simulate or load raw data, run dbt, look at the features, train."""

from __future__ import annotations

from typing import List, Optional

import typer
from rich.table import Table
from rich.text import Text

from ml.cli.common import console, parse_day, progress, step_logger
from ml.core.settings import Settings

app = typer.Typer()


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
    from datetime import timedelta

    from ml.ingest.load import load_days, raw_table_hashes
    from ml.ingest.world import fix_world

    settings = Settings.from_env()
    first = parse_day(start, "--start")
    drift = None if drift_date in (None, "", "none") else parse_day(drift_date, "--drift-date")
    # A warehouse holds one world: the first load records it, a load of another is refused naming both.
    world = fix_world(settings, {"seed": seed, "customers": customers, "sim_start": str(first),
                                 "drift_date": str(drift) if drift else "none"})
    cfg = world.config(first + timedelta(days=days - 1))
    wanted = {parse_day(d, "--only-day") for d in only_day} or None
    with progress("simulate", bar=True) as shown:
        task = shown.add_task("", total=len(wanted) if wanted else cfg.days)
        report = load_days(
            cfg, wanted, settings=settings,
            on_day=lambda day, n: shown.update(task, advance=1, description=f"{day} {n:,} rows"),
        )
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


@app.command("load-csv")
def load_csv_command(
    path: str = typer.Argument(..., help="CSV file with a header row."),
    table: str = typer.Argument(..., help="Raw table to replace, e.g. telco_customers (schema raw)."),
    delimiter: Optional[str] = typer.Option(
        None, help="comma, semicolon, tab, pipe or whitespace (runs of spaces); default: detected from the file."),
) -> None:
    """Load a CSV file into the warehouse as a raw table of text columns, replacing it atomically."""
    from pathlib import Path

    from ml.ingest.csv_files import load_csv_file

    settings = Settings.from_env()
    loaded = load_csv_file(settings, Path(path), table, delimiter=delimiter)
    console.print(f"{loaded.rows:,} rows loaded into raw.{table} in {settings.warehouse.url}", soft_wrap=True)
    how = "detected" if loaded.detected else "given"
    count = f"{len(loaded.columns)} column{'s' if len(loaded.columns) != 1 else ''}"
    console.print(f"{count} split on {loaded.delimiter_name} ({how}): {', '.join(loaded.columns)}", soft_wrap=True)


@app.command("dbt", context_settings={"allow_extra_args": True, "ignore_unknown_options": True})
def dbt_command(ctx: typer.Context) -> None:
    """Run dbt in dbt_project/ against the configured warehouse, e.g. `python -m ml dbt build`."""
    from ml.features.dbt import run_dbt

    result = run_dbt(list(ctx.args), settings=Settings.from_env())
    raise typer.Exit(0 if result.success else 1)


@app.command()
def features(
    as_of: Optional[str] = typer.Option(None, help="Show this as_of_date (default: the latest)."),
) -> None:
    """Summarize what the feature marts hold."""
    import json

    from ml.features.marts import describe_marts

    summary = describe_marts(Settings.from_env(), None if as_of is None else parse_day(as_of, "--as-of"))
    typer.echo(json.dumps(summary, indent=2, default=str))


@app.command()
def train(
    spec: str = typer.Option("churn", help="Spec name under ml/specs/ or a path to a spec file."),
    as_of: Optional[str] = typer.Option(None, help="Use only labels known on this date (default: all closed labels)."),
    run_id: Optional[str] = typer.Option(None, help="Name of this run's working directory (default: cli-<as-of or latest>)."),
) -> None:
    """Train a spec's candidates, evaluate them against the champion, and let the gate decide."""
    from ml.core.spec import load_spec
    from ml.training.steps import train as run_training

    settings = Settings.from_env()
    model_spec = load_spec(spec)
    day = None if as_of is None else parse_day(as_of, "--as-of")
    with progress("train") as shown:
        result = run_training(
            model_spec, settings, as_of=day, run_id=run_id or f"cli-{as_of or 'latest'}", actor=settings.actor,
            on_step=step_logger(shown, shown.add_task("", total=None), model_spec.name),
        )
    metric = model_spec.primary_metric
    challenger = result["evaluation"]["challenger"]
    board = Table(title=f"candidates of {model_spec.name} on the test window",
                  caption=f"* the challenger: best validation {metric}")
    for col in ("candidate", "device", "fit s", "val " + metric, "roc_auc", "pr_auc", "brier", "ece"):
        board.add_column(col, justify="left" if col in ("candidate", "device") else "right")
    for row in result["evaluation"]["leaderboard"]:
        t, chosen = row["test"], row["candidate"] == challenger["candidate"]
        board.add_row(row["candidate"] + (" *" if chosen else ""), row["device"], f"{row['fit_seconds']:.1f}",
                      f"{row['validation'][metric]:.4f}",
                      *(f"{t[m]:.4f}" for m in ("roc_auc", "pr_auc", "brier", "ece")), style="bold" if chosen else None)
    console.print(board)
    console.print(f"challenger: {challenger['candidate']} (best validation {metric} "
                  f"{challenger['validation'][metric]:.4f})", soft_wrap=True)
    outcome = result["outcome"]
    console.print(Text(str(outcome["version"]), style="bold"), f"{outcome['decision']}; champion "
                  f"{outcome['champion_before']} -> {outcome['champion_after']}")
    for reason in outcome["reasons"]:
        console.print(f"  {reason}")
