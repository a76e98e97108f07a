from __future__ import annotations

import pytest

from modelplane.core.degrade import DegradeSnapshot, DegradeState, degrade, effects
from modelplane.spec.policy import DegradationPolicy, DegradationStep

STEPS = DegradationStep
POLICY = DegradationPolicy(enter_overload=1.0, exit_overload=0.8, min_hold_s=10.0)


def _walk(loads: list[tuple[float, float]]) -> list[int]:
    state, levels = DegradeState(), []
    for now, load in loads:
        decision, state = degrade(DegradeSnapshot(load), POLICY, now, state)
        levels.append(decision.level)
    return levels


@pytest.mark.parametrize(
    ("loads", "levels"),
    [
        ([(0, 0.5), (20, 0.9)], [0, 0]),
        ([(0, 1.2), (5, 1.2), (10, 1.2), (25, 1.2)], [1, 1, 2, 3]),
        # Between the thresholds nothing moves (hysteresis).
        ([(0, 1.2), (20, 0.9), (40, 0.95), (60, 0.79)], [1, 1, 1, 0]),
        # A step is held min_hold_s even when the load falls at once.
        ([(0, 1.5), (3, 0.1), (11, 0.1)], [1, 1, 0]),
        ([(i * 10, 2.0) for i in range(8)], [1, 2, 3, 4, 5, 5, 5, 5]),
    ],
)
def test_levels(loads: list[tuple[float, float]], levels: list[int]) -> None:
    assert _walk(loads) == levels


def test_steps_follow_declared_order_and_undo_in_reverse() -> None:
    policy = DegradationPolicy(steps=(STEPS.SHED_BATCH, STEPS.FREEZE_CANARIES), min_hold_s=0.0)
    first, state = degrade(DegradeSnapshot(1.5), policy, 0.0, DegradeState())
    assert first.active == (STEPS.SHED_BATCH,)
    assert first.changed
    second, state = degrade(DegradeSnapshot(1.5), policy, 1.0, state)
    assert second.active == (STEPS.SHED_BATCH, STEPS.FREEZE_CANARIES)
    back, _ = degrade(DegradeSnapshot(0.1), policy, 2.0, state)
    assert back.active == (STEPS.SHED_BATCH,)
    assert back.reason == "overload 0.10 <= 0.8: undo freeze-canaries"


def test_effects_never_touch_critical() -> None:
    every = effects(tuple(STEPS))
    assert every.paused_tiers == {"batch"}
    assert every.shed_tiers == {"batch"}
    assert every.fallback_tiers == {"standard"}
    assert every.preempt_borrowed_tiers == {"batch"}
    assert every.freeze_canaries
    touched = every.paused_tiers | every.shed_tiers | every.fallback_tiers
    assert "critical" not in touched
    assert effects(()).paused_tiers == frozenset()
