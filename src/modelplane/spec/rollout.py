"""Rollouts: how an endpoint's traffic moves from its stable version to a new one.

A rollout is a list of steps (an optional shadow phase, then canary weights), each held
for a window and judged by gates. ``RolloutSpec(endpoint="fraud-score", to="fraud:8")``
is a complete spec: steps and gates default by strategy, so the CLI needs no file.
"""

from __future__ import annotations

import re
from enum import StrEnum
from typing import Annotated, Any, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationInfo,
    field_validator,
    model_validator,
)
from pydantic_core import PydanticCustomError

from modelplane.spec.endpoint import check_model_ref
from modelplane.spec.names import Name

__all__ = [
    "CanaryStep",
    "CustomGate",
    "DEFAULT_HOLD_S",
    "DriftGate",
    "ErrorBudgetBurnGate",
    "ErrorRateGate",
    "GateSpec",
    "LatencyGate",
    "MinSamplesGate",
    "OnFail",
    "OutcomeGate",
    "RolloutSpec",
    "RolloutStep",
    "ShadowDisagreementGate",
    "ShadowStep",
    "Strategy",
    "default_gates",
    "default_steps",
]

DEFAULT_HOLD_S = 300.0
"""Five minutes per step: long enough for a p99 at modest traffic, short enough to wait."""

_CALLABLE = re.compile(r"^[A-Za-z_][\w.]*:[A-Za-z_]\w*$")


class Strategy(StrEnum):
    """How traffic moves to the new version."""

    CANARY = "canary"
    """Live weight in growing steps: 5, 25, 50, 100 %."""
    SHADOW_THEN_CANARY = "shadow-then-canary"
    """A shadow copy of traffic first (answers discarded, compared), then canary steps."""
    BLUE_GREEN = "blue-green"
    """The new version brought up whole, then all traffic switched in one step."""


class OnFail(StrEnum):
    """What a failed gate does."""

    ROLLBACK = "rollback"
    """All traffic back to stable, by itself."""
    PAUSE = "pause"
    """Hold the current weights and wait for a person."""


class _Frozen(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class ShadowStep(_Frozen):
    """Copy ``percent`` of traffic to the new version for ``hold_s`` seconds."""

    kind: Literal["shadow"] = "shadow"
    percent: float = Field(default=100.0, gt=0.0, le=100.0)
    hold_s: float = Field(default=DEFAULT_HOLD_S, gt=0.0)


class CanaryStep(_Frozen):
    """Send ``weight`` percent of live traffic to the new version for ``hold_s`` seconds."""

    kind: Literal["canary"] = "canary"
    weight: float = Field(gt=0.0, le=100.0)
    hold_s: float = Field(default=DEFAULT_HOLD_S, gt=0.0)


RolloutStep = Annotated[ShadowStep | CanaryStep, Field(discriminator="kind")]


class _Gate(_Frozen):
    name: str = Field(default="", max_length=63)
    """Shown in readings and the audit log; defaults to the gate's type."""

    @property
    def label(self) -> str:
        return self.name or str(getattr(self, "type", "gate"))


class ErrorRateGate(_Gate):
    """Canary error rate: at most ``max_rate``, and at most ``max_ratio`` x stable's."""

    type: Literal["error_rate"] = "error_rate"
    max_rate: float | None = Field(default=0.01, ge=0.0, le=1.0)
    max_ratio: float | None = Field(default=2.0, ge=1.0)
    tolerance: float = Field(default=0.001, ge=0.0, le=1.0)
    """Absolute headroom over ``ratio x stable``, so one error against a clean stable is noise."""


class LatencyGate(_Gate):
    """Canary latency quantile: at most ``max_ms``, and at most ``max_ratio`` x stable's."""

    type: Literal["latency"] = "latency"
    quantile: float = Field(default=0.99, gt=0.0, lt=1.0)
    max_ms: float | None = Field(default=None, gt=0.0)
    max_ratio: float | None = Field(default=1.5, ge=1.0)


class DriftGate(_Gate):
    """Output drift against stable: PSI for numeric outputs, Jensen-Shannon for labels."""

    type: Literal["drift"] = "drift"
    output: str | None = None
    """One output by name; ``None`` judges every output the data plane reports."""
    psi_max: float = Field(default=0.2, gt=0.0)
    js_max: float = Field(default=0.1, gt=0.0, le=1.0)


class ShadowDisagreementGate(_Gate):
    """Shadow answers against stable's: label disagreement and mean relative error."""

    type: Literal["shadow_disagreement"] = "shadow_disagreement"
    max_disagreement: float | None = Field(default=0.05, ge=0.0, le=1.0)
    max_relative_error: float | None = Field(default=0.1, ge=0.0)


class MinSamplesGate(_Gate):
    """Every other gate is inconclusive until the window holds this many samples."""

    type: Literal["min_samples"] = "min_samples"
    requests: int = Field(default=100, ge=1)
    """Requests answered by the new version (live in canary steps, copies in shadow steps)."""
    shadow_comparisons: int = Field(default=100, ge=0)
    """Compared answer pairs, in shadow steps only."""


class ErrorBudgetBurnGate(_Gate):
    """The new version's burn rate of the contract's availability budget."""

    type: Literal["error_budget_burn"] = "error_budget_burn"
    max_burn_rate: float = Field(default=14.4, gt=0.0)
    windows_s: tuple[float, ...] = ()
    """Trailing windows that must all exceed to fail; empty judges the step's window."""
    availability: float | None = Field(default=None, gt=0.0, lt=1.0)
    """Overrides the contract's SLO when set."""


class OutcomeGate(_Gate):
    """The new version judged on labelled outcomes (``modelplane feedback``) against
    stable's over the same period: fails on a regression with statistical evidence (a
    one-sided test at ``confidence``), waits until each version has ``min_labels``."""

    type: Literal["outcome"] = "outcome"
    metric: Literal["accuracy", "auc", "log_loss", "mae", "rmse"] = "auc"
    """Classifiers: accuracy, auc, log_loss; regressors: mae, rmse."""
    score: str | None = None
    """The output judged; ``None`` picks ``probabilities``, ``score``, ``prediction``..."""
    min_labels: int = Field(default=200, ge=2)
    """Labelled rows each version needs before the gate concludes; until then it waits."""
    confidence: float = Field(default=0.95, ge=0.5, lt=1.0)
    """Of the one-sided test: the chance that a regression it reports is not noise."""
    tolerance: float = Field(default=0.0, ge=0.0)
    """How much worse (in the metric's units) is accepted before it counts."""


class CustomGate(_Gate):
    """A Python callable ``module:function`` taking the window stats, returning a result."""

    type: Literal["custom"] = "custom"
    function: str

    @field_validator("function")
    @classmethod
    def _callable(cls, value: str) -> str:
        if not _CALLABLE.fullmatch(value):
            raise PydanticCustomError(
                "callable", "'{value}' is not 'module:function'", {"value": value}
            )
        return value

    @property
    def label(self) -> str:
        return self.name or self.function.rpartition(":")[2]


GateSpec = Annotated[
    ErrorRateGate
    | LatencyGate
    | DriftGate
    | ShadowDisagreementGate
    | MinSamplesGate
    | ErrorBudgetBurnGate
    | OutcomeGate
    | CustomGate,
    Field(discriminator="type"),
]


def default_steps(strategy: Strategy) -> tuple[ShadowStep | CanaryStep, ...]:
    """The steps a strategy takes when the spec names none."""
    canary = tuple(CanaryStep(weight=w) for w in (5.0, 25.0, 50.0, 100.0))
    if strategy is Strategy.BLUE_GREEN:
        return (CanaryStep(weight=100.0),)
    if strategy is Strategy.SHADOW_THEN_CANARY:
        return (ShadowStep(), *canary)
    return canary


def default_gates() -> tuple[GateSpec, ...]:
    """Gates that need nothing the data plane does not report by default."""
    return (
        MinSamplesGate(),
        ErrorRateGate(),
        LatencyGate(),
        DriftGate(),
        ShadowDisagreementGate(),
    )


class RolloutSpec(_Frozen):
    """Move ``endpoint``'s traffic to ``to`` by ``strategy``, judged by ``gates``."""

    api_version: Literal["modelplane/v1"] = "modelplane/v1"
    kind: Literal["Rollout"] = "Rollout"
    endpoint: Name
    to: str
    strategy: Strategy = Strategy.CANARY
    steps: tuple[RolloutStep, ...] = ()
    gates: tuple[GateSpec, ...] = Field(default_factory=default_gates)
    on_fail: OnFail = OnFail.ROLLBACK
    max_duration_s: float = Field(default=4 * 3600.0, gt=0.0)
    """Past this, a rollout still waiting (for replicas or conclusive gates) fails."""

    @model_validator(mode="before")
    @classmethod
    def _default_steps(cls, data: Any) -> Any:
        if not isinstance(data, dict):
            return data
        steps = data.get("steps")
        if not steps:
            strategy = data.get("strategy", Strategy.CANARY)
            if strategy not in list(Strategy):
                return data  # the strategy field reports it
            return {**data, "steps": default_steps(Strategy(strategy))}
        if isinstance(steps, list | tuple):
            return {**data, "steps": [_with_kind(step) for step in steps]}
        return data

    @field_validator("to")
    @classmethod
    def _ref(cls, value: str) -> str:
        return check_model_ref(value)

    @field_validator("steps")
    @classmethod
    def _ordered(cls, steps: tuple[Any, ...], info: ValidationInfo) -> tuple[Any, ...]:
        last = 0.0
        for i, step in enumerate(steps):
            if isinstance(step, ShadowStep):
                if last > 0:
                    raise PydanticCustomError(
                        "steps", "steps[{i}]: a shadow step cannot follow a canary step", {"i": i}
                    )
                continue
            if step.weight <= last:
                raise PydanticCustomError(
                    "steps",
                    "steps[{i}]: canary weights must increase ({weight} after {last})",
                    {"i": i, "weight": f"{step.weight:g}", "last": f"{last:g}"},
                )
            last = step.weight
        strategy = info.data.get("strategy")
        if strategy is not None:
            _fits_strategy(strategy, steps)
        return steps

    @field_validator("max_duration_s")
    @classmethod
    def _room_for_steps(cls, value: float, info: ValidationInfo) -> float:
        holds = sum(step.hold_s for step in info.data.get("steps", ()))
        if value < holds:
            raise PydanticCustomError(
                "max_duration",
                "{value}s is shorter than the steps' holds ({holds}s): it could never promote",
                {"value": f"{value:g}", "holds": f"{holds:g}"},
            )
        return value

    @field_validator("gates")
    @classmethod
    def _unique_gates(cls, gates: tuple[Any, ...]) -> tuple[Any, ...]:
        labels = [gate.label for gate in gates]
        duplicates = sorted({n for n in labels if labels.count(n) > 1})
        if duplicates:
            raise PydanticCustomError(
                "duplicate",
                "gate '{name}' appears twice; give one a distinct name",
                {"name": duplicates[0]},
            )
        return gates


def _with_kind(step: Any) -> Any:
    """YAML may leave ``kind`` out: a step with a ``weight`` is a canary step."""
    if isinstance(step, dict) and "kind" not in step:
        return {**step, "kind": "canary" if "weight" in step else "shadow"}
    return step


def _fits_strategy(strategy: Strategy, steps: tuple[Any, ...]) -> None:
    shadows = sum(isinstance(s, ShadowStep) for s in steps)
    if strategy is Strategy.SHADOW_THEN_CANARY and not shadows:
        raise PydanticCustomError(
            "strategy", "shadow-then-canary needs a shadow step before the canary steps", {}
        )
    if strategy is Strategy.CANARY and shadows:
        raise PydanticCustomError(
            "strategy", "a canary rollout has no shadow steps; use shadow-then-canary", {}
        )
    one_switch = len(steps) == 1 and isinstance(steps[0], CanaryStep) and steps[0].weight == 100
    if strategy is Strategy.BLUE_GREEN and not one_switch:
        raise PydanticCustomError(
            "strategy", "blue-green has exactly one step: canary weight 100", {}
        )
