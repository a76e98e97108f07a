"""The process that starts workers: multiprocessing's forkserver, kept alive and warm.

Workers fork from one template process, the forkserver, which imports once what every worker
needs (the loader, and the engines of the runtimes served: onnxruntime, scikit-learn,
xgboost, lightgbm). A worker, and every restart of one, then starts in milliseconds with its
engine already imported, and shares those pages with its siblings.

multiprocessing relaunches a forkserver that has exited, but not in every case, and never a
stale one. :func:`prepare`, called before each worker start, covers the rest:

- **dead**: the forkserver exited or was killed (file descriptors ran out, SIGKILL). Its
  state is dropped, also when someone else already reaped it (where multiprocessing would
  raise ``ChildProcessError`` on every start from then on); the start relaunches it.
- **stale**: the gateway now serves a runtime whose engine the running forkserver did not
  import. It is *retired*, not killed: it keeps reporting the exit codes of the workers it
  forked, and exits by itself once they all have (each holds its "alive" pipe); a fresh one
  is launched with the larger preload.
- **hung**: a start that gets no answer in time calls :func:`kill_hung`.
- **poisoned**: a module in the preload that crashes on import (not with ``ImportError``,
  which multiprocessing skips) kills every forkserver at launch, and one that takes longer
  than a start's timeout gets every forkserver killed as hung. After two in a row that ended
  before starting a single worker, the forkserver is launched bare from then on (workers
  import their engine themselves: slower, never stuck), and the error log names the preload.

This reaches into ``multiprocessing.forkserver``'s private state (the pid, the "alive" pipe
and the listener's address of its one global server, CPython 3.11 to 3.13); every access is
in this module.
"""

from __future__ import annotations

import contextlib
import logging
import multiprocessing
import multiprocessing.forkserver as mp_forkserver
import os
import signal
import threading
from collections.abc import Iterable
from typing import Any

__all__ = ["forked", "kill_hung", "pid", "preload", "preloaded", "prepare"]

log = logging.getLogger("modelplane.dataplane.pool")


class _State:
    """This process's view of its forkserver, behind one lock."""

    def __init__(self) -> None:
        self.guard = threading.Lock()
        self.wanted: list[str] = []
        self.launched: frozenset[str] | None = None
        """What the running forkserver imported; ``None`` when none runs (or not ours)."""
        self.retired: list[int] = []
        """Retired forkservers, reaped once they exit."""
        self.forked = False
        """The running forkserver started at least one process."""
        self.barren_deaths = 0
        """Forkservers in a row that died before starting a single process."""
        self.bare = False
        """The preload was given up (see the module doc): launch with none."""


_state = _State()


def _server() -> Any:
    return mp_forkserver._forkserver


def preload(modules: Iterable[str]) -> None:
    """Have the forkserver import ``modules`` too (added to what earlier calls asked for).

    Cheap; takes effect at the next worker start (:func:`prepare`)."""
    with _state.guard:
        fresh = [m for m in modules if m not in _state.wanted]
        if not fresh:
            return
        _state.wanted.extend(fresh)
        if not _state.bare:
            multiprocessing.get_context("forkserver").set_forkserver_preload(list(_state.wanted))


def preloaded() -> tuple[str, ...]:
    """Every module asked for so far, in order."""
    with _state.guard:
        return tuple(_state.wanted)


def pid() -> int | None:
    """The running forkserver's process id, if one was launched."""
    found = getattr(_server(), "_forkserver_pid", None)
    return int(found) if found is not None else None


def prepare() -> None:
    """Make sure a forkserver runs and has imported everything asked for; blocking (it may
    launch one), so call it from a worker thread, as ``Process.start`` is."""
    server = _server()
    with _state.guard:
        _reap_retired()
        with server._lock:
            running = server._forkserver_pid
            launched = _state.launched
            if running is not None:
                if _exited(running):
                    log.warning("the forkserver (pid %d) died; starting a new one", running)
                    _forget(server)
                    _state.barren_deaths = 0 if _state.forked else _state.barren_deaths + 1
                elif not _state.bare and (
                    launched is None or not launched.issuperset(_state.wanted)
                ):
                    _retire(server)
        if _state.barren_deaths >= 2 and not _state.bare:
            log.error(
                "forkservers ended before starting any worker; launching them without "
                "preloading %s from now on (one of these crashes or is too slow on import)",
                ", ".join(_state.wanted),
            )
            _state.bare = True
            multiprocessing.get_context("forkserver").set_forkserver_preload([])
        if server._forkserver_pid is None:
            _state.launched = frozenset(_state.wanted)
            _state.forked = False
        server.ensure_running()


def forked() -> None:
    """Note that the running forkserver started a process (it survived its preload)."""
    _state.forked = True


def kill_hung() -> None:
    """SIGKILL the forkserver: it did not answer a start in time. Starts blocked on it then
    fail at once, and the next start launches a new one."""
    server = _server()
    with _state.guard, server._lock:
        running = server._forkserver_pid
        if running is None:
            return
        log.warning("the forkserver (pid %d) did not answer in time; replacing it", running)
        with contextlib.suppress(ProcessLookupError):
            os.kill(running, signal.SIGKILL)
        _retire(server)
        _state.launched = None
        # one that never started anything may still have been importing its preload: if that
        # alone outlasts a start's timeout, the bare fallback below ends the cycle of kills
        _state.barren_deaths = 0 if _state.forked else _state.barren_deaths + 1


def _exited(running: int) -> bool:
    try:
        done, _ = os.waitpid(running, os.WNOHANG)
    except ChildProcessError:
        return True  # reaped by someone else: gone all the same
    return done != 0


def _retire(server: Any) -> None:
    """Stop using the running forkserver without stopping it."""
    running = server._forkserver_pid
    if running is not None:
        _state.retired.append(running)
    _forget(server)


def _forget(server: Any) -> None:
    """Drop multiprocessing's record of the forkserver, so the next start launches one."""
    if server._forkserver_alive_fd is not None:
        with contextlib.suppress(OSError):
            os.close(server._forkserver_alive_fd)
    address = server._forkserver_address
    if isinstance(address, str) and not address.startswith("\0"):
        with contextlib.suppress(OSError):
            os.unlink(address)
    server._forkserver_alive_fd = None
    server._forkserver_address = None
    server._forkserver_pid = None
    if hasattr(server, "_forkserver_authkey"):
        server._forkserver_authkey = None


def _reap_retired() -> None:
    for old in list(_state.retired):
        if _exited(old):
            _state.retired.remove(old)
