"""Batches to a replica over one TCP connection: the data plane's framing, over a socket.

A frame is ``[u32 length, big-endian]`` then one frame of :mod:`modelplane.core.tensor_frames`
(a msgpack header naming the op, the request id and each tensor's dtype, shape and size, then
the tensor bytes), so the receiver builds arrays with ``np.frombuffer`` (no copy) and nothing
is unpickled on either side: the frames of the data plane's worker pipes, with a length
prefix for a byte stream. ``decode`` takes a frame without its length prefix.

A connection opens with a ``HELLO`` carrying the replica's secret: the replica listens on a
node address other machines reach, and answers nobody who does not hold the secret it was
started with. Requests are pipelined: the client writes as many as it has, the replica
answers them in order, each with its id.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import hmac
import itertools
import socket
import struct

from modelplane.core import tensor_frames
from modelplane.core.backend import Arrays
from modelplane.core.tensor_frames import Frame, Op, decode
from modelplane.errors import DeadlineExceeded, ReplicaLost, WorkerFailed

__all__ = [
    "MAX_FRAME",
    "Frame",
    "FrameBuffer",
    "Op",
    "SocketChannel",
    "decode",
    "encode",
    "read_frame",
    "write_frame",
]

MAX_FRAME = 1 << 30
"""The largest frame either side accepts (1 GiB): a bound, so a bad length cannot exhaust memory."""

_U32 = struct.Struct("!I")


encode = functools.partial(tensor_frames.encode, length_prefix=True)
"""The parts of one frame, length prefix included, to be written in order."""


def _recv_exact(sock: socket.socket, size: int) -> bytearray:
    buffer = bytearray(size)
    view = memoryview(buffer)
    got = 0
    while got < size:
        n = sock.recv_into(view[got:])
        if n == 0:
            raise EOFError("the peer closed the connection")
        got += n
    return buffer


def read_frame(sock: socket.socket) -> Frame:
    """Blocking read of one frame (the replica's side)."""
    (size,) = _U32.unpack(_recv_exact(sock, 4))
    if size > MAX_FRAME:
        raise ValueError(f"frame of {size} bytes is over the {MAX_FRAME} limit")
    return decode(_recv_exact(sock, size))


class FrameBuffer:
    """Splits a byte stream into frames (each without its length prefix)."""

    def __init__(self) -> None:
        self._buffer = bytearray()

    def feed(self, data: bytes) -> list[bytes]:
        buffer = self._buffer
        buffer += data
        frames: list[bytes] = []
        pos = 0
        while len(buffer) - pos >= 4:
            (size,) = _U32.unpack_from(buffer, pos)
            if size > MAX_FRAME:
                raise ValueError(f"frame of {size} bytes is over the {MAX_FRAME} limit")
            if len(buffer) - pos - 4 < size:
                break
            frames.append(bytes(buffer[pos + 4 : pos + 4 + size]))
            pos += 4 + size
        if pos:
            del buffer[:pos]
        return frames


def write_frame(sock: socket.socket, parts: list[bytes | memoryview]) -> None:
    """Blocking write of one frame (the replica's side)."""
    sock.sendmsg(parts)


def secret_matches(frame: Frame, secret: str) -> bool:
    return frame.op is Op.HELLO and hmac.compare_digest(frame.error, secret)


__all__ += ["secret_matches"]


class SocketChannel:
    """The caller's end of one replica's connection: pipelined requests, a future per id.

    A connection that breaks fails every request it holds with :class:`ReplicaLost` (which
    the gateway retries once elsewhere); the channel then reports ``closed``.
    """

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self._reader = reader
        self._writer = writer
        self._ids = itertools.count(1)
        self._pending: dict[int, asyncio.Future[Frame]] = {}
        self._task = asyncio.get_running_loop().create_task(self._read_loop())
        self.closed = False

    @classmethod
    async def connect(cls, host: str, port: int, secret: str, timeout_s: float) -> SocketChannel:
        writer: asyncio.StreamWriter | None = None
        try:
            async with asyncio.timeout(timeout_s):
                reader, writer = await asyncio.open_connection(host, port)
                sock = writer.get_extra_info("socket")
                if sock is not None:
                    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
                writer.writelines(encode(Op.HELLO, 0, error=secret))
                (size,) = _U32.unpack(await reader.readexactly(4))
                hello = decode(await reader.readexactly(min(size, MAX_FRAME)))
            if hello.op is not Op.HELLO:
                raise WorkerFailed(f"the replica at {host}:{port} refused the connection")
        except BaseException as exc:
            if writer is not None:
                writer.close()
                with contextlib.suppress(Exception):
                    await asyncio.wait_for(writer.wait_closed(), 1.0)
            if isinstance(exc, OSError | EOFError | TimeoutError | asyncio.IncompleteReadError):
                raise WorkerFailed(f"cannot reach the replica at {host}:{port}: {exc!r}") from exc
            raise
        return cls(reader, writer)

    @property
    def outstanding(self) -> int:
        return len(self._pending)

    async def _read_loop(self) -> None:
        reason = "the connection closed"
        frames = FrameBuffer()
        try:
            # One read takes every answer that has arrived: at high concurrency many frames
            # come together, and one await per frame is what the loop would spend its time on.
            while data := await self._reader.read(1 << 16):
                for raw in frames.feed(data):
                    frame = decode(raw)
                    future = self._pending.pop(frame.id, None)
                    if future is not None and not future.done():
                        future.set_result(frame)
        except (OSError, ValueError) as exc:
            reason = f"the connection broke: {exc!r}"
        finally:
            self._fail_all(reason)

    def _fail_all(self, reason: str) -> None:
        self.closed = True
        held, self._pending = self._pending, {}
        for future in held.values():
            if not future.done():
                future.set_exception(ReplicaLost(f"replica lost: {reason}"))

    async def call(self, op: Op, arrays: Arrays | None, timeout_s: float) -> Frame:
        if self.closed:
            raise ReplicaLost("the replica's connection is closed")
        rid = next(self._ids)
        future: asyncio.Future[Frame] = asyncio.get_running_loop().create_future()
        self._pending[rid] = future
        self._writer.writelines(encode(op, rid, arrays))
        try:
            return await asyncio.wait_for(future, timeout_s)
        except TimeoutError:
            self._pending.pop(rid, None)
            raise DeadlineExceeded(f"no answer within {timeout_s:.3g}s") from None

    async def close(self) -> None:
        self._task.cancel()
        with contextlib.suppress(asyncio.CancelledError, Exception):
            await self._task
        self._writer.close()
        with contextlib.suppress(Exception):
            await asyncio.wait_for(self._writer.wait_closed(), 2.0)
        self._fail_all("closed")
