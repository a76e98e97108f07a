"""The endpoint controller against a real store and registry, and a recording target."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator, Sequence
from pathlib import Path

import numpy as np
import pytest
from sklearn.linear_model import LogisticRegression

from modelplane.controlplane.apply import Applier
from modelplane.controlplane.endpoints import EndpointController, EndpointPlan
from modelplane.registry.build import package
from modelplane.registry.digest import verify_package
from modelplane.registry.service import Registry, open_registry
from modelplane.store.resources import ResourceStore

pd = pytest.importorskip("pandas")


class RecordingTarget:
    def __init__(self) -> None:
        self.calls: list[list[EndpointPlan]] = []
        self.up: set[str] = set()

    async def serve(self, plans: Sequence[EndpointPlan]) -> None:
        self.calls.append(list(plans))

    def ready(self, endpoint: str) -> bool:
        return endpoint in self.up


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
    [[plan]] = target.calls
    model = plan.models["fraud@champion"]
    assert model.label == "fraud:1"
    assert verify_package(model.directory).digest == model.digest
    status = ResourceStore(registry.engine).get("Endpoint", "fraud-score").status
    assert status is not None
    assert status["conditions"][0]["reason"] == "Starting"

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
    assert target.calls[-1][0].models["fraud:2"].label == "fraud:2"


def test_a_deleted_endpoint_stops_being_served(registry: Registry, tmp_path: Path) -> None:
    resources = ResourceStore(registry.engine)
    Applier(registry, resources, actor="alice").apply_all([endpoint_doc()])
    target = RecordingTarget()
    controller = EndpointController(registry, target, tmp_path / "cache")
    run(controller.reconcile())
    resources.delete("Endpoint", "fraud-score", actor="alice")
    run(controller.reconcile())
    assert target.calls[-1] == []


def test_run_stops_when_asked(registry: Registry, tmp_path: Path) -> None:
    controller = EndpointController(registry, RecordingTarget(), tmp_path / "cache")

    async def scenario() -> None:
        stop = asyncio.Event()
        task = asyncio.create_task(controller.run(stop, interval_s=0.05))
        await asyncio.sleep(0.2)
        stop.set()
        await asyncio.wait_for(task, timeout=5)

    run(scenario())
