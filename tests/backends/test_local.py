"""The local backend: real replica processes on this machine, held to the node's capacity."""

from __future__ import annotations

import asyncio
import os
import signal
from collections.abc import Awaitable
from pathlib import Path
from typing import TypeVar

import numpy as np
import pytest

from modelplane.backends.local import LocalBackend
from modelplane.core.backend import BackendNode, ReplicaRequest, ReplicaSpec, ReplicaState
from modelplane.core.cluster import Demand
from modelplane.errors import WorkerFailed

T = TypeVar("T")
SPEC = ReplicaSpec("fake_models:load", paths=(str(Path(__file__).parents[1] / "dataplane"),))
NODE = BackendNode("this-machine", 2000, 4096)


def run(coro: Awaitable[T]) -> T:
    async def bounded() -> T:
        return await asyncio.wait_for(coro, 60)

    return asyncio.run(bounded())


def test_a_replica_process_answers_batches_and_dies_visibly() -> None:
    backend = LocalBackend(NODE)

    async def scenario() -> None:
        try:
            status = await backend.start(
                ReplicaRequest("r1", "this-machine", SPEC, Demand(1000, 256)), 30
            )
            assert status.state is ReplicaState.READY
            answer = await backend.predict("r1", {"x": np.array([[3.0]])}, 10)
            np.testing.assert_array_equal(answer["y"], [[6.0]])
            assert int(answer["pid"][0]) == status.pid
            assert await backend.ping("r1", 10)
            assert status.pid is not None
            os.kill(status.pid, signal.SIGKILL)
            loop = asyncio.get_running_loop()
            deadline = loop.time() + 10
            while (await backend.replicas())[0].state is not ReplicaState.DEAD:
                assert loop.time() < deadline, "the dead replica still looks alive"
                await asyncio.sleep(0.05)
            with pytest.raises(WorkerFailed):
                await backend.predict("r1", {"x": np.array([[3.0]])}, 10)
            await backend.stop("r1", 1.0)
            assert await backend.replicas() == []
        finally:
            await backend.close()

    run(scenario())


def test_the_backend_holds_replicas_to_the_node_and_its_capacity() -> None:
    backend = LocalBackend(NODE)

    async def scenario() -> None:
        try:
            await backend.start(ReplicaRequest("a", "this-machine", SPEC, Demand(1500, 256)), 30)
            with pytest.raises(WorkerFailed, match="does not fit on this-machine: 500m CPU"):
                await backend.start(ReplicaRequest("b", "this-machine", SPEC, Demand(1000, 64)), 30)
            with pytest.raises(WorkerFailed, match="node elsewhere is not this machine"):
                await backend.start(ReplicaRequest("c", "elsewhere", SPEC, Demand(100, 64)), 30)
            assert [s.name for s in await backend.replicas()] == ["a"]
            assert [n.name for n in await backend.nodes()] == ["this-machine"]
        finally:
            await backend.close()

    run(scenario())


def test_a_model_that_fails_to_load_leaves_nothing_running() -> None:
    backend = LocalBackend(NODE)
    broken = ReplicaSpec("fake_models:load_broken", paths=SPEC.paths)
    with pytest.raises(WorkerFailed, match="no model here"):
        run(backend.start(ReplicaRequest("bad", "this-machine", broken, Demand(100, 64)), 30))
    assert run(backend.replicas()) == []
