"""Spark as the warehouse: the session of this process, and the settings it and dbt-spark start with.

The catalog is Spark's own (the Hive catalog built into Spark): tables are Parquet files under
`<spark_dir>/warehouse`, their names and partitions in an embedded Derby metastore under
`<spark_dir>/metastore_db`, unless TIDEMARK_SPARK_CONF points both elsewhere (a shared metastore and
object store on a real cluster). Embedded Derby admits one process at a time, like DuckDB's single
writer: a process that starts Spark holds the metastore until it calls `release` or exits, and the
warehouse tasks run one at a time (the Airflow pool).

Both starts read the same settings: this process's session from `settings_of`, a dbt process from
`<spark_dir>/conf/spark-defaults.conf` (SPARK_CONF_DIR), which `write_conf` keeps equal to them.
"""

from __future__ import annotations

import os
import shutil
import socket
import sys
from pathlib import Path
from typing import TYPE_CHECKING
from urllib.parse import urlsplit

from ml.core.errors import TidemarkError

if TYPE_CHECKING:
    from pyspark.sql import SparkSession

    from ml.core.settings import WarehouseTarget

# Shuffle partitions of a local master: Spark's default of 200 costs more to schedule than the rows do here.
_LOCAL_SHUFFLE_PARTITIONS = "8"

_session: "SparkSession | None" = None
_session_key: tuple | None = None


_NO_PYSPARK = ("TIDEMARK_WAREHOUSE_URL names Spark, but pyspark is not installed: run `make install-spark` "
               "(pyspark and dbt-spark, from requirements-spark.txt)")


class SparkUnavailable(TidemarkError, RuntimeError):
    """Spark cannot start here: pyspark or Java is missing, or the metastore is held by another process."""


def settings_of(target: "WarehouseTarget") -> dict[str, str]:
    """The Spark settings of a warehouse target, its own TIDEMARK_SPARK_CONF pairs last (they win)."""
    folder = target.spark_dir
    conf = {
        "spark.master": target.master,
        "spark.app.name": "tidemark",
        "spark.sql.catalogImplementation": "hive",
        "spark.sql.warehouse.dir": str(folder / "warehouse"),
        "spark.hadoop.javax.jdo.option.ConnectionURL": f"jdbc:derby:;databaseName={folder / 'metastore_db'};create=true",
        "spark.driver.extraJavaOptions": f"-Dderby.system.home={folder}",
        # Tables that CREATE TABLE makes without USING are Parquet files, not Hive text tables.
        "spark.sql.legacy.createHiveTableByDefault": "false",
        # INSERT OVERWRITE replaces only the partitions its rows fall in: a (model, day) is replaced alone.
        "spark.sql.sources.partitionOverwriteMode": "dynamic",
        "spark.sql.execution.arrow.pyspark.enabled": "true",
        "spark.sql.session.timeZone": "UTC",
        # dbt-spark turns ANSI mode off in its session; this process shares that session, so it does too.
        "spark.sql.ansi.enabled": "false",
        "spark.ui.showConsoleProgress": "false",
        "spark.driver.memory": "2g",
        # The embedded Derby metastore can fail a partition filter late in a long session (its direct SQL:
        # "ResultSet not open"); Spark then reads the table's partition list and filters it itself.
        "spark.sql.hive.metastorePartitionPruningFallbackOnException": "true",
    }
    if target.master.startswith("local"):
        conf["spark.sql.shuffle.partitions"] = _LOCAL_SHUFFLE_PARTITIONS
    conf.update(dict(target.spark_conf))
    return conf


def conf_dir(target: "WarehouseTarget") -> Path:
    """The SPARK_CONF_DIR of a target, holding its spark-defaults.conf (written by `write_conf`)."""
    return target.spark_dir / "conf"


# Spark's own log: warnings and errors only, on stderr (its default logs every stage at INFO).
_LOG4J = """rootLogger.level = warn
rootLogger.appenderRef.stderr.ref = console
appender.console.type = Console
appender.console.name = console
appender.console.target = SYSTEM_ERR
appender.console.layout.type = PatternLayout
appender.console.layout.pattern = %d{yy/MM/dd HH:mm:ss} %p %c{1}: %m%n%ex
logger.hive.name = org.apache.hadoop.hive
logger.hive.level = error
logger.datanucleus.name = DataNucleus
logger.datanucleus.level = error
logger.hms.name = org.apache.hadoop.hive.metastore.RetryingHMSHandler
logger.hms.level = fatal
logger.native.name = org.apache.hadoop.util.NativeCodeLoader
logger.native.level = error
"""


def write_conf(target: "WarehouseTarget") -> Path:
    """Write the target's settings as `<spark_dir>/conf/spark-defaults.conf` (atomically), with a quiet
    log4j2.properties beside it; returns the folder."""
    folder = conf_dir(target)
    folder.mkdir(parents=True, exist_ok=True)
    defaults = "".join(f"{key} {value}\n" for key, value in settings_of(target).items())
    for path, text in ((folder / "spark-defaults.conf", defaults), (folder / "log4j2.properties", _LOG4J)):
        if not path.exists() or path.read_text() != text:
            partial = path.with_name(f".{path.name}.{os.getpid()}")
            partial.write_text(text)
            partial.replace(path)
    return folder


def require_java() -> str:
    """The java that Spark will run on; SparkUnavailable saying how to install it when there is none."""
    home = os.environ.get("JAVA_HOME", "").strip()
    java = str(Path(home) / "bin" / "java") if home and (Path(home) / "bin" / "java").exists() else shutil.which("java")
    if not java:
        raise SparkUnavailable("Spark needs Java 17 or newer and none was found (no JAVA_HOME, no java on PATH). "
                               "Run `make install-spark` (it installs Debian's openjdk-17-jre-headless as root) "
                               "or install a JDK 17+ and set JAVA_HOME.")
    return java


_LOOPBACK = ("127.0.0.1", "localhost", "::1")


def _require_master(master: str) -> None:
    """A standalone master (spark://host:port) must accept connections: Spark itself retries for a minute
    and then fails with a stack trace."""
    if not master.startswith("spark://"):
        return
    parts = urlsplit(master)
    try:
        socket.create_connection((parts.hostname, parts.port), timeout=5).close()
    except OSError as exc:
        raise SparkUnavailable(f"no Spark master answers at {master} ({exc.strerror or exc}): start the cluster, "
                               "or fix TIDEMARK_WAREHOUSE_URL (spark://host:7077)") from None


def check_startable(target: "WarehouseTarget") -> None:
    """SparkUnavailable, saying what to do, when a session of `target` could not start: no pyspark, no Java, or
    a standalone master that does not answer."""
    try:
        import pyspark  # noqa: F401
    except ImportError:
        raise SparkUnavailable(_NO_PYSPARK) from None
    require_java()
    _require_master(target.master)


def session(target: "WarehouseTarget") -> "SparkSession":
    """This process's Spark session for `target`, started on first use and kept until `release`."""
    global _session, _session_key
    key = (target.master, str(target.spark_dir), target.spark_conf)
    if _session is not None and _session_key == key and _session.sparkContext._jsc is not None:
        return _session
    release()
    check_startable(target)
    from pyspark.sql import SparkSession

    conf = settings_of(target)
    os.environ["SPARK_CONF_DIR"] = str(write_conf(target))  # the JVM that starts now reads it too
    if target.master.startswith("local") or urlsplit(target.master).hostname in _LOOPBACK:
        os.environ.setdefault("SPARK_LOCAL_IP", "127.0.0.1")  # driver and executors on this machine only
    # Executors start their Python workers with the driver's PYSPARK_PYTHON as the context starts, not with
    # spark.pyspark.python: this interpreter unless either names another (the same path on every worker).
    os.environ["PYSPARK_PYTHON"] = conf.get("spark.pyspark.python") or os.environ.get("PYSPARK_PYTHON") or sys.executable
    builder = SparkSession.builder
    for name, value in conf.items():
        builder = builder.config(name, value)
    try:
        spark = builder.enableHiveSupport().getOrCreate()
        spark.sql("show databases").collect()  # opens the metastore now, so a held one fails here
    except Exception as exc:
        problem = _problem(target, exc)  # a Py4J error's text comes from the JVM: read it before release ends it
        release()
        raise SparkUnavailable(problem) from exc
    spark.sparkContext.setLogLevel("ERROR")
    if not target.master.startswith("local"):
        path = list(sys.path)
        spark.sparkContext.addPyFile(str(_package_zip(target)))
        sys.path[:] = path  # the driver imports ml from this checkout; the zip's copy is the executors' alone
    _session, _session_key = spark, key
    return spark


def _package_zip(target: "WarehouseTarget") -> Path:
    """The `ml` package as a zip for the executors' Python path: a cluster's workers do not have this checkout, and
    their Python workers import the scoring code from it. Named by its contents, so a changed package is shipped anew."""
    import hashlib
    import zipfile

    import ml

    root = Path(ml.__file__).resolve().parent
    files = sorted(p for p in root.rglob("*") if p.is_file() and "__pycache__" not in p.parts)
    digest = hashlib.sha256()
    for path in files:
        digest.update(str(path.relative_to(root.parent)).encode())
        digest.update(path.read_bytes())
    out = target.spark_dir / "cache" / f"tidemark-{digest.hexdigest()[:16]}.zip"
    if not out.exists():
        out.parent.mkdir(parents=True, exist_ok=True)
        partial = out.with_name(f".{out.name}.{os.getpid()}")
        with zipfile.ZipFile(partial, "w", zipfile.ZIP_DEFLATED) as archive:
            for path in files:
                archive.write(path, path.relative_to(root.parent))
        partial.replace(out)
    return out


def release() -> None:
    """Stop this process's Spark session and its JVM, which frees the embedded metastore for other processes."""
    global _session, _session_key
    try:
        from pyspark import SparkContext
    except ImportError:
        return
    if _session is not None:
        _session.stop()
    elif SparkContext._active_spark_context is not None:
        SparkContext._active_spark_context.stop()
    gateway = SparkContext._gateway
    if gateway is not None:
        gateway.shutdown()
        proc = getattr(gateway, "proc", None)
        if proc is not None:
            try:
                proc.stdin.close()  # the JVM exits when its parent's pipe closes
                proc.wait(timeout=30)
            except Exception:
                proc.kill()
    SparkContext._gateway = None
    SparkContext._jvm = None
    _session, _session_key = None, None


def _problem(target: "WarehouseTarget", exc: Exception) -> str:
    text = str(exc)
    if "Another instance of Derby" in text or "Failed to start database" in text or "XSDB6" in text:
        return (f"the Spark metastore {target.spark_dir / 'metastore_db'} is in use by another process (its embedded "
                "Derby admits one): wait for that process to end, or point TIDEMARK_SPARK_CONF at a shared Hive "
                "metastore (spark.hadoop.hive.metastore.uris=thrift://host:9083)")
    first = text.strip().splitlines()[0] if text.strip() else type(exc).__name__
    return f"Spark did not start on {target.master} ({first[:300]}); check TIDEMARK_WAREHOUSE_URL and that the master is up"
