"""Gradient-boosted trees with LightGBM; their TreeSHAP values come from ml.training.candidates.treeshap."""

from __future__ import annotations

import logging
import time
from functools import cache
from pathlib import Path
from typing import Any

import numpy as np

from ml.core.spec import FeatureSchema
from ml.training.candidates.base import (
    MODEL_JSON,
    ModelError,
    _Candidate,
    _check_target,
    _normalised,
    _read_model_json,
    _required_file,
)
from ml.training.candidates.treeshap import tree_shap
from ml.training.encoding import feature_columns, learn_vocabularies, tree_matrix

log = logging.getLogger(__name__)


@cache
def _lightgbm_names() -> dict[str, str]:
    """Every LightGBM parameter name and alias, mapped to its main name."""
    from lightgbm.basic import _ConfigAliases

    return {alias: main for main, aliases in _ConfigAliases._get_all_param_aliases().items() for alias in aliases}


class LightGBMCandidate(_Candidate):
    """Gradient-boosted trees; categoricals are integer codes declared to LightGBM as categorical.

    Any LightGBM parameter or alias passes through; `num_boost_round` (or an alias such as
    `n_estimators`) caps the trees and `early_stopping_rounds` applies when a validation set is given.
    """

    kind = "lightgbm"
    defaults = {"num_boost_round": 500, "learning_rate": 0.05, "num_leaves": 31, "min_child_samples": 20,
                "early_stopping_rounds": 50, "num_threads": 2}

    def _allowed_params(self) -> set[str]:
        return set(_lightgbm_names())

    def _booster_params(self) -> tuple[dict[str, Any], int, int]:
        """LightGBM's parameters under their main names, the number of rounds, and the early-stopping patience."""
        names, user = _lightgbm_names(), self._check_param_names()
        merged = {names[k]: v for k, v in self.defaults.items()}
        merged.update({names[k]: v for k, v in user.items()})
        rounds, stopping = int(merged.pop("num_iterations")), int(merged.pop("early_stopping_round"))
        merged.update(objective="binary", deterministic=True, force_row_wise=True, verbosity=-1, seed=self.seed)
        return merged, rounds, stopping

    def _matrix(self, X: Any) -> np.ndarray:
        """The float64 matrix LightGBM sees: numerics, then category codes."""
        return tree_matrix(feature_columns(X, self.features), self.features, self.vocabularies_)

    def fit(self, X: Any, y: Any, X_val: Any = None, y_val: Any = None) -> "LightGBMCandidate":
        """Fit on a DataFrame or Arrow table of the feature columns; a validation set enables early stopping."""
        import lightgbm as lgb

        params, rounds, stopping = self._booster_params()
        columns = feature_columns(X, self.features)
        self.vocabularies_ = learn_vocabularies(columns, self.features)
        categorical = list(range(len(self.features.numeric), len(self.features.columns)))
        matrix = tree_matrix(columns, self.features, self.vocabularies_)
        train = lgb.Dataset(matrix, _check_target(y, len(matrix)), categorical_feature=categorical)
        valid_sets, callbacks = [], []
        if X_val is not None and y_val is not None:
            valid = lgb.Dataset(self._matrix(X_val), _check_target(y_val, len(X_val)), reference=train)
            valid_sets, callbacks = [valid], [lgb.early_stopping(stopping, verbose=False)]
        start = time.perf_counter()
        self.booster_ = lgb.train(params, train, num_boost_round=rounds, valid_sets=valid_sets, callbacks=callbacks)
        self.fit_seconds_ = time.perf_counter() - start
        self.best_iteration_ = int(self.booster_.best_iteration or self.booster_.current_iteration())
        self.params_ = {**params, "num_iterations": rounds, "early_stopping_round": stopping}
        self.classes_ = np.array([0, 1])
        log.info("lightgbm: kept %d of %d rounds, fitted in %.1fs", self.best_iteration_, rounds, self.fit_seconds_)
        return self

    def predict_proba(self, X: Any) -> np.ndarray:
        """P(label = 0) and P(label = 1) for each row of a DataFrame, Arrow table or Arrow record batch."""
        p = self.booster_.predict(self._matrix(X), num_iteration=self.best_iteration_)
        return np.column_stack([1.0 - p, p])

    def contributions(self, X: Any) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """TreeSHAP values (path-dependent, as LightGBM's `pred_contrib` gives them) of each feature, the expected
        raw score as the base, and the raw score (log-odds) itself; predict_proba is its sigmoid.

        `tree_shap` computes the same values as `pred_contrib`, many times faster; a model it cannot read
        (linear trees) goes through `pred_contrib`.
        """
        matrix = self._matrix(X)
        raw = self.booster_.predict(matrix, num_iteration=self.best_iteration_, raw_score=True)
        explainer = tree_shap(self.booster_, self.best_iteration_)
        if explainer is not None:
            values, base = explainer(matrix)
            return values, np.full(len(matrix), base), raw
        shap = self.booster_.predict(matrix, num_iteration=self.best_iteration_, pred_contrib=True)
        return shap[:, :-1], shap[:, -1], raw

    def feature_importances(self) -> dict[str, float]:
        gain = self.booster_.feature_importance("gain", iteration=self.best_iteration_)
        return _normalised(dict(zip(self.features.columns, gain)))

    def save(self, directory: Path) -> list[str]:
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        self.booster_.save_model(str(directory / "model.txt"), num_iteration=self.best_iteration_)
        self._write_meta(directory, self._meta(params=self.params_, vocabularies=self.vocabularies_,
                                               best_iteration=self.best_iteration_))
        return ["model.txt", MODEL_JSON]

    @classmethod
    def load(cls, directory: Path) -> "LightGBMCandidate":
        import lightgbm as lgb

        meta = _read_model_json(directory, cls.kind, ("vocabularies", "best_iteration"))
        try:
            booster = lgb.Booster(model_file=str(_required_file(directory, "model.txt")))
        except lgb.basic.LightGBMError as exc:
            raise ModelError(f"{directory}/model.txt is not a LightGBM model: {exc}") from None
        model = cls(FeatureSchema.from_dict(meta["features"]), params=meta["params"], seed=meta["seed"])
        model.booster_, model.vocabularies_ = booster, meta["vocabularies"]
        model.best_iteration_, model.params_ = meta["best_iteration"], meta["params"]
        model.classes_ = np.array([0, 1])
        return model
