"""The Ray backend's hold on the head: every call bounded, a lost head noticed, joined again.

Ray's own clients wait for a head that went away: a call to the GCS retries until Ray's
reconnect timeout, and an old call still waiting when a new head answers on the same address
ends this process (a ``RAY_CHECK`` on the new head's cluster id). So every call here goes
through :class:`HeadLink`, which first checks that the head's port still accepts a TCP
connection (cheap, and bounded by ``probe_timeout_s``), then runs the call in a thread of its
own bounded by ``call_timeout_s``, with Ray's GCS client, whose calls end with an error at
their timeout. A refused probe, a timeout or a GCS error marks the head lost: ``on_lost``
runs once, later calls fail at once with :class:`HeadUnreachable`, and where the link may
rejoin (the backend joined the cluster itself) a background task waits for the calls still
running to end, leaves the old cluster (``ray.shutdown``), and joins the address again
(``ray.init``) once its port accepts, backing off between tries up to ``backoff_max_s``.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import functools
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from typing import Any, TypeVar

import ray

from modelplane.errors import WorkerFailed

__all__ = ["HeadLink", "HeadUnreachable", "LinkSettings", "reset_auth_cache"]

T = TypeVar("T")
_log = logging.getLogger("modelplane.backends.ray")


class HeadUnreachable(WorkerFailed):
    """The Ray head does not answer: nothing was asked of the cluster."""


@dataclass(frozen=True, slots=True)
class LinkSettings:
    """How long a call to the head may take, and how often a lost head is tried again."""

    call_timeout_s: float = 10.0
    probe_timeout_s: float = 1.0
    backoff_min_s: float = 0.5
    backoff_max_s: float = 10.0
    shutdown_timeout_s: float = 30.0

    def __post_init__(self) -> None:
        for name in ("call_timeout_s", "probe_timeout_s", "backoff_min_s", "backoff_max_s"):
            if not getattr(self, name) > 0:
                raise ValueError(f"link.{name}: must be above 0")
        if self.backoff_max_s < self.backoff_min_s:
            raise ValueError("link.backoff_max_s: must be at least backoff_min_s")


def reset_auth_cache() -> None:
    """Drop the token Ray read once per process, so a new connection reads it again."""
    try:
        from ray._private.authentication_test_utils import reset_auth_token_state
    except ImportError:  # Ray before 2.52: no token authentication, nothing cached
        return
    reset_auth_token_state()


class HeadLink:
    """Calls to the head at ``gcs_address``; ``join`` (None: never) joins it again when lost."""

    def __init__(
        self,
        gcs_address: str,
        *,
        join: Callable[[], None] | None,
        on_lost: Callable[[str], None],
        settings: LinkSettings | None = None,
    ) -> None:
        host, _, port = gcs_address.rpartition(":")
        if not host or not port.isdigit():
            raise ValueError(f"ray address: '{gcs_address}' is not host:port")
        self.address = gcs_address
        self._host, self._port = host.strip("[]"), int(port)
        self._join = join
        self._on_lost = on_lost
        self.settings = settings or LinkSettings()
        self._executor = self._new_executor()
        self._running: set[concurrent.futures.Future[Any]] = set()
        self._rejoining: asyncio.Task[None] | None = None
        self.up = True
        self.lost_reason = ""
        self._lost_at = 0.0
        self.generation = 0
        """How many times the head was joined again."""

    @staticmethod
    def _new_executor() -> concurrent.futures.ThreadPoolExecutor:
        return concurrent.futures.ThreadPoolExecutor(4, thread_name_prefix="ray-head")

    def check_up(self) -> None:
        """Raise :class:`HeadUnreachable` while the head is lost."""
        if not self.up:
            why = f"the Ray head at {self.address} is unreachable: {self.lost_reason}"
            raise HeadUnreachable(why)

    async def probe(self) -> bool:
        """Does the head's port accept a connection now?"""
        try:
            async with asyncio.timeout(self.settings.probe_timeout_s):
                _, writer = await asyncio.open_connection(self._host, self._port)
        except (OSError, TimeoutError):
            return False
        writer.close()
        return True

    async def call(self, fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        """``fn(*args, **kwargs)`` in a thread, once the head answers; bounded in time."""
        await self._before_call()
        future = self._executor.submit(functools.partial(fn, *args, **kwargs))
        self._running.add(future)
        future.add_done_callback(self._running.discard)
        async with self._bounded():
            return await asyncio.wrap_future(future)

    async def wait(self, make: Callable[[], Awaitable[T]]) -> T:
        """Await what ``make`` starts on this loop (the GCS client's own futures), bounded."""
        await self._before_call()
        async with self._bounded():
            return await make()

    @contextlib.asynccontextmanager
    async def _bounded(self) -> AsyncIterator[None]:
        """A call to the head within ``call_timeout_s``; a timeout or an RPC error loses
        the head and raises ``HeadUnreachable``."""
        try:
            async with asyncio.timeout(self.settings.call_timeout_s):
                yield
        except TimeoutError:
            self.lose(f"no answer within {self.settings.call_timeout_s:g}s")
            raise HeadUnreachable(f"the Ray head at {self.address} gave no answer") from None
        except ray.exceptions.RpcError as exc:
            self.lose(str(exc) or type(exc).__name__)
            raise HeadUnreachable(f"the Ray head at {self.address} failed a call: {exc}") from exc

    async def _before_call(self) -> None:
        self.check_up()
        if not await self.probe():
            self.lose("its port refuses connections")
            self.check_up()

    def lose(self, why: str) -> None:
        """The head is gone: say so once and, where allowed, start joining it again."""
        if not self.up:
            return
        self.up = False
        self.lost_reason = why
        self._lost_at = time.monotonic()
        _log.warning("lost the Ray head at %s: %s", self.address, why)
        self._on_lost(why)
        if self._join is not None:
            self._rejoining = asyncio.get_running_loop().create_task(self._rejoin())

    async def _rejoin(self) -> None:
        settings = self.settings
        # An old call still waiting when a new head answers would end this process: wait for
        # each to reach its own timeout first (GCS client calls end by themselves, those
        # awaited on the loop included, which ``_running`` does not hold).
        quiet = self._lost_at + settings.call_timeout_s
        deadline = quiet + settings.shutdown_timeout_s
        while (self._running or time.monotonic() < quiet) and time.monotonic() < deadline:
            await asyncio.sleep(0.05)
        if self._running:
            self.lost_reason += "; calls to the old head never ended, so it is not joined again"
            _log.error("Ray head %s: %s", self.address, self.lost_reason)
            return
        old, self._executor = self._executor, self._new_executor()
        old.shutdown(wait=False)
        if not await self._in_thread(ray.shutdown, settings.shutdown_timeout_s):
            self.lost_reason += "; leaving the old cluster did not finish"
            _log.error("Ray head %s: %s", self.address, self.lost_reason)
            return
        delay = settings.backoff_min_s
        while True:
            if await self.probe():
                try:
                    assert self._join is not None
                    await asyncio.get_running_loop().run_in_executor(self._executor, self._join)
                except Exception as exc:  # Ray raises several kinds; any means: try later
                    _log.warning("joining the Ray head at %s again failed: %s", self.address, exc)
                    await self._in_thread(ray.shutdown, settings.shutdown_timeout_s)
                else:
                    self.generation += 1
                    self.lost_reason = ""
                    self.up = True
                    _log.warning("joined the Ray head at %s again", self.address)
                    return
            await asyncio.sleep(delay)  # backoff between tries, not a wait for a condition
            delay = min(delay * 2, settings.backoff_max_s)

    async def _in_thread(self, fn: Callable[[], object], timeout_s: float) -> bool:
        future = self._executor.submit(fn)
        try:
            async with asyncio.timeout(timeout_s):
                await asyncio.wrap_future(future)
        except TimeoutError:
            return False
        except Exception as exc:
            _log.warning("Ray head %s: %s failed: %s", self.address, fn, exc)
        return True

    async def close(self) -> None:
        if self._rejoining is not None:
            self._rejoining.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._rejoining
        self._executor.shutdown(wait=False, cancel_futures=True)
