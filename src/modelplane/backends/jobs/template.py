"""``python -m modelplane.backends.jobs.template``: the warm process shard attempts fork from.

Starting a fresh interpreter per shard costs seconds on a busy node (pyarrow, pandas,
fsspec, the specs and the model library are imported again every time). This process
imports them once, then forks one child per attempt on request, so an attempt starts with
everything loaded yet shares nothing with the control plane: the template is itself a
fresh interpreter that never opens a database, never reads data and never runs a model;
each child enters the sandbox before any model code, as before. The only threads it holds
are the idle helpers its libraries start on import (OpenBLAS, jemalloc, onnxruntime),
which handle a fork, as under multiprocessing's forkserver that model workers start from.

Protocol, length-prefixed pickles: on stdin ``("start", attempt_id, payload, preload)``,
where ``payload`` pickles ``(task, staging, sandbox, reply_path)`` and ``preload`` names
modules to import before forking (the model's library); on the original stdout
``("started", attempt_id, pid)`` and ``("exit", pid, returncode)`` (negative: the
signal). The child writes its one reply to ``reply_path``. EOF on
stdin ends the template; its children die with it (``PR_SET_PDEATHSIG``).
"""

from __future__ import annotations

import contextlib
import importlib
import os
import pickle
import select
import signal
import struct
import sys
from typing import IO, Any

__all__ = ["PRELOAD", "main", "read_frame", "write_frame"]

PRELOAD = ("modelplane.backends.jobs.runner", "pandas", "pyarrow.parquet", "fsspec")
"""Imported at start: what every attempt needs (pyarrow imports pandas on first use)."""

_HEADER = struct.Struct("!I")
_MAX_ERROR = 8192


def write_frame(stream: IO[bytes], message: Any) -> None:
    data = pickle.dumps(message)
    stream.write(_HEADER.pack(len(data)) + data)
    stream.flush()


def _read_exact(fd: int, size: int) -> bytes | None:
    chunks = []
    while size:
        chunk = os.read(fd, size)
        if not chunk:
            return None
        chunks.append(chunk)
        size -= len(chunk)
    return b"".join(chunks)


def read_frame(fd: int) -> Any | None:
    """One message from ``fd`` (blocking until whole), or ``None`` at EOF."""
    header = _read_exact(fd, _HEADER.size)
    if header is None:
        return None
    body = _read_exact(fd, _HEADER.unpack(header)[0])
    return None if body is None else pickle.loads(body)


def _preload(names: tuple[str, ...]) -> None:
    for name in names:
        with contextlib.suppress(Exception):  # a missing library fails in the child, clearly
            importlib.import_module(name)


def _child(payload: bytes) -> int:
    """In the forked child: run the attempt, write the reply, exit without cleanup."""
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    signal.signal(signal.SIGCHLD, signal.SIG_DFL)
    from modelplane.backends.jobs.runner import die_with_parent

    die_with_parent()
    task, staging, sandbox, reply_path = pickle.loads(payload)
    with open(reply_path, "wb") as reply:
        try:
            from modelplane.backends.jobs.runner import run_shard

            result = run_shard(task, staging, sandbox)
        except BaseException as exc:  # every failure becomes the shard's error text
            pickle.dump(("error", f"{type(exc).__name__}: {exc}"[:_MAX_ERROR]), reply)
            return 1
        pickle.dump(("ok", result), reply)
    return 0


def _reap(out: IO[bytes]) -> None:
    while True:
        try:
            pid, status = os.waitpid(-1, os.WNOHANG)
        except ChildProcessError:
            return
        if pid == 0:
            return
        write_frame(out, ("exit", pid, os.waitstatus_to_exitcode(status)))


def main() -> int:
    out = os.fdopen(os.dup(1), "wb")
    os.dup2(2, 1)  # what anything prints goes to stderr, never into the protocol
    from modelplane.backends.jobs.runner import die_with_parent

    die_with_parent()
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    _preload(PRELOAD)
    inbox = sys.stdin.buffer.fileno()
    while True:
        readable, _, _ = select.select([inbox], [], [], 0.05)
        _reap(out)
        if not readable:
            continue
        message = read_frame(inbox)
        if message is None:
            return 0
        _, attempt_id, payload, preload = message
        _preload(tuple(preload))
        pid = os.fork()
        if pid == 0:
            os.close(inbox)
            out.close()
            code = 1
            try:
                code = _child(payload)
            finally:
                os._exit(code)
        write_frame(out, ("started", attempt_id, pid))


if __name__ == "__main__":
    raise SystemExit(main())
