"""The usage sampler against real processes: CPU time and its peak rate, resident memory,
a worker that restarts, a replica that goes, node prices beside the intervals, a store
that is down for a flush, and the loop inside ``up`` (started, flushed, stopped)."""

from __future__ import annotations

import asyncio
import itertools
import subprocess
import sys
import threading
from collections.abc import Iterator, Sequence

import psutil
import pytest
from sqlalchemy import Engine
from tests.kit import free_port, wait_for

from modelplane.controlplane.usage import GpuMeter, ReplicaSlot, UsageSampler
from modelplane.errors import ModelplaneError
from modelplane.observe.usage import read_nodes, read_usage
from modelplane.spec.cluster import NodeSpec
from modelplane.store.db import open_engine

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
