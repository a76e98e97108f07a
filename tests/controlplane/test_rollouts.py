"""The rollout controller against a real SQLite store and registry, with a fake serving
target and fake route evidence: promote, gate rollback, manual rollback, restart."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from sklearn.linear_model import LogisticRegression

from modelplane.controlplane.apply import Applier
from modelplane.controlplane.rollouts import (
    KIND,
    RolloutController,
    record_command,
    rollback_traffic,
    start_rollout,
)
from modelplane.core.drift import Histogram
from modelplane.core.gates import ArmStats, ShadowStats
from modelplane.core.rollout import Command, Phase
from modelplane.errors import Conflict
from modelplane.registry.build import package
from modelplane.registry.service import Registry, open_registry
from modelplane.spec.rollout import CanaryStep, ErrorRateGate, MinSamplesGate, RolloutSpec
from modelplane.store.resources import ResourceStore
from modelplane.types import FakeClock

pd = pytest.importorskip("pandas")
pytestmark = pytest.mark.timeout(60)

ENDPOINT = "fraud-score"
STABLE, CANARY = "fraud@champion", "fraud:2"
BOUNDS = (10.0, 100.0, float("inf"))


class FakeEvidence:
    """Cumulative counters per route, moved by the test as traffic would."""

    def __init__(self) -> None:
        self.ready: set[str] = set()
        self.arms: dict[str, ArmStats] = {}
        self.shadows: dict[str, ShadowStats] = {}

    def route_ready(self, endpoint: str, model: str) -> bool:
        return model in self.ready

    def route_stats(self, endpoint: str, model: str) -> ArmStats | None:
        return self.arms.get(model)

    def shadow_stats(self, endpoint: str, model: str) -> ShadowStats | None:
        return self.shadows.get(model)

    def serve(self, model: str, requests: int, errors: int = 0) -> None:
        old = self.arms.get(model, ArmStats(latency_ms=Histogram(BOUNDS, (0, 0, 0))))
        assert old.latency_ms is not None
        fast, mid, slow = old.latency_ms.counts
        self.arms[model] = ArmStats(
            old.requests + requests,
            old.errors + errors,
            Histogram(BOUNDS, (fast + requests, mid, slow)),
        )


@pytest.fixture
def registry(tmp_path: Path) -> Iterator[Registry]:
    registry = open_registry(f"sqlite:///{tmp_path}/state.db", str(tmp_path / "art"), actor="alice")
    frame = pd.DataFrame(np.random.default_rng(5).normal(size=(30, 2)), columns=["a", "b"])
    for version, c in enumerate((1.0, 0.1), start=1):
        model = LogisticRegression(C=c).fit(frame, (frame["a"] > 0).astype(int))
        built = package(model, name="fraud", output_dir=tmp_path / f"p{version}",
                        sample_input=frame.head())  # fmt: skip
        registry.push(built.path)
    registry.set_alias("fraud", "champion", 1)
    endpoint = {
        "kind": "Endpoint",
        "name": ENDPOINT,
        "team": "risk",
        "contract": {
            "name": ENDPOINT,
            "inputs": [{"name": "a", "dtype": "float64"}, {"name": "b", "dtype": "float64"}],
        },
        "routes": [{"model": STABLE}],
    }
    Applier(registry, ResourceStore(registry.engine), actor="alice").apply_all([endpoint])
    yield registry
    registry.close()


def spec(**overrides: Any) -> RolloutSpec:
    steps = (CanaryStep(weight=10, hold_s=10), CanaryStep(weight=100, hold_s=10))
    gates = (MinSamplesGate(requests=10, name="samples"), ErrorRateGate(max_rate=0.02))
    return RolloutSpec.model_validate(
        {"endpoint": ENDPOINT, "to": CANARY, "steps": steps, "gates": gates, **overrides}
    )


def routes(registry: Registry) -> list[tuple[str, float]]:
    endpoint = ResourceStore(registry.engine).get("Endpoint", ENDPOINT).spec
    return [(r["model"], r["weight"]) for r in endpoint["routes"]]


def actions(registry: Registry) -> list[str]:
    events = registry.audit_events(subject=f"Rollout/{ENDPOINT}", limit=1000)
    return [e.action for e in reversed(events) if e.action != "rollout.decision"]


def started(registry: Registry, clock: FakeClock, evidence: FakeEvidence) -> RolloutController:
    """A rollout at its first step: canary ready, 10% weight, the window open."""
    start_rollout(registry, spec(), actor="alice", now=clock.wall())
    controller = RolloutController(registry, evidence, clock=clock)
    assert controller.reconcile_one(ENDPOINT).phase is Phase.CANARY
    assert routes(registry) == [(STABLE, 100.0), (CANARY, 0.0)]  # warm, no weight
    evidence.ready |= {STABLE, CANARY}
    clock.advance(1)
    state = controller.reconcile_one(ENDPOINT)
    assert state.step_started_at == clock.wall()
    assert routes(registry) == [(STABLE, 90.0), (CANARY, 10.0)]
    return controller


def test_healthy_canary_is_promoted_and_the_alias_moves(registry: Registry) -> None:
    clock, evidence = FakeClock(), FakeEvidence()
    evidence.serve(STABLE, 500)  # before the step: not part of its window
    controller = started(registry, clock, evidence)
    evidence.serve(STABLE, 180)
    evidence.serve(CANARY, 20)
    clock.advance(11)
    assert controller.reconcile_one(ENDPOINT).step == 1
    assert routes(registry) == [(STABLE, 0.0), (CANARY, 100.0)]
    evidence.serve(CANARY, 200)
    clock.advance(11)
    assert controller.reconcile_one(ENDPOINT).phase is Phase.PROMOTED
    assert routes(registry) == [(CANARY, 100.0)]
    assert registry.get("fraud@champion").version == 2
    alias = registry.audit_events(action="alias.set", limit=1)[0]
    assert alias.actor == "rollout-controller"
    assert actions(registry)[-2:] == ["rollout.set_weights", "rollout.promote"]
    status = ResourceStore(registry.engine).get(KIND, ENDPOINT).status
    assert status is not None
    assert status["settled"] is True
    run_pass(controller)  # settled: nothing more happens
    assert routes(registry) == [(CANARY, 100.0)]


def run_pass(controller: RolloutController) -> None:
    asyncio.run(asyncio.wait_for(controller.reconcile(), timeout=30))


def test_error_gate_rolls_back_with_readings_in_the_audit_log(registry: Registry) -> None:
    clock, evidence = FakeClock(), FakeEvidence()
    controller = started(registry, clock, evidence)
    evidence.serve(STABLE, 900, errors=1)
    evidence.serve(CANARY, 100, errors=5)
    clock.advance(11)
    assert controller.reconcile_one(ENDPOINT).phase is Phase.ROLLED_BACK
    assert routes(registry) == [(STABLE, 100.0)]
    assert registry.get("fraud@champion").version == 1
    decisions = registry.audit_events(action="rollout.decision", limit=100)
    failed = next(e for e in decisions if "gates failed" in e.reason)
    readings = {g["name"]: g["reading"] for g in failed.after["gates"]}
    assert readings["error_rate"]["canary_error_rate"] == pytest.approx(0.05)
    assert "rollout.rollback" in actions(registry)


def test_the_running_steps_readings_are_kept_in_the_status(registry: Registry) -> None:
    clock, evidence = FakeClock(), FakeEvidence()
    controller = started(registry, clock, evidence)
    evidence.serve(STABLE, 90)
    evidence.serve(CANARY, 4)
    clock.advance(4)  # inside the 10 s hold: not judged, but read
    controller.reconcile_one(ENDPOINT)
    status = ResourceStore(registry.engine).get(KIND, ENDPOINT).status
    assert status is not None
    assert status["state"]["gates"] == []
    readings = status["readings"]
    assert (readings["step"], readings["at"] - readings["since"]) == (1, 4.0)
    gates = {g["name"]: g for g in readings["gates"]}
    assert gates["samples"]["outcome"] == "inconclusive"
    assert gates["samples"]["reading"]["requests"] == 4
    evidence.serve(CANARY, 20)
    clock.advance(7)  # the hold ends: judged, passed, on to step 2 with no readings yet
    assert controller.reconcile_one(ENDPOINT).step == 1
    status = ResourceStore(registry.engine).get(KIND, ENDPOINT).status
    assert status is not None
    assert status["readings"] is None


def test_manual_rollback_moves_traffic_at_once(registry: Registry) -> None:
    clock, evidence = FakeClock(), FakeEvidence()
    controller = started(registry, clock, evidence)
    record_command(registry.engine, ENDPOINT, Command.ROLLBACK, actor="bob", now=clock.wall())
    # what the CLI does before returning: traffic on stable without waiting for a pass
    assert rollback_traffic(registry.engine, ENDPOINT, actor="bob")
    assert routes(registry) == [(STABLE, 100.0)]
    assert not rollback_traffic(registry.engine, ENDPOINT, actor="bob")  # already there
    [moved] = [e for e in registry.audit_events(action="endpoint.apply") if e.actor == "bob"]
    assert moved.reason == "rollback: all traffic to stable"
    with pytest.raises(Conflict):
        record_command(registry.engine, ENDPOINT, Command.PROMOTE, actor="bob", now=clock.wall())
    clock.advance(1)
    state = controller.reconcile_one(ENDPOINT)
    assert state.phase is Phase.ROLLED_BACK
    assert any(e.message == "rollback by bob" for e in state.history)
    assert routes(registry) == [(STABLE, 100.0)]
    with pytest.raises(Conflict):
        start_rollout(registry, spec(to=STABLE), actor="alice", now=clock.wall())


def test_restart_mid_step_repeats_nothing_and_continues(registry: Registry) -> None:
    clock, evidence = FakeClock(), FakeEvidence()
    started(registry, clock, evidence)
    generation = ResourceStore(registry.engine).get("Endpoint", ENDPOINT).generation
    recorded = actions(registry)
    evidence.serve(STABLE, 90)
    evidence.serve(CANARY, 10)
    clock.advance(3)
    restarted = RolloutController(registry, evidence, clock=clock)
    state = restarted.reconcile_one(ENDPOINT)
    assert (state.phase, state.step) == (Phase.CANARY, 0)
    assert actions(registry) == recorded
    assert ResourceStore(registry.engine).get("Endpoint", ENDPOINT).generation == generation
    clock.advance(8)
    assert restarted.reconcile_one(ENDPOINT).step == 1  # the window survived the restart
    weights = registry.audit_events(action="rollout.set_weights", limit=100)
    assert [e.after["canary_weight"] for e in reversed(weights)] == [10.0, 100.0]


def test_commands_say_when_they_change_nothing_and_how_to_go_back(registry: Registry) -> None:
    clock, evidence = FakeClock(), FakeEvidence()
    controller = started(registry, clock, evidence)
    # a second rollout while one runs names the one in progress and what to do
    with pytest.raises(Conflict, match=r"in progress \(fraud@champion -> fraud:2, canary\)"):
        start_rollout(registry, spec(), actor="alice", now=clock.wall())
    engine = registry.engine
    resumed = record_command(engine, ENDPOINT, Command.RESUME, actor="bob", now=clock.wall())
    assert not resumed.changed  # not paused: nothing to resume, nothing recorded
    assert "resume rollout" not in [e.reason for e in registry.audit_events()]
    paused = record_command(
        engine, ENDPOINT, Command.PAUSE, actor="bob", now=clock.wall(), reason="incident 42"
    )
    assert paused.changed
    assert paused.state.phase is Phase.PAUSED
    assert any(e.reason == "pause rollout: incident 42" for e in registry.audit_events())
    record_command(engine, ENDPOINT, Command.PROMOTE, actor="bob", now=clock.wall())
    clock.advance(1)
    controller.reconcile_one(ENDPOINT)
    clock.advance(1)
    assert controller.reconcile_one(ENDPOINT).phase is Phase.PROMOTED
    with pytest.raises(Conflict) as info:
        record_command(engine, ENDPOINT, Command.ROLLBACK, actor="bob", now=clock.wall())
    assert "modelplane rollout fraud-score --to fraud@champion" in info.value.message
