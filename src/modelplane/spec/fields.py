"""Typed fields: the unit of signatures (what a model takes and gives) and contracts."""

from __future__ import annotations

from typing import Annotated, Any

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, model_validator
from pydantic_core import PydanticCustomError

from modelplane.spec.dtypes import DType

__all__ = ["FieldSpec", "Range", "Signature"]


def _parse_dtype(value: Any) -> Any:
    if isinstance(value, DType):
        return value
    if isinstance(value, str):
        lowered = value.strip().lower()
        if lowered in DType._value2member_map_:
            return DType(lowered)
        try:
            return DType.from_v2(value.strip().upper())
        except ValueError:
            pass
    raise PydanticCustomError("dtype", "'{value}' is not a dtype", {"value": value})


DTypeField = Annotated[DType, BeforeValidator(_parse_dtype)]


class Range(BaseModel):
    """Inclusive bounds on a numeric field; either side may be open."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    min: float | None = None
    max: float | None = None

    @model_validator(mode="after")
    def _ordered(self) -> Range:
        if self.min is not None and self.max is not None and self.min > self.max:
            raise PydanticCustomError(
                "range", "min {min} is greater than max {max}", {"min": self.min, "max": self.max}
            )
        return self

    def contains(self, other: Range) -> bool:
        """True when every value allowed by ``other`` is allowed here."""
        low_ok = self.min is None or (other.min is not None and other.min >= self.min)
        high_ok = self.max is None or (other.max is not None and other.max <= self.max)
        return low_ok and high_ok


class FieldSpec(BaseModel):
    """A named, typed field or tensor.

    ``shape`` excludes nothing: a tabular column is ``[-1]`` (one value per row), a
    feature matrix ``[-1, 16]``. ``-1`` marks a variable dimension.
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    name: str = Field(min_length=1, max_length=200)
    dtype: DTypeField
    shape: tuple[int, ...] = (-1,)
    nullable: bool = False
    required: bool = True
    enum: tuple[str | int | float | bool, ...] | None = None
    range: Range | None = None
    default: Any = None
    description: str = ""

    @model_validator(mode="after")
    def _coherent(self) -> FieldSpec:
        for dim in self.shape:
            if dim < -1 or dim == 0:
                raise PydanticCustomError(
                    "shape", "dimension {dim} must be -1 (variable) or positive", {"dim": dim}
                )
        if self.range is not None and not self.dtype.is_numeric:
            raise PydanticCustomError(
                "range", "a range needs a numeric dtype, not {dtype}", {"dtype": self.dtype.value}
            )
        if self.enum is not None and len(self.enum) == 0:
            raise PydanticCustomError("enum", "enum must list at least one value", {})
        return self


class Signature(BaseModel):
    """What a model takes and gives: typed inputs and outputs."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    inputs: tuple[FieldSpec, ...] = Field(min_length=1)
    outputs: tuple[FieldSpec, ...] = ()

    @model_validator(mode="after")
    def _unique_names(self) -> Signature:
        for side in ("inputs", "outputs"):
            seen: set[str] = set()
            for field in getattr(self, side):
                if field.name in seen:
                    raise PydanticCustomError(
                        "duplicate",
                        "{side} name '{name}' appears twice",
                        {"side": side, "name": field.name},
                    )
                seen.add(field.name)
        return self

    def input(self, name: str) -> FieldSpec | None:
        return next((f for f in self.inputs if f.name == name), None)

    def output(self, name: str) -> FieldSpec | None:
        return next((f for f in self.outputs if f.name == name), None)
