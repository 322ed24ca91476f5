"""Training candidates behind one scikit-learn interface: LightGBM, a PyTorch tabular MLP, and a logistic baseline.

Each candidate takes a DataFrame holding the columns of a `FeatureSchema` and saves itself to a directory
as plain files (LightGBM text, safetensors, JSON) with a `model.json` naming its kind, so nothing is ever
unpickled. Importing this module loads only scikit-learn's base classes; LightGBM, torch and the rest of
scikit-learn load when a candidate is built, fitted or loaded.
"""

from __future__ import annotations

import json
import logging
import os
import time
from functools import cache
from pathlib import Path
from typing import Any, ClassVar, Mapping

import numpy as np
import pandas as pd
from sklearn.base import BaseEstimator, ClassifierMixin

from ml.spec import FeatureSchema

log = logging.getLogger(__name__)

MODEL_JSON = "model.json"


class ModelError(ValueError):
    """A candidate was asked for with a bad kind, parameter or input, or its saved files are unusable."""


# -- shared input handling ------------------------------------------------------------------------
def _check_frame(X: Any, features: FeatureSchema) -> pd.DataFrame:
    if not isinstance(X, pd.DataFrame):
        raise ModelError(f"X must be a pandas DataFrame with columns {list(features.columns)}, got {type(X).__name__}")
    missing = [c for c in features.columns if c not in X.columns]
    if missing:
        raise ModelError(f"X is missing feature columns {missing}; the model needs {list(features.columns)}")
    return X


def _numeric_matrix(X: pd.DataFrame, features: FeatureSchema) -> np.ndarray:
    """The numeric columns as float64, NaN where missing."""
    out = np.empty((len(X), len(features.numeric)), dtype=np.float64)
    for j, col in enumerate(features.numeric):
        try:
            out[:, j] = X[col].to_numpy(dtype=np.float64, na_value=np.nan)
        except (TypeError, ValueError) as exc:
            raise ModelError(f"numeric feature {col!r} holds values that are not numbers: {exc}") from None
    return out


def _category_strings(X: pd.DataFrame, col: str) -> pd.Series:
    return X[col].astype("string")


def _learn_vocabularies(X: pd.DataFrame, features: FeatureSchema) -> dict[str, list[str]]:
    """The sorted distinct values of each categorical column, missing values left out."""
    return {col: sorted(_category_strings(X, col).dropna().unique().tolist()) for col in features.categorical}


def _category_codes(X: pd.DataFrame, vocabularies: Mapping[str, list[str]], features: FeatureSchema) -> np.ndarray:
    """Integer codes per categorical column, in the schema's column order: 1..K for known values, 0 for
    missing or unseen values."""
    out = np.zeros((len(X), len(features.categorical)), dtype=np.int64)
    for j, col in enumerate(features.categorical):
        out[:, j] = pd.Categorical(_category_strings(X, col), categories=vocabularies[col]).codes.astype(np.int64) + 1
    return out


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

    def predict(self, X: pd.DataFrame) -> np.ndarray:
        """Class labels at a 0.5 probability threshold."""
        return (self.predict_proba(X)[:, 1] >= 0.5).astype(np.int64)

    def feature_importances(self) -> dict[str, float] | None:
        return None


# -- LightGBM ---------------------------------------------------------------------------------------
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

    def _matrix(self, X: pd.DataFrame) -> np.ndarray:
        X = _check_frame(X, self.features)
        return np.hstack([_numeric_matrix(X, self.features), _category_codes(X, self.vocabularies_, self.features)])

    def fit(self, X: pd.DataFrame, y: Any, X_val: pd.DataFrame | None = None, y_val: Any = None) -> "LightGBMCandidate":
        import lightgbm as lgb

        params, rounds, stopping = self._booster_params()
        X = _check_frame(X, self.features)
        self.vocabularies_ = _learn_vocabularies(X, self.features)
        categorical = list(range(len(self.features.numeric), len(self.features.columns)))
        train = lgb.Dataset(self._matrix(X), _check_target(y, len(X)), categorical_feature=categorical)
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

    def predict_proba(self, X: pd.DataFrame) -> np.ndarray:
        p = self.booster_.predict(self._matrix(X), num_iteration=self.best_iteration_)
        return np.column_stack([1.0 - p, p])

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


# -- PyTorch tabular MLP ----------------------------------------------------------------------------
@cache
def _tabular_net() -> type:
    """The torch module class, defined on first use so importing this module does not import torch."""
    import torch
    from torch import nn

    class TabularNet(nn.Module):
        """Embeddings per categorical, concatenated with numerics, into an MLP giving one logit."""

        def __init__(self, n_inputs: int, cardinalities: list[int], embedding_dims: list[int],
                     hidden: list[int], dropout: float):
            super().__init__()
            self.embeddings = nn.ModuleList(nn.Embedding(c, d) for c, d in zip(cardinalities, embedding_dims))
            width, layers = n_inputs + sum(embedding_dims), []
            for size in hidden:
                layers += [nn.Linear(width, size), nn.ReLU(), nn.Dropout(dropout)]
                width = size
            self.mlp = nn.Sequential(*layers, nn.Linear(width, 1))

        def forward(self, numeric: torch.Tensor, codes: torch.Tensor) -> torch.Tensor:
            parts = [numeric, *(emb(codes[:, j]) for j, emb in enumerate(self.embeddings))]
            return self.mlp(torch.cat(parts, dim=1)).squeeze(1)

    return TabularNet


class TorchTabularCandidate(_Candidate):
    """An MLP over standardised numerics, missing indicators and categorical embeddings."""

    kind = "torch_mlp"
    defaults = {"hidden_sizes": [128, 64], "dropout": 0.1, "lr": 1e-3, "weight_decay": 1e-5, "batch_size": 1024,
                "max_epochs": 30, "patience": 4, "embedding_dim": None, "device": "auto", "num_threads": 2}

    def _tensors(self, X: pd.DataFrame, y: np.ndarray | None = None) -> tuple:
        """Standardised numerics (0 where missing) with missing indicators, category codes, and labels if given."""
        import torch

        X = _check_frame(X, self.features)
        raw = _numeric_matrix(X, self.features)
        numeric = np.hstack([np.where(np.isnan(raw), 0.0, (raw - self.means_) / self.stds_), np.isnan(raw)])
        out = [numeric.astype(np.float32), _category_codes(X, self.vocabularies_, self.features)]
        out += [] if y is None else [y.astype(np.float32)]
        return tuple(torch.from_numpy(a).to(self.device_) for a in out)

    def _architecture(self, params: dict[str, Any]) -> dict[str, Any]:
        cards = [len(self.vocabularies_[c]) + 1 for c in self.features.categorical]
        dim = params["embedding_dim"]
        return {"n_inputs": 2 * len(self.features.numeric), "cardinalities": cards,
                "embedding_dims": [int(dim) if dim else min(16, (c + 1) // 2 + 1) for c in cards],
                "hidden": [int(h) for h in params["hidden_sizes"]], "dropout": float(params["dropout"])}

    @staticmethod
    def _device(requested: str) -> str:
        import torch

        if requested not in ("auto", "cpu", "cuda"):
            raise ModelError(f"device must be 'auto', 'cpu' or 'cuda', got {requested!r}")
        if requested == "cuda" and not torch.cuda.is_available():
            raise ModelError("device 'cuda' was asked for but torch sees no CUDA GPU; use device 'auto' or 'cpu'")
        if requested == "auto":
            return "cuda" if torch.cuda.is_available() else "cpu"
        return requested

    def _autocast(self):
        import torch

        return torch.autocast("cuda", dtype=torch.bfloat16, enabled=self.device_ == "cuda")

    def fit(self, X: pd.DataFrame, y: Any, X_val: pd.DataFrame | None = None, y_val: Any = None) -> "TorchTabularCandidate":
        import torch

        params = self._resolved_params()
        self.device_ = self._device(params["device"])
        X = _check_frame(X, self.features)
        raw = _numeric_matrix(X, self.features)
        with np.errstate(all="ignore"):
            means, stds = np.nanmean(raw, axis=0), np.nanstd(raw, axis=0)
        self.means_ = np.nan_to_num(means, nan=0.0)
        self.stds_ = np.where(np.isfinite(stds) & (stds > 0), stds, 1.0)
        self.vocabularies_ = _learn_vocabularies(X, self.features)
        self.architecture_, self.params_ = self._architecture(params), params
        train = self._tensors(X, _check_target(y, len(X)))
        valid = self._tensors(X_val, _check_target(y_val, len(X_val))) if X_val is not None and y_val is not None else None
        threads, deterministic = torch.get_num_threads(), torch.are_deterministic_algorithms_enabled()
        warn_only = torch.is_deterministic_algorithms_warn_only_enabled()
        devices = [torch.cuda.current_device()] if self.device_ == "cuda" else []
        if devices:
            os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")  # cuBLAS is deterministic only with this
        torch.set_num_threads(int(params["num_threads"]))
        torch.use_deterministic_algorithms(True, warn_only=True)
        try:
            with torch.random.fork_rng(devices=devices):
                torch.manual_seed(self.seed)
                self._train(train, valid, params)
        finally:
            torch.set_num_threads(threads)
            torch.use_deterministic_algorithms(deterministic, warn_only=warn_only)
        self.classes_ = np.array([0, 1])
        return self

    def _train(self, train: tuple, valid: tuple | None, params: dict[str, Any]) -> None:
        import torch

        self.module_ = _tabular_net()(**self.architecture_).to(self.device_)
        optimizer = torch.optim.AdamW(self.module_.parameters(), lr=params["lr"], weight_decay=params["weight_decay"])
        loss_fn, generator = torch.nn.BCEWithLogitsLoss(), torch.Generator().manual_seed(self.seed)
        n, batch = len(train[2]), int(params["batch_size"])
        best_loss, best_state, stale, start = float("inf"), None, 0, time.perf_counter()
        self.history_ = []
        for epoch in range(1, int(params["max_epochs"]) + 1):
            self.module_.train()
            order = torch.randperm(n, generator=generator).to(self.device_)
            total = torch.zeros((), device=self.device_)
            for i in range(0, n, batch):
                idx = order[i:i + batch]
                with self._autocast():
                    loss = loss_fn(self.module_(train[0][idx], train[1][idx]).float(), train[2][idx])
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                optimizer.step()
                total += loss.detach() * len(idx)
            val_loss = float(loss_fn(self._logits(*valid[:2]), valid[2])) if valid is not None else float("nan")
            log.info("torch_mlp epoch %d/%d: train log loss %.4f, validation log loss %.4f (%.1fs)",
                     epoch, params["max_epochs"], float(total) / n, val_loss, time.perf_counter() - start)
            self.epochs_ = epoch
            self.history_.append({"epoch": epoch, "train_log_loss": float(total) / n, "validation_log_loss": val_loss})
            if valid is None:
                continue
            if val_loss < best_loss:
                best_loss, stale, self.best_epoch_ = val_loss, 0, epoch
                best_state = {k: v.detach().clone() for k, v in self.module_.state_dict().items()}
            else:
                stale += 1
                if stale >= int(params["patience"]):
                    break
        if best_state is not None:
            self.module_.load_state_dict(best_state)
        else:
            self.best_epoch_ = self.epochs_
        self.fit_seconds_ = time.perf_counter() - start

    def _logits(self, numeric, codes):
        """Logits in float32, in inference mode and in chunks."""
        import torch

        self.module_.eval()
        with torch.no_grad(), self._autocast():
            return torch.cat([self.module_(numeric[i:i + 65536], codes[i:i + 65536]).float()
                              for i in range(0, len(numeric), 65536)])

    def predict_proba(self, X: pd.DataFrame) -> np.ndarray:
        import torch

        if len(X) == 0:
            _check_frame(X, self.features)
            return np.empty((0, 2))
        p = torch.sigmoid(self._logits(*self._tensors(X))).double().cpu().numpy()
        return np.column_stack([1.0 - p, p])

    def save(self, directory: Path) -> list[str]:
        from safetensors.torch import save_file

        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        state = {k: v.detach().cpu().contiguous() for k, v in self.module_.state_dict().items()}
        save_file(state, str(directory / "weights.safetensors"))
        self._write_meta(directory, self._meta(
            params=self.params_, architecture=self.architecture_, vocabularies=self.vocabularies_,
            means=self.means_.tolist(), stds=self.stds_.tolist(), epochs=self.epochs_, best_epoch=self.best_epoch_,
            history=self.history_))
        return ["weights.safetensors", MODEL_JSON]

    @classmethod
    def load(cls, directory: Path, device: str | None = None) -> "TorchTabularCandidate":
        """Rebuild from model.json and the safetensors weights; a model trained for 'cuda' falls back to 'auto'."""
        from safetensors import SafetensorError
        from safetensors.torch import load_file

        meta = _read_model_json(directory, cls.kind, ("architecture", "vocabularies", "means", "stds", "epochs", "best_epoch"))
        model = cls(FeatureSchema.from_dict(meta["features"]), params=meta["params"], seed=meta["seed"])
        model.device_ = cls._device(device or {"cuda": "auto"}.get(meta["params"]["device"], meta["params"]["device"]))
        model.params_, model.architecture_, model.vocabularies_ = meta["params"], meta["architecture"], meta["vocabularies"]
        model.means_, model.stds_ = np.array(meta["means"], dtype=np.float64), np.array(meta["stds"], dtype=np.float64)
        model.epochs_, model.best_epoch_, model.history_ = meta["epochs"], meta["best_epoch"], meta.get("history", [])
        module = _tabular_net()(**model.architecture_)
        try:
            module.load_state_dict(load_file(str(_required_file(directory, "weights.safetensors")), device="cpu"))
        except (SafetensorError, RuntimeError) as exc:
            raise ModelError(f"{directory}/weights.safetensors does not fit the saved architecture: {exc}") from None
        model.module_ = module.to(model.device_)
        model.classes_ = np.array([0, 1])
        return model


# -- logistic regression baseline -------------------------------------------------------------------
class LogisticCandidate(_Candidate):
    """Imputed, standardised numerics and one-hot categoricals into a logistic regression.

    The fitted pipeline is reduced to plain arrays (imputer statistics, scaler, categories, coefficients),
    which are what `predict_proba` uses and what `save` writes as JSON.
    """

    kind = "logistic"
    defaults = {"C": 1.0, "max_iter": 1000, "class_weight": None, "missing_indicator": True, "tol": 1e-4}

    def _frame(self, X: pd.DataFrame) -> pd.DataFrame:
        X = _check_frame(X, self.features)
        numeric = pd.DataFrame(_numeric_matrix(X, self.features), columns=list(self.features.numeric), index=X.index)
        cats = {c: _category_strings(X, c).astype(object).where(lambda s: s.notna(), np.nan) for c in self.features.categorical}
        return pd.concat([numeric, pd.DataFrame(cats, index=X.index)], axis=1)

    def fit(self, X: pd.DataFrame, y: Any, X_val: pd.DataFrame | None = None, y_val: Any = None) -> "LogisticCandidate":
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
            "cat": make_pipeline(SimpleImputer(strategy="constant", fill_value="missing"),
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

    def _design(self, X: pd.DataFrame) -> np.ndarray:
        """The expanded design matrix the regression sees, rebuilt from the plain parameters."""
        lin, frame = self.linear_, self._frame(X)
        raw = frame[list(self.features.numeric)].to_numpy(dtype=np.float64)
        missing = np.isnan(raw)
        numeric = np.where(missing, np.asarray(lin["medians"]), raw)
        numeric = np.hstack([numeric, missing[:, lin["indicator_columns"]].astype(np.float64)])
        blocks = [(numeric - np.asarray(lin["scale_mean"])) / np.asarray(lin["scale"])]
        for col, cats in zip(self.features.categorical, lin["categories"]):
            values = frame[col].fillna("missing").to_numpy(dtype=object)
            blocks.append((values[:, None] == np.asarray(cats, dtype=object)[None, :]).astype(np.float64))
        return np.hstack(blocks)

    def predict_proba(self, X: pd.DataFrame) -> np.ndarray:
        from scipy.special import expit

        p = expit(self._design(X) @ np.asarray(self.linear_["coef"]) + self.linear_["intercept"])
        return np.column_stack([1.0 - p, p])

    def feature_importances(self) -> dict[str, float]:
        lin, coef = self.linear_, np.abs(np.asarray(self.linear_["coef"]))
        sources = [*self.features.numeric, *(self.features.numeric[i] for i in lin["indicator_columns"])]
        sources += [col for col, cats in zip(self.features.categorical, lin["categories"]) for _ in cats]
        scores = dict.fromkeys(self.features.columns, 0.0)
        for col, c in zip(sources, coef):
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


# -- construction and loading -----------------------------------------------------------------------
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
