"""The usage sampler: serving replicas' reserved resources against what they use.

Inside ``modelplane up``, every ``sample_s`` the sampler:

1. lists every serving replica through :class:`ReplicaSource` (``system.gateway_views`` adapts the
   gateway): its endpoint, version, replica index, worker pid, team, tier and what its
   manifest reserves;
2. reads each worker process of this machine with psutil (CPU time, resident memory) and,
   where NVML finds GPUs, each process's share of the devices' compute and its GPU memory;
   a machine without a GPU or without NVML skips that part. A replica an execution
   backend hosts on another node (Ray) comes with its node and a reading taken there
   (``ReplicaSlot.node``, ``ReplicaSlot.reading``): nothing of it is read here, and its
   interval is that node's;
3. adds the readings to the replica's open window: CPU time since the last reading (a
   worker that restarted counts from its new process), the highest CPU rate between two
   readings, peak and mean memory. A process that started since the last reading counts
   what it spent since the interval began (a new replica's interval reaches back to its
   process's start, never before the last flush), and what it spent before its first
   reading is a rate over its age (it started with none). An interval's peak rate is never
   below its mean rate.

Every ``flush_s`` (and once more when it stops) it closes the windows into
:class:`~modelplane.observe.usage.UsageInterval` s, one per replica, and records, beside
them, what every node of the cluster model offered over the same time and its price
(:class:`~modelplane.observe.usage.NodeInterval`), in one transaction. A failed write
keeps the windows open, so the next flush covers the time.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

from sqlalchemy import Engine

from modelplane.errors import ModelplaneError
from modelplane.observe.process import read_process
from modelplane.observe.usage import (
    NodeInterval,
    UsageInterval,
    WorkloadKind,
    record_period,
)
from modelplane.observe.usage_compact import compact
from modelplane.spec.cluster import NodeSpec
from modelplane.types import Clock, SystemClock

__all__ = [
    "GpuMeter",
    "GpuReading",
    "ProcessMeter",
    "ProcessReading",
    "ReplicaSlot",
    "ReplicaSource",
    "UsageSampler",
]

log = logging.getLogger(__name__)

_MIB = float(1 << 20)
_MIN_RATE_SPAN_S = 0.2


@dataclass(frozen=True, slots=True)
class ReplicaSlot:
    """One serving replica as the data plane holds it, and what its manifest reserves."""

    endpoint: str
    route: str
    version: str
    replica: int
    pid: int | None
    """The worker process; ``None`` while it starts (the reservation is held all the same)."""
    team: str
    tier: str
    cpu_milli: int
    memory_mib: int
    gpu_fraction: float = 0.0
    gpu_model: str | None = None
    node: str | None = None
    """Where an execution backend runs it (a Ray node, named as placement names it): its
    interval is that node's and its use is ``reading``. ``None``: a worker process of this
    machine, read here by ``pid``."""
    reading: ProcessReading | None = None
    """A hosted replica's process (``pid``) as read on its node; ``None``: not read yet (the
    reservation counts all the same). Unused for this machine's workers."""

    @property
    def key(self) -> tuple[str, str, str, int]:
        return self.endpoint, self.route, self.version, self.replica

    @property
    def reservation(self) -> tuple[str, str, int, int, float, str | None]:
        """Who holds what where: a change of any closes the replica's interval."""
        return self.team, self.tier, self.cpu_milli, self.memory_mib, self.gpu_fraction, self.node

    def same_reservation(self, other: ReplicaSlot) -> bool:
        return self.reservation == other.reservation


class ReplicaSource(Protocol):
    """What the sampler reads from the data plane (``system.gateway_views`` adapts the
    gateway)."""

    def replicas(self) -> Sequence[ReplicaSlot]:
        """Every replica held now, read at once on the data plane's thread."""
        ...


NodeSource = Callable[[], Sequence[NodeSpec]]
"""The cluster model's nodes now (the local node first), read at every flush."""


@dataclass(frozen=True, slots=True)
class ProcessReading:
    cpu_seconds: float
    """User and system CPU time since the process started."""
    rss_mib: float
    read_at: float | None = None
    """When it was read (the sampler's monotonic clock), for a reading taken elsewhere and
    handed over; ``None``: read by the sampler just now."""
    age_s: float | None = None
    """How long the process had run when read; ``None``: not known (then the CPU it spent
    before its first reading counts in the interval's CPU time, but in no rate)."""


class ProcessMeter:
    """Reads processes with psutil; a process that is gone or hidden reads as ``None``."""

    def __init__(self) -> None:
        self._known: dict[int, Any] = {}

    def read(self, pid: int) -> ProcessReading | None:
        import psutil

        try:
            process = self._known.get(pid) or psutil.Process(pid)
            use = read_process(process)
        except (psutil.NoSuchProcess, psutil.AccessDenied, psutil.ZombieProcess):
            self._known.pop(pid, None)
            return None
        # A pid reused by another process is caught by psutil (it checks the start time).
        self._known[pid] = process
        return ProcessReading(use.cpu_seconds, use.rss_mib, age_s=use.age_s)

    def forget_all_but(self, pids: set[int]) -> None:
        for pid in set(self._known) - pids:
            del self._known[pid]


@dataclass(frozen=True, slots=True)
class GpuReading:
    busy: float
    """Devices kept busy since the last reading (0.5: half of one device's time)."""
    memory_mib: float


class GpuMeter:
    """Per-process GPU use through NVML (``pynvml``, from nvidia-ml-py).

    ``available`` is false on a machine without NVML or without a GPU; the sampler then
    records no GPU figures (``None``, not zero). NVML's per-process utilization comes as
    samples since a timestamp; each reading asks for those since the previous one.
    """

    def __init__(self) -> None:
        self._nvml: Any = None
        self._handles: list[Any] = []
        self._seen_us: dict[int, int] = {}
        try:
            import pynvml  # type: ignore[import-untyped]

            pynvml.nvmlInit()
            count = pynvml.nvmlDeviceGetCount()
            self._handles = [pynvml.nvmlDeviceGetHandleByIndex(i) for i in range(count)]
            self._nvml = pynvml
        except Exception as exc:  # the library, the driver or the device may be missing
            log.info("no GPU figures in usage samples: %s", exc)
            self._handles = []

    @property
    def available(self) -> bool:
        return self._nvml is not None and bool(self._handles)

    @property
    def devices(self) -> int:
        return len(self._handles) if self.available else 0

    def read(self) -> dict[int, GpuReading]:
        """By pid: the processes that use a GPU now."""
        if not self.available:
            return {}
        busy: dict[int, float] = {}
        memory: dict[int, float] = {}
        for index, handle in enumerate(self._handles):
            for process in self._processes(handle):
                used = getattr(process, "usedGpuMemory", None) or 0
                memory[process.pid] = memory.get(process.pid, 0.0) + used / _MIB
            for pid, share in self._utilization(index, handle).items():
                busy[pid] = busy.get(pid, 0.0) + share
        return {
            pid: GpuReading(busy.get(pid, 0.0), memory.get(pid, 0.0))
            for pid in set(busy) | set(memory)
        }

    def _processes(self, handle: Any) -> list[Any]:
        try:
            return list(self._nvml.nvmlDeviceGetComputeRunningProcesses(handle))
        except self._nvml.NVMLError:
            return []

    def _utilization(self, index: int, handle: Any) -> dict[int, float]:
        """Mean SM busy share per pid over the samples since the last reading."""
        try:
            samples = self._nvml.nvmlDeviceGetProcessUtilization(
                handle, self._seen_us.get(index, 0)
            )
        except self._nvml.NVMLError:  # NOT_FOUND: no process ran a kernel since
            return {}
        sums: dict[int, list[float]] = {}
        for sample in samples:
            sums.setdefault(sample.pid, []).append(sample.smUtil / 100.0)
            self._seen_us[index] = max(self._seen_us.get(index, 0), sample.timeStamp)
        return {pid: sum(v) / len(v) for pid, v in sums.items()}

    def close(self) -> None:
        if self._nvml is not None:
            with contextlib.suppress(Exception):
                self._nvml.nvmlShutdown()
            self._nvml = None


@dataclass(slots=True)
class _Window:
    """One replica's readings since its interval began."""

    slot: ReplicaSlot
    start: float
    last_at: float
    cpu_seconds: float = 0.0
    cpu_peak_milli: float | None = None
    pid: int | None = None
    cpu_mark: tuple[float, float] | None = None
    """The last reading of ``pid``: (monotonic time, its CPU seconds)."""
    rate_mark: tuple[float, float] | None = None
    """Where the next peak-rate span begins; moves only once a span was long enough."""
    not_before: float = 0.0
    """How far back ``start`` may move to a new process's start: the period's start, or the
    end of this replica's previous interval (no time is charged twice)."""
    unknown_age_cpu: float = 0.0
    """CPU of new processes of unknown age, spent before their first reading at some time
    nobody knows (in ``cpu_seconds``, in no rate)."""
    memory: list[float] = field(default_factory=list)
    gpu_busy: list[float] = field(default_factory=list)
    gpu_memory_peak: float | None = None
    fresh: bool = True
    """The replica appeared while sampling (not at the first reading): its first process
    began after the last reading."""
    seen: bool = False
    read_at: float | None = None
    """When the last hosted reading was taken: one handed over again is not a new one."""

    def add(
        self,
        at: float,
        tick: float,
        slot: ReplicaSlot,
        reading: ProcessReading | None,
        read_wall: float | None = None,
    ) -> None:
        """A reading taken at wall time ``read_wall`` (monotonic ``tick``; ``None``: ``at``),
        handed to this window at wall time ``at``."""
        self.last_at = at
        self.slot = slot
        seen, self.seen = self.seen, True
        if reading is None:
            return
        if slot.pid != self.pid or self.cpu_mark is None:
            # A process not read before started since the last reading (a restart, or a
            # replica added while sampling), so what it spent is new; the processes found
            # at the first reading are only marked.
            self.pid = slot.pid
            self.rate_mark = (tick, reading.cpu_seconds)
            if seen or self.fresh:
                self._born(reading, at if read_wall is None else read_wall, tick)
        else:
            self.cpu_seconds += max(0.0, reading.cpu_seconds - self.cpu_mark[1])
            self._peak(tick, reading.cpu_seconds)
        self.cpu_mark = (tick, reading.cpu_seconds)
        self.memory.append(reading.rss_mib)

    def _born(self, reading: ProcessReading, read_wall: float, tick: float) -> None:
        """The first reading of a process that started since the last one: all it spent is
        new. A process starts with no CPU time, so its start is a reading too: what it spent
        before this one (its model load) is a rate over its age, not over however short a
        span of the interval it first shows up in. Its interval reaches back to its start (a
        replica's reservation holds while it loads), but not before ``not_before``; what it
        spent before the interval is left to the time it was spent in, pro rata."""
        age, spent = reading.age_s, reading.cpu_seconds
        if age is None:
            self.cpu_seconds += spent
            self.unknown_age_cpu += spent
            return
        self.rate_mark = (tick - age, 0.0)
        self._peak(tick, spent)
        born = read_wall - age
        if not self.memory:  # no reading yet: the interval is the new process's own
            self.start = min(self.start, max(self.not_before, born))
        if born < self.start and age > 0:
            spent *= max(0.0, read_wall - self.start) / age
        self.cpu_seconds += spent

    def add_hosted(self, at: float, tick: float, slot: ReplicaSlot) -> None:
        """A hosted replica's reading, taken on its node when ``slot.reading.read_at`` says
        (rates divide by the time between readings, not between samples)."""
        reading = slot.reading
        read_at = None if reading is None else reading.read_at
        read_wall = None
        if read_at is not None:
            if read_at == self.read_at and slot.pid == self.pid:
                reading = None  # the same reading again: nothing new was read
            else:
                read_wall = at - max(0.0, tick - read_at)
                self.read_at = tick = read_at
        self.add(at, tick, slot, reading, read_wall)

    def _peak(self, tick: float, cpu_seconds: float) -> None:
        assert self.rate_mark is not None
        then, cpu_then = self.rate_mark
        # CPU time moves in clock ticks (10 ms): a rate over a shorter span is noise.
        if tick - then < _MIN_RATE_SPAN_S:
            return
        rate = max(0.0, cpu_seconds - cpu_then) / (tick - then) * 1000.0
        self.cpu_peak_milli = max(self.cpu_peak_milli or 0.0, rate)
        self.rate_mark = (tick, cpu_seconds)

    def add_gpu(self, reading: GpuReading | None) -> None:
        self.gpu_busy.append(0.0 if reading is None else reading.busy)
        used = 0.0 if reading is None else reading.memory_mib
        self.gpu_memory_peak = max(self.gpu_memory_peak or 0.0, used)

    def interval(self, node: str, end: float, *, gpu: bool) -> UsageInterval:
        slot = self.slot
        peak = max(self.memory, default=0.0)
        mean = sum(self.memory) / len(self.memory) if self.memory else 0.0
        cpu_peak = self.cpu_peak_milli
        seconds = max(end, self.start) - self.start
        if self.memory and seconds > 0:
            # The CPU counted here was spent in this interval, so its mean is a rate reached
            # at least (a peak below it would price a resize under what was used). A new
            # process's CPU of unknown age is not: no time is known to divide it by.
            spent = max(0.0, self.cpu_seconds - self.unknown_age_cpu)
            cpu_peak = max(cpu_peak or 0.0, spent / seconds * 1000.0)
        return UsageInterval(
            kind=WorkloadKind.REPLICA,
            team=slot.team,
            tier=slot.tier,
            node=node,
            start=self.start,
            end=max(end, self.start),
            endpoint=slot.endpoint,
            route=slot.route,
            version=slot.version,
            replica=slot.replica,
            cpu_milli=slot.cpu_milli,
            memory_mib=slot.memory_mib,
            gpu_fraction=slot.gpu_fraction,
            gpu_model=slot.gpu_model,
            cpu_seconds=self.cpu_seconds,
            cpu_peak_milli=cpu_peak,
            memory_peak_mib=peak,
            memory_mean_mib=min(mean, peak),
            gpu_util=(sum(self.gpu_busy) / len(self.gpu_busy)) if gpu and self.gpu_busy else None,
            gpu_memory_mib=self.gpu_memory_peak if gpu else None,
            samples=len(self.memory),
        )

    def restart_at(self, at: float) -> None:
        """Begin the next interval at ``at``, keeping the process mark for the next delta."""
        self.start = self.last_at = at
        self.cpu_seconds = 0.0
        self.cpu_peak_milli = None
        self.not_before = at
        self.unknown_age_cpu = 0.0
        self.memory.clear()
        self.gpu_busy.clear()
        self.gpu_memory_peak = None


class UsageSampler:
    """Samples serving replicas and records usage intervals; see the module docstring."""

    def __init__(
        self,
        engine: Engine,
        source: ReplicaSource,
        nodes: NodeSource,
        *,
        clock: Clock | None = None,
        sample_s: float = 5.0,
        flush_s: float = 60.0,
        compact_every_s: float = 600.0,
        processes: ProcessMeter | None = None,
        gpus: GpuMeter | None = None,
    ) -> None:
        if sample_s <= 0 or flush_s < sample_s:
            raise ValueError("usage sampling needs 0 < sample_s <= flush_s")
        self.engine = engine
        self.source = source
        self.nodes = nodes
        self.sample_s = sample_s
        self.flush_s = flush_s
        self.compact_every_s = compact_every_s
        self._clock = clock or SystemClock()
        self._processes = processes or ProcessMeter()
        self._gpus = gpus
        self._windows: dict[tuple[str, str, str, int], _Window] = {}
        self._closed: list[UsageInterval] = []
        self._ended: dict[tuple[str, str, str, int], float] = {}
        """Where each replica's last closed interval ended, this period."""
        self._period_start: float | None = None
        self._node = ""

    async def run(self, stop: asyncio.Event) -> None:
        """Sample every ``sample_s``, flush every ``flush_s`` and once more after ``stop``
        is set; store errors are logged and the time is flushed later."""
        if self._gpus is None:
            self._gpus = await asyncio.to_thread(GpuMeter)
        try:
            flushed = compacted = self._clock.monotonic()
            while not stop.is_set():
                await self.sample()
                if self._clock.monotonic() - flushed >= self.flush_s:
                    await self._flush_logged()
                    flushed = self._clock.monotonic()
                if self._clock.monotonic() - compacted >= self.compact_every_s:
                    await self._compact_logged()
                    compacted = self._clock.monotonic()
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(stop.wait(), timeout=self.sample_s)
            await self.sample()
            await self._flush_logged()
        finally:
            self._gpus.close()
            self._gpus = None  # a restarted run opens NVML again

    async def _compact_logged(self) -> None:
        try:
            merged = await asyncio.to_thread(compact, self.engine, self._clock.wall())
        except ModelplaneError as exc:
            log.warning("usage compaction failed (tried again later): %s", exc)
        else:
            log.debug("usage compaction merged away %d rows", merged)

    async def _flush_logged(self) -> None:
        try:
            await self.flush()
        except ModelplaneError as exc:
            log.warning("usage recording failed (kept for the next flush): %s", exc)

    async def sample(self) -> None:
        """One reading of every replica. The replicas are listed on the event loop (the
        data plane's thread); processes and GPUs are read from a worker thread."""
        if not self._node:
            try:
                await self._refresh_nodes()
            except ModelplaneError as exc:  # a bad cluster.yaml: sample all the same
                log.warning("usage: cannot read the cluster model: %s", exc)
        slots = list(self.source.replicas())
        pids = {s.pid for s in slots if s.pid is not None and s.node is None}
        readings, gpu = await asyncio.to_thread(self._read, pids)
        # Once read: the thread may have waited its turn, and rates divide by this time.
        now, tick = self._clock.wall(), self._clock.monotonic()
        first = self._period_start is None
        if first:
            self._period_start = now
        present = set()
        for slot in slots:
            present.add(slot.key)
            window = self._windows.get(slot.key)
            if window is not None and not window.slot.same_reservation(slot):
                window = self._reserved_anew(window, slot, gpu is not None)
            if window is None:
                assert self._period_start is not None
                not_before = max(self._period_start, self._ended.get(slot.key, 0.0))
                window = _Window(slot, now, now, fresh=not first, not_before=not_before)
                self._windows[slot.key] = window
            if slot.node is not None:
                window.add_hosted(now, tick, slot)
                continue
            reading = None if slot.pid is None else readings.get(slot.pid)
            window.add(now, tick, slot, reading)
            if gpu is not None:
                window.add_gpu(None if slot.pid is None else gpu.get(slot.pid))
        for key in set(self._windows) - present:
            gone = self._windows.pop(key)
            self._closed.append(self._interval(gone, gone.last_at, gpu is not None))
            self._ended[key] = gone.last_at

    def _reserved_anew(self, window: _Window, slot: ReplicaSlot, gpu: bool) -> _Window:
        """Close ``window`` where it was last seen and go on from there in a new interval
        under the new reservation. The same process goes on being read from its last mark:
        none of what it spent is charged twice. On another node it is another process."""
        self._closed.append(self._interval(window, window.last_at, gpu))
        following = _Window(slot, window.last_at, window.last_at, fresh=True,
                            not_before=window.last_at)  # fmt: skip
        if slot.node == window.slot.node:
            following.pid, following.cpu_mark = window.pid, window.cpu_mark
            following.rate_mark, following.read_at = window.rate_mark, window.read_at
            following.seen = window.seen
        self._windows[slot.key] = following
        return following

    def _interval(self, window: _Window, end: float, gpu: bool) -> UsageInterval:
        """The window's interval on its node: this machine's, or the one a backend runs it
        on (whose GPUs are not read here: no figures, rather than this machine's)."""
        node = window.slot.node
        if node is None:
            return window.interval(self._node_name(), end, gpu=gpu)
        return window.interval(node, end, gpu=False)

    def _read(
        self, pids: set[int]
    ) -> tuple[dict[int, ProcessReading], dict[int, GpuReading] | None]:
        self._processes.forget_all_but(pids)
        readings = {pid: r for pid in pids if (r := self._processes.read(pid)) is not None}
        gpus = self._gpus
        return readings, (gpus.read() if gpus is not None and gpus.available else None)

    def _node_name(self) -> str:
        return self._node or "local"

    async def _refresh_nodes(self) -> Sequence[NodeSpec]:
        nodes = await asyncio.to_thread(self.nodes)
        if nodes:
            self._node = nodes[0].name
        return nodes

    async def flush(self) -> list[UsageInterval]:
        """Close every window into an interval ending now and record them with what the
        nodes offered since the last flush; the intervals written."""
        now = self._clock.wall()
        nodes = await self._refresh_nodes()
        gpu = self._gpus is not None and self._gpus.available
        begun = self._period_start if self._period_start is not None else now
        intervals = [*self._closed]
        intervals += [self._interval(w, now, gpu) for w in self._windows.values()]
        offered = [_offer(node, begun, now) for node in nodes] if now > begun else []
        await asyncio.to_thread(record_period, self.engine, intervals, offered)
        # Only once stored: a failed write leaves the time to the next flush.
        self._closed.clear()
        self._ended.clear()  # all before ``now``, where every next interval begins
        for window in self._windows.values():
            window.restart_at(now)
        self._period_start = now
        return intervals

    @property
    def open_windows(self) -> Mapping[tuple[str, str, str, int], int]:
        """Readings held per open replica window (for status and tests)."""
        return {key: len(w.memory) for key, w in self._windows.items()}


def _offer(node: NodeSpec, start: float, end: float) -> NodeInterval:
    gpus = node.gpus
    return NodeInterval(
        node=node.name,
        start=start,
        end=end,
        cpu_milli=node.cpu_milli,
        memory_mib=node.memory_mib,
        gpu_count=0 if gpus is None else gpus.count,
        gpu_model=None if gpus is None else gpus.model,
        cost_per_hour=node.cost_per_hour,
    )
