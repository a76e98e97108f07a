"""A replica in a process of its own, sandboxed like a local pool worker, serving its socket.

A Ray worker cannot give up what the sandbox takes away (it talks to its raylet and writes
Ray's session files), and a backend's own process must not either, so the model runs in a
child process: the child opens the replica's listening socket, then enters the sandbox
(``security.sandbox.apply_sandbox``: the same policy as a pool worker, narrowed to the package,
its address-space limit from the replica's memory demand), then loads the model and answers
on that socket. Callers connect straight to the child; the parent only starts it, watches it
and relays the Ray actor-call path. The socket is opened first because the sandbox forbids
opening one (seccomp allows only ``AF_UNIX``, Landlock no TCP bind); accepting on a socket
already open is allowed, and a new network namespace leaves it in the node's.

What crosses between the two: the parent sends the spec as a pickle on the child's stdin (the
parent trusts itself); the child answers with one JSON line on a pipe, never a pickle, since
the parent would run whatever it unpickled. The child ends with its parent: stdin's end of
file (the parent exited, however), and ``PR_SET_PDEATHSIG`` for a child stuck in model code
(set again after the sandbox, whose change of user clears it).
"""

from __future__ import annotations

import contextlib
import ctypes
import dataclasses
import json
import logging
import os
import pickle
import select
import signal
import socket
import struct
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, replace
from typing import Any

from modelplane.backends.replica_host import ReplicaHost
from modelplane.backends.wire import MAX_FRAME
from modelplane.core.backend import Arrays, ReplicaRequest, ReplicaSpec
from modelplane.errors import WorkerFailed
from modelplane.observe.process import ProcessUse, read_process
from modelplane.security.sandbox import Feature, SandboxPolicy, apply_sandbox

__all__ = [
    "ChildReady",
    "ReplicaChild",
    "child_policy",
    "describe_exit",
    "policy_data",
    "policy_from_data",
    "read_raw_frame",
]

_log = logging.getLogger("modelplane.backends.replica")
_U32 = struct.Struct("!I")
_MAX_STATUS = 1 << 16
_PR_SET_PDEATHSIG = 1


def policy_data(policy: SandboxPolicy) -> dict[str, Any]:
    """A sandbox policy as plain values, for ``ReplicaSpec.sandbox``."""
    out: dict[str, Any] = {}
    for item in dataclasses.fields(policy):
        value = getattr(policy, item.name)
        if item.name == "required":
            value = sorted(feature.value for feature in value)
        elif item.name == "read_paths":
            value = list(value)
        out[item.name] = value
    return out


def policy_from_data(data: Mapping[str, Any]) -> SandboxPolicy:
    """The policy ``policy_data`` wrote; an unknown field or feature is named in the error."""
    known = {item.name for item in dataclasses.fields(SandboxPolicy)}
    unknown = sorted(set(data) - known)
    if unknown:
        raise ValueError(f"spec.sandbox.{unknown[0]}: not a sandbox policy field")
    values = dict(data)
    if "read_paths" in values:
        values["read_paths"] = tuple(str(p) for p in values["read_paths"])
    if "required" in values:
        try:
            values["required"] = frozenset(Feature(str(f)) for f in values["required"])
        except ValueError as exc:
            raise ValueError(f"spec.sandbox.required: {exc}") from None
    return SandboxPolicy(**values)


def child_policy(request: ReplicaRequest) -> SandboxPolicy | None:
    """The policy a replica's child enters: its spec's, held to what the replica asked for.

    The address-space limit follows the memory placement counted for the replica (its
    ``demand``), a GPU replica may open the GPU devices, and the spec's ``paths`` are readable
    (the loader imports from them).
    """
    data = request.spec.sandbox
    if data is None:
        return None
    policy = policy_from_data(data)
    demand = request.demand
    return replace(
        policy,
        memory_mb=demand.memory_mib or policy.memory_mb,
        gpu=demand.gpus > 0,
        read_paths=(*policy.read_paths, *request.spec.paths),
    )


@dataclass(frozen=True, slots=True)
class ChildReady:
    """What a child said once it had loaded its model."""

    pid: int
    port: int
    sandbox: str
    """The sandbox report's one line (``apply_sandbox``), empty without a sandbox."""


def describe_exit(code: int | None) -> str:
    """How a child ended, in words (``Popen.returncode``)."""
    if code is None:
        return "it is still running"
    if code < 0:
        try:
            name = signal.Signals(-code).name
        except ValueError:
            name = f"signal {-code}"
        return f"its model process was killed by {name}"
    return f"its model process exited with code {code}"


class ReplicaChild:
    """The parent's handle on one child: start it, wait until it is ready, watch it, end it.

    The child is started, and waited for, by a thread of this handle: ``PR_SET_PDEATHSIG``
    fires when the thread that forked a child ends, so that thread lives as long as the
    child does. ``on_exit`` runs in that thread when the child ends without ``kill``.
    """

    def __init__(
        self,
        spec: ReplicaSpec,
        secret: str,
        warmup: Arrays | None,
        host: str,
        policy: SandboxPolicy | None,
        on_exit: Callable[[str], None] | None = None,
    ) -> None:
        self._on_exit = on_exit
        self._killed = False
        self._meter: Any = None
        """The child as psutil reads it (kept: psutil checks the pid was not reused)."""
        self._status_r, status_w = os.pipe()
        self._process: subprocess.Popen[bytes] | None = None
        self._spawned = threading.Event()
        self._error: BaseException | None = None
        payload = pickle.dumps((spec, secret, warmup, host, policy, status_w))
        self._thread = threading.Thread(
            target=self._keep, args=(payload, status_w), name="replica-child", daemon=True
        )
        self._thread.start()
        self._spawned.wait()
        error: BaseException | None = self._error  # set by the thread
        if error is not None:
            os.close(self._status_r)
            raise WorkerFailed(f"the replica's process could not start: {error}")

    @property
    def pid(self) -> int:
        assert self._process is not None
        return self._process.pid

    @property
    def returncode(self) -> int | None:
        return None if self._process is None else self._process.poll()

    def usage(self) -> ProcessUse | None:
        """The child's CPU time since it started, resident memory and age, read here on its
        node (``None``: it is not running). A child in the sandbox runs as another user;
        ``/proc``'s figures read all the same."""
        import psutil

        process = self._process
        if process is None or process.poll() is not None:
            return None
        try:
            if self._meter is None or self._meter.pid != process.pid:
                self._meter = psutil.Process(process.pid)
            return read_process(self._meter)
        except psutil.Error:
            return None

    def _keep(self, payload: bytes, status_w: int) -> None:
        try:
            self._process = subprocess.Popen(
                [sys.executable, "-m", "modelplane.backends.replica_child", str(os.getpid())],
                stdin=subprocess.PIPE,
                pass_fds=(status_w,),
                env=_child_environment(),
                start_new_session=True,  # a signal to the parent's group is not the child's
            )
        except OSError as exc:
            self._error = exc
            return
        finally:
            os.close(status_w)
            self._spawned.set()
        stdin = self._process.stdin
        assert stdin is not None
        try:
            stdin.write(_U32.pack(len(payload)) + payload)
            stdin.flush()
        except OSError:
            pass  # it died at once: wait() below says how
        # stdin stays open: its end of file tells the child that this process is gone
        code = self._process.wait()
        if not self._killed and self._on_exit is not None:
            self._on_exit(describe_exit(code))

    def wait_ready(self, timeout_s: float) -> ChildReady:
        """Block until the child has loaded its model; ``WorkerFailed`` with its reason if not."""
        deadline = time.monotonic() + timeout_s
        data = b""
        while not data.endswith(b"\n"):
            left = deadline - time.monotonic()
            if left <= 0:
                raise WorkerFailed(f"the replica's model did not load in {timeout_s:g}s")
            readable, _, _ = select.select([self._status_r], [], [], left)
            if not readable:
                continue
            chunk = os.read(self._status_r, 4096)
            if not chunk:
                code = self._wait_exit(2.0)
                raise WorkerFailed(f"the replica's model did not load: {describe_exit(code)}")
            data += chunk
            if len(data) > _MAX_STATUS:
                raise WorkerFailed("the replica's process said too much before it was ready")
        try:
            message = json.loads(data)
            if "error" in message:
                raise WorkerFailed(f"could not load its model: {message['error']}")
            return ChildReady(int(message["pid"]), int(message["port"]), str(message["sandbox"]))
        except (ValueError, KeyError, TypeError) as exc:
            raise WorkerFailed(f"the replica's process said something unreadable: {exc}") from None

    def _wait_exit(self, timeout_s: float) -> int | None:
        assert self._process is not None
        with contextlib.suppress(subprocess.TimeoutExpired):
            return self._process.wait(timeout_s)
        return None

    def kill(self, grace_s: float = 0.0) -> None:
        """End the child and reap it: its stdin closed, then after ``grace_s`` killed."""
        self._killed = True
        process = self._process
        if process is not None and process.poll() is None:
            if grace_s > 0 and process.stdin is not None:
                with contextlib.suppress(OSError):
                    process.stdin.close()  # its end of file: it exits by itself
                self._wait_exit(grace_s)
            if process.poll() is None:
                with contextlib.suppress(ProcessLookupError):
                    process.kill()
                self._wait_exit(5.0)
        if process is not None and process.stdin is not None:
            with contextlib.suppress(OSError):
                process.stdin.close()
        with contextlib.suppress(OSError):
            os.close(self._status_r)


def read_raw_frame(sock: socket.socket) -> bytes:
    """One frame off a blocking socket, length prefix included, not decoded (the relay)."""
    header = _recv_exact(sock, 4)
    (size,) = _U32.unpack(header)
    if size > MAX_FRAME:
        raise ValueError(f"frame of {size} bytes is over the {MAX_FRAME} limit")
    return header + _recv_exact(sock, size)


def _recv_exact(sock: socket.socket, size: int) -> bytes:
    parts: list[bytes] = []
    while size:
        chunk = sock.recv(min(size, 1 << 20))
        if not chunk:
            raise EOFError("the replica's process closed the connection")
        parts.append(chunk)
        size -= len(chunk)
    return b"".join(parts)


def _child_environment() -> dict[str, str]:
    # The child needs no Ray: its token and addresses stay with the parent even where the
    # sandbox cannot scrub the environment. Its imports resolve as the parent's do.
    env = {k: v for k, v in os.environ.items() if not k.startswith("RAY_")}
    env["PYTHONPATH"] = os.pathsep.join(p for p in sys.path if p)
    return env


# ---------------------------------------------------------------------------- the child


def _die_with_parent(parent: int) -> None:
    libc = ctypes.CDLL(None, use_errno=True)
    libc.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
    if os.getppid() != parent:  # it ended before the signal was asked for
        os._exit(1)


def _watch_parent(stdin: Any) -> None:
    with contextlib.suppress(OSError):
        while stdin.read(1 << 12):
            pass
    os._exit(0)


def _read_payload(stdin: Any) -> tuple[Any, ...]:
    header = stdin.read(4)
    if len(header) != 4:
        os._exit(1)
    (size,) = _U32.unpack(header)
    payload: tuple[Any, ...] = pickle.loads(stdin.read(size))
    return payload


def child_main(parent: int) -> None:
    """The child: listen, enter the sandbox, load, say ready, serve until the parent goes."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    _die_with_parent(parent)
    stdin = sys.stdin.buffer
    spec, secret, warmup, host, policy, status_fd = _read_payload(stdin)

    def say(message: dict[str, Any]) -> None:
        os.write(status_fd, json.dumps(message).encode() + b"\n")

    sandbox = ""
    try:
        listener = socket.create_server((host, 0), backlog=64)
        if policy is not None:
            report = apply_sandbox(policy)
            sandbox = report.summary()
            level = logging.WARNING if report.degraded else logging.INFO
            _log.log(level, "replica pid %d %s", os.getpid(), sandbox)
            _die_with_parent(parent)  # the change of user cleared it
        threading.Thread(target=_watch_parent, args=(stdin,), daemon=True).start()
        replica = ReplicaHost(spec, secret, warmup)
        port = replica.serve(listener)
    except Exception as exc:
        say({"error": f"{type(exc).__name__}: {exc}", "sandbox": sandbox})
        os._exit(1)
    say({"pid": os.getpid(), "port": port, "sandbox": sandbox})
    threading.Event().wait()


if __name__ == "__main__":
    child_main(int(sys.argv[1]))
