from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from modelplane.errors import ContractViolation, InvalidSpec
from modelplane.runtime.tabular import FeatureMatrix, class_outputs
from modelplane.spec.dtypes import DType
from modelplane.spec.fields import FieldSpec

from .runtime_kit import column_fields, matrix_field


def test_columns_are_stacked_in_signature_order() -> None:
    fields = column_fields(("b", "a"))
    matrix = FeatureMatrix(fields)({"a": np.array([1, 2]), "b": np.array([3.0, 4.0])})
    np.testing.assert_array_equal(matrix, [[3.0, 1.0], [4.0, 2.0]])
    assert matrix.dtype == np.float64


def test_mixed_text_and_numbers_keep_their_types() -> None:
    fields = (
        FieldSpec(name="country", dtype=DType.STRING),
        FieldSpec(name="amount", dtype=DType.FLOAT64),
    )
    matrix = FeatureMatrix(fields)({"country": np.array(["FR"]), "amount": np.array([2.5])})
    assert matrix.dtype == object
    assert matrix[0, 1] == 2.5


def test_a_matrix_field_passes_through_and_feature_names_make_a_frame() -> None:
    x = np.arange(6.0).reshape(3, 2)
    assert FeatureMatrix(matrix_field("x", 2))({"x": x}) is x
    frame = FeatureMatrix(matrix_field("x", 2), feature_names=["p", "q"])({"x": x})
    assert isinstance(frame, pd.DataFrame)
    assert list(frame.columns) == ["p", "q"]


def test_feature_names_reorder_columns_and_missing_ones_fail_at_load() -> None:
    inputs = {"a": np.array([1.0]), "b": np.array([2.0])}
    frame = FeatureMatrix(column_fields(("a", "b")), feature_names=["b", "a"])(inputs)
    assert frame.to_numpy().tolist() == [[2.0, 1.0]]
    with pytest.raises(InvalidSpec, match="'c'"):
        FeatureMatrix(column_fields(("a", "b")), feature_names=["a", "c"])


def test_bad_inputs_are_named() -> None:
    fields = column_fields(("a", "b"))
    with pytest.raises(ContractViolation, match="batch sizes"):
        FeatureMatrix(fields)({"a": np.zeros(2), "b": np.zeros(3)})
    with pytest.raises(ContractViolation, match="'a' is not float64"):
        FeatureMatrix(fields)({"a": np.array(["x"]), "b": np.zeros(1)})
    with pytest.raises(ContractViolation, match="1-D"):
        FeatureMatrix(fields)({"a": np.zeros((2, 2)), "b": np.zeros(2)})
    with pytest.raises(InvalidSpec, match="tabular"):
        FeatureMatrix((*fields, *matrix_field("m", 2)))


def test_binary_probabilities_become_two_columns() -> None:
    out = class_outputs(np.array([0.2, 0.9]), np.array(["no", "yes"]))
    np.testing.assert_allclose(out["probabilities"], [[0.8, 0.2], [0.1, 0.9]])
    assert out["label"].tolist() == ["no", "yes"]
    assert class_outputs(np.array([[0.1, 0.7, 0.2]]))["label"].tolist() == [1]
