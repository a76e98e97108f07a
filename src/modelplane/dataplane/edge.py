"""The HTTP edge: what a connection may cost the server, and how it is cut when it costs more.

uvicorn bounds neither how long a client may take to send its headers or its body nor how
many connections it may hold, so idle or trickling sockets pin file descriptors until the
process can accept no more. :class:`EdgeConfig` holds every limit of the edge in one place;
:func:`server_options` turns it into uvicorn settings, with :class:`EdgeProtocol` (uvicorn's
httptools protocol plus deadlines and a connection cap) as the protocol.

A connection is *idle* while no request of it is with the application: before its first
byte, while its headers arrive, and between keep-alive requests. The cap closes the oldest
idle connection to make room for a new one, so a flood of idle sockets cannot lock out a
client that sends a request; only when every connection has a request in flight is the new
one answered ``503`` and closed. A client that takes longer than the header or body
deadline is answered ``408`` and closed; at shutdown, a request not answered within the
drain timeout (a body still trickling in, say) is answered ``503`` and closed, never left to
uvicorn's cancellation, which answers ``500``.
"""

from __future__ import annotations

import asyncio
import ctypes
import ctypes.util
import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, ClassVar

import msgspec
from uvicorn.protocols.http.httptools_impl import STATUS_LINE, HttpToolsProtocol

from modelplane.spec.contract import DEFAULT_MAX_ROWS

__all__ = [
    "API_EDGE",
    "EdgeConfig",
    "EdgeProtocol",
    "edge_protocol",
    "raise_fd_limit",
    "server_options",
    "trim_memory",
]


@dataclass(frozen=True, slots=True)
class EdgeConfig:
    """Limits of one HTTP server (the gateway's or the control API's).

    The defaults suit a gateway on a machine of its own: a header deadline far above what
    any real client needs on a LAN or the Internet (10 s), a body deadline that admits the
    largest body (64 MiB) at ~1 MiB/s, and a connection cap well under the file descriptor
    limit that ``serve`` and ``up`` raise to (at most) 65,536.
    """

    header_timeout_s: float = 10.0
    """From the connection's first byte (or its opening) until its headers are complete."""
    body_timeout_s: float = 60.0
    """From the end of the headers until the whole body has arrived."""
    keep_alive_s: int = 5
    """How long an idle keep-alive connection is kept open (uvicorn's ``timeout_keep_alive``)."""
    keep_alive_requests: int = 10_000
    """Requests served on one connection before it is closed (``connection: close``), so
    load balancing stays even for long-lived clients."""
    max_connections: int = 4096
    """Open connections at most; see the module docstring for what happens past it."""
    drain_timeout_s: float = 10.0
    """At shutdown, how long a request in flight has to finish before it is answered 503."""
    max_rows: int = DEFAULT_MAX_ROWS
    """Rows per request for an endpoint whose contract sets no ``max_rows``."""
    offload_bytes: int = 1 << 20
    """Bodies at least this large are decoded in a helper process, not on the event loop
    every endpoint shares; below it a decode takes under ~10 ms and is cheaper in place."""
    max_large_bodies: int = 2
    """Large bodies read and decoded at once; others wait unread (TCP pushes back on their
    clients), which bounds the memory a burst of large requests can take."""
    offload_idle_s: float = 5.0
    """Decode helpers are stopped after this long without a large body, and what they hold
    with them; the next large body starts them again (tens of milliseconds)."""

    def __post_init__(self) -> None:
        for name in ("header_timeout_s", "body_timeout_s", "drain_timeout_s", "offload_idle_s"):
            value = getattr(self, name)
            if not (value > 0 and math.isfinite(value)):
                raise ValueError(f"EdgeConfig.{name} must be a positive number, got {value!r}")
        for name in ("keep_alive_s", "keep_alive_requests", "max_connections", "max_rows",
                     "offload_bytes", "max_large_bodies"):  # fmt: skip
            if getattr(self, name) < 1:
                raise ValueError(f"EdgeConfig.{name} must be at least 1")

    @property
    def shutdown_timeout_s(self) -> int:
        """uvicorn's graceful shutdown timeout: the drain timeout plus time for the cut
        responses to be written and the tasks to end, so uvicorn never cancels first."""
        return math.ceil(self.drain_timeout_s) + 2


API_EDGE = EdgeConfig(max_connections=256, body_timeout_s=30.0)
"""The control API's edge: few clients (operators, CI, controllers), small bodies."""


_ENCODER = msgspec.json.Encoder()


def _raw_response(status: int, code: str, message: str, *, retry_after: bool = False) -> bytes:
    body = _ENCODER.encode({"error": {"code": code, "message": message, "details": []}})
    head = [STATUS_LINE[status], b"content-type: application/json\r\n",
            b"content-length: %d\r\n" % len(body), b"connection: close\r\n"]  # fmt: skip
    if retry_after:
        head.append(b"retry-after: 1\r\n")
    return b"".join([*head, b"\r\n", body])


_HEADER_TIMEOUT = _raw_response(408, "request_timeout", "the request headers came too slowly")
_BODY_TIMEOUT = _raw_response(408, "request_timeout", "the request body came too slowly")
_SHUTTING_DOWN = _raw_response(503, "server_busy", "the server is shutting down", retry_after=True)
_FULL = _raw_response(503, "server_busy", "too many connections", retry_after=True)


class EdgeProtocol(HttpToolsProtocol):
    """uvicorn's httptools protocol with the edge's deadlines and connection cap.

    Use :func:`edge_protocol` for a subclass bound to one server's :class:`EdgeConfig`:
    the class carries the config and the server's idle connections.
    """

    edge: ClassVar[EdgeConfig] = EdgeConfig()
    idle: ClassVar[dict[EdgeProtocol, None]] = {}
    """Idle connections of this server, oldest first (a dict keeps insertion order)."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._deadline: asyncio.TimerHandle | None = None
        self._drain: asyncio.TimerHandle | None = None
        self._served = 0
        self._reading = False
        """True from a request's first byte until its headers are complete."""

    # ------------------------------------------------------------ connection

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        if len(self.connections) > self.edge.max_connections and not self._evict_idle():
            transport.write(_FULL)
            transport.close()
            return
        self.idle[self] = None
        self._arm(self.edge.header_timeout_s, self._header_timeout)

    def connection_lost(self, exc: Exception | None) -> None:
        self.idle.pop(self, None)
        self._disarm()
        if self._drain is not None:
            self._drain.cancel()
            self._drain = None
        super().connection_lost(exc)

    def _evict_idle(self) -> bool:
        for victim in self.idle:
            if victim is not self:
                del self.idle[victim]
                victim._disarm()
                victim.transport.close()
                return True
        return False

    # ------------------------------------------------------------ request

    def on_message_begin(self) -> None:
        super().on_message_begin()
        self._reading = True
        if self._deadline is None:  # a keep-alive request: its headers start now
            self._arm(self.edge.header_timeout_s, self._header_timeout)

    def on_headers_complete(self) -> None:
        self._reading = False
        self.idle.pop(self, None)
        self._disarm()
        super().on_headers_complete()
        self._served += 1
        if self._served >= self.edge.keep_alive_requests and self.cycle is not None:
            self.cycle.keep_alive = False
        self._arm(self.edge.body_timeout_s, self._body_timeout)

    def on_message_complete(self) -> None:
        self._disarm()
        super().on_message_complete()

    def on_response_complete(self) -> None:
        pipelined = bool(self.pipeline)  # the next request is already with the application
        super().on_response_complete()
        if not pipelined and not self.transport.is_closing():
            self.idle[self] = None

    def shutdown(self) -> None:
        cycle = self.cycle
        if cycle is not None and not cycle.response_complete:
            # its own timer: the request may be reading its body or computing its answer
            self._drain = self.loop.call_later(self.edge.drain_timeout_s, self._drain_timeout)
        super().shutdown()

    # ------------------------------------------------------------ deadlines

    def _arm(self, delay_s: float, then: Callable[[], None]) -> None:
        self._disarm()
        self._deadline = self.loop.call_later(delay_s, then)

    def _disarm(self) -> None:
        if self._deadline is not None:
            self._deadline.cancel()
            self._deadline = None

    def _header_timeout(self) -> None:
        self._deadline = None
        if self._reading:
            self._cut(_HEADER_TIMEOUT)
        else:  # not a byte of a request yet: nobody to answer
            self.idle.pop(self, None)
            self.transport.close()

    def _body_timeout(self) -> None:
        self._deadline = None
        self._cut(_BODY_TIMEOUT)

    def _drain_timeout(self) -> None:
        self._drain = None
        self._cut(_SHUTTING_DOWN)

    def _cut(self, response: bytes) -> None:
        """Answer ``response`` unless an answer has begun, then close. The application, if
        it holds the request, sees a disconnect: what it sends after goes nowhere."""
        transport = self.transport
        if transport.is_closing():
            return
        cycle = self.cycle
        started = cycle is not None and cycle.response_started and not cycle.response_complete
        if not started:
            transport.write(response)
        if cycle is not None and not cycle.response_complete:
            cycle.disconnected = True
            cycle.message_event.set()
        transport.close()


def edge_protocol(config: EdgeConfig) -> type[EdgeProtocol]:
    """An :class:`EdgeProtocol` subclass of its own for one server (its own idle set)."""

    class BoundEdgeProtocol(EdgeProtocol):
        edge: ClassVar[EdgeConfig] = config
        idle: ClassVar[dict[EdgeProtocol, None]] = {}

    return BoundEdgeProtocol


def server_options(config: EdgeConfig) -> dict[str, Any]:
    """``uvicorn.Config`` keyword arguments that put ``config`` in force."""
    return {
        "http": edge_protocol(config),
        "timeout_keep_alive": config.keep_alive_s,
        "timeout_graceful_shutdown": config.shutdown_timeout_s,
    }


def raise_fd_limit(want: int = 65_536) -> int:
    """Raise this process's soft limit on open files to ``want`` (or the hard limit, if
    lower) and return it: the connection caps must be reached before the OS's limit is,
    and the usual soft default (1,024) is below the gateway's cap alone."""
    try:
        import resource
    except ImportError:  # not POSIX
        return want
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    target = want if hard == resource.RLIM_INFINITY else min(want, hard)
    if soft != resource.RLIM_INFINITY and soft < target:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
        except (ValueError, OSError):
            return soft
        return target
    return soft


def _malloc_trim() -> Callable[[int], int] | None:
    name = ctypes.util.find_library("c")
    if name is None:
        return None
    try:
        trim: Callable[[int], int] = ctypes.CDLL(name).malloc_trim
    except (OSError, AttributeError):  # not glibc
        return None
    return trim


_TRIM = _malloc_trim()


def trim_memory() -> None:
    """Give freed heap pages back to the OS (glibc ``malloc_trim``; elsewhere nothing).

    After a large body is freed, glibc keeps the pages for reuse; a burst of large requests
    would otherwise leave the gateway at its peak size for good."""
    if _TRIM is not None:
        _TRIM(0)
