"""One encoding of model inputs: what a candidate is fitted on is what scoring serves it, row for row.

Training sees a DataFrame (or Arrow table) of rows; scoring sees Arrow record batches streamed out of
a DuckDB file. Both must give each candidate the same numbers, including for a missing numeric, a
missing category and a category never seen in training.
"""

from __future__ import annotations

from decimal import Decimal

import lightgbm
import numpy as np
import pyarrow as pa
import pytest
import scipy.sparse

from ml.core.settings import parse_warehouse_url
from ml.core.spec import FeatureSchema
from ml.core.warehouse import Warehouse
from ml.scoring.score import predict
from ml.training.candidates import (
    CANDIDATE_KINDS,
    ModelError,
    TorchTabularCandidate,
    build_candidate,
)
from ml.training.data import to_frame
from ml.training.encoding import (
    category_codes,
    feature_columns,
    learn_vocabularies,
    numeric_matrix,
)

# monthly_price is stored as DECIMAL(12, 2) by the warehouse, as in the feature mart.
FEATURES = FeatureSchema(numeric=("tenure_days", "monthly_price", "sessions_30d"), categorical=("region", "plan_code"))
PLANS, REGIONS = ("basic", "standard", "premium"), ("north", "south", "east", "west")
N_TRAIN, N_UNSEEN = 400, 30
PARAMS = {
    "lightgbm": {"num_boost_round": 20, "min_child_samples": 5},
    "torch_mlp": {"device": "cpu", "max_epochs": 2, "hidden_sizes": [16]},
    "logistic": {},
}


def _rows(n: int, seed: int, plans=PLANS, regions=REGIONS) -> tuple[pa.Table, np.ndarray]:
    """Feature rows typed like the mart's (int, decimal, double, text), about a tenth of each column null."""
    rng = np.random.default_rng(seed)
    tenure = rng.integers(0, 2000, n)
    price = rng.integers(500, 9000, n) / 100
    sessions = rng.gamma(2.0, 3.0, n)
    plan, region = rng.choice(plans, n), rng.choice(regions, n)
    null = rng.random((5, n)) < 0.1
    logit = -0.5 + 0.001 * tenure - 0.02 * price - 0.1 * sessions + (plan == plans[0])
    y = (rng.random(n) < 1 / (1 + np.exp(-logit))).astype(np.int64)
    table = pa.table({
        "tenure_days": pa.array(tenure, pa.int32(), mask=null[0]),
        "monthly_price": pa.array([Decimal(f"{p:.2f}") for p in price], pa.decimal128(12, 2), mask=null[1]),
        "sessions_30d": pa.array(sessions, pa.float64(), mask=null[2]),
        "plan_code": pa.array(plan, pa.string(), mask=null[3]),
        "region": pa.array(region, pa.string(), mask=null[4]),
    })
    return table, y


@pytest.fixture(scope="module")
def rows() -> dict:
    """Training rows, plus rows whose plan and region training never saw, with their batches out of DuckDB."""
    train, y = _rows(N_TRAIN, seed=11)
    unseen, _ = _rows(N_UNSEEN, seed=12, plans=("enterprise",), regions=("atlantis",))
    every = pa.concat_tables([train, unseen])
    every = every.append_column("customer_id", pa.array(np.arange(every.num_rows), pa.int64()))
    return {"train": train, "y": y, "every": every}


@pytest.fixture(scope="module")
def batches(rows, tmp_path_factory) -> list[pa.RecordBatch]:
    """The rows written to a DuckDB file with replace_table and streamed back, 128 rows a batch."""
    path = tmp_path_factory.mktemp("encoding") / "warehouse.duckdb"
    with Warehouse(parse_warehouse_url(f"duckdb:///{path}")) as wh:
        wh.replace_table("marts.features", rows["every"])
        out = list(wh.stream_arrow("select * from marts.features order by customer_id", batch_rows=128))
    assert len(out) > 1 and sum(b.num_rows for b in out) == N_TRAIN + N_UNSEEN
    assert out[0].schema.field("monthly_price").type == pa.decimal128(12, 2)
    return out


@pytest.fixture(scope="module")
def fitted(rows) -> dict:
    frame = to_frame(rows["train"], FEATURES)
    return {kind: build_candidate(kind, PARAMS[kind], FEATURES, seed=3).fit(frame, rows["y"]) for kind in CANDIDATE_KINDS}


def _served_lightgbm_matrix(model, batches, monkeypatch) -> np.ndarray:
    """The matrices scoring hands the booster for each batch, stacked."""
    served, booster_predict = [], model.booster_.predict

    def recording(data, *args, **kwargs):
        served.append(np.array(data))
        return booster_predict(data, *args, **kwargs)

    monkeypatch.setattr(model.booster_, "predict", recording)
    for batch in batches:
        predict(model, batch)
    return np.vstack(served)


@pytest.mark.parametrize("fit_on", ["frame", "arrow"])
def test_lightgbm_is_served_the_matrix_it_was_trained_on(fit_on, rows, batches, monkeypatch) -> None:
    trained, dataset = [], lightgbm.Dataset

    class Recording(dataset):
        def __init__(self, data, *args, **kwargs):
            trained.append(np.array(data))
            super().__init__(data, *args, **kwargs)

    monkeypatch.setattr(lightgbm, "Dataset", Recording)
    X = to_frame(rows["train"], FEATURES) if fit_on == "frame" else rows["train"]
    model = build_candidate("lightgbm", PARAMS["lightgbm"], FEATURES, seed=3).fit(X, rows["y"])
    monkeypatch.setattr(lightgbm, "Dataset", dataset)
    served = _served_lightgbm_matrix(model, batches, monkeypatch)

    assert served.shape == (N_TRAIN + N_UNSEEN, len(FEATURES.columns))
    np.testing.assert_array_equal(served[:N_TRAIN], trained[0])
    train = rows["train"]
    for j, col in enumerate(FEATURES.numeric):  # a null numeric is NaN, every other value as stored
        null = train[col].is_null().to_numpy(zero_copy_only=False)
        assert null.any() and np.isnan(served[:N_TRAIN, j][null]).all() and not np.isnan(served[:N_TRAIN, j][~null]).any()
    np.testing.assert_allclose(served[:N_TRAIN, 1][~np.isnan(served[:N_TRAIN, 1])],  # Arrow's decimal cast: 1 ulp off
                               [float(p) for p in train["monthly_price"].drop_null().to_pylist()], rtol=1e-15)
    for j, col in enumerate(FEATURES.categorical, start=len(FEATURES.numeric)):
        values = train[col].to_pylist()
        vocabulary = sorted(set(values) - {None})
        assert model.vocabularies_[col] == vocabulary
        expected = [0 if v is None else vocabulary.index(v) + 1 for v in values]
        np.testing.assert_array_equal(served[:N_TRAIN, j], expected)  # a null category is 0, a known one 1..K
        np.testing.assert_array_equal(served[N_TRAIN:, j], 0)  # so is a category unseen in training
    np.testing.assert_array_equal(served[N_TRAIN:], model._matrix(to_frame(rows["every"], FEATURES))[N_TRAIN:])


def test_torch_is_served_the_tensors_it_was_trained_on(rows, batches, monkeypatch) -> None:
    tensors, build = [], TorchTabularCandidate._tensors

    def recording(self, columns, y=None):
        out = build(self, columns, y)
        tensors.append([t.numpy().copy() for t in out[:2]])
        return out

    monkeypatch.setattr(TorchTabularCandidate, "_tensors", recording)
    model = build_candidate("torch_mlp", PARAMS["torch_mlp"], FEATURES, seed=3).fit(to_frame(rows["train"], FEATURES),
                                                                                   rows["y"])
    trained = tensors.pop(0)
    for batch in batches:
        predict(model, batch)
    numeric, codes = (np.vstack([t[i] for t in tensors]) for i in range(2))

    np.testing.assert_array_equal(numeric[:N_TRAIN], trained[0])
    np.testing.assert_array_equal(codes[:N_TRAIN], trained[1])
    np.testing.assert_array_equal(codes[N_TRAIN:], 0)
    indicators = numeric[:, len(FEATURES.numeric):]
    for j, col in enumerate(FEATURES.numeric):  # a null numeric is 0 after standardising, with its indicator set
        null = rows["every"][col].is_null().to_numpy(zero_copy_only=False)
        np.testing.assert_array_equal(indicators[:, j], null)
        assert (numeric[null, j] == 0).all()


def test_logistic_design_on_arrow_is_what_its_pipeline_computes_on_the_training_frame(fitted, rows, batches) -> None:
    model = fitted["logistic"]
    frame = to_frame(rows["every"], FEATURES)
    expected = model.pipeline_.named_steps["prep"].transform(model._frame(frame))
    expected = expected.toarray() if scipy.sparse.issparse(expected) else expected
    served = np.vstack([model._design(batch) for batch in batches])
    np.testing.assert_allclose(served, expected, rtol=0, atol=1e-12)
    one_hot = served[N_TRAIN:, -sum(len(c) for c in model.linear_["categories"]):]
    present = rows["every"].slice(N_TRAIN)
    known = ~np.logical_or(*(present[c].is_null().to_numpy(zero_copy_only=False) for c in FEATURES.categorical))
    assert known.sum() > 10 and (one_hot[known] == 0).all()  # unseen plan and region: no category column set


@pytest.mark.parametrize("kind", sorted(CANDIDATE_KINDS))
def test_scores_are_identical_from_a_frame_and_from_an_arrow_batch(kind, fitted, rows, batches) -> None:
    model = fitted[kind]
    from_arrow = np.concatenate([model.predict_proba(batch) for batch in batches])
    from_frame = model.predict_proba(to_frame(rows["every"], FEATURES))
    assert from_arrow.shape == (N_TRAIN + N_UNSEEN, 2)
    np.testing.assert_array_equal(from_arrow, from_frame)
    np.testing.assert_array_equal(np.concatenate([predict(model, b) for b in batches]), from_frame[:, 1])


def test_the_encoding_of_a_few_values() -> None:
    schema = FeatureSchema(numeric=("n",), categorical=("c",))
    train = pa.table({"n": pa.array([3, None, 1], pa.int64()), "c": pa.array(["b", None, "a"])})
    columns = feature_columns(train, schema)
    vocabularies = learn_vocabularies(columns, schema)
    assert vocabularies == {"c": ["a", "b"]}
    np.testing.assert_array_equal(numeric_matrix(columns, schema), [[3.0], [np.nan], [1.0]])
    scored = feature_columns(pa.record_batch({"n": [0.5, 2.0], "c": ["a", "z"]}), schema)
    np.testing.assert_array_equal(category_codes(scored, schema, vocabularies), [[1], [0]])
    np.testing.assert_array_equal(category_codes(columns, schema, vocabularies), [[2], [0], [1]])
    ints = feature_columns(pa.table({"n": [1], "c": pa.array([7], pa.int16())}), schema)
    assert ints.column("c").to_pylist() == ["7"]  # a categorical of integers is read as text


def test_missing_columns_and_non_numbers_are_named(fitted, rows) -> None:
    model, frame = fitted["lightgbm"], to_frame(rows["train"], FEATURES)
    with pytest.raises(ModelError, match=r"missing feature columns \['sessions_30d', 'plan_code'\]"):
        model.predict_proba(rows["train"].drop_columns(["plan_code", "sessions_30d"]))
    with pytest.raises(ModelError, match=r"missing feature columns \['region'\]"):
        model.predict_proba(frame.drop(columns="region"))
    text = frame.assign(tenure_days=frame["tenure_days"].astype(object))
    text.loc[5, "tenure_days"] = "ten"
    with pytest.raises(ModelError, match="numeric feature 'tenure_days' holds values that are not numbers"):
        model.predict_proba(text)
    dates = rows["train"].set_column(0, "tenure_days", pa.array([None] * N_TRAIN, pa.date32()))
    with pytest.raises(ModelError, match="numeric feature 'tenure_days' holds values that are not numbers"):
        model.predict_proba(dates)
    with pytest.raises(ModelError, match="pandas DataFrame, an Arrow table or an Arrow record batch"):
        model.predict_proba(frame.to_numpy())
