"""RayShardExecutor through a real Ray head restart, beside the head link ``up`` joins with.

The cluster runs in a process of its own (``ClusterHost``, from the backend's reconnect
test), so its head can be killed and a new one started on the same port while this process
stays the driver. The backend's head link notices the head is gone, leaves the old cluster
and joins the new one; the executor never joins on its own, so its attempt of the old
cluster ends as preempted (no retry spent), nothing starts while there is no connection,
and the shard's next attempt runs on the new cluster.
"""

from __future__ import annotations

import asyncio
import functools
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import ray
from tests.backends.jobs.conftest import Scoring, direct_scores, job_of, tasks_of
from tests.backends.test_ray_reconnect import LINK, ClusterHost, run, token_env
from tests.kit import free_port, wait_for
from tests.kit.jobs import read_output, wait_outcomes

from modelplane.backends.jobs.ray import RayShardExecutor
from modelplane.backends.ray import RayBackend
from modelplane.core.jobs import OutcomeStatus, ShardOutcome
from modelplane.errors import NotReady
from modelplane.spec.io import parse
from modelplane.spec.job import Job

pytestmark = [pytest.mark.xdist_group("ray"), pytest.mark.timeout(400)]
UID = "ray-rejoin"


def scoring_job(scoring: Scoring, out: Path, **work: Any) -> Job:
    """One shard of every row, small enough for the host's one node (1 GiB, 2 CPUs)."""
    job = job_of(scoring.dataset, out, shard={"count": 1}, **work)
    return parse(Job, {**job.model_dump(), "resources": {"cpu": 1, "memory_mb": 256}})


# The job controller may poll while the head is away (the task then ends with its node)
# or first once the new head is joined (its ref then belongs to the old connection).
@pytest.mark.parametrize("poll_while_away", [True, False], ids=["polled", "not-polled"])
def test_a_shard_lost_with_the_head_is_preempted_and_runs_again_on_the_new_head(
    scoring: Scoring, tmp_path: Path, poll_while_away: bool
) -> None:
    port = free_port()
    with token_env() as env:
        hosts = [ClusterHost(port, env)]
        try:
            restart = functools.partial(ClusterHost, port, env)
            run(scenario(hosts, restart, scoring, tmp_path / "out", poll_while_away))
        finally:
            for host in hosts:
                host.crash()


async def scenario(
    hosts: list[ClusterHost],
    restart: Callable[[], ClusterHost],
    scoring: Scoring,
    out: Path,
    poll_while_away: bool,
) -> None:
    first = hosts[0]
    backend = RayBackend.connect(first.address, link=LINK)
    executor = RayShardExecutor()  # over the backend's connection, as `up` makes it
    # a row per model call: still running when the head goes
    [lost] = tasks_of(scoring, scoring_job(scoring, out, batch_rows=1), UID)
    [again] = tasks_of(scoring, scoring_job(scoring, out), UID, attempt=2)
    outcomes: list[ShardOutcome] = []

    def head_up() -> bool:  # read anew each time: the link's task changes it
        return backend.head_up

    async def poll() -> None:  # as the job controller does, in a thread beside the link's
        outcomes.extend(await asyncio.to_thread(executor.poll))

    try:
        executor.start(lost)
        staging = Path(lost.temp_path)
        await asyncio.to_thread(wait_for, staging.exists, 120, "the shard to start writing")
        await asyncio.to_thread(first.crash)
        await backend.nodes()  # the head link notices, and starts joining again
        assert not head_up()

        # The link leaves the old cluster once its calls are over; polling meanwhile is safe.
        deadline = time.monotonic() + LINK.call_timeout_s + 60
        while ray.is_initialized():
            assert time.monotonic() < deadline, "the old cluster was never left"
            if poll_while_away:
                await poll()
            await asyncio.sleep(0.05)
        with pytest.raises(NotReady, match="not connected"):
            executor.start(again)
        assert executor.running() == (lost.attempt_id,) or outcomes

        second = await asyncio.to_thread(restart)
        hosts.append(second)
        assert second.address == first.address
        deadline = time.monotonic() + 90
        while not (head_up() and outcomes):
            assert time.monotonic() < deadline, f"head up {head_up()}: {outcomes}"
            await backend.nodes()
            await poll()
            await asyncio.sleep(0.05)
        [preempted] = outcomes
        assert (preempted.index, preempted.attempt) == (0, 1)
        assert preempted.status is OutcomeStatus.PREEMPTED, preempted.error
        assert "the shard's Ray task was lost" in str(preempted.error)
        assert executor.running() == ()
        assert not Path(lost.final_path).exists()

        executor.start(again)
        [done] = await asyncio.to_thread(wait_outcomes, executor, 1, 120)
        assert done.status is OutcomeStatus.DONE, done.error
        assert (done.index, done.attempt, done.rows, done.reused) == (0, 2, 1000, False)
    finally:
        executor.close()
        await backend.close()

    assert [p.name for p in out.glob("part-*.parquet")] == [Path(again.final_path).name]
    frame = read_output(out)
    assert frame["txn_id"].tolist() == list(range(1000))
    scores = np.stack(frame["probabilities"].to_numpy())
    assert np.allclose(scores, direct_scores(scoring)["probabilities"], rtol=1e-6, atol=1e-7)
