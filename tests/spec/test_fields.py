from __future__ import annotations

import pytest

from modelplane.errors import InvalidSpec
from modelplane.spec import (
    Contract,
    DType,
    FieldSpec,
    Manifest,
    Signature,
    dump_yaml,
    load_yaml,
    parse,
)

CONTRACT_YAML = """
name: fraud-score
version: 2
inputs:
  - {name: amount, dtype: float64, range: {min: 0}}
  - {name: country, dtype: string, enum: [FR, DE]}
  - {name: x, dtype: flaot32}
outputs:
  - {name: score, dtype: float32}
"""


def test_validation_error_names_the_field_path() -> None:
    with pytest.raises(InvalidSpec) as info:
        load_yaml(Contract, CONTRACT_YAML)
    assert info.value.details == [
        {"field": "inputs[2].dtype", "problem": "'flaot32' is not a dtype"}
    ]
    assert "inputs[2].dtype: 'flaot32' is not a dtype" in str(info.value)


def test_every_bad_field_is_named() -> None:
    with pytest.raises(InvalidSpec) as info:
        parse(Contract, {"name": "Bad Name", "inputs": [], "timeout_ms": 0})
    fields = {d["field"] for d in info.value.details}
    assert fields == {"name", "inputs", "timeout_ms"}


def test_yaml_round_trip_is_identical() -> None:
    contract = load_yaml(Contract, CONTRACT_YAML.replace("flaot32", "float32"))
    text = dump_yaml(contract)
    assert load_yaml(Contract, text) == contract
    assert dump_yaml(load_yaml(Contract, text)) == text


def test_v2_names_are_accepted_and_mapped() -> None:
    field = FieldSpec(name="x", dtype="FP32")
    assert field.dtype is DType.FLOAT32
    assert field.dtype.v2 == "FP32"
    assert {d.v2 for d in DType} == {
        "BOOL",
        "UINT8",
        "UINT16",
        "UINT32",
        "UINT64",
        "INT8",
        "INT16",
        "INT32",
        "INT64",
        "FP16",
        "FP32",
        "FP64",
        "BYTES",
    }


@pytest.mark.parametrize(
    ("field", "problem"),
    [
        ({"name": "x", "dtype": "float32", "shape": [0]}, "dimension 0"),
        ({"name": "x", "dtype": "string", "range": {"min": 1}}, "needs a numeric dtype"),
        ({"name": "x", "dtype": "int64", "range": {"min": 2, "max": 1}}, "greater than max"),
        ({"name": "x", "dtype": "int64", "enum": []}, "at least one value"),
    ],
)
def test_incoherent_fields_are_rejected(field: dict[str, object], problem: str) -> None:
    with pytest.raises(InvalidSpec, match=problem):
        parse(FieldSpec, field)


def test_duplicate_names_are_rejected() -> None:
    with pytest.raises(InvalidSpec, match="appears twice"):
        parse(Signature, {"inputs": [{"name": "a", "dtype": "int64"}] * 2})


def test_pickle_needs_trust() -> None:
    data = {
        "name": "m",
        "runtime": "sklearn",
        "format": "pickle",
        "model_file": "model.pkl",
        "signature": {"inputs": [{"name": "x", "dtype": "float32"}]},
        "environment": {"python": "3.11.7"},
    }
    with pytest.raises(InvalidSpec, match="trusted_pickle"):
        parse(Manifest, data)
    assert parse(Manifest, {**data, "trusted_pickle": True}).trusted_pickle


def test_not_a_mapping_is_a_clear_error() -> None:
    with pytest.raises(InvalidSpec, match="expected a mapping"):
        load_yaml(Contract, "- just\n- a list\n")


def test_contract_field_names_are_unique() -> None:
    with pytest.raises(InvalidSpec, match="'a' appears twice"):
        parse(Contract, {"name": "c", "inputs": [{"name": "a", "dtype": "int64"}] * 2})
