"""Bulkheads through HTTP: killing one endpoint's workers under load on two endpoints
costs the other endpoint nothing, on every backend (``tests.kit.backends``)."""

from __future__ import annotations

import os
import signal
import threading
import time

import httpx
import pytest
from tests.dataplane import gateway_kit as kit
from tests.kit.backends import BACKENDS, replica_pools

from modelplane.dataplane.server import ServerThread

pytestmark = pytest.mark.timeout(180)
ROW = {"instances": [{"x": [1.0, 2.0, 3.0, 4.0], "n": 5, "s": "hello", "b": True}]}


def load(url: str, path: str, stop: threading.Event, codes: list[int]) -> None:
    with httpx.Client(base_url=url, timeout=10.0) as http:
        for _ in range(100_000):
            if stop.is_set():
                return
            codes.append(http.post(path, json=ROW).status_code)


def worker_pids(server: ServerThread, endpoint: str) -> list[int]:
    runtime = server.gateway.handler.endpoints[endpoint]
    return [
        r.pid
        for route in runtime.routes
        for r in route.target.pool.replicas()
        if r.pid is not None and r.state.value == "ready"
    ]


@pytest.mark.parametrize("backend", BACKENDS)
def test_killing_one_endpoints_workers_costs_the_other_nothing(backend: str) -> None:
    victim = kit.EndpointBuilder("victim", "echo").build()
    steady = kit.EndpointBuilder("steady", "echo").build()
    with (
        replica_pools(backend) as pools,
        ServerThread([victim, steady], config=kit.gateway_config(pools=pools)) as server,
    ):
        stop = threading.Event()
        steady_codes: list[int] = []
        victim_codes: list[int] = []
        threads = [
            threading.Thread(
                target=load, args=(server.url, f"/v1/endpoints/{name}:predict", stop, codes)
            )
            for name, codes in (
                ("steady", steady_codes),
                ("steady", steady_codes),
                ("victim", victim_codes),
            )
        ]
        for thread in threads:
            thread.start()
        try:
            kills = 0
            deadline = time.monotonic() + 60
            while kills < 3 and time.monotonic() < deadline:
                pids = worker_pids(server, "victim")
                if pids:
                    os.kill(pids[0], signal.SIGKILL)
                    kills += 1
                time.sleep(0.5)
            assert kills == 3
            # the victim comes back by itself
            recovered_at = len(victim_codes)
            end = time.monotonic() + 60
            while 200 not in victim_codes[recovered_at:] and time.monotonic() < end:
                time.sleep(0.1)
        finally:
            stop.set()
            for thread in threads:
                thread.join(timeout=30)
    assert len(steady_codes) > 50
    assert set(steady_codes) == {200}
    assert 200 in victim_codes[recovered_at:]
