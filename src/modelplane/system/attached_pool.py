"""A child gateway's pool on Ray: the replicas ``up``'s own gateway placed, shared.

With ``up --backend ray --gateways N`` only the ``up`` process places replicas (its
:class:`~.backend_pool.BackendFleet`); every child gateway serves from those same replicas
through an :class:`AttachedPool`, never starting or stopping one. The pool finds the replicas
placed for its endpoint and model version (the record each leaves in Ray at start), asks each
actor how to reach its model process, and opens a socket of its own to it (the data plane's
framing, as ``up``'s gateway does). Every ``refresh_s`` it looks again: a replica placed anew
(on another node after its node died, or one more after a resize) joins, one stopped leaves.

A batch goes to the ready replica with the fewest requests outstanding from this gateway; one
whose replica is lost (its connection broke) is retried once on another, as in ``BackendPool``.
A replica that holds a request past its deadline is left to ``up``'s pool, which stops it.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol

import numpy.typing as npt

from modelplane.backends.wire import Frame, Op, SocketChannel
from modelplane.dataplane.pool import PoolConfig, PoolRequest, ReplicaInfo, least_outstanding
from modelplane.dataplane.pool import ReplicaState as PoolReplicaState
from modelplane.errors import DeadlineExceeded, ModelplaneError, ReplicaLost, WorkerFailed

if TYPE_CHECKING:
    from modelplane.dataplane.pool.hosted import PoolFactory

__all__ = ["AttachedPool", "Channel", "ReplicaDirectory", "attached_pools"]

Arrays = dict[str, npt.NDArray[Any]]

log = logging.getLogger("modelplane.system.attached_pool")


class ReplicaDirectory(Protocol):
    """Where placed replicas are found (``backends.ray.RayBackend``)."""

    async def placed_for(self, endpoint: str, model: str) -> Mapping[str, str]:
        """Replica names serving ``model`` for ``endpoint``, each with its node."""
        ...

    async def connection(self, name: str, timeout_s: float) -> tuple[str, int, str] | None:
        """``(host, port, secret)`` of a ready replica; ``None``: not reachable now."""
        ...


class Channel(Protocol):
    """A connection to one replica's model process (``backends.wire.SocketChannel``)."""

    closed: bool

    async def call(self, op: Op, arrays: Arrays | None, timeout_s: float) -> Frame: ...

    async def close(self) -> None: ...


Connect = Callable[[str, int, str, float], Awaitable[Channel]]


def attached_pools(directory: ReplicaDirectory, *, refresh_s: float = 1.0) -> PoolFactory:
    """The pool factory (``GatewayConfig.pools``) of a gateway that places nothing."""

    def build(request: PoolRequest) -> AttachedPool:
        return AttachedPool(directory, request, refresh_s=refresh_s)

    return build


@dataclass(slots=True)
class _Attached:
    name: str
    channel: Channel
    outstanding: int = 0


class AttachedPool:
    """The replicas of one model version that another gateway placed (a ``ReplicaPool``)."""

    def __init__(
        self,
        directory: ReplicaDirectory,
        request: PoolRequest,
        *,
        refresh_s: float = 1.0,
        connect: Connect = SocketChannel.connect,
    ) -> None:
        self.directory = directory
        self.request = request
        self.name = request.name
        self.config: PoolConfig = request.config
        """``replicas`` is the endpoint's count; ``up``'s gateway places them."""
        self.restarts = 0
        self.revivals = 0
        self.refresh_s = refresh_s
        self._connect = connect
        self._placed: dict[str, str] = {}
        """Every replica placed for this version, by name, with its node (the last look)."""
        self._attached: dict[str, _Attached] = {}
        self._attaching: dict[str, asyncio.Task[None]] = {}
        self._refresher: asyncio.Task[None] | None = None
        self._joined = asyncio.Event()
        self._stopping = False
        self._turn = 0
        self._was_ready = False

    @property
    def stopping(self) -> bool:
        return self._stopping

    def replicas(self) -> list[ReplicaInfo]:
        out: list[ReplicaInfo] = []
        ready, starting = PoolReplicaState.READY, PoolReplicaState.STARTING
        for index, name in enumerate(sorted(self._placed.keys() | self._attached.keys())):
            found = self._attached.get(name)
            node = self._placed.get(name)
            if found is not None and not found.channel.closed:
                out.append(ReplicaInfo(index, ready, None, found.outstanding, node))
            else:
                out.append(ReplicaInfo(index, starting, None, 0, node, "not attached yet"))
        # the endpoint's count, as up's pool reports it: the ones not placed yet as starting
        for index in range(len(out), self.config.replicas):
            out.append(ReplicaInfo(index, starting, None, 0, None, "not placed yet"))
        return out

    def _ready(self, exclude: list[str]) -> list[_Attached]:
        return [
            found for name, found in self._attached.items()
            if name not in exclude and not found.channel.closed
        ]  # fmt: skip

    # ------------------------------------------------------------------ lifecycle

    async def start(self) -> None:
        """Return once a replica is attached; raise ``WorkerFailed`` when none is within
        ``start_timeout_s``."""
        if self._refresher is None:
            self._refresher = asyncio.get_running_loop().create_task(self._keep_refreshing())
        timeout_s = self.config.start_timeout_s
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._joined.wait(), timeout_s)
        if not self._ready([]):
            await self.stop()
            raise WorkerFailed(
                f"no replica of {self.name} to attach to within {timeout_s:g}s: the gateway"
                " of the up process places them, and none of them answered here"
            )

    async def _keep_refreshing(self) -> None:
        while not self._stopping:
            try:
                await self.refresh()
            except Exception:  # one look that fails is logged; the next one looks afresh
                log.exception("%s: looking for its replicas failed", self.name)
            await asyncio.sleep(self.refresh_s)  # a cadence, not a wait for a condition

    async def refresh(self) -> None:
        """Look once: attach replicas placed since, drop those stopped or broken."""
        try:
            placed = dict(
                await self.directory.placed_for(self.request.endpoint, self.request.label)
            )
        except ModelplaneError as exc:  # the head is away: keep what is attached
            log.warning("%s: cannot list its replicas: %s", self.name, exc.message)
            return
        if self._stopping:
            return
        self._placed = placed
        for name, found in list(self._attached.items()):
            if found.channel.closed or name not in placed:
                self._drop(found, lost=found.channel.closed)
        for name in placed:
            if name not in self._attached and name not in self._attaching:
                task = asyncio.get_running_loop().create_task(self._attach(name))
                self._attaching[name] = task
        self._note_ready()

    async def _attach(self, name: str) -> None:
        try:
            found = await self.directory.connection(name, self.config.start_timeout_s)
            if found is None or self._stopping:
                return
            host, port, secret = found
            channel = await self._connect(host, port, secret, self.config.start_timeout_s)
        except ModelplaneError as exc:
            log.info("%s: replica %s not attached yet: %s", self.name, name, exc.message)
            return
        finally:
            self._attaching.pop(name, None)
        if self._stopping or name not in self._placed:
            await channel.close()
            return
        self._attached[name] = _Attached(name, channel)
        self._joined.set()
        self._note_ready()

    def _drop(self, found: _Attached, *, lost: bool) -> None:
        if self._attached.get(found.name) is found:
            del self._attached[found.name]
            if lost:
                self.restarts += 1
        if not found.channel.closed:
            asyncio.get_running_loop().create_task(found.channel.close())

    def _note_ready(self) -> None:
        ready = bool(self._ready([]))
        if ready and not self._was_ready:
            self.revivals += 1  # an open breaker probes at once
        self._was_ready = ready

    # ------------------------------------------------------------------ serving

    async def predict(self, arrays: Arrays, timeout_s: float) -> Arrays:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + min(timeout_s, self.config.request_timeout_s)
        tried: list[str] = []
        failure: ReplicaLost | None = None
        for _ in range(2):
            chosen = await self._choose(tried, deadline)
            if chosen is None:
                break
            chosen.outstanding += 1
            try:
                frame = await chosen.channel.call(Op.PREDICT, arrays, deadline - loop.time())
            except ReplicaLost as exc:
                failure = exc
                tried.append(chosen.name)
                self._drop(chosen, lost=True)
                self._note_ready()
                continue
            finally:
                chosen.outstanding -= 1
            if frame.op is Op.ERROR:
                raise WorkerFailed(f"the model raised {frame.error_type}: {frame.error}")
            return frame.arrays
        if failure is not None:
            raise WorkerFailed(str(failure))
        raise WorkerFailed(f"no ready replica of {self.name} to attach to")

    async def _choose(self, exclude: list[str], deadline: float) -> _Attached | None:
        loop = asyncio.get_running_loop()
        while not self._stopping:
            ready = self._ready(exclude)
            if ready:
                self._turn += 1
                return ready[least_outstanding([r.outstanding for r in ready], self._turn)]
            if exclude:
                return None  # the retry goes to another replica or not at all
            remaining = deadline - loop.time()
            if remaining <= 0:
                raise DeadlineExceeded(f"no replica of {self.name} was ready in time")
            self._joined.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._joined.wait(), min(remaining, 1.0))
        return None

    async def resize(self, replicas: int) -> None:
        """Only the count changes here: ``up``'s gateway places or stops the replicas, and
        the next look attaches or drops them."""
        if replicas < 1:
            raise ValueError("a pool needs at least one replica")
        self.config = dataclasses.replace(self.config, replicas=replicas)

    async def stop(self) -> None:
        """Stop looking, let requests in flight end (bounded), close the connections; the
        replicas themselves run on for ``up``'s gateway."""
        self._stopping = True
        tasks = [t for t in (self._refresher, *self._attaching.values()) if t is not None]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        loop = asyncio.get_running_loop()
        end = loop.time() + self.config.stop_timeout_s
        while loop.time() < end and any(a.outstanding for a in self._attached.values()):
            await asyncio.sleep(0.01)
        attached, self._attached = list(self._attached.values()), {}
        await asyncio.gather(*(a.channel.close() for a in attached), return_exceptions=True)
