"""The autoscaler against a real SQLite store and a fake gateway: scale up with an audit
event, panic mode, the tier's floor, and endpoints that did not opt in."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from modelplane.controlplane.autoscaler import (
    ACTOR,
    AUTOSCALE_LABEL,
    MAX_REPLICAS_LABEL,
    TARGET_LABEL,
    Autoscaler,
    Load,
    scale_config,
)
from modelplane.errors import InvalidSpec
from modelplane.registry.service import Registry, open_registry
from modelplane.spec.endpoint import Endpoint
from modelplane.spec.policy import DEFAULT_TIERS, Policy, TierRule
from modelplane.store.resources import ResourceStore
from modelplane.types import FakeClock

pytestmark = pytest.mark.timeout(60)


class FakeGateway:
    """Loads per endpoint; ``follow`` makes it run what the spec says, as the controller would."""

    def __init__(self, registry: Registry) -> None:
        self.store = ResourceStore(registry.engine)
        self.concurrency: dict[str, float] = {}

    def load(self, endpoint: str) -> Load | None:
        if endpoint not in self.concurrency:
            return None
        replicas = self.store.get("Endpoint", endpoint).spec["replicas"]
        return Load(self.concurrency[endpoint], replicas, replicas)


@pytest.fixture
def registry(tmp_path: Path) -> Iterator[Registry]:
    registry = open_registry(f"sqlite:///{tmp_path}/state.db", str(tmp_path / "art"), actor="alice")
    yield registry
    registry.close()


def endpoint(
    registry: Registry, name: str, *, replicas: int = 1, tier: str = "standard", **labels: str
) -> None:
    spec: dict[str, Any] = {
        "kind": "Endpoint",
        "name": name,
        "team": "risk",
        "tier": tier,
        "replicas": replicas,
        "labels": {AUTOSCALE_LABEL: "true", **labels},
        "contract": {"name": name, "inputs": [{"name": "a", "dtype": "float64"}]},
        "routes": [{"model": "fraud:1"}],
    }
    document = Endpoint.model_validate(spec).model_dump(mode="json")
    ResourceStore(registry.engine).apply("Endpoint", name, document, actor="alice")


def replicas(registry: Registry, name: str) -> int:
    return int(ResourceStore(registry.engine).get("Endpoint", name).spec["replicas"])


def scaled(registry: Registry, name: str) -> list[str]:
    events = registry.audit_events(subject=f"Endpoint/{name}", actor=ACTOR, limit=100)
    return [e.reason for e in reversed(events)]


def passes(scaler: Autoscaler, clock: FakeClock, count: int) -> None:
    for _ in range(count):
        asyncio.run(scaler.reconcile())
        clock.advance(1.0)


def test_scales_up_on_high_concurrency_with_an_audit_event(registry: Registry) -> None:
    endpoint(registry, "fraud", replicas=3)
    clock, gateway = FakeClock(), FakeGateway(registry)
    gateway.concurrency["fraud"] = 40.0  # 40 in flight at a target of 10: four replicas
    passes(Autoscaler(registry, gateway, clock=clock), clock, 1)
    assert replicas(registry, "fraud") == 4
    [reason] = scaled(registry, "fraud")
    assert reason.startswith("autoscale 3 -> 4: concurrency 40 over 3 ready, target 10")
    assert "stable mode" in reason
    [event] = registry.audit_events(subject="Endpoint/fraud", actor=ACTOR)
    assert (event.before["replicas"], event.after["replicas"]) == (3, 4)


def test_panic_scales_on_the_burst_and_holds_while_it_lasts(registry: Registry) -> None:
    endpoint(registry, "fraud", replicas=1)
    clock, gateway = FakeClock(), FakeGateway(registry)
    scaler = Autoscaler(registry, gateway, clock=clock)
    gateway.concurrency["fraud"] = 2.0
    passes(scaler, clock, 30)
    assert replicas(registry, "fraud") == 1
    gateway.concurrency["fraud"] = 80.0
    passes(scaler, clock, 1)
    assert replicas(registry, "fraud") > 1
    assert "panic mode" in scaled(registry, "fraud")[0]
    peak = replicas(registry, "fraud")
    gateway.concurrency["fraud"] = 0.0
    passes(scaler, clock, 30)  # within the stable window of the last trigger: no scale down
    assert replicas(registry, "fraud") >= peak
    passes(scaler, clock, 120)
    assert replicas(registry, "fraud") == 1


def test_never_below_the_tier_floor(registry: Registry) -> None:
    tiers = tuple(t for t in DEFAULT_TIERS if t.name != "critical")
    critical = TierRule(name="critical", priority=1000, scale_to_zero=False, min_warm_replicas=2)
    policy = Policy(tiers=(critical, *tiers)).model_dump(mode="json")
    ResourceStore(registry.engine).apply("Policy", "default", policy, actor="alice")
    endpoint(registry, "pay", replicas=4, tier="critical")
    endpoint(registry, "ads", replicas=4, tier="batch")
    clock, gateway = FakeClock(), FakeGateway(registry)
    gateway.concurrency |= {"pay": 0.0, "ads": 0.0}
    passes(Autoscaler(registry, gateway, clock=clock), clock, 200)
    assert replicas(registry, "pay") == 2
    assert replicas(registry, "ads") == 1  # an endpoint keeps one replica: no activator yet
    assert len(scaled(registry, "pay")) == 1  # 4 -> 2 (rate-limited to halving), then steady


def test_only_opted_in_endpoints_and_only_once_the_gateway_caught_up(
    registry: Registry,
) -> None:
    endpoint(registry, "fraud", replicas=1)
    spec = ResourceStore(registry.engine).get("Endpoint", "fraud").spec
    manual = {**spec, "name": "manual", "labels": {}}
    ResourceStore(registry.engine).apply("Endpoint", "manual", manual, actor="alice")
    clock = FakeClock()

    class Lagging(FakeGateway):
        def load(self, endpoint: str) -> Load | None:
            return Load(100.0, 1, 1)  # still runs one replica, whatever the spec says

    scaler = Autoscaler(registry, Lagging(registry), clock=clock)
    passes(scaler, clock, 5)
    assert replicas(registry, "manual") == 1
    assert replicas(registry, "fraud") > 1
    assert len(scaled(registry, "fraud")) == 1  # the first change is not judged again


def test_labels_bound_and_tune_it() -> None:
    def make(**labels: str) -> Endpoint:
        return Endpoint.model_validate(
            {
                "name": "e",
                "team": "t",
                "labels": labels,
                "contract": {"name": "e", "inputs": [{"name": "a", "dtype": "float64"}]},
                "routes": [{"model": "m:1"}],
            }
        )

    config = scale_config(make(**{MAX_REPLICAS_LABEL: "3", TARGET_LABEL: "2.5"}), Policy())
    assert (config.min_replicas, config.max_replicas, config.target_concurrency) == (1, 3, 2.5)
    for bad in ({TARGET_LABEL: "fast"}, {TARGET_LABEL: "0"}, {MAX_REPLICAS_LABEL: "0"}):
        with pytest.raises(InvalidSpec):
            scale_config(make(**bad), Policy())


def test_a_bad_label_leaves_the_endpoint_alone(registry: Registry) -> None:
    endpoint(registry, "fraud", replicas=1, **{TARGET_LABEL: "lots"})
    clock, gateway = FakeClock(), FakeGateway(registry)
    gateway.concurrency["fraud"] = 500.0
    passes(Autoscaler(registry, gateway, clock=clock), clock, 3)
    assert replicas(registry, "fraud") == 1


def test_run_stops_when_asked(registry: Registry) -> None:
    endpoint(registry, "fraud", replicas=1)
    gateway = FakeGateway(registry)
    gateway.concurrency["fraud"] = 50.0
    scaler = Autoscaler(registry, gateway)

    async def main() -> None:
        stop = asyncio.Event()
        task = asyncio.create_task(scaler.run(stop, interval_s=0.05))
        await asyncio.sleep(0.3)
        stop.set()
        await asyncio.wait_for(task, timeout=5)

    asyncio.run(main())
    assert replicas(registry, "fraud") > 1
