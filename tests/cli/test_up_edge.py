"""``modelplane up`` puts both of its servers under the edge's limits."""

from __future__ import annotations

from typing import Any

from modelplane.dataplane.edge import API_EDGE, EdgeConfig, EdgeProtocol
from modelplane.dataplane.gateway import Gateway, GatewayConfig
from modelplane.system.live import server as _server


async def _api(scope: Any, receive: Any, send: Any) -> None:  # a stand-in ASGI app
    raise NotImplementedError


def test_the_api_and_the_gateway_each_get_their_edge() -> None:
    api = _server(_api, "127.0.0.1", 0, lifespan="off")
    protocol = api.config.http_protocol_class
    assert issubclass(protocol, EdgeProtocol)
    assert protocol.edge is API_EDGE
    assert api.config.timeout_keep_alive == API_EDGE.keep_alive_s

    edge = EdgeConfig(max_connections=7)
    gateway = _server(Gateway([], GatewayConfig(edge=edge)), "127.0.0.1", 0, lifespan="on")
    served = gateway.config.http_protocol_class
    assert issubclass(served, EdgeProtocol)
    assert served.edge is edge
    assert served.idle is not protocol.idle  # each server caps its own connections
    assert gateway.config.timeout_graceful_shutdown == edge.shutdown_timeout_s
