"""Evidently's UI on a monitoring workspace, driven the way an operator drives it.

The module writes a workspace of a few days of the churn model (real Evidently drift and performance
snapshots of small synthetic data, with a drift from the fourth day), starts the UI on it with
`python -m ml monitoring-ui`, checks what its API and headless Chromium show, and stops it with
`python -m ml monitoring-ui --stop`: only the process that the command started.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
import urllib.request
from datetime import date, timedelta
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from typer.testing import CliRunner

from ml.cli import app
from ml.core.settings import REPO_ROOT, Settings, parse_warehouse_url
from ml.core.spec import FeatureSchema, load_spec
from ml.monitoring.drift import _run_evidently
from ml.monitoring.workspace import add_drift_snapshot, add_performance_snapshot, project_id
from ml.tools.monitoring_ui import read_state
from ml.tools.service import _alive

CHROMIUM = Path(os.environ.get("TIDEMARK_CHROMIUM", "/usr/bin/chromium"))
SCREENSHOTS = REPO_ROOT / "var" / "screenshots"
DAYS = [date(2025, 3, 1) + timedelta(days=i) for i in range(6)]
DRIFT_FROM = DAYS[3]
COLUMNS = FeatureSchema(("monthly_price", "amount_paid_90d", "score"), ("plan_code", "region"))


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _get(url: str):
    with urllib.request.urlopen(url, timeout=10) as resp:
        return json.loads(resp.read())


def _frame(rng: np.random.Generator, n: int, drifted: bool) -> pd.DataFrame:
    price = 25.0 if drifted else 20.0
    return pd.DataFrame({"monthly_price": rng.normal(price, 4, n), "amount_paid_90d": rng.normal(3 * price, 10, n),
                         "score": rng.beta(3 if drifted else 2, 8, n), "plan_code": rng.choice(["basic", "plus"], n),
                         "region": rng.choice(["north", "south", "east"], n)})


def _write_day(spec, settings: Settings, day: date, rng: np.random.Generator, reference: pd.DataFrame,
               version: str = "v0001") -> None:
    """A day's drift snapshot and realized-performance snapshot, as the monitoring steps write them."""
    current = _frame(rng, 600, day >= DRIFT_FROM)
    add_drift_snapshot(spec, settings, day, _run_evidently(current, reference, COLUMNS, 0.1, day), model_version=version)
    y = rng.integers(0, 2, 600)
    p = np.clip((0.4 if day < DRIFT_FROM else 0.2) * y + 0.6 * rng.random(600), 0, 1)
    add_performance_snapshot(spec, settings, day, version, y, p, 0.4)


def _cli(env: dict, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "ml", "monitoring-ui", *args], env=env, cwd=REPO_ROOT,
                          capture_output=True, text=True, timeout=180)


@pytest.fixture(scope="module")
def ui(tmp_path_factory):
    home = tmp_path_factory.mktemp("monitoring-ui")
    settings = Settings(home=home, warehouse=parse_warehouse_url(f"duckdb:///{home / 'warehouse.duckdb'}"))
    spec, rng = load_spec("churn"), np.random.default_rng(17)
    reference = _frame(rng, 2_000, drifted=False)
    for day in DAYS:
        _write_day(spec, settings, day, rng, reference)
    env = {**os.environ, "TIDEMARK_HOME": str(home)}
    started = _cli(env, "--port", str(_free_port()))
    assert started.returncode == 0, started.stderr[-3000:]
    state = read_state(settings)
    try:
        yield {"url": started.stdout.strip(), "output": started.stderr, "env": env, "settings": settings,
               "spec": spec, "rng": rng, "reference": reference, "pid": state["pid"]}
    finally:
        _cli(env, "--stop")


def _snapshots(url: str) -> list[dict]:
    return _get(f"{url}/api/projects/{project_id('churn')}/snapshots")


def test_start_prints_the_address_and_the_ui_serves_each_day_of_the_model(ui):
    assert ui["url"].startswith("http://127.0.0.1:")
    assert f"churn: {2 * len(DAYS)} snapshots, dashboard {ui['url']}/projects/{project_id('churn')}" in ui["output"]
    assert [p["name"] for p in _get(f"{ui['url']}/api/projects")] == ["churn"]
    snapshots = _snapshots(ui["url"])
    for kind in ("drift", "performance"):
        stamped = sorted(s["timestamp"] for s in snapshots if s["metadata"]["kind"] == kind)
        assert stamped == [f"{day.isoformat()}T00:00:00" for day in DAYS], kind


def test_the_running_ui_shows_a_new_day_and_a_rerun_day_without_a_restart(ui):
    before = len(_snapshots(ui["url"]))
    _write_day(ui["spec"], ui["settings"], DAYS[-1] + timedelta(days=1), ui["rng"], ui["reference"])
    _write_day(ui["spec"], ui["settings"], DAYS[0], ui["rng"], ui["reference"], version="v0002")
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        snapshots = _snapshots(ui["url"])
        versions = {s["metadata"]["model_version"] for s in snapshots if s["metadata"]["as_of_date"] == "2025-03-01"}
        if len(snapshots) == before + 2 and versions == {"v0002"}:
            break
        time.sleep(0.5)
    assert len(snapshots) == before + 2 and versions == {"v0002"}, (len(snapshots), before, versions)


def test_a_second_start_leaves_the_running_ui_and_status_lists_its_projects(ui):
    again = _cli(ui["env"], "--port", str(_free_port()))
    assert again.returncode == 0 and again.stdout.strip() == ui["url"], again.stderr
    assert "already running" in again.stderr
    shown = _cli(ui["env"], "--status")
    assert shown.returncode == 0 and f"pid {ui['pid']}" in shown.stderr and "running" in shown.stderr, shown.stderr
    assert "churn: " in shown.stderr


@pytest.mark.skipif(not CHROMIUM.exists(), reason=f"no Chromium at {CHROMIUM}: `make test-server` installs "
                                                  "Debian's chromium; or set TIDEMARK_CHROMIUM")
def test_ui_in_headless_chromium_shows_the_models_dashboard_and_its_days(ui):
    from playwright.sync_api import sync_playwright

    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    flags = ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run", "--disable-background-networking",
             "--disable-component-update", "--disable-sync", "--disable-dev-shm-usage"]
    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=str(CHROMIUM), headless=True, args=flags)
        page = browser.new_page(viewport={"width": 1600, "height": 1000})
        try:
            page.goto(ui["url"], wait_until="networkidle")
            page.get_by_text("churn", exact=True).first.click()
            page.wait_for_url(f"**/projects/{project_id('churn')}**", timeout=30_000)
            for title in ("Dataset drift: share of drifted columns", "Drifted columns", "Realized ROC AUC"):
                page.get_by_text(title, exact=True).first.wait_for(timeout=30_000)
            page.get_by_text("2025-03-01 00:00:00").first.wait_for(timeout=30_000)  # the first day on an axis
            page.wait_for_load_state("networkidle")
            page.screenshot(path=str(SCREENSHOTS / "monitoring_ui_dashboard.png"), full_page=True)

            page.goto(f"{ui['url']}/projects/{project_id('churn')}/reports", wait_until="networkidle")
            page.get_by_text("churn drift 2025-03-06 (v0001)").first.wait_for(timeout=30_000)
            page.screenshot(path=str(SCREENSHOTS / "monitoring_ui_reports.png"), full_page=True)
        except Exception:
            page.screenshot(path=str(SCREENSHOTS / "monitoring_ui_failure.png"), full_page=True)
            raise
        finally:
            browser.close()
    for name in ("monitoring_ui_dashboard.png", "monitoring_ui_reports.png"):
        assert (SCREENSHOTS / name).stat().st_size > 10_000, name


def test_stop_ends_the_ui_that_start_started(ui):
    stopped = _cli(ui["env"], "--stop")
    assert stopped.returncode == 0 and f"stopped evidently ui (pid {ui['pid']})" in stopped.stderr, stopped.stderr
    assert not _alive(ui["pid"]) and read_state(ui["settings"]) is None
    with pytest.raises(OSError):
        _get(f"{ui['url']}/api/version")


def test_the_demo_ui_without_a_demo_says_to_run_the_demo_first(tmp_path, monkeypatch):
    monkeypatch.setenv("TIDEMARK_HOME", str(tmp_path))
    result = CliRunner().invoke(app, ["monitoring-ui", "--demo"])
    assert result.exit_code == 2 and "Traceback" not in result.output
    assert "run `make demo` first" in result.output, result.output
    assert not (tmp_path / "demo").exists()
