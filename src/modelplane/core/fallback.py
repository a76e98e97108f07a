"""Static fallbacks: a contract's declared value, turned into output arrays of any row count.

The value is checked against the contract's outputs when the endpoint is applied (and by
``modelplane contract check``), and read once when the gateway builds the endpoint, so a
fallback that could not be served is an error at apply, never at 3 a.m.

How a value maps to outputs: a mapping keyed by output names gives each output's value per
row; any other value is the per-row value of the contract's only output (or of an output
named ``prediction`` when the contract declares none).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import numpy.typing as npt

from modelplane.core.validate import CompiledContract
from modelplane.errors import InvalidSpec
from modelplane.spec.contract import Fallback, FallbackKind
from modelplane.spec.fields import FieldSpec

__all__ = ["StaticFallback", "check_fallback"]

Array = npt.NDArray[Any]


def check_fallback(fallback: Fallback, outputs: Sequence[FieldSpec], *, field: str) -> None:
    """Raise :class:`InvalidSpec` naming ``field`` (``contract.fallback``, ``fallback``) when
    a static fallback's value cannot be served under ``outputs``."""
    if fallback.kind is not FallbackKind.STATIC:
        return
    try:
        StaticFallback(fallback.value, outputs)
    except InvalidSpec as exc:
        details = [
            {**d, "field": str(d.get("field", "")).replace("fallback", field, 1)}
            for d in exc.details
        ]
        problems = "; ".join(f"{d['field']}: {d.get('problem')}" for d in details)
        raise InvalidSpec(f"{field}: {exc.message}: {problems}", details=details) from None


class StaticFallback:
    """Arrays of the declared value, ``rows`` long, in the contract's output dtypes."""

    __slots__ = ("_templates",)

    def __init__(self, value: Any, outputs: Sequence[FieldSpec]) -> None:
        by_name = _per_output(value, outputs)
        specs = {spec.name: spec for spec in outputs}
        self._templates: dict[str, Array] = {}
        problems: list[dict[str, str]] = []
        for name, item in by_name.items():
            spec = specs.get(name)
            try:
                dtype = np.dtype(spec.dtype.numpy) if spec is not None else None
                self._templates[name] = np.asarray(item, dtype=dtype)
            except (TypeError, ValueError) as exc:
                problems.append({"field": f"fallback.value.{name}", "problem": str(exc)})
        if not problems and outputs:
            violations = CompiledContract((), outputs).validate_outputs(
                self.outputs(1), batch_size=1
            )
            problems = [
                {"field": f"fallback.value.{v.field}", "problem": v.problem} for v in violations
            ]
        if problems:
            raise InvalidSpec("the static fallback does not fit the contract", details=problems)

    def outputs(self, rows: int) -> dict[str, Array]:
        return {
            name: np.repeat(template[np.newaxis], rows, axis=0)
            for name, template in self._templates.items()
        }


def _per_output(value: Any, outputs: Sequence[FieldSpec]) -> Mapping[str, Any]:
    names = [spec.name for spec in outputs]
    if isinstance(value, Mapping) and value and all(key in names for key in value):
        return value
    if isinstance(value, Mapping) and not names:
        return value
    if not names:
        return {"prediction": value}
    if len(names) == 1:
        return {names[0]: value}
    raise InvalidSpec(
        "a static fallback for several outputs must map output names to values",
        details=[{"field": "fallback.value", "problem": f"expected keys among {names}"}],
    )
