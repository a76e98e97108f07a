from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from modelplane.core.validate import (
    CompiledContract,
    Violation,
    coerce_inputs,
    validate_inputs,
    validate_outputs,
)
from modelplane.errors import ContractViolation, InvalidSpec
from modelplane.spec import Contract, FieldSpec, Range

Arrays = dict[str, Any]


def fld(name: str, dtype: str = "float64", **kw: Any) -> FieldSpec:
    return FieldSpec(name=name, dtype=dtype, **kw)


FIELDS = [
    fld("amount", range=Range(min=0)),
    fld("count", "int32"),
    fld("country", "string", enum=("FR", "DE")),
    fld("flag", "bool", required=False),
    fld("vec", "float32", shape=(-1, 3), range=Range(max=10)),
    fld("note", "string", nullable=True, required=False),
    fld("ratio", "float32", nullable=True, required=False),
    fld("rate", "float32", default=0.5),
    fld("level", "int8", enum=(1, 2, 3), required=False),
]
CONTRACT = CompiledContract(FIELDS, name="fraud")


def request(**changes: Any) -> Arrays:
    """A valid two-row request; ``name=None`` drops a field, any other value replaces it."""
    arrays: Arrays = {
        "amount": np.array([1.0, 2.0]),
        "count": np.array([1, 2], dtype=np.int32),
        "country": np.array(["FR", "DE"]),
        "vec": np.zeros((2, 3), dtype=np.float32),
    }
    for name, value in changes.items():
        if value is None:
            arrays.pop(name)
        else:
            arrays[name] = value
    return arrays


def obj(*values: Any) -> np.ndarray:
    return np.array(values, dtype=object)


# --- one case per rule -----------------------------------------------------------------------

VIOLATIONS: list[tuple[str, Arrays, list[tuple[str, str]]]] = [
    # (case, request, [(field, problem), ...] expected exactly)
    ("valid request", request(), []),
    ("ints for a float field", request(amount=np.array([1, 2])), []),
    ("integral floats for an int field", request(count=np.array([1.0, 2.0])), []),
    ("numbers in an object array", request(amount=obj(1, 2.5)), []),
    ("bytes for a string field", request(country=np.array([b"FR", b"DE"])), []),
    ("bools in an object array", request(flag=obj(True, np.bool_(False))), []),
    ("optional fields given", request(flag=np.array([True, False]), ratio=obj(None, 0.5)), []),
    ("nulls in a nullable field", request(note=obj(None, "x"), ratio=np.array([np.nan, 1])), []),
    ("missing required field", request(amount=None), [("amount", "missing required field")]),
    (
        "unknown field",
        request(colour=np.array(["red", "blue"])),
        [("colour", "unknown field: the contract does not declare it")],
    ),
    (
        "strings for a float field",
        request(amount=np.array(["1", "2"])),
        [("amount", "expected float64, got string")],
    ),
    (
        "a string among numbers",
        request(amount=obj(1.0, "2")),
        [("amount", "expected float64, got str '2' at index 1")],
    ),
    (
        "numbers for a string field",
        request(country=np.array([1, 2])),
        [("country", "expected string, got int64")],
    ),
    (
        "ints for a bool field",
        request(flag=np.array([1, 0])),
        [("flag", "expected bool, got int64")],
    ),
    (
        "complex numbers",
        request(amount=np.array([1j, 2j])),
        [("amount", "expected float64, got complex128")],
    ),
    (
        "an int too large for numpy",
        request(count=obj(1, 2**70)),
        [("count", "a value is out of bounds of every numeric dtype, let alone int32")],
    ),
    (
        "fractions for an int field",
        request(count=np.array([1.0, 2.5])),
        [("count", "1 value(s) not integral for int32; first 2.5 at index 1")],
    ),
    (
        "int out of the target's bounds",
        request(count=np.array([1, 2**40])),
        [("count", "1 value(s) out of bounds of int32; first 1099511627776 at index 1")],
    ),
    (
        "float overflowing float32",
        request(vec=np.array([[0.0, 0.0, 0.0], [0.0, -1e300, 0.0]])),
        [("vec", "1 value(s) out of bounds of float32; first -1e+300 at index (1, 1)")],
    ),
    (
        "rank differs",
        request(vec=np.zeros(2, dtype=np.float32)),
        [("vec", "expected shape [-1, 3] (rank 2), got [2]")],
    ),
    (
        "fixed dim differs",
        request(vec=np.zeros((2, 4), dtype=np.float32)),
        [("vec", "expected shape [-1, 3] (rank 2), got [2, 4]")],
    ),
    (
        "batch size differs",
        request(count=np.array([1, 2, 3], dtype=np.int32)),
        [("count", "batch size 3 differs from 2 of the other fields")],
    ),
    (
        "NaN in a non-nullable float field",
        request(amount=np.array([1.0, np.nan])),
        [("amount", "1 null value(s) in a non-nullable field; first at index 1")],
    ),
    (
        "None in a non-nullable string field",
        request(country=obj(None, "FR")),
        [("country", "1 null value(s) in a non-nullable field; first at index 0")],
    ),
    (
        "None in a non-nullable numeric object array",
        request(amount=obj(None, None)),
        [("amount", "2 null value(s) in a non-nullable field; first at index 0")],
    ),
    (
        "enum violation",
        request(
            country=np.array(["FR", "XX", "DE", "YY"]),
            amount=np.ones(4),
            count=np.ones(4),
            vec=np.zeros((4, 3)),
        ),
        [("country", "2 value(s) not in enum ['FR', 'DE']; first 'XX' at index 1")],
    ),
    (
        "numeric enum violation",
        request(level=np.array([2, 7])),
        [("level", "1 value(s) not in enum [1, 2, 3]; first 7 at index 1")],
    ),
    (
        "range violation",
        request(amount=np.array([-1.0, 3.0])),
        [("amount", "1 value(s) outside range [0.0, None]; first -1.0 at index 0")],
    ),
    (
        "range violation in a matrix",
        request(vec=np.array([[0, 0, 0], [0, 0, 11]], dtype=np.float32)),
        [("vec", "1 value(s) outside range [None, 10.0]; first 11.0 at index (1, 2)")],
    ),
]


@pytest.mark.parametrize(
    ("inputs", "expected"),
    [case[1:] for case in VIOLATIONS],
    ids=[case[0] for case in VIOLATIONS],
)
def test_rule(inputs: Arrays, expected: list[tuple[str, str]]) -> None:
    assert CONTRACT.validate(inputs) == [Violation(f, p) for f, p in expected]


def test_long_numeric_enum() -> None:
    compiled = CompiledContract([fld("code", "int64", enum=tuple(range(0, 100, 2)))])
    assert compiled.validate({"code": np.array([0, 98])}) == []
    assert compiled.validate({"code": np.array([0, 3, 5])}) == [
        Violation("code", f"2 value(s) not in enum {list(range(0, 100, 2))}; first 3 at index 1")
    ]


def test_every_bad_field_is_named() -> None:
    inputs = request(
        amount=np.array([np.nan, -1.0]),
        count=np.array(["a", "b"]),
        country=None,
        vec=np.zeros((2, 2)),
        extra=np.zeros(2),
    )
    found = CONTRACT.validate(inputs)
    assert [v.field for v in found] == ["amount", "amount", "count", "country", "vec", "extra"]
    assert found[0].problem.startswith("1 null value(s)")
    assert found[1].problem.startswith("1 value(s) outside range")


def test_function_forms_match_the_compiled_contract() -> None:
    bad = request(amount=None, vec=np.zeros((2, 4)))
    assert validate_inputs(FIELDS, bad) == CONTRACT.validate(bad)
    good = request()
    assert coerce_inputs(FIELDS, good).keys() == CONTRACT.coerce(good).keys()


def test_from_contract_names_the_contract_in_errors() -> None:
    compiled = CompiledContract.from_contract(Contract(name="fraud-score", inputs=[fld("a")]))
    with pytest.raises(ContractViolation) as info:
        compiled.coerce({})
    assert "fraud-score" in info.value.message
    assert info.value.details == [{"field": "a", "problem": "missing required field"}]


def test_violation_detail() -> None:
    assert Violation("a", "bad").to_detail() == {"field": "a", "problem": "bad"}


def test_lists_are_taken_as_arrays() -> None:
    assert CONTRACT.validate(request(amount=[1.0, 2.0])) == []


def test_scalar_field_has_no_batch_dim() -> None:
    compiled = CompiledContract([fld("threshold", shape=()), fld("x")])
    assert compiled.validate({"threshold": np.array(0.5), "x": np.zeros(3)}) == []
    assert compiled.validate({"threshold": np.zeros(3), "x": np.zeros(3)}) == [
        Violation("threshold", "expected shape [] (rank 0), got [3]")
    ]


def test_empty_batch_is_valid() -> None:
    empty = {name: a[:0] for name, a in request().items()}
    assert CONTRACT.validate(empty) == []


# --- coerce ----------------------------------------------------------------------------------


def test_coerce_casts_to_contract_dtypes_in_contract_order() -> None:
    out = CONTRACT.coerce(
        request(amount=np.array([1, 2]), count=np.array([1.0, 2.0]), vec=np.ones((2, 3)))
    )
    assert list(out) == ["amount", "count", "country", "vec", "rate"]
    assert out["amount"].dtype == np.float64
    assert out["count"].dtype == np.int32
    np.testing.assert_array_equal(out["count"], [1, 2])
    assert out["country"].dtype == object
    assert out["country"].tolist() == ["FR", "DE"]
    assert out["vec"].dtype == np.float32


def test_coerce_fills_defaults_broadcast_to_the_batch() -> None:
    fields = [
        fld("x"),
        fld("rate", "float32", default=0.5),
        fld("weights", "float64", shape=(-1, 2), default=[1.0, 2.0]),
        fld("bias", "int64", shape=(-1, 3), default=7),
        fld("maybe", required=False),
    ]
    out = coerce_inputs(fields, {"x": np.zeros(3)})
    np.testing.assert_array_equal(out["rate"], np.full(3, 0.5, dtype=np.float32))
    assert out["rate"].dtype == np.float32
    np.testing.assert_array_equal(out["weights"], [[1.0, 2.0]] * 3)
    np.testing.assert_array_equal(out["bias"], np.full((3, 3), 7))
    assert "maybe" not in out


def test_coerce_keeps_a_given_value_over_the_default() -> None:
    out = CONTRACT.coerce(request(rate=np.array([1.0, 2.0])))
    np.testing.assert_array_equal(out["rate"], [1.0, 2.0])


def test_coerce_nulls() -> None:
    fields = [
        fld("f", "float32", nullable=True),
        fld("i", "int16", nullable=True),
        fld("s", "string", nullable=True),
    ]
    out = coerce_inputs(
        fields, {"f": obj(None, 1), "i": np.array([np.nan, 3.0]), "s": obj("a", None)}
    )
    assert out["f"].dtype == np.float32
    assert np.isnan(out["f"][0])
    assert out["f"][1] == 1.0
    # numpy integers cannot hold a null: an object array keeps None where it was.
    assert out["i"].tolist() == [None, 3]
    assert out["s"].tolist() == ["a", None]


def test_coerce_raises_naming_every_field() -> None:
    with pytest.raises(ContractViolation) as info:
        CONTRACT.coerce(request(amount=None, country=np.array(["FR", "XX"])))
    assert [d["field"] for d in info.value.details] == ["amount", "country"]
    assert info.value.code == "contract_violation"


def test_a_default_that_does_not_fit_its_field_is_refused_at_compile_time() -> None:
    with pytest.raises(InvalidSpec) as info:
        CompiledContract([fld("x", default="not a number")])
    assert info.value.details[0]["field"] == "inputs.x.default"


# --- outputs ---------------------------------------------------------------------------------

OUTPUT_FIELDS = [
    fld("score", "float32", range=Range(min=0, max=1)),
    fld("label", "int64"),
    fld("probs", "float32", shape=(-1, 2)),
    fld("explain", "string", required=False),
]


def answer(**changes: Any) -> Arrays:
    arrays: Arrays = {
        "score": np.array([0.1, 0.9], dtype=np.float32),
        "label": np.array([0, 1]),
        "probs": np.full((2, 2), 0.5, dtype=np.float32),
    }
    for name, value in changes.items():
        if value is None:
            arrays.pop(name)
        else:
            arrays[name] = value
    return arrays


OUTPUT_CASES: list[tuple[str, Arrays, list[tuple[str, str]]]] = [
    ("valid answer", answer(), []),
    ("extra outputs are ignored", answer(debug=np.zeros(7)), []),
    ("float64 for a float32 output", answer(score=np.array([0.1, 0.9])), []),
    ("missing output", answer(label=None), [("label", "missing output")]),
    (
        "wrong dtype kind",
        answer(score=np.array(["a", "b"])),
        [("score", "expected float32, got string")],
    ),
    (
        "floats for an int output",
        answer(label=np.array([0.5, 1.0])),
        [("label", "1 value(s) not integral for int64; first 0.5 at index 0")],
    ),
    (
        "wrong shape",
        answer(probs=np.zeros((2, 3))),
        [("probs", "expected shape [-1, 2] (rank 2), got [2, 3]")],
    ),
    (
        "batch size differs",
        answer(label=np.array([0, 1, 1])),
        [("label", "batch size 3 differs from the request's 2")],
    ),
    (
        "null output",
        answer(score=np.array([np.nan, 0.5])),
        [("score", "1 null value(s) in a non-nullable field; first at index 0")],
    ),
    (
        "output out of range",
        answer(score=np.array([0.5, 1.5])),
        [("score", "1 value(s) outside range [0.0, 1.0]; first 1.5 at index 1")],
    ),
]


@pytest.mark.parametrize(
    ("outputs", "expected"),
    [case[1:] for case in OUTPUT_CASES],
    ids=[case[0] for case in OUTPUT_CASES],
)
def test_output_rule(outputs: Arrays, expected: list[tuple[str, str]]) -> None:
    found = validate_outputs(OUTPUT_FIELDS, outputs, batch_size=2)
    assert found == [Violation(f, p) for f, p in expected]


def test_outputs_without_a_request_batch_size_skip_that_check() -> None:
    assert validate_outputs(OUTPUT_FIELDS, answer(label=np.array([0, 1, 1]))) == []


# --- properties ------------------------------------------------------------------------------

FLOATS = st.floats(min_value=0, max_value=1e6, allow_nan=False, width=32)
PROPERTY = settings(max_examples=40, deadline=None)


def batch_arrays(rows: int, draw: Callable[[Any], Any]) -> Arrays:
    return {
        "amount": draw(hnp.arrays(np.float64, rows, elements=FLOATS)),
        "count": draw(hnp.arrays(np.int32, rows)),
        "country": np.array(
            draw(st.lists(st.sampled_from(["FR", "DE"]), min_size=rows, max_size=rows)),
            dtype=object,
        ),
        "vec": draw(hnp.arrays(np.float32, (rows, 3), elements=st.floats(-1e3, 10, width=32))),
    }


@PROPERTY
@given(st.integers(0, 20), st.data())
def test_any_valid_batch_passes_and_coerces_to_contract_dtypes(
    rows: int, data: st.DataObject
) -> None:
    inputs = batch_arrays(rows, data.draw)
    assert CONTRACT.validate(inputs) == []
    out = CONTRACT.coerce(inputs)
    assert {name: a.shape[0] for name, a in out.items()} == dict.fromkeys(out, rows)
    np.testing.assert_array_equal(out["amount"], inputs["amount"])


@PROPERTY
@given(st.integers(1, 20), st.data())
def test_one_null_is_reported_once_with_its_index(rows: int, data: st.DataObject) -> None:
    inputs = batch_arrays(rows, data.draw)
    index = data.draw(st.integers(0, rows - 1))
    inputs["amount"][index] = np.nan
    assert CONTRACT.validate(inputs) == [
        Violation("amount", f"1 null value(s) in a non-nullable field; first at index {index}")
    ]
