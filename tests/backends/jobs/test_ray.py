"""RayShardExecutor on a real three-node Ray cluster (token authentication, loopback, no
dashboard)."""

from __future__ import annotations

import hashlib
import os
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import ray
from tests.backends.jobs.conftest import Scoring, direct_scores, job_of, tasks_of
from tests.backends.jobs.kinds_kit import Home, make_home
from tests.backends.jobs.kinds_kit import job as kinds_job
from tests.conftest import REDIS_URL
from tests.kit import wait_for
from tests.kit.jobs import read_output, wait_outcomes
from tests.kit.ray_cluster import NodeShape, RayTestCluster, ray_test_cluster

from modelplane.backends.jobs.ray import RayShardExecutor, task_options
from modelplane.backends.ray_nodes import nodes_from_ray
from modelplane.core.jobs import OutcomeStatus, ShardExecutor
from modelplane.features.stores import open_online_store
from modelplane.security.sandbox import SandboxPolicy
from modelplane.spec.io import parse
from modelplane.spec.job import Job

# Ray clusters are started on one xdist worker, one after another: two at once on two
# cores starve each other past their start-up timeouts.
pytestmark = pytest.mark.xdist_group("ray")
REDIS = REDIS_URL


@pytest.fixture(scope="module")
def cluster() -> Iterator[RayTestCluster]:
    workers = [NodeShape("worker-a"), NodeShape("worker-b")]
    with ray_test_cluster(NodeShape("head"), workers) as started:
        yield started


def test_the_same_job_as_ray_tasks_gives_the_same_outputs(
    cluster: RayTestCluster, scoring: Scoring, tmp_path: Path
) -> None:
    job = job_of(scoring.dataset, tmp_path / "out")
    tasks = tasks_of(scoring, job, "ray-1")
    executor = RayShardExecutor(cluster.address, sandbox=SandboxPolicy())
    assert isinstance(executor, ShardExecutor)
    try:
        for task in tasks:
            executor.start(task)
        outcomes = wait_outcomes(executor, 4)
    finally:
        executor.close()
    assert {o.status for o in outcomes} == {OutcomeStatus.DONE}, [o.error for o in outcomes]
    assert sorted(o.index for o in outcomes) == [0, 1, 2, 3]
    # each outcome names the node that ran it, as placement names nodes: usage is charged there
    names = {n.name for n in nodes_from_ray(ray.nodes())}  # type: ignore[no-untyped-call]
    assert {o.node for o in outcomes} <= names
    out = read_output(tmp_path / "out")
    assert out["txn_id"].tolist() == list(range(1000))
    scores = np.stack(out["probabilities"].to_numpy())
    assert np.allclose(scores, direct_scores(scoring)["probabilities"], rtol=1e-6, atol=1e-7)
    assert len(ray.nodes()) == 3  # type: ignore[no-untyped-call]


def test_a_cancelled_task_stops_its_shard(
    cluster: RayTestCluster, scoring: Scoring, tmp_path: Path
) -> None:
    job = job_of(scoring.dataset, tmp_path / "out", shard={"count": 1}, batch_rows=1)
    [task] = tasks_of(scoring, job, "ray-2")
    executor = RayShardExecutor(cluster.address)
    try:
        executor.start(task)
        wait_for(Path(task.temp_path).exists, 120, "the shard to start writing")
        executor.stop(task.attempt_id, reason=OutcomeStatus.PREEMPTED, grace_s=2.0)
        [outcome] = wait_outcomes(executor, 1)
    finally:
        executor.close()
    assert outcome.status is OutcomeStatus.PREEMPTED
    assert not Path(task.final_path).exists()


def _auth_of_this_worker() -> tuple[str | None, str]:
    token = os.environ.get("RAY_AUTH_TOKEN", "")
    return os.environ.get("RAY_AUTH_MODE"), hashlib.sha256(token.encode()).hexdigest()


def test_shard_tasks_run_on_a_closed_cluster(
    cluster: RayTestCluster, scoring: Scoring, tmp_path: Path
) -> None:
    # a task with a shard's own options lands in a worker that holds the token, and nothing
    # of the cluster listens beyond loopback
    [task, *_] = tasks_of(scoring, job_of(scoring.dataset, tmp_path / "o"), "ray-4")
    assert cluster.token
    probe = ray.remote(_auth_of_this_worker).options(**task_options(task))
    mode, token_hash = ray.get(probe.remote(), timeout=120)
    assert (mode, token_hash) == ("token", hashlib.sha256(cluster.token.encode()).hexdigest())
    assert cluster.listening_hosts() == {"127.0.0.1"}


def test_resources_follow_the_reservation(scoring: Scoring, tmp_path: Path) -> None:
    shard = {"cpu": 0.5, "memory_mb": 256, "gpus": 0.25, "gpu_model": "A10"}
    job = parse(Job, {**job_of(scoring.dataset, tmp_path / "o").model_dump(), "resources": shard})
    [task, *_] = tasks_of(scoring, job, "ray-3")
    options = task_options(task)
    assert options["num_cpus"] == 0.5
    assert options["memory"] == 256 << 20
    assert options["num_gpus"] == 0.25
    assert options["resources"] == {"accelerator_type:A10": 0.001}
    assert options["max_retries"] == 0


@pytest.fixture(scope="module")
def home(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Home]:
    yield from make_home(tmp_path_factory.mktemp("ray-kinds"))


def test_a_materialize_job_as_ray_tasks_fills_the_online_store(
    cluster: RayTestCluster, home: Home, tmp_path: Path
) -> None:
    first = 2_000_000_000 + int.from_bytes(os.urandom(3), "big")  # keys of our own in Redis
    keys = list(range(first, first + 90))
    frame = pd.DataFrame({"customer_id": keys, "event_time": [1.7e9] * 90,
                          "txn_count_7d": [k % 7 for k in keys]})  # fmt: skip
    frame.to_parquet(tmp_path / "customers.parquet")
    job = kinds_job("ray-backfill", {"type": "materialize", "feature_set": "customer:1",
                                     "input": {"url": str(tmp_path / "customers.parquet")},
                                     "shard": {"count": 3}})  # fmt: skip
    planner = home.planner(REDIS)
    planned = planner.plan(job, "ray-mat")
    planner.claim(job, "ray-mat", planned)
    executor = RayShardExecutor(cluster.address, sandbox=SandboxPolicy())
    try:
        for plan in planned.shards:
            executor.start(planner.task(job, "ray-mat", plan, 1, planned))
        outcomes = wait_outcomes(executor, 3)
    finally:
        executor.close()
    assert {o.status for o in outcomes} == {OutcomeStatus.DONE}, [o.error for o in outcomes]
    store = open_online_store(REDIS)
    try:
        found = store.read("customer", 1, keys, ["txn_count_7d"], now=2e9)
    finally:
        store.close()
    assert [f.values.get("txn_count_7d") for f in found] == [k % 7 for k in keys]
