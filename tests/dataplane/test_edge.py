"""The HTTP edge under hostile clients, over real sockets on loopback: slow headers and
bodies are cut, an idle flood cannot lock out a request, oversized requests answer 413,
a large body decodes while other endpoints keep answering, and shutdown cuts slow clients
cleanly."""

from __future__ import annotations

import asyncio
import functools
import selectors
import socket
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ProcessPoolExecutor

import httpx
import msgspec
import pytest
from tests.dataplane import gateway_kit as kit

from modelplane.dataplane.codec_v2 import encode_request
from modelplane.dataplane.edge import EdgeConfig, edge_protocol, server_options
from modelplane.dataplane.offload import LargeBodies, decode_v2
from modelplane.dataplane.server import ServerThread
from modelplane.errors import InvalidSpec
from modelplane.spec.contract import Contract

pytestmark = pytest.mark.timeout(180)

PLATFORM_ROWS = 8
EDGE = EdgeConfig(
    header_timeout_s=60.0,
    max_connections=50,
    keep_alive_requests=3,
    max_rows=PLATFORM_ROWS,
    offload_idle_s=0.5,
)
"""Deadlines long enough never to be what closes a socket in these tests."""
STRICT = EdgeConfig(header_timeout_s=0.5, body_timeout_s=0.5)


def _limited(name: str, max_rows: int) -> Contract:
    signature = kit.source("echo").manifest.signature
    return Contract(
        name=name, inputs=signature.inputs, outputs=signature.outputs, max_rows=max_rows
    )


@pytest.fixture(scope="module")
def server() -> Iterator[ServerThread]:
    endpoints = [
        kit.EndpointBuilder("echo-a", "echo").build(),
        kit.EndpointBuilder("echo-b", "echo").build(),
        kit.EndpointBuilder("echo-five", "echo", contract=_limited("echo-five", 5)).build(),
    ]
    config = kit.gateway_config(edge=EDGE, max_body_bytes=48 << 20)
    with ServerThread(endpoints, config=config) as running:
        yield running


@pytest.fixture(scope="module")
def strict() -> Iterator[ServerThread]:
    endpoints = [kit.EndpointBuilder("echo-a", "echo").build()]
    with ServerThread(endpoints, config=kit.gateway_config(edge=STRICT)) as running:
        yield running


@pytest.fixture
def client(server: ServerThread) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=server.url, timeout=10.0) as http:
        yield http


def _connect(server: ServerThread) -> socket.socket:
    return socket.create_connection((server.host, server.port), timeout=10.0)


def _read_until_closed(sock: socket.socket, within_s: float = 20.0) -> bytes:
    """Everything the server sends until it closes (bounded: raises past ``within_s``)."""
    received = b""
    deadline = time.monotonic() + within_s
    while time.monotonic() < deadline:
        sock.settimeout(max(0.01, deadline - time.monotonic()))
        try:
            chunk = sock.recv(65536)
        except TimeoutError:
            break
        if not chunk:
            return received
        received += chunk
    raise AssertionError(f"the server kept the connection open; got {received[:200]!r}")


def _infer_request(endpoint: str, body: bytes) -> bytes:
    head = (f"POST /v2/models/{endpoint}/infer HTTP/1.1\r\nhost: test\r\n"
            f"content-type: application/json\r\ncontent-length: {len(body)}\r\n\r\n")  # fmt: skip
    return head.encode() + body


# ---------------------------------------------------------------- deadlines


def test_headers_sent_too_slowly_are_cut(strict: ServerThread) -> None:
    with _connect(strict) as sock:
        sock.sendall(b"GET /v2/health/live HTTP/1.1\r\n")
        # a slowloris: one more header line every 100 ms never extends the deadline
        deadline = time.monotonic() + 20.0
        received = b""
        sock.settimeout(0.1)
        while time.monotonic() < deadline:
            try:
                chunk = sock.recv(4096)
            except TimeoutError:
                sock.sendall(b"x-slow: 1\r\n")
                continue
            except ConnectionResetError:
                break
            if not chunk:
                break
            received += chunk
        else:
            raise AssertionError("a client trickling headers held its connection")
    # the 408 may be lost to a reset when the cut meets a header line in flight
    assert received == b"" or received.startswith(b"HTTP/1.1 408"), received


def test_a_connection_that_never_speaks_is_closed(strict: ServerThread) -> None:
    with _connect(strict) as sock:
        assert _read_until_closed(sock) == b""


def test_a_body_sent_too_slowly_is_cut(strict: ServerThread) -> None:
    with _connect(strict) as sock:
        sock.sendall(_infer_request("echo-a", b"x" * 1000)[:-990])
        received = _read_until_closed(sock)
    assert received.startswith(b"HTTP/1.1 408"), received
    assert b"request_timeout" in received


def test_keep_alive_ends_after_the_request_limit(client: httpx.Client) -> None:
    answers = [client.get("/v2/health/live") for _ in range(EDGE.keep_alive_requests)]
    assert [a.headers.get("connection") for a in answers] == [None, None, "close"]


# ---------------------------------------------------------------- connections


def test_an_idle_flood_past_the_limit_does_not_lock_out_a_request(
    server: ServerThread, client: httpx.Client
) -> None:
    flood = [_connect(server) for _ in range(300)]
    try:
        response = client.get("/v2/health/live")
        assert response.status_code == 200
        # the server keeps at most its cap: the oldest idle sockets were closed for room
        selector = selectors.DefaultSelector()
        for sock in flood:
            sock.setblocking(False)
            selector.register(sock, selectors.EVENT_READ)
        closed: set[socket.socket] = set()
        deadline = time.monotonic() + 20.0
        while len(closed) < len(flood) - EDGE.max_connections and time.monotonic() < deadline:
            for key, _ in selector.select(timeout=0.1):
                peer = key.fileobj
                assert isinstance(peer, socket.socket)
                try:
                    data = peer.recv(4096)
                except ConnectionResetError:
                    data = b""
                if not data:
                    closed.add(peer)
                    selector.unregister(peer)
        selector.close()
        assert len(closed) >= len(flood) - EDGE.max_connections
    finally:
        for sock in flood:
            sock.close()


def test_the_protocol_carries_its_own_config() -> None:
    small = EdgeConfig(max_connections=3)
    first, second = edge_protocol(small), edge_protocol(small)
    assert first.edge is small
    assert first.idle is not second.idle  # each server counts its own connections
    assert server_options(small)["timeout_graceful_shutdown"] > small.drain_timeout_s
    with pytest.raises(ValueError, match="header_timeout_s"):
        EdgeConfig(header_timeout_s=0)


# ---------------------------------------------------------------- sizes


def test_rows_over_the_contract_limit_answer_413_naming_it(client: httpx.Client) -> None:
    body = encode_request(kit.echo_inputs(6)).body
    response = client.post("/v2/models/echo-five/infer", content=body)
    assert response.status_code == 413, response.text
    assert "at most 5" in response.json()["error"]
    records = {"instances": [{"x": [1, 2, 3, 4], "n": 1, "s": "a", "b": True}] * 6}
    response = client.post("/v1/endpoints/echo-five:predict", json=records)
    assert response.status_code == 413
    error = response.json()["error"]
    assert error["code"] == "payload_too_large"
    assert error["details"] == [
        {"field": "inputs", "problem": "6 rows, over contract max_rows (5)"}
    ]
    five = encode_request(kit.echo_inputs(5)).body
    assert client.post("/v2/models/echo-five/infer", content=five).status_code == 200


def test_rows_over_the_platform_default_answer_413(client: httpx.Client) -> None:
    body = encode_request(kit.echo_inputs(PLATFORM_ROWS + 1)).body
    response = client.post("/v2/models/echo-a/infer", content=body)
    assert response.status_code == 413
    assert f"at most {PLATFORM_ROWS} (the platform's max_rows)" in response.json()["error"]


def test_a_body_over_the_limit_answers_413_naming_it(server: ServerThread) -> None:
    with _connect(server) as sock:
        declared = 49 << 20
        sock.sendall(b"POST /v1/endpoints/echo-a:predict HTTP/1.1\r\nhost: test\r\n"
                     b"content-length: %d\r\n\r\n{" % declared)  # fmt: skip
        # answered before the body is read, and closed rather than drained
        received = _read_until_closed(sock)
    head, _, body = received.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 413")
    assert b"connection: close" in head
    error = msgspec.json.decode(body)["error"]
    assert error["code"] == "payload_too_large"
    assert error["details"][0]["field"] == "body"
    assert str(48 << 20) in error["message"]


# ---------------------------------------------------------------- the shared loop


def test_another_endpoint_answers_while_a_large_body_decodes(server: ServerThread) -> None:
    # ~23 MB of JSON: about half a second of decoding, which used to hold every endpoint
    big = _infer_request("echo-b", encode_request(kit.echo_inputs(400_000)).body)
    small = _infer_request("echo-a", encode_request(kit.echo_inputs(1)).body)
    before = server.gateway.bodies.offloaded
    with _connect(server) as big_sock, _connect(server) as small_sock:
        big_sock.sendall(big)
        # the small request goes once the big body is in whole, so it meets the decode
        deadline = time.monotonic() + 30.0
        while not _bodies_received(server) and time.monotonic() < deadline:
            time.sleep(0.001)
        small_sock.sendall(small)
        selector = selectors.DefaultSelector()
        selector.register(big_sock, selectors.EVENT_READ, "big")
        selector.register(small_sock, selectors.EVENT_READ, "small")
        order: list[str] = []
        deadline = time.monotonic() + 60.0
        while len(order) < 2 and time.monotonic() < deadline:
            for key, _ in selector.select(timeout=0.5):
                order.append(key.data)
                selector.unregister(key.fileobj)
        selector.close()
        assert order == ["small", "big"]
        assert small_sock.recv(65536).startswith(b"HTTP/1.1 200")
        # the big one was decoded in full, away from the loop, then refused for its rows
        assert big_sock.recv(65536).startswith(b"HTTP/1.1 413")
    bodies = server.gateway.bodies
    assert bodies.offloaded == before + 1
    assert bodies.in_flight == 0
    # once no large body comes, the helpers stop and what they held goes with them
    deadline = time.monotonic() + 20.0
    while bodies.helpers_running and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not bodies.helpers_running


def _bodies_received(server: ServerThread) -> int:
    """Requests whose body has fully arrived and that are not answered yet."""
    connections = list(server.server.server_state.connections)
    cycles = [getattr(c, "cycle", None) for c in connections]
    return sum(1 for c in cycles if c is not None and not c.more_body and not c.response_complete)


# ---------------------------------------------------------------- shutdown


@pytest.mark.parametrize("slow", ["body", "model"])
def test_shutdown_cuts_a_slow_request_cleanly(slow: str) -> None:
    edge = EdgeConfig(drain_timeout_s=0.5, body_timeout_s=120.0)
    endpoints = [kit.EndpointBuilder("echo-a", "echo").timeout(30_000).build()]
    running = ServerThread(endpoints, config=kit.gateway_config(edge=edge)).start()
    if slow == "body":  # a client trickling its body
        sent = _infer_request("echo-a", b"x" * 1000)[:-990]
    else:  # a model that takes 1.5 s, three times the drain timeout
        inputs = kit.echo_inputs(1, first=kit.fake_models.VERY_SLOW)
        sent = _infer_request("echo-a", encode_request(inputs).body)
    try:
        with _connect(running) as sock:
            sock.sendall(sent)
            deadline = time.monotonic() + 20.0
            while running.requests_in_flight == 0 and time.monotonic() < deadline:
                time.sleep(0.01)
            assert running.requests_in_flight == 1
            stopping = threading.Thread(target=running.stop)
            stopping.start()
            received = _read_until_closed(sock)
            stopping.join(30.0)
            assert not stopping.is_alive()
    finally:
        running.stop()
    assert received.startswith(b"HTTP/1.1 503"), received
    assert b"connection: close" in received
    assert b"500" not in received.split(b"\r\n", 1)[0]


# ---------------------------------------------------------------- decode helpers


def test_a_bad_large_body_fails_with_its_own_error_from_the_helper() -> None:
    async def scenario() -> None:
        bodies = LargeBodies(EdgeConfig(offload_bytes=16), "spawn")
        body = b'{"inputs": [' + b" " * 64

        async def read() -> bytes:
            return body

        try:
            with pytest.raises(InvalidSpec):
                await bodies.decode(len(body), read, functools.partial(decode_v2, None))
            assert bodies.helpers_running  # a bad body says nothing about the helpers
        finally:
            bodies.close()

    asyncio.run(scenario())


def test_a_large_body_is_decoded_in_place_when_the_helpers_are_gone() -> None:
    async def scenario() -> None:
        bodies = LargeBodies(EdgeConfig(offload_bytes=16), "spawn")
        gone = ProcessPoolExecutor(1)
        gone.shutdown()
        bodies._executor = gone  # as after the forkserver died
        body = encode_request(kit.echo_inputs(3)).body

        async def read() -> bytes:
            return body

        decoded = await bodies.decode(len(body), read, functools.partial(decode_v2, None))
        assert decoded.inputs["x"].shape == (3, 4)
        assert not bodies.helpers_running  # dropped: the next large body starts fresh ones

    asyncio.run(scenario())
