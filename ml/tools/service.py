"""Airflow as a local service: start, watch and stop its components with the repository's settings.

Two profiles:

- `local`: api-server, scheduler, dag-processor and triggerer with the LocalExecutor, Airflow's
  metadata in SQLite under TIDEMARK_HOME. The embedded defaults, nothing else needed.
- `celery`: the same components with the CeleryExecutor, the metadata DB on PostgreSQL, Redis as
  the broker, and two Celery workers: one consumes the `default` queue, the other only the GPU queue
  that the PyTorch training tasks are routed to.

Every process runs in its own session with its log in `<AIRFLOW_HOME>/service/logs/`, and
`service/state.json` records what was started so that `stop` ends exactly that.
"""

from __future__ import annotations

import json
import os
import secrets
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Mapping

from ml.core.settings import Settings, redacted_url
from ml.orchestration.airflow_setup import init_airflow
from ml.orchestration.intervals import OrchestrationError

DEFAULT_QUEUE = "default"
DEFAULT_AIRFLOW_DB = "postgresql://postgres@127.0.0.1:5432/tidemark_airflow"
DEFAULT_BROKER = "redis://127.0.0.1:6379/3"
PROFILES = ("local", "celery")


class ServiceError(OrchestrationError):
    """A service could not be started or stopped; the message says which and where its log is."""


@dataclass(frozen=True)
class Component:
    """One long-running Airflow process."""

    name: str
    argv: list[str]
    env: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class ServiceConfig:
    """What one `start` runs: the profile, the API port, the metadata DB and the broker."""

    profile: str = "local"
    port: int = 8080
    host: str = "127.0.0.1"
    user: str = "admin"
    metadata_db: str = ""
    broker_url: str = DEFAULT_BROKER
    worker_log_ports: tuple[int, int] = (8796, 8797)
    triggerer_log_port: int = 8794
    gpu_queue: str = "gpu"
    password: str = ""
    # False: every DAG is unpaused when the DAG processor first sees it, so the scheduler runs the loop.
    paused: bool = False

    @classmethod
    def from_env(cls, profile: str, port: int | None = None, env: Mapping[str, str] | None = None, *,
                 paused: bool = False) -> "ServiceConfig":
        env = os.environ if env is None else env
        if profile not in PROFILES:
            raise ServiceError(f"unknown profile {profile!r}; choose one of: {', '.join(PROFILES)}")
        db = env.get("TIDEMARK_AIRFLOW_DB_URL", "").strip()
        if profile == "celery" and not db:
            db = DEFAULT_AIRFLOW_DB
        if profile == "celery" and not db.startswith("postgresql"):
            raise ServiceError(
                f"TIDEMARK_AIRFLOW_DB_URL={db!r}: the celery profile needs a PostgreSQL metadata database, "
                f"e.g. {DEFAULT_AIRFLOW_DB}"
            )
        return cls(
            profile=profile,
            port=port or int(env.get("TIDEMARK_AIRFLOW_PORT", "8080")),
            user=env.get("TIDEMARK_AIRFLOW_USER", "admin"),
            metadata_db=db,
            broker_url=env.get("TIDEMARK_CELERY_BROKER_URL", DEFAULT_BROKER),
            gpu_queue=env.get("TIDEMARK_GPU_QUEUE", "").strip() or "gpu",
            password=env.get("TIDEMARK_AIRFLOW_PASSWORD", ""),
            paused=paused,
        )

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"


def service_dir(settings: Settings) -> Path:
    return settings.airflow_home / "service"


def _write_private(path: Path, text: str) -> None:
    """Write a file that only its owner can read, never readable by others even briefly."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as fh:
        fh.write(text)


def _secret(path: Path, make: Callable[[], str]) -> str:
    """A value kept in a private file, created on first use."""
    if path.exists():
        return path.read_text().strip()
    value = make()
    _write_private(path, value)
    return value


def credentials(settings: Settings, cfg: ServiceConfig) -> tuple[str, str]:
    """The UI/API login: TIDEMARK_AIRFLOW_PASSWORD, else a password generated once and kept."""
    password = cfg.password or _secret(
        service_dir(settings) / "password", lambda: secrets.token_urlsafe(12)
    )
    return cfg.user, password


def service_env(settings: Settings, cfg: ServiceConfig) -> dict[str, str]:
    """The environment every component shares: settings, executor, metadata DB, auth and secrets."""
    folder = service_dir(settings)
    user, password = credentials(settings, cfg)
    passwords_file = folder / "passwords.json"  # what Airflow's simple auth manager reads
    _write_private(passwords_file, json.dumps({user: password}))
    env = {
        # No password here: Cosmos tasks get it from the connection in airflow_env, run_dbt from the URL.
        **settings.dbt_env(secrets=False),
        **settings.airflow_env(),
        "AIRFLOW__CORE__EXECUTOR": "CeleryExecutor" if cfg.profile == "celery" else "LocalExecutor",
        "AIRFLOW__CORE__EXECUTION_API_SERVER_URL": f"{cfg.url}/execution/",
        "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_USERS": f"{user}:admin",
        "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_PASSWORDS_FILE": str(passwords_file),
        # Every component signs and checks the same task tokens.
        "AIRFLOW__API_AUTH__JWT_SECRET": _secret(folder / "jwt_secret", lambda: secrets.token_urlsafe(64)),
        "AIRFLOW__API__SECRET_KEY": _secret(folder / "api_secret", lambda: secrets.token_urlsafe(64)),
        "AIRFLOW__LOGGING__TRIGGERER_LOG_SERVER_PORT": str(cfg.triggerer_log_port),
        # The LocalExecutor's log server; each Celery worker gets its own port below.
        "AIRFLOW__LOGGING__WORKER_LOG_SERVER_PORT": str(cfg.worker_log_ports[0]),
        "AIRFLOW__OPERATORS__DEFAULT_QUEUE": DEFAULT_QUEUE,
        "AIRFLOW__DAG_PROCESSOR__REFRESH_INTERVAL": "30",
        "AIRFLOW__CORE__DAGS_ARE_PAUSED_AT_CREATION": str(cfg.paused),
    }
    if cfg.metadata_db.startswith("postgresql"):
        # Whatever driver the URL names: psycopg2 for the sync engine (the UI's asset-lineage query binds a
        # JSON path that psycopg 3 sends as varchar, which PostgreSQL refuses), psycopg 3 for the async one.
        where = cfg.metadata_db.split("://", 1)[1]
        env["AIRFLOW__DATABASE__SQL_ALCHEMY_CONN"] = f"postgresql+psycopg2://{where}"
        env["AIRFLOW__DATABASE__SQL_ALCHEMY_CONN_ASYNC"] = f"postgresql+psycopg://{where}"
        if cfg.profile == "celery":
            env["AIRFLOW__CELERY__RESULT_BACKEND"] = f"db+postgresql+psycopg2://{where}"
    elif cfg.metadata_db:
        env["AIRFLOW__DATABASE__SQL_ALCHEMY_CONN"] = cfg.metadata_db
    if cfg.profile == "celery":
        env["AIRFLOW__CELERY__BROKER_URL"] = cfg.broker_url
    return env


def components(cfg: ServiceConfig) -> list[Component]:
    """The processes of a profile, in start order."""
    procs = [
        Component("api-server", ["api-server", "--host", cfg.host, "--port", str(cfg.port)]),
        Component("scheduler", ["scheduler"]),
        Component("dag-processor", ["dag-processor"]),
        Component("triggerer", ["triggerer"]),
    ]
    if cfg.profile == "celery":
        for (name, queue, concurrency), log_port in zip(
            [("worker-default", DEFAULT_QUEUE, 2), ("worker-gpu", cfg.gpu_queue, 1)], cfg.worker_log_ports
        ):
            procs.append(Component(
                name,
                ["celery", "worker", "--queues", queue, "--concurrency", str(concurrency),
                 "--celery-hostname", f"{queue}@%h"],
                # The worker name is reported by the tasks it runs (train_step's `worker`).
                {"TIDEMARK_WORKER_NAME": name, "AIRFLOW__LOGGING__WORKER_LOG_SERVER_PORT": str(log_port)},
            ))
    return procs


def _ensure_database(url: str) -> None:
    """Create the PostgreSQL metadata database if it does not exist."""
    import psycopg
    from sqlalchemy.engine import make_url

    from ml.core.sql import quote

    parsed = make_url(url)
    admin = {"host": parsed.host or "127.0.0.1", "port": parsed.port or 5432, "user": parsed.username or "postgres",
             "dbname": "postgres", **({"password": parsed.password} if parsed.password else {})}
    try:
        with psycopg.connect(autocommit=True, **admin) as conn:
            exists = conn.execute("select 1 from pg_database where datname = %s", (parsed.database,)).fetchone()
            if not exists:
                conn.execute(f"create database {quote(parsed.database)}")
    except psycopg.OperationalError as exc:
        raise ServiceError(f"the metadata database server for {redacted_url(url)!r} is not reachable: {exc}") from exc


def _check_broker(url: str) -> None:
    import redis

    try:
        redis.Redis.from_url(url, socket_connect_timeout=3).ping()
    except redis.RedisError as exc:
        raise ServiceError(f"the Celery broker {url!r} is not reachable ({exc}); start Redis or set "
                           "TIDEMARK_CELERY_BROKER_URL") from exc


def _port_free(host: str, port: int) -> bool:
    with socket.socket() as sock:
        return sock.connect_ex((host, port)) != 0


def _alive(pid: int) -> bool:
    """The process exists and has not exited: a child of ours that exited is reaped, any other zombie counts
    as exited."""
    try:
        if os.waitpid(pid, os.WNOHANG)[0] == pid:
            return False
    except ChildProcessError:  # not our child (started by an earlier `start`): ask the kernel below
        pass
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return True
    return state != "Z"


def read_state(settings: Settings) -> dict | None:
    path = service_dir(settings) / "state.json"
    return json.loads(path.read_text()) if path.exists() else None


def health(url: str, timeout: float = 5.0) -> dict | None:
    """The API server's /api/v2/monitor/health answer, or None while it does not answer."""
    try:
        with urllib.request.urlopen(f"{url}/api/v2/monitor/health", timeout=timeout) as resp:
            return json.loads(resp.read())
    except (urllib.error.URLError, OSError, ValueError):
        return None


def _healthy(report: dict | None) -> bool:
    """Every component the health endpoint reports on says healthy."""
    if not report:
        return False
    parts = ("metadatabase", "scheduler", "dag_processor", "triggerer")
    return all((report.get(p) or {}).get("status") == "healthy" for p in parts)


def start(settings: Settings, cfg: ServiceConfig, *, wait_s: float = 240.0,
          progress: Callable[[str], None] = print) -> dict:
    """Prepare the metadata DB, start every component of the profile, and wait until all report healthy."""
    state = read_state(settings)
    if state and any(_alive(p["pid"]) for p in state["processes"]):
        raise ServiceError(f"Airflow is already running here ({state['profile']} profile, {state['url']}); "
                           "stop it first with `make airflow-stop`")
    if not _port_free(cfg.host, cfg.port):
        raise ServiceError(f"port {cfg.port} on {cfg.host} is taken; free it or set TIDEMARK_AIRFLOW_PORT")
    if cfg.profile == "celery":
        _ensure_database(cfg.metadata_db)
        _check_broker(cfg.broker_url)
    env = {**os.environ, **service_env(settings, cfg)}
    where = redacted_url(cfg.metadata_db) if cfg.metadata_db else f"SQLite under {settings.airflow_home}"
    progress(f"preparing the metadata database ({where})")
    init_airflow(settings, env=env)
    logs = service_dir(settings) / "logs"
    logs.mkdir(parents=True, exist_ok=True)
    airflow = str(Path(sys.executable).with_name("airflow"))
    started: list[dict] = []
    state = {"profile": cfg.profile, "url": cfg.url, "processes": started}
    state_path = service_dir(settings) / "state.json"
    try:
        for comp in components(cfg):
            log_path = logs / f"{comp.name}.log"
            with open(log_path, "ab") as log_fh:
                proc = subprocess.Popen([airflow, *comp.argv], env={**env, **comp.env}, stdout=log_fh,
                                        stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                        start_new_session=True, cwd=settings.repo_root)
            started.append({"name": comp.name, "pid": proc.pid, "log": str(log_path)})
            state_path.write_text(json.dumps(state, indent=2))
            progress(f"started {comp.name} (pid {proc.pid}, log {log_path})")
        _wait_healthy(cfg, started, wait_s, progress)
    except BaseException:
        stop(settings, progress=progress)
        raise
    return state


def _wait_healthy(cfg: ServiceConfig, started: list[dict], wait_s: float, progress: Callable[[str], None]) -> None:
    deadline = time.monotonic() + wait_s
    report = None
    while time.monotonic() < deadline:
        dead = [p for p in started if not _alive(p["pid"])]
        if dead:
            names = ", ".join(f"{p['name']} (log {p['log']})" for p in dead)
            raise ServiceError(f"{names} exited during start-up:\n{_tail(dead[0]['log'])}")
        report = health(cfg.url)
        if _healthy(report) and _workers_ready(cfg, progress):
            progress(f"healthy: {', '.join(k for k in report)}")
            return
        time.sleep(2)
    raise ServiceError(f"Airflow did not report healthy within {wait_s:.0f} s; last health answer: {report}")


def _workers_ready(cfg: ServiceConfig, progress: Callable[[str], None]) -> bool:
    """Celery profile: every worker answers a ping over the broker. Other profiles have none to ask."""
    if cfg.profile != "celery":
        return True
    from celery import Celery

    app = Celery(broker=cfg.broker_url)
    try:
        replies = app.control.ping(timeout=1.0) or []
    finally:
        app.close()
    names = sorted(name for reply in replies for name in reply)
    expected = {DEFAULT_QUEUE, cfg.gpu_queue}
    ready = {name.split("@", 1)[0] for name in names} >= expected
    if ready:
        progress(f"Celery workers answering: {', '.join(names)}")
    return ready


def _tail(path: str, lines: int = 30) -> str:
    try:
        return "\n".join(Path(path).read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return ""


def stop(settings: Settings, *, grace_s: float = 30.0, progress: Callable[[str], None] = print) -> list[str]:
    """Stop what `start` recorded: SIGTERM to each process group, SIGKILL after the grace period."""
    state = read_state(settings)
    if not state:
        progress("nothing to stop: no Airflow started from this checkout is recorded")
        return []
    procs = list(reversed(state["processes"]))  # workers first, the API server last
    for proc in procs:
        _signal_group(proc["pid"], signal.SIGTERM)
    deadline = time.monotonic() + grace_s
    while time.monotonic() < deadline and any(_alive(p["pid"]) for p in procs):
        time.sleep(0.5)
    stopped = []
    for proc in procs:
        if _alive(proc["pid"]):
            _signal_group(proc["pid"], signal.SIGKILL)
            progress(f"killed {proc['name']} (pid {proc['pid']}): it did not stop within {grace_s:.0f} s")
        else:
            progress(f"stopped {proc['name']} (pid {proc['pid']})")
        stopped.append(proc["name"])
    (service_dir(settings) / "state.json").unlink(missing_ok=True)
    return stopped


def _signal_group(pid: int, sig: int) -> None:
    try:
        os.killpg(pid, sig)  # each component leads its own session: this reaches its children too
    except ProcessLookupError:
        pass


# -- the loop, through the REST API -------------------------------------------------------------------
def loop_dags(settings: Settings) -> list[str]:
    """The DAGs of the loop: the shared ones, then each served model's train, score and monitor DAGs."""
    from ml.orchestration.served import loop_specs

    models = [spec.name for spec in loop_specs(settings)]
    return ["bootstrap", "ingest_raw", "build_features",
            *(f"{kind}_{model}" for model in models for kind in ("train", "score", "monitor"))]


def bootstrap(settings: Settings, cfg: ServiceConfig, conf: Mapping[str, object] | None = None, *,
              again: bool = False, wait_s: float = 300.0, progress: Callable[[str], None] = print) -> dict | None:
    """Unpause the loop's DAGs and trigger the `bootstrap` DAG with `conf` (its Params), once the DAG processor
    has parsed them all. Returns the new run, or None when bootstrap has run before and `again` is False. (A
    bootstrap of a warehouse whose clock already runs skips itself.)"""
    user, password = credentials(settings, cfg)
    token = _api(cfg, "", "POST", "/auth/token", {"username": user, "password": password})["access_token"]
    deadline, wanted = time.monotonic() + wait_s, loop_dags(settings)
    while True:
        listed = {d["dag_id"] for d in _api(cfg, token, "GET", "/api/v2/dags?limit=100")["dags"]}
        missing = [d for d in wanted if d not in listed]
        if not missing:
            break
        if time.monotonic() > deadline:
            raise ServiceError(f"the DAG processor has not parsed {', '.join(missing)} within {wait_s:.0f} s; "
                               f"see {service_dir(settings) / 'logs' / 'dag-processor.log'}")
        time.sleep(3)
    for dag_id in wanted:
        _api(cfg, token, "PATCH", f"/api/v2/dags/{dag_id}", {"is_paused": False})
    earlier = _api(cfg, token, "GET", "/api/v2/dags/bootstrap/dagRuns?limit=1")["dag_runs"]
    if earlier and not again:
        progress(f"bootstrap has run before (run {earlier[0]['dag_run_id']}, {earlier[0]['state']}): not triggered again")
        return None
    run = _api(cfg, token, "POST", "/api/v2/dags/bootstrap/dagRuns", {"logical_date": None, "conf": dict(conf or {})})
    progress(f"triggered bootstrap (run {run['dag_run_id']}): {cfg.url}/dags/bootstrap")
    return run


def _api(cfg: ServiceConfig, token: str, method: str, path: str, body: dict | None = None) -> dict:
    request = urllib.request.Request(
        f"{cfg.url}{path}", method=method, data=json.dumps(body).encode() if body is not None else None,
        headers={"Content-Type": "application/json", **({"Authorization": f"Bearer {token}"} if token else {})},
    )
    try:
        with urllib.request.urlopen(request, timeout=30) as resp:
            return json.loads(resp.read() or b"{}")
    except urllib.error.HTTPError as exc:
        raise ServiceError(f"{method} {cfg.url}{path} answered {exc.code}: {exc.read()[:500]!r}") from None
    except (urllib.error.URLError, OSError) as exc:
        raise ServiceError(f"the Airflow API at {cfg.url} did not answer ({exc}); is it running? "
                           "(`python -m ml airflow status`)") from None
