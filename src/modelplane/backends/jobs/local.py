"""Shards as local processes, forked from a warm template, measured and stoppable.

Each attempt is a child of :mod:`.template`: a fresh interpreter this executor starts
once, which has imported what shards need and forks one child per attempt, so a shard
starts in milliseconds instead of re-importing pyarrow, pandas and the model library. The
child does the reading, scoring and writing (:func:`.runner.run_shard`, sandboxed like
model workers when a policy is given); this side commits the finished file, so the rename
that makes a shard done happens once, outside code that the model could disturb.
CPU seconds and peak memory come from the child itself when it ends normally, and from
``psutil`` samples taken on every poll when it is killed.
"""

from __future__ import annotations

import contextlib
import logging
import os
import pickle
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from multiprocessing.connection import wait as wait_any
from pathlib import Path
from typing import Any

import psutil

from modelplane.backends.jobs.runner import ShardResult, commit_shard, final_rows
from modelplane.backends.jobs.runner import staging_path as staging_for
from modelplane.backends.jobs.template import read_frame, write_frame
from modelplane.core.jobs import OutcomeStatus, ShardOutcome, ShardTask, check_stop_reason
from modelplane.errors import Conflict, ModelplaneError, WorkerFailed
from modelplane.security.sandbox import SandboxPolicy

__all__ = ["LocalShardExecutor"]

log = logging.getLogger(__name__)

_RUNTIME_MODULES = {
    "onnx": ("onnxruntime",),
    "sklearn": ("sklearn", "skops.io"),
    "xgboost": ("xgboost",),
    "lightgbm": ("lightgbm",),
}
"""Model libraries the template imports before forking a shard of that runtime, once per
executor (torch is left to its own jobs' children: a large import few jobs need)."""
_START_TIMEOUT_S = 60.0


@dataclass
class _Attempt:
    task: ShardTask
    pid: int
    staging: str
    reply: str
    started_at: float
    returncode: int | None = None
    peak_rss_mib: float = 0.0
    cpu_seconds: float = 0.0
    stopped: OutcomeStatus | None = None
    watcher: psutil.Process | None = field(default=None, repr=False)

    @property
    def alive(self) -> bool:
        return self.returncode is None


class _Template:
    """The parent's end of :mod:`.template`: start it, ask for forks, read its news."""

    def __init__(self, python: str) -> None:
        self.process = subprocess.Popen(
            [python, "-m", "modelplane.backends.jobs.template"],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            close_fds=True,
        )
        assert self.process.stdin is not None
        assert self.process.stdout is not None
        self.inbox = self.process.stdin
        self.news = self.process.stdout.fileno()

    @property
    def alive(self) -> bool:
        return self.process.poll() is None

    def fork(self, attempt_id: str, payload: bytes, preload: tuple[str, ...]) -> None:
        write_frame(self.inbox, ("start", attempt_id, payload, preload))

    def read(self, timeout: float) -> list[tuple[Any, ...]]:
        """Messages that arrive within ``timeout`` (all that are ready, at least one)."""
        messages: list[tuple[Any, ...]] = []
        while wait_any([self.news], timeout=timeout if not messages else 0):
            message = read_frame(self.news)
            if message is None:
                break
            messages.append(message)
        return messages

    def close(self) -> None:
        with contextlib.suppress(OSError):
            self.inbox.close()  # EOF: the template exits, and children die with it
        try:
            self.process.wait(5.0)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait(5.0)
        if self.process.stdout is not None:
            self.process.stdout.close()


class LocalShardExecutor:
    """A :class:`~modelplane.core.jobs.ShardExecutor` running each attempt as a process.

    ``sandbox`` is the node's sandbox policy for model code (``None``: no sandbox); each
    shard gets it narrowed to its package and its reserved memory.
    """

    def __init__(self, *, sandbox: SandboxPolicy | None = None, python: str | None = None):
        self._sandbox = sandbox
        self._python = python or sys.executable
        self._attempts: dict[str, _Attempt] = {}
        self._by_pid: dict[int, _Attempt] = {}
        self._early_exits: dict[int, int] = {}
        """Exit codes read before their attempt was registered (a child that ends at once)."""
        self._ready: list[ShardOutcome] = []
        self._template: _Template | None = None
        self._replies = Path(tempfile.mkdtemp(prefix="modelplane-shards-"))

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
        reply = str(self._replies / f"{task.attempt_id.replace('/', '_')}.reply")
        template = self._warm_template()
        payload = pickle.dumps((task, staging, self._sandbox, reply))
        template.fork(task.attempt_id, payload, _preload_for(task))
        pid = self._started_pid(task.attempt_id)
        attempt = _Attempt(task, pid, staging, reply, now)
        with contextlib.suppress(psutil.Error):
            attempt.watcher = psutil.Process(pid)
        self._attempts[task.attempt_id] = attempt
        if pid in self._early_exits:
            attempt.returncode = self._early_exits.pop(pid)
        else:
            self._by_pid[pid] = attempt

    def running(self) -> Sequence[str]:
        return tuple(self._attempts)

    def pid(self, attempt_id: str) -> int | None:
        """The process id of a running attempt (for operators' tools and logs)."""
        attempt = self._attempts.get(attempt_id)
        return None if attempt is None else attempt.pid

    def poll(self) -> list[ShardOutcome]:
        self._read_news(0.0)
        return self._collect()

    def wait(self, timeout: float) -> list[ShardOutcome]:
        deadline = time.monotonic() + max(0.0, timeout)
        while True:
            outcomes = self._collect()
            left = deadline - time.monotonic()
            if outcomes or left <= 0 or not self._attempts:
                return outcomes
            self._read_news(min(left, 0.5))

    def stop(self, attempt_id: str, *, reason: OutcomeStatus, grace_s: float = 5.0) -> None:
        attempt = self._attempts.get(attempt_id)
        if attempt is None or attempt.stopped is not None:
            return
        check_stop_reason(reason)
        attempt.stopped = reason
        self._sample(attempt)
        for sig, wait_s in ((signal.SIGTERM, grace_s), (signal.SIGKILL, max(grace_s, 5.0))):
            if not attempt.alive:
                return
            with contextlib.suppress(ProcessLookupError):
                os.kill(attempt.pid, sig)
            deadline = time.monotonic() + wait_s
            while attempt.alive and time.monotonic() < deadline:
                self._read_news(min(0.05, max(0.0, deadline - time.monotonic())))

    def close(self) -> None:
        for attempt_id in list(self._attempts):
            self.stop(attempt_id, reason=OutcomeStatus.CANCELLED, grace_s=2.0)
        self._collect()
        self._attempts.clear()
        if self._template is not None:
            self._template.close()
            self._template = None
        shutil.rmtree(self._replies, ignore_errors=True)

    # -- the template ----------------------------------------------------------------

    def _warm_template(self) -> _Template:
        if self._template is None or not self._template.alive:
            if self._template is not None:
                self._template_died()
            self._template = _Template(self._python)
        return self._template

    def _template_died(self) -> None:
        """Its children died with it: each running attempt ends as killed."""
        assert self._template is not None
        log.warning("the shard template process exited (%s)", self._template.process.returncode)
        for attempt in self._attempts.values():
            if attempt.alive:
                attempt.returncode = -signal.SIGKILL
        self._by_pid.clear()
        self._early_exits.clear()
        self._template.close()
        self._template = None

    def _started_pid(self, attempt_id: str) -> int:
        deadline = time.monotonic() + _START_TIMEOUT_S
        while self._template is not None and time.monotonic() < deadline:
            for message in self._read_news(max(0.0, min(1.0, deadline - time.monotonic()))):
                if message[0] == "started" and message[1] == attempt_id:
                    return int(message[2])
        raise WorkerFailed(f"the shard template did not start attempt {attempt_id}")

    def _read_news(self, timeout: float) -> list[tuple[Any, ...]]:
        """Apply the template's exit news; return every message read."""
        template = self._template
        if template is None:
            return []
        messages = template.read(timeout)
        for message in messages:
            if message[0] == "exit":
                attempt = self._by_pid.pop(int(message[1]), None)
                if attempt is not None:
                    attempt.returncode = int(message[2])
                else:
                    self._early_exits[int(message[1])] = int(message[2])
        if not messages and not template.alive:
            self._template_died()
        return messages

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
        message = _received(attempt.reply)
        if attempt.stopped is not None:
            _discard(attempt.staging)
            return _outcome(task, attempt.stopped, attempt.started_at, now,
                            cpu=attempt.cpu_seconds, rss=attempt.peak_rss_mib)  # fmt: skip
        if message is not None and message[0] == "ok" and attempt.returncode == 0:
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
            error = _death(attempt.returncode)
        return _outcome(task, OutcomeStatus.FAILED, attempt.started_at, now, error=error,
                        cpu=attempt.cpu_seconds, rss=attempt.peak_rss_mib)  # fmt: skip


_MATERIALIZE_MODULES = (
    "modelplane.backends.jobs.kinds",
    "modelplane.features.columns",
    "modelplane.features.sqlite",
    "modelplane.features.redis",
)
"""What a materialize shard imports: the online stores' clients and the column checks."""


def _preload_for(task: ShardTask) -> tuple[str, ...]:
    """The model library of the task's package, read from its manifest's ``runtime``
    (materialize shards: the online stores' modules)."""
    if task.job.work.type == "materialize":
        return _MATERIALIZE_MODULES
    if task.model_dir is None:
        return ()
    try:
        text = (Path(task.model_dir) / "modelplane.yaml").read_text(encoding="utf-8")
    except OSError:
        return ()
    runtime = next((line.split(":", 1)[1].strip() for line in text.splitlines()
                    if line.startswith("runtime:")), "")  # fmt: skip
    return _RUNTIME_MODULES.get(runtime, ())


def _received(path: str) -> tuple[str, object] | None:
    """The one reply an ended attempt wrote, if it wrote a whole one."""
    try:
        with open(path, "rb") as handle:
            data = handle.read()
    except OSError:
        return None
    finally:
        _discard(path)
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
