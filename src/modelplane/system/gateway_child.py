"""A child gateway of ``modelplane up --gateways N`` (see :mod:`.gateways`):
``python -m modelplane.system.gateway_child FD``, FD its pipe to ``up``.

It reads its :class:`~.gateways.ChildSpec` from the pipe, builds the gateway as ``up`` does
(``LiveSystem``, one gateway; on Ray, one that serves the replicas ``up`` placed), and
runs it with an endpoint controller that writes nothing to the store. It listens on the
shared port once the endpoints in the store run, sends its snapshot to ``up`` every
``publish_s``, applies the degrader's decisions ``up`` sends back, and drains on SIGTERM,
which it also gets when ``up`` dies.
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import logging
import os
import pickle
import signal
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from multiprocessing.connection import Connection
from typing import TYPE_CHECKING, Any

from modelplane.system.gateways import ChildSpec, bound_server, reuseport_socket

if TYPE_CHECKING:
    import uvicorn
    from sqlalchemy import Engine

    from modelplane.controlplane.endpoints import EndpointController
    from modelplane.dataplane.gateway import Gateway
    from modelplane.security.auth import Authenticator, PredictAuthorizer

__all__ = ["main"]

log = logging.getLogger("modelplane.up")

_PR_SET_PDEATHSIG = 1


@dataclass(frozen=True, slots=True)
class _ChildAuth:
    api: Authenticator | None
    predict: PredictAuthorizer | None


def _child_auth(spec: ChildSpec) -> Callable[[Engine], _ChildAuth]:
    def build(engine: Engine) -> _ChildAuth:
        if not spec.predict_auth:
            return _ChildAuth(None, None)
        from modelplane.security.auth import CachedAuthenticator, PredictGate
        from modelplane.security.oidc import OidcVerifier, either
        from modelplane.security.tokens import TokenStore

        oidc = spec.options.oidc
        issuer = None if oidc is None else OidcVerifier(oidc)
        authenticator = CachedAuthenticator(either(TokenStore(engine).verify, issuer))
        return _ChildAuth(authenticator, PredictGate(authenticator))

    return build


def _die_with_parent(parent: int) -> None:
    """SIGTERM (a drain) when ``up`` dies, however it dies (Linux); elsewhere the pipe's
    end of file stops the child."""
    if sys.platform.startswith("linux"):
        with contextlib.suppress(OSError, AttributeError):
            libc = ctypes.CDLL(None, use_errno=True)
            libc.prctl(_PR_SET_PDEATHSIG, signal.SIGTERM, 0, 0, 0)
    if os.getppid() != parent:  # it died before the line above
        os.kill(os.getpid(), signal.SIGTERM)


def _follower(system: Any, number: int) -> EndpointController:
    """An endpoint controller that serves what the store says and writes nothing: the
    primary's controller writes the endpoints' status (and the gateway heartbeat)."""
    from modelplane.controlplane.endpoints import EndpointController
    from modelplane.store.resources import ResourceStore
    from modelplane.system.gateway_views import GatewayTarget

    class StatusUnwritten(ResourceStore):
        def set_status(self, kind: str, name: str, status: dict[str, Any]) -> bool:
            return True

    cache = system.settings.home / "cache" / f"packages-gateway-{number}"
    controller = EndpointController(system.registry, GatewayTarget(system.gateway), cache)
    controller.resources = StatusUnwritten(system.registry.engine)
    return controller


async def _wait_ready(gateway: Gateway, stop: asyncio.Event, timeout_s: float) -> None:
    deadline = time.monotonic() + timeout_s
    while not gateway.ready and not stop.is_set() and time.monotonic() < deadline:
        await asyncio.sleep(0.1)


async def _publish(gateway: Gateway, conn: Connection, stop: asyncio.Event, every_s: float) -> None:
    while not stop.is_set():
        try:
            await asyncio.to_thread(conn.send, gateway.snapshot())
        except (OSError, ValueError):
            stop.set()  # up is gone
            return
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), every_s)


def _listen_to_parent(conn: Connection, gateway: Gateway, stop: asyncio.Event) -> None:
    loop = asyncio.get_running_loop()

    def read() -> None:
        while True:
            try:
                message = conn.recv()
            except (EOFError, OSError, pickle.UnpicklingError):
                loop.call_soon_threadsafe(stop.set)
                return
            if isinstance(message, tuple) and message[:1] == ("degrade",):
                loop.call_soon_threadsafe(gateway.degrade, message[1], message[2])

    threading.Thread(target=read, daemon=True, name="parent-pipe").start()


async def _serve_child(spec: ChildSpec, conn: Connection) -> None:
    from modelplane.system.live import LiveSystem, keep_running

    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    system = LiveSystem.open(spec.settings, spec.options, _child_auth(spec))
    # after joining Ray, whose ray.init takes SIGTERM for itself (an exit, not a drain)
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    gateway = system.gateway
    controller = _follower(system, spec.number)
    _listen_to_parent(conn, gateway, stop)
    served: uvicorn.Server | None = None
    try:
        await gateway.start()
        await controller.prime()
        endpoints = asyncio.create_task(keep_running(stop, controller.run, what="endpoints"))
        await _wait_ready(gateway, stop, spec.ready_timeout_s)
        if not stop.is_set():
            sock = reuseport_socket(spec.options.host, spec.options.port)
            served = bound_server(gateway, spec.number, sock, lifespan=False)
            await served.startup()
            if served.should_exit:
                raise SystemExit(1)
            main = asyncio.create_task(served.main_loop())
            await _publish(gateway, conn, stop, spec.publish_s)
            served.should_exit = True
            await main
        await endpoints
    finally:
        if served is not None and served.started:
            await served.shutdown()
        await gateway.stop()
        if system.backend is not None:  # the cluster only: the replicas are up's
            await system.backend.close()
        system.close()


def main(argv: list[str] | None = None) -> None:
    """A child gateway: ``python -m modelplane.system.gateway_child FD`` (FD: its pipe to up)."""
    import uvloop

    args = sys.argv[1:] if argv is None else argv
    conn = Connection(int(args[0]))
    spec: ChildSpec = conn.recv()
    _die_with_parent(spec.parent)
    logging.basicConfig(level=logging.WARNING, format=f"gateway {spec.number}: %(message)s")
    from modelplane.errors import ModelplaneError

    try:
        uvloop.run(_serve_child(spec, conn))
    except ModelplaneError as exc:  # up announces the exit and starts it again
        log.error("%s", exc.message)
        raise SystemExit(1) from None


if __name__ == "__main__":
    main()
