"""The rollout state machine: table-driven stories, commands, restarts and invariants.

Every call goes through a restart: the state is turned into JSON and back before each
``step``, and each ``step`` is called twice, the second time expecting nothing new.
"""

from __future__ import annotations

import contextlib
import json
from dataclasses import dataclass
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from modelplane.core.gates import ArmStats, ShadowStats, WindowStats
from modelplane.core.rollout import (
    Action,
    ActionKind,
    Command,
    Phase,
    RolloutSnapshot,
    RolloutState,
    command,
    step,
    wanted_canary_weight,
)
from modelplane.errors import Conflict
from modelplane.spec.rollout import (
    CanaryStep,
    ErrorRateGate,
    MinSamplesGate,
    OnFail,
    RolloutSpec,
    ShadowDisagreementGate,
    ShadowStep,
    Strategy,
)

GATES = (MinSamplesGate(requests=100, shadow_comparisons=100), ErrorRateGate())
SPEC = RolloutSpec(
    endpoint="fraud-score",
    to="fraud:8",
    steps=(
        CanaryStep(weight=5, hold_s=60),
        CanaryStep(weight=50, hold_s=60),
        CanaryStep(weight=100, hold_s=60),
    ),
    gates=GATES,
    max_duration_s=1000,
)
SHADOW_SPEC = SPEC.model_copy(
    update={
        "strategy": Strategy.SHADOW_THEN_CANARY,
        "steps": (ShadowStep(percent=50, hold_s=60), CanaryStep(weight=100, hold_s=60)),
        "gates": (*GATES, ShadowDisagreementGate()),
    }
)
PAUSING = SPEC.model_copy(update={"on_fail": OnFail.PAUSE})

HEALTHY = WindowStats(ArmStats(1000, 1), ArmStats(10_000, 10), ShadowStats(1000, 5))
BAD = WindowStats(ArmStats(1000, 100), ArmStats(10_000, 10), ShadowStats(1000, 5))
FEW = WindowStats(ArmStats(10, 0), ArmStats(10_000, 10))
DISAGREES = WindowStats(ArmStats(1000, 1), ArmStats(10_000, 10), ShadowStats(1000, 300))
STATS = {"healthy": HEALTHY, "bad": BAD, "few": FEW, "disagrees": DISAGREES, "none": None}


def summary(action: Action) -> tuple[Any, ...]:
    """An action as a short tuple: the kind, then the numbers it carries."""
    numbers = (action.stable_weight, action.canary_weight, action.shadow_percent)
    return (action.kind.value, *(n for n in numbers if n is not None))


@dataclass(frozen=True)
class Tick:
    at: float
    actions: tuple[tuple[Any, ...], ...] = ()
    phase: Phase | None = None
    ready: float = 100.0
    stable: bool = True
    stats: str = "healthy"
    cmd: Command | None = None


def restart(state: RolloutState) -> RolloutState:
    """What a controller killed and restarted gets back from the store."""
    return RolloutState.from_dict(json.loads(json.dumps(state.to_dict())))


def run(spec: RolloutSpec, ticks: list[Tick]) -> RolloutState:
    state = RolloutState()
    for i, tick in enumerate(ticks):
        if tick.cmd is not None:
            state = command(restart(state), tick.cmd, tick.at, by="alice")
        snapshot = RolloutSnapshot(tick.ready, tick.stable, STATS[tick.stats])
        decision, state = step(spec, snapshot, tick.at, restart(state))
        assert tuple(summary(a) for a in decision.actions) == tick.actions, f"tick {i}"
        if tick.phase is not None:
            assert state.phase is tick.phase, f"tick {i}: {state.phase}"
        again, same = step(spec, snapshot, tick.at, restart(state))
        assert again.actions == (), f"tick {i}: repeated {again.actions}"
        assert same == state, f"tick {i}: a repeated step changed the state"
    return state


CANARY, SHADOW, PAUSED = Phase.CANARY, Phase.SHADOW, Phase.PAUSED
PROMOTED, ROLLING_BACK, ROLLED_BACK = Phase.PROMOTED, Phase.ROLLING_BACK, Phase.ROLLED_BACK
BACK = (("set_weights", 100.0, 0.0), ("rollback",))

STORIES: dict[str, tuple[RolloutSpec, list[Tick]]] = {
    "a healthy canary is promoted step by step": (
        SPEC,
        [
            Tick(0, (("set_weights", 95.0, 5.0),), CANARY),
            Tick(30, (), CANARY),
            Tick(60, (("set_weights", 50.0, 50.0),), CANARY),
            Tick(120, (("set_weights", 0.0, 100.0),), CANARY),
            Tick(180, (("promote",),), PROMOTED),
            Tick(240, (), PROMOTED),
        ],
    ),
    "weight waits for the canary's replicas": (
        SPEC,
        [
            Tick(0, (("scale_canary", 5.0),), CANARY, ready=0),
            Tick(10, (), CANARY, ready=0),
            Tick(20, (("set_weights", 95.0, 5.0),), CANARY, ready=5),
            Tick(80, (("scale_canary", 50.0),), CANARY, ready=5),
            Tick(90, (("set_weights", 50.0, 50.0),), CANARY, ready=50),
        ],
    ),
    "a failing gate rolls back": (
        SPEC,
        [Tick(0, (("set_weights", 95.0, 5.0),)), Tick(60, BACK, ROLLED_BACK, stats="bad")],
    ),
    "a failing gate only counts at the end of the window": (
        SPEC,
        [Tick(0, (("set_weights", 95.0, 5.0),)), Tick(59, (), CANARY, stats="bad")],
    ),
    "rollback scales stable up before moving weight back": (
        SPEC,
        [
            Tick(0, (("set_weights", 95.0, 5.0),)),
            Tick(60, (("scale_stable",),), ROLLING_BACK, stats="bad", stable=False),
            Tick(65, (), ROLLING_BACK, stats="bad", stable=False),
            Tick(70, BACK, ROLLED_BACK, stats="bad"),
        ],
    ),
    "on_fail=pause holds the weights": (
        PAUSING,
        [
            Tick(0, (("set_weights", 95.0, 5.0),)),
            Tick(60, (), PAUSED, stats="bad"),
            Tick(500, (), PAUSED, stats="healthy"),
        ],
    ),
    "inconclusive holds, then fails after max_duration_s": (
        SPEC,
        [
            Tick(0, (("set_weights", 95.0, 5.0),)),
            Tick(60, (), CANARY, stats="few"),
            Tick(600, (), CANARY, stats="none"),
            Tick(1000, BACK, Phase.FAILED, stats="few"),
        ],
    ),
    "shadow, then canary, then promote": (
        SHADOW_SPEC,
        [
            Tick(0, (("set_shadow", 50.0),), SHADOW, ready=50),
            Tick(60, (("scale_canary", 100.0),), CANARY, ready=50),
            Tick(61, (("set_weights", 0.0, 100.0), ("set_shadow", 0.0)), CANARY),
            Tick(121, (("promote",),), PROMOTED),
        ],
    ),
    "a disagreeing shadow never gets live traffic": (
        SHADOW_SPEC,
        [
            Tick(0, (("set_shadow", 50.0),), SHADOW),
            Tick(60, (("set_shadow", 0.0), ("rollback",)), ROLLED_BACK, stats="disagrees"),
        ],
    ),
    "manual rollback": (
        SPEC,
        [Tick(0, (("set_weights", 95.0, 5.0),)), Tick(10, BACK, ROLLED_BACK, cmd=Command.ROLLBACK)],
    ),
    "manual promote waits for the canary's replicas": (
        SPEC,
        [
            Tick(0, (("set_weights", 95.0, 5.0),), ready=5),
            Tick(10, (("scale_canary", 100.0),), Phase.PROMOTING, ready=5, cmd=Command.PROMOTE),
            Tick(20, (("set_weights", 0.0, 100.0), ("promote",)), PROMOTED),
        ],
    ),
    "pause holds; resume restarts the window and the clock": (
        SPEC,
        [
            Tick(0, (("set_weights", 95.0, 5.0),)),
            Tick(30, (), PAUSED, cmd=Command.PAUSE),
            Tick(900, (), PAUSED, stats="bad"),
            Tick(950, (), CANARY, cmd=Command.RESUME),
            Tick(1000, (), CANARY),  # the window began again at 950
            Tick(1010, (("set_weights", 50.0, 50.0),), CANARY),
        ],
    ),
}


@pytest.mark.parametrize("story", STORIES, ids=list(STORIES))
def test_story(story: str) -> None:
    spec, ticks = STORIES[story]
    run(spec, ticks)


def test_the_history_tells_the_story() -> None:
    state = run(SPEC, [Tick(0, (("set_weights", 95.0, 5.0),)), Tick(60, BACK, stats="bad")])
    messages = [e.message for e in state.history]
    assert messages[0] == "rollout to fraud:8 started (canary)"
    assert messages[1] == "step 1 of 3: canary 5% for 60s"
    assert messages[2].startswith("gates failed at step 1: error_rate: error rate 10.00%")
    assert messages[2].endswith("; rolling back")
    assert messages[3] == "rolled back fraud:8"
    assert {g.name: g.outcome.value for g in state.gates} == {
        "min_samples": "pass",
        "error_rate": "fail",
    }


def test_timeout_names_the_inconclusive_gates() -> None:
    ticks = [Tick(0, (("set_weights", 95.0, 5.0),)), Tick(60, stats="few")]
    state = run(SPEC, [*ticks, Tick(1000, BACK, stats="few")])
    assert "gates inconclusive too long (min_samples, error_rate)" in state.history[-2].message


def test_stats_from_before_the_step_are_not_judged() -> None:
    state = run(SPEC, [Tick(0, (("set_weights", 95.0, 5.0),))])
    stale = WindowStats(HEALTHY.canary, HEALTHY.stable, since=-10.0)
    decision, state = step(SPEC, RolloutSnapshot(100, True, stale), 60, state)
    assert decision.actions == ()
    assert decision.gates[0].reason == "stats were counted from before the step began"


@pytest.mark.parametrize(
    ("phase", "cmd"),
    [
        (Phase.PROMOTED, Command.ROLLBACK),
        (Phase.ROLLED_BACK, Command.PROMOTE),
        (Phase.ROLLING_BACK, Command.PROMOTE),
        (Phase.FAILED, Command.PAUSE),
        (Phase.ROLLING_BACK, Command.PAUSE),
    ],
)
def test_commands_that_contradict_the_phase_conflict(phase: Phase, cmd: Command) -> None:
    with pytest.raises(Conflict, match=f"cannot {cmd.value} a rollout that is {phase.value}"):
        command(RolloutState(phase=phase), cmd, 0.0)


@pytest.mark.parametrize(
    ("phase", "cmd"),
    [
        (Phase.PAUSED, Command.PAUSE),
        (Phase.CANARY, Command.RESUME),
        (Phase.ROLLING_BACK, Command.ROLLBACK),
        (Phase.ROLLED_BACK, Command.ROLLBACK),
        (Phase.PROMOTED, Command.PROMOTE),
    ],
)
def test_repeated_commands_change_nothing(phase: Phase, cmd: Command) -> None:
    state = RolloutState(phase=phase)
    assert command(state, cmd, 0.0) is state


def test_wanted_canary_weight_follows_the_phase() -> None:
    assert wanted_canary_weight(SHADOW_SPEC, RolloutState(phase=Phase.SHADOW)) == 50
    assert wanted_canary_weight(SPEC, RolloutState(phase=Phase.CANARY, step=1)) == 50
    assert wanted_canary_weight(SPEC, RolloutState(phase=Phase.PROMOTING)) == 100
    assert wanted_canary_weight(SPEC, RolloutState(phase=Phase.ROLLED_BACK)) == 0


events = st.tuples(
    st.sampled_from([0.0, 1.0, 30.0, 61.0, 400.0]),
    st.sampled_from([0.0, 5.0, 50.0, 100.0]),
    st.booleans(),
    st.sampled_from(sorted(STATS)),
    st.sampled_from([None, None, None, *Command]),
)


@settings(max_examples=150, deadline=None)
@given(st.sampled_from([SPEC, SHADOW_SPEC, PAUSING]), st.lists(events, max_size=25))
def test_no_unready_weight_and_never_both_ends(
    spec: RolloutSpec, sequence: list[tuple[float, float, bool, str, Command | None]]
) -> None:
    state, now, ends = RolloutState(), 0.0, []
    for dt, ready, stable_ready, stats, cmd in sequence:
        now += dt
        if cmd is not None:
            with contextlib.suppress(Conflict):
                state = command(state, cmd, now)
        snapshot = RolloutSnapshot(ready, stable_ready, STATS[stats])
        before = state.weights
        decision, state = step(spec, snapshot, now, restart(state))
        for action in decision.actions:
            if action.kind is ActionKind.SET_WEIGHTS:
                assert action.canary_weight is not None
                assert action.canary_weight == 0 or action.canary_weight <= ready
                if action.canary_weight < before[1]:
                    assert stable_ready, "weight moved back to an unready stable"
            if action.kind in (ActionKind.PROMOTE, ActionKind.ROLLBACK):
                ends.append(action.kind)
        assert step(spec, snapshot, now, restart(state))[0].actions == ()
    assert len(ends) <= 1, ends
