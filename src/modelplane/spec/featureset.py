"""Feature sets: versioned, typed features keyed by an entity, with a freshness SLA.

A feature set is what an online store holds values for and what an endpoint binds. Its
version is part of every stored key, so a breaking change (a removed feature, a narrowed
dtype) ships as a new version beside the old one, and readers of the old keep working.

:func:`check_value` is the one rule for "is this a value of that dtype", shared by the
spec (defaults) and ingestion (pushed rows), so both refuse the same values.
"""

from __future__ import annotations

import math
import re
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator
from pydantic_core import PydanticCustomError

from modelplane.spec.dtypes import DType
from modelplane.spec.fields import DTypeField
from modelplane.spec.names import Name

__all__ = [
    "ENTITY_DTYPES",
    "Entity",
    "Feature",
    "FeatureSet",
    "Freshness",
    "check_value",
]

ENTITY_DTYPES = frozenset(
    {DType.STRING, DType.INT8, DType.INT16, DType.INT32, DType.INT64}
    | {DType.UINT8, DType.UINT16, DType.UINT32, DType.UINT64}
)
"""Key types an entity may have: floats and bools make poor identities."""

# Feature names become Redis hash fields and JSON keys; names starting with "__" are ours
# (``__ts`` holds the event time), so they are refused here.
_FEATURE_NAME = re.compile(r"^[A-Za-z][A-Za-z0-9_]{0,127}$")
_FLOAT_MAX: dict[DType, float] = {
    DType.FLOAT16: 65504.0,
    DType.FLOAT32: 3.4028234663852886e38,
    DType.FLOAT64: math.inf,
}


def _int_bounds(dtype: DType) -> tuple[int, int]:
    bits = dtype.bits
    if dtype.value.startswith("uint"):
        return 0, 2**bits - 1
    return -(2 ** (bits - 1)), 2 ** (bits - 1) - 1


def check_value(dtype: DType, value: Any) -> Any:
    """``value`` as a plain Python value of ``dtype``, or :class:`ValueError` saying why.

    Ints are accepted for floats (and become floats); bools are never numbers; floats must
    be finite, because stores keep JSON, which has no NaN.
    """
    if dtype is DType.STRING:
        if isinstance(value, str):
            return value
        raise ValueError(f"expected a string, got {type(value).__name__}")
    if dtype is DType.BOOL:
        if isinstance(value, bool):
            return value
        raise ValueError(f"expected a bool, got {type(value).__name__}")
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ValueError(f"expected a number ({dtype}), got {type(value).__name__}")
    if dtype.is_integer:
        if isinstance(value, float):
            raise ValueError(f"expected an integer ({dtype}), got float {value!r}")
        low, high = _int_bounds(dtype)
        if not low <= value <= high:
            raise ValueError(f"{value} is out of range for {dtype} [{low}, {high}]")
        return value
    number = float(value)
    if not math.isfinite(number):
        raise ValueError(f"{number} is not a finite number")
    if abs(number) > _FLOAT_MAX[dtype]:
        raise ValueError(f"{number} is out of range for {dtype}")
    return number


class Entity(BaseModel):
    """What the features describe and are looked up by: ``customer_id`` of type ``int64``."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    name: str = Field(pattern=_FEATURE_NAME.pattern)
    dtype: DTypeField = DType.STRING

    @model_validator(mode="after")
    def _key_type(self) -> Entity:
        if self.dtype not in ENTITY_DTYPES:
            raise PydanticCustomError(
                "entity_dtype",
                "an entity key must be a string or an integer, not {dtype}",
                {"dtype": self.dtype.value},
            )
        return self


class Feature(BaseModel):
    """One typed feature; ``max_age_s`` overrides the set's freshness SLA for it."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    name: str = Field(pattern=_FEATURE_NAME.pattern)
    dtype: DTypeField
    default: Any = None
    max_age_s: float | None = Field(default=None, gt=0.0)
    description: str = ""

    @model_validator(mode="after")
    def _default_fits(self) -> Feature:
        if self.default is None:
            return self
        try:
            check_value(self.dtype, self.default)
        except ValueError as exc:
            raise PydanticCustomError(
                "default",
                "default {default!r} is not a {dtype}: {why}",
                {"default": self.default, "dtype": self.dtype.value, "why": str(exc)},
            ) from None
        return self


class Freshness(BaseModel):
    """How old a value may be when served."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    max_age_s: float = Field(gt=0.0)


class FeatureSet(BaseModel):
    """Versioned definitions of features keyed by an entity."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    api_version: Literal["modelplane/v1"] = "modelplane/v1"
    kind: Literal["FeatureSet"] = "FeatureSet"
    name: Name
    version: int = Field(ge=1)
    team: Name
    entity: Entity
    features: tuple[Feature, ...] = Field(min_length=1)
    freshness: Freshness
    source: str = ""
    """Where the values come from, for people: a table, a stream, a job."""
    description: str = ""

    @model_validator(mode="after")
    def _unique_names(self) -> FeatureSet:
        seen: set[str] = set()
        for feature in self.features:
            if feature.name in seen or feature.name == self.entity.name:
                what = "the entity key" if feature.name == self.entity.name else "twice"
                raise PydanticCustomError(
                    "duplicate",
                    "feature name '{name}' is used {what}",
                    {"name": feature.name, "what": what},
                )
            seen.add(feature.name)
        return self

    @property
    def ref(self) -> str:
        """``name:version``, as lineage and logs spell it."""
        return f"{self.name}:{self.version}"

    @property
    def feature_names(self) -> tuple[str, ...]:
        return tuple(f.name for f in self.features)

    def feature(self, name: str) -> Feature | None:
        return next((f for f in self.features if f.name == name), None)

    def max_age_s(self, name: str) -> float:
        """The freshness SLA of one feature: its override, else the set's."""
        feature = self.feature(name)
        if feature is not None and feature.max_age_s is not None:
            return feature.max_age_s
        return self.freshness.max_age_s
