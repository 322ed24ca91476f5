"""The one encoding of model inputs, on Arrow: what every candidate is fitted on and what scoring feeds it.

Numerics are float64 with NaN where missing. Categoricals are strings; a column's vocabulary is its
sorted distinct non-null values, and a value's code is its place in the vocabulary, 1..K, with 0 for a
missing or unseen value. Training frames and scoring record batches both come through
`feature_columns`, so a model is served exactly the inputs it was trained on.
"""

from __future__ import annotations

from typing import Any, Mapping

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from ml.core.errors import TidemarkError
from ml.core.spec import FeatureSchema


class ModelError(TidemarkError, ValueError):
    """A candidate was asked for with a bad kind, parameter or input, or its saved files are unusable."""


def feature_columns(X: Any, features: FeatureSchema) -> pa.Table:
    """The schema's columns of `X` (a pandas DataFrame, an Arrow table or an Arrow record batch) as Arrow,
    in schema order: numerics as float64, categoricals as strings, null where missing."""
    if isinstance(X, (pa.Table, pa.RecordBatch)):
        names = X.schema.names
    elif _is_frame(X):
        names = list(X.columns)
    else:
        raise ModelError(f"X must be a pandas DataFrame, an Arrow table or an Arrow record batch with columns "
                         f"{list(features.columns)}, got {type(X).__name__}")
    missing = [c for c in features.columns if c not in names]
    if missing:
        raise ModelError(f"X is missing feature columns {missing}; the model needs {list(features.columns)}")
    numeric = set(features.numeric)
    arrays = []
    for col in features.columns:
        column = X.column(col) if isinstance(X, (pa.Table, pa.RecordBatch)) else _from_pandas(X[col], col, col in numeric)
        arrays.append(_numeric(column, col) if col in numeric else _text(column, col))
    return pa.Table.from_arrays(arrays, names=list(features.columns))


def numeric_matrix(columns: pa.Table, features: FeatureSchema) -> np.ndarray:
    """The numeric columns of `feature_columns` as a float64 (rows x numerics) matrix, NaN where missing."""
    out = np.empty((len(features.numeric), columns.num_rows), dtype=np.float64)
    _fill(out, columns, features.numeric)
    return out.T


def learn_vocabularies(columns: pa.Table, features: FeatureSchema) -> dict[str, list[str]]:
    """The sorted distinct non-null values of each categorical column of `feature_columns`."""
    return {col: sorted(pc.unique(columns.column(col)).drop_null().to_pylist()) for col in features.categorical}


def category_codes(columns: pa.Table, features: FeatureSchema, vocabularies: Mapping[str, list[str]]) -> np.ndarray:
    """The categorical columns of `feature_columns` as an int64 (rows x categoricals) matrix of codes:
    1..K for the values of each column's vocabulary, 0 for missing or unseen values."""
    out = np.empty((len(features.categorical), columns.num_rows), dtype=np.int64)
    _fill(out, columns, features.categorical, vocabularies)
    return out.T


def tree_matrix(columns: pa.Table, features: FeatureSchema, vocabularies: Mapping[str, list[str]]) -> np.ndarray:
    """`numeric_matrix` and `category_codes` side by side in one float64 matrix, column-major so that each
    column is one contiguous copy: the matrix LightGBM trains and predicts on."""
    out = np.empty((len(features.columns), columns.num_rows), dtype=np.float64)
    _fill(out[:len(features.numeric)], columns, features.numeric)
    _fill(out[len(features.numeric):], columns, features.categorical, vocabularies)
    return out.T


def category_strings(columns: pa.Table, col: str, missing: str | None = None) -> np.ndarray:
    """One categorical column of `feature_columns` as an object array of str, `missing` where null."""
    column = columns.column(col)
    return (column if missing is None else pc.fill_null(column, missing)).to_numpy()


def _fill(out: np.ndarray, columns: pa.Table, names: tuple[str, ...],
          vocabularies: Mapping[str, list[str]] | None = None) -> None:
    """Row j of `out` gets column names[j]: its values, or its codes when `vocabularies` is given."""
    for j, col in enumerate(names):
        if vocabularies is None:
            out[j] = columns.column(col).to_numpy()
        else:
            codes = pc.index_in(columns.column(col), value_set=pa.array(vocabularies[col], pa.string()))
            out[j] = pc.fill_null(codes, -1).to_numpy()
            out[j] += 1


def _numeric(column: pa.Array | pa.ChunkedArray, col: str) -> pa.Array | pa.ChunkedArray:
    try:
        return pc.cast(column, pa.float64(), safe=False)
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError, pa.ArrowTypeError) as exc:
        raise _not_numbers(col, f"{column.type}: {exc}") from None


def _text(column: pa.Array | pa.ChunkedArray, col: str) -> pa.Array | pa.ChunkedArray:
    try:
        return pc.cast(column, pa.string())
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError, pa.ArrowTypeError) as exc:
        raise ModelError(f"categorical feature {col!r} of type {column.type} cannot be read as text: {exc}") from None


def _is_frame(X: Any) -> bool:
    import pandas as pd

    return isinstance(X, pd.DataFrame)


def _from_pandas(series: Any, col: str, numeric: bool) -> pa.Array:
    """A pandas column as Arrow, NaN and None as null; a categorical mixing types is read as its strings."""
    try:
        return pa.array(series, from_pandas=True)
    except (pa.ArrowInvalid, pa.ArrowTypeError) as exc:
        if numeric:
            raise _not_numbers(col, str(exc)) from None
        return pa.array(series.astype("string"), from_pandas=True)


def _not_numbers(col: str, detail: str) -> ModelError:
    return ModelError(f"numeric feature {col!r} holds values that are not numbers ({detail}); pass numbers, "
                      "or declare the column categorical")
