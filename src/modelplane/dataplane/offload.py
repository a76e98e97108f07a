"""Large request bodies: admitted a few at a time and decoded off the shared event loop.

Every endpoint of a gateway shares one event loop, and msgspec holds the GIL for the whole
of one decode (about 0.6 s for a 64 MB JSON body), so neither decoding in place nor in a
thread keeps the other endpoints answering. A body of at least ``EdgeConfig.offload_bytes``
is decoded in a helper process instead (the same forkserver as the model workers, so one
starts in milliseconds); the loop only hands the bytes over and takes the arrays back.

At most ``EdgeConfig.max_large_bodies`` large bodies are read and decoded at once: the rest
wait before their first byte is read, so TCP pushes back on their clients instead of the
gateway buffering them all. When the last large body of a burst is done, freed memory is
handed back to the OS (:func:`~modelplane.dataplane.edge.trim_memory`); helpers do the same
after each decode, and are stopped once no large body has come for a few seconds (what
Python's allocator keeps of a decode's objects goes with them).
"""

from __future__ import annotations

import asyncio
import logging
import multiprocessing
from collections.abc import Awaitable, Callable, Sequence
from concurrent.futures import ProcessPoolExecutor
from typing import Any, TypeVar

from modelplane.dataplane.codec_v2 import InferRequest, decode_request
from modelplane.dataplane.edge import EdgeConfig, trim_memory
from modelplane.dataplane.records import RecordsCodec
from modelplane.errors import ModelplaneError
from modelplane.spec.fields import FieldSpec

__all__ = ["LargeBodies", "decode_records", "decode_v2"]

T = TypeVar("T")

log = logging.getLogger("modelplane.gateway")

_DECODES_PER_HELPER = 32
"""A helper is replaced after this many decodes, so what its heap keeps is bounded too."""


def decode_v2(header_length: int | None, body: bytes) -> InferRequest:
    """:func:`decode_request` with the header length first, to bind with ``partial``."""
    return decode_request(body, header_length)


_CODECS: dict[tuple[str, ...], RecordsCodec] = {}


def decode_records(fields: Sequence[FieldSpec], body: bytes) -> dict[str, Any]:
    """``RecordsCodec(fields).decode(body)``, in a helper that keeps each contract's codec."""
    key = tuple(f.model_dump_json() for f in fields)
    codec = _CODECS.get(key)
    if codec is None:
        if len(_CODECS) >= 64:
            _CODECS.clear()
        codec = _CODECS[key] = RecordsCodec(fields)
    return codec.decode(body)


def _in_helper(decode: Callable[[bytes], T], body: bytes) -> T:
    try:
        return decode(body)
    finally:
        del body
        trim_memory()


class LargeBodies:
    """Reads and decodes request bodies, the large ones as the module docstring says."""

    def __init__(self, edge: EdgeConfig, start_method: str = "forkserver") -> None:
        self.edge = edge
        self._start_method = start_method
        self._gate = asyncio.Semaphore(edge.max_large_bodies)
        self._executor: ProcessPoolExecutor | None = None
        self.in_flight = 0
        """Large bodies being read or decoded now."""
        self.offloaded = 0
        """Large bodies decoded in a helper since start (a counter, for tests and metrics)."""
        self._last_done = 0.0

    def large(self, content_length: int | None) -> bool:
        return content_length is not None and content_length >= self.edge.offload_bytes

    async def decode(
        self,
        content_length: int | None,
        read: Callable[[], Awaitable[bytes]],
        decode: Callable[[bytes], T],
        remote: Callable[[bytes], T] | None = None,
    ) -> T:
        """``decode(await read())`` for a small body; a large one is admitted and decoded by
        ``remote`` (``decode`` when not given) in a helper, so ``remote`` must be picklable:
        a module function, or a ``functools.partial`` of one."""
        remote = decode if remote is None else remote
        if not self.large(content_length):
            body = await read()
            if len(body) < self.edge.offload_bytes:
                return decode(body)
            # a large body sent without a length (chunked): read already, still offloaded
            return await self._offload(remote, body)
        async with self._gate:
            self.in_flight += 1
            try:
                return await self._offload(remote, await read())
            finally:
                self.in_flight -= 1
                if self.in_flight == 0:
                    loop = asyncio.get_running_loop()
                    # after this task's frames (and the body they hold) are gone
                    loop.call_soon(_trim_if_idle, self)
                    self._last_done = loop.time()
                    loop.call_later(self.edge.offload_idle_s, self._stop_idle_helpers)

    async def _offload(self, decode: Callable[[bytes], T], body: bytes) -> T:
        loop = asyncio.get_running_loop()
        self.offloaded += 1
        try:
            return await loop.run_in_executor(self._pool(), _in_helper, decode, body)
        except ModelplaneError:
            raise  # the body's own fault (malformed, invalid), decoded fine in the helper
        except Exception as exc:
            # helpers could not start or died (BrokenProcessPool: the forkserver gone, memory
            # short, killed): this body is decoded here, the next large one gets a fresh pool
            log.warning("decode helper failed (%r); decoding in the gateway", exc)
            self._drop_pool()
            return await asyncio.to_thread(decode, body)

    def _pool(self) -> ProcessPoolExecutor:
        if self._executor is None:
            self._executor = ProcessPoolExecutor(
                max_workers=self.edge.max_large_bodies,
                mp_context=multiprocessing.get_context(self._start_method),
                max_tasks_per_child=_DECODES_PER_HELPER,
            )
        return self._executor

    def _stop_idle_helpers(self) -> None:
        loop = asyncio.get_running_loop()
        idle_s = loop.time() - self._last_done
        if self.in_flight == 0 and idle_s >= self.edge.offload_idle_s * 0.99:
            self._drop_pool()

    @property
    def helpers_running(self) -> bool:
        """Whether decode helpers are up (or would be reused by the next large body)."""
        return self._executor is not None

    def _drop_pool(self) -> None:
        executor, self._executor = self._executor, None
        if executor is not None:
            executor.shutdown(wait=False, cancel_futures=True)

    def close(self) -> None:
        """Stop the helpers (they hold nothing a request still needs)."""
        self._drop_pool()


def _trim_if_idle(bodies: LargeBodies) -> None:
    if bodies.in_flight == 0:
        trim_memory()
