"""The rollout state machine: pure steps from observed state to traffic actions.

``step(spec, snapshot, now, state) -> (decision, new_state)`` moves a rollout along:

1. **pending** starts the first step.
2. **entering a step** (``step_started_at`` unset) asks for the new version's replicas and
   waits until they are ready; only then does weight (or a shadow copy) move, and the
   step's window starts at ``now``.
3. **holding** waits ``hold_s`` seconds from the window's start.
4. **judging** at the window's end: any gate fails -> roll back (or pause, per ``on_fail``);
   all pass -> the next step, or promote after the last; inconclusive -> keep holding.
5. **promoting** moves all weight to the new version (once its replicas are ready) and the
   alias; **rolling back** puts all weight on stable once stable's replicas are ready.

Past ``max_duration_s`` a rollout still waiting fails. Actions are emitted once: the state
remembers what was asked (weights, shadow share, scale requests), so a second call with the
same snapshot, or a restarted controller reading the stored state, repeats nothing.
Commands (pause, resume, promote, rollback) change the state only; the next ``step`` acts.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from enum import StrEnum
from typing import Any

from modelplane.core.gates import (
    CustomResolver,
    GateResult,
    Outcome,
    WindowStats,
    evaluate_gates,
    overall,
)
from modelplane.errors import Conflict
from modelplane.spec.contract import SLO
from modelplane.spec.rollout import CanaryStep, OnFail, RolloutSpec, ShadowStep

__all__ = [
    "HISTORY_LIMIT",
    "TERMINAL",
    "Action",
    "ActionKind",
    "Command",
    "Event",
    "Phase",
    "RolloutDecision",
    "RolloutSnapshot",
    "RolloutState",
    "command",
    "step",
    "wanted_canary_weight",
]

HISTORY_LIMIT = 64
"""Events kept in the state; the audit log keeps them all."""


class Phase(StrEnum):
    """Where a rollout stands."""

    PENDING = "pending"
    """Accepted, nothing done yet."""
    SHADOW = "shadow"
    """The new version gets a copy of traffic; its answers are compared, never returned."""
    CANARY = "canary"
    """The new version answers a share of live traffic."""
    PAUSED = "paused"
    """Held at the current weights by a person or a failed gate with on_fail=pause."""
    PROMOTING = "promoting"
    """Moving all traffic and the alias to the new version."""
    PROMOTED = "promoted"
    """Done: the new version is stable."""
    ROLLING_BACK = "rolling_back"
    """Moving all traffic back to stable."""
    ROLLED_BACK = "rolled_back"
    """Done: stable serves everything, by a gate or a command."""
    FAILED = "failed"
    """Done: stable serves everything because the rollout ran out of time."""


TERMINAL = frozenset({Phase.PROMOTED, Phase.ROLLED_BACK, Phase.FAILED})
_ACTIVE = frozenset({Phase.PENDING, Phase.SHADOW, Phase.CANARY})


class ActionKind(StrEnum):
    """What the controller must do; every action is absolute, never a delta."""

    SCALE_CANARY = "scale_canary"
    """Give the new version replicas enough for ``canary_weight`` percent of traffic."""
    SCALE_STABLE = "scale_stable"
    """Give stable replicas enough for all traffic."""
    SET_WEIGHTS = "set_weights"
    """Route ``stable_weight`` / ``canary_weight`` percent of live traffic."""
    SET_SHADOW = "set_shadow"
    """Copy ``shadow_percent`` of traffic to the new version (0 stops the shadow)."""
    PROMOTE = "promote"
    """Make ``model`` the endpoint's stable version and move its alias (audited)."""
    ROLLBACK = "rollback"
    """Record the rollback of ``model``; its replicas may be released."""


class Command(StrEnum):
    """What a person may ask of a running rollout."""

    PAUSE = "pause"
    RESUME = "resume"
    PROMOTE = "promote"
    ROLLBACK = "rollback"


@dataclass(frozen=True, slots=True)
class Action:
    kind: ActionKind
    stable_weight: float | None = None
    canary_weight: float | None = None
    shadow_percent: float | None = None
    model: str | None = None
    reason: str = ""


@dataclass(frozen=True, slots=True)
class RolloutSnapshot:
    """What the controller observed at ``now``.

    ``stats`` counts the current step's window (from ``state.step_started_at``), the new
    version's shadow answers included.
    """

    canary_ready_percent: float
    """Share of traffic the new version's ready replicas can serve: 0 when none is ready,
    100 when it has as many ready as the endpoint needs. Weight never moves past it."""
    stable_ready: bool
    """Stable has ready replicas for all traffic."""
    stats: WindowStats | None = None
    slo: SLO | None = None


@dataclass(frozen=True, slots=True)
class RolloutDecision:
    actions: tuple[Action, ...] = ()
    reasons: tuple[str, ...] = ()
    gates: tuple[GateResult, ...] = ()


@dataclass(frozen=True, slots=True)
class Event:
    """One line of a rollout's story, for status and the audit log."""

    at: float
    phase: Phase
    step: int
    message: str


@dataclass(frozen=True, slots=True)
class RolloutState:
    phase: Phase = Phase.PENDING
    step: int = 0
    step_started_at: float | None = None
    """When the current step's weight was in place; unset while entering the step."""
    started_at: float | None = None
    """When the rollout began, moved later by time spent paused."""
    weights: tuple[float, float] = (100.0, 0.0)
    """``(stable, canary)`` percent last asked for."""
    shadow_percent: float = 0.0
    canary_scaled_for: float = 0.0
    """The largest canary weight replicas were asked for."""
    stable_scaled: bool = False
    paused_from: Phase | None = None
    paused_at: float | None = None
    ending: Phase | None = None
    """Where rolling back ends: rolled_back, or failed when time ran out."""
    gates: tuple[GateResult, ...] = ()
    history: tuple[Event, ...] = ()

    def to_dict(self) -> dict[str, Any]:
        """JSON-safe: what the store keeps between controller runs."""
        return {
            "phase": self.phase.value,
            "step": self.step,
            "step_started_at": self.step_started_at,
            "started_at": self.started_at,
            "weights": list(self.weights),
            "shadow_percent": self.shadow_percent,
            "canary_scaled_for": self.canary_scaled_for,
            "stable_scaled": self.stable_scaled,
            "paused_from": self.paused_from.value if self.paused_from else None,
            "paused_at": self.paused_at,
            "ending": self.ending.value if self.ending else None,
            "gates": [g.to_dict() for g in self.gates],
            "history": [
                {"at": e.at, "phase": e.phase.value, "step": e.step, "message": e.message}
                for e in self.history
            ],
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> RolloutState:
        stable, canary = data["weights"]
        return cls(
            phase=Phase(data["phase"]),
            step=int(data["step"]),
            step_started_at=_float_or_none(data["step_started_at"]),
            started_at=_float_or_none(data["started_at"]),
            weights=(float(stable), float(canary)),
            shadow_percent=float(data["shadow_percent"]),
            canary_scaled_for=float(data["canary_scaled_for"]),
            stable_scaled=bool(data["stable_scaled"]),
            paused_from=Phase(data["paused_from"]) if data["paused_from"] else None,
            paused_at=_float_or_none(data["paused_at"]),
            ending=Phase(data["ending"]) if data["ending"] else None,
            gates=tuple(GateResult.from_dict(g) for g in data["gates"]),
            history=tuple(
                Event(float(e["at"]), Phase(e["phase"]), int(e["step"]), str(e["message"]))
                for e in data["history"]
            ),
        )


def _float_or_none(value: Any) -> float | None:
    return None if value is None else float(value)


@dataclass(slots=True)
class _Plan:
    """What one call decides; local to the call, so ``step`` stays pure."""

    spec: RolloutSpec
    snapshot: RolloutSnapshot
    now: float
    resolver: CustomResolver | None
    actions: list[Action] = field(default_factory=list)
    reasons: list[str] = field(default_factory=list)
    gates: tuple[GateResult, ...] = ()

    def act(self, action: Action) -> None:
        self.actions.append(action)
        self.reasons.append(action.reason)

    def note(self, state: RolloutState, message: str) -> RolloutState:
        """Say why, and add it to the history unless it is what the history last said."""
        self.reasons.append(message)
        last = state.history[-1] if state.history else None
        if last and (last.phase, last.step, last.message) == (state.phase, state.step, message):
            return state
        event = Event(self.now, state.phase, state.step, message)
        return replace(state, history=(*state.history, event)[-HISTORY_LIMIT:])


def wanted_canary_weight(spec: RolloutSpec, state: RolloutState) -> float:
    """The traffic share the new version's replicas must be ready for, right now."""
    if state.phase is Phase.PROMOTING:
        return 100.0
    if state.phase in TERMINAL or state.phase is Phase.ROLLING_BACK:
        return 0.0
    current = spec.steps[min(state.step, len(spec.steps) - 1)]
    return current.percent if isinstance(current, ShadowStep) else current.weight


def step(
    spec: RolloutSpec,
    snapshot: RolloutSnapshot,
    now: float,
    state: RolloutState,
    *,
    resolver: CustomResolver | None = None,
) -> tuple[RolloutDecision, RolloutState]:
    """Move the rollout as far as ``snapshot`` allows at ``now``; see the module's doc."""
    plan = _Plan(spec, snapshot, now, resolver)
    if state.phase is Phase.PENDING:
        state = replace(state, phase=_phase_of(spec, 0), step=0, started_at=now)
        state = plan.note(state, f"rollout to {spec.to} started ({spec.strategy.value})")
    if state.phase in (Phase.SHADOW, Phase.CANARY):
        state = _advance(plan, state)
    if state.phase is Phase.PROMOTING:
        state = _promote(plan, state)
    if state.phase is Phase.ROLLING_BACK:
        state = _roll_back(plan, state)
    if state.phase is Phase.PAUSED:
        plan.reasons.append("paused: weights held until resume, promote or rollback")
    decision = RolloutDecision(tuple(plan.actions), tuple(plan.reasons), plan.gates)
    return decision, state


def _phase_of(spec: RolloutSpec, index: int) -> Phase:
    return Phase.SHADOW if isinstance(spec.steps[index], ShadowStep) else Phase.CANARY


def _advance(plan: _Plan, state: RolloutState) -> RolloutState:
    current = plan.spec.steps[state.step]
    if state.step_started_at is None:
        state = _enter(plan, state, current)
        return _check_deadline(plan, state)
    left = state.step_started_at + current.hold_s - plan.now
    if left > 0:
        plan.reasons.append(f"holding step {state.step + 1} for {left:.0f}s more")
        return _check_deadline(plan, state)
    results = _judge(plan, state, current)
    verdict = overall(results)
    was = overall(state.gates) if state.gates else None
    state = replace(state, gates=results)
    if verdict is Outcome.FAIL:
        failed = "; ".join(f"{r.name}: {r.reason}" for r in results if r.outcome is Outcome.FAIL)
        return _on_fail(plan, state, f"gates failed at step {state.step + 1}: {failed}", None)
    if verdict is Outcome.INCONCLUSIVE:
        waiting = "; ".join(
            f"{r.name}: {r.reason}" for r in results if r.outcome is Outcome.INCONCLUSIVE
        )
        message = f"gates inconclusive at step {state.step + 1}, holding: {waiting}"
        if was is Outcome.INCONCLUSIVE:
            # one history line per stretch of waiting, though the counts change every call
            plan.reasons.append(message)
        else:
            state = plan.note(state, message)
        return _check_deadline(plan, state)
    state = plan.note(state, f"gates passed at step {state.step + 1}")
    if state.step + 1 >= len(plan.spec.steps):
        return plan.note(replace(state, phase=Phase.PROMOTING), "last step passed: promoting")
    following = state.step + 1
    nxt = replace(
        state, step=following, step_started_at=None, phase=_phase_of(plan.spec, following)
    )
    return _advance(plan, replace(nxt, gates=()))


def _enter(plan: _Plan, state: RolloutState, current: ShadowStep | CanaryStep) -> RolloutState:
    """Ask for replicas; once they are ready, move weight and start the window."""
    label = f"step {state.step + 1}"
    wanted = wanted_canary_weight(plan.spec, state)
    if plan.snapshot.canary_ready_percent < wanted:
        state = _scale_canary(plan, state, wanted)
        plan.reasons.append(f"{label}: waiting for {plan.spec.to} replicas to be ready")
        return state
    if isinstance(current, ShadowStep):
        state = _set_shadow(plan, state, current.percent, f"{label}: shadow {current.percent:g}%")
        what = f"shadow {current.percent:g}%"
    else:
        state = _set_weights(plan, state, current.weight, f"{label}: canary {current.weight:g}%")
        state = _set_shadow(plan, state, 0.0, f"{label}: shadow phase over")
        what = f"canary {current.weight:g}%"
    state = replace(state, step_started_at=plan.now)
    return plan.note(state, f"{label} of {len(plan.spec.steps)}: {what} for {current.hold_s:g}s")


def _judge(
    plan: _Plan, state: RolloutState, current: ShadowStep | CanaryStep
) -> tuple[GateResult, ...]:
    stats = plan.snapshot.stats
    started = state.step_started_at
    if stats is None:
        results: tuple[GateResult, ...] = (
            GateResult("window", Outcome.INCONCLUSIVE, {}, "no window stats reported"),
        )
    elif stats.since is not None and started is not None and stats.since < started:
        reason = "stats were counted from before the step began"
        results = (GateResult("window", Outcome.INCONCLUSIVE, {"since": stats.since}, reason),)
    else:
        results = evaluate_gates(
            plan.spec.gates,
            stats,
            shadow_step=isinstance(current, ShadowStep),
            slo=plan.snapshot.slo,
            resolver=plan.resolver,
        )
    plan.gates = results
    return results


def _check_deadline(plan: _Plan, state: RolloutState) -> RolloutState:
    if state.phase not in (Phase.SHADOW, Phase.CANARY) or state.started_at is None:
        return state
    if plan.now - state.started_at < plan.spec.max_duration_s:
        return state
    why = f"still waiting after max_duration_s={plan.spec.max_duration_s:g}s"
    inconclusive = [r.name for r in state.gates if r.outcome is Outcome.INCONCLUSIVE]
    if inconclusive:
        why = f"gates inconclusive too long ({', '.join(inconclusive)}): {why}"
    return _on_fail(plan, state, why, Phase.FAILED)


def _on_fail(plan: _Plan, state: RolloutState, why: str, ending: Phase | None) -> RolloutState:
    if plan.spec.on_fail is OnFail.PAUSE:
        paused = replace(state, phase=Phase.PAUSED, paused_from=state.phase, paused_at=plan.now)
        return plan.note(paused, f"{why}; paused (on_fail=pause)")
    rolling = replace(state, phase=Phase.ROLLING_BACK, ending=ending or Phase.ROLLED_BACK)
    return plan.note(rolling, f"{why}; rolling back")


def _promote(plan: _Plan, state: RolloutState) -> RolloutState:
    if state.weights[1] < 100.0 and plan.snapshot.canary_ready_percent < 100.0:
        state = _scale_canary(plan, state, 100.0)
        plan.reasons.append(f"promoting: waiting for {plan.spec.to} replicas for all traffic")
        return state
    state = _set_weights(plan, state, 100.0, "promoting: all traffic to the new version")
    state = _set_shadow(plan, state, 0.0, "promoting: shadow over")
    plan.act(Action(ActionKind.PROMOTE, model=plan.spec.to, reason=f"promote {plan.spec.to}"))
    return plan.note(replace(state, phase=Phase.PROMOTED), f"promoted {plan.spec.to}")


def _roll_back(plan: _Plan, state: RolloutState) -> RolloutState:
    if state.weights[1] > 0.0 and not plan.snapshot.stable_ready:
        if not state.stable_scaled:
            reason = "rolling back: stable needs ready replicas before traffic returns"
            plan.act(Action(ActionKind.SCALE_STABLE, reason=reason))
            state = replace(state, stable_scaled=True)
        plan.reasons.append("rolling back: waiting for stable replicas to be ready")
        return state
    state = _set_weights(plan, state, 0.0, "rolling back: all traffic to stable")
    state = _set_shadow(plan, state, 0.0, "rolling back: shadow stopped")
    reason = f"rolled back {plan.spec.to}"
    plan.act(Action(ActionKind.ROLLBACK, model=plan.spec.to, reason=reason))
    return plan.note(replace(state, phase=state.ending or Phase.ROLLED_BACK), reason)


def _scale_canary(plan: _Plan, state: RolloutState, weight: float) -> RolloutState:
    if state.canary_scaled_for >= weight:
        return state
    reason = f"{plan.spec.to} needs replicas for {weight:g}% of traffic"
    plan.act(Action(ActionKind.SCALE_CANARY, canary_weight=weight, reason=reason))
    return replace(state, canary_scaled_for=weight)


def _set_weights(plan: _Plan, state: RolloutState, canary: float, reason: str) -> RolloutState:
    weights = (100.0 - canary, canary)
    if state.weights == weights:
        return state
    plan.act(Action(ActionKind.SET_WEIGHTS, weights[0], weights[1], reason=reason))
    return replace(state, weights=weights)


def _set_shadow(plan: _Plan, state: RolloutState, percent: float, reason: str) -> RolloutState:
    if state.shadow_percent == percent:
        return state
    plan.act(Action(ActionKind.SET_SHADOW, shadow_percent=percent, reason=reason))
    return replace(state, shadow_percent=percent)


_ALLOWED: dict[Command, frozenset[Phase]] = {
    Command.PAUSE: _ACTIVE,
    Command.RESUME: frozenset({Phase.PAUSED}),
    Command.PROMOTE: _ACTIVE | {Phase.PAUSED},
    Command.ROLLBACK: _ACTIVE | {Phase.PAUSED, Phase.PROMOTING},
}
_ALREADY: dict[Command, frozenset[Phase]] = {
    Command.PAUSE: frozenset({Phase.PAUSED}),
    Command.RESUME: _ACTIVE,
    Command.PROMOTE: frozenset({Phase.PROMOTING, Phase.PROMOTED}),
    Command.ROLLBACK: frozenset({Phase.ROLLING_BACK, Phase.ROLLED_BACK}),
}


def command(state: RolloutState, cmd: Command, now: float, *, by: str = "") -> RolloutState:
    """Apply a person's command; the next :func:`step` emits the actions.

    Repeating a command that already took effect changes nothing (a retried CLI call is
    safe); one that contradicts the rollout's phase raises :class:`Conflict`.
    """
    if state.phase in _ALREADY[cmd]:
        return state
    if state.phase not in _ALLOWED[cmd]:
        raise Conflict(f"cannot {cmd.value} a rollout that is {state.phase.value}")
    who = f" by {by}" if by else ""
    if cmd is Command.PAUSE:
        new = replace(state, phase=Phase.PAUSED, paused_from=state.phase, paused_at=now)
    elif cmd is Command.RESUME:
        new = _resumed(state, now)
    elif cmd is Command.PROMOTE:
        new = replace(state, phase=Phase.PROMOTING)
    else:
        new = replace(state, phase=Phase.ROLLING_BACK, ending=Phase.ROLLED_BACK)
    event = Event(now, new.phase, new.step, f"{cmd.value}{who}")
    return replace(new, history=(*new.history, event)[-HISTORY_LIMIT:])


def _resumed(state: RolloutState, now: float) -> RolloutState:
    """Back to the paused phase with a fresh window: evidence from before the pause is stale."""
    paused_for = now - state.paused_at if state.paused_at is not None else 0.0
    started = state.started_at + paused_for if state.started_at is not None else None
    return replace(
        state,
        phase=state.paused_from or Phase.PENDING,
        paused_from=None,
        paused_at=None,
        started_at=started,
        step_started_at=None,
        gates=(),
    )
