"""Provenance of a published version: the git commit, whether the tree differed from it, and how."""

from __future__ import annotations

import hashlib
import subprocess
from dataclasses import replace

import pytest

from ml.core.settings import Settings, parse_warehouse_url
from ml.training.steps import git_commit, git_state


def _git(repo, *args: str) -> str:
    return subprocess.run(["git", "-c", "user.name=t", "-c", "user.email=t@example.com", *args], cwd=repo,
                          check=True, capture_output=True, text=True).stdout


@pytest.fixture
def settings(tmp_path, monkeypatch) -> Settings:
    """Settings whose repo_root is a fresh repository with one commit holding a spec and a dbt model."""
    monkeypatch.setenv("GIT_CEILING_DIRECTORIES", str(tmp_path))
    repo = tmp_path / "repo"
    (repo / "ml" / "specs").mkdir(parents=True)
    (repo / "dbt_project" / "models").mkdir(parents=True)
    (repo / "ml" / "specs" / "churn.yaml").write_text("name: churn\n")
    (repo / "dbt_project" / "models" / "a.sql").write_text("select 1\n")
    _git(repo, "init", "-q")
    _git(repo, "add", ".")
    _git(repo, "commit", "-q", "-m", "first")
    return Settings(home=tmp_path, warehouse=parse_warehouse_url(f"duckdb:///{tmp_path / 'w.duckdb'}"),
                    repo_root=repo)


def test_a_clean_tree_records_its_commit_and_no_changes(settings):
    head = _git(settings.repo_root, "rev-parse", "HEAD").strip()
    assert git_state(settings) == {"commit": head, "dirty": False, "diff_sha256": None, "untracked": []}
    assert git_commit(settings) == head


def test_a_changed_file_and_an_untracked_spec_make_the_tree_dirty(settings):
    repo = settings.repo_root
    (repo / "ml" / "specs" / "churn.yaml").write_text("name: churn\nseed: 8\n")
    (repo / "ml" / "specs" / "upsell.yaml").write_text("name: upsell\n")
    (repo / "dbt_project" / "models" / "b.sql").write_text("select 2\n")
    (repo / "notes.txt").write_text("not under ml/specs or dbt_project\n")
    state = git_state(settings)
    diff = subprocess.run(["git", "diff", "HEAD"], cwd=repo, capture_output=True, check=True).stdout
    assert state["dirty"] is True and state["diff_sha256"] == hashlib.sha256(diff).hexdigest()
    assert state["untracked"] == ["dbt_project/models/b.sql", "ml/specs/upsell.yaml"]
    (repo / "ml" / "specs" / "churn.yaml").write_text("name: churn\nseed: 9\n")
    assert git_state(settings)["diff_sha256"] != state["diff_sha256"]


def test_an_untracked_spec_alone_makes_the_tree_dirty(settings):
    (settings.repo_root / "ml" / "specs" / "upsell.yaml").write_text("name: upsell\n")
    state = git_state(settings)
    assert (state["dirty"], state["diff_sha256"], state["untracked"]) == (True, None, ["ml/specs/upsell.yaml"])


def test_a_folder_that_is_no_repository_gives_none_values(settings, tmp_path):
    plain = tmp_path / "plain"
    plain.mkdir()
    unknown = {"commit": None, "dirty": None, "diff_sha256": None, "untracked": None}
    assert git_state(replace(settings, repo_root=plain)) == unknown
    assert git_state(replace(settings, repo_root=tmp_path / "missing")) == unknown


def test_without_git_every_value_is_none(settings, monkeypatch):
    monkeypatch.setenv("PATH", "")
    assert git_state(settings) == {"commit": None, "dirty": None, "diff_sha256": None, "untracked": None}
    assert git_commit(settings) is None
