"""Reason codes: contributions that add up to each candidate's raw output, the top reasons of a row in plain
words, and the rows a shard keeps for the day's top fraction."""

from __future__ import annotations

from datetime import date
from decimal import Decimal

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from ml.core.spec import FeatureSchema, ModelSpec
from ml.scoring.explain import (
    Contributions,
    ExplainError,
    contributions,
    format_values,
    mean_abs_contributions,
    top_reasons,
)
from ml.training.candidates import CANDIDATE_KINDS, build_candidate, load_candidate
from ml.training.encoding import feature_columns

FEATURES = FeatureSchema(numeric=("x0", "x1", "x2", "noise"), categorical=("plan", "region"))
KINDS = sorted(CANDIDATE_KINDS)
PARAMS = {
    "lightgbm": {"learning_rate": 0.1, "num_boost_round": 60, "early_stopping_rounds": 10},
    "torch_mlp": {"device": "cpu", "max_epochs": 12, "hidden_sizes": [32, 16], "batch_size": 128, "lr": 0.01},
    "logistic": {},
}
PLAN_EFFECT = {"basic": 0.9, "standard": 0.0, "premium": -0.9}


def _rows(n: int, seed: int) -> tuple[pd.DataFrame, np.ndarray]:
    """Rows whose label follows x0 strongly, x1 and plan less, x2 a little, and not `noise`; some values missing."""
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, 4))
    plan = rng.choice(list(PLAN_EFFECT), size=n).astype(object)
    logit = -0.4 + 1.6 * x[:, 0] - 0.8 * x[:, 1] + 0.3 * x[:, 2] + np.vectorize(PLAN_EFFECT.get)(plan)
    y = (rng.random(n) < 1 / (1 + np.exp(-logit))).astype(np.int64)
    x[rng.random((n, 4)) < 0.05] = np.nan
    plan[rng.random(n) < 0.03] = None
    region = rng.choice(["north", "south", "east"], size=n)
    return pd.DataFrame(x, columns=list(FEATURES.numeric)).assign(plan=plan, region=region), y


@pytest.fixture(scope="module")
def data() -> dict:
    X, y = _rows(3000, seed=5)
    return {"train": (X[:2000], y[:2000]), "valid": (X[2000:2500], y[2000:2500]),
            "test": X[2500:].reset_index(drop=True)}


@pytest.fixture(scope="module")
def fitted(data) -> dict:
    return {kind: build_candidate(kind, PARAMS[kind], FEATURES, seed=3).fit(*data["train"], *data["valid"])
            for kind in KINDS}


# -- contributions ---------------------------------------------------------------------------------
@pytest.mark.parametrize("kind", KINDS)
def test_contributions_and_base_add_up_to_the_raw_output_whose_sigmoid_is_the_score(kind, fitted, data) -> None:
    model, X = fitted[kind], data["test"]
    c = contributions(model, X)
    assert c.features == list(FEATURES.columns)
    assert c.values.shape == (len(X), len(FEATURES.columns)) and c.base.shape == c.raw.shape == (len(X),)
    # Exact in float64 for every kind: TreeSHAP and the linear model by construction, DeepLIFT's rescale rule
    # on a network of linear layers and ReLUs up to the rounding of its float64 arithmetic.
    np.testing.assert_allclose(c.values.sum(axis=1) + c.base, c.raw, rtol=0, atol=1e-9)
    # predict_proba is the sigmoid of that raw output; the MLP's scores come out of float32 arithmetic.
    tolerance = 1e-6 if kind == "torch_mlp" else 1e-12
    np.testing.assert_allclose(1 / (1 + np.exp(-c.raw)), model.predict_proba(X)[:, 1], rtol=0, atol=tolerance)
    assert np.ptp(c.base) == 0 and np.abs(c.values).sum(axis=0).min() >= 0


@pytest.mark.parametrize("kind", KINDS)
def test_the_strongest_feature_leads_the_global_summary_and_noise_trails_it(kind, fitted, data) -> None:
    summary = mean_abs_contributions(fitted[kind], data["test"], max_rows=300)
    assert list(summary)[0] == "x0", (kind, summary)
    assert list(summary.values()) == sorted(summary.values(), reverse=True)
    assert summary["x0"] > 2 * summary["x2"] and summary["x1"] > summary["noise"], (kind, summary)
    assert summary == mean_abs_contributions(fitted[kind], data["test"], max_rows=300)  # a fixed-seed sample


@pytest.mark.parametrize("kind", KINDS)
def test_an_arrow_batch_and_a_reloaded_model_give_the_same_contributions(kind, fitted, data, tmp_path) -> None:
    model, X = fitted[kind], data["test"].head(200)
    frame = contributions(model, X)
    batch = pa.RecordBatch.from_pandas(X, preserve_index=False)
    model.save(tmp_path)
    for other in (contributions(model, batch), contributions(load_candidate(tmp_path), batch)):
        np.testing.assert_allclose(other.values, frame.values, rtol=0, atol=1e-12)
        np.testing.assert_allclose(other.base, frame.base, rtol=0, atol=1e-12)


@pytest.mark.parametrize("params", [{}, {"zero_as_missing": True}, {"use_missing": False}],
                         ids=["nan-missing", "zero-missing", "no-missing"])
def test_lightgbm_contributions_are_lightgbms_own_treeshap_values(params, data, monkeypatch) -> None:
    """The tabulated TreeSHAP decides splits as LightGBM does (missing values, zeros, unseen categories), with
    every leaf tabulated and with none."""
    from ml.training.candidates import treeshap

    model = build_candidate("lightgbm", {**PARAMS["lightgbm"], "num_leaves": 15, **params}, FEATURES, seed=3)
    model.fit(*data["train"], *data["valid"])
    X = data["test"].copy()
    X.loc[X.index % 5 == 0, "plan"] = "enterprise"  # unseen
    X.loc[X.index % 7 == 0, "x1"] = 0.0
    X.loc[X.index % 11 == 0, "region"] = None
    expected = model.booster_.predict(model._matrix(X), num_iteration=model.best_iteration_, pred_contrib=True)
    for entries in (treeshap._TABLE_ENTRIES, 0):  # 0: every leaf computes each row's values as it comes
        monkeypatch.setattr(treeshap, "_TABLE_ENTRIES", entries)
        monkeypatch.setattr(treeshap, "_EXPLAINERS", {})
        c = contributions(model, X)
        np.testing.assert_allclose(c.values, expected[:, :-1], rtol=0, atol=1e-12)
        np.testing.assert_allclose(c.base, expected[:, -1], rtol=0, atol=1e-12)


def test_logistic_contributions_are_measured_from_the_training_means(fitted, data) -> None:
    X = data["train"][0]
    c = contributions(fitted["logistic"], X)
    np.testing.assert_allclose(c.values.mean(axis=0), 0.0, atol=1e-9)
    np.testing.assert_allclose(c.raw.mean(), c.base[0], atol=1e-9)


def test_torch_contributions_are_shap_deep_explainers_values(fitted, data) -> None:
    """The chunked DeepLIFT pass gives what shap's DeepExplainer gives row by row, against the kept reference."""
    import copy

    import shap
    import torch

    from ml.training.candidates.torch_mlp import _embedded, deep_shap

    model, X = fitted["torch_mlp"], data["test"].head(12)
    net = copy.deepcopy(model.module_).double().eval()
    numeric, codes = model._tensors(feature_columns(X, FEATURES))
    with torch.no_grad():
        inputs = _embedded(net, numeric, codes)
        background = _embedded(net, torch.from_numpy(model.background_["numeric"]),
                               torch.from_numpy(model.background_["codes"]))
    ours, base = deep_shap(net.mlp, inputs, background, pairs_per_chunk=250)
    theirs = shap.DeepExplainer(net.mlp, background).shap_values(inputs, check_additivity=False)
    np.testing.assert_allclose(ours, np.asarray(theirs).reshape(ours.shape), rtol=0, atol=1e-10)
    assert len(model.background_["numeric"]) == 100
    assert base == pytest.approx(contributions(model, X).base[0], abs=1e-12)


def test_explaining_something_that_is_not_a_candidate_says_so(data) -> None:
    with pytest.raises(ExplainError, match="not a fitted candidate"):
        contributions(object(), data["test"])
    empty = contributions(build_candidate("logistic", {}, FEATURES), data["test"].head(0))
    assert empty.values.shape == (0, len(FEATURES.columns))


# -- top reasons -----------------------------------------------------------------------------------
def _contributions(values: list[list[float]]) -> Contributions:
    v = np.array(values, dtype=np.float64)
    return Contributions(values=v, features=["tickets", "price", "plan", "ratio"], base=np.full(len(v), -2.0),
                         raw=v.sum(axis=1) - 2.0)


def test_top_reasons_rank_by_absolute_contribution_with_the_value_in_plain_words() -> None:
    X = pa.table({
        "tickets": pa.array([2, None, 7], pa.int32()),
        "price": pa.array([Decimal("49.99"), Decimal("50.00"), None], pa.decimal128(12, 2)),
        "plan": pa.array(["basic", None, "premium"]),
        "ratio": pa.array([0.123456, 12.3456, float("nan")]),
    })
    c = _contributions([[0.11, -0.5, 0.02, 0.3], [0.0, 0.2, -0.2, 0.0], [0.0, 0.0, 0.0, 0.0]])
    top = top_reasons(c, X, k=3).to_pylist()
    assert [(r["row"], r["reason_rank"], r["feature"], r["feature_value"], r["contribution"]) for r in top] == [
        (0, 1, "price", "49.99", -0.5), (0, 2, "ratio", "0.123", 0.3), (0, 3, "tickets", "2", 0.11),
        # a tie keeps the features' order; zero contributions are no reasons; a row with none has none
        (1, 1, "price", "50", 0.2), (1, 2, "plan", "missing", -0.2),
    ]
    assert {r["base_value"] for r in top} == {-2.0}
    assert top_reasons(c, X, k=0).num_rows == 0
    assert top_reasons(c, X, k=10).num_rows == 4 + 2  # at most every feature
    frame = X.to_pandas()
    assert top_reasons(c, frame, k=3).to_pylist() == top
    with pytest.raises(ExplainError, match="3 rows of contributions cannot explain 2 rows"):
        top_reasons(c, X.slice(0, 2), k=3)


def test_values_read_as_whole_numbers_two_decimals_or_three_significant_digits() -> None:
    floats = pa.array([2.0, 0.11, 0.123456, 12.3456, -0.5, None, float("nan"), 1234.5, -3.0, 0.0000123, 0.0])
    assert format_values(floats).to_pylist() == [
        "2", "0.11", "0.123", "12.35", "-0.5", "missing", "missing", "1234.5", "-3", "0.0000123", "0"]
    assert format_values(pa.array([True, None, False])).to_pylist() == ["true", "missing", "false"]
    assert format_values(pa.array([date(2025, 1, 2), None])).to_pylist() == ["2025-01-02", "missing"]
    assert format_values(pa.chunked_array([[1, None], [-7]], pa.int64())).to_pylist() == ["1", "missing", "-7"]


# -- the rows a shard keeps for the day's top fraction ---------------------------------------------
def _spec(**explain) -> ModelSpec:
    return ModelSpec.model_validate({
        "name": "toy", "entity_key": "customer_id", "time_column": "as_of_date",
        "features": {"relation": "toy_features"}, "label": {"column": "churned"},
        "candidates": [{"name": "lightgbm", "kind": "lightgbm"}], "explain": explain,
        "scoring": {"batch_rows": 1000},
    })


@pytest.mark.parametrize("rows, keep", [("top_fraction", 31), ("all", None)])
def test_a_shard_explains_its_best_rows_across_batches_or_all_of_them(rows, keep, fitted, data, tmp_path) -> None:
    from ml.scoring.reasons import DayReasons
    from ml.scoring.score import _prediction_batch

    spec, model, day = _spec(top_k=2, rows=rows, fraction=0.1), fitted["lightgbm"], date(2025, 3, 1)
    X = data["test"].assign(customer_id=np.arange(1000, 1500), as_of_date=day)
    constants = {"model_name": "toy", "model_version": "v0001", "threshold": 0.5, "scored_at": pd.Timestamp(day)}
    reasons = DayReasons(model, spec, day, constants, tmp_path, shard=0, keep=keep)
    scores = []
    for start in range(0, len(X), 70):  # batches much smaller than the top
        batch = pa.RecordBatch.from_pandas(X.iloc[start:start + 70], preserve_index=False)
        scored = _prediction_batch(batch, model, spec, day, constants)
        reasons.add(batch, scored)
        scores += scored.column("score").to_pylist()
    reasons.close(len(X))
    table = pq.read_table(tmp_path / "shard-0.parquet")
    assert table.schema.names == ["entity_id", "as_of_date", "model_name", "model_version", "reason_rank",
                                  "feature", "feature_value", "contribution", "base_value"]
    ranked = sorted(zip(scores, X["customer_id"].astype(str)), key=lambda p: (-p[0], p[1]))
    expected = {e for _, e in ranked[:keep]} if keep else set(X["customer_id"].astype(str))
    assert set(table.column("entity_id").to_pylist()) == expected
    assert reasons.result["explained"] == len(expected) and table.num_rows == 2 * len(expected)
    assert table.column("reason_rank").to_pylist() == [1, 2] * len(expected)
    assert set(table.column("as_of_date").to_pylist()) == {day}
    if keep:
        kept = pq.read_table(reasons.result["candidates"], columns=["__entity_id"]).column(0).to_pylist()
        assert kept == [e for _, e in ranked[:keep]]  # best first, the order publishing cuts the day's top in
