"""Typed messages between the gateway and its model workers, and their byte framing.

A message is one frame of :mod:`modelplane.core.tensor_frames` (its ``Op``, ``encode`` and
``decode`` are this module's): a msgpack header naming the op, the request id and each
tensor, then the raw tensor bytes, decoded with ``np.frombuffer`` and never unpickled (a
worker runs model code, and the gateway must not unpickle what a worker sends).

Frames ride a pipe with :mod:`multiprocessing.connection`'s framing (a 4-byte big-endian
signed length, or ``-1`` then an 8-byte length for frames of 2 GiB and more), so a worker can
use ``Connection.recv_bytes``/``send_bytes`` and the gateway its own non-blocking reader.
"""

from __future__ import annotations

import struct

from modelplane.core.tensor_frames import Frame, Op, decode, encode

__all__ = [
    "FrameReader",
    "Message",
    "Op",
    "decode",
    "encode",
    "frame",
]


Message = Frame
"""One decoded message."""

_LEN = struct.Struct("!i")
_LEN64 = struct.Struct("!Q")
_BIG = 0x7FFFFFFF


def frame(parts: list[bytes | memoryview]) -> list[bytes | memoryview]:
    """Prefix ``parts`` with the ``multiprocessing.connection`` length header."""
    size = sum(len(p) for p in parts)
    prefix = _LEN.pack(size) if size <= _BIG else _LEN.pack(-1) + _LEN64.pack(size)
    return [prefix, *parts]


class FrameReader:
    """Splits a byte stream into frames written with :func:`frame` (or ``send_bytes``)."""

    def __init__(self) -> None:
        self._buffer = bytearray()

    def feed(self, data: bytes) -> list[bytes]:
        """Add received bytes; return every frame now complete, in order."""
        if not self._buffer and len(data) >= 4:
            (size,) = _LEN.unpack_from(data, 0)
            if size + 4 == len(data):
                return [data[4:]]  # the common case: exactly one small frame per read
        buffer = self._buffer
        buffer += data
        frames: list[bytes] = []
        pos = 0
        with memoryview(buffer) as view:
            while (bounds := _next_frame(view, pos)) is not None:
                start, pos = bounds
                frames.append(bytes(view[start:pos]))
        if pos:
            del buffer[:pos]
        return frames


def _next_frame(view: memoryview, pos: int) -> tuple[int, int] | None:
    """``(start, end)`` of the frame whose header is at ``pos``, if it is all there."""
    if len(view) - pos < 4:
        return None
    (size,) = _LEN.unpack_from(view, pos)
    start = pos + 4
    if size == -1:
        if len(view) - pos < 12:
            return None
        (size,) = _LEN64.unpack_from(view, start)
        start += 8
    end = start + size
    return (start, end) if end <= len(view) else None
