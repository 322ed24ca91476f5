"""Training candidates behind one scikit-learn interface: LightGBM, a PyTorch tabular MLP, and a logistic baseline.

Each candidate takes the columns of a `FeatureSchema` and saves itself to a directory as plain files
(LightGBM text, safetensors, JSON) with a `model.json` naming its kind, so nothing is ever unpickled.
Importing this package loads only scikit-learn's base classes; LightGBM, torch and the rest of
scikit-learn load when a candidate is built, fitted or loaded.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Mapping

from ml.core.spec import FeatureSchema
from ml.training.candidates.base import (
    MODEL_JSON,
    ModelError,
    _Candidate,
    _read_model_json,
)
from ml.training.candidates.lightgbm import LightGBMCandidate
from ml.training.candidates.logistic import LogisticCandidate
from ml.training.candidates.torch_mlp import TorchTabularCandidate

__all__ = ["CANDIDATE_KINDS", "LightGBMCandidate", "LogisticCandidate", "ModelError", "TorchTabularCandidate",
           "build_candidate", "load_candidate"]

CANDIDATE_KINDS: dict[str, type[_Candidate]] = {
    "lightgbm": LightGBMCandidate, "torch_mlp": TorchTabularCandidate, "logistic": LogisticCandidate,
}


def build_candidate(kind: str, params: Mapping[str, Any] | None, features: FeatureSchema, seed: int = 0) -> _Candidate:
    """An unfitted candidate of `kind`; unknown kinds and parameter names raise ModelError naming them."""
    if kind not in CANDIDATE_KINDS:
        raise ModelError(f"unknown candidate kind {kind!r}; known kinds: {sorted(CANDIDATE_KINDS)}")
    model = CANDIDATE_KINDS[kind](features=features, params=dict(params or {}), seed=seed)
    model._check_param_names()
    return model


def load_candidate(directory: Path) -> _Candidate:
    """Load a saved candidate of whichever kind its model.json names."""
    kind = _read_model_json(directory)["kind"]
    if kind not in CANDIDATE_KINDS:
        raise ModelError(f"{Path(directory) / MODEL_JSON} names unknown kind {kind!r}; known kinds: {sorted(CANDIDATE_KINDS)}")
    return CANDIDATE_KINDS[kind].load(directory)
