"""A PyTorch tabular MLP: embeddings for categoricals, standardised numerics with missing indicators."""

from __future__ import annotations

import copy
import logging
import os
import time
from functools import cache
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa

from ml.core.spec import FeatureSchema
from ml.training.candidates.base import (
    MODEL_JSON,
    ModelError,
    _Candidate,
    _check_target,
    _read_model_json,
    _required_file,
)
from ml.training.encoding import (
    category_codes,
    feature_columns,
    learn_vocabularies,
    numeric_matrix,
)

log = logging.getLogger(__name__)

# Training rows (encoded) kept with the model as the reference that contributions are measured from.
BACKGROUND_ROWS = 100


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

    def _tensors(self, columns: pa.Table, y: np.ndarray | None = None) -> tuple:
        """Standardised numerics (0 where missing) with missing indicators, category codes, and labels if given,
        from the output of `feature_columns`."""
        import torch

        raw = numeric_matrix(columns, self.features)
        numeric = np.hstack([np.where(np.isnan(raw), 0.0, (raw - self.means_) / self.stds_), np.isnan(raw)])
        codes = np.ascontiguousarray(category_codes(columns, self.features, self.vocabularies_))
        out = [numeric.astype(np.float32), codes]
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

    def fit(self, X: Any, y: Any, X_val: Any = None, y_val: Any = None) -> "TorchTabularCandidate":
        """Fit on a DataFrame or Arrow table of the feature columns; a validation set picks the best epoch."""
        import torch

        params = self._resolved_params()
        self.device_ = self._device(params["device"])
        columns = feature_columns(X, self.features)
        raw = numeric_matrix(columns, self.features)
        with np.errstate(all="ignore"):
            means, stds = np.nanmean(raw, axis=0), np.nanstd(raw, axis=0)
        self.means_ = np.nan_to_num(means, nan=0.0)
        self.stds_ = np.where(np.isfinite(stds) & (stds > 0), stds, 1.0)
        self.vocabularies_ = learn_vocabularies(columns, self.features)
        self.architecture_, self.params_ = self._architecture(params), params
        train = self._tensors(columns, _check_target(y, len(columns)))
        valid = None
        if X_val is not None and y_val is not None:
            valid = self._tensors(feature_columns(X_val, self.features), _check_target(y_val, len(X_val)))
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
        keep = np.sort(np.random.default_rng(self.seed).choice(len(columns), min(BACKGROUND_ROWS, len(columns)),
                                                               replace=False))
        self.background_ = {"numeric": train[0][keep].cpu().numpy(), "codes": train[1][keep].cpu().numpy()}
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

    def predict_proba(self, X: Any) -> np.ndarray:
        """P(label = 0) and P(label = 1) for each row of a DataFrame, Arrow table or Arrow record batch."""
        import torch

        columns = feature_columns(X, self.features)
        if columns.num_rows == 0:
            return np.empty((0, 2))
        p = torch.sigmoid(self._logits(*self._tensors(columns))).double().cpu().numpy()
        return np.column_stack([1.0 - p, p])

    def contributions(self, X: Any) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """DeepSHAP values of the MLP after the embedding lookup, in float64 on the CPU: an embedding's dimensions
        are summed into their categorical, a numeric's standardised value and missing indicator into the numeric.

        The reference is the training rows kept at fit (`BACKGROUND_ROWS`), or, for a model saved without them, a
        fixed-seed sample of the rows of X; the base is the mean logit over it. The raw output is the logit;
        predict_proba is its sigmoid, computed in float32 (in bfloat16 on a GPU).
        """
        import torch

        columns = feature_columns(X, self.features)
        n_features = len(self.features.columns)
        if columns.num_rows == 0:
            return np.empty((0, n_features)), np.empty(0), np.empty(0)
        numeric, codes = (t.cpu() for t in self._tensors(columns))
        reference = getattr(self, "background_", None)
        if reference is None:
            keep = np.sort(np.random.default_rng(self.seed).choice(len(numeric), min(BACKGROUND_ROWS, len(numeric)),
                                                                   replace=False))
            reference = {"numeric": numeric[keep].numpy(), "codes": codes[keep].numpy()}
        net = copy.deepcopy(self.module_).cpu().double().eval()  # shap's hooks go on the copy, never the model
        with torch.no_grad():
            inputs = _embedded(net, numeric, codes)
            background = _embedded(net, torch.from_numpy(np.asarray(reference["numeric"], np.float32)),
                                   torch.from_numpy(np.asarray(reference["codes"], np.int64)))
            raw = net.mlp(inputs).squeeze(1).numpy()
        phi, base = deep_shap(net.mlp, inputs, background)
        n_numeric = len(self.features.numeric)
        sources = [*range(n_numeric), *range(n_numeric)]
        sources += [n_numeric + j for j, d in enumerate(self.architecture_["embedding_dims"]) for _ in range(d)]
        to_feature = np.zeros((len(sources), n_features))
        to_feature[np.arange(len(sources)), sources] = 1.0
        return phi @ to_feature, np.full(len(raw), base), raw

    def save(self, directory: Path) -> list[str]:
        from safetensors.torch import save_file

        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        state = {k: v.detach().cpu().contiguous() for k, v in self.module_.state_dict().items()}
        save_file(state, str(directory / "weights.safetensors"))
        background = getattr(self, "background_", None) or {}
        self._write_meta(directory, self._meta(
            params=self.params_, architecture=self.architecture_, vocabularies=self.vocabularies_,
            means=self.means_.tolist(), stds=self.stds_.tolist(), epochs=self.epochs_, best_epoch=self.best_epoch_,
            history=self.history_, background={k: v.tolist() for k, v in background.items()}))
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
        if meta.get("background"):
            model.background_ = {"numeric": np.array(meta["background"]["numeric"], dtype=np.float32),
                                 "codes": np.array(meta["background"]["codes"], dtype=np.int64)}
        module = _tabular_net()(**model.architecture_)
        try:
            module.load_state_dict(load_file(str(_required_file(directory, "weights.safetensors")), device="cpu"))
        except (SafetensorError, RuntimeError) as exc:
            raise ModelError(f"{directory}/weights.safetensors does not fit the saved architecture: {exc}") from None
        model.module_ = module.to(model.device_)
        model.classes_ = np.array([0, 1])
        return model


def _embedded(net, numeric, codes):
    """The MLP's input: the numerics beside each categorical's embedding, as the network's forward builds it."""
    import torch

    parts = [numeric.to(torch.float64), *(emb(codes[:, j]) for j, emb in enumerate(net.embeddings))]
    return torch.cat(parts, dim=1)


def deep_shap(mlp, inputs, background, pairs_per_chunk: int = 1 << 15) -> tuple[np.ndarray, float]:
    """DeepSHAP values of a one-logit network of linear layers and ReLUs, (rows x inputs), and its base value.

    shap's DeepExplainer attributes each row against every background row with its DeepLIFT (rescale) hooks,
    one row at a time; here the same hooks run on chunks of (row, background row) pairs at once, which gives the
    same values many times faster. Each row's values add up to its logit minus the mean background logit.
    """
    import shap
    import torch
    from shap.explainers._deep.deep_pytorch import add_interim_values, deeplift_grad

    explainer = shap.DeepExplainer(mlp, background).explainer  # the PyTorch implementation behind it
    n_ref = len(background)
    rows = max(1, pairs_per_chunk // n_ref)
    phi = np.empty(tuple(inputs.shape), dtype=np.float64)
    handles = explainer.add_handles(mlp, add_interim_values, deeplift_grad)
    try:
        for start in range(0, len(inputs), rows):
            chunk = inputs[start:start + rows]
            joint = torch.cat([chunk.repeat_interleave(n_ref, dim=0), background.repeat(len(chunk), 1)])
            joint.requires_grad_()
            grad = torch.autograd.grad(mlp(joint).sum(), joint)[0]
            half = len(chunk) * n_ref
            pairs = grad[:half] * (joint[:half] - joint[half:]).detach()
            phi[start:start + len(chunk)] = pairs.reshape(len(chunk), n_ref, -1).mean(dim=1).numpy()
    finally:
        for handle in handles:
            handle.remove()
        explainer.remove_attributes(mlp)
    return phi, float(np.asarray(explainer.expected_value).reshape(-1)[0])
