"""A damaged registry: lost or truncated manifests and aliases are named, listed, and can be moved off."""

from __future__ import annotations

import json

import pytest
from typer.testing import CliRunner

from ml.cli import app
from ml.core.settings import Settings, parse_warehouse_url
from ml.core.spec import load_spec
from ml.registry import IntegrityError, Registry, RegistryError
from tests.registry_backends import MODEL, _published

ALIAS_KEY = f"{MODEL}/aliases/champion.json"


def _cut_history(data: bytes, keep: int) -> bytes:
    """The alias document cut off inside history entry `keep + 1`, as a write that stopped part way leaves it."""
    cut = data.index(f'"seq": {keep + 1}'.encode())
    return data[:cut]


@pytest.fixture
def local(tmp_path, monkeypatch) -> Registry:
    """A local registry that the command line also uses, with three versions promoted in turn."""
    monkeypatch.setenv("TIDEMARK_HOME", str(tmp_path))
    monkeypatch.setenv("TIDEMARK_ACTOR", "ops:bob")
    monkeypatch.delenv("TIDEMARK_REGISTRY_URI", raising=False)
    registry = Registry.from_uri((tmp_path / "registry").as_uri())
    for version in _published(registry, tmp_path, 3):
        registry.promote(MODEL, version, actor="gate", reason=f"better: {version}")
    return registry


def _cli(*args: str):
    return CliRunner().invoke(app, list(args))


def test_truncated_objects_raise_an_error_naming_their_key(backend, tmp_path):
    registry = backend.registry()
    v1, v2 = _published(registry, tmp_path, 2)
    registry.promote(MODEL, v1, actor="gate", reason="first")
    registry.put_record(MODEL, "decisions", v1, {"version": v1, "decision": "promoted"})
    for key in (ALIAS_KEY, f"{MODEL}/versions/{v2}/manifest.json", f"{MODEL}/records/decisions/{v1}.json"):
        backend.raw_put(key, registry.store.get(key)[:40])

    with pytest.raises(RegistryError, match=rf"{ALIAS_KEY} is damaged .*registry promote {MODEL} <version>"):
        registry.alias(MODEL)
    with pytest.raises(RegistryError, match=rf"versions/{v2}/manifest.json is damaged .*not valid JSON"):
        registry.get(MODEL, v2)
    with pytest.raises(RegistryError, match=rf"records/decisions/{v1}.json is damaged"):
        registry.records(MODEL, "decisions")
    assert registry.get(MODEL, v1).manifest["i"] == 0  # the rest still reads


def test_promote_and_rollback_replace_a_truncated_alias_keeping_the_history_that_parses(backend, tmp_path):
    registry = backend.registry()
    v1, v2, v3 = _published(registry, tmp_path, 3)
    for version in (v1, v2, v3):
        registry.promote(MODEL, version, actor="gate", reason=f"better: {version}")
    backend.raw_put(ALIAS_KEY, _cut_history(registry.store.get(ALIAS_KEY), keep=2))

    moved = registry.promote(MODEL, v1, actor="oncall", reason="alias was truncated")
    assert registry.alias(MODEL) == moved and moved.version == v1
    assert [(h["seq"], h["from"], h["to"]) for h in moved.history] == [(1, None, v1), (2, v1, v2), (3, v2, v1)]
    assert "previous alias state was unreadable" in moved.history[-1]["note"]
    assert registry.rollback(MODEL, actor="oncall", reason="back").version == v2


def test_list_shows_a_champion_whose_manifest_is_lost_and_exits_1(local, tmp_path):
    (tmp_path / "registry" / MODEL / "versions" / "v0003" / "manifest.json").unlink()

    listed = _cli("registry", "list", MODEL)
    assert listed.exit_code == 1, listed.output
    assert "churn v0003 damaged: manifest.json is missing (3 artifact(s) stored without it)" in listed.output
    assert "error: the champion of churn is v0003, which is damaged" in listed.output
    assert "v0001" in listed.output and "v0002" in listed.output

    # The way out from the command line: roll back (or promote) off the damaged version.
    rolled = _cli("registry", "rollback", MODEL, "--reason", "v0003 lost its manifest")
    assert rolled.exit_code == 0 and "champion -> v0002" in rolled.output, rolled.output
    again = _cli("registry", "list", MODEL)
    assert again.exit_code == 0, again.output
    assert "churn v0003 damaged" in again.output and "error:" not in again.output


def test_list_shows_the_only_version_when_its_manifest_is_lost(tmp_path, monkeypatch):
    monkeypatch.setenv("TIDEMARK_HOME", str(tmp_path))
    monkeypatch.delenv("TIDEMARK_REGISTRY_URI", raising=False)
    registry = Registry.from_uri((tmp_path / "registry").as_uri())
    [v1] = _published(registry, tmp_path, 1)
    registry.promote(MODEL, v1, actor="gate", reason="first")
    (tmp_path / "registry" / MODEL / "versions" / v1 / "manifest.json").unlink()

    listed = _cli("registry", "list")
    assert listed.exit_code == 1, listed.output
    assert f"churn {v1} damaged: manifest.json is missing" in listed.output


def test_promote_from_the_command_line_replaces_a_truncated_alias(local, tmp_path):
    path = tmp_path / "registry" / ALIAS_KEY
    path.write_bytes(_cut_history(path.read_bytes(), keep=1))

    shown = _cli("registry", "show", MODEL)
    assert shown.exit_code == 2 and f"{ALIAS_KEY} is damaged" in shown.stderr, shown.output
    listed = _cli("registry", "list", MODEL)
    assert listed.exit_code == 1 and "error: the champion alias of churn is damaged" in listed.output, listed.output

    promoted = _cli("registry", "promote", MODEL, "v0002", "--reason", "alias truncated")
    assert promoted.exit_code == 0, promoted.output
    history = json.loads(_cli("registry", "show", MODEL, "--history").stdout)
    assert [(h["from"], h["to"], h["actor"]) for h in history] == [(None, "v0001", "gate"),
                                                                    ("v0001", "v0002", "ops:bob")]
    assert _cli("registry", "list", MODEL).exit_code == 0


def test_show_names_a_truncated_manifest(local, tmp_path):
    path = tmp_path / "registry" / MODEL / "versions" / "v0002" / "manifest.json"
    path.write_bytes(path.read_bytes()[:-30])

    shown = _cli("registry", "show", MODEL, "v0002")
    assert shown.exit_code == 2, shown.output
    assert f"{MODEL}/versions/v0002/manifest.json is damaged" in shown.stderr
    assert "Traceback" not in shown.output


@pytest.mark.parametrize("damage", ["manifest lost", "alias truncated"])
def test_train_stops_before_fitting_when_the_champion_is_damaged(local, tmp_path, damage):
    from ml.training.steps import train

    if damage == "manifest lost":
        (tmp_path / "registry" / MODEL / "versions" / "v0003" / "manifest.json").unlink()
        named = "v0003"
    else:
        path = tmp_path / "registry" / ALIAS_KEY
        path.write_bytes(path.read_bytes()[:50])
        named = ALIAS_KEY
    settings = Settings(home=tmp_path, warehouse=parse_warehouse_url(f"duckdb:///{tmp_path / 'warehouse.duckdb'}"))
    steps: list[str] = []

    with pytest.raises(IntegrityError) as caught:
        train(load_spec("churn"), settings, as_of=None, run_id="damaged", actor="test", on_step=steps.append)
    message = str(caught.value)
    assert named in message and f"python -m ml registry promote {MODEL} <version> --reason" in message
    assert "extract" not in steps and not (tmp_path / "runs").exists()  # nothing read, nothing fitted
