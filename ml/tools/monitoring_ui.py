"""Evidently's UI on the monitoring workspace, as a local background service: start, status, stop.

`start` runs `evidently ui` on the workspace that the drift and realized-performance checks write
(ml/monitoring/workspace.py) in a session of its own, waits until it answers HTTP and returns its
address. Its log and a state file that records the process live in `<TIDEMARK_HOME>/monitoring-ui/`,
beside the workspace, so that `stop` ends exactly what `start` started.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Callable

from ml.core.errors import TidemarkError
from ml.core.settings import Settings
from ml.monitoring.workspace import monitoring_workspace
from ml.tools.service import _alive, _port_free, _signal_group, _tail

DEFAULT_HOST = "127.0.0.1"
DEFAULT_PORT = 8085
STATE_DIR = "monitoring-ui"


class MonitoringUIError(TidemarkError, RuntimeError):
    """The monitoring UI could not be started or stopped; the message says why and where its log is."""


def ui_dir(settings: Settings) -> Path:
    """Where the UI's state file and log are kept: beside the workspace."""
    return settings.home / STATE_DIR


def read_state(settings: Settings) -> dict | None:
    """What `start` recorded (pid, url, workspace, log), or None."""
    path = ui_dir(settings) / "state.json"
    try:
        return json.loads(path.read_text())
    except (FileNotFoundError, ValueError):
        return None


def projects(url: str, timeout: float = 5.0) -> list[dict] | None:
    """The workspace's projects as the UI serves them, each with its snapshot count and dashboard address;
    None while the UI does not answer."""
    found = _get(f"{url}/api/projects", timeout)
    if found is None:
        return None
    listed = []
    for project in found:
        snapshots = _get(f"{url}/api/projects/{project['id']}/snapshots", timeout) or []
        listed.append({"name": project["name"], "id": project["id"], "snapshots": len(snapshots),
                       "dashboard": f"{url}/projects/{project['id']}"})
    return sorted(listed, key=lambda p: p["name"])


def status(settings: Settings) -> dict | None:
    """The recorded UI with whether its process runs and its projects (None where it does not answer)."""
    state = read_state(settings)
    if state is None:
        return None
    running = _alive(state["pid"])
    return {**state, "running": running, "projects": projects(state["url"]) if running else None}


def start(settings: Settings, *, host: str = DEFAULT_HOST, port: int = DEFAULT_PORT, wait_s: float = 90.0,
          progress: Callable[[str], None] = print) -> dict:
    """Start `evidently ui` on the settings' workspace in the background and wait until it answers.

    Returns the recorded state (pid, url, workspace, log, seconds to start); `already` is True when a UI
    started here earlier still runs, which is then left as it is.
    """
    workspace = monitoring_workspace(settings)
    state = read_state(settings)
    if state and _alive(state["pid"]):
        return {**state, "already": True}
    if not _port_free(host, port):
        raise MonitoringUIError(f"port {port} on {host} is taken; pass another with --port")
    folder = ui_dir(settings)
    folder.mkdir(parents=True, exist_ok=True)
    workspace.mkdir(parents=True, exist_ok=True)
    log_path, url = folder / "ui.log", f"http://{host}:{port}"
    script = Path(sys.executable).with_name("evidently")
    command = [str(script)] if script.exists() else [sys.executable, "-m", "evidently.cli"]
    argv = [*command, "ui", "--workspace", str(workspace), "--host", host, "--port", str(port)]
    started = time.perf_counter()
    with open(log_path, "ab") as log_fh:
        proc = subprocess.Popen(argv, env={**os.environ, "DO_NOT_TRACK": "1"}, stdout=log_fh, stderr=subprocess.STDOUT,
                                stdin=subprocess.DEVNULL, start_new_session=True, cwd=folder)
    state = {"pid": proc.pid, "url": url, "workspace": str(workspace), "log": str(log_path)}
    (folder / "state.json").write_text(json.dumps(state, indent=2))
    progress(f"started evidently ui (pid {proc.pid}, log {log_path})")
    try:
        _wait_answering(proc.pid, url, log_path, wait_s)
    except BaseException:
        stop(settings, progress=progress)
        raise
    return {**state, "already": False, "seconds": round(time.perf_counter() - started, 1)}


def stop(settings: Settings, *, grace_s: float = 10.0, progress: Callable[[str], None] = print) -> bool:
    """Stop the UI that `start` recorded: SIGTERM to its process group, SIGKILL after the grace period.

    Returns whether there was one to stop.
    """
    state = read_state(settings)
    if state is None:
        progress(f"nothing to stop: no monitoring UI started from {settings.home} is recorded")
        return False
    pid = state["pid"]
    _signal_group(pid, signal.SIGTERM)
    deadline = time.monotonic() + grace_s
    while time.monotonic() < deadline and _alive(pid):
        time.sleep(0.2)
    if _alive(pid):
        _signal_group(pid, signal.SIGKILL)
        progress(f"killed evidently ui (pid {pid}): it did not stop within {grace_s:.0f} s")
    else:
        progress(f"stopped evidently ui (pid {pid}) at {state['url']}")
    (ui_dir(settings) / "state.json").unlink(missing_ok=True)
    return True


def _wait_answering(pid: int, url: str, log_path: Path, wait_s: float) -> None:
    deadline = time.monotonic() + wait_s
    while time.monotonic() < deadline:
        if not _alive(pid):
            raise MonitoringUIError(f"evidently ui exited during start-up (log {log_path}):\n{_tail(str(log_path))}")
        version = _get(f"{url}/api/version", timeout=2.0)
        if version and version.get("application") == "Evidently UI":
            return
        time.sleep(0.5)
    raise MonitoringUIError(f"evidently ui did not answer at {url} within {wait_s:.0f} s; see {log_path}")


def _get(url: str, timeout: float):
    try:
        with urllib.request.urlopen(url, timeout=timeout) as resp:
            return json.loads(resp.read())
    except (urllib.error.URLError, OSError, ValueError):
        return None
