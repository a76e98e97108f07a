"""Contracts: what callers of an endpoint may rely on, versioned."""

from __future__ import annotations

from enum import StrEnum
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator
from pydantic_core import PydanticCustomError

from modelplane.spec.fields import FieldSpec
from modelplane.spec.names import Name

__all__ = ["DEFAULT_MAX_ROWS", "SLO", "Contract", "Fallback", "FallbackKind"]

DEFAULT_MAX_ROWS = 10_000
"""Rows per request when a contract sets no ``max_rows``. At the widths of tabular models
(4-50 features) that is 0.2-3 MB of JSON, decoded in well under the default 100 ms latency
objective, and one worker round trip; more rows is batch work, for a ``batch-score`` job."""


class FallbackKind(StrEnum):
    """What to answer when the model cannot."""

    NONE = "none"
    """Fail the request with the typed error."""
    STATIC = "static"
    """Answer a declared value."""
    ENDPOINT = "endpoint"
    """Ask another endpoint."""


class Fallback(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    kind: FallbackKind = FallbackKind.NONE
    value: Any = None
    endpoint: str | None = None

    @model_validator(mode="after")
    def _complete(self) -> Fallback:
        if self.kind is FallbackKind.STATIC and self.value is None:
            raise PydanticCustomError("fallback", "a static fallback needs a value", {})
        if self.kind is FallbackKind.ENDPOINT and not self.endpoint:
            raise PydanticCustomError("fallback", "an endpoint fallback needs an endpoint", {})
        return self


class SLO(BaseModel):
    """Service level objectives; ``1 - availability`` is the error budget."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    availability: float = Field(default=0.999, gt=0.0, lt=1.0)
    latency_ms: float = Field(default=100.0, gt=0.0)
    latency_quantile: float = Field(default=0.99, gt=0.0, lt=1.0)
    window_days: int = Field(default=28, ge=1, le=366)


class Contract(BaseModel):
    """Input and output schemas, timeout, fallback and SLO of an endpoint."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    api_version: Literal["modelplane/v1"] = "modelplane/v1"
    kind: Literal["Contract"] = "Contract"
    name: Name
    version: int = Field(default=1, ge=1)
    inputs: tuple[FieldSpec, ...] = Field(min_length=1)
    outputs: tuple[FieldSpec, ...] = ()
    timeout_ms: int = Field(default=1000, ge=1, le=3_600_000)
    max_rows: int | None = Field(default=None, ge=1)
    """Rows one request may carry; more are answered 413 before any model sees them.
    Unset: the gateway's default (10,000 rows unless its edge config says otherwise)."""
    fallback: Fallback = Fallback()
    slo: SLO = SLO()
    description: str = ""

    @model_validator(mode="after")
    def _unique_names(self) -> Contract:
        for side in ("inputs", "outputs"):
            names = [field.name for field in getattr(self, side)]
            duplicates = sorted({n for n in names if names.count(n) > 1})
            if duplicates:
                raise PydanticCustomError(
                    "duplicate",
                    "{side} name '{name}' appears twice",
                    {"side": side, "name": duplicates[0]},
                )
        return self

    def input(self, name: str) -> FieldSpec | None:
        return next((f for f in self.inputs if f.name == name), None)

    def output(self, name: str) -> FieldSpec | None:
        return next((f for f in self.outputs if f.name == name), None)
