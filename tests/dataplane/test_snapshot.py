"""The gateway's snapshot on a real gateway over loopback: what it serves (routes, shadows,
each version once), every replica's state as an enum with its node and pid, what callers
saw, and copies that later traffic never changes."""

from __future__ import annotations

import os
import signal
from typing import Any

import httpx
import pytest
from tests.dataplane import gateway_kit as kit
from tests.kit import wait_for

from modelplane.core.backend import ReplicaState
from modelplane.dataplane.server import ServerThread

pytestmark = pytest.mark.timeout(180)

PATH = "/v1/endpoints/echo:predict"
ROW = {"instances": [{"x": [1.0, 2.0, 3.0, 4.0], "n": 5, "s": "hello", "b": True}]}
OUT_OF_RANGE = {"instances": [{"x": [1.0, 2.0, 3.0, 4.0], "n": -1, "s": "hello", "b": True}]}


def test_snapshot_names_what_is_served_and_copies_it() -> None:
    config = kit.gateway_config(node="node-a")
    with ServerThread([kit.canary_and_shadow()], config=config) as server:
        with httpx.Client(base_url=server.url, timeout=10) as http:
            for _ in range(6):
                assert http.post(PATH, json=ROW).status_code == 200
            assert http.post(PATH, json=OUT_OF_RANGE).status_code == 400
        gateway = server.gateway
        wait_for(
            lambda: gateway.snapshot().endpoints["echo"].shadows[0].comparison.compared >= 6,
            30, "the shadow's six comparisons",
        )  # fmt: skip
        before = gateway.snapshot()
        view = before.endpoints["echo"]
        assert (view.name, view.team, view.tier) == ("echo", "test", "standard")
        assert [(r.ref, r.weight, r.breaker_open) for r in view.routes] == [
            ("echo:1", 100, False), ("echo:2", 0, False)]  # fmt: skip
        assert [v.label for v in view.versions] == ["echo:1", "echo:2", "steady:1"]
        assert view.shadow("steady:1") is view.shadows[0]
        assert view.shadows[0].version is view.versions[2]  # each version once
        assert view.ready
        assert view.route("echo:1") is view.routes[0]
        assert not view.route("x")
        live = gateway.handler.endpoints["echo"].routes[0].target.pool.replicas()
        (replica,) = view.routes[0].version.replicas
        assert replica.state is ReplicaState.READY
        assert (replica.node, replica.pid) == ("node-a", live[0].pid)
        assert replica.pid is not None
        v1 = view.routes[0].version
        assert (v1.desired_replicas, v1.ready_replicas, v1.queued_rows) == (1, 1, 0)
        assert v1.stats.requests == 6  # the 400 never reached a model
        assert view.routes[1].version.stats.requests == 0
        assert view.counters.by_status == {200: 6, 400: 1}
        assert view.counters.fallbacks == 0
        assert sum(hist.total for hist in view.counters.latency) == 7

        with httpx.Client(base_url=server.url, timeout=10) as http:
            assert http.post(PATH, json=ROW).status_code == 200
        after = gateway.snapshot("echo")
        assert after.endpoints["echo"].counters.by_status[200] == 7
        assert after.endpoints["echo"].routes[0].version.stats.requests == 7
        # the first snapshot is a copy: later traffic never reaches it
        assert view.counters.by_status[200] == 6
        assert v1.stats.requests == 6
        assert gateway.snapshot("absent").endpoints == {}


def test_a_killed_worker_shows_in_the_snapshot_until_it_is_back() -> None:
    endpoint = kit.EndpointBuilder("echo", "echo").build()
    with ServerThread([endpoint], config=kit.gateway_config()) as server:
        gateway = server.gateway

        def version() -> Any:
            return gateway.snapshot("echo").endpoints["echo"].routes[0].version

        (replica,) = version().replicas
        assert replica.node == "local"
        assert replica.pid is not None
        os.kill(replica.pid, signal.SIGKILL)
        wait_for(lambda: version().restarts >= 1, 30, "the pool to count the restart")
        back = wait_for(
            lambda: next((r for r in version().replicas if r.state is ReplicaState.READY
                          and r.pid != replica.pid), None),
            30, "a new ready worker",
        )  # fmt: skip
        assert back.pid != replica.pid
