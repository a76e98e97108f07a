"""More than one gateway on one machine: ``modelplane up --gateways N``.

The ``up`` process runs the first gateway (number 1) with the API and every controller;
the other N-1 are child processes (:mod:`.gateway_child`, spawned, never forked from a
process with threads). Each child runs a gateway with its own worker pools and its own
endpoint controller over the same store, so an ``apply``, a rollout's weight change or a
rollback reaches every gateway within the controller's poll; nothing else runs there. Every
gateway binds the same host and port with ``SO_REUSEPORT`` and the kernel spreads new
connections over them. Each answer names its gateway in a ``modelplane-gateway`` header.

The evidence travels by the pipe each child shares with ``up``: a child sends its gateway's
snapshot every ``publish_s`` (a thread of its own writes, so a slow reader never holds up
serving), and :class:`~.gateway_sums.GatewaySums` sums what the gateways counted for the
controllers that run once: the rollout controller's gates, the SLO recorder, the
autoscaler and the degrader (whose decisions go back down the pipes). A pipe needs no
store table and no schema, tells ``up`` at once that a child is gone (end of file), and a
snapshot is read exactly as the primary's. Gateways on other machines (one per Ray node)
would publish to a store table instead; the sums take their readings the same way.

A child stops with ``up``: SIGTERM drains it like the primary; it also gets SIGTERM when
``up`` dies (``PR_SET_PDEATHSIG``) and stops when its pipe ends. A child that exits
otherwise is announced and started again, after 0.5 s doubling to 30 s while it keeps
failing. A child listens only once the endpoints in the store run (or after
``ready_timeout_s``), so a restarted one does not answer 503 for endpoints it is starting.
Packages are fetched into a cache folder of each gateway's own: two processes never fetch
into one folder at once.

On Ray (``--backend ray``) the replicas are shared: only ``up``'s gateway places them, and
each child joins the cluster (its token from the ``RAY_AUTH_TOKEN`` it inherits) and serves
from those same replicas, over sockets of its own (:mod:`.attached_pool`).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import pickle
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from multiprocessing.connection import Connection
from typing import TYPE_CHECKING, Any

import uvicorn

from modelplane.system.gateway_sums import (
    PRIMARY,
    GatewayReading,
    GatewaySums,
    SummedConcurrency,
    SummedEvidence,
    SummedSlo,
    UsageView,
)

if TYPE_CHECKING:
    from sqlalchemy import Engine

    from modelplane.controlplane.usage import UsageSampler
    from modelplane.dataplane.gateway import Gateway
    from modelplane.settings import Settings
    from modelplane.system.live import SystemOptions

__all__ = [
    "GATEWAY_HEADER",
    "ChildSpec",
    "GatewayFleet",
    "Tagged",
    "bound_server",
    "reuseport_socket",
]

log = logging.getLogger("modelplane.up")

GATEWAY_HEADER = b"modelplane-gateway"
"""The response header naming the gateway that answered (only with more than one)."""

_BACKOFF_S = (0.5, 30.0)
_HEALTHY_S = 60.0
"""A child that ran this long before it exited is restarted without waiting."""


def reuseport_socket(host: str, port: int) -> socket.socket:
    """A TCP socket bound to ``host:port`` with ``SO_REUSEPORT``, not listening yet: every
    gateway binds its own, and the kernel spreads connections over those that listen."""
    from modelplane.errors import Conflict

    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        sock.bind((host, port))
    except OSError as exc:
        sock.close()
        raise Conflict(
            f"--port: cannot listen on {host}:{port} beside the other gateways"
            f" (a process that does not share the port holds it?): {exc.strerror or exc}",
            details=[{"field": "port", "problem": "in use"}],
        ) from exc
    return sock


class Tagged:
    """The gateway's ASGI app with a ``modelplane-gateway`` header on every answer."""

    def __init__(self, gateway: Gateway, number: int) -> None:
        self.gateway = gateway
        self.header = (GATEWAY_HEADER, str(number).encode())

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.gateway(scope, receive, send)
            return
        header = self.header

        async def tagged(message: Any) -> None:
            if message["type"] == "http.response.start":
                message["headers"] = [*message.get("headers", ()), header]
            await send(message)

        await self.gateway(scope, receive, tagged)


def bound_server(
    gateway: Gateway, number: int, sock: socket.socket, *, lifespan: bool
) -> uvicorn.Server:
    """A uvicorn server for ``gateway`` under its edge's limits, on ``sock`` (bound)."""
    from modelplane.dataplane.edge import raise_fd_limit, server_options

    raise_fd_limit()
    host, port = sock.getsockname()[:2]
    config = uvicorn.Config(
        Tagged(gateway, number),
        host=host,
        port=port,
        lifespan="on" if lifespan else "off",
        log_level="warning",
        access_log=False,
        **server_options(gateway.config.edge),
    )
    config.load()
    built = _BoundServer(config, sock)
    built.lifespan = config.lifespan_class(config)
    return built


class _BoundServer(uvicorn.Server):
    """A uvicorn server with its socket given: ``startup()`` needs no arguments, as the
    live system calls it."""

    def __init__(self, config: uvicorn.Config, sock: socket.socket) -> None:
        super().__init__(config)
        self.sock = sock

    async def startup(self, sockets: list[socket.socket] | None = None) -> None:
        await super().startup(sockets=sockets or [self.sock])


# ---------------------------------------------------------------------------- up's side


@dataclass(frozen=True, slots=True)
class ChildSpec:
    """What a child gateway needs to build itself (sent pickled down its pipe)."""

    number: int
    settings: Settings
    options: SystemOptions
    predict_auth: bool
    """Predictions need a token (the primary's choice)."""
    parent: int
    publish_s: float = 0.5
    ready_timeout_s: float = 120.0


@dataclass(slots=True)
class _Child:
    number: int
    process: subprocess.Popen[bytes] | None = None
    conn: Connection | None = None
    started_at: float = 0.0
    failures: int = 0
    restart_at: float | None = None
    serving: bool = False
    announced: bool = False


class GatewayFleet:
    """The child gateways of one ``up``: started, watched, restarted, stopped; and the
    sums of every gateway's evidence for the controllers (see :mod:`.gateway_sums`)."""

    def __init__(
        self,
        primary: Gateway,
        settings: Settings,
        options: SystemOptions,
        *,
        predict_auth: bool,
        executable: str = sys.executable,
    ) -> None:
        self.primary = primary
        self.settings = settings
        self.options = options
        self.predict_auth = predict_auth
        self.executable = executable
        self.sums = GatewaySums(primary)
        self.children = [_Child(n) for n in range(PRIMARY + 1, options.gateways + 1)]
        self._degraded: tuple[frozenset[str], frozenset[str]] | None = None

    # -- what the controllers read

    def evidence(self) -> SummedEvidence:
        return SummedEvidence(self.sums)

    def slo(self) -> SummedSlo:
        return SummedSlo(self.sums)

    def concurrency(self, *, shared: bool = False) -> SummedConcurrency:
        return SummedConcurrency(self.sums, shared=shared)

    def usage(self, engine: Engine, settings: Settings) -> UsageSampler:
        """The usage sampler over every gateway's workers (as ``system.usage.usage_sampler``
        builds it for one gateway)."""
        from modelplane.controlplane.usage import UsageSampler
        from modelplane.system.gateway_views import GatewayReplicas
        from modelplane.system.usage import LocalCluster

        cluster = LocalCluster(settings.home / "cluster.yaml")
        return UsageSampler(
            engine,
            GatewayReplicas(UsageView(self.sums), cluster),
            cluster,
            sample_s=settings.usage_sample_s,
            flush_s=max(settings.usage_flush_s, settings.usage_sample_s),
        )

    def server(self) -> uvicorn.Server:
        """The primary's server, on a socket it shares with the children (port 0: the
        port the system chose, for all of them)."""
        sock = reuseport_socket(self.options.host, self.options.port)
        self.options = replace(self.options, port=sock.getsockname()[1])
        return bound_server(self.primary, PRIMARY, sock, lifespan=True)

    def degrade(self, shed_tiers: frozenset[str], fallback_tiers: frozenset[str]) -> None:
        """The degrader's ``DegradationTarget``: every gateway degrades alike."""
        self.primary.degrade(shed_tiers, fallback_tiers)
        self._degraded = (frozenset(shed_tiers), frozenset(fallback_tiers))
        for child in self.children:
            self._send_degraded(child)

    def _send_degraded(self, child: _Child) -> None:
        if self._degraded is None or child.conn is None:
            return
        with contextlib.suppress(OSError, ValueError):
            child.conn.send(("degrade", *self._degraded))

    # -- the children's lifecycle

    async def run(self, stop: asyncio.Event, announce: Callable[[str], None]) -> None:
        """Start the children, restart any that exits, until ``stop``; then drain them."""
        try:
            for child in self.children:
                self._start(child, announce)
            while not stop.is_set():
                self._watch(announce)
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(stop.wait(), 0.2)
        finally:
            await self._stop_all()

    def _start(self, child: _Child, announce: Callable[[str], None]) -> None:
        # one gateway only in the child, whatever this process runs; on Ray it serves the
        # replicas this process's gateway placed (never a set of its own)
        options = replace(self.options, gateways=1, attached=self.options.backend != "local")
        spec = ChildSpec(child.number, self.settings, options, self.predict_auth, os.getpid())
        parent_end, child_end = socket.socketpair()
        try:
            # started from the event loop's thread: PR_SET_PDEATHSIG follows the thread
            process = subprocess.Popen(
                [self.executable, "-m", "modelplane.system.gateway_child", str(child_end.fileno())],
                pass_fds=[child_end.fileno()],
                stdin=subprocess.DEVNULL,
            )
        except OSError as exc:
            parent_end.close()
            self._retry(child, f"could not start: {exc}", announce)
            return
        finally:
            child_end.close()
        conn = Connection(parent_end.detach())
        child.process, child.conn = process, conn
        child.started_at, child.restart_at, child.serving, child.announced = (
            time.monotonic(), None, False, False,
        )  # fmt: skip
        with contextlib.suppress(OSError):  # a child that died at once is seen by _watch
            conn.send(spec)
            self._send_degraded(child)
        threading.Thread(
            target=self._read, args=(child, conn, process.pid), daemon=True,
            name=f"gateway-{child.number}-reader",
        ).start()  # fmt: skip

    def _retry(self, child: _Child, why: str, announce: Callable[[str], None]) -> None:
        """Start ``child`` again after a backoff that doubles while it keeps failing."""
        now = time.monotonic()
        child.failures = 0 if now - child.started_at >= _HEALTHY_S else child.failures + 1
        delay = min(_BACKOFF_S[0] * 2 ** max(child.failures - 1, 0), _BACKOFF_S[1])
        line = f"gateway  {child.number} {why}; restarting in {delay:g} s"
        log.warning(line)
        announce(line)
        child.restart_at = now + delay
        if child.conn is not None:
            child.conn.close()
            child.conn = None

    def _read(self, child: _Child, conn: Connection, pid: int) -> None:
        """A child's snapshots, as they come, until its pipe ends."""
        while True:
            try:
                snapshot = conn.recv()
            except (EOFError, OSError, pickle.UnpicklingError):
                return
            self.sums.observe(GatewayReading(child.number, pid, snapshot, time.monotonic()))
            child.serving = True

    def _watch(self, announce: Callable[[str], None]) -> None:
        now = time.monotonic()
        for child in self.children:
            if child.restart_at is not None:
                if now >= child.restart_at:
                    self._start(child, announce)
                continue
            process = child.process
            if process is None:
                continue
            if child.serving and not child.announced:
                child.announced = True
                announce(f"gateway  {child.number} serving (pid {process.pid})")
            code = process.poll()
            if code is not None:
                why = f"signal {-code}" if code < 0 else f"exit code {code}"
                self._retry(child, f"(pid {process.pid}) stopped ({why})", announce)

    async def _stop_all(self) -> None:
        running = [c.process for c in self.children if c.process and c.process.poll() is None]
        for process in running:
            with contextlib.suppress(ProcessLookupError):
                process.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + self.primary.config.edge.shutdown_timeout_s + 15
        while any(p.poll() is None for p in running) and time.monotonic() < deadline:
            await asyncio.sleep(0.05)
        for process in running:
            if process.poll() is None:
                log.warning("gateway pid %d did not drain in time; killed", process.pid)
                process.kill()
                process.wait()
        for child in self.children:
            if child.conn is not None:
                child.conn.close()
                child.conn = None
