"""A child gateway's pool over replicas another gateway placed (``system.attached_pool``),
with a directory and connections made here: it attaches what is placed, sends each batch to
the replica with the fewest outstanding, retries once elsewhere when one is lost, follows
replicas that come and go, and says so when there is nothing to attach to."""

from __future__ import annotations

import asyncio
from typing import Any

import numpy as np
import pytest
from tests.system.test_gateways import arm, child, snapshot, sums_of

from modelplane.backends.wire import Frame, Op
from modelplane.dataplane.pool import PoolConfig, PoolRequest
from modelplane.dataplane.pool import ReplicaState as PoolReplicaState
from modelplane.dataplane.pool.worker import WorkerSpec
from modelplane.errors import ReplicaLost, WorkerFailed
from modelplane.spec.fields import FieldSpec, Signature
from modelplane.spec.manifest import Resources
from modelplane.system.attached_pool import AttachedPool
from modelplane.system.gateway_sums import SummedConcurrency

pytestmark = pytest.mark.timeout(60)

Arrays = dict[str, Any]
ROW: Arrays = {"x": np.ones((1, 2), dtype=np.float32)}


class FakeChannel:
    def __init__(self, name: str) -> None:
        self.name = name
        self.closed = False
        self.calls = 0
        self.fail = False
        self.hold: asyncio.Event | None = None

    async def call(self, op: Op, arrays: Arrays | None, timeout_s: float) -> Frame:
        self.calls += 1
        if self.hold is not None:
            await self.hold.wait()
        if self.fail:
            self.closed = True
            raise ReplicaLost(f"{self.name}: the connection closed")
        return Frame(Op.RESULT, 0, {"by": np.array([self.name])})

    async def close(self) -> None:
        self.closed = True


class FakeDirectory:
    """Replicas placed elsewhere: ``placed`` by name with node; ``channels`` made on connect."""

    def __init__(self, placed: dict[str, str]) -> None:
        self.placed = dict(placed)
        self.channels: dict[str, FakeChannel] = {}
        self.lists = 0

    async def placed_for(self, endpoint: str, model: str) -> dict[str, str]:
        assert (endpoint, model) == ("fraud", "fraud:1")
        self.lists += 1
        return dict(self.placed)

    async def connection(self, name: str, timeout_s: float) -> tuple[str, int, str] | None:
        return (name, 1, "secret") if name in self.placed else None

    async def connect(self, host: str, port: int, secret: str, timeout_s: float) -> FakeChannel:
        assert secret == "secret"
        channel = self.channels[host] = FakeChannel(host)
        return channel


def request(replicas: int = 2, start_timeout_s: float = 5.0) -> PoolRequest:
    signature = Signature(inputs=(FieldSpec(name="x", dtype="float32"),))
    config = PoolConfig(replicas=replicas, start_timeout_s=start_timeout_s, stop_timeout_s=1.0)
    return PoolRequest(
        "fraud/fraud:1", WorkerSpec("m:load"), signature, config, "fraud", "fraud:1",
        "risk", "standard", Resources(),
    )  # fmt: skip


def pool_over(directory: FakeDirectory, **kwargs: Any) -> AttachedPool:
    return AttachedPool(directory, request(**kwargs), refresh_s=0.02, connect=directory.connect)


async def until(check: Any, timeout_s: float = 5.0) -> None:
    loop = asyncio.get_running_loop()
    end = loop.time() + timeout_s
    while not check():
        assert loop.time() < end, "timed out"
        await asyncio.sleep(0.01)


def test_batches_go_to_the_least_loaded_replica() -> None:
    async def scenario() -> None:
        directory = FakeDirectory({"a": "w1", "b": "w2"})
        pool = pool_over(directory)
        await pool.start()
        await until(lambda: len(directory.channels) == 2)
        infos = pool.replicas()
        assert [(i.state, i.node) for i in infos] == [
            (PoolReplicaState.READY, "w1"), (PoolReplicaState.READY, "w2"),
        ]  # fmt: skip
        channels = directory.channels
        for channel in channels.values():
            channel.hold = asyncio.Event()
        held = asyncio.ensure_future(pool.predict(ROW, 5.0))
        await until(lambda: sum(c.calls for c in channels.values()) == 1)
        busy, free = sorted(channels.values(), key=lambda c: -c.calls)
        assert free.hold is not None
        assert busy.hold is not None
        free.hold.set()
        # one holds a batch: the next ones go to the other
        for _ in range(3):
            answer = await pool.predict(ROW, 5.0)
            assert answer["by"][0] == free.name
        busy.hold.set()
        assert (await held)["by"][0] == busy.name
        await pool.stop()
        assert all(c.closed for c in directory.channels.values())
        assert directory.placed == {"a": "w1", "b": "w2"}  # the replicas are not its own

    asyncio.run(scenario())


def test_a_lost_replica_is_retried_once_elsewhere_then_attached_again() -> None:
    async def scenario() -> None:
        directory = FakeDirectory({"a": "w1", "b": "w2"})
        pool = pool_over(directory)
        await pool.start()
        await until(lambda: len(directory.channels) == 2)
        lost = directory.channels["a"]
        lost.fail = True
        answers = {(await pool.predict(ROW, 5.0))["by"][0] for _ in range(4)}
        assert answers == {"b"}
        assert pool.restarts == 1
        # placed again (same name): the next look attaches a new connection
        await until(lambda: directory.channels["a"] is not lost and not pool.replicas()[0].reason)
        assert pool.replicas()[0].state is PoolReplicaState.READY
        # both lost: the one retry fails too, and the error says the replica was lost
        for channel in directory.channels.values():
            channel.fail = True
        with pytest.raises(WorkerFailed, match="connection closed"):
            await pool.predict(ROW, 5.0)
        await pool.stop()

    asyncio.run(scenario())


def test_replicas_come_and_go_with_the_placing_gateway() -> None:
    async def scenario() -> None:
        directory = FakeDirectory({"a": "w1"})
        pool = pool_over(directory, replicas=2)
        await pool.start()
        infos = pool.replicas()
        assert [(i.state, i.reason) for i in infos] == [
            (PoolReplicaState.READY, ""), (PoolReplicaState.STARTING, "not placed yet"),
        ]  # fmt: skip
        directory.placed["b"] = "w2"
        await until(lambda: "b" in directory.channels)
        await until(lambda: all(i.state is PoolReplicaState.READY for i in pool.replicas()))
        del directory.placed["a"]
        await until(lambda: directory.channels["a"].closed)
        assert {(await pool.predict(ROW, 5.0))["by"][0] for _ in range(3)} == {"b"}
        assert pool.restarts == 0  # stopped on purpose is not a restart
        await pool.resize(1)
        assert pool.config.replicas == 1
        await pool.stop()

    asyncio.run(scenario())


def test_nothing_to_attach_to_is_a_clear_failure() -> None:
    async def scenario() -> None:
        directory = FakeDirectory({})
        pool = pool_over(directory, start_timeout_s=0.2)
        with pytest.raises(WorkerFailed, match="no replica of fraud/fraud:1 to attach to"):
            await pool.start()
        assert pool.stopping
        lists = directory.lists
        await asyncio.sleep(0.1)  # a stopped pool looks no more
        assert directory.lists == lists

    asyncio.run(scenario())


def test_shared_replicas_carry_every_gateways_requests() -> None:
    # two gateways, two replicas they share: 6 + 2 in flight weigh on the same two
    sums, _, clock = sums_of(snapshot(arm(0), queued=6, replicas=2))
    child(sums, clock, snapshot(arm(0), queued=2, replicas=2))
    load = SummedConcurrency(sums, shared=True).load("fraud")
    assert load is not None
    assert (load.concurrency, load.ready_replicas, load.replicas) == (8, 2, 2)
    assert SummedConcurrency(sums, shared=True).load("other") is None


def test_a_head_that_does_not_answer_leaves_the_attached_replicas_serving() -> None:
    class Unlisted(FakeDirectory):
        away = False
        failed = 0

        async def placed_for(self, endpoint: str, model: str) -> dict[str, str]:
            if self.away:
                self.failed += 1
                raise WorkerFailed("the Ray head at 127.0.0.1:6379 gave no answer")
            return await super().placed_for(endpoint, model)

    async def scenario() -> None:
        directory = Unlisted({"a": "w1"})
        pool = pool_over(directory, replicas=1)
        await pool.start()
        directory.away = True
        await until(lambda: directory.failed >= 3)
        assert (await pool.predict(ROW, 5.0))["by"][0] == "a"
        assert pool.replicas()[0].state is PoolReplicaState.READY
        await pool.stop()

    asyncio.run(scenario())
