"""What every candidate shares: label checks, the saved metadata, and the scikit-learn plumbing.

Inputs are encoded by ml.training.encoding, the one encoding that scoring uses too.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any, ClassVar, Mapping

import numpy as np
from sklearn.base import BaseEstimator, ClassifierMixin

from ml.core.spec import FeatureSchema
from ml.training.encoding import ModelError

log = logging.getLogger(__name__)

MODEL_JSON = "model.json"


# -- labels and saved files -------------------------------------------------------------------------
def _check_target(y: Any, n_rows: int) -> np.ndarray:
    y = np.asarray(y)
    if y.shape != (n_rows,):
        raise ModelError(f"y must be a 1-d array with one label per row of X ({n_rows}), got shape {y.shape}")
    if not np.isin(y, (0, 1)).all():
        raise ModelError(f"y must hold only 0/1 labels, got values {np.unique(y)[:10].tolist()}")
    return y.astype(np.int64)


def _read_model_json(directory: Path, kind: str | None = None, required: tuple[str, ...] = ()) -> dict[str, Any]:
    """The saved metadata, checked for the kind and the keys a loader needs."""
    path = Path(directory) / MODEL_JSON
    if not path.is_file():
        raise ModelError(f"{path} not found: {directory} does not hold a saved candidate")
    try:
        meta = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise ModelError(f"{path} is not valid JSON ({exc}); the saved candidate is corrupt") from None
    lacking = [k for k in ("kind", "features", "seed", "params", *required) if not isinstance(meta, dict) or k not in meta]
    if lacking:
        raise ModelError(f"{path} lacks {lacking}; the saved candidate is corrupt")
    if kind is not None and meta["kind"] != kind:
        raise ModelError(f"{path} holds a {meta['kind']!r} candidate, not {kind!r}; use load_candidate()")
    return meta


def _required_file(directory: Path, name: str) -> Path:
    path = Path(directory) / name
    if not path.is_file():
        raise ModelError(f"{path} not found; the saved candidate in {directory} is incomplete")
    return path


def _normalised(scores: Mapping[str, float]) -> dict[str, float]:
    total = float(sum(scores.values()))
    return {k: (float(v) / total if total > 0 else 0.0) for k, v in scores.items()}


class _Candidate(ClassifierMixin, BaseEstimator):
    """Shared plumbing: parameter defaults and checks, the saved metadata, and `predict`."""

    kind: ClassVar[str]
    defaults: ClassVar[dict[str, Any]]

    def __init__(self, features: FeatureSchema, params: Mapping[str, Any] | None = None, seed: int = 0):
        self.features = features
        self.params = params
        self.seed = seed

    def _allowed_params(self) -> set[str]:
        return set(self.defaults)

    def _check_param_names(self) -> dict[str, Any]:
        """The given `params`; an unknown name raises ModelError naming it."""
        params, allowed = dict(self.params or {}), self._allowed_params()
        unknown = sorted(k for k in params if k not in allowed)
        if unknown:
            hint = sorted(allowed) if len(allowed) < 30 else "any LightGBM parameter name or alias"
            raise ModelError(f"unknown parameter(s) {unknown} for candidate kind {self.kind!r}; allowed: {hint}")
        return params

    def _resolved_params(self) -> dict[str, Any]:
        """The defaults overlaid with the checked `params`."""
        return {**self.defaults, **self._check_param_names()}

    def _meta(self, **extra: Any) -> dict[str, Any]:
        return {"kind": self.kind, "features": self.features.to_dict(), "seed": self.seed, **extra}

    @staticmethod
    def _write_meta(directory: Path, meta: dict[str, Any]) -> None:
        (Path(directory) / MODEL_JSON).write_text(json.dumps(meta, indent=1, sort_keys=True))

    def predict(self, X: Any) -> np.ndarray:
        """Class labels at a 0.5 probability threshold."""
        return (self.predict_proba(X)[:, 1] >= 0.5).astype(np.int64)

    def feature_importances(self) -> dict[str, float] | None:
        return None

    def contributions(self, X: Any) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Per row of X: the additive contribution of each feature of `features.columns`, the base value,
        and the raw output (log-odds) that base + contributions add up to; ml.scoring.explain wraps it."""
        raise ModelError(f"candidate kind {self.kind!r} cannot explain its scores; give it a contributions method")
