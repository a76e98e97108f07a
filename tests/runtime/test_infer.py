from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest
from sklearn.linear_model import LinearRegression, LogisticRegression

from modelplane.errors import InvalidSpec
from modelplane.runtime.infer import dtype_of, field_for, fields_for, output_fields_for
from modelplane.spec.dtypes import DType
from modelplane.spec.fields import FieldSpec

from .runtime_kit import columns_of, tabular_data


@pytest.mark.parametrize(
    ("array", "dtype"),
    [
        (np.zeros(2, dtype=np.float32), DType.FLOAT32),
        (np.zeros(2, dtype=np.int64), DType.INT64),
        (np.array([True]), DType.BOOL),
        (np.array(["a"]), DType.STRING),
        (np.array(["a"], dtype=object), DType.STRING),
    ],
)
def test_dtype_of(array: np.ndarray[Any, Any], dtype: DType) -> None:
    assert dtype_of(array) is dtype


def test_fields_have_a_variable_batch_dimension() -> None:
    fields = fields_for({"x": np.zeros((3, 5)), "age": np.zeros(3, dtype=np.int32)})
    assert fields == (
        FieldSpec(name="x", dtype=DType.FLOAT64, shape=(-1, 5)),
        FieldSpec(name="age", dtype=DType.INT32, shape=(-1,)),
    )


def test_scalars_and_dates_are_refused() -> None:
    with pytest.raises(InvalidSpec, match="batch"):
        field_for("x", np.float64(1.0))  # type: ignore[arg-type]
    with pytest.raises(InvalidSpec, match="datetime64"):
        dtype_of(np.array(["2024-01-01"], dtype="datetime64[D]"))


def test_classifier_outputs_are_label_and_probabilities() -> None:
    x, y = tabular_data(classes=3)
    model = LogisticRegression(max_iter=200).fit(x, y)
    fields = output_fields_for(model, columns_of(x[:3]))
    assert fields == (
        FieldSpec(name="label", dtype=DType.INT64, shape=(-1,)),
        FieldSpec(name="probabilities", dtype=DType.FLOAT64, shape=(-1, 3)),
    )


def test_regressor_output_is_prediction(tmp_path: Path) -> None:
    x, _ = tabular_data()
    model = LinearRegression().fit(x, x[:, 0])
    fields = output_fields_for(model, {"x": x[:2]}, inputs=fields_for({"x": x}))
    assert fields == (FieldSpec(name="prediction", dtype=DType.FLOAT64, shape=(-1,)),)
