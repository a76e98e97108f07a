"""The policy: the declared rules of sharing, applied with ``modelplane apply -f policy.yaml``.

Vocabulary follows Kueue where it has a word: a team's quota per resource has a *nominal*
amount, a *borrowing limit* (how much more it may take from its *cohort*) and a *lending
limit* (how much of its nominal it lets the cohort use). Resources are named ``cpu``
(millicores), ``memory`` (MiB), ``gpu`` (milli-GPU, any model) and ``gpu/<MODEL>``
(milli-GPU of one model, e.g. ``gpu/A10``).
"""

from __future__ import annotations

import base64
import binascii
import re
from enum import StrEnum
from functools import cached_property
from typing import Annotated, Literal

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, model_validator
from pydantic_core import PydanticCustomError

from modelplane.spec.names import Name
from modelplane.types import Tier

__all__ = [
    "DEFAULT_TIERS",
    "AutoscalingDefaults",
    "DegradationPolicy",
    "DegradationStep",
    "Floor",
    "PlacementPolicy",
    "PlacementStrategy",
    "Policy",
    "PreemptionPolicy",
    "Quota",
    "ResourceName",
    "Team",
    "TierRule",
    "TrustedKey",
    "TrustedFor",
    "check_public_key",
    "check_resource_name",
]

_RESOURCE = re.compile(r"^(cpu|memory|gpu|gpu/[A-Za-z0-9][A-Za-z0-9._-]{0,62})$")


def check_resource_name(value: str) -> str:
    if not _RESOURCE.fullmatch(value):
        raise PydanticCustomError(
            "resource",
            "'{value}' is not a resource (cpu, memory, gpu or gpu/<MODEL>)",
            {"value": value},
        )
    return value


ResourceName = Annotated[str, AfterValidator(check_resource_name)]
"""``cpu`` (millicores), ``memory`` (MiB), ``gpu`` or ``gpu/<MODEL>`` (milli-GPU)."""


class TierRule(BaseModel):
    """What a tier may suffer. Higher ``priority`` wins admission and preemption."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    name: Name
    priority: int = Field(ge=0, le=1_000_000)
    preemptible: bool = True
    scale_to_zero: bool = True
    min_warm_replicas: int = Field(default=0, ge=0)
    degradation_rank: int = Field(
        default=0, ge=0, description="tiers with a lower rank degrade first"
    )
    require_signature: bool = False
    """Every model version served in this tier needs a signature by a key trusted for
    ``release``."""

    @model_validator(mode="after")
    def _consistent(self) -> TierRule:
        if self.scale_to_zero and self.min_warm_replicas > 0:
            raise PydanticCustomError(
                "tier", "a tier that keeps warm replicas cannot scale to zero", {}
            )
        return self


DEFAULT_TIERS: tuple[TierRule, ...] = (
    TierRule(
        name=Tier.CRITICAL,
        priority=1000,
        preemptible=False,
        scale_to_zero=False,
        min_warm_replicas=1,
        degradation_rank=2,
    ),
    TierRule(name=Tier.STANDARD, priority=500, preemptible=True, degradation_rank=1),
    TierRule(name=Tier.BATCH, priority=100, preemptible=True, degradation_rank=0),
)


class TrustedFor(StrEnum):
    """What a signature by a trusted key vouches for."""

    CODE = "code"
    """Packages that run code when loaded (pickle, joblib, the python runtime) may run."""
    RELEASE = "release"
    """The version may serve in tiers that ``require_signature``."""


def check_public_key(value: str) -> str:
    """``ed25519:`` followed by the 32-byte public key in base64."""
    prefix, _, encoded = value.partition(":")
    try:
        raw = base64.b64decode(encoded, validate=True)
    except (binascii.Error, ValueError):
        raw = b""
    if prefix != "ed25519" or len(raw) != 32:
        raise PydanticCustomError(
            "public_key",
            "'{value}' is not an ed25519 public key (ed25519:BASE64)",
            {"value": value},
        )
    return value


class TrustedKey(BaseModel):
    """A signing key the policy trusts, and for what."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    name: Name
    """Who holds the key, as people call it (``release-bot``)."""
    public_key: Annotated[str, AfterValidator(check_public_key)]
    """``ed25519:BASE64``, as ``modelplane keys create`` prints it."""
    trusted_for: tuple[TrustedFor, ...] = Field(min_length=1)
    """``code``, ``release`` or both."""


class Quota(BaseModel):
    """One resource of a team's quota; ``None`` limits mean "no limit"."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    nominal: int = Field(ge=0)
    borrowing_limit: int | None = Field(default=None, ge=0)
    lending_limit: int | None = Field(default=None, ge=0)

    @model_validator(mode="after")
    def _lend_within_nominal(self) -> Quota:
        if self.lending_limit is not None and self.lending_limit > self.nominal:
            raise PydanticCustomError(
                "quota",
                "lending_limit cannot exceed nominal ({nominal})",
                {"nominal": self.nominal},
            )
        return self


class Team(BaseModel):
    """A tenant: its quotas and the cohort it borrows from and lends to."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    name: Name
    cohort: Name | None = None
    quotas: dict[ResourceName, Quota] = Field(default_factory=dict)


class Floor(BaseModel):
    """Capacity that preemption never takes below, for a tier, a team, or both."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    tier: Name | None = None
    team: Name | None = None
    resource: ResourceName = "gpu"
    amount: int = Field(ge=0)

    @model_validator(mode="after")
    def _scoped(self) -> Floor:
        if self.tier is None and self.team is None:
            raise PydanticCustomError("floor", "a floor needs a tier, a team or both", {})
        return self


_UNKNOWN_TIER = TierRule(name="unknown", priority=0)


class PlacementStrategy(StrEnum):
    """How a node (and a GPU on it) is chosen among those that fit."""

    LEAST_ALLOCATED = "least-allocated"
    """Spread: the node with the most free capacity (Kubernetes' default)."""
    MOST_ALLOCATED = "most-allocated"
    """Pack (best-fit): the node with the least capacity left after placing."""
    RANDOM = "random"
    """Any node that fits, chosen by a seeded generator."""
    DRF = "drf"
    """Order teams by dominant resource share, then spread."""
    FGD = "fgd"
    """Fragmentation gradient descent (Weng et al., ATC '23)."""
    BEST_FIT = "best-fit"
    """The ATC '23 artifact's BestFit: least free CPU and GPU left, against the largest node."""
    PACKING = "packing"
    """The artifact's GPU packing: shared GPUs first, then used nodes, then empty ones."""
    CLUSTERING = "clustering"
    """The artifact's GPU clustering: nodes already running the same kind of GPU request."""
    DOT_PRODUCT = "dot-product"
    """The artifact's DotProd (Tetris): least dot product of free resources and request."""


class PlacementPolicy(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    strategy: PlacementStrategy = PlacementStrategy.MOST_ALLOCATED
    seed: int = 0


class PreemptionPolicy(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    enabled: bool = True
    reclaim_borrowed: bool = True
    max_victims: int = Field(default=16, ge=1)
    max_candidate_nodes: int = Field(
        default=100, ge=1, description="feasible nodes dry-run per preemption, as in Kubernetes"
    )


class DegradationStep(StrEnum):
    """Things to give up under overload, in the order a policy declares."""

    PAUSE_BATCH_ADMISSION = "pause-batch-admission"
    """Admit no new batch work."""
    PREEMPT_BORROWED_BATCH = "preempt-borrowed-batch"
    """Evict batch work running on borrowed quota."""
    FREEZE_CANARIES = "freeze-canaries"
    """Hold every rollout where it is."""
    FALLBACKS_FOR_STANDARD = "fallbacks-for-standard"
    """Answer ``standard`` endpoints from their contract's fallback."""
    SHED_BATCH = "shed-batch"
    """Refuse ``batch`` traffic with HTTP 429."""


class DegradationPolicy(BaseModel):
    """Steps taken one at a time as overload rises and undone, in reverse, as it falls."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    steps: tuple[DegradationStep, ...] = tuple(DegradationStep)
    enter_overload: float = Field(default=1.0, gt=0.0)
    exit_overload: float = Field(default=0.8, gt=0.0)
    min_hold_s: float = Field(default=30.0, ge=0.0)

    @model_validator(mode="after")
    def _hysteresis(self) -> DegradationPolicy:
        if len(set(self.steps)) != len(self.steps):
            raise PydanticCustomError("degradation", "a step is listed twice", {})
        if self.exit_overload >= self.enter_overload:
            raise PydanticCustomError(
                "degradation", "exit_overload must be below enter_overload (hysteresis)", {}
            )
        return self


class AutoscalingDefaults(BaseModel):
    """Knative KPA's knobs; endpoints may override them."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    target_concurrency: float = Field(default=10.0, gt=0.0)
    stable_window_s: float = Field(default=60.0, gt=0.0)
    panic_window_s: float = Field(default=6.0, gt=0.0)
    panic_threshold: float = Field(default=2.0, gt=1.0)
    max_scale_up_rate: float = Field(default=1000.0, gt=1.0)
    max_scale_down_rate: float = Field(default=2.0, gt=1.0)
    scale_to_zero_grace_s: float = Field(default=30.0, ge=0.0)


class Policy(BaseModel):
    """Tiers, teams and quotas, floors, placement, preemption, autoscaling and degradation."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    api_version: Literal["modelplane/v1"] = "modelplane/v1"
    kind: Literal["Policy"] = "Policy"
    name: Name = "default"
    tiers: tuple[TierRule, ...] = DEFAULT_TIERS
    teams: tuple[Team, ...] = ()
    admit_unknown_teams: bool = True
    floors: tuple[Floor, ...] = ()
    placement: PlacementPolicy = PlacementPolicy()
    preemption: PreemptionPolicy = PreemptionPolicy()
    autoscaling: AutoscalingDefaults = AutoscalingDefaults()
    degradation: DegradationPolicy = DegradationPolicy()
    trusted_keys: tuple[TrustedKey, ...] = ()
    """Signing keys whose signatures count; packages that run code on load need one
    trusted for ``code``."""

    @model_validator(mode="after")
    def _references(self) -> Policy:
        tiers = _unique("tier", [t.name for t in self.tiers])
        teams = _unique("team", [t.name for t in self.teams])
        _unique("trusted key", [k.name for k in self.trusted_keys])
        for floor in self.floors:
            if floor.tier is not None and floor.tier not in tiers:
                raise PydanticCustomError("floor", "unknown tier '{t}'", {"t": floor.tier})
            if floor.team is not None and floor.team not in teams:
                raise PydanticCustomError("floor", "unknown team '{t}'", {"t": floor.team})
        return self

    @cached_property
    def _tier_index(self) -> dict[str, TierRule]:
        # Schedulers ask for tiers in their hottest loops; a frozen model may memoise.
        return {t.name: t for t in self.tiers}

    def tier(self, name: str) -> TierRule:
        """The rule for ``name``; unknown tiers get the lowest priority and are preemptible."""
        return self._tier_index.get(name, _UNKNOWN_TIER)

    def team(self, name: str) -> Team | None:
        return next((t for t in self.teams if t.name == name), None)


def _unique(what: str, names: list[str]) -> set[str]:
    seen: set[str] = set()
    for name in names:
        if name in seen:
            raise PydanticCustomError(
                "duplicate",
                "{what} '{name}' is declared twice",
                {
                    "what": what,
                    "name": name,
                },
            )
        seen.add(name)
    return seen
