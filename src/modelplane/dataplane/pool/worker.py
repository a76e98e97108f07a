"""The model worker process: load a model by import path, then answer PREDICT messages.

A worker is deliberately simple and synchronous: one request at a time, read from a pipe,
answered on another. Everything clever (choice, timeouts, restarts) lives in the gateway,
which treats the worker as something that may die or hang at any moment.
"""

from __future__ import annotations

import logging
import os
import signal
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from multiprocessing.connection import Connection
from typing import Any

import numpy.typing as npt

from modelplane.dataplane.pool.messages import Message, Op, decode, encode
from modelplane.runtime.base import LoadedModel
from modelplane.runtime.loading import load_model_from, predict_checked
from modelplane.security.sandbox import SandboxPolicy, apply_sandbox

__all__ = ["WorkerSpec", "load_model", "worker_main"]

Arrays = dict[str, npt.NDArray[Any]]


@dataclass(frozen=True, slots=True)
class WorkerSpec:
    """How a worker gets its model: ``loader(*args, **kwargs)`` returns a ``LoadedModel``.

    ``loader`` is an import path, ``"package.module:function"``, so the spec pickles as plain
    strings into a spawned process; ``args`` must pickle too (paths, names, numbers).
    """

    loader: str
    args: tuple[Any, ...] = ()
    kwargs: Mapping[str, Any] = field(default_factory=dict)
    paths: tuple[str, ...] = ()
    """Folders put first on the worker's ``sys.path`` before the import (a package's code)."""
    sandbox: SandboxPolicy | None = None
    """What the worker gives up before it imports the loader (``None``: nothing)."""


def load_model(spec: WorkerSpec) -> LoadedModel:
    """Import the loader and call it; check the result looks like a ``LoadedModel``."""
    return load_model_from(spec.loader, spec.args, spec.kwargs, spec.paths)


def worker_main(spec: WorkerSpec, inbox: Connection, outbox: Connection) -> None:
    """Entry point of a worker process."""
    # Ctrl-C, and a service manager's SIGTERM, reach the whole process group; the gateway
    # decides when workers stop (a STOP message, or SIGKILL), and a worker whose gateway is
    # gone ends at its pipe's end of file. Dying with the group would read as a crash while
    # the gateway drains, and be restarted.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    sandbox = ""
    try:
        if spec.sandbox is not None:
            sandbox = _enter_sandbox(spec)
        model = load_model(spec)
    except Exception as exc:
        error = f"{type(exc).__name__}: {exc}"
        failed = encode(Op.READY, 0, error=error, error_type=type(exc).__name__, sandbox=sandbox)
        outbox.send_bytes(_join(failed))
        return
    outbox.send_bytes(_join(encode(Op.READY, 0, pid=os.getpid(), sandbox=sandbox)))
    _serve(model, inbox, outbox)


def _enter_sandbox(spec: WorkerSpec) -> str:
    """Apply the sandbox before any model code runs; log what it could not take away."""
    policy = spec.sandbox
    assert policy is not None
    report = apply_sandbox(replace(policy, read_paths=(*policy.read_paths, *spec.paths)))
    level = logging.WARNING if report.degraded else logging.INFO
    logging.getLogger("modelplane.worker").log(level, "pid %d %s", os.getpid(), report.summary())
    return report.summary()


def _serve(model: LoadedModel, inbox: Connection, outbox: Connection) -> None:
    while True:
        try:
            message = decode(inbox.recv_bytes())
        except (EOFError, OSError):
            return  # the gateway is gone: nobody is left to answer
        if message.op is Op.PREDICT:
            reply = _predict(model, message)
        elif message.op is Op.PING:
            reply = encode(Op.PONG, message.id, pid=os.getpid())
        elif message.op is Op.STOP:
            return
        else:
            continue
        try:
            outbox.send_bytes(_join(reply))
        except OSError:
            return


def _predict(model: LoadedModel, message: Message) -> list[bytes | memoryview]:
    try:
        checked = predict_checked(model, message.arrays)
    except Exception as exc:
        return encode(Op.ERROR, message.id, error=str(exc), error_type=type(exc).__name__)
    return encode(Op.RESULT, message.id, checked)


def _join(parts: list[bytes | memoryview]) -> bytes:
    return parts[0] if len(parts) == 1 and isinstance(parts[0], bytes) else b"".join(parts)
