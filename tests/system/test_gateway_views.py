"""Each controller's view of a real gateway, read from its snapshot: the endpoint
controller's served routes and replica counts (and the one plan it puts), the rollout
gates' evidence, the autoscaler's load, the SLO tallies and the usage sampler's replicas."""

from __future__ import annotations

import asyncio

import httpx
import pytest
from tests.dataplane import gateway_kit as kit
from tests.kit import wait_for

from modelplane.controlplane.autoscaler import Load
from modelplane.controlplane.endpoints import ServedEndpoint
from modelplane.controlplane.slo import Tally
from modelplane.controlplane.usage import ProcessReading
from modelplane.core.gates import ArmStats, ShadowStats
from modelplane.core.serving import (
    EndpointView,
    GatewaySnapshot,
    HostedUsage,
    LatencyCounts,
    ReplicaState,
    ReplicaView,
    RequestCounters,
    RouteView,
    VersionView,
)
from modelplane.dataplane.server import ServerThread
from modelplane.spec.contract import SLO
from modelplane.spec.manifest import Resources
from modelplane.system.gateway_views import (
    GatewayConcurrency,
    GatewayEvidence,
    GatewayReplicas,
    GatewaySlo,
    GatewayTarget,
    slo_counters,
)
from modelplane.types import Digest

pytestmark = pytest.mark.timeout(180)

PATH = "/v1/endpoints/echo:predict"
ROW = {"instances": [{"x": [1.0, 2.0, 3.0, 4.0], "n": 5, "s": "hello", "b": True}]}
BAD = {"instances": [{"x": [1.0, 2.0, 3.0, 4.0], "n": -1, "s": "hello", "b": True}]}


def test_every_view_reads_the_same_gateway() -> None:
    with ServerThread([kit.canary_and_shadow()], config=kit.gateway_config()) as server:
        gateway = server.gateway
        with httpx.Client(base_url=server.url, timeout=10) as http:
            for _ in range(5):
                assert http.post(PATH, json=ROW).status_code == 200
            assert http.post(PATH, json=BAD).status_code == 400
        evidence = GatewayEvidence(gateway)

        def compared() -> ShadowStats | None:
            stats = evidence.shadow_stats("echo", "steady:1")
            return stats if stats is not None and stats.compared >= 5 else None

        shadow = wait_for(compared, 30, "five shadow comparisons")
        assert shadow.relative_error_sum > 0  # steady answers constants, echo echoes

        target = GatewayTarget(gateway)
        assert target.served("echo") == ServedEndpoint(
            routes=(("echo:1", "echo:1", 100), ("echo:2", "echo:2", 0)),
            shadows=(("steady:1", "steady:1", 100),),
            ready=True,
        )
        assert target.replica_counts("echo") == (2, 2)  # one per route
        assert target.served("absent") is None
        assert target.replica_counts("absent") == (0, 0)

        assert evidence.route_ready("echo", "echo:1")
        assert not evidence.route_ready("echo", "steady:1")  # a shadow, not a route
        stats = evidence.route_stats("echo", "echo:1")
        assert stats is not None
        assert (stats.requests, stats.errors) == (5, 0)
        assert evidence.route_stats("absent", "echo:1") is None
        assert evidence.shadow_stats("echo", "echo:1") is None

        assert GatewayConcurrency(gateway).load("echo") == Load(0.0, 1, 1)
        assert GatewayConcurrency(gateway).load("absent") is None

        tally = GatewaySlo(gateway).served()["echo"].tallies["requests"]
        assert (tally.avail_good, tally.avail_total) == (5, 5)  # the 400 is the caller's
        assert tally.latency_total == 6  # timed: every answer the gateway gave

        slots = GatewayReplicas(gateway).replicas()
        routes = {slot.route: slot for slot in slots}
        assert sorted(routes) == ["echo:1", "echo:2", "shadow:steady:1"]
        live = gateway.handler.endpoints["echo"].routes[0].target.pool.replicas()
        assert routes["echo:1"].pid == live[0].pid
        assert (routes["echo:1"].team, routes["echo:1"].version) == ("test", "echo:1")


def test_the_controllers_plan_is_served_as_it_is() -> None:
    with ServerThread([], config=kit.gateway_config()) as server:
        target = GatewayTarget(server.gateway)
        loop = server.gateway.loop
        assert loop is not None
        asyncio.run_coroutine_threadsafe(
            target.put(kit.canary_and_shadow(generation=4)), loop
        ).result(120)
        served = target.served("echo")
        assert served is not None
        assert served.ready
        with httpx.Client(base_url=server.url, timeout=10) as http:
            answer = http.post(PATH, json=ROW)
        assert answer.headers["modelplane-model-version"] == "echo:1"
        asyncio.run_coroutine_threadsafe(target.remove("echo"), loop).result(60)
        assert target.served("echo") is None


def test_slo_tallies_count_what_callers_saw() -> None:
    view = EndpointView(
        name="fraud", team="risk", tier="critical", slo=SLO(latency_ms=50), routes=(),
        shadows=(), versions=(),
        counters=RequestCounters(
            by_status={200: 8, 422: 5, 429: 1, 503: 1},
            fallbacks=2,  # served with 200 by a fallback: unavailable
            latency=(LatencyCounts((0.01, 0.05, 0.1), (3, 2, 4, 1)),
                     LatencyCounts((0.01, 0.05, 0.1), (0, 1, 0, 0))),
        ),
    )  # fmt: skip
    counters = slo_counters(GatewaySnapshot({"fraud": view}))
    assert counters["fraud"].slo == SLO(latency_ms=50)
    assert counters["fraud"].tallies == {"requests": Tally(6, 10, 6, 11)}


class OneSnapshot:
    def __init__(self, snapshot: GatewaySnapshot) -> None:
        self._snapshot = snapshot

    def snapshot(self, only: str | None = None) -> GatewaySnapshot:
        return self._snapshot


def test_hosted_replicas_are_counted_on_their_node_by_the_gateway_that_placed_them() -> None:
    at = 5.0
    replicas = (
        ReplicaView(0, ReplicaState.READY, "box", 11, 0),  # a worker of this machine
        # placed by this gateway's pool, read on its node: that node's, with that reading
        ReplicaView(1, ReplicaState.READY, "ray-b", 22, 0, hosted=True, accounted=True,
                    usage=HostedUsage(22, 3.0, 150.0, at)),
        # its reading is of a process it no longer runs (placed again since): none
        ReplicaView(2, ReplicaState.STARTING, "ray-c", 33, 0, hosted=True, accounted=True,
                    usage=HostedUsage(30, 9.0, 900.0, at)),
        # shared from the gateway that placed it (up --gateways N on Ray): that one counts it
        ReplicaView(3, ReplicaState.READY, "ray-b", None, 0, hosted=True),
    )  # fmt: skip
    served = VersionView(
        label="fraud:1", digest=Digest("sha256:" + "0" * 64), resources=Resources(cpu=0.5),
        desired_replicas=4, replicas=replicas, ready=True, queued_rows=0, mean_batch_rows=1.0,
        busy_seconds=0.0, restarts=0, stats=ArmStats(),
    )  # fmt: skip
    view = EndpointView(
        name="fraud", team="risk", tier="critical", slo=SLO(latency_ms=50),
        routes=(RouteView("stable", 100.0, False, served),), shadows=(), versions=(served,),
        counters=RequestCounters(by_status={}, fallbacks=0, latency=()),
    )  # fmt: skip
    slots = GatewayReplicas(OneSnapshot(GatewaySnapshot({"fraud": view}))).replicas()
    found = {s.replica: (s.node, s.pid, s.reading, s.cpu_milli) for s in slots}
    assert found == {
        0: (None, 11, None, 500),
        1: ("ray-b", 22, ProcessReading(3.0, 150.0, read_at=at), 500),
        2: ("ray-c", 33, None, 500),
    }
