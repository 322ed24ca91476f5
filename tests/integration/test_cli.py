"""`python -m ml registry ...`: list, show, promote by hand and roll back in one command."""

from __future__ import annotations

import json

import pytest
from typer.testing import CliRunner

from ml.cli.app import app
from ml.registry import Registry


@pytest.fixture
def registry_env(tmp_path, monkeypatch):
    monkeypatch.setenv("TIDEMARK_HOME", str(tmp_path))
    monkeypatch.delenv("TIDEMARK_REGISTRY_URI", raising=False)
    monkeypatch.setenv("TIDEMARK_ACTOR", "ops:alice")
    registry = Registry.from_uri((tmp_path / "registry").as_uri())
    for auc in (0.71, 0.74, 0.73):
        source = tmp_path / f"src-{auc}"
        source.mkdir()
        (source / "model.json").write_text(json.dumps({"kind": "logistic", "auc": auc}))
        version = registry.publish("churn", source, {"candidate": "logistic", "metrics": {"roc_auc": auc}, "as_of": "2025-03-01"})
        registry.promote("churn", version.version, actor="train_model", reason=f"gate passed at {auc}")
    return registry


def test_list_show_rollback_and_promote_from_the_command_line(registry_env):
    runner = CliRunner()
    listed = runner.invoke(app, ["registry", "list", "churn"])
    assert listed.exit_code == 0, listed.output
    assert "v0001" in listed.output and "0.7400" in listed.output and "champion" in listed.output

    shown = runner.invoke(app, ["registry", "show", "churn"])
    assert shown.exit_code == 0, shown.output
    manifest = json.loads(shown.stdout)
    assert manifest["version"] == "v0003" and "sha256" in json.dumps(manifest["files"])

    rolled = runner.invoke(app, ["registry", "rollback", "churn", "--reason", "v0003 misbehaves in production"])
    assert rolled.exit_code == 0, rolled.output
    assert "champion -> v0002" in rolled.output
    assert registry_env.alias("churn").version == "v0002"
    last = registry_env.alias("churn").history[-1]
    assert (last["action"], last["from"], last["to"], last["actor"]) == ("rollback", "v0003", "v0002", "ops:alice")
    assert last["reason"] == "v0003 misbehaves in production"

    promoted = runner.invoke(app, ["registry", "promote", "churn", "v0003", "--reason", "fixed upstream"])
    assert promoted.exit_code == 0, promoted.output
    assert registry_env.alias("churn").version == "v0003"

    history = runner.invoke(app, ["registry", "show", "churn", "--history"])
    assert [e["to"] for e in json.loads(history.stdout)] == ["v0001", "v0002", "v0003", "v0002", "v0003"]


def test_promoting_a_version_that_does_not_exist_is_refused_and_changes_nothing(registry_env):
    result = CliRunner().invoke(app, ["registry", "promote", "churn", "v0009", "--reason", "typo"])
    assert result.exit_code == 2
    assert "v0009" in result.output
    assert registry_env.alias("churn").version == "v0003"
