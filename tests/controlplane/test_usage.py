"""The usage sampler against real processes: CPU time and its peak rate, resident memory,
a worker that restarts, a replica that goes, node prices beside the intervals, a store
that is down for a flush, and the loop inside ``up`` (started, flushed, stopped)."""

from __future__ import annotations

import asyncio
import itertools
import os
import subprocess
import sys
import threading
from collections.abc import Iterator, Sequence
from dataclasses import replace

import psutil
import pytest
from sqlalchemy import Engine
from tests.kit import free_port, wait_for

from modelplane.controlplane.usage import GpuMeter, ProcessReading, ReplicaSlot, UsageSampler
from modelplane.errors import ModelplaneError
from modelplane.observe.cost import group_usage
from modelplane.observe.usage import UsageInterval, read_nodes, read_usage
from modelplane.spec.cluster import NodeSpec
from modelplane.store.db import open_engine
from modelplane.types import FakeClock

pytestmark = pytest.mark.timeout(90)

BUSY = "import sys; print('ready', flush=True)\nwhile True: pass"
HOLD_80_MIB = (
    "import sys, time; block = bytearray(80 << 20); block[::4096] = b'x' * len(block[::4096]);"
    " print('ready', flush=True); time.sleep(120)"
)
NODE = NodeSpec(name="test-node", cpu_milli=4000, memory_mib=8192, cost_per_hour=2.0)


def start(code: str) -> subprocess.Popen[str]:
    process = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True)
    assert process.stdout is not None
    assert process.stdout.readline().strip() == "ready"
    return process


@pytest.fixture
def processes() -> Iterator[list[subprocess.Popen[str]]]:
    started: list[subprocess.Popen[str]] = []
    yield started
    for process in started:
        process.kill()
        process.wait(timeout=10)
        if process.stdout is not None:
            process.stdout.close()


class Replicas:
    """What a gateway would list: slots the test edits as workers come and go."""

    def __init__(self) -> None:
        self.slots: dict[str, ReplicaSlot] = {}

    def replicas(self) -> Sequence[ReplicaSlot]:
        return list(self.slots.values())

    def put(self, endpoint: str, pid: int | None, *, cpu_milli: int = 2000,
            memory_mib: int = 4096, replica: int = 0) -> None:  # fmt: skip
        self.slots[endpoint] = ReplicaSlot(
            endpoint=endpoint, route="route", version=f"{endpoint}:1", replica=replica, pid=pid,
            team="risk", tier="standard", cpu_milli=cpu_milli, memory_mib=memory_mib,
        )  # fmt: skip


def one_idle_replica(processes: list[subprocess.Popen[str]]) -> Replicas:
    """Replica ``idle``: a process holding 80 MiB and no CPU (in ``processes`` to be ended)."""
    idle = start(HOLD_80_MIB)
    processes.append(idle)
    source = Replicas()
    source.put("idle", idle.pid)
    return source


@pytest.fixture
def engine(sqlite_url: str) -> Iterator[Engine]:
    engine = open_engine(sqlite_url)
    yield engine
    engine.dispose()


def cpu_of(pid: int) -> float:
    times = psutil.Process(pid).cpu_times()
    return float(times.user + times.system)


def test_a_busy_and_an_idle_worker_read_as_they_are(
    engine: Engine, processes: list[subprocess.Popen[str]]
) -> None:
    busy, idle = start(BUSY), start(HOLD_80_MIB)
    processes += [busy, idle]
    source = Replicas()
    source.put("busy", busy.pid)
    source.put("idle", idle.pid)
    source.put("starting", None)  # no worker yet: reserved all the same, nothing used
    sampler = UsageSampler(engine, source, lambda: [NODE], sample_s=0.1, flush_s=0.1)

    async def scenario() -> None:
        await sampler.sample()
        spent = cpu_of(busy.pid)
        wait_for(lambda: cpu_of(busy.pid) >= spent + 0.3, 20, "the busy worker to spend CPU")
        await sampler.sample()
        await sampler.flush()

    asyncio.run(scenario())
    found = {i.endpoint: i for i in read_usage(engine, 0, 1e12)}
    assert set(found) == {"busy", "idle", "starting"}
    assert found["busy"].cpu_seconds >= 0.3
    assert found["busy"].cpu_peak_milli is not None
    # one span between the two readings: its rate is what the interval spent over them
    busy_rate = found["busy"].cpu_seconds / found["busy"].seconds * 1000
    assert found["busy"].cpu_peak_milli >= 0.9 * busy_rate > 0
    assert found["busy"].samples == 2
    assert found["idle"].memory_peak_mib >= 80
    assert found["idle"].cpu_seconds < 0.2
    assert found["starting"].cpu_seconds == 0
    assert found["starting"].samples == 0
    assert found["busy"].node == "test-node"
    assert (found["busy"].cpu_milli, found["busy"].memory_mib) == (2000, 4096)
    if not GpuMeter().available:  # no GPU here: no figures, rather than zeros
        assert found["busy"].gpu_util is None
    (node,) = read_nodes(engine, 0, 1e12)
    assert (node.node, node.cost_per_hour, node.cpu_milli) == ("test-node", 2.0, 4000)
    assert node.start == found["busy"].start


def test_a_restarted_worker_counts_from_its_new_process_and_a_gone_replica_closes(
    engine: Engine, processes: list[subprocess.Popen[str]]
) -> None:
    first = start(BUSY)
    processes.append(first)
    other = start(HOLD_80_MIB)
    processes.append(other)
    source = Replicas()
    source.put("fraud", first.pid)
    source.put("ranker", other.pid)
    sampler = UsageSampler(engine, source, lambda: [NODE], sample_s=0.1, flush_s=0.1)

    async def scenario() -> None:
        await sampler.sample()
        first.kill()
        first.wait(timeout=10)
        second = start(BUSY)
        processes.append(second)
        source.put("fraud", second.pid)
        wait_for(lambda: cpu_of(second.pid) >= 0.2, 20, "the new worker to spend CPU")
        del source.slots["ranker"]
        await sampler.sample()
        await sampler.flush()

    asyncio.run(scenario())
    found = {i.endpoint: i for i in read_usage(engine, 0, 1e12)}
    # the new process started after the window began: all its CPU is this replica's
    assert found["fraud"].cpu_seconds >= 0.2
    assert found["fraud"].samples == 2
    # its new process's CPU before its first reading is in the mean: the peak is no lower
    fraud = found["fraud"]
    assert fraud.cpu_peak_milli is not None
    assert fraud.cpu_peak_milli >= fraud.cpu_seconds / fraud.seconds * 1000 > 0
    # the gone replica's interval ends when it was last seen
    assert found["ranker"].end == found["ranker"].start
    assert found["ranker"].samples == 1


def test_a_store_that_is_down_keeps_the_time_for_the_next_flush(
    engine: Engine, processes: list[subprocess.Popen[str]]
) -> None:
    source = one_idle_replica(processes)
    sampler = UsageSampler(engine, source, lambda: [NODE], sample_s=0.1, flush_s=0.1)
    nobody_listens = f"postgresql+psycopg://postgres@127.0.0.1:{free_port()}/none"
    broken = open_engine(nobody_listens, migrate_schema=False)

    async def scenario() -> None:
        await sampler.sample()
        sampler.engine = broken
        with pytest.raises(ModelplaneError):
            await sampler.flush()
        await sampler.sample()
        sampler.engine = engine
        await sampler.flush()

    asyncio.run(scenario())
    (interval,) = read_usage(engine, 0, 1e12)
    assert interval.samples == 2  # both readings, in the one interval the retry wrote
    (node,) = read_nodes(engine, 0, 1e12)
    assert (node.start, node.end) == (interval.start, interval.end)


def test_run_samples_flushes_and_flushes_once_more_when_stopped(
    engine: Engine, processes: list[subprocess.Popen[str]]
) -> None:
    source = one_idle_replica(processes)
    sampler = UsageSampler(
        engine, source, lambda: [NODE], sample_s=0.05, flush_s=0.2, compact_every_s=0.2
    )

    loop = asyncio.new_event_loop()
    stop = asyncio.Event()
    runner = threading.Thread(target=loop.run_until_complete, args=(sampler.run(stop),))
    runner.start()
    try:
        wait_for(lambda: len(read_usage(engine, 0, 1e12)) >= 2, 30, "two flushes")
    finally:
        loop.call_soon_threadsafe(stop.set)
        runner.join(timeout=30)
        loop.close()
    assert not runner.is_alive()
    intervals = read_usage(engine, 0, 1e12)
    assert len(intervals) >= 3  # two while running, one more when stopped
    # consecutive intervals of one replica meet: no time lost or counted twice
    for before, after in itertools.pairwise(intervals):
        assert after.start == before.end
    nodes = read_nodes(engine, 0, 1e12)
    assert [n.start for n in nodes] == [i.start for i in intervals]


def hosted_slot(endpoint: str, node: str, reading: ProcessReading | None, *,
                pid: int = 4242) -> ReplicaSlot:  # fmt: skip
    """A replica a Ray node runs: its reading taken there, handed over with its node."""
    return ReplicaSlot(
        endpoint=endpoint, route="route", version=f"{endpoint}:1", replica=0, pid=pid,
        team="risk", tier="standard", cpu_milli=1000, memory_mib=512, node=node,
        reading=reading,
    )  # fmt: skip


def test_a_hosted_replica_is_charged_to_its_node_with_the_reading_taken_there(
    engine: Engine, processes: list[subprocess.Popen[str]]
) -> None:
    clock = FakeClock()
    source = one_idle_replica(processes)  # a worker of this machine, beside them
    t0 = clock.monotonic()
    # this process's own pid: read here, it would show this test's CPU, not the reading's
    source.slots["ray"] = hosted_slot("ray", "ray-b", ProcessReading(10.0, 300.0, t0),
                                      pid=os.getpid())  # fmt: skip
    source.slots["loading"] = hosted_slot("loading", "ray-c", None)
    sampler = UsageSampler(engine, source, lambda: [NODE], clock=clock, sample_s=1, flush_s=1)

    async def scenario() -> None:
        await sampler.sample()  # present at the first reading: only marked
        clock.advance(2.0)
        await sampler.sample()  # the same reading handed over again: nothing new
        clock.advance(2.0)
        later = ProcessReading(12.0, 320.0, t0 + 4.0)
        source.slots["ray"] = hosted_slot("ray", "ray-b", later, pid=os.getpid())
        await sampler.sample()
        clock.advance(1.0)
        await sampler.flush()

    asyncio.run(scenario())
    found = {i.endpoint: i for i in read_usage(engine, 0, 1e12)}
    ray, loading, idle = found["ray"], found["loading"], found["idle"]
    assert (ray.node, loading.node, idle.node) == ("ray-b", "ray-c", "test-node")
    assert ray.cpu_seconds == pytest.approx(2.0)
    assert ray.cpu_peak_milli == pytest.approx(500.0)  # 2 s of CPU over the 4 s between readings
    assert (ray.samples, ray.memory_peak_mib) == (2, 320.0)
    assert ray.gpu_util is None
    assert ray.gpu_model is None
    # placed, not read yet: its reservation counts all the same
    assert (loading.cpu_milli, loading.memory_mib, loading.samples) == (1000, 512, 0)
    assert loading.cpu_seconds == 0
    assert loading.seconds == pytest.approx(5.0)
    assert idle.samples == 3


def test_a_replica_moved_to_another_node_closes_its_interval_on_the_first(engine: Engine) -> None:
    clock = FakeClock()
    source = Replicas()
    source.slots["ray"] = hosted_slot("ray", "ray-b", ProcessReading(1.0, 100.0, 0.0))
    sampler = UsageSampler(engine, source, lambda: [NODE], clock=clock, sample_s=1, flush_s=1)

    async def scenario() -> None:
        await sampler.sample()
        clock.advance(3.0)
        source.slots["ray"] = hosted_slot("ray", "ray-c", ProcessReading(0.5, 90.0, 3.0), pid=7)
        await sampler.sample()
        clock.advance(1.0)
        await sampler.flush()

    asyncio.run(scenario())
    by_node = {i.node: i for i in read_usage(engine, 0, 1e12)}
    assert set(by_node) == {"ray-b", "ray-c"}
    # as a changed reservation: the first ends where it was last seen, no time counted twice
    assert by_node["ray-b"].end <= by_node["ray-c"].start
    assert (by_node["ray-b"].samples, by_node["ray-c"].samples) == (1, 1)


def one_new_replica(
    engine: Engine, *, after_s: float, cpu_s: float, age_s: float | None, flush_after_s: float
) -> tuple[UsageInterval, float]:
    """A replica ``ray-b`` runs, first read ``after_s`` into the period with ``cpu_s`` of CPU
    already spent at ``age_s``, then a flush ``flush_after_s`` later; its interval and when
    the period began."""
    clock = FakeClock()
    source = Replicas()
    sampler = UsageSampler(engine, source, lambda: [NODE], clock=clock, sample_s=1, flush_s=1)
    began = clock.wall()

    async def scenario() -> None:
        await sampler.sample()  # nothing yet: the replica below is new
        clock.advance(after_s)
        loaded = ProcessReading(cpu_s, 200.0, clock.monotonic(), age_s=age_s)
        source.slots["new"] = hosted_slot("new", "ray-b", loaded)
        await sampler.sample()
        clock.advance(flush_after_s)
        await sampler.flush()

    asyncio.run(scenario())
    (interval,) = read_usage(engine, 0, 1e12)
    return interval, began


def test_a_fresh_process_peak_is_never_below_its_mean(engine: Engine) -> None:
    """A replica that appears while sampling with CPU already spent (its model load): that
    CPU counts, as a rate over the process's age, and its interval reaches back to the
    process's start (its reservation held while it loaded); so the peak must not read 0 and
    price a resize below what was used."""
    interval, began = one_new_replica(engine, after_s=1.0, cpu_s=0.4, age_s=0.5, flush_after_s=9.0)
    assert interval.cpu_seconds == pytest.approx(0.4)
    assert interval.start == pytest.approx(began + 0.5)  # where its process started
    assert interval.seconds == pytest.approx(9.5)
    mean_milli = interval.cpu_seconds / interval.seconds * 1000
    assert interval.cpu_peak_milli is not None
    assert interval.cpu_peak_milli == pytest.approx(800.0)  # 0.4 s of CPU in its first 0.5 s
    assert interval.cpu_peak_milli >= mean_milli > 0
    # as the report reads it: the peak is at least the mean, and no saving below it
    (group,) = group_usage([interval], read_nodes(engine, 0, 1e12))
    utilization = group.utilization["cpu"]
    assert utilization is not None
    assert utilization > 0
    assert group.peak["cpu"] >= utilization * group.reserved["cpu"]


def test_a_start_up_flushed_at_once_is_a_rate_over_the_process_age(engine: Engine) -> None:
    """CI once read a peak of 3,615 cores: a replica seen first by the sample just before a
    flush put its whole model load (1.8 s of CPU) over the half millisecond between the two.
    The load is a rate over the process's age. Its process started 1.75 s before the period
    did, so the interval reaches back to the period's start only, and keeps the share of the
    load spent since: the mean and the peak agree, and the report's utilization is real."""
    interval, began = one_new_replica(
        engine, after_s=0.25, cpu_s=1.8, age_s=2.0, flush_after_s=0.0005
    )
    assert interval.start == pytest.approx(began)
    assert interval.cpu_seconds == pytest.approx(1.8 * 0.25 / 2.0)  # spent since the start
    assert interval.cpu_peak_milli == pytest.approx(900.0)
    (group,) = group_usage([interval], read_nodes(engine, 0, 1e12))
    utilization = group.utilization["cpu"]
    assert utilization is not None
    assert 0 < utilization * group.reserved["cpu"] <= group.peak["cpu"] + 1e-9 < 1.0


def test_a_start_up_of_unknown_age_counts_in_no_rate(engine: Engine) -> None:
    """Without the process's age there is no time to divide its load by: it is charged (CPU
    seconds) but no peak is made up from it."""
    interval, _ = one_new_replica(engine, after_s=0.25, cpu_s=1.8, age_s=None, flush_after_s=0.0005)
    assert interval.cpu_seconds == pytest.approx(1.8)
    assert interval.cpu_peak_milli == 0.0


def test_a_real_worker_that_appears_just_before_a_flush_reads_its_real_rate(
    engine: Engine, processes: list[subprocess.Popen[str]]
) -> None:
    """The same through psutil and /proc: a process spinning one core, first read by the
    sample a flush follows at once, peaks near one core, not at its CPU over a millisecond."""
    source = Replicas()
    sampler = UsageSampler(engine, source, lambda: [NODE], sample_s=1, flush_s=1)

    async def scenario() -> None:
        await sampler.sample()  # before it: the replica below is new
        busy = start(BUSY)
        processes.append(busy)
        wait_for(lambda: cpu_of(busy.pid) >= 0.5, 20, "the new worker to spend CPU")
        source.put("busy", busy.pid)
        await sampler.sample()
        await sampler.flush()

    asyncio.run(scenario())
    (interval,) = read_usage(engine, 0, 1e12)
    assert interval.cpu_seconds >= 0.5
    assert interval.cpu_peak_milli is not None
    # one spinning thread: a core at most, read to the clock tick (a loaded machine, less)
    assert 50 < interval.cpu_peak_milli <= 1100


def test_a_replica_moved_to_another_team_charges_its_process_once(engine: Engine) -> None:
    """A changed reservation (here the team) closes the interval and opens another where it
    ended; the same process is read on from its last reading, not charged again from its
    start."""
    clock = FakeClock()
    source = Replicas()
    t0 = clock.monotonic()
    source.slots["ray"] = hosted_slot("ray", "ray-b", ProcessReading(10.0, 300.0, t0, age_s=60))
    sampler = UsageSampler(engine, source, lambda: [NODE], clock=clock, sample_s=1, flush_s=1)

    async def scenario() -> None:
        await sampler.sample()  # present at the first reading: only marked
        clock.advance(2.0)
        later = ProcessReading(12.0, 310.0, t0 + 2.0, age_s=62)
        moved = hosted_slot("ray", "ray-b", later)
        source.slots["ray"] = replace(moved, team="growth")
        await sampler.sample()
        clock.advance(1.0)
        await sampler.flush()

    asyncio.run(scenario())
    by_team = {i.team: i for i in read_usage(engine, 0, 1e12)}
    assert set(by_team) == {"risk", "growth"}
    assert by_team["risk"].end == by_team["growth"].start
    assert by_team["risk"].cpu_seconds == 0.0
    assert by_team["growth"].cpu_seconds == pytest.approx(2.0)  # not its 12 s since it started
