"""One worker process as the gateway sees it: its pipes, its in-flight requests, its end.

A replica owns a future per request id. When the worker process dies, for whatever reason,
the read pipe reaches end of file, and every future still held fails with
:class:`ReplicaDied`: no request waits on a dead worker.

That end of file is also how the replica knows its worker is gone, rather than
``Process.exitcode``: a forkserver worker's exit code comes through the forkserver, which
may itself have died (then every worker it forked reads as exited, running or not).
"""

from __future__ import annotations

import asyncio
import atexit
import contextlib
import itertools
import multiprocessing.util  # noqa: F401  (registers its exit handler before ours, below)
import os
import signal
import threading
from enum import StrEnum
from multiprocessing.context import BaseContext
from typing import Any

import numpy.typing as npt

from modelplane.dataplane.pool import forkserver
from modelplane.dataplane.pool.messages import FrameReader, Message, Op, decode, encode, frame
from modelplane.dataplane.pool.worker import WorkerSpec, worker_main
from modelplane.errors import DeadlineExceeded, ReplicaLost, WorkerFailed

__all__ = ["ModelRaised", "Replica", "ReplicaDied", "ReplicaState"]

Arrays = dict[str, npt.NDArray[Any]]


class ReplicaState(StrEnum):
    """Where a replica is in its life."""

    STARTING = "starting"
    """The process is starting, loading the model or warming up."""
    READY = "ready"
    """Warmed up and taking requests."""
    DEAD = "dead"
    """The process exited or was killed; the pool restarts it after a backoff."""


_running: dict[int, str] = {}
"""Workers started and not yet seen gone, by pid (their replica's name)."""
_running_guard = threading.Lock()


def _track(pid: int, name: str) -> None:
    with _running_guard:
        _running[pid] = name


def _untrack(pid: int | None) -> None:
    if pid is not None:
        with _running_guard:
            _running.pop(pid, None)


def _kill_workers_left_running() -> None:
    """At interpreter exit, SIGKILL the workers no pool stopped (a server that failed to
    start after its endpoints did). Workers ignore SIGTERM, which the process group gets
    from Ctrl-C or a service manager, so multiprocessing's own exit handler, which sends
    SIGTERM and then waits without a limit, would wait forever."""
    with _running_guard:
        left = list(_running)
        _running.clear()
    for pid in left:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.kill(pid, signal.SIGKILL)


# after multiprocessing's own exit handler (registered when its util module is imported,
# above), so that this one runs first
atexit.register(_kill_workers_left_running)


class ReplicaDied(ReplicaLost):
    """The worker died while holding the request; the request itself may be retried."""


class ModelRaised(WorkerFailed):
    """The model raised on this request; the worker is fine, a retry would raise again."""


class _Reader(asyncio.Protocol):
    def __init__(self, replica: Replica) -> None:
        self._replica = replica
        self._frames = FrameReader()

    def data_received(self, data: bytes) -> None:
        for raw in self._frames.feed(data):
            self._replica.on_message(decode(raw))

    def connection_lost(self, exc: Exception | None) -> None:
        self._replica.exited = True
        self._replica.on_lost("the worker's pipe closed")


class _Writer(asyncio.Protocol):
    def __init__(self, replica: Replica) -> None:
        self._replica = replica

    def connection_lost(self, exc: Exception | None) -> None:
        self._replica.on_lost("the worker stopped reading")


class Replica:
    """A worker process and the requests it holds."""

    def __init__(self, index: int, spec: WorkerSpec, context: BaseContext, name: str) -> None:
        self.index = index
        self.name = f"{name}-{index}"
        self.state = ReplicaState.STARTING
        self.pid: int | None = None
        self.pending: dict[int, asyncio.Future[Arrays]] = {}
        self._spec = spec
        self._context = context
        self._ids = itertools.count(1)
        self._process: Any = None
        self.exited = False
        """The worker's pipe reached end of file: the process is gone."""
        self._reader: asyncio.ReadTransport | None = None
        self._writer: asyncio.WriteTransport | None = None
        loop = asyncio.get_running_loop()
        self._ready: asyncio.Future[Message] = loop.create_future()
        self.dead: asyncio.Future[str] = loop.create_future()
        """Resolves with the reason once the worker is gone."""

    @property
    def outstanding(self) -> int:
        return len(self.pending)

    @property
    def started(self) -> bool:
        """A process was started (whatever became of it since)."""
        return self._process is not None and self._process.pid is not None

    async def launch(self, timeout_s: float) -> None:
        """Start the process and wait until it has loaded its model (or failed to)."""
        inbox_r, inbox_w = self._context.Pipe(duplex=False)
        outbox_r, outbox_w = self._context.Pipe(duplex=False)
        process = self._context.Process(  # type: ignore[attr-defined]
            target=worker_main, args=(self._spec, inbox_r, outbox_w), name=self.name, daemon=True
        )
        self._process = process
        # forking blocks for milliseconds: keep the loop serving other models meanwhile
        starting = asyncio.ensure_future(asyncio.to_thread(self._start, process))
        try:
            await asyncio.wait_for(asyncio.shield(starting), timeout_s)
        except TimeoutError:
            # the forkserver took the request and never answered: replace it, which also
            # ends the blocked start, and only then let go of the pipes it may still send
            forkserver.kill_hung()
            with contextlib.suppress(Exception):
                await asyncio.wait_for(starting, 5.0)
            raise WorkerFailed(f"{self.name}: no process started in {timeout_s:g}s") from None
        finally:
            # the child holds its own copies; ours must go so a dead child means EOF here
            inbox_r.close()
            outbox_w.close()
        loop = asyncio.get_running_loop()
        reader, _ = await loop.connect_read_pipe(lambda: _Reader(self), outbox_r)
        writer, _ = await loop.connect_write_pipe(lambda: _Writer(self), inbox_w)
        self._reader = reader
        self._writer = writer
        try:
            hello = await asyncio.wait_for(asyncio.shield(self._ready), timeout_s)
        except TimeoutError:
            raise WorkerFailed(f"{self.name} did not load its model in {timeout_s:g}s") from None
        if hello.error:
            raise WorkerFailed(f"{self.name} could not load its model: {hello.error}")
        self.pid = hello.pid

    def _start(self, process: Any) -> None:
        if self._context.get_start_method() != "forkserver":
            process.start()
            if process.pid is not None:
                _track(process.pid, self.name)
            return
        forkserver.prepare()
        process.start()
        forkserver.forked()
        if process.pid is not None:
            _track(process.pid, self.name)

    async def call(self, arrays: Arrays, timeout_s: float) -> Arrays:
        """Send one PREDICT and wait at most ``timeout_s`` for its answer.

        A timeout on the oldest request this worker holds means the worker is stuck on it
        (requests are served in order), so the worker is killed and will be restarted.
        """
        if self.dead.done() or self._writer is None:
            raise ReplicaDied(f"{self.name} is not running")
        rid = next(self._ids)
        future: asyncio.Future[Arrays] = asyncio.get_running_loop().create_future()
        self.pending[rid] = future
        self._writer.writelines(frame(encode(Op.PREDICT, rid, arrays)))
        try:
            return await asyncio.wait_for(future, timeout_s)
        except TimeoutError as exc:
            if isinstance(exc, DeadlineExceeded):
                raise
            oldest = next(iter(self.pending), rid)
            self.pending.pop(rid, None)
            if oldest == rid:
                self.kill(f"no answer within {timeout_s:.3g}s")
            raise DeadlineExceeded(
                f"{self.name} gave no answer within {timeout_s:.3g}s",
                details=[{"field": "worker", "problem": f"pid {self.pid} hung; restarted"}],
            ) from None

    def on_message(self, message: Message) -> None:
        if message.op is Op.READY:
            if not self._ready.done():
                self._ready.set_result(message)
            return
        future = self.pending.pop(message.id, None)
        if future is None or future.done():
            return  # its caller timed out; the answer is no longer wanted
        if message.op is Op.RESULT:
            future.set_result(message.arrays)
        elif message.op is Op.ERROR:
            future.set_exception(
                ModelRaised(
                    f"the model raised {message.error_type}: {message.error}",
                    details=[{"field": "model", "problem": message.error_type}],
                )
            )

    def on_lost(self, reason: str) -> None:
        """The worker is gone: fail what it held, once."""
        if self.dead.done():
            return
        _untrack(self._process.pid if self._process is not None else None)
        self.state = ReplicaState.DEAD
        if not self._ready.done():
            self._ready.set_exception(WorkerFailed(f"{self.name} exited while loading"))
            self._ready.exception()  # read here so an unawaited launch does not log it
        held, self.pending = self.pending, {}
        for future in held.values():
            if not future.done():
                future.set_exception(ReplicaDied(f"{self.name} (pid {self.pid}) died: {reason}"))
        self.dead.set_result(reason)

    def send_stop(self) -> None:
        if self._writer is not None and not self._writer.is_closing():
            self._writer.writelines(frame(encode(Op.STOP, 0)))

    def kill(self, reason: str) -> None:
        """SIGKILL the worker; the pipe's end of file then fails what it held."""
        pid = self._process.pid if self._process is not None else None
        if pid is not None and not self.exited:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        self.on_lost(reason)

    async def close(self, grace_s: float) -> None:
        """Wait up to ``grace_s`` for the process to exit, kill it if not, release pipes."""
        process = self._process
        # a process whose start failed has no pid, nothing to wait for and must not be joined
        if process is not None and process.pid is not None:
            loop = asyncio.get_running_loop()
            watched = self._reader is not None
            end = loop.time() + grace_s
            while watched and not self.exited and loop.time() < end:
                await asyncio.sleep(0.01)
            if not self.exited:
                self.kill("did not exit in time")
                end = loop.time() + 5.0
                while watched and not self.exited and loop.time() < end:
                    await asyncio.sleep(0.01)
            # reaped by the forkserver (or, for spawn, by this join); never blocks for long
            await asyncio.to_thread(process.join, 1.0)
        for transport in (self._writer, self._reader):
            if transport is not None:
                transport.close()
        self.on_lost("closed")
