"""Typed, frozen settings built from environment variables when asked."""

from __future__ import annotations

import dataclasses
import json
import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Literal, Mapping
from urllib.parse import unquote, urlsplit, urlunsplit

from ml.core.errors import TidemarkError

REPO_ROOT = Path(__file__).resolve().parents[2]

WAREHOUSE_EXAMPLES = (
    "duckdb:///var/warehouse.duckdb (relative to the repo), "
    "duckdb:////abs/path/warehouse.duckdb, postgresql://postgres@127.0.0.1:5432/tidemark, "
    "spark://local[2] (Spark in this process) or spark://host:7077 (a standalone cluster)"
)
# The Airflow connection through which Cosmos gives dbt a PostgreSQL warehouse (see Settings.airflow_env).
WAREHOUSE_CONN_ID = "tidemark_warehouse"
WAREHOUSE_CONN_VARIABLE = f"AIRFLOW_CONN_{WAREHOUSE_CONN_ID.upper()}"  # where Airflow looks it up
# Every schema the pipeline writes in the warehouse: raw tables (ml/ingest), the dbt layers, ml's tables.
PIPELINE_SCHEMAS = ("raw", "staging", "intermediate", "marts", "ml")
# The folder of a user's own model specs, relative to the repository, when TIDEMARK_SPECS_DIR is not set.
USER_SPECS = "specs"
# DuckDB's own default memory limit; TIDEMARK_DUCKDB_MEMORY_LIMIT replaces it.
DUCKDB_DEFAULT_MEMORY_LIMIT = "80%"
# libpq options of every PostgreSQL session that dbt and ml/ open: JIT compilation costs more than it
# saves on the pipeline's queries (bench/bench_features.py --warehouse postgres measures both).
POSTGRES_OPTIONS = "-c jit=off"
_MEMORY_LIMIT = re.compile(r"^\s*\d+(\.\d+)?\s*(%|[KMGT]i?B)\s*$", re.IGNORECASE)


class SettingsError(TidemarkError, ValueError):
    """A setting is missing or malformed; the message names the variable."""


@dataclass(frozen=True)
class WarehouseTarget:
    """Where the warehouse lives: a DuckDB file, a PostgreSQL database or a Spark catalog."""

    kind: Literal["duckdb", "postgres", "spark"]
    url: str
    path: Path | None = None
    host: str = ""
    port: int = 5432
    user: str = ""
    password: str = ""
    database: str = ""
    # DuckDB only: its memory limit (a size such as 6GB, or a share of RAM such as 80%) and where it
    # spills what does not fit (None: DuckDB's own, the database file's path plus `.tmp`).
    memory_limit: str = DUCKDB_DEFAULT_MEMORY_LIMIT
    temp_directory: Path | None = None
    # Spark only: the master (local[2], spark://host:7077, yarn, ...), the folder of the catalog (its
    # tables' files and the embedded metastore, unless spark_conf names others) and more Spark settings.
    master: str = ""
    spark_dir: Path | None = None
    spark_conf: tuple[tuple[str, str], ...] = ()

    @property
    def dbt_target(self) -> str:
        return self.kind

    @property
    def duckdb_config(self) -> dict[str, str]:
        """The settings each DuckDB connection opens with, from dbt and from ml/ alike."""
        return {"memory_limit": self.memory_limit, "temp_directory": str(self.spill_directory)}

    @property
    def spill_directory(self) -> Path:
        return self.temp_directory or self.path.with_name(self.path.name + ".tmp")

    def dsn(self) -> str:
        """libpq connection string (PostgreSQL only)."""
        parts = [f"host={self.host}", f"port={self.port}", f"dbname={self.database}", f"user={self.user}",
                 f"options='{POSTGRES_OPTIONS}'"]
        if self.password:
            parts.append(f"password={self.password}")
        return " ".join(parts)


def parse_warehouse_url(url: str, *, variable: str = "TIDEMARK_WAREHOUSE_URL") -> WarehouseTarget:
    """Parse a warehouse URL, naming `variable` and a valid example on any error."""
    url = url.strip()
    if url.startswith("duckdb:///"):
        raw = url[len("duckdb:///"):]
        if not raw or raw.endswith("/"):
            raise SettingsError(f"{variable}={url!r} has no database file. Valid examples: {WAREHOUSE_EXAMPLES}")
        path = Path(raw) if raw.startswith("/") else REPO_ROOT / raw
        return WarehouseTarget(kind="duckdb", url=url, path=path)
    if url.startswith(("postgresql://", "postgres://")):
        parts = urlsplit(url)
        database = parts.path.lstrip("/")
        if not parts.hostname or not database:
            raise SettingsError(
                f"{variable}={url!r} needs a host and a database name. Valid examples: {WAREHOUSE_EXAMPLES}"
            )
        try:
            port = parts.port or 5432
        except ValueError as exc:
            raise SettingsError(f"{variable}={url!r} has a bad port ({exc}). Valid examples: {WAREHOUSE_EXAMPLES}")
        return WarehouseTarget(
            kind="postgres",
            url=url,
            host=parts.hostname,
            port=port,
            user=unquote(parts.username or "postgres"),
            password=unquote(parts.password or ""),
            database=database,
        )
    if url.startswith("spark://"):
        rest = url[len("spark://"):]
        if rest.startswith("local"):
            if not re.fullmatch(r"local(\[(\d+|\*)\])?", rest):
                raise SettingsError(f"{variable}={url!r}: a local Spark is spark://local[N] (N cores) or "
                                    f"spark://local[*]. Valid examples: {WAREHOUSE_EXAMPLES}")
            return WarehouseTarget(kind="spark", url=url, master=rest)
        try:
            parts = urlsplit(url)
            host, port = parts.hostname, parts.port or 7077
        except ValueError as exc:
            raise SettingsError(f"{variable}={url!r}: give a standalone master as spark://host:7077 ({exc}). "
                                f"Valid examples: {WAREHOUSE_EXAMPLES}") from None
        if not host or parts.path.strip("/"):
            raise SettingsError(f"{variable}={url!r}: give a standalone master as spark://host:7077. "
                                f"Valid examples: {WAREHOUSE_EXAMPLES}")
        return WarehouseTarget(kind="spark", url=url, master=f"spark://{host}:{port}")
    raise SettingsError(f"{variable}={url!r} is not a supported warehouse URL. Valid examples: {WAREHOUSE_EXAMPLES}")


def _with_duckdb_settings(target: WarehouseTarget, env: Mapping[str, str]) -> WarehouseTarget:
    """The target with TIDEMARK_DUCKDB_MEMORY_LIMIT and TIDEMARK_DUCKDB_TEMP_DIR applied (DuckDB only)."""
    limit = env.get("TIDEMARK_DUCKDB_MEMORY_LIMIT", "").strip() or DUCKDB_DEFAULT_MEMORY_LIMIT
    if not _MEMORY_LIMIT.match(limit):
        raise SettingsError(f"TIDEMARK_DUCKDB_MEMORY_LIMIT={limit!r} is not a size: give e.g. 6GB, 512MB or 80% "
                            f"(a share of this machine's memory; default {DUCKDB_DEFAULT_MEMORY_LIMIT})")
    temp = env.get("TIDEMARK_DUCKDB_TEMP_DIR", "").strip()
    if target.kind != "duckdb":
        return target
    temp_directory = None
    if temp:
        temp_directory = Path(temp) if Path(temp).is_absolute() else REPO_ROOT / temp
    return dataclasses.replace(target, memory_limit=limit.replace(" ", ""), temp_directory=temp_directory)


def _with_spark_settings(target: WarehouseTarget, env: Mapping[str, str], home: Path) -> WarehouseTarget:
    """The target with TIDEMARK_SPARK_DIR and TIDEMARK_SPARK_CONF applied (Spark only).

    TIDEMARK_SPARK_CONF holds more Spark settings as `key=value` pairs separated by commas or new lines,
    e.g. `spark.executor.memory=4g,spark.sql.shuffle.partitions=64`.
    """
    if target.kind != "spark":
        return target
    folder = env.get("TIDEMARK_SPARK_DIR", "").strip()
    pairs = []
    for item in re.split(r"[,\n]", env.get("TIDEMARK_SPARK_CONF", "")):
        if not item.strip():
            continue
        key, sep, value = item.partition("=")
        if not sep or not key.strip().startswith("spark.") or not value.strip():
            raise SettingsError(f"TIDEMARK_SPARK_CONF: {item.strip()!r} is not a Spark setting; give key=value pairs "
                                "separated by commas, e.g. spark.executor.memory=4g,spark.sql.shuffle.partitions=64")
        pairs.append((key.strip(), value.strip()))
    return dataclasses.replace(target, spark_dir=_absolute(Path(folder)) if folder else home / "spark",
                               spark_conf=tuple(pairs))


def redacted_url(url: str) -> str:
    """A URL with its password replaced by ***, for summaries and logs. One without user info is returned as
    it is (urlsplit refuses `spark://local[2]`: its brackets are not an IPv6 host)."""
    if "@" not in url:
        return url
    parts = urlsplit(url)
    userinfo, _, host = parts.netloc.rpartition("@")
    if ":" not in userinfo:
        return url
    return urlunsplit(parts._replace(netloc=f"{userinfo.partition(':')[0]}:***@{host}"))


@dataclass(frozen=True)
class Settings:
    """Everything the pipeline needs to know about where things live."""

    home: Path
    warehouse: WarehouseTarget
    registry_uri: str = ""
    s3_endpoint_url: str | None = None
    repo_root: Path = REPO_ROOT
    # The spec that commands use when given no --spec: a name (see specs_dir) or a path.
    model_spec: str = "churn"
    # The folder of the user's own specs (default: specs/ in the repository), read before ml/specs/, which
    # holds the shipped ones; a user's spec replaces a shipped one of its name.
    specs_dir: Path | None = None
    # The served specs that get DAGs, by name; None: every spec marked `served: true`.
    served_models: tuple[str, ...] | None = None
    # The Celery queue of the tasks that can use a GPU; executors without queues ignore it.
    gpu_queue: str = "gpu"
    # Who the registry history records for manual promotions and rollbacks.
    actor: str = "cli"
    # The name of the worker that runs a task (set per Celery worker); empty: the host name.
    worker_name: str = ""
    # Tests only: where the two public CSVs are; None: ../shared/data beside the repository.
    public_data: Path | None = None
    # Tests only: seconds that publishing scores waits inside its transaction, so a test can kill it there.
    publish_pause_s: float = 0.0
    # Ed25519 private key (PEM) that signs each published manifest; None: manifests are not signed.
    signing_key: Path | None = None
    # Ed25519 public key (PEM); when set, a version whose manifest signature is missing or wrong is refused.
    verify_key: Path | None = None
    # The simulated clock's pace: a scheduled ingest_raw run loads the next simulated day this often.
    sim_day_seconds: float = 60.0

    def __post_init__(self) -> None:
        if not self.registry_uri:  # the embedded default: a directory under home
            object.__setattr__(self, "registry_uri", (self.home / "registry").as_uri())

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> "Settings":
        env = os.environ if env is None else env
        home_raw = env.get("TIDEMARK_HOME", "").strip()
        home = Path(home_raw) if home_raw else REPO_ROOT / "var"
        if not home.is_absolute():
            home = REPO_ROOT / home
        url = env.get("TIDEMARK_WAREHOUSE_URL", "").strip() or f"duckdb:///{home / 'warehouse.duckdb'}"
        registry = env.get("TIDEMARK_REGISTRY_URI", "").strip() or (home / "registry").as_uri()
        if not registry.startswith(("file:///", "s3://")):
            raise SettingsError(
                f"TIDEMARK_REGISTRY_URI={registry!r} is not supported. "
                "Valid examples: file:///abs/path/registry, s3://bucket/prefix"
            )
        endpoint = env.get("TIDEMARK_S3_ENDPOINT_URL", "").strip() or None
        public = env.get("TIDEMARK_PUBLIC_DATA", "").strip()
        pause = env.get("TIDEMARK_TEST_PAUSE_IN_PUBLISH", "").strip() or "0"
        signing_key = env.get("TIDEMARK_SIGNING_KEY", "").strip()
        verify_key = env.get("TIDEMARK_VERIFY_KEY", "").strip()
        try:
            pause_s = float(pause)
        except ValueError:
            raise SettingsError(f"TIDEMARK_TEST_PAUSE_IN_PUBLISH={pause!r} is not a number of seconds") from None
        specs_dir = env.get("TIDEMARK_SPECS_DIR", "").strip()
        served = env.get("TIDEMARK_SERVED_MODELS", "").strip()
        served_models = tuple(name.strip() for name in served.split(",") if name.strip()) if served else None
        pace = env.get("TIDEMARK_SIM_DAY_SECONDS", "").strip() or "60"
        try:
            sim_day_seconds = float(pace)
        except ValueError:
            sim_day_seconds = 0.0
        if not 1 <= sim_day_seconds < float("inf"):
            raise SettingsError(f"TIDEMARK_SIM_DAY_SECONDS={pace!r}: give the seconds between simulated days, "
                                "at least 1 (default 60: one simulated day a minute)")
        return cls(
            home=home, warehouse=_with_spark_settings(_with_duckdb_settings(parse_warehouse_url(url), env), env, home),
            registry_uri=registry, s3_endpoint_url=endpoint,
            model_spec=env.get("TIDEMARK_MODEL_SPEC", "").strip() or "churn",
            specs_dir=_absolute(Path(specs_dir)) if specs_dir else REPO_ROOT / USER_SPECS,
            served_models=served_models,
            gpu_queue=env.get("TIDEMARK_GPU_QUEUE", "").strip() or "gpu",
            actor=env.get("TIDEMARK_ACTOR", "").strip() or f"cli:{_user(env)}",
            worker_name=env.get("TIDEMARK_WORKER_NAME", "").strip(),
            public_data=Path(public) if public else None,
            publish_pause_s=pause_s,
            signing_key=Path(signing_key) if signing_key else None,
            verify_key=Path(verify_key) if verify_key else None,
            sim_day_seconds=sim_day_seconds,
        )

    @property
    def dbt_project_dir(self) -> Path:
        return self.repo_root / "dbt_project"

    @property
    def dbt_manifest(self) -> Path:
        return self.dbt_project_dir / "target" / "manifest.json"

    @property
    def airflow_home(self) -> Path:
        return self.home / "airflow"

    def dbt_env(self, *, secrets: bool = True) -> dict[str, str]:
        """Environment variables that dbt's profiles.yml reads, derived from the one warehouse URL.

        `secrets=False` leaves out the warehouse password, for places that store what they are given
        (an operator's arguments end up in the serialized DAG).
        """
        wh = self.warehouse
        env = {
            "TIDEMARK_DBT_TARGET": wh.dbt_target,
            "DBT_SEND_ANONYMOUS_USAGE_STATS": "false",
            "DO_NOT_TRACK": "1",
            "DBT_PROFILES_DIR": str(self.dbt_project_dir),
        }
        if wh.kind == "duckdb":
            env["TIDEMARK_DUCKDB_PATH"] = str(wh.path)
            env["TIDEMARK_DUCKDB_MEMORY_LIMIT"] = wh.memory_limit
            env["TIDEMARK_DUCKDB_TEMP_DIR"] = str(wh.spill_directory)
        elif wh.kind == "spark":
            # dbt-spark's session method starts Spark with the settings in SPARK_CONF_DIR (ml/core/spark.py).
            from ml.core.spark import write_conf

            env["SPARK_CONF_DIR"] = str(write_conf(wh))
        else:
            # dbt's sessions: libpq reads PGOPTIONS (see POSTGRES_OPTIONS).
            env["PGOPTIONS"] = POSTGRES_OPTIONS
            env.update(
                TIDEMARK_PG_HOST=wh.host,
                TIDEMARK_PG_PORT=str(wh.port),
                TIDEMARK_PG_USER=wh.user,
                TIDEMARK_PG_DATABASE=wh.database,
            )
            if secrets:
                env["TIDEMARK_PG_PASSWORD"] = wh.password
        return env

    def airflow_env(self) -> dict[str, str]:
        """Environment for Airflow: state under TIDEMARK_HOME, the repo's dags/, no examples, no telemetry,
        and a PostgreSQL warehouse as the connection WAREHOUSE_CONN_ID, which Cosmos hands to dbt at run time."""
        airflow_home, wh = self.airflow_home, self.warehouse
        connection = {}
        if wh.kind == "spark":  # the tasks' Spark sessions open the same catalog with the same settings
            connection["TIDEMARK_SPARK_DIR"] = str(wh.spark_dir)
            if wh.spark_conf:
                connection["TIDEMARK_SPARK_CONF"] = ",".join(f"{k}={v}" for k, v in wh.spark_conf)
        if wh.kind == "postgres":
            connection[WAREHOUSE_CONN_VARIABLE] = json.dumps({
                "conn_type": "postgres", "host": wh.host, "port": wh.port, "login": wh.user,
                "password": wh.password, "schema": wh.database,
            })
        return {
            "AIRFLOW_HOME": str(airflow_home),
            "AIRFLOW__CORE__DAGS_FOLDER": str(self.repo_root / "dags"),
            # The DAGs import the `ml` package from the repository root.
            "PYTHONPATH": str(self.repo_root),
            "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
            "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": f"sqlite:///{airflow_home / 'airflow.db'}",
            "AIRFLOW__CORE__UNIT_TEST_MODE": "False",
            "AIRFLOW__LOGGING__BASE_LOG_FOLDER": str(airflow_home / "logs"),
            "AIRFLOW__COSMOS__ENABLE_TELEMETRY": "False",
            "AIRFLOW__COSMOS__CACHE_DIR": str(self.home / "cosmos_cache"),
            "SCARF_ANALYTICS": "false",
            "AIRFLOW__USAGE_DATA_COLLECTION__ENABLED": "False",
            "TIDEMARK_HOME": str(self.home),
            "TIDEMARK_WAREHOUSE_URL": self.warehouse.url,
            "TIDEMARK_REGISTRY_URI": self.registry_uri,
            "TIDEMARK_MODEL_SPEC": self.model_spec,
            **({"TIDEMARK_SPECS_DIR": str(self.specs_dir)} if self.specs_dir else {}),
            **({"TIDEMARK_SERVED_MODELS": ",".join(self.served_models)} if self.served_models is not None else {}),
            "TIDEMARK_GPU_QUEUE": self.gpu_queue,
            **({"TIDEMARK_S3_ENDPOINT_URL": self.s3_endpoint_url} if self.s3_endpoint_url else {}),
            **({"TIDEMARK_SIGNING_KEY": str(self.signing_key)} if self.signing_key else {}),
            **({"TIDEMARK_VERIFY_KEY": str(self.verify_key)} if self.verify_key else {}),
            **connection,
        }


def _absolute(path: Path) -> Path:
    """A path from a setting: relative ones are relative to the repository."""
    return path if path.is_absolute() else REPO_ROOT / path


def _user(env: Mapping[str, str]) -> str:
    """The login name, from the same variables `getpass.getuser` reads, else the password database."""
    for key in ("LOGNAME", "USER", "LNAME", "USERNAME"):
        if env.get(key):
            return env[key]
    import getpass

    return getpass.getuser()
