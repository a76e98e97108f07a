"""The worker pool of one model version: replicas, their supervision, and request choice.

- Each replica is a separate process (``forkserver`` by default, ``spawn`` on request), so a
  model that crashes or leaks takes nothing else with it.
- A replica is ready only once a warmup prediction on :func:`sample_inputs` has come back.
- Requests go to the ready replica with the fewest outstanding requests.
- A replica whose worker dies (SIGKILL, segfault, OOM) fails what it held with
  :class:`ReplicaDied`; :meth:`WorkerPool.predict` retries such a request once on another
  ready replica, then raises :class:`WorkerFailed`. A worker that holds a request past its
  deadline is killed (:class:`DeadlineExceeded`). Either way the supervisor restarts it after
  an exponential backoff, capped, and reset once a replica has stayed up ``stable_after_s``.
- Supervision cannot die: whatever a start or a restart raises (the forkserver gone, file
  descriptors exhausted, a bug) is logged with the pool's name, thinned to the 1st, 2nd,
  4th... failure in a row, and retried after the backoff; only cancellation ends it. The
  forkserver itself is relaunched when it died (:mod:`.forkserver`).
- Every wait is bounded: starts, warmups, predictions and the stop drain.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import multiprocessing
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, Any

import numpy.typing as npt

from modelplane.dataplane.pool import forkserver
from modelplane.dataplane.pool.replica import Replica, ReplicaDied, ReplicaState
from modelplane.dataplane.pool.sample import sample_inputs
from modelplane.dataplane.pool.worker import WorkerSpec
from modelplane.errors import DeadlineExceeded, WorkerFailed
from modelplane.security.sandbox import SandboxPolicy
from modelplane.spec.fields import Signature

if TYPE_CHECKING:
    from modelplane.core.serving import HostedUsage

__all__ = ["PoolConfig", "ReplicaInfo", "WorkerPool", "least_outstanding"]

Arrays = dict[str, npt.NDArray[Any]]

_PRELOAD = ["numpy", "msgspec", "modelplane.dataplane.pool.worker"]

log = logging.getLogger("modelplane.dataplane.pool")


@dataclass(frozen=True, slots=True)
class PoolConfig:
    """Size and time bounds of one model version's pool."""

    replicas: int = 1
    start_method: str = "forkserver"
    """``forkserver`` (restarts in milliseconds) or ``spawn``; never ``fork`` with threads."""
    start_timeout_s: float = 60.0
    """Process start, model load and warmup, each."""
    request_timeout_s: float = 10.0
    """Longest any request may hold a worker, whatever the caller's deadline."""
    stop_timeout_s: float = 10.0
    """How long :meth:`WorkerPool.stop` drains in-flight requests before terminating."""
    backoff_base_s: float = 0.1
    backoff_max_s: float = 10.0
    stable_after_s: float = 30.0
    """A replica up this long resets its restart backoff."""
    warmup_rows: int = 1
    sandbox: SandboxPolicy | None = field(default_factory=SandboxPolicy)
    """The node's sandbox for package workers (each narrowed to its package); ``None``: off."""

    def __post_init__(self) -> None:
        if self.replicas < 1:
            raise ValueError("a pool needs at least one replica")
        if self.start_method not in ("forkserver", "spawn"):
            raise ValueError("start_method must be 'forkserver' or 'spawn'")


@dataclass(frozen=True, slots=True)
class ReplicaInfo:
    """What an operator (or a test) may observe of one replica."""

    index: int
    state: ReplicaState
    pid: int | None
    outstanding: int
    node: str | None = None
    """Where it runs when another machine hosts it (empty: hosted, placed nowhere yet);
    ``None``: this gateway's machine."""
    reason: str = ""
    """Why it is not ready, where the pool knows (a replica placement left pending)."""
    accounted: bool = False
    """Hosted, placed by this pool and holding its reservation on ``node`` (see
    :attr:`ReplicaView.accounted <modelplane.core.serving.ReplicaView.accounted>`)."""
    usage: HostedUsage | None = None
    """An accounted replica's latest reading, as its pool fetched it."""


def least_outstanding(loads: Sequence[int], start: int = 0) -> int:
    """Index of the smallest load; ties go to the first at or after ``start`` (round robin)."""
    if not loads:
        raise ValueError("no replicas to choose from")
    count = len(loads)
    best = start % count
    for step in range(1, count):
        i = (start + step) % count
        if loads[i] < loads[best]:
            best = i
    return best


class WorkerPool:
    """Runs one model version in ``config.replicas`` worker processes."""

    def __init__(
        self, spec: WorkerSpec, signature: Signature, config: PoolConfig | None = None, *,
        name: str = "model",
    ) -> None:  # fmt: skip
        self.spec = spec
        self.signature = signature
        self.config = config or PoolConfig()
        self.name = name
        self.restarts = 0
        """Worker restarts so far (a counter for metrics)."""
        self.revivals = 0
        """Times the pool went from no ready replica to one, its first start included: a
        circuit breaker lets traffic back at once when this moves (see ``core.circuit``)."""
        self._context = multiprocessing.get_context(self.config.start_method)
        if self.config.start_method == "forkserver":
            forkserver.preload(_PRELOAD)
        self._slots: list[Replica | None] = [None] * self.config.replicas
        self._supervisors: list[asyncio.Task[None]] = []
        self._any_ready: asyncio.Event | None = None
        self._turn = 0
        self._stopping = False
        self._last_error: Exception | None = None
        self._start_failures = [0] * self.config.replicas

    @property
    def stopping(self) -> bool:
        """True once :meth:`stop` began; flips during awaits, hence a property."""
        return self._stopping

    def replicas(self) -> list[ReplicaInfo]:
        return [
            ReplicaInfo(i, r.state, r.pid, r.outstanding) if r is not None
            else ReplicaInfo(i, ReplicaState.STARTING, None, 0)
            for i, r in enumerate(self._slots)
        ]  # fmt: skip

    async def start(self) -> None:
        """Start every replica; return once all are ready (or raise if none got ready)."""
        self._any_ready = asyncio.Event()
        loop = asyncio.get_running_loop()
        self._supervisors = [
            loop.create_task(self._supervise(i), name=f"{self.name}-supervisor-{i}")
            for i in range(self.config.replicas)
        ]
        end = loop.time() + self.config.start_timeout_s
        while loop.time() < end and not self._started():
            await asyncio.sleep(0.01)
        if not any(i.state is ReplicaState.READY for i in self.replicas()):
            await self.stop()
            raise WorkerFailed(f"no replica of {self.name} became ready: {self._last_error}")

    def _started(self) -> bool:
        """Every replica is ready, or none is and each has failed once (retrying won't help)."""
        states = [i.state for i in self.replicas()]
        if all(s is ReplicaState.READY for s in states):
            return True
        return ReplicaState.READY not in states and all(self._start_failures)

    async def predict(self, arrays: Arrays, timeout_s: float) -> Arrays:
        """Run one batch on the least loaded replica; retry once elsewhere if its worker dies."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + min(timeout_s, self.config.request_timeout_s)
        tried: list[Replica] = []
        failure: WorkerFailed | None = None
        for _ in range(2):
            replica = await self._choose(tried, deadline)
            if replica is None:
                break
            try:
                return await replica.call(arrays, deadline - loop.time())
            except ReplicaDied as exc:
                failure = exc
                tried.append(replica)
        if failure is not None:
            raise WorkerFailed(str(failure), details=failure.details)
        raise WorkerFailed(f"no ready replica of {self.name}: {self._last_error}")

    async def resize(self, replicas: int) -> None:
        """Run ``replicas`` workers. New ones take requests once warmed up (this returns when
        they are, or after ``start_timeout_s``); removed ones take no new request, finish
        what they hold (bounded by ``stop_timeout_s``) and stop."""
        if replicas < 1:
            raise ValueError("a pool needs at least one replica")
        current = len(self._slots)
        if replicas == current or self._stopping:
            return
        self.config = replace(self.config, replicas=replicas)
        loop = asyncio.get_running_loop()
        if replicas > current:
            self._slots += [None] * (replicas - current)
            self._start_failures += [0] * (replicas - current)
            self._supervisors += [
                loop.create_task(self._supervise(i), name=f"{self.name}-supervisor-{i}")
                for i in range(current, replicas)
            ]
            end = loop.time() + self.config.start_timeout_s
            while loop.time() < end and not self._stopping and not self._started():
                await asyncio.sleep(0.01)
            return
        leaving = [r for r in self._slots[replicas:] if r is not None]
        supervisors = self._supervisors[replicas:]
        # Cut them out of the pool first: _choose never picks a replica that is not in a slot.
        del self._slots[replicas:], self._start_failures[replicas:], self._supervisors[replicas:]
        for task in supervisors:
            task.cancel()
        end = loop.time() + self.config.stop_timeout_s
        while loop.time() < end and any(r.pending for r in leaving):
            await asyncio.sleep(0.01)
        for replica in leaving:
            replica.send_stop()
        await asyncio.gather(*(r.close(grace_s=2.0) for r in leaving))
        await asyncio.wait(supervisors, timeout=5.0) if supervisors else None

    async def stop(self) -> None:
        """Drain in-flight requests (bounded), then stop every worker."""
        self._stopping = True
        loop = asyncio.get_running_loop()
        end = loop.time() + self.config.stop_timeout_s
        while loop.time() < end and any(r is not None and r.pending for r in self._slots):
            await asyncio.sleep(0.01)
        for replica in self._slots:
            if replica is not None:
                replica.send_stop()
        await asyncio.gather(*(r.close(grace_s=2.0) for r in self._slots if r is not None))
        for task in self._supervisors:
            task.cancel()
        await asyncio.wait(self._supervisors, timeout=5.0) if self._supervisors else None

    # ------------------------------------------------------------------ choice

    async def _choose(self, exclude: list[Replica], deadline: float) -> Replica | None:
        loop = asyncio.get_running_loop()
        while not self._stopping:
            ready = [
                r for r in self._slots
                if r is not None and r.state is ReplicaState.READY and r not in exclude
            ]  # fmt: skip
            if ready:
                self._turn += 1
                return ready[least_outstanding([r.outstanding for r in ready], self._turn)]
            if exclude:
                return None  # the retry goes to another replica or not at all
            remaining = deadline - loop.time()
            if remaining <= 0:
                raise DeadlineExceeded(f"no replica of {self.name} was ready in time")
            assert self._any_ready is not None
            self._any_ready.clear()
            try:
                await asyncio.wait_for(self._any_ready.wait(), remaining)
            except TimeoutError:
                raise DeadlineExceeded(f"no replica of {self.name} was ready in time") from None
        return None

    # ------------------------------------------------------------------ supervision

    async def _supervise(self, index: int) -> None:
        failures = 0
        while not self._stopping and index < len(self._slots):
            try:
                failures = await self._one_life(index, failures)
            except Exception as exc:  # supervision must outlive anything one life raises
                failures += 1
                self._last_error = exc
                self._report(index, "supervision failed", exc, failures)
                await asyncio.sleep(self._backoff(failures))

    async def _one_life(self, index: int, failures: int) -> int:
        """Start one replica in slot ``index``, serve until it dies, wait out the backoff;
        the consecutive failures after it."""
        loop = asyncio.get_running_loop()
        replica = Replica(index, self.spec, self._context, self.name)
        self._slots[index] = replica
        if not await self._bring_up(replica):
            if replica.started:
                # its model failed to load or warm up; a process that never started (the
                # forkserver gone, descriptors short) says nothing about the model
                self._start_failures[index] += 1
            failures += 1
            if not self._stopping:
                self._report(index, "could not start", self._last_error, failures)
            await asyncio.sleep(self._backoff(failures))
            return failures
        up_at = loop.time()
        reason = await replica.dead
        await replica.close(grace_s=1.0)
        if self.stopping or index >= len(self._slots):
            return failures
        self.restarts += 1
        failures = 0 if loop.time() - up_at >= self.config.stable_after_s else failures + 1
        self._report(index, f"worker (pid {replica.pid}) died: {reason}", None, max(failures, 1))
        await asyncio.sleep(self._backoff(failures))
        return failures

    async def _bring_up(self, replica: Replica) -> bool:
        """Start, load and warm up one replica; False (and cleaned up) if any step fails."""
        timeout = self.config.start_timeout_s
        try:
            await replica.launch(timeout)
            sample = sample_inputs(self.signature, rows=self.config.warmup_rows)
            await replica.call(sample, timeout)
        except Exception as exc:  # an unexpected one too (EOFError: the forkserver died)
            self._last_error = exc
            with contextlib.suppress(Exception):
                await replica.close(grace_s=0.5)
            return False
        if self._stopping:
            return False
        if not any(r is not None and r.state is ReplicaState.READY for r in self._slots):
            self.revivals += 1
        replica.state = ReplicaState.READY
        assert self._any_ready is not None
        self._any_ready.set()
        return True

    def _report(self, index: int, what: str, exc: BaseException | None, failures: int) -> None:
        """Log a failure of slot ``index``, thinned to the 1st, 2nd, 4th... in a row."""
        if failures & (failures - 1):
            return
        cause = f": {type(exc).__name__}: {exc}" if exc is not None else ""
        expected = exc is None or isinstance(exc, WorkerFailed | DeadlineExceeded | OSError)
        log.warning(
            "%s replica %d %s%s (%d in a row, next try in %.3gs)",
            self.name,
            index,
            what,
            cause,
            failures,
            self._backoff(failures),
            exc_info=None if expected else exc,
        )

    def _backoff(self, failures: int) -> float:
        if failures <= 0:
            return 0.0
        return float(
            min(self.config.backoff_max_s, self.config.backoff_base_s * 2 ** (failures - 1))
        )
