"""The model card for real: a small training run on simulated data renders its card into the challenger's
directory, the promotion publishes it with the version, and `python -m ml registry card` finds and copies it.

One DuckDB warehouse (300 customers x 50 days, 7-day labels), one small LightGBM candidate, a local registry.
"""

from __future__ import annotations

import hashlib
import html
import re
import subprocess
from datetime import date
from pathlib import Path
from urllib.parse import unquote, urlsplit

import pytest
import yaml
from typer.testing import CliRunner

from ml.cli import app
from ml.core.settings import REPO_ROOT, Settings, parse_warehouse_url
from ml.core.spec import SPEC_DIR, load_spec
from ml.features.dbt import run_dbt
from ml.ingest.load import load_days
from ml.ingest.simulate import SimConfig
from ml.registry import Registry
from ml.registry.card import CARD, write_card

SIM = SimConfig(seed=11, customers=300, start=date(2025, 1, 1), days=50, drift_date=None)
HORIZON = 7


def _test_spec(path: Path) -> None:
    """churn.yaml with a 7-day horizon and one small LightGBM candidate; no floors, so that the first run
    promotes whatever this little data gives."""
    data = yaml.safe_load((SPEC_DIR / "churn.yaml").read_text())
    data["label"]["horizon_days"] = HORIZON
    data["split"].update(validation_days=7, test_days=7, sample_every_days=1)
    lightgbm = next(c for c in data["candidates"] if c["kind"] == "lightgbm")
    lightgbm["params"].update(n_estimators=40)
    lightgbm.pop("search", None)
    data["candidates"] = [lightgbm]
    data["search"] = {"budget_s": 0, "max_trials": 1}
    data["promotion"].update(floors={}, max_ece=0.5, bootstrap_samples=100, min_segment_rows=50)
    path.write_text(yaml.safe_dump(data))


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    """A finished training run up to the gate, and an earlier version published before cards existed."""
    from ml.training.evaluate import evaluate_step
    from ml.training.steps import extract_step, gate_step, prepare_step, train_step

    home = tmp_path_factory.mktemp("card")
    settings = Settings(home=home, warehouse=parse_warehouse_url(f"duckdb:///{home / 'warehouse.duckdb'}"))
    load_days(SIM, None, settings=settings)
    built = run_dbt(["run", "--select", "+customer_features_daily", "+churn_labels"], settings=settings,
                    vars={"horizon_days": HORIZON}, capture=True)
    assert built.success, built.output[-3000:]
    _test_spec(home / "churn.yaml")
    spec = load_spec(home / "churn.yaml")
    prepare_step(spec, settings)
    extract = extract_step(spec, settings, "card", None)
    evaluation = evaluate_step(spec, settings, extract, [train_step(spec, settings, extract, "lightgbm")])
    # What the registry held before cards: a version of the same files without one.
    old = Registry.from_settings(settings).publish(spec.name, Path(evaluation["challenger"]["directory"]),
                                                   {"candidate": "lightgbm"})
    assert old.version == "v0001" and CARD not in old.manifest["files"]
    decision = gate_step(spec, settings, extract, evaluation)  # writes the card into the challenger's directory
    assert decision["card"] == str(Path(evaluation["challenger"]["directory"]) / CARD)
    return {"settings": settings, "spec": spec, "extract": extract, "evaluation": evaluation, "decision": decision}


@pytest.fixture
def cli_env(run, monkeypatch):
    settings = run["settings"]
    monkeypatch.setenv("TIDEMARK_HOME", str(settings.home))
    monkeypatch.setenv("TIDEMARK_WAREHOUSE_URL", settings.warehouse.url)
    monkeypatch.delenv("TIDEMARK_REGISTRY_URI", raising=False)
    monkeypatch.delenv("TIDEMARK_VERIFY_KEY", raising=False)
    return settings


def test_training_writes_a_card_that_is_published_and_the_cli_finds_it(run, cli_env, tmp_path):
    from ml.training.steps import promote_step

    settings, spec, extract, evaluation, decision = (run[k] for k in ("settings", "spec", "extract", "evaluation",
                                                                      "decision"))
    challenger = evaluation["challenger"]
    path = write_card(spec, settings, extract, evaluation, decision)
    assert path == Path(challenger["directory"]) / CARD
    page = path.read_text()

    # What the run was: its rows, its scores on the test rows, the gate's reasons, and what it was built from.
    assert 10_000 < len(page.encode()) < 1_000_000
    assert f"{extract['windows']['train']['rows']:,}" in page and "every label known (no as-of date)" in page
    assert f"known {HORIZON} days after" in page
    assert re.search(rf"<td>roc_auc</td><td>ROC AUC</td><td class=\"num\">{challenger['test']['roc_auc']:.4f}</td>",
                     page)
    assert f"ROC curve, AUC {challenger['test']['roc_auc']:.4f}" in page
    assert f"Precision-recall, AP {challenger['test']['pr_auc']:.4f}" in page
    assert f"threshold {challenger['threshold']:.4f}" in page
    for column in spec.segments:
        assert f"<h3>{column}</h3>" in page
    assert "mean |SHAP contribution| on the test rows" in page and next(iter(challenger["shap_summary"])) in page
    for reason in decision["reasons"]:
        verdict, _, rest = reason.partition(": ")
        shown = (f'<span class="badge {verdict.lower()}">{verdict}</span>{html.escape(rest)}'
                 if verdict in ("pass", "FAIL") else f'<span class="badge note">note</span>{html.escape(reason)}')
        assert shown in page, reason
    commit = subprocess.run(["git", "rev-parse", "HEAD"], cwd=REPO_ROOT, capture_output=True, text=True).stdout
    assert commit.strip() in page
    assert hashlib.sha256(settings.dbt_manifest.read_bytes()).hexdigest() in page
    assert extract["fingerprint"] in page and "lightgbm" in page

    outcome = promote_step(spec, settings, extract, evaluation, decision, run_id="card")
    assert (outcome["version"], outcome["champion_after"]) == ("v0002", "v0002"), outcome
    registry = Registry.from_settings(settings)
    stored = registry.get(spec.name, "v0002").manifest["files"][CARD]
    assert stored == {"sha256": hashlib.sha256(path.read_bytes()).hexdigest(), "size": path.stat().st_size}

    # Without --out: where it is, as a file:// URI of the stored card; with --out: a copy of it.
    runner = CliRunner()
    where = runner.invoke(app, ["registry", "card", spec.name])
    assert where.exit_code == 0, where.output
    uri = where.stdout.strip()
    assert uri == registry.store.uri_for(f"{spec.name}/versions/v0002/{CARD}") and uri.startswith("file:///")
    assert Path(unquote(urlsplit(uri).path)).read_bytes() == path.read_bytes()

    out = tmp_path / "cards" / "churn.html"
    copied = runner.invoke(app, ["registry", "card", spec.name, "v0002", "--out", str(out)])
    assert copied.exit_code == 0, copied.output
    assert copied.stdout.strip() == str(out) and out.read_bytes() == path.read_bytes()


def test_a_version_without_a_card_and_an_unknown_version_are_one_line_errors(run, cli_env):
    runner = CliRunner()
    old = runner.invoke(app, ["registry", "card", "churn", "v0001", "--out", "never.html"])
    assert old.exit_code == 2, old.output
    assert old.stderr.startswith("error: churn v0001 has no model card: it was published before training wrote "
                                 "cards"), old.stderr
    assert "python -m ml train --spec churn" in old.stderr and "Traceback" not in old.output
    assert not Path("never.html").exists()

    unknown = runner.invoke(app, ["registry", "card", "churn", "v0042"])
    assert unknown.exit_code == 2
    assert unknown.stderr.startswith("error: model 'churn' has no published version 'v0042'"), unknown.stderr

    nothing = runner.invoke(app, ["registry", "card", "nosuch"])
    assert nothing.exit_code == 2
    assert nothing.stderr.startswith("error: model 'nosuch' has no champion in the registry"), nothing.stderr


def test_the_card_of_a_version_on_each_registry_backend_is_located_copied_and_checked(backend, tmp_path,
                                                                                       monkeypatch):
    monkeypatch.setenv("TIDEMARK_HOME", str(tmp_path))
    monkeypatch.setenv("TIDEMARK_REGISTRY_URI", backend.uri)
    if backend.endpoint_url:
        monkeypatch.setenv("TIDEMARK_S3_ENDPOINT_URL", backend.endpoint_url)
    source = tmp_path / "challenger"
    source.mkdir()
    (source / "model.json").write_text('{"kind": "logistic"}')
    card = "<!DOCTYPE html><html><body><h1>churn: model card</h1></body></html>\n".encode()
    (source / CARD).write_bytes(card)
    version = backend.registry().publish("churn", source, {"candidate": "logistic"}).version

    runner = CliRunner()
    where = runner.invoke(app, ["registry", "card", "churn", version])
    assert where.exit_code == 0, where.output
    expected = backend.registry().store.uri_for(f"churn/versions/{version}/{CARD}")
    assert where.stdout.strip() == expected
    if backend.uri.startswith("s3://"):
        assert expected.startswith("s3://") and f"registry card churn {version} --out" in where.stderr
    out = tmp_path / "copy.html"
    assert runner.invoke(app, ["registry", "card", "churn", version, "--out", str(out)]).exit_code == 0
    assert out.read_bytes() == card

    backend.raw_put(f"churn/versions/{version}/{CARD}", card.replace(b"churn", b"other"))
    altered = runner.invoke(app, ["registry", "card", "churn", version, "--out", str(tmp_path / "altered.html")])
    assert altered.exit_code == 2
    assert "does not match the sha256 in the manifest of churn v0001 (altered or truncated)" in altered.stderr
    assert not (tmp_path / "altered.html").exists()
