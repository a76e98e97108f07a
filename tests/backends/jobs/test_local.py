"""LocalShardExecutor: shards as real spawned processes over real Parquet files."""

from __future__ import annotations

import os
import signal
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path

import numpy as np
import psutil
import pyarrow.parquet as pq
import pytest
from tests.backends.jobs.conftest import Scoring, direct_scores, job_of, tasks_of
from tests.kit import wait_for
from tests.kit.jobs import COLUMNS, read_output, wait_outcomes

from modelplane.backends.jobs.local import LocalShardExecutor
from modelplane.core.jobs import OutcomeStatus, ShardExecutor
from modelplane.errors import Conflict
from modelplane.security.sandbox import SandboxPolicy


def gone(pid: int) -> bool:
    """No such process, or only its zombie (orphans wait for a reaper that may never come)."""
    try:
        return bool(psutil.Process(pid).status() == psutil.STATUS_ZOMBIE)
    except psutil.NoSuchProcess:
        return True


@pytest.fixture(scope="module")
def executor() -> Iterator[LocalShardExecutor]:
    """One executor (one warm template) for the module, sandboxed as model workers are."""
    started = LocalShardExecutor(sandbox=SandboxPolicy())
    yield started
    started.close()


def test_four_shards_give_the_models_own_outputs(
    executor: LocalShardExecutor, scoring: Scoring, tmp_path: Path
) -> None:
    job = job_of(scoring.dataset, tmp_path / "out")
    tasks = tasks_of(scoring, job, "job-1")
    assert len(tasks) == 4
    assert isinstance(executor, ShardExecutor)
    for task in tasks:
        executor.start(task)
    assert len(executor.running()) == 4
    outcomes = wait_outcomes(executor, 4)
    assert sorted(o.index for o in outcomes) == [0, 1, 2, 3]
    assert {o.status for o in outcomes} == {OutcomeStatus.DONE}, [o.error for o in outcomes]
    assert all(o.rows == 250 and o.cpu_seconds > 0 and o.peak_memory_mib > 10 for o in outcomes)
    assert all(o.finished_at >= o.started_at for o in outcomes)

    out = read_output(tmp_path / "out")
    expected = direct_scores(scoring)
    assert out["txn_id"].tolist() == scoring.frame["txn_id"].tolist()
    assert np.array_equal(out["label"].to_numpy(), expected["label"])
    scores = np.stack(out["probabilities"].to_numpy())
    # float32 kernels may round the last bit differently for other batch sizes and buffers
    assert np.allclose(scores, expected["probabilities"], rtol=1e-6, atol=1e-7)
    # and scikit-learn's own answer, to float32's precision (the ONNX model computes in it)
    proba = scoring.estimator.predict_proba(scoring.frame[COLUMNS].astype(np.float32))
    assert np.allclose(scores, proba, rtol=1e-4, atol=1e-5)
    assert out["request_id"].iloc[0] == "job-1/0/0"
    assert out["request_id"].iloc[-1] == "job-1/3/999"
    assert set(out["model_digest"]) == {scoring.model.digest}
    assert set(out["model_version"]) == {"fraud:1"}
    assert not list((tmp_path / "out" / "_attempts").iterdir())


def test_a_killed_shard_leaves_nothing_and_its_retry_writes_once(
    executor: LocalShardExecutor, scoring: Scoring, tmp_path: Path
) -> None:
    # one shard of every row, a row per model call: slow enough to be killed mid-way
    job = job_of(scoring.dataset, tmp_path / "out", shard={"count": 1}, batch_rows=1)
    [task] = tasks_of(scoring, job, "job-2")
    executor.start(task)
    staging = Path(task.temp_path)
    wait_for(staging.exists, 60, "the shard to start writing")
    pid = executor.pid(task.attempt_id)
    assert pid is not None
    os.kill(pid, signal.SIGKILL)
    [killed] = wait_outcomes(executor, 1)
    assert killed.status is OutcomeStatus.FAILED
    assert "SIGKILL" in str(killed.error)
    assert not Path(task.final_path).exists()
    assert not staging.exists()

    # the retry may call the model on many rows at once: the output is the same
    quick = job_of(scoring.dataset, tmp_path / "out", shard={"count": 1})
    [retry] = tasks_of(scoring, quick, "job-2", attempt=2)
    executor.start(retry)
    [done] = wait_outcomes(executor, 1)
    assert (done.status, done.rows, done.reused) == (OutcomeStatus.DONE, 1000, False)
    first_write = os.stat(task.final_path).st_mtime_ns

    # a third attempt (a resumed job) finds the shard done and writes nothing
    [again] = tasks_of(scoring, quick, "job-2", attempt=3)
    executor.start(again)
    [reused] = wait_outcomes(executor, 1)
    assert (reused.status, reused.rows, reused.reused) == (OutcomeStatus.DONE, 1000, True)
    assert os.stat(task.final_path).st_mtime_ns == first_write
    assert pq.read_metadata(task.final_path).num_rows == 1000


def test_a_preempted_shard_is_gone_within_the_grace(
    executor: LocalShardExecutor, scoring: Scoring, tmp_path: Path
) -> None:
    job = job_of(scoring.dataset, tmp_path / "out", shard={"count": 1}, batch_rows=1)
    [task] = tasks_of(scoring, job, "job-3")
    executor.start(task)
    with pytest.raises(Conflict):
        executor.start(task)
    wait_for(Path(task.temp_path).exists, 60, "the shard to start writing")
    pid = executor.pid(task.attempt_id)
    assert pid is not None
    executor.stop(task.attempt_id, reason=OutcomeStatus.PREEMPTED, grace_s=2.0)
    assert not psutil.pid_exists(pid)
    [outcome] = executor.poll()
    assert outcome.status is OutcomeStatus.PREEMPTED
    assert not Path(task.final_path).exists()
    assert not Path(task.temp_path).exists()


def test_a_shard_whose_model_fails_reports_the_error(
    executor: LocalShardExecutor, scoring: Scoring, tmp_path: Path
) -> None:
    job = job_of(scoring.dataset, tmp_path / "out", shard={"count": 1})
    [task] = tasks_of(scoring, job, "job-4")
    broken = replace(task, model_digest="sha256:" + "0" * 64)
    executor.start(broken)
    [outcome] = wait_outcomes(executor, 1)
    assert outcome.status is OutcomeStatus.FAILED
    assert "IntegrityError" in str(outcome.error)
    assert not Path(task.final_path).exists()


def test_a_dead_template_fails_its_shards_and_is_started_again(
    executor: LocalShardExecutor, scoring: Scoring, tmp_path: Path
) -> None:
    job = job_of(scoring.dataset, tmp_path / "out", shard={"count": 1}, batch_rows=1)
    [task] = tasks_of(scoring, job, "job-5")
    executor.start(task)
    wait_for(Path(task.temp_path).exists, 60, "the shard to start writing")
    pid = executor.pid(task.attempt_id)
    assert pid is not None
    psutil.Process(pid).parent().kill()  # the template
    [lost] = wait_outcomes(executor, 1)
    assert lost.status is OutcomeStatus.FAILED
    assert "SIGKILL" in str(lost.error)
    wait_for(lambda: gone(pid), 10, "the shard to die with its template")

    quick = job_of(scoring.dataset, tmp_path / "out", shard={"count": 1})
    [retry] = tasks_of(scoring, quick, "job-5", attempt=2)
    executor.start(retry)
    [done] = wait_outcomes(executor, 1)
    assert (done.status, done.rows) == (OutcomeStatus.DONE, 1000)
