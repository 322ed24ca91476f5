"""`python -m ml`: the command line for every pipeline stage."""

from __future__ import annotations

import json
import os
import shlex
from datetime import date
from typing import List, Optional

import typer
from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TextColumn,
    TimeElapsedColumn,
)
from rich.table import Table

from ml.core.settings import Settings, SettingsError

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
    from ml.ingest.load import load_days, raw_table_hashes
    from ml.ingest.simulate import SimConfig

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
    from ml.features.dbt import run_dbt

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
    from ml.orchestration.bootstrap import init_airflow

    init_airflow(_settings())


@app.command()
def features(
    as_of: Optional[str] = typer.Option(None, help="Show this as_of_date (default: the latest)."),
) -> None:
    """Summarize what the feature marts hold."""
    from ml.features.marts import describe_marts

    settings = _settings()
    summary = describe_marts(settings, None if as_of is None else _parse_day(as_of, "--as-of"))
    typer.echo(json.dumps(summary, indent=2, default=str))


@app.command()
def demo(
    server: bool = typer.Option(
        False, "--server", help="Run on PostgreSQL and a registry on an S3 API instead of the embedded defaults: "
        "TIDEMARK_WAREHOUSE_URL if it is postgresql://, else postgresql://postgres@127.0.0.1:5432/tidemark_demo; "
        "TIDEMARK_REGISTRY_URI if it is s3://, else a local S3 server (moto) started for the run."),
    database: Optional[str] = typer.Option(
        None, help="With --server: a PostgreSQL database for the demo to drop and recreate. Without it, only "
        "tidemark_demo is recreated; in any other database the demo drops the pipeline's schemas."),
    until: str = typer.Option("2025-04-20", help="Last simulated day; an earlier day is a shorter demo "
                              "(2025-04-04 still shows drift, a retrain request and the gate's decision)."),
) -> None:
    """Run the end-to-end demo: simulate a history, build features, train, score, monitor and retrain in Airflow."""
    from ml.tools.demo import run_demo

    if database and not server:
        raise typer.BadParameter("--database applies only with --server", param_hint="--database")
    try:
        run_demo(_settings(), server=server, database=database, until=_parse_day(until, "--until"))
    except RuntimeError as exc:
        console.print(f"[red]demo failed:[/red] {exc}")
        raise typer.Exit(1)


@app.command("s3-server")
def s3_server(
    host: str = typer.Option("127.0.0.1", help="Address to listen on."),
    port: int = typer.Option(5055, min=0, max=65535, help="Port to listen on (0: any free port)."),
    bucket: Optional[str] = typer.Option(None, help="Create this bucket at start, e.g. tidemark-demo."),
    quiet: bool = typer.Option(False, "--quiet", help="Print only the endpoint URL, without the hints."),
) -> None:
    """Serve a local S3 API (moto) in the foreground until Ctrl-C; its objects live in memory only.

    The endpoint URL is printed alone on stdout once the server answers.
    """
    from ml.tools.s3local import DUMMY_AWS_ENV, S3ServerError, serve

    def ready(endpoint: str) -> None:
        typer.echo(endpoint)
        if quiet:
            return
        console.print(f"S3 API (moto) on {endpoint}" + (f" with bucket {bucket!r}" if bucket else "")
                      + "; objects are kept in memory and lost when it stops. Clients need any credentials:")
        exports = " ".join(f"{k}={v}" for k, v in {"TIDEMARK_S3_ENDPOINT_URL": endpoint, **DUMMY_AWS_ENV}.items())
        console.print(f"  export {exports}", highlight=False, soft_wrap=True)

    try:
        serve(host, port, bucket, on_ready=ready)
    except S3ServerError as exc:
        console.print(f"[red]error:[/red] {exc}")
        raise typer.Exit(2)


@app.command()
def train(
    spec: str = typer.Option("churn", help="Spec name under ml/specs/ or a path to a spec file."),
    as_of: Optional[str] = typer.Option(None, help="Use only labels known on this date (default: all closed labels)."),
    run_id: Optional[str] = typer.Option(None, help="Name of this run's working directory (default: cli-<as-of or latest>)."),
) -> None:
    """Train a spec's candidates, evaluate them against the champion, and let the gate decide."""
    from ml.core.spec import SpecError, load_spec
    from ml.registry import RegistryError
    from ml.training.data import DataError
    from ml.training.evaluate import TrainingError
    from ml.training.steps import train as run_training

    settings = _settings()
    try:
        model_spec = load_spec(spec)
        day = None if as_of is None else _parse_day(as_of, "--as-of")
        with Progress(TextColumn("[bold]train"), TextColumn("{task.description}"), TimeElapsedColumn(),
                      console=console, transient=not console.is_terminal) as progress:
            step = progress.add_task("", total=None)
            result = run_training(
                model_spec, settings, as_of=day, run_id=run_id or f"cli-{as_of or 'latest'}", actor=_actor(),
                on_step=lambda name: (progress.update(step, description=name), console.log(f"{model_spec.name}: {name}")),
            )
    except (SpecError, DataError, TrainingError, RegistryError) as exc:
        console.print(f"[red]error:[/red] {exc}")
        raise typer.Exit(2)
    board = Table(title=f"candidates of {model_spec.name} on the test window")
    for col in ("candidate", "device", "fit s", "val " + model_spec.primary_metric, "roc_auc", "pr_auc", "brier", "ece"):
        board.add_column(col, justify="left" if col in ("candidate", "device") else "right")
    for row in result["evaluation"]["leaderboard"]:
        t = row["test"]
        board.add_row(row["candidate"], row["device"], f"{row['fit_seconds']:.1f}",
                      f"{row['validation'][model_spec.primary_metric]:.4f}",
                      *(f"{t[m]:.4f}" for m in ("roc_auc", "pr_auc", "brier", "ece")))
    console.print(board)
    outcome = result["outcome"]
    console.print(f"[bold]{outcome['version']}[/bold] {outcome['decision']}; champion "
                  f"{outcome['champion_before']} -> {outcome['champion_after']}")
    for reason in outcome["reasons"]:
        console.print(f"  {reason}")


def _actor() -> str:
    import getpass

    return os.environ.get("TIDEMARK_ACTOR") or f"cli:{getpass.getuser()}"


registry_app = typer.Typer(no_args_is_help=True, help="Inspect the model registry, promote a version, roll back.")
app.add_typer(registry_app, name="registry")


def _registry():
    from ml.registry import Registry, RegistryError

    try:
        return Registry.from_settings(_settings())
    except RegistryError as exc:
        console.print(f"[red]registry error:[/red] {exc}")
        raise typer.Exit(2)


@registry_app.command("list")
def registry_list(model: Optional[str] = typer.Argument(None, help="Model name; all models when left out.")) -> None:
    """Versions with their primary metric, and where the aliases point."""
    reg = _registry()
    for name in [model] if model else reg.models():
        aliases = {a: reg.alias(name, a).version for a in ("champion", "challenger")}
        table = Table(title=f"{name} in {reg.uri}")
        for col in ("version", "created", "candidate", "as of", "roc_auc", "aliases"):
            table.add_column(col)
        for info in reg.versions(name):
            m = info.manifest
            tags = ", ".join(a for a, v in aliases.items() if v == info.version)
            auc = m.get("metrics", {}).get("roc_auc")
            table.add_row(info.version, m.get("created_at", "")[:19], m.get("candidate", ""), str(m.get("as_of")),
                          "" if auc is None else f"{auc:.4f}", tags)
        console.print(table)


@registry_app.command("show")
def registry_show(
    model: str,
    version: Optional[str] = typer.Argument(None, help="Version id, e.g. v0002 (default: the champion)."),
    history: bool = typer.Option(False, "--history", help="Print the champion alias history instead."),
) -> None:
    """A version's manifest as JSON, or the champion's history."""
    from ml.registry import RegistryError

    reg = _registry()
    try:
        if history:
            typer.echo(json.dumps(list(reg.alias(model, "champion").history), indent=2))
            return
        version = version or reg.alias(model, "champion").version
        if version is None:
            raise RegistryError(f"{model!r} has no champion yet; name a version")
        typer.echo(json.dumps(reg.get(model, version).manifest, indent=2, default=str))
    except RegistryError as exc:
        console.print(f"[red]error:[/red] {exc}")
        raise typer.Exit(2)


@registry_app.command("promote")
def registry_promote(
    model: str, version: str, reason: str = typer.Option(..., help="Why; kept in the alias history."),
    alias: str = typer.Option("champion"),
) -> None:
    """Point an alias at a version by hand (compare-and-swap; the gate is not consulted)."""
    from ml.registry import RegistryError

    try:
        state = _registry().promote(model, version, actor=_actor(), reason=reason, alias=alias)
    except RegistryError as exc:
        console.print(f"[red]error:[/red] {exc}")
        raise typer.Exit(2)
    console.print(f"{model} {alias} -> {state.version}")


@registry_app.command("rollback")
def registry_rollback(
    model: str, reason: str = typer.Option("manual rollback", help="Why; kept in the alias history."),
) -> None:
    """Point the champion back at the version it replaced."""
    from ml.registry import RegistryError

    try:
        state = _registry().rollback(model, actor=_actor(), reason=reason)
    except RegistryError as exc:
        console.print(f"[red]error:[/red] {exc}")
        raise typer.Exit(2)
    console.print(f"{model} champion -> {state.version}")


@app.command("load-csv")
def load_csv_command(
    path: str = typer.Argument(..., help="CSV file with a header row."),
    table: str = typer.Argument(..., help="Raw table to replace, e.g. telco_customers (schema raw)."),
) -> None:
    """Load a CSV file into the warehouse as a raw table of text columns, replacing it atomically."""
    from pathlib import Path

    from ml.ingest.csv_files import load_csv

    settings = _settings()
    try:
        rows = load_csv(settings, Path(path), table)
    except (ValueError, FileNotFoundError) as exc:
        console.print(f"[red]error:[/red] {exc}")
        raise typer.Exit(2)
    console.print(f"{rows:,} rows loaded into raw.{table} in {settings.warehouse.url}")


service_app = typer.Typer(no_args_is_help=True, help="Run Airflow as a local service: start, status, stop.")
app.add_typer(service_app, name="airflow")


@service_app.command("start")
def service_start(
    profile: str = typer.Option("local", help="local: LocalExecutor on SQLite; celery: CeleryExecutor on Redis "
                                              "with the metadata DB on PostgreSQL and a `gpu` queue worker."),
    port: Optional[int] = typer.Option(None, help="API server and UI port (default TIDEMARK_AIRFLOW_PORT or 8080)."),
) -> None:
    """Start api-server, scheduler, dag-processor and triggerer (and Celery workers) in the background."""
    from ml.tools.service import ServiceConfig, ServiceError, credentials, start

    settings = _settings()
    try:
        cfg = ServiceConfig.from_env(profile, port)
        with console.status(f"starting Airflow ({profile} profile)") as status:
            state = start(settings, cfg, progress=lambda msg: status.update(msg) or console.print(f"  {msg}"))
    except ServiceError as exc:
        console.print(f"[red]error:[/red] {exc}")
        raise typer.Exit(1)
    user, password = credentials(settings, cfg)
    console.print(f"[bold green]Airflow is up[/bold green] ({profile} profile, {len(state['processes'])} processes)")
    console.print(f"  UI:    {cfg.url}")
    console.print(f"  login: {user} / {password}")
    console.print(f"  logs:  {settings.airflow_home / 'service' / 'logs'}")
    console.print("  stop:  make airflow-stop")


@service_app.command("status")
def service_status() -> None:
    """Show what `airflow start` started and the API server's health report."""
    from ml.tools.service import _alive, health, read_state

    state = read_state(_settings())
    if not state:
        console.print("no Airflow started from this checkout is recorded")
        raise typer.Exit(1)
    table = Table("component", "pid", "running", "log")
    for proc in state["processes"]:
        table.add_row(proc["name"], str(proc["pid"]), "yes" if _alive(proc["pid"]) else "[red]no[/red]", proc["log"])
    console.print(f"{state['profile']} profile at {state['url']}")
    console.print(table)
    console.print(json.dumps(health(state["url"]), indent=2))


@service_app.command("stop")
def service_stop(grace: float = typer.Option(30.0, help="Seconds to wait after SIGTERM before SIGKILL.")) -> None:
    """Stop every process that `airflow start` started."""
    from ml.tools.service import stop

    stop(_settings(), grace_s=grace, progress=lambda msg: console.print(f"  {msg}"))


def main() -> None:
    os.environ.setdefault("DBT_SEND_ANONYMOUS_USAGE_STATS", "false")
    app()
