"""Live degradation against a real SQLite store and a fake gateway: overload freezes the
moving rollouts (audited), calm resumes only what the degrader paused."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from modelplane.controlplane.autoscaler import Load
from modelplane.controlplane.degrader import ACTOR, Degrader, measure_overload
from modelplane.core.rollout import Phase, RolloutState
from modelplane.registry.service import Registry, open_registry
from modelplane.spec.endpoint import Endpoint
from modelplane.spec.policy import DegradationPolicy, DegradationStep, Policy
from modelplane.store.resources import ResourceStore
from modelplane.types import FakeClock

pytestmark = pytest.mark.timeout(60)


class FakeGateway:
    def __init__(self) -> None:
        self.loads: dict[str, Load] = {}
        self.modes: list[tuple[frozenset[str], frozenset[str]]] = []

    def load(self, endpoint: str) -> Load | None:
        return self.loads.get(endpoint)

    def degrade(self, shed_tiers: frozenset[str], fallback_tiers: frozenset[str]) -> None:
        self.modes.append((shed_tiers, fallback_tiers))


@pytest.fixture
def registry(tmp_path: Path) -> Iterator[Registry]:
    registry = open_registry(f"sqlite:///{tmp_path}/state.db", str(tmp_path / "art"), actor="alice")
    yield registry
    registry.close()


def endpoint_spec(name: str) -> dict[str, Any]:
    return Endpoint.model_validate(
        {
            "name": name,
            "team": "risk",
            "contract": {"name": name, "inputs": [{"name": "a", "dtype": "float64"}]},
            "routes": [{"model": "fraud:1"}],
        }
    ).model_dump(mode="json")


def rollout(
    store: ResourceStore, name: str, phase: Phase, commands: list[Any] | None = None
) -> None:
    """A rollout as the rollout controller leaves it: every command seen."""
    commands = commands or []
    spec = {"rollout": {}, "stable": "fraud:1", "requested_at": 0.0, "commands": commands}
    store.apply("Rollout", name, spec, actor="alice")
    state = RolloutState(phase=phase).to_dict()
    store.set_status("Rollout", name, {"state": state, "commands_seen": len(commands)})


def controller_sees(store: ResourceStore, name: str, phase: Phase) -> None:
    resource = store.get("Rollout", name)
    status = {"state": RolloutState(phase=phase).to_dict(),
              "commands_seen": len(resource.spec["commands"])}  # fmt: skip
    store.set_status("Rollout", name, status)


def commands(store: ResourceStore, name: str) -> list[tuple[str, str]]:
    return [(c["command"], c["by"]) for c in store.get("Rollout", name).spec["commands"]]


def test_overload_freezes_canaries_and_calm_resumes_them(registry: Registry) -> None:
    store = ResourceStore(registry.engine)
    clock, gateway = FakeClock(), FakeGateway()
    degrader = Degrader(registry, gateway, clock=clock)
    for name in ("fraud", "ads"):
        store.apply("Endpoint", name, endpoint_spec(name), actor="alice")
    rollout(store, "fraud", Phase.CANARY)
    rollout(store, "ads", Phase.PAUSED, [{"command": "pause", "by": "bob", "at": 0.0}])
    gateway.loads["fraud"] = Load(60.0, 2, 2)  # 60 in flight, 2 x 10 capacity: overload 3
    assert asyncio.run(degrader.reconcile()) is None  # no policy applied: nothing happens
    degradation = DegradationPolicy(
        steps=(DegradationStep.FREEZE_CANARIES,), exit_overload=0.5, min_hold_s=10.0
    )
    policy = Policy(degradation=degradation).model_dump(mode="json")
    store.apply("Policy", "default", policy, actor="alice")

    decision = asyncio.run(degrader.reconcile())
    assert decision is not None
    assert decision.active == (DegradationStep.FREEZE_CANARIES,)
    assert commands(store, "fraud") == [("pause", ACTOR)]
    [event] = registry.audit_events(action="degradation.enter")
    assert (event.actor, event.subject) == (ACTOR, "Policy/default")
    assert event.after["overload"] == 3.0
    assert event.after["effects"]["freeze_canaries"]
    controller_sees(store, "fraud", Phase.PAUSED)

    gateway.loads["fraud"] = Load(1.0, 2, 2)
    clock.advance(5.0)
    asyncio.run(degrader.reconcile())  # calm, but the step is held at least 10 s
    assert commands(store, "fraud") == [("pause", ACTOR)]
    clock.advance(6.0)
    decision = asyncio.run(degrader.reconcile())
    assert decision is not None
    assert decision.active == ()
    assert commands(store, "fraud") == [("pause", ACTOR), ("resume", ACTOR)]
    assert commands(store, "ads") == [("pause", "bob")]  # a person's pause is theirs to undo
    assert len(registry.audit_events(action="degradation.exit")) == 1


def test_a_restarted_degrader_resumes_what_it_paused(registry: Registry) -> None:
    store = ResourceStore(registry.engine)
    store.apply("Policy", "default", Policy().model_dump(mode="json"), actor="alice")
    rollout(store, "fraud", Phase.PAUSED, [{"command": "pause", "by": ACTOR, "at": 0.0}])
    asyncio.run(Degrader(registry, FakeGateway(), clock=FakeClock()).reconcile())
    assert commands(store, "fraud") == [("pause", ACTOR), ("resume", ACTOR)]


def test_overload_is_in_flight_over_ready_capacity() -> None:
    gateway = FakeGateway()
    endpoints = [Endpoint.model_validate(endpoint_spec(n)) for n in ("a", "b", "c")]
    gateway.loads |= {"a": Load(10.0, 1, 1), "b": Load(5.0, 0, 1)}  # c is not served
    assert measure_overload(endpoints, Policy(), gateway) == pytest.approx(15.0 / 20.0)
    assert measure_overload([], Policy(), gateway) == 0.0


def test_shedding_and_fallbacks_reach_the_gateway_and_end_with_calm(registry: Registry) -> None:
    store = ResourceStore(registry.engine)
    clock, gateway = FakeClock(), FakeGateway()
    degrader = Degrader(registry, gateway, target=gateway, clock=clock)
    store.apply("Endpoint", "fraud", endpoint_spec("fraud"), actor="alice")
    steps = (DegradationStep.FALLBACKS_FOR_STANDARD, DegradationStep.SHED_BATCH)
    degradation = DegradationPolicy(steps=steps, exit_overload=0.5, min_hold_s=0.0)
    store.apply("Policy", "default", Policy(degradation=degradation).model_dump(mode="json"),
                actor="alice")  # fmt: skip
    gateway.loads["fraud"] = Load(100.0, 1, 1)
    for _ in range(len(steps)):  # one step per pass
        clock.advance(1.0)
        asyncio.run(degrader.reconcile())
    assert gateway.modes[-1] == (frozenset({"batch"}), frozenset({"standard"}))
    gateway.loads["fraud"] = Load(0.0, 1, 1)
    for _ in range(len(steps)):
        clock.advance(1.0)
        asyncio.run(degrader.reconcile())
    assert gateway.modes[-1] == (frozenset(), frozenset())
