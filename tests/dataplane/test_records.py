from __future__ import annotations

import json

import msgspec
import numpy as np
import pytest

from modelplane.dataplane.records import RecordsCodec, encode_predictions
from modelplane.errors import InvalidSpec
from modelplane.spec import FieldSpec

FIELDS = [
    FieldSpec(name="amount", dtype="float64", nullable=True),
    FieldSpec(name="country", dtype="string"),
    FieldSpec(name="vec", dtype="float32", shape=(-1, 3)),
    FieldSpec(name="n-items", dtype="int8", required=False, default=3),
]
CODEC = RecordsCodec(FIELDS)


def body(*instances: dict[str, object]) -> bytes:
    return json.dumps({"instances": list(instances)}).encode()


def test_columns_follow_field_order_and_dtypes() -> None:
    columns = CODEC.decode(
        body(
            {"vec": [1, 2, 3], "country": "FR", "amount": 1.5},
            {"amount": None, "country": "DE", "vec": [4, 5, 6], "n-items": 7},
        )
    )
    assert list(columns) == ["amount", "country", "vec", "n-items"]
    np.testing.assert_array_equal(columns["amount"], [1.5, np.nan])
    assert columns["country"].tolist() == ["FR", "DE"]
    assert columns["vec"].dtype == np.float32
    assert columns["vec"].shape == (2, 3)
    assert columns["n-items"].tolist() == [3, 7]
    assert columns["n-items"].dtype == np.int8


def test_single_field_contract() -> None:
    codec = RecordsCodec([FieldSpec(name="x", dtype="bool")])
    assert codec.decode(body({"x": True}, {"x": False}))["x"].tolist() == [True, False]


def test_nullable_integers_stay_nullable_for_validation() -> None:
    codec = RecordsCodec([FieldSpec(name="k", dtype="int64", nullable=True)])
    column = codec.decode(body({"k": 1}, {"k": None}))["k"]
    assert column.dtype == object
    assert column.tolist() == [1, None]


@pytest.mark.parametrize(
    ("payload", "field", "problem"),
    [
        (body({"amount": 1, "country": "FR", "vec": [1, 2, 3], "zz": 1}), "instances[0].zz",
         "unknown field"),
        (body({"amount": 1, "vec": [1, 2, 3]}), "instances[0].country", "missing required"),
        (body({"amount": 1, "country": "FR", "vec": [1, 2, 3], "n-items": 999}),
         "instances[0].n-items", "<= 127"),
        (body({"amount": "x", "country": "FR", "vec": [1, 2, 3]}), "instances[0].amount",
         "Expected `float | null`, got `str`"),
        (body({"amount": 1, "country": "FR", "vec": [1, 2]}), "vec", "declares [3]"),
        (body({"amount": 1, "country": "FR", "vec": [1, 2, 3]},
              {"amount": 1, "country": "FR", "vec": [1, 2]}), "vec", "rectangular"),
        (b'{"instances": []}', "instances", "length >= 1"),
        (b"{\"instances\": [", "body", "truncated"),
    ],
)  # fmt: skip
def test_errors_name_the_field(payload: bytes, field: str, problem: str) -> None:
    with pytest.raises(InvalidSpec) as info:
        CODEC.decode(payload)
    (detail,) = info.value.details
    assert detail["field"] == field
    assert problem in detail["problem"]


def test_encode_predictions_single_and_many_outputs() -> None:
    one = msgspec.json.decode(
        encode_predictions({"y": np.array([0.5, 1.0])}, model_version="fraud:7", request_id="r")
    )
    assert one == {"predictions": [0.5, 1.0], "model_version": "fraud:7", "request_id": "r"}
    many = msgspec.json.decode(
        encode_predictions(
            {"label": np.array([b"a", "b"], dtype=object), "p": np.array([[0.1, 0.9], [1, 0]])}
        )
    )
    assert many == {
        "predictions": [{"label": "a", "p": [0.1, 0.9]}, {"label": "b", "p": [1.0, 0.0]}]
    }


def test_codec_needs_fields() -> None:
    with pytest.raises(ValueError):
        RecordsCodec([])
