"""Endpoints change while requests flow: new ones start before the table swaps."""

from __future__ import annotations

import threading

import httpx
import pytest
from tests.dataplane import gateway_kit as kit

from modelplane.dataplane.server import ServerThread

pytestmark = pytest.mark.timeout(180)

ROW = {"instances": [{"x": [1.0, 2.0, 3.0, 4.0], "n": 5, "s": "hello", "b": True}]}


def hammer(url: str, path: str, stop: threading.Event, codes: list[int]) -> None:
    with httpx.Client(base_url=url, timeout=10.0) as http:
        for _ in range(100_000):
            if stop.is_set():
                return
            codes.append(http.post(path, json=ROW).status_code)


def test_add_and_remove_endpoints_under_load() -> None:
    first = kit.EndpointBuilder("echo", "echo").build()
    second = kit.EndpointBuilder("echo2", "echo").build()
    with ServerThread([first], config=kit.gateway_config()) as server:
        stop, codes = threading.Event(), list[int]()
        load = threading.Thread(
            target=hammer, args=(server.url, "/v1/endpoints/echo:predict", stop, codes)
        )
        load.start()
        try:
            server.update([first, second])
            with httpx.Client(base_url=server.url, timeout=10.0) as http:
                assert http.post("/v1/endpoints/echo2:predict", json=ROW).status_code == 200
                # changing an endpoint replaces its workers; requests keep being answered
                server.update([kit.EndpointBuilder("echo", "echo").batching(8).build(), second])
                server.update([second])
                assert http.post("/v1/endpoints/echo:predict", json=ROW).status_code == 404
        finally:
            stop.set()
            load.join(timeout=30)
    served = [c for c in codes if c != 404]
    assert served
    assert set(served) == {200}
    assert server.gateway.serving("echo2") is False  # stopped with the server
