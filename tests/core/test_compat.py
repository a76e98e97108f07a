from __future__ import annotations

import itertools
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from modelplane.core.compat import (
    Cast,
    Incompatibility,
    cast_safety,
    check_signature,
    compare_contracts,
    ensure_compatible,
    is_optional,
    widens,
)
from modelplane.errors import Incompatible
from modelplane.spec import SLO, Contract, DType, Fallback, FieldSpec, Range, Signature

# --- builders --------------------------------------------------------------------------------


def fld(name: str, dtype: str = "float64", **kw: Any) -> FieldSpec:
    return FieldSpec(name=name, dtype=dtype, **kw)


@dataclass
class ContractBuilder:
    """Fluent contract fixtures: ``contract().input("a").output("y").build()``."""

    inputs: list[FieldSpec] = field(default_factory=list)
    outputs: list[FieldSpec] = field(default_factory=list)
    extra: dict[str, Any] = field(default_factory=dict)

    def input(self, name: str, dtype: str = "float64", **kw: Any) -> ContractBuilder:
        return self.add_input(fld(name, dtype, **kw))

    def output(self, name: str, dtype: str = "float64", **kw: Any) -> ContractBuilder:
        return self.add_output(fld(name, dtype, **kw))

    def add_input(self, spec: FieldSpec) -> ContractBuilder:
        self.inputs.append(spec)
        return self

    def add_output(self, spec: FieldSpec) -> ContractBuilder:
        self.outputs.append(spec)
        return self

    def with_(self, **kw: Any) -> ContractBuilder:
        self.extra.update(kw)
        return self

    def build(self) -> Contract:
        return Contract(name="c", inputs=self.inputs, outputs=self.outputs, **self.extra)


def contract() -> ContractBuilder:
    return ContractBuilder()


def base() -> ContractBuilder:
    return contract().input("amount").input("country", "string").output("score", "float32")


def breaking(found: list[Incompatibility]) -> set[str]:
    return {f.field for f in found if f.breaking}


def warnings(found: list[Incompatibility]) -> set[str]:
    return {f.field for f in found if not f.breaking}


# --- dtype lattice ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("source", "target", "expected"),
    [
        ("int32", "int64", Cast.LOSSLESS),
        ("int32", "float64", Cast.LOSSLESS),
        ("uint16", "float32", Cast.LOSSLESS),
        ("bool", "uint8", Cast.LOSSLESS),
        ("float32", "float64", Cast.LOSSLESS),
        ("float64", "float32", Cast.ROUNDING),
        ("int64", "float64", Cast.ROUNDING),
        ("int32", "float32", Cast.ROUNDING),
        ("uint32", "float16", Cast.UNSAFE),
        ("int64", "int32", Cast.UNSAFE),
        ("int8", "uint8", Cast.UNSAFE),
        ("float32", "int64", Cast.UNSAFE),
        ("int8", "bool", Cast.UNSAFE),
        ("string", "float64", Cast.UNSAFE),
        ("float64", "string", Cast.UNSAFE),
    ],
)
def test_cast_safety(source: str, target: str, expected: Cast) -> None:
    assert cast_safety(DType(source), DType(target)) is expected


ALL = list(DType)


def test_widening_is_a_partial_order_within_numpy_safe_casts() -> None:
    for a in ALL:
        assert widens(a, a)
    for a, b in itertools.product(ALL, ALL):
        if a is not b and widens(a, b):
            assert not widens(b, a), (a, b)
            if DType.STRING not in (a, b):
                assert np.can_cast(a.numpy, b.numpy, "safe"), (a, b)
    for a, b, c in itertools.product(ALL, ALL, ALL):
        if widens(a, b) and widens(b, c):
            assert widens(a, c), (a, b, c)


def test_optional_means_not_required_or_defaulted() -> None:
    assert is_optional(fld("a", required=False))
    assert is_optional(fld("a", default=1.0))
    assert not is_optional(fld("a"))


# --- compare_contracts: one case per rule ----------------------------------------------------


def with_input(spec: FieldSpec) -> Contract:
    """The base contract with one input (``amount`` unless renamed) replaced by ``spec``."""
    return contract().input("id", "int64").add_input(spec).output("score", "float32").build()


R = Range

INPUT_CHANGES: list[tuple[str, FieldSpec, FieldSpec, set[str], set[str]]] = [
    # (case, old amount, new amount, breaking fields, warning fields)
    ("unchanged", fld("amount"), fld("amount"), set(), set()),
    ("dtype widens", fld("amount", "int32"), fld("amount", "int64"), set(), set()),
    ("int widens to float", fld("amount", "int32"), fld("amount", "float64"), set(), set()),
    ("dtype narrows", fld("amount", "float64"), fld("amount", "float32"), {"dtype"}, set()),
    ("dtype changes kind", fld("amount", "int64"), fld("amount", "string"), {"dtype"}, set()),
    (
        "fixed dim becomes variable",
        fld("amount", shape=(-1, 3)),
        fld("amount", shape=(-1, -1)),
        set(),
        set(),
    ),
    (
        "variable dim becomes fixed",
        fld("amount", shape=(-1, -1)),
        fld("amount", shape=(-1, 3)),
        {"shape"},
        set(),
    ),
    (
        "fixed dim changes",
        fld("amount", shape=(-1, 3)),
        fld("amount", shape=(-1, 4)),
        {"shape"},
        set(),
    ),
    ("rank changes", fld("amount"), fld("amount", shape=(-1, 1)), {"shape"}, set()),
    (
        "range widens",
        fld("amount", range=R(min=0, max=10)),
        fld("amount", range=R(min=-1)),
        set(),
        set(),
    ),
    ("range dropped", fld("amount", range=R(min=0)), fld("amount"), set(), set()),
    (
        "range narrows",
        fld("amount", range=R(min=0, max=10)),
        fld("amount", range=R(min=0, max=5)),
        {"range"},
        set(),
    ),
    ("range added", fld("amount"), fld("amount", range=R(max=5)), {"range"}, set()),
    (
        "enum widens",
        fld("amount", "string", enum=("a",)),
        fld("amount", "string", enum=("a", "b")),
        set(),
        set(),
    ),
    ("enum dropped", fld("amount", "string", enum=("a",)), fld("amount", "string"), set(), set()),
    (
        "enum narrows",
        fld("amount", "string", enum=("a", "b")),
        fld("amount", "string", enum=("a",)),
        {"enum"},
        set(),
    ),
    ("enum added", fld("amount", "string"), fld("amount", "string", enum=("a",)), {"enum"}, set()),
    ("nullable becomes true", fld("amount"), fld("amount", nullable=True), set(), set()),
    ("nullable becomes false", fld("amount", nullable=True), fld("amount"), {"nullable"}, set()),
    ("becomes required", fld("amount", required=False), fld("amount"), {"required"}, set()),
    ("default removed", fld("amount", default=1.0), fld("amount"), {"required"}, set()),
    ("becomes optional", fld("amount"), fld("amount", required=False), set(), set()),
    ("default changes", fld("amount", default=1.0), fld("amount", default=2.0), set(), {"default"}),
]


@pytest.mark.parametrize(
    ("old", "new", "broken", "warned"),
    [case[1:] for case in INPUT_CHANGES],
    ids=[case[0] for case in INPUT_CHANGES],
)
def test_input_change(old: FieldSpec, new: FieldSpec, broken: set[str], warned: set[str]) -> None:
    found = compare_contracts(with_input(old), with_input(new))
    assert breaking(found) == {f"inputs.amount.{part}" for part in broken}
    assert warnings(found) == {f"inputs.amount.{part}" for part in warned}
    assert all(f.side == "inputs" for f in found)


def with_output(spec: FieldSpec) -> Contract:
    return contract().input("id", "int64").add_output(spec).build()


OUTPUT_CHANGES: list[tuple[str, FieldSpec, FieldSpec, set[str]]] = [
    # (case, old score, new score, breaking fields)
    ("unchanged", fld("score"), fld("score"), set()),
    ("dtype narrows", fld("score", "float64"), fld("score", "float32"), set()),
    ("dtype widens", fld("score", "float32"), fld("score", "float64"), {"dtype"}),
    ("int widens", fld("score", "int32"), fld("score", "int64"), {"dtype"}),
    (
        "variable dim becomes fixed",
        fld("score", shape=(-1, -1)),
        fld("score", shape=(-1, 2)),
        set(),
    ),
    (
        "fixed dim becomes variable",
        fld("score", shape=(-1, 2)),
        fld("score", shape=(-1, -1)),
        {"shape"},
    ),
    (
        "range narrows",
        fld("score", range=R(min=0, max=1)),
        fld("score", range=R(min=0, max=0.5)),
        set(),
    ),
    (
        "range widens",
        fld("score", range=R(min=0, max=1)),
        fld("score", range=R(min=0, max=2)),
        {"range"},
    ),
    ("range dropped", fld("score", range=R(min=0, max=1)), fld("score"), {"range"}),
    (
        "enum narrows",
        fld("score", "string", enum=("a", "b")),
        fld("score", "string", enum=("a",)),
        set(),
    ),
    (
        "enum widens",
        fld("score", "string", enum=("a",)),
        fld("score", "string", enum=("a", "b")),
        {"enum"},
    ),
    ("nullable becomes true", fld("score"), fld("score", nullable=True), {"nullable"}),
    ("nullable becomes false", fld("score", nullable=True), fld("score"), set()),
    ("may go missing", fld("score"), fld("score", required=False), {"required"}),
]


@pytest.mark.parametrize(
    ("old", "new", "broken"),
    [case[1:] for case in OUTPUT_CHANGES],
    ids=[case[0] for case in OUTPUT_CHANGES],
)
def test_output_change(old: FieldSpec, new: FieldSpec, broken: set[str]) -> None:
    found = compare_contracts(with_output(old), with_output(new))
    assert breaking(found) == {f"outputs.score.{part}" for part in broken}
    assert warnings(found) == set()


def test_fields_added_removed_and_renamed() -> None:
    old = base().build()
    assert compare_contracts(old, base().input("x", required=False).build()) == []
    assert compare_contracts(old, base().input("x", default=0.0).build()) == []
    assert compare_contracts(old, base().output("extra").build()) == []
    assert breaking(compare_contracts(old, base().input("x").build())) == {"inputs.x"}
    renamed = contract().input("amt").input("country", "string").output("score", "float32")
    assert breaking(compare_contracts(old, renamed.build())) == {"inputs.amount", "inputs.amt"}
    no_output = contract().input("amount").input("country", "string").build()
    assert breaking(compare_contracts(old, no_output)) == {"outputs.score"}


@pytest.mark.parametrize(
    ("change", "warned"),
    [
        ({"timeout_ms": 2000}, {"timeout_ms"}),
        ({"timeout_ms": 500}, set()),
        ({"slo": SLO(availability=0.99)}, {"slo.availability"}),
        ({"slo": SLO(availability=0.9999)}, set()),
        ({"slo": SLO(latency_ms=200)}, {"slo.latency_ms"}),
        ({"slo": SLO(latency_ms=50)}, set()),
        ({"slo": SLO(latency_quantile=0.9)}, {"slo.latency_quantile"}),
        ({"fallback": Fallback()}, {"fallback.kind"}),
    ],
)
def test_service_changes_are_warnings(change: dict[str, Any], warned: set[str]) -> None:
    old = base().with_(timeout_ms=1000, fallback=Fallback(kind="static", value=0.0)).build()
    new = old.model_copy(update=change)
    found = compare_contracts(old, new)
    assert breaking(found) == set()
    assert warnings(found) == warned
    assert all(f.side == "service" for f in found)


def test_incompatibility_detail_and_flags() -> None:
    finding = Incompatibility("inputs.a.dtype", "narrowed", "inputs")
    assert finding.breaking
    assert finding.to_detail() == {"field": "inputs.a.dtype", "problem": "narrowed"}
    assert not Incompatibility("timeout_ms", "longer", "service", "warning").breaking


# --- ensure_compatible -----------------------------------------------------------------------


def test_ensure_compatible_names_every_breaking_finding() -> None:
    old = base().with_(timeout_ms=1000).build()
    new = (
        contract()
        .input("amount", "float32")
        .input("country", "string")
        .input("new")
        .with_(timeout_ms=2000)
        .build()
    )
    with pytest.raises(Incompatible) as info:
        ensure_compatible(compare_contracts(old, new), subject="contract c v2")
    assert {d["field"] for d in info.value.details} == {
        "inputs.amount.dtype",
        "inputs.new",
        "outputs.score",
    }
    assert all(set(d) == {"field", "problem"} for d in info.value.details)
    assert info.value.code == "incompatible"
    assert "contract c v2" in info.value.message


def test_ensure_compatible_returns_warnings_when_nothing_breaks() -> None:
    old = base().with_(timeout_ms=1000).build()
    new = base().with_(timeout_ms=3000).build()
    assert [f.field for f in ensure_compatible(compare_contracts(old, new))] == ["timeout_ms"]
    assert ensure_compatible([]) == []


# --- check_signature -------------------------------------------------------------------------


def sig(inputs: list[FieldSpec], outputs: list[FieldSpec] | None = None) -> Signature:
    return Signature(inputs=inputs, outputs=outputs or [])


SIGNATURE_CASES: list[tuple[str, Contract, Signature, set[str], set[str]]] = [
    (
        "exact match",
        contract().input("x").output("y").build(),
        sig([fld("x")], [fld("y")]),
        set(),
        set(),
    ),
    (
        "contract int32 into model float64 is lossless",
        contract().input("x", "int32").build(),
        sig([fld("x", "float64")]),
        set(),
        set(),
    ),
    (
        "contract float64 into model float32 rounds",
        contract().input("x", "float64").build(),
        sig([fld("x", "float32")]),
        set(),
        {"inputs.x.dtype"},
    ),
    (
        "contract float into model int is unsafe",
        contract().input("x", "float32").build(),
        sig([fld("x", "int64")]),
        {"inputs.x.dtype"},
        set(),
    ),
    (
        "contract string into model float is unsafe",
        contract().input("x", "string").build(),
        sig([fld("x", "float32")]),
        {"inputs.x.dtype"},
        set(),
    ),
    (
        "required contract input the model lacks",
        contract().input("x").input("z").build(),
        sig([fld("x")]),
        {"inputs.z"},
        set(),
    ),
    (
        "optional contract input the model lacks",
        contract().input("x").input("z", required=False).build(),
        sig([fld("x")]),
        set(),
        {"inputs.z"},
    ),
    (
        "model input the contract lacks",
        contract().input("x").build(),
        sig([fld("x"), fld("w")]),
        {"inputs.w"},
        set(),
    ),
    (
        "optional model input the contract lacks",
        contract().input("x").build(),
        sig([fld("x"), fld("w", default=0.0)]),
        set(),
        set(),
    ),
    (
        "input shape mismatch",
        contract().input("x", shape=(-1, 4)).build(),
        sig([fld("x", shape=(-1, 3))]),
        {"inputs.x.shape"},
        set(),
    ),
    (
        "variable contract dim into fixed model dim",
        contract().input("x", shape=(-1, -1)).build(),
        sig([fld("x", shape=(-1, 3))]),
        {"inputs.x.shape"},
        set(),
    ),
    (
        "nullable contract input, model silent on nulls",
        contract().input("x", nullable=True).build(),
        sig([fld("x")]),
        set(),
        {"inputs.x.nullable"},
    ),
    (
        "model range narrower than the contract's",
        contract().input("x").build(),
        sig([fld("x", range=Range(min=0))]),
        set(),
        {"inputs.x.range"},
    ),
    (
        "output the model does not produce",
        contract().input("x").output("y").build(),
        sig([fld("x")], [fld("other")]),
        {"outputs.y"},
        set(),
    ),
    (
        "optional output the model does not produce",
        contract().input("x").output("y", required=False).build(),
        sig([fld("x")]),
        set(),
        set(),
    ),
    (
        "model output float32 into contract float64",
        contract().input("x").output("y", "float64").build(),
        sig([fld("x")], [fld("y", "float32")]),
        set(),
        set(),
    ),
    (
        "model output float64 into contract float32 rounds",
        contract().input("x").output("y", "float32").build(),
        sig([fld("x")], [fld("y", "float64")]),
        set(),
        {"outputs.y.dtype"},
    ),
    (
        "model output string into contract int",
        contract().input("x").output("y", "int64").build(),
        sig([fld("x")], [fld("y", "string")]),
        {"outputs.y.dtype"},
        set(),
    ),
    (
        "model output fixed dim differs",
        contract().input("x").output("y", shape=(-1, 2)).build(),
        sig([fld("x")], [fld("y", shape=(-1, 3))]),
        {"outputs.y.shape"},
        set(),
    ),
    (
        "model output variable where contract fixes",
        contract().input("x").output("y", shape=(-1, 2)).build(),
        sig([fld("x")], [fld("y", shape=(-1, -1))]),
        set(),
        {"outputs.y.shape"},
    ),
    (
        "model output fixed where contract is variable",
        contract().input("x").output("y", shape=(-1, -1)).build(),
        sig([fld("x")], [fld("y", shape=(-1, 2))]),
        set(),
        set(),
    ),
    (
        "model output may be null",
        contract().input("x").output("y").build(),
        sig([fld("x")], [fld("y", nullable=True)]),
        set(),
        {"outputs.y.nullable"},
    ),
    (
        "tabular model is not mapped from columns",
        contract().input("a").input("b").build(),
        sig([fld("features", "float32", shape=(-1, 2))]),
        {"inputs.a", "inputs.b", "inputs.features"},
        set(),
    ),
]


@pytest.mark.parametrize(
    ("contract_", "signature", "broken", "warned"),
    [case[1:] for case in SIGNATURE_CASES],
    ids=[case[0] for case in SIGNATURE_CASES],
)
def test_check_signature(
    contract_: Contract, signature: Signature, broken: set[str], warned: set[str]
) -> None:
    found = check_signature(signature, contract_)
    assert breaking(found) == broken
    assert warnings(found) == warned


def test_extra_model_outputs_are_ignored() -> None:
    found = check_signature(
        sig([fld("x")], [fld("y"), fld("debug")]), contract().input("x").output("y").build()
    )
    assert found == []


# --- properties ------------------------------------------------------------------------------

NAMES = st.text(alphabet="abcdefgh", min_size=1, max_size=6)
DTYPES = st.sampled_from(ALL)
NUMERIC = st.sampled_from([d for d in ALL if d.is_numeric])


@st.composite
def field_specs(draw: st.DrawFn, name: str, dtype: DType | None = None) -> FieldSpec:
    dtype = draw(DTYPES) if dtype is None else dtype
    shape = (-1, *draw(st.lists(st.sampled_from([-1, 1, 2, 3]), max_size=2)))
    enum: tuple[Any, ...] | None = None
    if draw(st.booleans()):
        values = st.text("xyz", max_size=3) if dtype is DType.STRING else st.integers(0, 5)
        enum = tuple(draw(st.lists(values, min_size=1, max_size=3, unique=True)))
    bounds: Range | None = None
    if dtype.is_numeric and draw(st.booleans()):
        low = draw(st.none() | st.integers(-10, 0))
        high = draw(st.none() | st.integers(0, 10))
        bounds = Range(min=low, max=high)
    return FieldSpec(
        name=name,
        dtype=dtype,
        shape=shape,
        nullable=draw(st.booleans()),
        required=draw(st.booleans()),
        enum=enum,
        range=bounds,
        default=draw(st.none() | st.integers(0, 3)) if dtype.is_numeric else None,
    )


@st.composite
def contracts(draw: st.DrawFn, min_inputs: int = 1) -> Contract:
    input_names = draw(st.lists(NAMES, min_size=min_inputs, max_size=4, unique=True))
    output_names = draw(st.lists(NAMES, max_size=3, unique=True))
    return Contract(
        name="c",
        inputs=[draw(field_specs(n)) for n in input_names],
        outputs=[draw(field_specs(n)) for n in output_names],
        timeout_ms=draw(st.integers(1, 5000)),
        slo=SLO(availability=draw(st.sampled_from([0.99, 0.999])), latency_ms=50.0),
    )


PROPERTY = settings(max_examples=60, deadline=None)


@PROPERTY
@given(contracts())
def test_a_contract_is_compatible_with_itself(c: Contract) -> None:
    assert compare_contracts(c, c) == []


@PROPERTY
@given(contracts(), st.data())
def test_adding_an_optional_input_or_any_output_is_compatible(
    c: Contract, data: st.DataObject
) -> None:
    name = "new_" + data.draw(NAMES)
    optional = data.draw(field_specs(name))
    if not is_optional(optional):
        optional = optional.model_copy(update={"required": False})
    output = data.draw(field_specs(name))
    assert compare_contracts(c, c.model_copy(update={"inputs": (*c.inputs, optional)})) == []
    assert compare_contracts(c, c.model_copy(update={"outputs": (*c.outputs, output)})) == []


@PROPERTY
@given(contracts(min_inputs=2), st.data())
def test_removing_any_field_is_breaking(c: Contract, data: st.DataObject) -> None:
    side = data.draw(st.sampled_from(["inputs", "outputs"] if c.outputs else ["inputs"]))
    fields: tuple[FieldSpec, ...] = getattr(c, side)
    gone = data.draw(st.sampled_from(fields))
    smaller = c.model_copy(update={side: tuple(f for f in fields if f is not gone)})
    assert f"{side}.{gone.name}" in breaking(compare_contracts(c, smaller))


def retype(c: Contract, side: str, dtype: DType) -> Contract:
    spec = getattr(c, side)[0]
    # Enums and ranges are typed; drop them so any dtype is a valid spec.
    changed = spec.model_copy(update={"dtype": dtype, "enum": None, "range": None})
    return c.model_copy(update={side: (changed, *getattr(c, side)[1:])})


@PROPERTY
@given(contracts(), st.data())
def test_dtype_changes_are_antisymmetric(c: Contract, data: st.DataObject) -> None:
    a = data.draw(DTYPES)
    wider = [d for d in ALL if d is not a and widens(a, d)]
    if not wider:
        return
    b = data.draw(st.sampled_from(wider))
    narrow_in, wide_in = retype(c, "inputs", a), retype(c, "inputs", b)
    assert not breaking(compare_contracts(narrow_in, wide_in))
    assert breaking(compare_contracts(wide_in, narrow_in))
    c = c.model_copy(update={"outputs": (fld("y"),)})
    narrow_out, wide_out = retype(c, "outputs", a), retype(c, "outputs", b)
    assert not breaking(compare_contracts(wide_out, narrow_out))
    assert breaking(compare_contracts(narrow_out, wide_out))


@PROPERTY
@given(contracts(), st.data())
def test_dtype_widening_chain_is_transitive(c: Contract, data: st.DataObject) -> None:
    a = data.draw(DTYPES)
    b = data.draw(st.sampled_from([d for d in ALL if widens(a, d)]))
    z = data.draw(st.sampled_from([d for d in ALL if widens(b, d)]))
    first, middle, last = (retype(c, "inputs", d) for d in (a, b, z))
    assert not breaking(compare_contracts(first, middle))
    assert not breaking(compare_contracts(middle, last))
    assert not breaking(compare_contracts(first, last))


@st.composite
def evolve(draw: st.DrawFn, c: Contract) -> Contract:
    """``c`` with one random change to one field: compatible or not, as it falls."""
    side = draw(st.sampled_from(["inputs", "outputs"] if c.outputs else ["inputs"]))
    fields: list[FieldSpec] = list(getattr(c, side))
    index = draw(st.integers(0, len(fields) - 1))
    fresh = draw(field_specs(fields[index].name))
    attr = draw(
        st.sampled_from(["dtype", "shape", "nullable", "required", "default", "enum", "range"])
    )
    # enum and range are typed, so they travel with a new dtype.
    attrs = ["dtype", "enum", "range"] if attr == "dtype" else [attr]
    if attr in ("enum", "range") and fields[index].dtype.is_numeric != fresh.dtype.is_numeric:
        attrs = ["dtype", "enum", "range"]
    fields[index] = fields[index].model_copy(update={a: getattr(fresh, a) for a in attrs})
    return c.model_copy(update={side: tuple(fields)})


@settings(max_examples=150, deadline=None)
@given(contracts(), st.data())
def test_compatibility_is_transitive_over_random_changes(c: Contract, data: st.DataObject) -> None:
    middle = data.draw(evolve(c))
    last = data.draw(evolve(middle))
    if breaking(compare_contracts(c, middle)) or breaking(compare_contracts(middle, last)):
        return
    assert not breaking(compare_contracts(c, last))


@PROPERTY
@given(NUMERIC, NUMERIC)
def test_signature_accepts_exactly_the_lossless_casts(a: DType, b: DType) -> None:
    found = check_signature(sig([fld("x", b)]), contract().input("x", a.value).build())
    assert (found == []) == widens(a, b)
    assert bool(breaking(found)) == (cast_safety(a, b) is Cast.UNSAFE)


@pytest.mark.parametrize(
    ("old", "new", "breaks"),
    [
        (None, None, False),
        (None, 20_000, False),  # more rows than the platform default: callers lose nothing
        (None, 500, True),  # requests of 501..10,000 rows would now get 413
        (500, 400, True),
        (500, None, False),
    ],
)
def test_fewer_rows_per_request_is_breaking(old: int | None, new: int | None, breaks: bool) -> None:
    before = base().with_(max_rows=old).build()
    after = base().with_(max_rows=new).build()
    assert ("max_rows" in breaking(compare_contracts(before, after))) is breaks
