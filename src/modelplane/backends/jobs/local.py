"""Shards as local processes: one spawned process per attempt, measured and stoppable.

The process does the reading, scoring and writing (:func:`.runner.run_shard`, sandboxed
like model workers when a policy is given); this side commits the finished file, so the
rename that makes a shard done happens once, outside code that the model could disturb.
CPU seconds and peak memory come from the process itself when it ends normally, and from
``psutil`` samples taken on every poll when it is killed.
"""

from __future__ import annotations

import contextlib
import ctypes
import logging
import multiprocessing
import os
import signal
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from multiprocessing.connection import Connection
from multiprocessing.connection import wait as wait_any
from multiprocessing.process import BaseProcess
from typing import Any

import psutil

from modelplane.backends.jobs.runner import ShardResult, commit_shard, final_rows, run_shard
from modelplane.backends.jobs.runner import staging_path as staging_for
from modelplane.core.jobs import OutcomeStatus, ShardOutcome, ShardTask
from modelplane.errors import Conflict, ModelplaneError
from modelplane.security.sandbox import SandboxPolicy

__all__ = ["LocalShardExecutor", "shard_process_main"]

log = logging.getLogger(__name__)
_PR_SET_PDEATHSIG = 1


def shard_process_main(
    task: ShardTask, staging: str, sandbox: SandboxPolicy | None, conn: Connection
) -> None:
    """Entry point of a shard's process: run it, report one message, exit."""
    # A shard must not outlive whoever runs it (a Ray worker killed by force, say).
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL(None).prctl(_PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    try:
        result = run_shard(task, staging, sandbox)
    except BaseException as exc:  # everything becomes the shard's error text
        conn.send(("error", f"{type(exc).__name__}: {exc}"))
        raise SystemExit(1) from None
    conn.send(("ok", result))


@dataclass
class _Attempt:
    task: ShardTask
    process: BaseProcess
    conn: Connection
    staging: str
    started_at: float
    started_mono: float
    peak_rss_mib: float = 0.0
    cpu_seconds: float = 0.0
    stopped: OutcomeStatus | None = None
    watcher: psutil.Process | None = field(default=None, repr=False)


class LocalShardExecutor:
    """A :class:`~modelplane.core.jobs.ShardExecutor` running each attempt as a process.

    ``sandbox`` is the node's sandbox policy for model code (``None``: no sandbox); each
    shard gets it narrowed to its package and its reserved memory.
    """

    def __init__(self, *, sandbox: SandboxPolicy | None = None, start_method: str = "spawn"):
        self._sandbox = sandbox
        self._context: Any = multiprocessing.get_context(start_method)
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
        receive, send = self._context.Pipe(duplex=False)
        process = self._context.Process(
            target=shard_process_main,
            args=(task, staging, self._sandbox, send),
            name=f"shard-{task.attempt_id}",
            daemon=True,
        )
        process.start()
        send.close()
        attempt = _Attempt(task, process, receive, staging, now, time.monotonic())
        with contextlib.suppress(psutil.Error):
            attempt.watcher = psutil.Process(process.pid)
        self._attempts[task.attempt_id] = attempt

    def running(self) -> Sequence[str]:
        return tuple(self._attempts)

    def poll(self) -> list[ShardOutcome]:
        return self._collect()

    def wait(self, timeout: float) -> list[ShardOutcome]:
        deadline = time.monotonic() + max(0.0, timeout)
        while True:
            outcomes = self._collect()
            left = deadline - time.monotonic()
            if outcomes or left <= 0:
                return outcomes
            waitables: list[Connection | int] = [a.conn for a in self._attempts.values()]
            waitables += [a.process.sentinel for a in self._attempts.values()]
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
        attempt.process.join(grace_s)
        if attempt.process.is_alive():
            attempt.process.kill()
            attempt.process.join(grace_s)

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
            if attempt.process.is_alive() and attempt.stopped is None:
                self._sample(attempt)
                continue
            attempt.process.join(5.0)
            if attempt.process.is_alive():
                continue
            del self._attempts[attempt_id]
            done.append(self._finish(attempt))
        return done

    def _finish(self, attempt: _Attempt) -> ShardOutcome:
        task, now = attempt.task, time.time()
        message = _received(attempt.conn)
        attempt.conn.close()
        if attempt.stopped is not None:
            _discard(attempt.staging)
            return _outcome(task, attempt.stopped, attempt.started_at, now,
                            cpu=attempt.cpu_seconds, rss=attempt.peak_rss_mib)  # fmt: skip
        if message is not None and message[0] == "ok" and attempt.process.exitcode == 0:
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
            error = _death(attempt.process.exitcode)
        return _outcome(task, OutcomeStatus.FAILED, attempt.started_at, now, error=error,
                        cpu=attempt.cpu_seconds, rss=attempt.peak_rss_mib)  # fmt: skip


def _received(conn: Connection) -> tuple[str, object] | None:
    try:
        if conn.poll(0):
            message = conn.recv()
            if isinstance(message, tuple) and len(message) == 2:
                return (str(message[0]), message[1])
    except (EOFError, OSError):
        return None
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
