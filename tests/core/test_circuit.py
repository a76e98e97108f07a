"""The circuit breaker state machine, table-driven over an injected ``now``."""

from __future__ import annotations

from dataclasses import dataclass

import pytest

from modelplane.core.circuit import BreakerConfig, BreakerState, CircuitBreaker, admit, record

CONFIG = BreakerConfig(window_s=10.0, buckets=10, min_requests=4, error_rate=0.5, cool_down_s=5.0)
CLOSED, OPEN, HALF = BreakerState.CLOSED, BreakerState.OPEN, BreakerState.HALF_OPEN


@dataclass(frozen=True)
class Step:
    """At ``at``: ``ask`` (admit) expecting ``allowed``, or record ``ok``/``fail`` outcomes."""

    at: float
    ok: int = 0
    fail: int = 0
    ask: bool = False
    allowed: bool = True
    state: BreakerState = CLOSED
    ready: int | None = None
    """The route's ready epoch given to ``admit`` (``None``: not given)."""


def run(steps: list[Step], config: BreakerConfig = CONFIG) -> None:
    breaker = CircuitBreaker()
    for i, step in enumerate(steps):
        if step.ask:
            allowed, breaker = admit(breaker, config, step.at, step.ready)
            assert allowed is step.allowed, f"step {i}: admitted {allowed}"
        else:
            breaker = record(breaker, config, step.at, successes=step.ok, failures=step.fail)
        assert breaker.state is step.state, f"step {i}: {breaker.state}"


CASES: dict[str, list[Step]] = {
    "closed admits everything": [Step(0, ask=True), Step(1, ok=100), Step(2, ask=True)],
    "errors below the minimum count never open": [Step(0, fail=3), Step(1, ask=True)],
    "error rate at the threshold opens": [
        Step(0, ok=2), Step(1, fail=2, state=OPEN), Step(2, ask=True, allowed=False, state=OPEN),
    ],
    "error rate below the threshold stays closed": [Step(0, ok=3), Step(1, fail=2)],
    "old errors slide out of the window": [
        Step(0, fail=3), Step(11, ok=1), Step(11.5, fail=1), Step(12, ask=True),
    ],
    "cool-down then one probe": [
        Step(0, fail=4, state=OPEN),
        Step(4.9, ask=True, allowed=False, state=OPEN),
        Step(5, ask=True, allowed=True, state=HALF),
        Step(5.1, ask=True, allowed=False, state=HALF),
    ],
    "a good probe closes with an empty window": [
        Step(0, fail=4, state=OPEN), Step(5, ask=True, state=HALF), Step(5.2, ok=1),
        Step(5.3, fail=3), Step(5.4, ask=True),
    ],
    "a bad probe opens again for a fresh cool-down": [
        Step(0, fail=4, state=OPEN), Step(5, ask=True, state=HALF), Step(6, fail=1, state=OPEN),
        Step(10, ask=True, allowed=False, state=OPEN), Step(11, ask=True, state=HALF),
    ],
    "a lost probe is replaced after another cool-down": [
        Step(0, fail=4, state=OPEN), Step(5, ask=True, state=HALF),
        Step(9, ask=True, allowed=False, state=HALF), Step(10, ask=True, state=HALF),
    ],
    "outcomes while open are ignored": [
        Step(0, fail=4, state=OPEN), Step(1, ok=50, state=OPEN), Step(2, fail=5, state=OPEN),
    ],
    "a route whose replicas come back is probed at once, not after the cool-down": [
        Step(0, ask=True, ready=1), Step(0.5, fail=4, state=OPEN),
        Step(1, ask=True, ready=1, allowed=False, state=OPEN),
        Step(1.2, ask=True, ready=2, state=HALF),
        Step(1.3, ask=True, ready=2, allowed=False, state=HALF),
        Step(1.4, ok=1), Step(1.5, ask=True, ready=2),
    ],
    "replicas back before the failures that open it are counted still probe at once": [
        Step(0, ask=True, ready=1), Step(1, ask=True, ready=1),
        Step(2.1, fail=4, state=OPEN),  # answers to requests held while no replica was up
        Step(2.2, ask=True, ready=2, state=HALF),
    ],
    "a return seen while closed does not shorten a later cool-down": [
        Step(0, ask=True, ready=1), Step(0.1, ask=True, ready=2), Step(1, fail=4, state=OPEN),
        Step(2, ask=True, ready=2, allowed=False, state=OPEN),
        Step(6, ask=True, ready=2, state=HALF),
    ],
    "a probe that fails after a return opens for a full cool-down": [
        Step(0, ask=True, ready=1), Step(0.5, fail=4, state=OPEN),
        Step(1, ask=True, ready=2, state=HALF), Step(1.1, fail=1, state=OPEN),
        Step(5.9, ask=True, ready=2, allowed=False, state=OPEN),
        Step(6.1, ask=True, ready=2, state=HALF),
    ],
    "without a ready epoch the cool-down alone decides": [
        Step(0, ask=True, ready=1), Step(0.5, fail=4, state=OPEN),
        Step(1, ask=True, allowed=False, state=OPEN), Step(5.5, ask=True, state=HALF),
    ],
}  # fmt: skip


@pytest.mark.parametrize("steps", CASES.values(), ids=CASES.keys())
def test_breaker(steps: list[Step]) -> None:
    run(steps)


def test_counts_and_a_clock_that_steps_back() -> None:
    breaker = record(CircuitBreaker(), CONFIG, 100.0, successes=3)
    breaker = record(breaker, CONFIG, 99.0, failures=1)  # earlier than the newest bucket
    assert breaker.counts == (3, 1)
    assert breaker.state is CLOSED


def test_more_probes_when_configured() -> None:
    config = BreakerConfig(min_requests=1, cool_down_s=1.0, probes=2)
    breaker = record(CircuitBreaker(), config, 0.0, failures=1)
    assert admit(breaker, config, 1.0)[0]
    _, breaker = admit(breaker, config, 1.0)
    allowed, breaker = admit(breaker, config, 1.0)
    assert allowed
    assert not admit(breaker, config, 1.0)[0]


@pytest.mark.parametrize(
    "kwargs",
    [{"window_s": 0}, {"buckets": 0}, {"min_requests": 0}, {"error_rate": 0}, {"probes": 0}],
)
def test_config_bounds(kwargs: dict[str, float]) -> None:
    with pytest.raises(ValueError):
        BreakerConfig(**kwargs)  # type: ignore[arg-type]
