"""``python -m modelplane.backends.jobs.process``: the program of one shard attempt.

It reads ``(task, staging path, sandbox policy)`` pickled on stdin, runs the shard
(:func:`.runner.run_shard`) and writes one pickled reply on its original stdout:
``("ok", ShardResult)`` or ``("error", text)``. Model code cannot spoil the reply: stdout
is moved aside before anything runs, and what the model prints goes to stderr.

A fresh interpreter, not a fork or a multiprocessing child: nothing of the caller's
state (open databases, threads, its ``__main__``) leaks into code that the sandbox is
about to lock down.
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import pickle
import signal
import sys

__all__ = ["main"]

_PR_SET_PDEATHSIG = 1
_MAX_ERROR = 8192


def main() -> int:
    reply = os.fdopen(os.dup(1), "wb")
    os.dup2(2, 1)
    # A shard must not outlive whoever runs it (a Ray worker killed by force, say).
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL(None).prctl(_PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    try:
        from modelplane.backends.jobs.runner import run_shard

        task, staging, sandbox = pickle.load(sys.stdin.buffer)
        result = run_shard(task, staging, sandbox)
    except BaseException as exc:  # every failure becomes the shard's error text
        # bounded: the reply must fit the pipe, which nobody reads until this process ends
        pickle.dump(("error", f"{type(exc).__name__}: {exc}"[:_MAX_ERROR]), reply)
        reply.close()
        return 1
    pickle.dump(("ok", result), reply)
    reply.close()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
