"""Run the gateway under uvicorn (uvloop, httptools), in the foreground or in a thread.

Start: the lifespan starts one worker pool and batcher per model version (each pool warms
its replicas up before it reports ready), then uvicorn binds the socket, so a port that
answers is a port that can predict. Only loopback unless told otherwise.

Stop (SIGTERM or SIGINT): uvicorn stops accepting, lets every request already read finish
its response (connections with nothing in flight close at once), then the lifespan sends
what batchers still hold and stops the workers. No accepted request goes unanswered: one
still unanswered after the edge's drain timeout (a body still trickling in, say) is
answered 503 and its connection closed (see :mod:`.edge`).
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import signal
import threading
import time
from collections.abc import Callable, Iterator, Sequence

import uvicorn

from modelplane.dataplane.edge import raise_fd_limit, server_options
from modelplane.dataplane.endpoint_runtime import EndpointConfig
from modelplane.dataplane.gateway import Gateway, GatewayConfig
from modelplane.errors import WorkerFailed

__all__ = ["DEFAULT_HOST", "ServerThread", "bound_port", "serve_endpoints", "uvicorn_server"]

DEFAULT_HOST = "127.0.0.1"

OnReady = Callable[["uvicorn.Server"], None]


class _Server(uvicorn.Server):
    """uvicorn's server, telling ``on_ready`` once the socket is bound."""

    def __init__(self, config: uvicorn.Config, on_ready: OnReady | None, freeze_gc: bool) -> None:
        super().__init__(config)
        self._on_ready = on_ready
        self._freeze_gc = freeze_gc

    async def startup(self, sockets: list[object] | None = None) -> None:  # type: ignore[override]
        await super().startup(sockets)  # type: ignore[arg-type]
        if not self.started:
            return
        if self._freeze_gc:
            # Everything alive now (modules, specs, compiled contracts) lives as long as the
            # server: keep it out of every future collection, so full collections stay short
            # and do not show up as tail latency.
            gc.collect()
            gc.freeze()
        if self._on_ready is not None:
            self._on_ready(self)


def uvicorn_server(
    gateway: Gateway,
    host: str = DEFAULT_HOST,
    port: int = 8000,
    *,
    on_ready: OnReady | None = None,
    freeze_gc: bool = False,
) -> uvicorn.Server:
    """A uvicorn server for ``gateway``, tuned for the hot path: no access log, no proxy
    header rewriting (it listens on loopback by default; put a proxy's trust in the proxy),
    and the limits of ``gateway.config.edge``. ``freeze_gc`` moves everything alive at
    startup out of the collector's reach; use it when the server owns its process."""
    config = uvicorn.Config(
        gateway,
        host=host,
        port=port,
        loop="uvloop",
        lifespan="on",
        access_log=False,
        log_level="warning",
        server_header=False,
        date_header=False,
        proxy_headers=False,
        **server_options(gateway.config.edge),
    )
    return _Server(config, on_ready, freeze_gc)


def bound_port(server: uvicorn.Server) -> int:
    """The port a started server listens on (useful with ``port=0``)."""
    for listener in server.servers:
        for sock in listener.sockets:
            return int(sock.getsockname()[1])
    raise RuntimeError("the server is not listening")


@contextlib.contextmanager
def _quiet_resignal() -> Iterator[None]:
    """uvicorn re-raises the signal that stopped it once it has drained; by then the work
    is done, so let it land on a no-op handler and return normally instead of dying."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = {sig: signal.signal(sig, lambda *_: None) for sig in (signal.SIGTERM, signal.SIGINT)}
    try:
        yield
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


def serve_endpoints(
    endpoints: Sequence[EndpointConfig],
    host: str = DEFAULT_HOST,
    port: int = 8000,
    *,
    config: GatewayConfig | None = None,
    on_ready: OnReady | None = None,
) -> None:
    """Serve ``endpoints`` until SIGTERM or SIGINT, then drain; raises if startup fails."""
    raise_fd_limit()
    gateway = Gateway(endpoints, config)
    server = uvicorn_server(gateway, host, port, on_ready=on_ready, freeze_gc=True)
    # uvicorn raises SystemExit when the lifespan startup failed: the error is the gateway's
    with _quiet_resignal(), contextlib.suppress(SystemExit):
        server.run()
    if gateway.startup_error is not None:
        raise gateway.startup_error
    if not server.started:
        raise WorkerFailed(f"the gateway did not start on {host}:{port}")


class ServerThread:
    """A gateway served from a background thread: for embedding, tools and tests."""

    def __init__(
        self,
        endpoints: Sequence[EndpointConfig],
        host: str = DEFAULT_HOST,
        port: int = 0,
        *,
        config: GatewayConfig | None = None,
    ) -> None:
        self.gateway = Gateway(endpoints, config)
        self.host = host
        self.port = port
        self._server = uvicorn_server(self.gateway, host, port)
        self._thread = threading.Thread(target=self._run, name="modelplane-gateway", daemon=True)
        self._failure: BaseException | None = None

    def _run(self) -> None:
        try:
            self._server.run()
        except BaseException as exc:  # SystemExit on a failed startup, or a bug
            self._failure = exc

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    @property
    def server(self) -> uvicorn.Server:
        """The uvicorn server: its ``server_state`` holds the open connections."""
        return self._server

    @property
    def requests_in_flight(self) -> int:
        """Requests whose headers have arrived and that are not answered yet."""
        return len(self._server.server_state.tasks)

    def start(self, timeout_s: float = 60.0) -> ServerThread:
        """Start serving; return once the port answers (or raise why it cannot)."""
        self._thread.start()
        end = time.monotonic() + timeout_s
        while not self._server.started:
            if not self._thread.is_alive() or time.monotonic() > end:
                self.stop()
                raise self.gateway.startup_error or WorkerFailed(
                    f"the gateway did not start: {self._failure!r}"
                )
            time.sleep(0.01)
        self.port = bound_port(self._server)
        return self

    def update(self, endpoints: Sequence[EndpointConfig], timeout_s: float = 120.0) -> None:
        """Serve exactly ``endpoints`` from now on (see :meth:`Gateway.update`)."""
        loop = self.gateway.loop
        if loop is None:
            raise WorkerFailed("the gateway is not running")
        future = asyncio.run_coroutine_threadsafe(self.gateway.update(endpoints), loop)
        future.result(timeout_s)

    def stop(self, timeout_s: float = 30.0) -> None:
        """Drain and stop, as on SIGTERM."""
        self._server.should_exit = True
        if self._thread.is_alive():
            self._thread.join(timeout_s)

    def __enter__(self) -> ServerThread:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
