"""A promotion killed at each point between its writes is completed by a retry or by `registry repair`.

The promotion runs in a child process that SIGKILLs itself right after one real registry or warehouse
call. The test process then retries the promote step (what an Airflow retry does) or runs the repair
command, and checks the registry and a real DuckDB warehouse: one decision, the alias at the right version
with an unforked history, one `ml.model_promotions` row, no temporary files left.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from typer.testing import CliRunner

from ml.cli import app
from ml.core.settings import REPO_ROOT, Settings, parse_warehouse_url
from ml.core.spec import load_spec
from ml.core.warehouse import Warehouse
from ml.registry import Registry
from ml.training.steps import promote_step

RUN_ID = "manual__2025-04-01"
KILL_POINTS = ["publish", "intent", "alias-write", "alias", "row"]

# Runs promote_step with one call wrapped so that the process dies right after it (or, for alias-write, after
# the alias's temporary file is written and before it replaces the alias).
CHILD = """
import json, os, signal, sys
import ml.training.steps as steps
from ml.core.settings import Settings
from ml.core.spec import load_spec
from ml.registry.registry import Registry
from ml.registry.stores import LocalStore

point, args = sys.argv[1], json.loads(sys.argv[2])

def kill_after(owner, name, when=lambda *a, **k: True):
    real = getattr(owner, name)
    def wrapped(*a, **k):
        out = real(*a, **k)
        if when(*a, **k):
            os.kill(os.getpid(), signal.SIGKILL)
        return out
    setattr(owner, name, wrapped)

if point == "publish":
    kill_after(Registry, "publish")
elif point == "intent":
    kill_after(Registry, "put_record", lambda self, model, kind, *a, **k: kind == "decisions")
elif point == "alias-write":
    kill_after(LocalStore, "_write_temp", lambda self, path, data: path.name == "champion.json")
elif point == "alias":
    kill_after(Registry, "set_alias")
elif point == "row":
    kill_after(steps, "record_promotion")
steps.promote_step(load_spec("churn"), Settings.from_env(), args["extract"], args["evaluation"], args["decision"],
                   run_id=args["run_id"])
"""


@pytest.fixture
def world(tmp_path, monkeypatch):
    """An empty local registry and DuckDB warehouse, and a gate decision to promote one small challenger."""
    settings = Settings(home=tmp_path, warehouse=parse_warehouse_url(f"duckdb:///{tmp_path / 'warehouse.duckdb'}"))
    for key, value in {"TIDEMARK_HOME": str(tmp_path), "TIDEMARK_WAREHOUSE_URL": settings.warehouse.url}.items():
        monkeypatch.setenv(key, value)
    monkeypatch.delenv("TIDEMARK_REGISTRY_URI", raising=False)
    with Warehouse.connect(settings):  # an empty warehouse file
        pass
    challenger = tmp_path / "runs" / "candidates" / "logistic"
    challenger.mkdir(parents=True)
    (challenger / "model.json").write_text(json.dumps({"kind": "logistic", "coef": [0.5, -1.25]}))
    (challenger / "weights.bin").write_bytes(bytes(range(256)) * 8)
    extract = {"directory": str(tmp_path / "runs" / "data"), "schema": {"numeric": ["tenure"], "categorical": []},
               "windows": {"test": {"start": "2025-03-01", "end": "2025-03-10"}}, "fingerprint": "f" * 16,
               "as_of": "2025-04-01"}
    evaluation = {
        "challenger": {"candidate": "logistic", "kind": "logistic", "directory": str(challenger), "params": {},
                       "threshold": 0.4, "test": {"roc_auc": 0.71}, "validation": {"roc_auc": 0.7},
                       "device": "cpu", "fit_seconds": 0.1},
        "champion": None, "comparison": None, "regressions": [],
    }
    decision = {"decision": "promoted", "promote": True, "reasons": ["PASS: no champion yet"]}
    return {"settings": settings, "registry": Registry.from_settings(settings), "spec": load_spec("churn"),
            "args": {"extract": extract, "evaluation": evaluation, "decision": decision, "run_id": RUN_ID}}


def _killed_at(point: str, args: dict) -> None:
    proc = subprocess.run([sys.executable, "-c", CHILD, point, json.dumps(args)], cwd=REPO_ROOT, env=os.environ,
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == -signal.SIGKILL, f"the child was not killed at {point}: {proc.stderr[-2000:]}"


def _retry(world) -> dict:
    args = world["args"]
    return promote_step(world["spec"], world["settings"], args["extract"], args["evaluation"], args["decision"],
                        run_id=args["run_id"])


def _rows(settings) -> list[tuple]:
    with Warehouse.connect(settings, read_only=True) as wh:
        if not wh.read_arrow("select count(*) as n from information_schema.tables where table_schema = 'ml' "
                             "and table_name = 'model_promotions'").to_pylist()[0]["n"]:
            return []
        rows = wh.read_arrow("select candidate_version, decision, champion_version, run_id "
                             "from ml.model_promotions").to_pylist()
    return [(r["candidate_version"], r["decision"], r["champion_version"], r["run_id"]) for r in rows]


def _temp_files(root: Path) -> list[Path]:
    return sorted(root.rglob(".tmp-*"))


def _age(paths: list[Path], seconds: float = 3600) -> None:
    for path in paths:
        os.utime(path, (time.time() - seconds, time.time() - seconds))


@pytest.mark.parametrize("point", KILL_POINTS)
def test_a_retry_completes_a_promotion_killed_at_each_point(world, point):
    registry, settings = world["registry"], world["settings"]
    _killed_at(point, world["args"])
    _age(_temp_files(settings.home / "registry"))  # what a killed writer left has been there a while

    outcome = _retry(world)
    again = _retry(world)  # a further retry changes nothing

    assert outcome == again
    assert (outcome["version"], outcome["decision"], outcome["champion_after"]) == ("v0001", "promoted", "v0001")
    assert [v.version for v in registry.versions("churn")] == ["v0001"]
    decisions = registry.records("churn", "decisions")
    assert [(d["version"], d["decision"], d["run_id"]) for d in decisions] == [("v0001", "promoted", RUN_ID)]
    alias = registry.alias("churn")
    assert alias.version == "v0001"
    assert [(h["seq"], h["from"], h["to"]) for h in alias.history] == [(1, None, "v0001")]
    assert _rows(settings) == [("v0001", "promoted", None, RUN_ID)]
    assert _temp_files(settings.home / "registry") == []


def test_repair_command_completes_a_promotion_killed_after_its_decision(world):
    registry, settings = world["registry"], world["settings"]
    _killed_at("intent", world["args"])
    assert registry.alias("churn").version is None and _rows(settings) == []

    result = CliRunner().invoke(app, ["registry", "repair", "churn"])
    assert result.exit_code == 0, result.output
    assert "churn v0001: promotion completed (promoted, champion None -> v0001)" in result.output
    assert registry.alias("churn").version == "v0001"
    assert _rows(settings) == [("v0001", "promoted", None, RUN_ID)]

    rerun = CliRunner().invoke(app, ["registry", "repair", "churn"])
    assert rerun.exit_code == 0 and "churn: nothing to repair" in rerun.output, rerun.output
    assert len(registry.alias("churn").history) == 1 and len(_rows(settings)) == 1


def test_a_promotion_overtaken_by_another_move_is_recorded_as_superseded(world, tmp_path):
    registry, settings = world["registry"], world["settings"]
    _killed_at("intent", world["args"])
    other = tmp_path / "other"
    other.mkdir()
    (other / "model.json").write_text("{}")
    manual = registry.publish("churn", other, {"candidate": "manual"}).version
    registry.promote("churn", manual, actor="ops", reason="hotfix")

    result = CliRunner().invoke(app, ["registry", "repair", "churn"])
    assert result.exit_code == 0, result.output
    alias = registry.alias("churn")
    assert alias.version == manual == "v0002"  # never moved backward
    assert [(h["from"], h["to"], h["actor"]) for h in alias.history] == [(None, "v0002", "ops")]
    assert _rows(settings) == [("v0001", "superseded", None, RUN_ID)]
    [done] = registry.records("churn", "completions")
    assert done["decision"] == "superseded" and "moved from unset to v0002" in done["reasons"][-1]


def test_repair_removes_stale_temporary_files_and_reports_unpublished_numbers(world):
    registry, settings = world["registry"], world["settings"]
    registry.store.put_if_absent("churn/versions/v0001/.claim", b"{}")
    folder = settings.home / "registry" / "churn" / "versions" / "v0001"
    stale, fresh = folder / ".tmp-stale", folder / ".tmp-fresh"
    stale.write_bytes(b"half")
    fresh.write_bytes(b"being written")
    _age([stale])

    result = CliRunner().invoke(app, ["registry", "repair", "churn"])
    assert result.exit_code == 0, result.output
    assert f"removed stale temporary file {stale}" in result.output
    assert "claimed but never published" in result.output and "v0001" in result.output
    assert not stale.exists() and fresh.exists()


def test_repair_with_nothing_to_do_reads_nothing(world, monkeypatch):
    from ml.registry.repair import repair

    registry = world["registry"]
    _retry(world)
    reads = []
    monkeypatch.setattr(registry.store, "get", lambda key: reads.append(key))
    monkeypatch.setattr(registry.store, "get_with_etag", lambda key: reads.append(key))
    started = time.perf_counter()
    report = repair(registry, "churn", lambda row: pytest.fail("no row to write"))
    elapsed = time.perf_counter() - started
    assert report.lines() == [] and reads == []
    assert elapsed < 0.5, f"repair with nothing to do took {elapsed:.3f} s"


def test_decisions_written_before_intents_count_as_complete(world):
    from ml.registry.repair import repair

    registry = world["registry"]
    registry.put_record("churn", "decisions", "v0001", {
        "model": "churn", "version": "v0001", "decision": "promoted", "reasons": ["PASS"], "champion_before": None,
        "champion_after": "v0001", "run_id": "old"})
    first = repair(registry, "churn", lambda row: pytest.fail("a decision of the old layout needs no row"))
    assert first.finished == [] and registry.alias("churn").version is None
    assert [c["legacy"] for c in registry.records("churn", "completions")] == [True]
