"""Shards as local processes: one fresh interpreter per attempt, measured and stoppable.

The process (:mod:`.process`) does the reading, scoring and writing
(:func:`.runner.run_shard`, sandboxed like model workers when a policy is given); this
side commits the finished file, so the rename that makes a shard done happens once,
outside code that the model could disturb.
CPU seconds and peak memory come from the process itself when it ends normally, and from
``psutil`` samples taken on every poll when it is killed.
"""

from __future__ import annotations

import contextlib
import logging
import os
import pickle
import signal
import subprocess
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from multiprocessing.connection import wait as wait_any

import psutil

from modelplane.backends.jobs.runner import ShardResult, commit_shard, final_rows
from modelplane.backends.jobs.runner import staging_path as staging_for
from modelplane.core.jobs import OutcomeStatus, ShardOutcome, ShardTask
from modelplane.errors import Conflict, ModelplaneError
from modelplane.security.sandbox import SandboxPolicy

__all__ = ["LocalShardExecutor"]

log = logging.getLogger(__name__)


@dataclass
class _Attempt:
    task: ShardTask
    process: subprocess.Popen[bytes]
    staging: str
    started_at: float
    started_mono: float
    peak_rss_mib: float = 0.0
    cpu_seconds: float = 0.0
    stopped: OutcomeStatus | None = None
    watcher: psutil.Process | None = field(default=None, repr=False)

    @property
    def alive(self) -> bool:
        return self.process.poll() is None


class LocalShardExecutor:
    """A :class:`~modelplane.core.jobs.ShardExecutor` running each attempt as a process.

    ``sandbox`` is the node's sandbox policy for model code (``None``: no sandbox); each
    shard gets it narrowed to its package and its reserved memory.
    """

    def __init__(self, *, sandbox: SandboxPolicy | None = None, python: str | None = None):
        self._sandbox = sandbox
        self._python = python or sys.executable
        self._attempts: dict[str, _Attempt] = {}
        self._ready: list[ShardOutcome] = []

    # -- protocol --------------------------------------------------------------------

    def start(self, task: ShardTask) -> None:
        if task.attempt_id in self._attempts:
            raise Conflict(f"shard attempt {task.attempt_id} is already running")
        now = time.time()
        rows = final_rows(task.final_path)
        if rows is not None:  # an earlier attempt (or run of the job) finished it
            self._ready.append(_outcome(task, OutcomeStatus.DONE, now, now, rows=rows, reused=True))
            return
        staging = staging_for(task)
        process = subprocess.Popen(
            [self._python, "-m", "modelplane.backends.jobs.process"],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            close_fds=True,
        )
        assert process.stdin is not None
        try:
            pickle.dump((task, staging, self._sandbox), process.stdin)
            process.stdin.close()
        except OSError:  # it died at once; its exit code says so when collected
            pass
        attempt = _Attempt(task, process, staging, now, time.monotonic())
        with contextlib.suppress(psutil.Error):
            attempt.watcher = psutil.Process(process.pid)
        self._attempts[task.attempt_id] = attempt

    def running(self) -> Sequence[str]:
        return tuple(self._attempts)

    def pid(self, attempt_id: str) -> int | None:
        """The process id of a running attempt (for operators' tools and logs)."""
        attempt = self._attempts.get(attempt_id)
        return None if attempt is None else attempt.process.pid

    def poll(self) -> list[ShardOutcome]:
        return self._collect()

    def wait(self, timeout: float) -> list[ShardOutcome]:
        deadline = time.monotonic() + max(0.0, timeout)
        while True:
            outcomes = self._collect()
            left = deadline - time.monotonic()
            if outcomes or left <= 0:
                return outcomes
            # a reply pipe becomes readable (EOF at least) when its process ends
            waitables = [a.process.stdout.fileno() for a in self._attempts.values()
                         if a.process.stdout is not None]  # fmt: skip
            if not waitables:
                return []
            wait_any(waitables, timeout=min(left, 0.5))

    def stop(self, attempt_id: str, *, reason: OutcomeStatus, grace_s: float = 5.0) -> None:
        attempt = self._attempts.get(attempt_id)
        if attempt is None or attempt.stopped is not None:
            return
        if reason not in (OutcomeStatus.PREEMPTED, OutcomeStatus.CANCELLED):
            raise ValueError(f"a stop is preempted or cancelled, not {reason}")
        attempt.stopped = reason
        self._sample(attempt)
        attempt.process.terminate()
        try:
            attempt.process.wait(grace_s)
        except subprocess.TimeoutExpired:
            attempt.process.kill()
            attempt.process.wait(grace_s)

    def close(self) -> None:
        for attempt_id in list(self._attempts):
            self.stop(attempt_id, reason=OutcomeStatus.CANCELLED, grace_s=2.0)
        self._collect()
        self._attempts.clear()

    # -- internals -------------------------------------------------------------------

    def _sample(self, attempt: _Attempt) -> None:
        if attempt.watcher is None:
            return
        with contextlib.suppress(psutil.Error):
            times = attempt.watcher.cpu_times()
            attempt.cpu_seconds = max(attempt.cpu_seconds, times.user + times.system)
            rss = attempt.watcher.memory_info().rss / (1 << 20)
            attempt.peak_rss_mib = max(attempt.peak_rss_mib, rss)

    def _collect(self) -> list[ShardOutcome]:
        done, self._ready = self._ready, []
        for attempt_id, attempt in list(self._attempts.items()):
            if attempt.alive:
                self._sample(attempt)
                continue
            del self._attempts[attempt_id]
            done.append(self._finish(attempt))
        return done

    def _finish(self, attempt: _Attempt) -> ShardOutcome:
        task, now = attempt.task, time.time()
        message = _received(attempt.process)
        if attempt.stopped is not None:
            _discard(attempt.staging)
            return _outcome(task, attempt.stopped, attempt.started_at, now,
                            cpu=attempt.cpu_seconds, rss=attempt.peak_rss_mib)  # fmt: skip
        if message is not None and message[0] == "ok" and attempt.process.returncode == 0:
            result = message[1]
            assert isinstance(result, ShardResult)
            try:
                rows, _ = commit_shard(task, attempt.staging)
            except (ModelplaneError, OSError) as exc:
                _discard(attempt.staging)
                return _outcome(task, OutcomeStatus.FAILED, attempt.started_at, now,
                                error=f"commit failed: {exc}", cpu=result.cpu_seconds,
                                rss=result.peak_memory_mib)  # fmt: skip
            return _outcome(task, OutcomeStatus.DONE, attempt.started_at, now, rows=rows,
                            cpu=result.cpu_seconds, rss=result.peak_memory_mib)  # fmt: skip
        _discard(attempt.staging)
        if message is not None and message[0] == "error":
            error = str(message[1])
        else:
            error = _death(attempt.process.returncode)
        return _outcome(task, OutcomeStatus.FAILED, attempt.started_at, now, error=error,
                        cpu=attempt.cpu_seconds, rss=attempt.peak_rss_mib)  # fmt: skip


def _received(process: subprocess.Popen[bytes]) -> tuple[str, object] | None:
    """The one reply of an ended process, if it wrote a whole one."""
    assert process.stdout is not None
    try:
        data = process.stdout.read()
    except OSError:
        return None
    finally:
        process.stdout.close()
    try:
        message = pickle.loads(data) if data else None
    except (pickle.UnpicklingError, EOFError, ValueError, AttributeError, ImportError):
        return None
    if isinstance(message, tuple) and len(message) == 2:
        return (str(message[0]), message[1])
    return None


def _death(exitcode: int | None) -> str:
    if exitcode is not None and exitcode < 0:
        try:
            name = signal.Signals(-exitcode).name
        except ValueError:
            name = f"signal {-exitcode}"
        return f"the shard's process was killed by {name}"
    return f"the shard's process exited with code {exitcode} without a result"


def _discard(path: str) -> None:
    with contextlib.suppress(FileNotFoundError):
        os.unlink(path)


def _outcome(
    task: ShardTask,
    status: OutcomeStatus,
    started: float,
    finished: float,
    *,
    rows: int = 0,
    error: str | None = None,
    cpu: float = 0.0,
    rss: float = 0.0,
    reused: bool = False,
) -> ShardOutcome:
    gpus = task.reservation.gpu_milli / 1000
    return ShardOutcome(
        job_uid=task.job_uid,
        index=task.plan.index,
        attempt=task.attempt,
        status=status,
        rows=rows,
        started_at=started,
        finished_at=finished,
        error=error,
        cpu_seconds=cpu,
        peak_memory_mib=rss,
        gpu_seconds=0.0 if reused else gpus * max(0.0, finished - started),
        reused=reused,
    )
