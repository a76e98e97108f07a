"""The endpoint controller against a real store and registry, and a recording target."""

from __future__ import annotations

import asyncio
from collections.abc import Collection, Iterator
from pathlib import Path

import numpy as np
import pytest
from sklearn.linear_model import LogisticRegression

from modelplane.controlplane.apply import Applier
from modelplane.controlplane.endpoints import EndpointController, EndpointPlan, ServedEndpoint
from modelplane.errors import WorkerFailed
from modelplane.registry.build import package
from modelplane.registry.digest import verify_package
from modelplane.registry.service import Registry, open_registry
from modelplane.store.resources import ResourceStore
from modelplane.types import FakeClock

pd = pytest.importorskip("pandas")


class RecordingTarget:
    """Serves plans in memory; an endpoint named in ``broken`` fails to start, one named
    in ``held`` starts only once its event is set (a model that warms up for minutes)."""

    def __init__(self) -> None:
        self.calls: list[EndpointPlan] = []
        self.serving: dict[str, EndpointPlan] = {}
        self.up: set[str] = set()
        self.expected: set[str] = set()
        self.broken: set[str] = set()
        self.held: dict[str, asyncio.Event] = {}

    def expect(self, endpoints: Collection[str]) -> None:
        self.expected = set(endpoints)

    async def put(self, plan: EndpointPlan) -> None:
        name = plan.endpoint.name
        self.calls.append(plan)
        if name in self.held:
            await self.held[name].wait()
        if name in self.broken:
            raise WorkerFailed(f"no replica of {name} became ready: model failed to load")
        self.serving[name] = plan

    async def remove(self, endpoint: str) -> None:
        self.serving.pop(endpoint, None)

    def served(self, endpoint: str) -> ServedEndpoint | None:
        plan = self.serving.get(endpoint)
        if plan is None:
            return None
        routes = tuple(
            (r.model, plan.models[r.model].label, r.weight) for r in plan.endpoint.routes
        )
        return ServedEndpoint(routes, ready=endpoint in self.up)


@pytest.fixture
def registry(tmp_path: Path) -> Iterator[Registry]:
    registry = open_registry(f"sqlite:///{tmp_path}/state.db", str(tmp_path / "art"), actor="alice")
    frame = pd.DataFrame(np.random.default_rng(5).normal(size=(30, 2)), columns=["a", "b"])
    for version, c in enumerate((1.0, 0.1), start=1):
        model = LogisticRegression(C=c).fit(frame, (frame["a"] > 0).astype(int))
        registry.push(
            package(
                model, name="fraud", output_dir=tmp_path / f"p{version}", sample_input=frame.head()
            ).path
        )
    registry.set_alias("fraud", "champion", 1)
    yield registry
    registry.close()


def endpoint_doc(route: str = "fraud@champion") -> dict[str, object]:
    return {
        "kind": "Endpoint",
        "name": "fraud-score",
        "team": "risk",
        "contract": {
            "name": "fraud-score",
            "inputs": [{"name": "a", "dtype": "float64"}, {"name": "b", "dtype": "float64"}],
        },
        "routes": [{"model": route}],
    }


def run(coro: object) -> None:
    asyncio.run(asyncio.wait_for(coro, timeout=60))  # type: ignore[arg-type]


def test_reconcile_serves_pinned_versions_and_reports_status(
    registry: Registry, tmp_path: Path
) -> None:
    Applier(registry, ResourceStore(registry.engine), actor="alice").apply_all([endpoint_doc()])
    target = RecordingTarget()
    controller = EndpointController(registry, target, tmp_path / "cache")
    run(controller.reconcile())
    [plan] = target.calls
    model = plan.models["fraud@champion"]
    assert model.label == "fraud:1"
    assert verify_package(model.directory).digest == model.digest
    status = ResourceStore(registry.engine).get("Endpoint", "fraud-score").status
    assert status is not None
    ready, synced = status["conditions"]
    assert (ready["type"], ready["status"], ready["reason"]) == ("Ready", "False", "NoReadyReplica")
    assert (synced["type"], synced["status"], synced["reason"]) == ("Synced", "True", "Current")

    # moving the alias does not change what runs: the endpoint pinned fraud:1 when applied
    registry.set_alias("fraud", "champion", 2)
    target.up.add("fraud-score")
    run(controller.reconcile())
    assert len(target.calls) == 1
    status = ResourceStore(registry.engine).get("Endpoint", "fraud-score").status
    assert status is not None
    assert status["serving"] == {"fraud@champion": "fraud:1"}
    assert status["conditions"][0]["status"] == "True"

    # a new generation (here: a new route) is served on the next pass
    Applier(registry, ResourceStore(registry.engine), actor="alice").apply_all(
        [endpoint_doc("fraud:2")]
    )
    run(controller.reconcile())
    assert target.calls[-1].models["fraud:2"].label == "fraud:2"


def test_a_deleted_endpoint_stops_being_served(registry: Registry, tmp_path: Path) -> None:
    resources = ResourceStore(registry.engine)
    Applier(registry, resources, actor="alice").apply_all([endpoint_doc()])
    target = RecordingTarget()
    controller = EndpointController(registry, target, tmp_path / "cache")
    run(controller.reconcile())
    resources.delete("Endpoint", "fraud-score", actor="alice")
    run(controller.reconcile())
    assert target.serving == {}


def test_run_stops_when_asked(registry: Registry, tmp_path: Path) -> None:
    controller = EndpointController(registry, RecordingTarget(), tmp_path / "cache")

    async def scenario() -> None:
        stop = asyncio.Event()
        task = asyncio.create_task(controller.run(stop, interval_s=0.05))
        await asyncio.sleep(0.2)
        stop.set()
        await asyncio.wait_for(task, timeout=5)

    run(scenario())


def named(doc: dict[str, object], name: str) -> dict[str, object]:
    return {**doc, "name": name}


def conditions(registry: Registry, name: str) -> dict[str, dict[str, object]]:
    status = ResourceStore(registry.engine).get("Endpoint", name).status or {}
    return {c["type"]: c for c in status.get("conditions", [])}


def test_one_broken_endpoint_blocks_no_other_change(registry: Registry, tmp_path: Path) -> None:
    applier = Applier(registry, ResourceStore(registry.engine), actor="alice")
    applier.apply_all([endpoint_doc("fraud:1"), named(endpoint_doc("fraud:1"), "broken")])
    target = RecordingTarget()
    target.broken.add("broken")
    clock = FakeClock()
    controller = EndpointController(registry, target, tmp_path / "cache", clock=clock)
    run(controller.reconcile())
    assert target.served("fraud-score") is not None
    assert target.served("broken") is None
    ready = conditions(registry, "broken")["Ready"]
    assert (ready["status"], ready["reason"]) == ("False", "StartFailed")
    assert "model failed to load" in str(ready["message"])

    # a change to the healthy endpoint goes through on the next pass
    applier.apply_all([endpoint_doc("fraud:2")])
    run(controller.reconcile())
    served = target.served("fraud-score")
    assert served is not None
    assert served.routes[0][1] == "fraud:2"

    # the broken one is retried with backoff, not on every pass
    tries = [p.endpoint.name for p in target.calls].count("broken")
    run(controller.reconcile())
    assert [p.endpoint.name for p in target.calls].count("broken") == tries
    clock.advance(1.5)
    run(controller.reconcile())
    assert [p.endpoint.name for p in target.calls].count("broken") == tries + 1
    clock.advance(1.5)  # the second failure waits 2 s
    run(controller.reconcile())
    assert [p.endpoint.name for p in target.calls].count("broken") == tries + 1


def test_a_slow_start_holds_up_no_other_endpoint(registry: Registry, tmp_path: Path) -> None:
    applier = Applier(registry, ResourceStore(registry.engine), actor="alice")
    applier.apply_all([endpoint_doc("fraud:1"), named(endpoint_doc("fraud:1"), "slow")])
    target = RecordingTarget()
    warm = target.held["slow"] = asyncio.Event()
    controller = EndpointController(registry, target, tmp_path / "cache", pass_budget_s=0.05)

    async def scenario() -> None:
        await controller.reconcile()
        assert target.served("fraud-score") is not None
        assert target.served("slow") is None
        assert target.expected == {"fraud-score", "slow"}
        synced = conditions(registry, "slow")["Synced"]
        assert (synced["status"], synced["reason"]) == ("False", "Starting")
        applier.apply_all([endpoint_doc("fraud:2")])
        await controller.reconcile()
        served = target.served("fraud-score")
        assert served is not None
        assert served.routes[0][1] == "fraud:2"
        warm.set()
        for _ in range(100):
            await controller.reconcile()
            if target.served("slow") is not None:
                break
        assert conditions(registry, "slow")["Synced"]["status"] == "True"

    run(scenario())


def test_a_failed_change_keeps_serving_and_status_says_what_is_served(
    registry: Registry, tmp_path: Path
) -> None:
    applier = Applier(registry, ResourceStore(registry.engine), actor="alice")
    applier.apply_all([endpoint_doc("fraud:1")])
    target = RecordingTarget()
    target.up.add("fraud-score")
    controller = EndpointController(registry, target, tmp_path / "cache")
    run(controller.reconcile())
    target.broken.add("fraud-score")
    applier.apply_all([endpoint_doc("fraud:2")])
    run(controller.reconcile())
    status = ResourceStore(registry.engine).get("Endpoint", "fraud-score").status
    assert status is not None
    assert status["observed_generation"] == 1
    assert status["serving"] == {"fraud:1": "fraud:1"}
    assert status["routes"] == [{"model": "fraud:1", "version": "fraud:1", "weight": 100.0}]
    found = conditions(registry, "fraud-score")
    assert (found["Ready"]["status"], found["Ready"]["reason"]) == ("True", "Serving")
    assert (found["Synced"]["status"], found["Synced"]["reason"]) == ("False", "StartFailed")
    assert "generation 1 is still served" in str(found["Synced"]["message"])


def test_a_damaged_cached_package_is_fetched_again_after_a_failed_start(
    registry: Registry, tmp_path: Path
) -> None:
    Applier(registry, ResourceStore(registry.engine), actor="alice").apply_all(
        [endpoint_doc("fraud:1")]
    )
    target = RecordingTarget()
    target.broken.add("fraud-score")
    clock = FakeClock()
    controller = EndpointController(registry, target, tmp_path / "cache", clock=clock)
    run(controller.reconcile())
    folder = target.calls[-1].models["fraud:1"].directory
    victim = next(p for p in folder.iterdir() if p.name != "modelplane.yaml")
    victim.write_bytes(b"tampered")
    target.broken.clear()
    clock.advance(2)
    run(controller.reconcile())
    assert verify_package(target.calls[-1].models["fraud:1"].directory)
    assert target.served("fraud-score") is not None


def test_a_code_running_package_without_a_trusted_signature_never_starts(
    registry: Registry, tmp_path: Path
) -> None:
    from tests.cli.story_models import Threshold

    frame = pd.DataFrame(np.random.default_rng(3).normal(size=(10, 2)), columns=["a", "b"])
    built = package(Threshold(), name="code", output_dir=tmp_path / "code", runtime="python",
                    sample_input=frame)  # fmt: skip
    registry.push(built.path)
    # written past apply (as a store edit would be): the controller checks again
    document = {**endpoint_doc("code:1"), "name": "code-score"}
    ResourceStore(registry.engine).apply("Endpoint", "code-score", document, actor="mallory")
    target = RecordingTarget()
    controller = EndpointController(registry, target, tmp_path / "cache")
    run(controller.reconcile())
    assert target.calls == []
    ready = conditions(registry, "code-score")["Ready"]
    assert (ready["status"], ready["reason"]) == ("False", "ResolveFailed")
    assert "signature" in str(ready["message"])
