"""Degradation under overload: give things up in the policy's declared order, with hysteresis.

Overload is a ratio of demand to capacity (1.0 = exactly full). At or above
``enter_overload`` one more step is taken; at or below ``exit_overload`` the latest step is
undone; in between nothing moves. A step is held at least ``min_hold_s`` before the next
change, so a load that hovers at the threshold cannot flap. ``critical`` is never degraded.
"""

from __future__ import annotations

from dataclasses import dataclass

from modelplane.spec.policy import DegradationPolicy, DegradationStep
from modelplane.types import Tier

__all__ = ["DegradeDecision", "DegradeSnapshot", "DegradeState", "Effects", "degrade", "effects"]


@dataclass(frozen=True, slots=True)
class DegradeSnapshot:
    overload: float


@dataclass(frozen=True, slots=True)
class DegradeState:
    level: int = 0
    changed_at: float = float("-inf")


@dataclass(frozen=True, slots=True)
class Effects:
    """What the active steps mean for the rest of the system."""

    paused_tiers: frozenset[str] = frozenset()
    shed_tiers: frozenset[str] = frozenset()
    fallback_tiers: frozenset[str] = frozenset()
    preempt_borrowed_tiers: frozenset[str] = frozenset()
    freeze_canaries: bool = False


@dataclass(frozen=True, slots=True)
class DegradeDecision:
    level: int
    active: tuple[DegradationStep, ...]
    changed: bool
    reason: str

    @property
    def effects(self) -> Effects:
        return effects(self.active)


def effects(active: tuple[DegradationStep, ...]) -> Effects:
    batch, standard = frozenset({Tier.BATCH.value}), frozenset({Tier.STANDARD.value})
    on = set(active)
    return Effects(
        paused_tiers=batch if DegradationStep.PAUSE_BATCH_ADMISSION in on else frozenset(),
        shed_tiers=batch if DegradationStep.SHED_BATCH in on else frozenset(),
        fallback_tiers=standard if DegradationStep.FALLBACKS_FOR_STANDARD in on else frozenset(),
        preempt_borrowed_tiers=(
            batch if DegradationStep.PREEMPT_BORROWED_BATCH in on else frozenset()
        ),
        freeze_canaries=DegradationStep.FREEZE_CANARIES in on,
    )


def degrade(
    snapshot: DegradeSnapshot, config: DegradationPolicy, now: float, state: DegradeState
) -> tuple[DegradeDecision, DegradeState]:
    """One step further, one step back, or hold."""
    level, load = state.level, snapshot.overload
    held = now - state.changed_at >= config.min_hold_s
    steps = config.steps
    if load >= config.enter_overload and level < len(steps) and held:
        level += 1
        reason = f"overload {load:.2f} >= {config.enter_overload:g}: {steps[level - 1].value}"
    elif load <= config.exit_overload and level > 0 and held:
        level -= 1
        reason = f"overload {load:.2f} <= {config.exit_overload:g}: undo {steps[level].value}"
    else:
        reason = f"overload {load:.2f}: holding at level {level}"
    changed = level != state.level
    new = DegradeState(level, now if changed else state.changed_at)
    return DegradeDecision(level, steps[:level], changed, reason), new
