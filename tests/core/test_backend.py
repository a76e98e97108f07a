"""The backend's plain values: nodes as placement sees them, requests, Ray's resource asks."""

from __future__ import annotations

import pytest

from modelplane.core.backend import (
    BackendNode,
    ReplicaRequest,
    ReplicaSpec,
    ReplicaState,
    ReplicaStatus,
    ReplicaWant,
    by_node,
    ray_resources,
)
from modelplane.core.cluster import Demand, WorkloadKind

SPEC = ReplicaSpec("pkg.module:load")


def test_a_node_becomes_the_placement_node_with_its_labels_sorted() -> None:
    node = BackendNode(
        "g1", 4000, 8192, "A100", 2, 40960, labels={"zone": "b", "arch": "x86"}, cost_per_hour=3.5
    )
    placed = node.as_cluster_node()
    assert (placed.name, placed.cpu_milli, placed.gpu_model, placed.gpu_count) == (
        "g1",
        4000,
        "A100",
        2,
    )
    assert placed.labels == (("arch", "x86"), ("zone", "b"))
    assert placed.cost_per_hour == 3.5


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"name": ""}, r"node\.name"),
        ({"cpu_milli": -1}, "negative"),
        ({"gpu_count": 1}, "gpu_model is required"),
    ],
)
def test_a_bad_node_is_refused_naming_the_field(kwargs: dict[str, object], message: str) -> None:
    fields: dict[str, object] = {"name": "n", "cpu_milli": 1000, "memory_mib": 1024} | kwargs
    with pytest.raises(ValueError, match=message):
        BackendNode(**fields)  # type: ignore[arg-type]


def test_a_loader_must_be_module_colon_callable() -> None:
    with pytest.raises(ValueError, match=r"spec\.loader"):
        ReplicaSpec("no_colon_here")


def test_a_request_needs_a_node_and_slots_matching_its_gpus() -> None:
    with pytest.raises(ValueError, match="node is required"):
        ReplicaRequest("r", "", SPEC, Demand(1000, 64))
    with pytest.raises(ValueError, match="gpu_slots holds 2 GPUs, demand 1"):
        ReplicaRequest("r", "g1", SPEC, Demand(0, 64, 1, 250), gpu_slots=(0, 1))


def test_a_want_becomes_a_request_on_the_chosen_node_and_a_replica_workload() -> None:
    want = ReplicaWant("r1", SPEC, Demand(500, 64, 1, 250), team="fraud", tier="critical")
    request = want.on("g1", (1,))
    assert (request.node, request.gpu_slots, request.team, request.tier) == (
        "g1",
        (1,),
        "fraud",
        "critical",
    )
    workload = request.workload()
    assert workload.kind is WorkloadKind.REPLICA
    assert workload.demand == want.demand


def test_ray_is_asked_for_exactly_what_placement_counted() -> None:
    asked = ray_resources(Demand(1500, 512, 1, 250), "A100")
    assert asked == {
        "CPU": 1.5,
        "memory": float(512 << 20),
        "GPU": 0.25,
        "accelerator_type:A100": 0.001,
    }
    assert ray_resources(Demand(0, 0, 2, 1000)) == {"GPU": 2.0}


def test_by_node_keeps_live_replicas_only() -> None:
    statuses = [
        ReplicaStatus("a", "g1", ReplicaState.READY),
        ReplicaStatus("b", "g1", ReplicaState.DEAD),
        ReplicaStatus("c", "g2", ReplicaState.STARTING),
    ]
    assert {k: [s.name for s in v] for k, v in by_node(statuses).items()} == {
        "g1": ["a"],
        "g2": ["c"],
    }
