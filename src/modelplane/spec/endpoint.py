"""Endpoints: the stable name callers use, its contract, routes, batching and bounds."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator
from pydantic_core import PydanticCustomError

from modelplane.spec.contract import Contract, Fallback
from modelplane.spec.names import Name, check_name

__all__ = ["Batching", "Endpoint", "FeatureBinding", "Route", "Shadow", "check_model_ref"]


def check_model_ref(value: str) -> str:
    """``name:version`` (version a positive integer) or ``name@alias``."""
    name, sep, rest = value.partition(":") if ":" in value else value.partition("@")
    if not sep or not rest:
        raise PydanticCustomError(
            "model_ref", "'{value}' is not 'name:version' or 'name@alias'", {"value": value}
        )
    check_name(name)
    if sep == ":" and not (rest.isdigit() and int(rest) >= 1):
        raise PydanticCustomError(
            "model_ref", "version '{rest}' is not a positive integer", {"rest": rest}
        )
    if sep == "@":
        check_name(rest)
    return value


class Route(BaseModel):
    """Send ``weight`` parts of the traffic to one model version (or alias)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    model: str
    weight: float = Field(default=100.0, ge=0.0)

    @field_validator("model")
    @classmethod
    def _ref(cls, value: str) -> str:
        return check_model_ref(value)


class Shadow(BaseModel):
    """Copy ``percent`` of the traffic to a model version whose answers are discarded."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    model: str
    percent: float = Field(default=100.0, gt=0.0, le=100.0)

    @field_validator("model")
    @classmethod
    def _ref(cls, value: str) -> str:
        return check_model_ref(value)


class Batching(BaseModel):
    """Adaptive batching of one model version behind the endpoint."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    max_batch_size: int = Field(default=64, ge=1, le=65_536)
    max_delay_ms: float = Field(default=2.0, ge=0.0, le=10_000.0)


class FeatureBinding(BaseModel):
    """Join features of one feature set version into every request, looked up by a key.

    ``features`` empty means every feature of the set that the contract has an input for.
    ``policy`` says what a stale or missing value becomes: ``fail`` (422), ``default``
    (the declared default) or ``fallback`` (the endpoint's fallback answers).
    ``compatible_versions`` lists other versions of the set that models trained on them
    may be served with (lineage is checked at apply).
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    feature_set: str
    entity_key: str = Field(min_length=1, max_length=200)
    """The request field holding the entity key."""
    features: tuple[str, ...] = ()
    policy: Literal["fail", "default", "fallback"] = "fail"
    compatible_versions: tuple[int, ...] = ()

    @field_validator("feature_set")
    @classmethod
    def _ref(cls, value: str) -> str:
        name, _, version = value.partition(":")
        check_name(name)
        if not (version.isdigit() and int(version) >= 1):
            raise PydanticCustomError(
                "feature_set", "'{value}' is not 'name:version'", {"value": value}
            )
        return value

    @property
    def set_name(self) -> str:
        return self.feature_set.partition(":")[0]

    @property
    def version(self) -> int:
        return int(self.feature_set.partition(":")[2])


class Endpoint(BaseModel):
    """What callers reach by name: a contract, routes to model versions, and bounds."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    api_version: Literal["modelplane/v1"] = "modelplane/v1"
    kind: Literal["Endpoint"] = "Endpoint"
    name: Name
    team: Name
    tier: str = Field(default="standard", min_length=1, max_length=63)
    contract: Contract
    routes: tuple[Route, ...] = Field(min_length=1)
    shadows: tuple[Shadow, ...] = ()
    replicas: int = Field(default=1, ge=1, le=1024)
    batching: Batching = Batching()
    max_queue_rows: int = Field(default=4096, ge=1)
    timeout_ms: int | None = Field(default=None, ge=1, le=3_600_000)
    """Overrides the contract's timeout when set."""
    fallback: Fallback | None = None
    """Overrides the contract's fallback when set."""
    labels: dict[str, str] = {}
    features: tuple[FeatureBinding, ...] = ()
    """Feature sets joined into requests before the contract is checked."""
    sticky_key: str | None = Field(default=None, min_length=1, max_length=200)
    """A request field (a contract input or a bound feature set's entity key) whose value
    picks the route by its hash, so one caller stays on one version while weights hold."""
    pins: dict[str, str] = {}
    """Written by ``apply``, not by hand: each route's or shadow's model ref (an alias such
    as ``fraud@champion``) → the version it resolved to then (``fraud:3``). Serving follows
    the pin, so moving an alias changes no endpoint until it is applied again."""

    @model_validator(mode="after")
    def _coherent(self) -> Endpoint:
        models = [route.model for route in self.routes]
        duplicates = sorted({m for m in models if models.count(m) > 1})
        if duplicates:
            raise PydanticCustomError(
                "duplicate", "route '{model}' appears twice", {"model": duplicates[0]}
            )
        if sum(route.weight for route in self.routes) <= 0:
            raise PydanticCustomError("weights", "at least one route needs a positive weight", {})
        fallback = self.effective_fallback
        if fallback.endpoint is not None and fallback.endpoint == self.name:
            raise PydanticCustomError("fallback", "an endpoint cannot fall back to itself", {})
        self._check_features()
        self._check_sticky_key()
        return self

    def _check_sticky_key(self) -> None:
        if self.sticky_key is None:
            return
        known = {field.name for field in self.contract.inputs}
        known |= {binding.entity_key for binding in self.features}
        if self.sticky_key not in known:
            raise PydanticCustomError(
                "sticky_key",
                "sticky_key '{key}' is not an input of the contract or an entity key",
                {"key": self.sticky_key},
            )

    def _check_features(self) -> None:
        sets = [binding.set_name for binding in self.features]
        twice = sorted({name for name in sets if sets.count(name) > 1})
        if twice:
            raise PydanticCustomError(
                "duplicate", "feature set '{name}' is bound twice", {"name": twice[0]}
            )
        inputs = {field.name for field in self.contract.inputs}
        for binding in self.features:
            unknown = [name for name in binding.features if name not in inputs]
            if unknown:
                raise PydanticCustomError(
                    "features",
                    "feature '{name}' of {ref} is not an input of the contract",
                    {"name": unknown[0], "ref": binding.feature_set},
                )

    def pinned(self, ref: str) -> str:
        """The version ``ref`` was pinned to at apply, else ``ref`` itself."""
        return self.pins.get(ref, ref)

    @property
    def effective_timeout_ms(self) -> int:
        return self.timeout_ms if self.timeout_ms is not None else self.contract.timeout_ms

    @property
    def effective_fallback(self) -> Fallback:
        return self.fallback if self.fallback is not None else self.contract.fallback
