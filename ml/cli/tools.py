"""Development tooling: the environment for dbt and Airflow, the demo, a local S3 server, Airflow as a service,
Evidently's monitoring UI."""

from __future__ import annotations

import json
import shlex
from typing import Optional

import typer
from rich.table import Table
from rich.text import Text

from ml.cli.common import console, parse_day
from ml.core.settings import Settings
from ml.ingest.world import DEFAULT_HISTORY_END, DEFAULT_WORLD

app = typer.Typer()
DemoOption = typer.Option(False, "--demo", help="The service on the state of the last `make demo` "
                          "(TIDEMARK_HOME/demo): its runs, logs and asset events.")

service_app = typer.Typer(no_args_is_help=True, help="Run Airflow as a local service: start, status, stop.")
app.add_typer(service_app, name="airflow")


@app.command()
def env(shell: bool = typer.Option(True, help="Print as shell `export` lines.")) -> None:
    """Print the environment that dbt and Airflow need, derived from TIDEMARK_* settings."""
    settings = Settings.from_env()
    values = {**settings.airflow_env(), **settings.dbt_env()}
    if shell:
        for key, value in values.items():
            typer.echo(f"export {key}={shlex.quote(value)}")
    else:
        typer.echo(json.dumps(values, indent=2))


@app.command("airflow-init")
def airflow_init() -> None:
    """Prepare Airflow's metadata database under TIDEMARK_HOME and create the pools the DAGs use."""
    from ml.orchestration.airflow_setup import init_airflow

    init_airflow(Settings.from_env())


@app.command()
def demo(
    server: bool = typer.Option(
        False, "--server", help="Run on PostgreSQL and a registry on an S3 API instead of the embedded defaults: "
        "TIDEMARK_WAREHOUSE_URL if it is postgresql://, else postgresql://postgres@127.0.0.1:5432/tidemark_demo; "
        "TIDEMARK_REGISTRY_URI if it is s3://, else a local S3 server (moto) started for the run."),
    database: Optional[str] = typer.Option(
        None, help="With --server: a PostgreSQL database for the demo to drop and recreate. Without it, only "
        "tidemark_demo is recreated; in any other database the demo drops the pipeline's schemas."),
    spark: bool = typer.Option(
        False, "--spark", help="Run on Spark instead of DuckDB: TIDEMARK_WAREHOUSE_URL if it is spark://, else "
        "spark://local[2]; its catalog lives in TIDEMARK_HOME/demo-spark/spark."),
    until: str = typer.Option("2025-04-20", help="Last simulated day; an earlier day is a shorter demo "
                              "(2025-04-04 still shows drift, a retrain request and the gate's decision)."),
) -> None:
    """Run the end-to-end demo: simulate a history, build features, train, score, monitor and retrain in Airflow."""
    from ml.tools.demo import run_demo

    if database and not server:
        raise typer.BadParameter("--database applies only with --server", param_hint="--database")
    if spark and server:
        raise typer.BadParameter("--spark and --server are two demos: give one", param_hint="--spark")
    run_demo(Settings.from_env(), server=server, spark=spark, database=database, until=parse_day(until, "--until"))


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
    from ml.tools.s3local import DUMMY_AWS_ENV, serve

    def ready(endpoint: str) -> None:
        typer.echo(endpoint)
        if quiet:
            return
        console.print(f"S3 API (moto) on {endpoint}" + (f" with bucket {bucket!r}" if bucket else "")
                      + "; objects are kept in memory and lost when it stops. Clients need any credentials:")
        exports = " ".join(f"{k}={v}" for k, v in {"TIDEMARK_S3_ENDPOINT_URL": endpoint, **DUMMY_AWS_ENV}.items())
        console.print(f"  export {exports}", highlight=False, soft_wrap=True)

    serve(host, port, bucket, on_ready=ready)


@app.command("monitoring-ui")
def monitoring_ui(
    demo: bool = typer.Option(False, "--demo", help="Serve the workspace of the last `make demo` "
                              "(TIDEMARK_HOME/demo/evidently) instead of TIDEMARK_HOME/evidently."),
    host: str = typer.Option("127.0.0.1", help="Address to listen on."),
    port: int = typer.Option(8085, min=1, max=65535, help="Port to listen on."),
    stop: bool = typer.Option(False, "--stop", help="Stop the UI that this command started, and nothing else."),
    status: bool = typer.Option(False, "--status", help="Show the UI that this command started and its projects."),
) -> None:
    """Start Evidently's UI on the monitoring workspace in the background: each model's drift and realized
    performance, day by day. The address is printed alone on stdout once it answers; --stop ends it."""
    from ml.monitoring.workspace import monitoring_workspace
    from ml.tools import monitoring_ui as ui

    settings = _service_settings(demo)
    hint = "make monitoring-ui-stop" if demo else "python -m ml monitoring-ui --stop"
    if stop:
        ui.stop(settings, progress=lambda msg: console.print(f"  {msg}"))
        return
    if status:
        found = ui.status(settings)
        if found is None:
            console.print(f"no monitoring UI started from {settings.home} is recorded")
            raise typer.Exit(1)
        running = Text("running") if found["running"] else Text("not running", style="red")
        console.print(Text.assemble(f"evidently ui (pid {found['pid']}) at {found['url']}: ", running,
                                    f"; log {found['log']}"), soft_wrap=True)
        _print_projects(found["projects"])
        return
    workspace = monitoring_workspace(settings)
    if demo and not workspace.is_dir():
        from ml.tools.demo import DemoError

        raise DemoError(f"no demo monitoring here yet ({workspace} does not exist): run `make demo` first, "
                        "then `make monitoring-ui`")
    with console.status(Text(f"starting Evidently's UI on {workspace}")):
        state = ui.start(settings, host=host, port=port, progress=lambda msg: console.print(f"  {msg}"))
    console.print(Text("Evidently UI is up", style="bold green"),
                  "(already running)" if state["already"] else f"(started in {state['seconds']}s)")
    console.print(f"  UI:        {state['url']}", soft_wrap=True)
    console.print(f"  workspace: {state['workspace']}", soft_wrap=True)
    _print_projects(ui.projects(state["url"]))
    console.print(f"  stop:      {hint}")
    typer.echo(state["url"])  # the address alone on stdout, for scripts


def _print_projects(projects: list[dict] | None) -> None:
    if not projects:
        console.print("  projects:  none yet; each monitoring run adds its model's days")
        return
    for project in projects:
        console.print(f"  {project['name']}: {project['snapshots']} snapshots, dashboard {project['dashboard']}",
                      soft_wrap=True)


@service_app.command("start")
def service_start(
    profile: str = typer.Option("local", help="local: LocalExecutor on SQLite; celery: CeleryExecutor on Redis "
                                              "with the metadata DB on PostgreSQL and a `gpu` queue worker."),
    port: Optional[int] = typer.Option(None, help="API server and UI port (default TIDEMARK_AIRFLOW_PORT or 8080)."),
    paused: bool = typer.Option(False, "--paused", help="Leave new DAGs paused and do not bootstrap: nothing "
                                "runs until you unpause it."),
    run_bootstrap: bool = typer.Option(True, "--bootstrap/--no-bootstrap", help="Trigger the bootstrap DAG "
                                       "(history, features, first champion, then the simulated clock) unless it "
                                       "ran before."),
    demo: bool = DemoOption,
) -> None:
    """Start api-server, scheduler, dag-processor and triggerer (and Celery workers) in the background, then
    bootstrap the loop. With --demo: on the last `make demo`'s state, to look at its runs, paused."""
    from ml.tools.service import ServiceConfig, bootstrap, credentials, start

    settings = _service_settings(demo)
    if demo:
        if not (settings.airflow_home / "airflow.db").exists():
            from ml.tools.demo import DemoError

            raise DemoError(f"no demo has run here yet ({settings.home} holds no Airflow metadata DB): run "
                            "`make demo` first, then `make demo-ui`")
        paused, run_bootstrap = True, False  # the demo's runs are there to look at; nothing new is scheduled
    cfg = ServiceConfig.from_env(profile, port, paused=paused)
    with console.status(Text(f"starting Airflow ({profile} profile)")) as status:  # a str status is read as markup
        def shown(msg: str) -> None:
            status.update(Text(msg))
            console.print(f"  {msg}")

        state = start(settings, cfg, progress=shown)
        if run_bootstrap and not paused:
            status.update(Text("waiting for the DAG processor to parse the DAGs"))
            bootstrap(settings, cfg, progress=shown)
    user, password = credentials(settings, cfg)
    console.print(Text("Airflow is up", style="bold green"),
                  f"({profile} profile, {len(state['processes'])} processes)")
    console.print(f"  UI:    {cfg.url}")
    console.print(f"  login: {user} / {password}")
    console.print(f"  logs:  {settings.airflow_home / 'service' / 'logs'}")
    if demo:
        console.print("  the demo's runs: their grid, logs and asset events, with every DAG paused")
    console.print("  stop:  " + ("make demo-ui-stop" if demo else "make airflow-stop"))


@service_app.command("bootstrap")
def service_bootstrap(
    customers: int = typer.Option(DEFAULT_WORLD.customers, min=1, help="Customers on the simulated world's first day."),
    seed: int = typer.Option(DEFAULT_WORLD.seed, help="Simulator seed."),
    sim_start: str = typer.Option(str(DEFAULT_WORLD.sim_start), help="First simulated day."),
    drift_date: str = typer.Option(str(DEFAULT_WORLD.drift_date), help="Day of the price rise and new channel; "
                                   "'none' for none."),
    history_end: str = typer.Option(str(DEFAULT_HISTORY_END), help="Last day of the history; the first champion is trained "
                                    "as of it, then the clock loads one day after another."),
    port: Optional[int] = typer.Option(None, help="API server port (default TIDEMARK_AIRFLOW_PORT or 8080)."),
) -> None:
    """Unpause the loop's DAGs on a running service and trigger the bootstrap DAG (it skips itself on a warehouse
    whose clock already runs)."""
    from ml.tools.service import ServiceConfig, bootstrap, read_state

    settings = Settings.from_env()
    state = read_state(settings)
    if state and port is None:  # the port the running service was started on
        port = int(state["url"].rsplit(":", 1)[1])
    cfg = ServiceConfig.from_env(state["profile"] if state else "local", port)
    conf = {"customers": customers, "seed": seed, "sim_start": str(parse_day(sim_start, "--sim-start")),
            "drift_date": None if drift_date.lower() == "none" else str(parse_day(drift_date, "--drift-date")),
            "history_end": str(parse_day(history_end, "--history-end"))}
    bootstrap(settings, cfg, conf, again=True, progress=lambda msg: console.print(f"  {msg}"))


@service_app.command("status")
def service_status(demo: bool = DemoOption) -> None:
    """Show what `airflow start` started and the API server's health report."""
    from ml.tools.service import _alive, health, read_state

    state = read_state(_service_settings(demo))
    if not state:
        console.print("no Airflow started from this checkout is recorded")
        raise typer.Exit(1)
    table = Table("component", "pid", "running", "log")
    for proc in state["processes"]:
        running = "yes" if _alive(proc["pid"]) else Text("no", style="red")
        table.add_row(proc["name"], str(proc["pid"]), running, proc["log"])
    console.print(f"{state['profile']} profile at {state['url']}")
    console.print(table)
    console.print(json.dumps(health(state["url"]), indent=2))


@service_app.command("stop")
def service_stop(grace: float = typer.Option(30.0, help="Seconds to wait after SIGTERM before SIGKILL."),
                 demo: bool = DemoOption) -> None:
    """Stop every process that `airflow start` started."""
    from ml.tools.service import stop

    stop(_service_settings(demo), grace_s=grace, progress=lambda msg: console.print(f"  {msg}"))


def _service_settings(demo: bool) -> Settings:
    """The settings of the service: the environment's, or with --demo those `make demo` ran with."""
    if not demo:
        return Settings.from_env()
    from ml.tools.demo import demo_run_settings

    return demo_run_settings(Settings.from_env())
