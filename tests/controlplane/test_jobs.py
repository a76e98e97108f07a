"""The job controller over a real store and registry, real Parquet and real shard processes."""

from __future__ import annotations

import os
import signal
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
from sklearn.linear_model import LogisticRegression
from tests.kit import wait_for
from tests.kit.jobs import COLUMNS, build_model, frame_of, job_doc, read_output, write_parquet

from modelplane.backends.jobs.local import LocalShardExecutor
from modelplane.controlplane.apply import Applier
from modelplane.controlplane.degrader import Degrader
from modelplane.controlplane.jobs import (
    JobController,
    capacity_of,
    degrader_effects,
    job_cost,
    shard_demand,
)
from modelplane.core.degrade import DegradeState, Effects
from modelplane.core.jobplan import JobPlanner
from modelplane.errors import Conflict, InvalidSpec, NotFound, NotReady
from modelplane.observe.usage import WorkloadKind, read_usage
from modelplane.registry.service import Registry, open_registry
from modelplane.spec.cluster import ClusterSpec, GPUs, NodeSpec
from modelplane.spec.job import Job
from modelplane.store.jobs import JobState, JobStore, ShardRecord, ShardState
from modelplane.store.resources import ResourceStore
from modelplane.system.jobs import LocalJobPlanner

ROWS = 1000


@dataclass
class World:
    registry: Registry
    planner: LocalJobPlanner
    model: LogisticRegression
    dataset: Path
    frame: pd.DataFrame
    root: Path
    cpu_milli: int = 8000

    def cluster(self) -> ClusterSpec:
        node = NodeSpec(name="box", cpu_milli=self.cpu_milli, memory_mib=65_536, cost_per_hour=1)
        return ClusterSpec(nodes=(node,))

    def submit(self, doc: dict[str, Any]) -> None:
        check = _checker(self.planner)
        Applier(
            self.registry, ResourceStore(self.registry.engine), actor="alice", job_check=check
        ).apply_all([doc])

    def apply(self, doc: dict[str, Any]) -> None:
        Applier(self.registry, ResourceStore(self.registry.engine), actor="alice").apply_all([doc])


def _checker(planner: JobPlanner) -> Any:
    def check(job: Job) -> None:
        planner.plan(job, "submit-check")

    return check


@pytest.fixture
def world(tmp_path: Path) -> Iterator[World]:
    registry = open_registry(f"sqlite:///{tmp_path}/state.db", str(tmp_path / "art"), actor="alice")
    folder, model = build_model(tmp_path / "pkg")
    registry.push(folder, team="risk")
    frame = frame_of(ROWS)
    dataset = write_parquet(frame, tmp_path / "txns.parquet")
    planner = LocalJobPlanner(registry, tmp_path / "cache")
    yield World(registry, planner, model, dataset, frame, tmp_path)
    registry.close()


@pytest.fixture
def executor() -> Iterator[LocalShardExecutor]:
    running = LocalShardExecutor()
    yield running
    running.close()


def controller(world: World, executor: LocalShardExecutor, **kwargs: Any) -> JobController:
    return JobController(world.registry, executor, world.planner, world.cluster, **kwargs)


def run_until(
    control: JobController, name: str, states: set[JobState], timeout_s: float = 300
) -> JobState:
    jobs = JobStore(control.registry.engine)

    def reached() -> JobState | None:
        control.reconcile_now()
        state = jobs.get(name).state
        return state if state in states else None

    return wait_for(reached, timeout_s, f"job {name} to be {sorted(states)}", every_s=0.25)


def passed(control: JobController, jobs: JobStore, name: str, state: JobState) -> bool:
    """One pass, then: is the job in ``state``?"""
    control.reconcile_now()
    return jobs.get(name).state is state


def messages(world: World, name: str) -> list[str]:
    return [e.message for e in JobStore(world.registry.engine).events(name)]


def test_a_four_shard_job_scores_like_the_model_and_is_recorded(
    world: World, executor: LocalShardExecutor
) -> None:
    out = world.root / "scores"
    world.submit(job_doc("score", world.dataset, out))
    control = controller(world, executor)
    assert run_until(control, "score", {JobState.SUCCEEDED, JobState.FAILED}) is JobState.SUCCEEDED
    scores = read_output(out)
    expected = world.model.predict_proba(world.frame[COLUMNS])[:, 1]
    assert list(scores["txn_id"]) == list(range(ROWS))
    assert np.allclose(np.stack(scores["probabilities"].to_numpy())[:, 1], expected, rtol=1e-12)
    assert list(scores["label"]) == list(world.model.predict(world.frame[COLUMNS]))
    record = JobStore(world.registry.engine).get("score")
    assert (record.shards_total, record.rows_total, record.model_ref) == (4, ROWS, "fraud:1")
    status = ResourceStore(world.registry.engine).get("Job", "score").status or {}
    finished = next(c for c in status["conditions"] if c["type"] == "Finished")
    assert (finished["status"], finished["reason"]) == ("True", "Succeeded")
    assert status["rows"] == {"done": ROWS, "total": ROWS}
    usage = read_usage(world.registry.engine, 0, 4e9, kinds=[WorkloadKind.SHARD])
    assert sorted(u.shard or 0 for u in usage if u.job == "score") == [0, 1, 2, 3]
    assert any("planned 4 shard(s) over 1000 rows" in m for m in messages(world, "score"))


def test_bad_input_is_refused_at_submit_and_nothing_is_stored(world: World) -> None:
    out = world.root / "scores"
    cases: list[tuple[dict[str, Any], type[Exception], str]] = [
        (job_doc("a", world.root / "missing.parquet", out), InvalidSpec, "work.input.url"),
        (job_doc("b", world.dataset, out, model="nope:1"), NotFound, "work.model"),
        (job_doc("c", world.dataset, out, passthrough=["no_such"]), InvalidSpec, "no_such"),
    ]
    for doc, error, field in cases:
        with pytest.raises(error, match=field):
            world.submit(doc)
    finished = world.root / "finished"
    finished.mkdir()
    (finished / "_SUCCESS").write_text('{"job_uid": "another"}')
    with pytest.raises(Conflict, match=r"work\.output\.url"):
        world.submit(job_doc("d", world.dataset, finished))
    assert ResourceStore(world.registry.engine).list("Job") == []
    world.submit(job_doc("d", world.dataset, finished, overwrite=True))


def test_a_job_never_changes_once_submitted(world: World) -> None:
    doc = job_doc("score", world.dataset, world.root / "out")
    world.submit(doc)
    world.submit(doc)  # the same again: unchanged
    with pytest.raises(Conflict, match="does not change once submitted"):
        world.submit({**doc, "parallelism": {"min": 1, "max": 2}})


def test_a_team_at_its_quota_waits_with_the_reason_and_starts_when_freed(
    world: World, executor: LocalShardExecutor
) -> None:
    world.apply(
        {
            "kind": "Policy",
            "teams": [{"name": "risk", "quotas": {"cpu": {"nominal": 1000, "borrowing_limit": 0}}}],
        }
    )
    # one shard of every row, a row per model call: slow enough to hold the quota a while
    slow = job_doc(
        "first",
        world.dataset,
        world.root / "a",
        parallelism=(1, 1),
        shard={"count": 1},
        batch_rows=1,
    )
    world.submit(slow)
    control = controller(world, executor)
    run_until(control, "first", {JobState.RUNNING})
    world.submit(job_doc("second", world.dataset, world.root / "b", shard={"count": 1}))
    jobs = JobStore(world.registry.engine)
    wait_for(
        lambda: passed(control, jobs, "second", JobState.QUEUED),
        30,
        "second queued",
    )
    control.reconcile_now()
    reason = jobs.get("second").reason
    assert "waiting for quota: cpu:" in reason, reason
    assert "team risk's limit" in reason, reason
    assert "limit 1000" in reason, reason
    jobs.cancel("first", actor="alice", reason="make room", now=0.0)
    assert run_until(control, "second", {JobState.SUCCEEDED}) is JobState.SUCCEEDED
    assert jobs.get("first").state is JobState.CANCELLED
    assert [e.action for e in world.registry.audit_events(subject="Job/first")][:1] == [
        "job.cancel"
    ]


def test_a_shard_that_crashes_is_retried_then_fails_the_job_with_its_error(
    world: World, executor: LocalShardExecutor
) -> None:
    doc = job_doc(
        "crashy",
        world.dataset,
        world.root / "c",
        parallelism=(1, 1),
        shard={"count": 1},
        batch_rows=1,
        retries={"limit": 1, "backoff_s": 0.1},
    )
    world.submit(doc)
    control = controller(world, executor)
    jobs = JobStore(world.registry.engine)
    killed: set[str] = set()

    def crash_running() -> bool:
        control.reconcile_now()
        for attempt in executor.running():
            pid = executor.pid(attempt)
            if pid is not None and attempt not in killed:
                os.kill(pid, signal.SIGKILL)
                killed.add(attempt)
        return jobs.get("crashy").state is JobState.FAILED

    wait_for(crash_running, 300, "the job to fail", every_s=0.25)
    record = jobs.get("crashy")
    assert "shard 0 failed after 2 attempt(s)" in record.reason
    assert "SIGKILL" in record.reason
    [shard] = jobs.shards(["crashy"])["crashy"]
    assert (shard.state, shard.attempts, shard.failures) == (ShardState.FAILED, 2, 2)
    assert any("retry 1 of 1" in m for m in messages(world, "crashy"))


class _JoiningAgain(LocalShardExecutor):
    """An executor whose backend is not ready for its first ``refusals`` starts (a Ray
    head being joined again)."""

    def __init__(self, refusals: int) -> None:
        super().__init__()
        self.refusals = refusals

    def start(self, task: Any) -> None:
        if self.refusals > 0:
            self.refusals -= 1
            raise NotReady("not connected to the Ray cluster", retry_after_s=0.05)
        super().start(task)


def test_a_backend_not_ready_spends_no_retry(world: World) -> None:
    world.submit(job_doc("patient", world.dataset, world.root / "p", parallelism=(1, 1),
                         shard={"count": 1}, retries={"limit": 0, "backoff_s": 0.1}))  # fmt: skip
    executor = _JoiningAgain(refusals=3)
    try:
        control = controller(world, executor)
        assert run_until(control, "patient", {JobState.SUCCEEDED, JobState.FAILED}) is (
            JobState.SUCCEEDED
        )
    finally:
        executor.close()
    [shard] = JobStore(world.registry.engine).shards(["patient"])["patient"]
    assert shard.failures == 0
    assert executor.refusals == 0
    assert any("could not start" in m for m in messages(world, "patient"))


def test_paused_batch_admission_holds_the_queue(world: World, executor: LocalShardExecutor) -> None:
    world.submit(job_doc("held", world.dataset, world.root / "h"))
    paused = Effects(paused_tiers=frozenset({"batch"}))
    control = controller(world, executor, degradation=lambda: paused)
    jobs = JobStore(world.registry.engine)
    wait_for(
        lambda: passed(control, jobs, "held", JobState.QUEUED),
        30,
        "queued",
    )
    control.reconcile_now()
    assert "admission of batch is paused" in jobs.get("held").reason
    assert executor.running() == ()


class NoLoad:
    """The degrader's evidence when nothing is served."""

    def load(self, endpoint: str) -> None:
        return None


def test_the_degraders_active_steps_reach_the_queue(world: World) -> None:
    steps = ["pause-batch-admission", "preempt-borrowed-batch", "freeze-canaries"]
    world.apply({"kind": "Policy", "degradation": {"steps": steps}})
    degrader = Degrader(world.registry, NoLoad())
    now = degrader_effects(degrader)
    assert now() == Effects()
    degrader.state = DegradeState(level=1)
    assert now() == Effects(paused_tiers=frozenset({"batch"}))
    degrader.state = DegradeState(level=2)
    assert now().preempt_borrowed_tiers == frozenset({"batch"})


def test_capacity_demand_and_cost_in_the_schedulers_units() -> None:
    gpu_node = NodeSpec(
        name="g", cpu_milli=16_000, memory_mib=64_000, cost_per_hour=4.0,
        gpus=GPUs(model="A10", count=2, memory_mib=24_000),
    )  # fmt: skip
    cluster = ClusterSpec(nodes=(gpu_node, NodeSpec(name="c", cpu_milli=8000, memory_mib=32_000)))
    assert capacity_of(cluster) == {"cpu": 24_000, "memory": 96_000, "gpu": 2000, "gpu/A10": 2000}
    job = Job.model_validate(
        {
            **job_doc("j", "/d.parquet", "/o"),
            "resources": {"cpu": 2, "memory_mb": 8000, "gpus": 0.5},
        }
    )
    demand = shard_demand(job)
    assert (demand.cpu_milli, demand.memory_mib, demand.gpus, demand.gpu_milli) == (
        2000,
        8000,
        1,
        500,
    )
    # half an hour of shard time holding a quarter of the node's GPUs (its largest share)
    shards = [replace_wall(1800.0)]
    assert job_cost(shards, demand, cluster) == pytest.approx(0.5 * 0.25 * 4.0)


def replace_wall(seconds: float) -> ShardRecord:
    return ShardRecord(
        "j", 0, 0, 10, (), ShardState.DONE, 1, 0, None, 10, False, None, 0.0, 1.0, seconds,
        0.0, 0.0, 0.0,
    )  # fmt: skip
