from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from modelplane.errors import InvalidSpec
from modelplane.registry.signature import (
    TENSOR_INPUT,
    dtype_of,
    infer_inputs,
    load_signature,
)
from modelplane.spec.dtypes import DType
from modelplane.spec.fields import FieldSpec


def _by_name(fields: tuple[FieldSpec, ...]) -> dict[str, tuple[DType, tuple[int, ...], bool]]:
    return {f.name: (f.dtype, f.shape, f.nullable) for f in fields}


def test_dataframe_gives_one_column_field_each() -> None:
    frame = pd.DataFrame(
        {
            "amount": [1.5, np.nan],
            "count": np.array([1, 2], dtype=np.int32),
            "country": ["FR", None],
            "city": ["Paris", "Lyon"],
            "flag": [True, False],
            "small": np.array([0.5, 1.0], dtype=np.float32),
            "maybe": pd.array([3, None], dtype="Int64"),
            "opt": pd.array([True, None], dtype="boolean"),
            "kind": pd.Categorical(["a", "b"]),
        }
    )
    inferred = infer_inputs(frame)
    assert _by_name(inferred.fields) == {
        "amount": (DType.FLOAT64, (-1,), True),
        "count": (DType.INT32, (-1,), False),
        "country": (DType.STRING, (-1,), True),
        "city": (DType.STRING, (-1,), False),
        "flag": (DType.BOOL, (-1,), False),
        "small": (DType.FLOAT32, (-1,), False),
        "maybe": (DType.INT64, (-1,), True),
        "opt": (DType.BOOL, (-1,), True),
        "kind": (DType.STRING, (-1,), False),
    }
    assert inferred.arrays["city"].dtype == object
    assert inferred.arrays["city"].tolist() == ["Paris", "Lyon"]
    assert np.isnan(inferred.arrays["maybe"][1])


def test_numpy_array_is_one_tensor_field() -> None:
    inferred = infer_inputs(np.zeros((4, 3, 2), dtype=np.float32))
    assert _by_name(inferred.fields) == {TENSOR_INPUT: (DType.FLOAT32, (-1, 3, 2), False)}
    assert inferred.arrays[TENSOR_INPUT].shape == (4, 3, 2)


def test_dict_of_arrays_is_one_field_per_key() -> None:
    inferred = infer_inputs(
        {"ids": np.array([1, 2], dtype=np.int64), "emb": np.ones((2, 8)), "tag": ["a", "b"]}
    )
    assert _by_name(inferred.fields) == {
        "ids": (DType.INT64, (-1,), False),
        "emb": (DType.FLOAT64, (-1, 8), False),
        "tag": (DType.STRING, (-1,), False),
    }
    assert inferred.arrays["tag"].dtype == object


def test_records_are_one_field_per_key_with_gaps_nullable() -> None:
    records = [
        {"age": 30, "income": 1.5, "name": "a", "ok": True, "emb": [0.1, 0.2]},
        {"age": None, "income": 2, "name": None, "ok": False, "emb": [0.3, 0.4]},
        {"age": 40, "name": "c", "ok": True, "emb": [0.5, 0.6]},
    ]
    inferred = infer_inputs(records)
    assert _by_name(inferred.fields) == {
        "age": (DType.INT64, (-1,), True),
        "income": (DType.FLOAT64, (-1,), True),
        "name": (DType.STRING, (-1,), True),
        "ok": (DType.BOOL, (-1,), False),
        "emb": (DType.FLOAT64, (-1, 2), False),
    }
    assert inferred.arrays["age"].dtype == np.float64
    assert inferred.arrays["income"].tolist()[:2] == [1.5, 2.0]


def test_records_of_only_ints_stay_ints() -> None:
    inferred = infer_inputs([{"n": 1}, {"n": 2}])
    assert inferred.fields[0].dtype is DType.INT64
    assert inferred.arrays["n"].dtype == np.int64


@pytest.mark.parametrize(
    ("sample", "message"),
    [
        ("just text", "cannot infer a signature from str"),
        ({}, "no fields"),
        (np.float64(1.0), "cannot infer"),
        (np.array(3.0), r"input: a sample needs a leading batch dimension"),
        ({"x": np.array([])}, r"inputs\.x: .*at least one row"),
        ({"t": np.array(["2024-01-01"], dtype="datetime64[D]")}, r"inputs\.t: dtype datetime64"),
        ({"m": np.array([1, "a"], dtype=object)}, r"inputs\.m: an object column must hold strings"),
        ([{"x": None}, {"x": None}], r"inputs\.x: every sample value is missing"),
        (pd.DataFrame({"a": []}), "no rows"),
    ],
)
def test_bad_samples_name_the_field(sample: object, message: str) -> None:
    with pytest.raises(InvalidSpec, match=message):
        infer_inputs(sample)


def test_dtype_of_strings_and_bytes() -> None:
    assert dtype_of(np.array([b"a", b"b"])) is DType.STRING
    assert dtype_of(np.array(["a", None], dtype=object)) is DType.STRING
    assert dtype_of(np.array([True, None], dtype=object)) is DType.BOOL


def test_signature_from_yaml(tmp_path: Path) -> None:
    path = tmp_path / "signature.yaml"
    path.write_text(
        "inputs:\n  - {name: x, dtype: FP32, shape: [-1, 4]}\n"
        "outputs:\n  - {name: prediction, dtype: float64}\n"
    )
    signature = load_signature(path)
    assert signature.inputs[0].dtype is DType.FLOAT32
    assert signature.outputs[0].shape == (-1,)


def test_signature_yaml_errors_name_the_field(tmp_path: Path) -> None:
    path = tmp_path / "signature.yaml"
    path.write_text("inputs:\n  - {name: x, dtype: float33}\n")
    with pytest.raises(InvalidSpec, match=r"inputs\[0\]\.dtype"):
        load_signature(path)
