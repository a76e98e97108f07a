from __future__ import annotations

import pytest

from modelplane.core.autoscale import (
    ScaleConfig,
    ScaleDecision,
    ScaleSnapshot,
    ScaleState,
    autoscale,
)
from modelplane.spec.policy import Policy


class Run:
    """Feeds one concurrency sample per second and remembers the last decision."""

    def __init__(self, config: ScaleConfig, ready: int = 1, now: float = 0.0) -> None:
        self.config, self.ready, self.now = config, ready, now
        self.state = ScaleState()
        self.last: ScaleDecision | None = None

    def load(self, concurrency: float, seconds: int = 1, *, follow: bool = True) -> ScaleDecision:
        for _ in range(seconds):
            self.now += 1.0
            snap = ScaleSnapshot("ep", self.ready, concurrency)
            self.last, self.state = autoscale(snap, self.config, self.now, self.state)
            if follow:
                self.ready = self.last.desired
        assert self.last is not None
        return self.last


@pytest.mark.parametrize(
    ("concurrency", "ready", "desired"),
    [(0.0, 1, 1), (10.0, 1, 1), (25.0, 3, 3), (40.0, 4, 4), (100.0, 10, 10), (5.0, 10, 5)],
)
def test_stable_mode_targets_concurrency(concurrency: float, ready: int, desired: int) -> None:
    run = Run(ScaleConfig(min_replicas=1), ready=ready)
    decision = run.load(concurrency, 61, follow=False)
    assert decision.desired == desired
    assert not decision.panic


def test_panic_entered_at_twice_the_ready_capacity() -> None:
    run = Run(ScaleConfig(min_replicas=1), ready=2)
    run.load(20.0, 60, follow=False)
    calm = run.load(39.0, 1, follow=False)
    assert not calm.panic
    burst = run.load(400.0, 3, follow=False)
    assert burst.panic
    assert burst.desired == 22  # mean of the 6 s window (20, 20, 39, 400 x3) / 10
    assert "panic" in burst.reason


def test_no_scale_down_during_panic_and_exit_after_stable_window() -> None:
    run = Run(ScaleConfig(min_replicas=1), ready=1)
    assert run.load(100.0, 1).panic
    peak = run.ready
    # The burst stops; panic holds the peak for a full stable window after the last trigger.
    for _ in range(59):
        decision = run.load(0.0)
        assert decision.panic
        assert decision.desired >= peak
    assert not run.load(0.0).panic


def test_scale_down_is_rate_limited() -> None:
    run = Run(ScaleConfig(min_replicas=0, scale_to_zero_grace_s=0.0), ready=10)
    decision = run.load(0.0, 1, follow=False)
    assert decision.desired == 5


def test_scale_to_zero_waits_for_grace() -> None:
    run = Run(ScaleConfig(scale_to_zero_grace_s=30.0), ready=1)
    run.load(5.0, 5)
    assert run.load(0.0, 20).desired == 1
    assert run.load(0.0, 70).desired == 0


def test_tier_forbids_scale_to_zero_and_keeps_warm_floor() -> None:
    policy = Policy()
    critical = ScaleConfig.for_tier(policy, "critical", max_replicas=5)
    assert not critical.scale_to_zero
    assert critical.min_replicas == 1
    run = Run(critical, ready=1)
    assert run.load(0.0, 200).desired == 1
    batch = ScaleConfig.for_tier(policy, "batch", max_replicas=3)
    assert batch.scale_to_zero
    assert Run(batch, ready=1).load(1000.0, 10).desired == 3
