"""A Spark standalone cluster on this machine: one master and one worker, each a JVM process of its own.

Started with the `spark-class` script that ships in the pyspark package (its folder is SPARK_HOME),
so the cluster runs the same Spark version as the driver. Both bind to 127.0.0.1 on free ports. The
worker starts the applications' executors as its own child processes; stopping the worker's and the
master's process groups ends those too. Used by the Spark tests, and by anyone who wants a real
cluster (`spark://127.0.0.1:<port>` as TIDEMARK_WAREHOUSE_URL) without installing Spark.

The executors run their Python workers with the interpreter that the driver had in PYSPARK_PYTHON
when its session started (`python3` when unset), so a driver sets it to its own interpreter.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import time
import urllib.request
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterator

from ml.core.errors import TidemarkError
from ml.core.spark import SparkUnavailable, require_java

_HOST = "127.0.0.1"
# Each daemon's own heap; the executors get the worker's `memory`, not this.
_DAEMON_MEMORY = "512m"


class SparkClusterError(TidemarkError, RuntimeError):
    """The local standalone cluster did not start; the message says which process and shows its log."""


@dataclass(frozen=True)
class StandaloneCluster:
    """A running cluster: the URL that drivers connect to, the master's web UI (its JSON at `state`), and the
    pids of the master's and the worker's JVMs, each the leader of a process group that holds its children."""

    master: str
    web_ui: str
    pids: tuple[int, ...] = ()

    def state(self) -> dict:
        """The master's view of the cluster: its workers, running and completed applications."""
        return _master_state(self.web_ui)


def spark_home() -> Path:
    """The pyspark package's folder, which holds Spark's jars and its bin/ scripts."""
    try:
        import pyspark
    except ImportError:
        raise SparkUnavailable("a Spark cluster needs pyspark: run `make install-spark`") from None
    return Path(pyspark.__file__).parent


@contextmanager
def standalone_cluster(folder: Path, *, cores: int = 2, memory: str = "2g",
                       timeout: float = 120.0) -> Iterator[StandaloneCluster]:
    """Start a master and a worker (`cores` cores, `memory` for executors, its work dir in `folder`);
    yields the cluster once the worker has registered, and stops both processes and their executors on exit."""
    require_java()
    home = spark_home()
    folder = Path(folder)
    (folder / "conf").mkdir(parents=True, exist_ok=True)
    (folder / "logs").mkdir(exist_ok=True)
    env = {**os.environ, "SPARK_HOME": str(home), "SPARK_CONF_DIR": str(folder / "conf"),
           "SPARK_LOCAL_IP": _HOST, "SPARK_DAEMON_MEMORY": _DAEMON_MEMORY}
    port, ui_port, worker_ui_port = _free_ports(3)
    master, web_ui = f"spark://{_HOST}:{port}", f"http://{_HOST}:{ui_port}"
    started: list[tuple[str, subprocess.Popen, Path]] = []
    try:
        started.append(_start("master", home, folder, env, "org.apache.spark.deploy.master.Master",
                              "--host", _HOST, "--port", str(port), "--webui-port", str(ui_port)))
        _wait(web_ui, started, timeout, lambda state: state.get("status") == "ALIVE", "answer")
        started.append(_start("worker", home, folder, env, "org.apache.spark.deploy.worker.Worker",
                              "--host", _HOST, "--cores", str(cores), "--memory", memory,
                              "--work-dir", str(folder / "work"), "--webui-port", str(worker_ui_port), master))
        _wait(web_ui, started, timeout, lambda state: state.get("aliveworkers", 0) >= 1, "register its worker")
        yield StandaloneCluster(master, web_ui, tuple(proc.pid for _, proc, _ in started))
    finally:
        _stop([proc for _, proc, _ in reversed(started)])  # the worker first: it ends its executors


def _free_ports(count: int) -> list[int]:
    sockets = [socket.socket() for _ in range(count)]
    try:
        for sock in sockets:
            sock.bind((_HOST, 0))
        return [sock.getsockname()[1] for sock in sockets]
    finally:
        for sock in sockets:
            sock.close()


def _start(name: str, home: Path, folder: Path, env: dict[str, str], *argv: str) -> tuple[str, subprocess.Popen, Path]:
    log = folder / "logs" / f"{name}.log"
    with open(log, "ab") as out:
        # spark-class execs the JVM, so the pid is the JVM's; a session of its own groups its children with it.
        proc = subprocess.Popen([str(home / "bin" / "spark-class"), *argv], env=env, cwd=folder, stdout=out,
                                stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, start_new_session=True)
    return name, proc, log


def _master_state(web_ui: str) -> dict:
    with urllib.request.urlopen(f"{web_ui}/json/", timeout=5) as answer:
        return json.loads(answer.read())


def _wait(web_ui: str, started: list[tuple[str, subprocess.Popen, Path]], timeout: float,
          ready: Callable[[dict], bool], what: str) -> None:
    """Poll the master's JSON until `ready(state)`; SparkClusterError when a process exits or time runs out."""
    deadline = time.monotonic() + timeout
    while True:
        for name, proc, log in started:
            if proc.poll() is not None:
                raise SparkClusterError(f"the Spark {name} exited with code {proc.returncode} during start-up; "
                                        f"the end of its log {log}:\n{_tail(log)}")
        try:
            if ready(_master_state(web_ui)):
                return
        except OSError:  # not listening yet
            pass
        if time.monotonic() > deadline:
            name, _, log = started[-1]
            raise SparkClusterError(f"the Spark master at {web_ui} did not {what} within {timeout:.0f}s; "
                                    f"the end of the {name}'s log {log}:\n{_tail(log)}")
        time.sleep(0.5)


def _stop(procs: list[subprocess.Popen], grace_s: float = 20.0) -> None:
    """SIGTERM each process's group, then SIGKILL whatever of it is left after `grace_s`."""
    for proc in procs:
        _signal_group(proc.pid, signal.SIGTERM)
    deadline = time.monotonic() + grace_s
    for proc in procs:
        try:
            proc.wait(timeout=max(0.1, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            pass
        _signal_group(proc.pid, signal.SIGKILL)  # the JVM, if it hung, and any child that outlived it
        proc.wait()


def _signal_group(pgid: int, sig: int) -> None:
    try:
        os.killpg(pgid, sig)
    except ProcessLookupError:
        pass


def _tail(path: Path, lines: int = 30) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return ""
