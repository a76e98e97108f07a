"""Model versions whose replicas an execution backend hosts (Ray), placed by modelplane.

``up --backend ray`` gives the gateway a :class:`BackendFleet` as its pool factory. Each
model version the gateway serves gets a :class:`BackendPool` instead of local worker
processes; the pool says which replicas it wants and the fleet places every wanted replica of
every pool with one :class:`~modelplane.controlplane.placement.ReplicaPlacer` (admission,
placement and preemption over the backend's live nodes, under the applied policy), then starts
them there. The gateway keeps its batching, deadlines, breakers, shadows and evidence; only the
last hop changes: a batch goes to a replica through ``ExecutionBackend.predict`` (a direct
socket with the data plane's framing).

- A pass runs when a pool starts, grows or loses a replica, and every ``interval_s`` (the
  ``placement controller``): replicas that died (their process, their node) are forgotten by
  the placer and placed again on the nodes left, or stay pending with the reason.
- A request whose replica is lost (``ReplicaLost``: its connection broke, it is gone) is
  retried once on another ready replica, as with local workers; a replica that holds a
  request past its deadline is stopped and placed again, as a local worker is killed.
- What the pass decided is kept: ``status()`` lists every replica with its node, state and,
  for pending ones, the one-line reason (``modelplane why`` and the endpoint's status read it).
- Usage: beside the passes, every ``usage_every_s`` the placement controller asks a backend
  that can tell (:class:`UsageReporter`: Ray's replica actors read their model process on
  their node) for each running replica's CPU time and resident memory, within
  ``usage_timeout_s``; never on a request's path. The pools hand the latest reading, with
  the replica's node, to the gateway's snapshot, where the usage sampler charges that node
  (a replica that did not answer keeps its last reading, which the sampler does not count
  twice).
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import re
import secrets
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

import numpy.typing as npt

from modelplane.backends.replica_child import policy_data
from modelplane.controlplane.placement import Outcome, PlacementReport, ReplicaPlacer
from modelplane.controlplane.why import demand_of
from modelplane.core.backend import (
    ExecutionBackend,
    ReplicaSpec,
    ReplicaState,
    ReplicaStatus,
    ReplicaWant,
)
from modelplane.core.serving import HostedUsage
from modelplane.dataplane.pool import (
    PoolConfig,
    PoolRequest,
    ReplicaInfo,
    least_outstanding,
    sample_inputs,
)
from modelplane.dataplane.pool import ReplicaState as PoolReplicaState
from modelplane.errors import DeadlineExceeded, NotFound, ReplicaLost, WorkerFailed
from modelplane.types import Clock, SystemClock

if TYPE_CHECKING:
    from modelplane.spec.policy import Policy

__all__ = ["BackendFleet", "BackendPool", "FleetReplica", "UsageReporter"]

Arrays = dict[str, npt.NDArray[Any]]

log = logging.getLogger("modelplane.system.backend_pool")

_UNSAFE = re.compile(r"[^A-Za-z0-9_.:-]")


@runtime_checkable
class UsageReporter(Protocol):
    """A backend that reads its replicas' model processes where they run
    (``backends.ray.RayBackend``); one that cannot is charged their reservations only."""

    async def usage(
        self, names: Sequence[str], timeout_s: float
    ) -> Mapping[str, tuple[int, float, float, float | None]]:
        """``(pid, cpu_seconds, rss_mib, age_s)`` of each replica in ``names`` that answered
        within ``timeout_s`` (``age_s``: how long its process had run; ``None``: unknown)."""
        ...


@dataclass(frozen=True, slots=True)
class FleetReplica:
    """One wanted replica as the last pass left it."""

    name: str
    endpoint: str
    model: str
    state: ReplicaState | None
    """``None``: not running anywhere (pending)."""
    node: str | None
    reason: str
    """Why it is pending, or why it was lost; empty when it runs."""


class BackendFleet:
    """Every replica the gateway wants from ``backend``, placed by one placer."""

    def __init__(
        self,
        backend: ExecutionBackend,
        policy: Callable[[], Policy],
        *,
        start_timeout_s: float = 60.0,
        interval_s: float = 1.0,
        clock: Clock | None = None,
        artifacts: str | None = None,
        usage_every_s: float = 2.0,
        usage_timeout_s: float = 2.0,
    ) -> None:
        self.backend = backend
        self.artifacts = artifacts
        """The artifact store a node fetches a package from when it lacks its folder
        (``None``: nodes read the gateway machine's package cache, one machine or shared)."""
        self._policy = policy
        self._clock = clock or SystemClock()
        self._placer = ReplicaPlacer(
            backend, policy(), clock=self._clock, start_timeout_s=start_timeout_s
        )
        self.interval_s = interval_s
        self.usage_every_s = usage_every_s
        self.usage_timeout_s = usage_timeout_s
        self._usage: dict[str, HostedUsage] = {}
        self._wanted: dict[str, ReplicaWant] = {}
        self._running: dict[str, ReplicaStatus] = {}
        self._reasons: dict[str, str] = {}
        self._pools: set[BackendPool] = set()
        self._down: set[str] = set()
        """Replicas found gone between passes (counted as restarts once)."""
        self._lock = asyncio.Lock()
        self._passed: asyncio.Condition | None = None
        self._wake: asyncio.Event | None = None
        self._standalone: asyncio.Task[None] | None = None
        self.last_report: PlacementReport | None = None

    # ------------------------------------------------------------------ pools

    def pool(self, request: PoolRequest) -> BackendPool:
        """The gateway's pool factory (``GatewayConfig.pools``)."""
        return BackendPool(self, request)

    def _want(self, pool: BackendPool, names: Sequence[str]) -> None:
        request = pool.request
        sandbox = request.spec.sandbox
        # the same sandbox as a local worker, narrowed to the package, as plain values
        package = (
            None if request.package is None or self.artifacts is None
            else (*request.package, self.artifacts)
        )  # fmt: skip
        spec = ReplicaSpec(
            request.spec.loader, request.spec.args, request.spec.kwargs, request.spec.paths,
            sandbox=None if sandbox is None else policy_data(sandbox), package=package,
        )  # fmt: skip
        warmup = sample_inputs(request.signature, rows=request.config.warmup_rows)
        demand = demand_of(request.resources)
        now = self._placer_clock()
        for name in names:
            self._wanted[name] = ReplicaWant(
                name, spec, demand, endpoint=request.endpoint, model=request.label,
                team=request.team, tier=request.tier, warmup=warmup, submitted_at=now,
            )  # fmt: skip
        self._pools.add(pool)

    async def _forget(self, names: Sequence[str], grace_s: float) -> None:
        for name in names:
            self._wanted.pop(name, None)
            self._running.pop(name, None)
            self._reasons.pop(name, None)
        # Stopped now, not at the next pass: a pool that stops frees its room at once.
        await asyncio.gather(
            *(self.backend.stop(name, grace_s) for name in names), return_exceptions=True
        )

    def _placer_clock(self) -> float:
        return asyncio.get_running_loop().time()

    # ------------------------------------------------------------------ passes

    async def reconcile(self) -> PlacementReport:
        """One placement pass over every wanted replica (passes never overlap)."""
        async with self._lock:
            self._placer.policy = self._policy()
            report = await self._placer.reconcile(list(self._wanted.values()))
            statuses = {s.name: s for s in await self.backend.replicas()}
            self._running = {n: s for n, s in statuses.items() if n in self._wanted and s.alive}
            self._reasons = {
                e.name: e.reason
                for e in report.entries
                if e.outcome in (Outcome.PENDING, Outcome.LOST, Outcome.PREEMPTED)
                and e.name in self._wanted
                and e.name not in self._running
            }
            # a replica a request already found gone was counted then
            lost = {e.name for e in report.entries if e.outcome is Outcome.LOST} - self._down
            self._down -= set(self._running)
            self.last_report = report
        for pool in list(self._pools):
            pool.observe(lost)
        await self._announce()
        return report

    async def _announce(self) -> None:
        if self._passed is None:
            self._passed = asyncio.Condition()
        async with self._passed:
            self._passed.notify_all()

    async def wait_pass(self, timeout_s: float) -> None:
        """Until the next pass ends (or ``timeout_s``)."""
        if self._passed is None:
            self._passed = asyncio.Condition()
        with contextlib.suppress(TimeoutError):
            async with self._passed:
                await asyncio.wait_for(self._passed.wait(), timeout_s)

    def kick(self) -> None:
        """Run a pass soon (a replica was lost, or one is wanted)."""
        if self._wake is not None:
            self._wake.set()
        elif self._standalone is None or self._standalone.done():
            # no placement controller runs (a gateway on its own, in tests and benches):
            # the pass runs here, once at a time
            self._standalone = asyncio.get_running_loop().create_task(self._quiet_pass())

    async def _quiet_pass(self) -> None:
        # Passes until every wanted replica runs: what one pass leaves pending (a node
        # that just lost replicas is skipped once) the next one places.
        while self._wanted:
            try:
                await self.reconcile()
            except Exception:
                log.exception("placement pass failed")
            if all(name in self._running for name in self._wanted):
                return
            await asyncio.sleep(self.interval_s)

    async def run(self, stop: asyncio.Event) -> None:
        """The placement controller: a pass every ``interval_s``, or sooner when kicked;
        beside it, the replicas' usage every ``usage_every_s``."""
        self._wake = asyncio.Event()
        metering = asyncio.ensure_future(self._meter(stop))
        try:
            while not stop.is_set():
                try:
                    await self.reconcile()
                except Exception:  # a pass that fails is logged; the next one reads afresh
                    log.exception("placement pass failed")
                self._wake.clear()
                stopped = asyncio.ensure_future(stop.wait())
                woken = asyncio.ensure_future(self._wake.wait())
                await asyncio.wait({stopped, woken}, timeout=self.interval_s,
                                   return_when=asyncio.FIRST_COMPLETED)  # fmt: skip
                for waiting in (stopped, woken):
                    waiting.cancel()
        finally:
            metering.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await metering

    async def _meter(self, stop: asyncio.Event) -> None:
        from modelplane.controlplane.loop import every

        # Its own loop: a replica slow to answer holds up no placement pass. Failures back
        # off and are logged thinned (a head that is away fails every reading).
        await every(stop, self.usage_every_s, self.refresh_usage, log=log,
                    what="reading the replicas' usage")  # fmt: skip

    async def refresh_usage(self) -> None:
        """Read every running replica's model process on its node (within
        ``usage_timeout_s``); a replica that gives no answer keeps its last reading."""
        reporter = self.backend if isinstance(self.backend, UsageReporter) else None
        names = list(self._running)
        found: Mapping[str, tuple[int, float, float, float | None]] = {}
        if reporter is not None and names:
            timeout_s = self.usage_timeout_s
            # bounded here too: the backend's own bound is its promise, this is ours
            found = await asyncio.wait_for(reporter.usage(names, timeout_s), timeout_s + 1.0)
        at = self._clock.monotonic()
        kept = {n: u for n, u in self._usage.items() if n in self._running}
        for name, (pid, cpu_seconds, rss_mib, age_s) in found.items():
            if name in self._running:
                kept[name] = HostedUsage(pid, cpu_seconds, rss_mib, at, age_s)
        self._usage = kept

    def lost(self, name: str, reason: str) -> None:
        """A request found ``name`` gone: route nothing more to it until a pass places it
        again (its pool counts a restart, and a revival once it is back)."""
        if name in self._running:
            del self._running[name]
            self._reasons[name] = reason
            if name not in self._down:
                self._down.add(name)
                for pool in list(self._pools):
                    pool.observe({name})
        self.kick()

    async def restart(self, name: str, reason: str) -> None:
        """Stop ``name`` (it held a request past its deadline); the next pass places it."""
        self.lost(name, reason)
        with contextlib.suppress(Exception):
            await self.backend.stop(name, 0.0)

    # ------------------------------------------------------------------ reading

    def state(self, name: str) -> ReplicaStatus | None:
        return self._running.get(name)

    def usage(self, name: str) -> HostedUsage | None:
        """The latest reading of ``name``'s model process (``None``: none yet)."""
        return self._usage.get(name)

    def reason(self, name: str) -> str:
        return self._reasons.get(name, "")

    def status(self) -> list[FleetReplica]:
        """Every wanted replica: where it runs, or why it does not."""
        out: list[FleetReplica] = []
        for name, want in sorted(self._wanted.items()):
            running = self._running.get(name)
            out.append(
                FleetReplica(
                    name, want.endpoint, want.model,
                    running.state if running else None,
                    running.node if running else None,
                    "" if running else self._reasons.get(name, "not placed yet"),
                )
            )  # fmt: skip
        return out

    async def close(self) -> None:
        names = list(self._wanted)
        await self._forget(names, 2.0)


class BackendPool:
    """The replicas of one model version on an execution backend (a ``ReplicaPool``)."""

    def __init__(self, fleet: BackendFleet, request: PoolRequest) -> None:
        self.fleet = fleet
        self.request = request
        self.name = request.name
        self.config: PoolConfig = request.config
        self.restarts = 0
        self.revivals = 0
        # A pool of its own names: a version rebuilt with new settings starts beside the
        # old one before it drains, and the backend names replicas uniquely.
        stem = _UNSAFE.sub("_", f"{request.endpoint}.{request.label}")
        self._stem = f"{stem}.{secrets.token_hex(3)}"
        self._slots = [self._slot(i) for i in range(self.config.replicas)]
        self._outstanding: dict[str, int] = {}
        self._stopping = False
        self._turn = 0
        self._was_ready = False

    def _slot(self, index: int) -> str:
        return f"{self._stem}.{index}"

    @property
    def stopping(self) -> bool:
        return self._stopping

    def replicas(self) -> list[ReplicaInfo]:
        out: list[ReplicaInfo] = []
        for index, name in enumerate(self._slots):
            status = self.fleet.state(name)
            if status is None:
                # hosted, placed nowhere yet: it holds nothing on any node
                state, pid, node = PoolReplicaState.STARTING, None, ""
            elif status.state is ReplicaState.READY:
                state, pid, node = PoolReplicaState.READY, status.pid, status.node
            else:
                state, pid, node = PoolReplicaState.STARTING, status.pid, status.node
            reason = "" if status is not None else self.fleet.reason(name)
            load = self._outstanding.get(name, 0)
            usage = self.fleet.usage(name) if status is not None else None
            out.append(
                ReplicaInfo(index, state, pid, load, node, reason,
                            accounted=status is not None, usage=usage)
            )  # fmt: skip
        return out

    def observe(self, lost: set[str]) -> None:
        """After a pass: count restarts, and revivals (an open breaker probes at once)."""
        self.restarts += sum(1 for name in self._slots if name in lost)
        ready = bool(self._ready())
        if ready and not self._was_ready:
            self.revivals += 1
        self._was_ready = ready

    def _ready(self, exclude: Sequence[str] = ()) -> list[str]:
        return [
            name for name in self._slots
            if name not in exclude
            and (s := self.fleet.state(name)) is not None and s.state is ReplicaState.READY
        ]  # fmt: skip

    async def start(self) -> None:
        self.fleet._want(self, self._slots)
        await self._settle(self._slots)
        if not self._ready():
            reasons = {self.fleet.reason(n) for n in self._slots} - {""}
            await self.stop()
            why = "; ".join(sorted(reasons)) or "no replica became ready"
            raise WorkerFailed(f"no replica of {self.name} could be placed: {why}")

    async def _settle(self, names: Sequence[str]) -> None:
        """Passes until every replica in ``names`` runs, or a pass leaves some pending."""
        loop = asyncio.get_running_loop()
        end = loop.time() + self.config.start_timeout_s
        while loop.time() < end and not self._stopping:
            await self.fleet.reconcile()
            self.observe(set())
            if all(self.fleet.state(n) is not None for n in names):
                return
            if any(self.fleet.reason(n) for n in names):
                return  # pending with a reason: the placement controller keeps trying

    async def predict(self, arrays: Arrays, timeout_s: float) -> Arrays:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + min(timeout_s, self.config.request_timeout_s)
        tried: list[str] = []
        failure: ReplicaLost | NotFound | None = None
        for _ in range(2):
            name = await self._choose(tried, deadline)
            if name is None:
                break
            self._outstanding[name] = self._outstanding.get(name, 0) + 1
            try:
                return await self.fleet.backend.predict(name, arrays, deadline - loop.time())
            except (ReplicaLost, NotFound) as exc:
                failure = exc
                tried.append(name)
                self.fleet.lost(name, str(exc))
            except DeadlineExceeded:
                # as a local worker holding a request past its deadline is killed
                await self.fleet.restart(name, "it held a request past its deadline")
                raise
            finally:
                self._outstanding[name] -= 1
        if failure is not None:
            raise WorkerFailed(str(failure))
        reasons = "; ".join(sorted({self.fleet.reason(n) for n in self._slots} - {""}))
        raise WorkerFailed(f"no ready replica of {self.name}: {reasons or 'none placed'}")

    async def _choose(self, exclude: list[str], deadline: float) -> str | None:
        loop = asyncio.get_running_loop()
        while not self._stopping:
            ready = self._ready(exclude)
            if ready:
                self._turn += 1
                loads = [self._outstanding.get(n, 0) for n in ready]
                return ready[least_outstanding(loads, self._turn)]
            if exclude:
                return None  # the retry goes to another replica or not at all
            remaining = deadline - loop.time()
            if remaining <= 0:
                raise DeadlineExceeded(f"no replica of {self.name} was ready in time")
            self.fleet.kick()
            await self.fleet.wait_pass(min(remaining, 1.0))
        return None

    async def resize(self, replicas: int) -> None:
        if replicas < 1:
            raise ValueError("a pool needs at least one replica")
        current = len(self._slots)
        if replicas == current or self._stopping:
            return
        self.config = dataclasses.replace(self.config, replicas=replicas)
        if replicas > current:
            added = [self._slot(i) for i in range(current, replicas)]
            self._slots += added
            self.fleet._want(self, added)
            await self._settle(added)
            return
        leaving = self._slots[replicas:]
        del self._slots[replicas:]
        await self._drain(leaving)
        await self.fleet._forget(leaving, grace_s=2.0)

    async def _drain(self, names: Sequence[str]) -> None:
        loop = asyncio.get_running_loop()
        end = loop.time() + self.config.stop_timeout_s
        while loop.time() < end and any(self._outstanding.get(n, 0) for n in names):
            await asyncio.sleep(0.01)

    async def stop(self) -> None:
        self._stopping = True
        await self._drain(self._slots)
        self.fleet._pools.discard(self)
        await self.fleet._forget(self._slots, grace_s=2.0)
