"""Typed messages between the gateway and its model workers, and their byte framing.

A message is ``[u32 header length][msgpack header][raw tensor bytes ...]``. The header
names the op, the request id and each tensor's dtype, shape and byte count; the tensor bytes
follow in order, so the receiver builds arrays with ``np.frombuffer`` on the frame (no copy)
and nothing is pickled: a worker runs model code, and the gateway must not unpickle what a
worker sends. Text tensors (``object`` arrays of ``str``/``bytes``) travel inside the header.

Frames ride a pipe with :mod:`multiprocessing.connection`'s framing (a 4-byte big-endian
signed length, or ``-1`` then an 8-byte length for frames of 2 GiB and more), so a worker can
use ``Connection.recv_bytes``/``send_bytes`` and the gateway its own non-blocking reader.
"""

from __future__ import annotations

import struct
from collections.abc import Mapping
from dataclasses import dataclass
from enum import IntEnum
from typing import Any

import msgspec
import numpy as np
import numpy.typing as npt

__all__ = [
    "FrameReader",
    "Message",
    "Op",
    "decode",
    "encode",
    "frame",
]

Array = npt.NDArray[Any]


class Op(IntEnum):
    """What a message asks or answers."""

    READY = 1
    """worker → gateway: the model is loaded (``pid`` set), or failed to load (``error``);
    ``sandbox`` says what the worker gave up before loading (and what it could not)."""
    PREDICT = 2
    """gateway → worker: run the model on ``arrays``."""
    RESULT = 3
    """worker → gateway: the outputs of PREDICT ``id``."""
    ERROR = 4
    """worker → gateway: PREDICT ``id`` raised; ``error`` and ``error_type`` say what."""
    PING = 5
    """gateway → worker: are you there? Answered with PONG of the same id."""
    PONG = 6
    """worker → gateway: the answer to PING ``id``."""
    STOP = 7
    """gateway → worker: finish and exit."""


class _Tensor(msgspec.Struct, array_like=True):
    name: str
    dtype: str
    shape: tuple[int, ...]
    nbytes: int = 0
    items: list[Any] | None = None


class _Header(msgspec.Struct, array_like=True, omit_defaults=True):
    op: Op
    id: int
    tensors: list[_Tensor] = []
    error: str = ""
    error_type: str = ""
    pid: int = 0
    sandbox: str = ""


@dataclass(frozen=True, slots=True)
class Message:
    """One decoded message."""

    op: Op
    id: int
    arrays: dict[str, Array]
    error: str = ""
    error_type: str = ""
    pid: int = 0
    sandbox: str = ""


_ENCODER = msgspec.msgpack.Encoder()
_DECODER = msgspec.msgpack.Decoder(_Header)
_U32 = struct.Struct("<I")
_LEN = struct.Struct("!i")
_LEN64 = struct.Struct("!Q")
_BIG = 0x7FFFFFFF


def encode(
    op: Op,
    id: int,
    arrays: Mapping[str, Array] | None = None,
    *,
    error: str = "",
    error_type: str = "",
    pid: int = 0,
    sandbox: str = "",
) -> list[bytes | memoryview]:
    """The parts of one message, to be joined or written in order (no tensor is copied)."""
    tensors: list[_Tensor] = []
    buffers: list[bytes | memoryview] = []
    for name, array in (arrays or {}).items():
        if array.dtype.kind in "OUS":
            tensors.append(_Tensor(name, "O", array.shape, 0, array.ravel().tolist()))
            continue
        contiguous = np.ascontiguousarray(array)
        tensors.append(_Tensor(name, contiguous.dtype.str, contiguous.shape, contiguous.nbytes))
        buffers.append(contiguous.data.cast("B"))
    header = _ENCODER.encode(_Header(op, id, tensors, error, error_type, pid, sandbox))
    return [_U32.pack(len(header)) + header, *buffers]


def frame(parts: list[bytes | memoryview]) -> list[bytes | memoryview]:
    """Prefix ``parts`` with the ``multiprocessing.connection`` length header."""
    size = sum(len(p) for p in parts)
    prefix = _LEN.pack(size) if size <= _BIG else _LEN.pack(-1) + _LEN64.pack(size)
    return [prefix, *parts]


def decode(data: bytes | bytearray | memoryview) -> Message:
    """Decode one message; arrays share ``data``'s memory and are read-only for ``bytes``."""
    view = memoryview(data)
    (size,) = _U32.unpack_from(view, 0)
    header = _DECODER.decode(view[4 : 4 + size])
    offset = 4 + size
    arrays: dict[str, Array] = {}
    for t in header.tensors:
        if t.items is not None:
            array = np.empty(len(t.items), dtype=object)
            array[:] = t.items
            arrays[t.name] = array.reshape(t.shape)
            continue
        chunk = view[offset : offset + t.nbytes]
        offset += t.nbytes
        arrays[t.name] = np.frombuffer(chunk, dtype=np.dtype(t.dtype)).reshape(t.shape)
    return Message(
        header.op, header.id, arrays, header.error, header.error_type, header.pid, header.sandbox
    )


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
