"""Contract compatibility: may a new contract replace an old one, may a model serve a contract.

Both questions are pure functions over specs and answer with a list of
:class:`Incompatibility` findings, each ``breaking`` or a ``warning``. Nothing here raises
unless asked to: :func:`ensure_compatible` turns the breaking findings into one
:class:`~modelplane.errors.Incompatible` naming every field.

The direction of each rule follows who relies on what:

* **inputs** are what callers send, so a new contract must accept every request the old one
  accepted (it may widen: a bigger dtype, a wider range, more enum values, nulls allowed);
* **outputs** are what callers receive, so a new contract must only answer what callers
  already expect (it may narrow, never widen).

Dtype widening is defined by value sets, not by numpy's ``can_cast``: a cast is
``lossless`` only when every value of the source is exactly a value of the target, so
``int64 -> float64`` (exact only up to 2**53) is ``rounding``, where numpy calls it safe.
Because each rule is set inclusion, compatibility is reflexive and transitive.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from enum import StrEnum
from typing import Literal

from modelplane.errors import Incompatible
from modelplane.spec.contract import DEFAULT_MAX_ROWS, Contract, FallbackKind
from modelplane.spec.dtypes import DType
from modelplane.spec.fields import FieldSpec, Range, Signature

__all__ = [
    "Cast",
    "Incompatibility",
    "Severity",
    "Side",
    "cast_safety",
    "check_signature",
    "compare_contracts",
    "ensure_compatible",
    "is_optional",
    "widens",
]

Severity = Literal["breaking", "warning"]
"""``breaking`` stops the change; a ``warning`` is shown and recorded but allowed."""

Side = Literal["inputs", "outputs", "service"]
"""Which part of the contract a finding is about; ``service`` covers timeout, SLO, fallback."""


@dataclass(frozen=True, slots=True)
class Incompatibility:
    """One reason a contract (or a model) cannot stand in for another.

    ``field`` is a dotted path such as ``inputs.amount.dtype`` or ``slo.latency_ms``.
    """

    field: str
    problem: str
    side: Side
    severity: Severity = "breaking"

    @property
    def breaking(self) -> bool:
        return self.severity == "breaking"

    def to_detail(self) -> dict[str, str]:
        """The ``{"field", "problem"}`` entry of an error's details."""
        return {"field": self.field, "problem": self.problem}


class Cast(StrEnum):
    """How well every value of one dtype survives a cast to another."""

    LOSSLESS = "lossless"
    """Every source value is exactly a target value (``int32 -> int64``, ``int32 -> float64``)."""
    ROUNDING = "rounding"
    """Values survive up to float rounding (``float64 -> float32``, ``int64 -> float64``)."""
    UNSAFE = "unsafe"
    """Values may change meaning: truncation, wrap-around, overflow or a change of kind."""


def _int_bounds(dtype: DType) -> tuple[int, int]:
    if dtype is DType.BOOL:
        return 0, 1
    bits = dtype.bits
    if dtype.value.startswith("uint"):
        return 0, 2**bits - 1
    return -(2 ** (bits - 1)), 2 ** (bits - 1) - 1


# Integers a float holds exactly: |n| <= 2**(significand bits), and the largest finite value.
_FLOAT_EXACT: dict[DType, int] = {DType.FLOAT16: 2**11, DType.FLOAT32: 2**24, DType.FLOAT64: 2**53}
_FLOAT_MAX: dict[DType, float] = {
    DType.FLOAT16: 65504.0,
    DType.FLOAT32: 3.4028234663852886e38,
    DType.FLOAT64: 1.7976931348623157e308,
}


def cast_safety(source: DType, target: DType) -> Cast:
    """Classify the cast of every ``source`` value to ``target``."""
    if source is target:
        return Cast.LOSSLESS
    if DType.STRING in (source, target) or target is DType.BOOL:
        return Cast.UNSAFE
    if target.is_float:
        if source.is_float:
            return Cast.LOSSLESS if target.bits >= source.bits else Cast.ROUNDING
        low, high = _int_bounds(source)
        if high > _FLOAT_MAX[target]:
            return Cast.UNSAFE
        exact = _FLOAT_EXACT[target]
        return Cast.LOSSLESS if -exact <= low and high <= exact else Cast.ROUNDING
    if source.is_float:
        return Cast.UNSAFE
    low, high = _int_bounds(source)
    target_low, target_high = _int_bounds(target)
    return Cast.LOSSLESS if target_low <= low and high <= target_high else Cast.UNSAFE


def widens(source: DType, target: DType) -> bool:
    """True when ``target`` holds every value of ``source`` exactly."""
    return cast_safety(source, target) is Cast.LOSSLESS


def is_optional(field: FieldSpec) -> bool:
    """A caller may leave the field out: it is not required, or it has a default."""
    return not field.required or field.default is not None


# --- value-set inclusion of the parts of a field --------------------------------------------


def _shape_within(inner: tuple[int, ...], outer: tuple[int, ...]) -> bool:
    """Every array shape ``inner`` allows is allowed by ``outer`` (``-1`` is any size)."""
    if len(inner) != len(outer):
        return False
    return all(o in (-1, i) for i, o in zip(inner, outer, strict=True))


def _enum_within(inner: FieldSpec, outer: FieldSpec) -> bool:
    if outer.enum is None:
        return True
    return inner.enum is not None and set(inner.enum) <= set(outer.enum)


def _range_within(inner: Range | None, outer: Range | None) -> bool:
    if outer is None:
        return True
    return inner is not None and outer.contains(inner)


def _describe(spec: FieldSpec) -> dict[str, str]:
    return {
        "enum": "any value" if spec.enum is None else str(list(spec.enum)),
        "range": "unbounded" if spec.range is None else f"[{spec.range.min}, {spec.range.max}]",
    }


def _shape_rule(path: str, narrow: FieldSpec, wide: FieldSpec, side: Side) -> list[Incompatibility]:
    if _shape_within(narrow.shape, wide.shape):
        return []
    problem = f"shape {list(narrow.shape)} does not fit in {list(wide.shape)}"
    return [Incompatibility(f"{path}.shape", problem, side)]


def _value_rules(
    path: str,
    narrow: FieldSpec,
    wide: FieldSpec,
    side: Side,
    *,
    severity: Severity,
    labels: tuple[str, str],
) -> list[Incompatibility]:
    """Findings where ``wide`` fails to admit every value (nulls, enum, range) ``narrow`` does.

    The caller chooses which spec must be the wider one: for inputs the new (or model) side,
    for outputs the old (or contract) side. ``labels`` name the two in messages.
    """
    found: list[Incompatibility] = []
    n, w = _describe(narrow), _describe(wide)
    if narrow.nullable and not wide.nullable:
        problem = f"the {labels[0]} allows nulls, the {labels[1]} does not"
        found.append(Incompatibility(f"{path}.nullable", problem, side, severity))
    if not _enum_within(narrow, wide):
        problem = f"{labels[0]} enum {n['enum']} does not fit in {labels[1]} enum {w['enum']}"
        found.append(Incompatibility(f"{path}.enum", problem, side, severity))
    if not _range_within(narrow.range, wide.range):
        problem = f"{labels[0]} range {n['range']} does not fit in {labels[1]} range {w['range']}"
        found.append(Incompatibility(f"{path}.range", problem, side, severity))
    return found


# --- contract against contract --------------------------------------------------------------


def _compare_input(old: FieldSpec, new: FieldSpec) -> list[Incompatibility]:
    path = f"inputs.{old.name}"
    found: list[Incompatibility] = []
    if not widens(old.dtype, new.dtype):
        problem = f"dtype {old.dtype} -> {new.dtype} does not accept every old value"
        found.append(Incompatibility(f"{path}.dtype", problem, "inputs"))
    found += _shape_rule(path, old, new, "inputs")
    found += _value_rules(path, old, new, "inputs", severity="breaking", labels=("old", "new"))
    if is_optional(old) and not is_optional(new):
        found.append(Incompatibility(f"{path}.required", "field became required", "inputs"))
    elif is_optional(old) and old.default != new.default:
        problem = f"default changed from {old.default!r} to {new.default!r}"
        found.append(Incompatibility(f"{path}.default", problem, "inputs", "warning"))
    return found


def _compare_output(old: FieldSpec, new: FieldSpec) -> list[Incompatibility]:
    path = f"outputs.{old.name}"
    found: list[Incompatibility] = []
    if not widens(new.dtype, old.dtype):
        problem = f"dtype {old.dtype} -> {new.dtype} answers values callers do not expect"
        found.append(Incompatibility(f"{path}.dtype", problem, "outputs"))
    found += _shape_rule(path, new, old, "outputs")
    found += _value_rules(path, new, old, "outputs", severity="breaking", labels=("new", "old"))
    if old.required and not new.required:
        problem = "output may now be missing"
        found.append(Incompatibility(f"{path}.required", problem, "outputs"))
    return found


def _compare_fields(
    old: Iterable[FieldSpec], new: Iterable[FieldSpec], side: Literal["inputs", "outputs"]
) -> list[Incompatibility]:
    new_by_name = {f.name: f for f in new}
    found: list[Incompatibility] = []
    for old_field in old:
        new_field = new_by_name.pop(old_field.name, None)
        if new_field is None:
            problem = f"{side[:-1]} was removed (or renamed)"
            found.append(Incompatibility(f"{side}.{old_field.name}", problem, side))
        elif side == "inputs":
            found += _compare_input(old_field, new_field)
        else:
            found += _compare_output(old_field, new_field)
    if side == "inputs":
        # Left in new_by_name: fields added by the new contract. Outputs may always be added.
        for added in new_by_name.values():
            if not is_optional(added):
                problem = "new required input: existing callers do not send it"
                found.append(Incompatibility(f"inputs.{added.name}", problem, "inputs"))
    return found


def _compare_service(old: Contract, new: Contract) -> list[Incompatibility]:
    found: list[Incompatibility] = []

    def warn(field: str, problem: str) -> None:
        found.append(Incompatibility(field, problem, "service", "warning"))

    if new.timeout_ms > old.timeout_ms:
        warn("timeout_ms", f"timeout lengthened from {old.timeout_ms} to {new.timeout_ms} ms")
    if new.slo.availability < old.slo.availability:
        warn("slo.availability", f"lowered from {old.slo.availability} to {new.slo.availability}")
    if new.slo.latency_ms > old.slo.latency_ms:
        warn("slo.latency_ms", f"raised from {old.slo.latency_ms} to {new.slo.latency_ms}")
    if new.slo.latency_quantile < old.slo.latency_quantile:
        problem = f"lowered from {old.slo.latency_quantile} to {new.slo.latency_quantile}"
        warn("slo.latency_quantile", problem)
    if old.fallback.kind is not FallbackKind.NONE and new.fallback.kind is FallbackKind.NONE:
        warn("fallback.kind", f"fallback '{old.fallback.kind}' was removed")
    old_rows = DEFAULT_MAX_ROWS if old.max_rows is None else old.max_rows
    new_rows = DEFAULT_MAX_ROWS if new.max_rows is None else new.max_rows
    if new_rows < old_rows:  # requests callers send today would get 413
        problem = f"lowered from {old_rows} to {new_rows} rows per request"
        found.append(Incompatibility("max_rows", problem, "service", "breaking"))
    return found


def compare_contracts(old: Contract, new: Contract) -> list[Incompatibility]:
    """Every reason ``new`` cannot replace ``old`` for existing callers.

    Breaking: removed or renamed fields, a new required input, an input that narrows
    (dtype, shape, enum, range, nulls) or becomes required, an output that widens or may now
    be missing, fewer rows per request (``max_rows``). Warnings: a changed default, a longer
    timeout, a weaker SLO, a removed fallback. An empty list means the change is invisible
    to callers.
    """
    return [
        *_compare_fields(old.inputs, new.inputs, "inputs"),
        *_compare_fields(old.outputs, new.outputs, "outputs"),
        *_compare_service(old, new),
    ]


# --- signature against contract -------------------------------------------------------------


def _cast_finding(path: str, source: DType, target: DType, side: Side) -> list[Incompatibility]:
    safety = cast_safety(source, target)
    if safety is Cast.LOSSLESS:
        return []
    severity: Severity = "warning" if safety is Cast.ROUNDING else "breaking"
    problem = f"{source} -> {target} cast is {safety}"
    return [Incompatibility(f"{path}.dtype", problem, side, severity)]


def _signature_inputs(signature: Signature, contract: Contract) -> list[Incompatibility]:
    found: list[Incompatibility] = []
    for field in contract.inputs:
        path = f"inputs.{field.name}"
        model = signature.input(field.name)
        if model is None:
            severity: Severity = "warning" if is_optional(field) else "breaking"
            found.append(Incompatibility(path, "the model does not take it", "inputs", severity))
            continue
        found += _cast_finding(path, field.dtype, model.dtype, "inputs")
        found += _shape_rule(path, field, model, "inputs")
        found += _value_rules(
            path, field, model, "inputs", severity="warning", labels=("contract", "model")
        )
    for model_input in signature.inputs:
        if contract.input(model_input.name) is None and not is_optional(model_input):
            problem = "the model needs it; the contract does not provide it"
            found.append(Incompatibility(f"inputs.{model_input.name}", problem, "inputs"))
    return found


def _output_shape_rule(path: str, model: FieldSpec, field: FieldSpec) -> list[Incompatibility]:
    if _shape_within(model.shape, field.shape):
        return []
    problem = f"shape {list(model.shape)} does not fit in {list(field.shape)}"
    dims = zip(model.shape, field.shape, strict=False)
    if len(model.shape) != len(field.shape) or any(m != c and -1 not in (m, c) for m, c in dims):
        return [Incompatibility(f"{path}.shape", problem, "outputs")]
    # Only variable model dims where the contract fixes them: checked on every answer.
    return [Incompatibility(f"{path}.shape", problem, "outputs", "warning")]


def _signature_outputs(signature: Signature, contract: Contract) -> list[Incompatibility]:
    found: list[Incompatibility] = []
    for field in contract.outputs:
        path = f"outputs.{field.name}"
        model = signature.output(field.name)
        if model is None:
            if field.required:
                problem = "the model does not produce it"
                found.append(Incompatibility(path, problem, "outputs"))
            continue
        found += _cast_finding(path, model.dtype, field.dtype, "outputs")
        found += _output_shape_rule(path, model, field)
        found += _value_rules(
            path, model, field, "outputs", severity="warning", labels=("model", "contract")
        )
    return found


def check_signature(signature: Signature, contract: Contract) -> list[Incompatibility]:
    """Every reason a model with ``signature`` cannot serve an endpoint with ``contract``.

    Inputs flow contract -> model, outputs model -> contract; fields match by name.

    Dtype casts: ``lossless`` is compatible, ``unsafe`` (truncation, wrap-around, a change
    of kind) is breaking, and ``rounding`` (``float64 -> float32``, ``int64 -> float64``)
    is only a **warning**: ONNX and most exported models take float32 tensors, while
    contracts and JSON callers speak float64, and refusing them would refuse most models
    for a loss below float32 precision that their training data already had.

    Shapes must fit exactly (same rank, fixed dims equal), because a tensor of another
    shape cannot be fed at all; an output whose model dim is variable where the contract
    fixes one is a warning, checked per request. Nulls, enums and ranges a model signature
    declares narrower than the contract are warnings: signatures inferred from a sample
    rarely state them, and the gateway enforces the contract's own.

    Tabular models (one ``[-1, n]`` tensor fed from ``n`` scalar contract columns) are not
    mapped here: column order would be implicit, so such a contract reports each column as
    "the model does not take it" until the mapping is declared explicitly.
    """
    return [*_signature_inputs(signature, contract), *_signature_outputs(signature, contract)]


def ensure_compatible(
    findings: Iterable[Incompatibility], *, subject: str = "contract"
) -> list[Incompatibility]:
    """Raise :class:`~modelplane.errors.Incompatible` naming every breaking finding.

    Returns the warnings, so callers can show or audit them, when nothing breaks.
    """
    findings = list(findings)
    breaking = [f for f in findings if f.breaking]
    if breaking:
        raise Incompatible(
            f"{subject} is incompatible: {len(breaking)} breaking change(s)",
            details=[f.to_detail() for f in breaking],
        )
    return [f for f in findings if not f.breaking]
