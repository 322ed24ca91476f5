"""Candidates: fit quality on a known relationship, pickle-free save/load round trips, input and parameter errors."""

from __future__ import annotations

import json
import logging
import pickle
import subprocess
import sys

import numpy as np
import pandas as pd
import pytest
import torch
from sklearn.metrics import log_loss, roc_auc_score

from ml.core.settings import REPO_ROOT
from ml.core.spec import FeatureSchema
from ml.training.candidates import (
    CANDIDATE_KINDS,
    ModelError,
    TorchTabularCandidate,
    build_candidate,
    load_candidate,
)

# Categoricals deliberately out of alphabetical order: saved vocabularies must not reorder the codes.
FEATURES = FeatureSchema(numeric=("x0", "x1", "x2", "x3", "noise"), categorical=("region", "plan"))
KINDS = sorted(CANDIDATE_KINDS)
FAST_PARAMS = {
    "lightgbm": {"learning_rate": 0.1, "num_boost_round": 300, "early_stopping_rounds": 20},
    "torch_mlp": {"device": "cpu", "max_epochs": 15, "patience": 3},
    "logistic": {},
}
PLAN_EFFECT = {"basic": 0.8, "standard": 0.0, "premium": -0.8}


def _synthetic(n: int, seed: int) -> tuple[pd.DataFrame, np.ndarray, np.ndarray]:
    """Rows with a known logistic relationship; returns X, y and the true probability."""
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, 5))
    plan = rng.choice(list(PLAN_EFFECT), size=n)
    region = rng.choice(["north", "south", "east", "west", "central"], size=n).astype(object)
    logit = -0.3 + 1.3 * x[:, 0] - 0.9 * x[:, 1] + 0.6 * x[:, 2] * x[:, 3] + np.vectorize(PLAN_EFFECT.get)(plan)
    p = 1.0 / (1.0 + np.exp(-logit))
    y = (rng.random(n) < p).astype(np.int64)
    x[rng.random((n, 5)) < 0.08] = np.nan
    region[rng.random(n) < 0.05] = None
    X = pd.DataFrame(x, columns=list(FEATURES.numeric)).assign(plan=plan, region=region, row_id=np.arange(n))
    return X, y, p


@pytest.fixture(scope="module")
def data() -> dict:
    X, y, p = _synthetic(5000, seed=3)
    return {"train": (X[:3000], y[:3000]), "valid": (X[3000:4000], y[3000:4000]),
            "test": (X[4000:].reset_index(drop=True), y[4000:], p[4000:])}


@pytest.fixture(scope="module")
def fitted(data) -> dict:
    models = {}
    for kind in KINDS:
        model = build_candidate(kind, FAST_PARAMS[kind], FEATURES, seed=7)
        models[kind] = model.fit(*data["train"], *data["valid"])
    return models


@pytest.mark.parametrize("kind", KINDS)
def test_probabilities_rank_well_on_a_known_relationship(kind, fitted, data) -> None:
    X, y, p_true = data["test"]
    proba = fitted[kind].predict_proba(X)
    assert proba.shape == (len(X), 2)
    assert np.all((proba >= 0) & (proba <= 1))
    np.testing.assert_allclose(proba.sum(axis=1), 1.0, atol=1e-12)
    np.testing.assert_array_equal(fitted[kind].classes_, [0, 1])
    auc, true_auc = roc_auc_score(y, proba[:, 1]), roc_auc_score(y, p_true)
    assert true_auc > 0.8
    assert auc > 0.75 and auc > true_auc - 0.06, (kind, auc, true_auc)
    np.testing.assert_array_equal(fitted[kind].predict(X), (proba[:, 1] >= 0.5).astype(int))


@pytest.mark.parametrize("kind", KINDS)
def test_save_and_load_round_trip_without_pickle(kind, fitted, data, tmp_path, monkeypatch) -> None:
    X = data["test"][0]
    written = fitted[kind].save(tmp_path / "model")
    assert sorted(written) == sorted(p.name for p in (tmp_path / "model").iterdir())
    assert "model.json" in written
    assert not [n for n in written if n.endswith((".pkl", ".pickle", ".joblib", ".pt", ".pth"))]
    assert json.loads((tmp_path / "model" / "model.json").read_text())["kind"] == kind

    def refuse(*args, **kwargs):
        raise AssertionError("a candidate was unpickled")

    monkeypatch.setattr(pickle, "load", refuse)
    monkeypatch.setattr(pickle, "loads", refuse)
    loaded = load_candidate(tmp_path / "model")
    assert type(loaded) is type(fitted[kind])
    np.testing.assert_allclose(loaded.predict_proba(X), fitted[kind].predict_proba(X), rtol=0, atol=1e-6)
    expected = fitted[kind].feature_importances()
    if expected is None:
        assert loaded.feature_importances() is None
    else:
        assert loaded.feature_importances() == pytest.approx(expected, abs=1e-12)


def test_logistic_saved_parameters_reproduce_the_pipeline(fitted, data, tmp_path) -> None:
    model, X = fitted["logistic"], data["test"][0]
    X = X.assign(plan=X["plan"].where(X.index % 7 != 0, "enterprise"))
    expected = model.pipeline_.predict_proba(model._frame(X))
    model.save(tmp_path)
    np.testing.assert_allclose(load_candidate(tmp_path).predict_proba(X), expected, rtol=0, atol=1e-9)
    np.testing.assert_allclose(model.predict_proba(X), expected, rtol=0, atol=1e-9)


@pytest.mark.parametrize("kind", KINDS)
def test_unseen_and_missing_categories_are_scored(kind, fitted, data) -> None:
    X = data["test"][0].head(50).copy()
    X["plan"] = ["enterprise"] * 25 + [None] * 25
    X["region"] = "atlantis"
    proba = fitted[kind].predict_proba(X)[:, 1]
    assert np.isfinite(proba).all() and ((proba > 0) & (proba < 1)).all()
    if kind != "logistic":
        unseen, missing = proba[:25], proba[25:]
        rows = fitted[kind].predict_proba(X.assign(plan=None))[:25, 1]
        np.testing.assert_allclose(unseen, rows, atol=1e-12)
        assert not np.allclose(missing, fitted[kind].predict_proba(X.assign(plan="basic"))[25:, 1])


@pytest.mark.parametrize("kind", KINDS)
def test_missing_column_is_named(kind, fitted, data) -> None:
    X = data["test"][0].drop(columns=["x2", "region"])
    with pytest.raises(ModelError, match=r"\['x2', 'region'\]"):
        fitted[kind].predict_proba(X)
    with pytest.raises(ModelError, match="x2"):
        build_candidate(kind, FAST_PARAMS[kind], FEATURES).fit(X, data["test"][1])


@pytest.mark.parametrize("kind", KINDS)
def test_unknown_parameter_is_named(kind) -> None:
    with pytest.raises(ModelError, match="hidden_layerz"):
        build_candidate(kind, {"hidden_layerz": 3}, FEATURES)


def test_unknown_kind_and_bad_device_are_named() -> None:
    with pytest.raises(ModelError, match="xgboost"):
        build_candidate("xgboost", {}, FEATURES)
    with pytest.raises(ModelError, match="'gpu'"):
        build_candidate("torch_mlp", {"device": "gpu"}, FEATURES).fit(*_synthetic(50, 1)[:2])


def test_feature_importances_rank_the_signal_above_noise(fitted) -> None:
    assert fitted["torch_mlp"].feature_importances() is None
    for kind in ("lightgbm", "logistic"):
        imp = fitted[kind].feature_importances()
        assert set(imp) == set(FEATURES.columns)
        assert sum(imp.values()) == pytest.approx(1.0)
        assert imp["x0"] > imp["noise"] and imp["x1"] > imp["noise"] and imp["plan"] > imp["region"], (kind, imp)


def test_lightgbm_stops_early_on_the_validation_set(fitted) -> None:
    model = fitted["lightgbm"]
    assert 1 <= model.best_iteration_ < 300
    assert model.params_["seed"] == 7 and model.params_["deterministic"] is True


def test_torch_same_seed_is_identical_and_another_seed_differs(data, caplog) -> None:
    params = {"device": "cpu", "max_epochs": 3, "hidden_sizes": [32, 16]}
    with caplog.at_level(logging.INFO, logger="ml.training.candidates"):
        first = build_candidate("torch_mlp", params, FEATURES, seed=1).fit(*data["train"], *data["valid"])
    epochs_logged = len([r for r in caplog.records if "epoch" in r.getMessage()])  # the first fit's lines only
    torch.manual_seed(12345)
    second = build_candidate("torch_mlp", params, FEATURES, seed=1).fit(*data["train"], *data["valid"])
    other = build_candidate("torch_mlp", params, FEATURES, seed=2).fit(*data["train"], *data["valid"])
    X = data["test"][0]
    np.testing.assert_array_equal(first.predict_proba(X), second.predict_proba(X))
    assert np.abs(first.predict_proba(X) - other.predict_proba(X)).max() > 1e-4
    assert first.device_ == "cpu" and first.epochs_ == 3 and first.fit_seconds_ > 0
    assert epochs_logged == 3


def test_torch_keeps_the_epoch_with_the_lowest_validation_loss(fitted, data) -> None:
    model, (X_val, y_val) = fitted["torch_mlp"], data["valid"]
    losses = [h["validation_log_loss"] for h in model.history_]
    assert len(losses) == model.epochs_ and model.best_epoch_ < model.epochs_ <= 15
    assert model.best_epoch_ == int(np.argmin(losses)) + 1
    assert log_loss(y_val, model.predict_proba(X_val)[:, 1]) == pytest.approx(min(losses), abs=1e-5)


def test_torch_without_validation_runs_all_epochs(data) -> None:
    model = TorchTabularCandidate(FEATURES, {"device": "cpu", "max_epochs": 2}, seed=0).fit(*data["train"])
    assert model.epochs_ == model.best_epoch_ == 2


def test_sklearn_permutation_importance_accepts_a_candidate(fitted, data) -> None:
    from sklearn.inspection import permutation_importance

    X, y, _ = data["test"]
    result = permutation_importance(fitted["lightgbm"], X[list(FEATURES.columns)], y, scoring="roc_auc",
                                    n_repeats=2, random_state=0)
    means = dict(zip(FEATURES.columns, result.importances_mean))
    assert means["x0"] > 0.05 and means["x0"] > means["noise"]


def test_loading_a_bad_directory_names_the_problem(tmp_path, fitted) -> None:
    with pytest.raises(ModelError, match="model.json not found"):
        load_candidate(tmp_path)
    (tmp_path / "model.json").write_text("{not json")
    with pytest.raises(ModelError, match="not valid JSON"):
        load_candidate(tmp_path)
    fitted["torch_mlp"].save(tmp_path)
    (tmp_path / "weights.safetensors").unlink()
    with pytest.raises(ModelError, match="weights.safetensors"):
        load_candidate(tmp_path)
    meta = json.loads((tmp_path / "model.json").read_text())
    (tmp_path / "model.json").write_text(json.dumps({k: v for k, v in meta.items() if k != "means"}))
    with pytest.raises(ModelError, match="'means'"):
        load_candidate(tmp_path)


def test_labels_other_than_zero_and_one_are_rejected(data) -> None:
    X, y = data["train"]
    with pytest.raises(ModelError, match="0/1"):
        build_candidate("logistic", {}, FEATURES).fit(X, np.where(y == 1, 2, 0))


def test_importing_the_module_loads_no_training_library() -> None:
    code = "import sys, ml.training.candidates; print(sorted({'torch', 'lightgbm', 'sklearn.linear_model'} & set(sys.modules)))"
    out = subprocess.run([sys.executable, "-c", code], cwd=REPO_ROOT, capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"
