"""Tensors in one frame: a msgpack header naming the op and each tensor, then raw bytes.

A frame is ``[u32 header length, little-endian][msgpack header][raw tensor bytes ...]``. The
header names the op, the request id and each tensor's name, dtype, shape and byte count; the
tensor bytes follow in that order, so the receiver builds arrays with ``np.frombuffer`` on the
frame (no copy) and nothing is ever unpickled: the peer runs model code, and what it sends
must not run code here. Text tensors (``object``/``str``/``bytes`` arrays) travel inside the
header, as lists.

Two transports carry these frames, each delimiting them its own way: the data plane's worker
pipes (:mod:`modelplane.dataplane.pool.messages`, ``multiprocessing.connection``'s length
prefix) and the backends' replica sockets (:mod:`modelplane.backends.wire`, the u32 length
of ``encode(..., length_prefix=True)``, bounded by ``MAX_FRAME``). The two layers may not
import each other, so the frame is here.
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

__all__ = ["Array", "Frame", "Op", "TensorSpec", "decode", "encode"]

Array = npt.NDArray[Any]


class Op(IntEnum):
    """What a frame asks or answers (a transport uses the ops it needs)."""

    READY = 1
    """worker → gateway: the model is loaded (``pid`` set), or failed to load (``error``);
    ``sandbox`` says what the worker gave up before loading (and what it could not)."""
    PREDICT = 2
    """run the model on ``arrays``."""
    RESULT = 3
    """the outputs of PREDICT ``id``."""
    ERROR = 4
    """PREDICT ``id`` raised; ``error`` and ``error_type`` say what."""
    PING = 5
    """are you there? Answered with PONG of the same id."""
    PONG = 6
    """the answer to PING ``id``."""
    STOP = 7
    """gateway → worker: finish and exit."""
    HELLO = 8
    """client → replica socket: the secret, in ``error``; answered with HELLO (``pid`` set)
    or the door shut."""


class TensorSpec(msgspec.Struct, array_like=True):
    """One tensor of a frame: raw bytes after the header, or ``items`` for text."""

    name: str
    dtype: str
    shape: tuple[int, ...]
    nbytes: int = 0
    items: list[Any] | None = None


class _Header(msgspec.Struct, array_like=True, omit_defaults=True):
    op: Op
    id: int
    tensors: list[TensorSpec] = []
    error: str = ""
    error_type: str = ""
    pid: int = 0
    sandbox: str = ""


@dataclass(frozen=True, slots=True)
class Frame:
    """One decoded frame."""

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
_STREAM_LENGTH = struct.Struct("!I")


def encode(
    op: Op,
    id: int,
    arrays: Mapping[str, Any] | None = None,
    *,
    error: str = "",
    error_type: str = "",
    pid: int = 0,
    sandbox: str = "",
    length_prefix: bool = False,
) -> list[bytes | memoryview]:
    """The parts of one frame, to be joined or written in order: the header, then each
    tensor's bytes (a C-contiguous array is not copied). With ``length_prefix`` the frame's
    length comes first (u32, big-endian), for a byte stream; :func:`decode` takes the frame
    without it."""
    tensors: list[TensorSpec] = []
    parts: list[bytes | memoryview] = [b""]
    total = 0
    if arrays:
        for name, value in arrays.items():
            array = value if type(value) is np.ndarray else np.asarray(value)
            if array.dtype.kind in "OUS":
                tensors.append(TensorSpec(name, "O", array.shape, 0, array.ravel().tolist()))
                continue
            # np.ascontiguousarray would also turn a 0-d array into a 1-d one
            if not array.flags.c_contiguous:
                array = np.ascontiguousarray(array)
            nbytes = array.nbytes
            total += nbytes
            tensors.append(TensorSpec(name, array.dtype.str, array.shape, nbytes))
            # a memoryview of an empty array cannot be cast to bytes
            parts.append(array.data.cast("B") if nbytes else b"")
    header = _ENCODER.encode(_Header(op, id, tensors, error, error_type, pid, sandbox))
    if length_prefix:
        size = 4 + len(header) + total
        parts[0] = _STREAM_LENGTH.pack(size) + _U32.pack(len(header)) + header
    else:
        parts[0] = _U32.pack(len(header)) + header
    return parts


def decode(data: bytes | bytearray | memoryview) -> Frame:
    """One frame; its arrays share ``data``'s memory (read-only when ``data`` is ``bytes``)."""
    view = memoryview(data)
    (size,) = _U32.unpack_from(view, 0)
    h = _DECODER.decode(view[4 : 4 + size])
    offset = 4 + size
    length = len(view)
    arrays: dict[str, Array] = {}
    for t in h.tensors:
        if t.items is not None:
            array = np.empty(len(t.items), dtype=object)
            array[:] = t.items
            arrays[t.name] = array.reshape(t.shape)
            continue
        end = offset + t.nbytes
        if end > length:
            raise ValueError(f"tensor {t.name!r} runs past the end of its frame")
        arrays[t.name] = np.frombuffer(view[offset:end], dtype=np.dtype(t.dtype)).reshape(t.shape)
        offset = end
    return Frame(h.op, h.id, arrays, h.error, h.error_type, h.pid, h.sandbox)
