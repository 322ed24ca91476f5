"""The PyTorch candidate on CUDA: trained under bf16 autocast, it scores probabilities and learns what the CPU learns.

Skipped where torch sees no CUDA device; on a GPU machine: `.venv/bin/python -m pytest -m gpu`.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch
from sklearn.metrics import roc_auc_score

from ml.core.spec import FeatureSchema
from ml.training.candidates import build_candidate

pytestmark = [
    pytest.mark.gpu,
    pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device (torch.cuda.is_available() is False)"),
]

FEATURES = FeatureSchema(numeric=("x0", "x1", "x2", "noise"), categorical=("plan",))
PLAN_EFFECT = {"basic": 0.8, "standard": 0.0, "premium": -0.8}
PARAMS = {"max_epochs": 15, "patience": 3}


def _synthetic(n: int, seed: int) -> tuple[pd.DataFrame, np.ndarray, np.ndarray]:
    """Rows with a known logistic relationship; returns X, y and the true probability."""
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, 4))
    plan = rng.choice(list(PLAN_EFFECT), size=n)
    logit = -0.3 + 1.5 * x[:, 0] - 1.0 * x[:, 1] + 0.5 * x[:, 2] + np.vectorize(PLAN_EFFECT.get)(plan)
    p = 1.0 / (1.0 + np.exp(-logit))
    y = (rng.random(n) < p).astype(np.int64)
    return pd.DataFrame(x, columns=list(FEATURES.numeric)).assign(plan=plan), y, p


@pytest.fixture(scope="module")
def data() -> dict:
    X, y, p = _synthetic(14_000, seed=11)
    return {"train": (X[:8000], y[:8000]), "valid": (X[8000:10_000], y[8000:10_000]),
            "test": (X[10_000:].reset_index(drop=True), y[10_000:], p[10_000:])}


@pytest.fixture(scope="module")
def fitted(data) -> dict:
    """The candidate fitted with the same seed on the same rows, once per device."""
    return {device: build_candidate("torch_mlp", {**PARAMS, "device": device}, FEATURES, seed=7)
            .fit(*data["train"], *data["valid"]) for device in ("cuda", "cpu")}


def test_cuda_scores_are_probabilities_that_rank_well(fitted, data) -> None:
    X, y, p_true = data["test"]
    model = fitted["cuda"]
    assert model.device_ == "cuda" and next(model.module_.parameters()).is_cuda
    proba = model.predict_proba(X)
    assert proba.shape == (len(X), 2) and np.isfinite(proba).all()
    assert ((proba >= 0) & (proba <= 1)).all()
    np.testing.assert_allclose(proba.sum(axis=1), 1.0, atol=1e-12)
    auc, true_auc = roc_auc_score(y, proba[:, 1]), roc_auc_score(y, p_true)
    assert true_auc > 0.8
    assert auc > 0.7 and auc > true_auc - 0.05, (auc, true_auc)


def test_cuda_and_cpu_rank_the_held_out_rows_alike(fitted, data) -> None:
    X, y, _ = data["test"]
    auc = {device: roc_auc_score(y, model.predict_proba(X)[:, 1]) for device, model in fitted.items()}
    assert abs(auc["cuda"] - auc["cpu"]) < 0.02, auc


def test_bf16_autocast_on_cuda_only(fitted, data) -> None:
    """The first linear layer computes in bfloat16 on CUDA and in float32 on the CPU."""
    X = data["test"][0].head(100)
    dtypes = {}
    for device, model in fitted.items():
        first_linear = next(m for m in model.module_.modules() if isinstance(m, torch.nn.Linear))
        hook = first_linear.register_forward_hook(lambda module, args, out, device=device: dtypes.update({device: out.dtype}))
        try:
            model.predict_proba(X)
        finally:
            hook.remove()
    assert dtypes == {"cuda": torch.bfloat16, "cpu": torch.float32}
