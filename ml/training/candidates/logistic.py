"""A logistic-regression baseline stored as plain arrays."""

from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from ml.core.spec import FeatureSchema
from ml.training.candidates.base import (
    MODEL_JSON,
    _Candidate,
    _check_target,
    _normalised,
    _read_model_json,
)
from ml.training.encoding import category_strings, feature_columns, numeric_matrix

MISSING = "missing"  # what a missing category is imputed as, and so one-hot encoded as

log = logging.getLogger(__name__)


class LogisticCandidate(_Candidate):
    """Imputed, standardised numerics and one-hot categoricals into a logistic regression.

    The fitted pipeline is reduced to plain arrays (imputer statistics, scaler, categories, coefficients),
    which are what `predict_proba` uses and what `save` writes as JSON.
    """

    kind = "logistic"
    defaults = {"C": 1.0, "max_iter": 1000, "class_weight": None, "missing_indicator": True, "tol": 1e-4}

    def _frame(self, X: Any) -> pd.DataFrame:
        """The encoded feature columns as the frame the scikit-learn pipeline is fitted on, NaN where missing."""
        columns = feature_columns(X, self.features)
        frame = pd.DataFrame(numeric_matrix(columns, self.features), columns=list(self.features.numeric))
        for col in self.features.categorical:
            frame[col] = pd.Series(category_strings(columns, col), dtype=object).fillna(np.nan)
        return frame

    def fit(self, X: Any, y: Any, X_val: Any = None, y_val: Any = None) -> "LogisticCandidate":
        """Fit on a DataFrame or Arrow table of the feature columns; a validation set is not used."""
        from sklearn.compose import ColumnTransformer
        from sklearn.impute import SimpleImputer
        from sklearn.linear_model import LogisticRegression
        from sklearn.pipeline import Pipeline, make_pipeline
        from sklearn.preprocessing import OneHotEncoder, StandardScaler

        params = self._resolved_params()
        frame = self._frame(X)
        steps = {
            "num": make_pipeline(SimpleImputer(strategy="median", add_indicator=bool(params["missing_indicator"]),
                                               keep_empty_features=True), StandardScaler()),
            "cat": make_pipeline(SimpleImputer(strategy="constant", fill_value=MISSING),
                                 OneHotEncoder(handle_unknown="ignore")),
        }
        groups = {"num": list(self.features.numeric), "cat": list(self.features.categorical)}
        prep = ColumnTransformer([(name, steps[name], cols) for name, cols in groups.items() if cols])
        clf = LogisticRegression(C=params["C"], max_iter=params["max_iter"], class_weight=params["class_weight"],
                                 tol=params["tol"], random_state=self.seed)
        start = time.perf_counter()
        self.pipeline_ = Pipeline([("prep", prep), ("clf", clf)]).fit(frame, _check_target(y, len(frame)))
        self.fit_seconds_ = time.perf_counter() - start
        self.params_, self.linear_ = params, self._extract(self.pipeline_)
        # Each design column's training mean: the reference that contributions are measured from.
        self.linear_["design_mean"] = self._design(X).mean(axis=0).tolist()
        self.classes_ = np.array([0, 1])
        return self

    def _extract(self, pipeline) -> dict[str, Any]:
        prep, clf = pipeline.named_steps["prep"], pipeline.named_steps["clf"]
        out = {"medians": [], "indicator_columns": [], "scale_mean": [], "scale": [], "categories": [],
               "coef": clf.coef_[0].tolist(), "intercept": float(clf.intercept_[0])}
        if self.features.numeric:
            imputer, scaler = (step for _, step in prep.named_transformers_["num"].steps)
            out.update(medians=imputer.statistics_.tolist(), scale_mean=scaler.mean_.tolist(), scale=scaler.scale_.tolist(),
                       indicator_columns=imputer.indicator_.features_.tolist() if imputer.add_indicator else [])
        if self.features.categorical:
            onehot = prep.named_transformers_["cat"].steps[1][1]
            out["categories"] = [[str(v) for v in cats] for cats in onehot.categories_]
        return out

    def _design(self, X: Any) -> np.ndarray:
        """The expanded design matrix the regression sees, rebuilt from the plain parameters."""
        lin, columns = self.linear_, feature_columns(X, self.features)
        raw = numeric_matrix(columns, self.features)
        missing = np.isnan(raw)
        numeric = np.where(missing, np.asarray(lin["medians"]), raw)
        numeric = np.hstack([numeric, missing[:, lin["indicator_columns"]].astype(np.float64)])
        blocks = [(numeric - np.asarray(lin["scale_mean"])) / np.asarray(lin["scale"])]
        for col, cats in zip(self.features.categorical, lin["categories"]):
            values = category_strings(columns, col, missing=MISSING)
            blocks.append((values[:, None] == np.asarray(cats, dtype=object)[None, :]).astype(np.float64))
        return np.hstack(blocks)

    def predict_proba(self, X: Any) -> np.ndarray:
        """P(label = 0) and P(label = 1) for each row of a DataFrame, Arrow table or Arrow record batch."""
        from scipy.special import expit

        p = expit(self._design(X) @ np.asarray(self.linear_["coef"]) + self.linear_["intercept"])
        return np.column_stack([1.0 - p, p])

    def _design_sources(self) -> list[str]:
        """The feature each design column comes from: a numeric's standardised value and its missing
        indicator both belong to the numeric, a category's one-hot column to its categorical."""
        lin = self.linear_
        sources = [*self.features.numeric, *(self.features.numeric[i] for i in lin["indicator_columns"])]
        return sources + [col for col, cats in zip(self.features.categorical, lin["categories"]) for _ in cats]

    def contributions(self, X: Any) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Exact contributions of the linear model: coefficient x (design value - its training mean), summed over
        the design columns of each feature; the base is the log-odds at the training means, and the raw output
        the log-odds, whose sigmoid predict_proba is. A model saved without the training means is measured from
        a design of zeros: the numerics' means (standardised, so 0) and no category."""
        lin = self.linear_
        design, coef = self._design(X), np.asarray(lin["coef"])
        center = np.asarray(lin.get("design_mean") or np.zeros(len(coef)))
        positions = {col: j for j, col in enumerate(self.features.columns)}
        to_feature = np.zeros((len(coef), len(positions)))
        to_feature[np.arange(len(coef)), [positions[col] for col in self._design_sources()]] = 1.0
        values = ((design - center) * coef) @ to_feature
        base = np.full(len(design), lin["intercept"] + float(center @ coef))
        return values, base, design @ coef + lin["intercept"]

    def feature_importances(self) -> dict[str, float]:
        scores = dict.fromkeys(self.features.columns, 0.0)
        for col, c in zip(self._design_sources(), np.abs(np.asarray(self.linear_["coef"]))):
            scores[col] += float(c)
        return _normalised(scores)

    def save(self, directory: Path) -> list[str]:
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        self._write_meta(directory, self._meta(params=self.params_, linear=self.linear_))
        return [MODEL_JSON]

    @classmethod
    def load(cls, directory: Path) -> "LogisticCandidate":
        meta = _read_model_json(directory, cls.kind, ("linear",))
        model = cls(FeatureSchema.from_dict(meta["features"]), params=meta["params"], seed=meta["seed"])
        model.params_, model.linear_ = meta["params"], meta["linear"]
        model.classes_ = np.array([0, 1])
        return model
