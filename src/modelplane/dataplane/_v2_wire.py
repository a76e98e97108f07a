"""Wire-level pieces of Open Inference Protocol v2: datatype tables and msgspec structs.

Kept apart from :mod:`modelplane.dataplane.codec_v2` (which holds the logic) so each stays
small; nothing here is public API beyond what ``codec_v2`` re-exports.
"""

from __future__ import annotations

import struct
from typing import Annotated, Any

import msgspec
import numpy as np

from modelplane.errors import InvalidSpec

__all__ = [
    "DATA_DECODERS",
    "ENCODER",
    "MAX_NESTING",
    "NUMPY",
    "REQUEST_DECODER",
    "RESPONSE_DECODER",
    "U32",
    "OutRequest",
    "OutResponse",
    "OutTensor",
    "WireOutputRequest",
    "WireRequest",
    "WireResponse",
    "WireTensor",
    "element_type",
    "numpy_dtype",
    "v2_datatype",
]

# Little-endian spelled out: the wire is little-endian whatever the host.
NUMPY: dict[str, np.dtype[Any]] = {
    "BOOL": np.dtype("?"),
    "UINT8": np.dtype("u1"),
    "UINT16": np.dtype("<u2"),
    "UINT32": np.dtype("<u4"),
    "UINT64": np.dtype("<u8"),
    "INT8": np.dtype("i1"),
    "INT16": np.dtype("<i2"),
    "INT32": np.dtype("<i4"),
    "INT64": np.dtype("<i8"),
    "FP16": np.dtype("<f2"),
    "FP32": np.dtype("<f4"),
    "FP64": np.dtype("<f8"),
    "BYTES": np.dtype("O"),
}
_V2_BY_KIND_SIZE: dict[tuple[str, int], str] = {
    (dt.kind, dt.itemsize): name for name, dt in NUMPY.items() if name != "BYTES"
}
U32 = struct.Struct("<I")


def numpy_dtype(datatype: str) -> np.dtype[Any]:
    """The numpy dtype of a v2 datatype name; ``KeyError`` when it is not one."""
    return NUMPY[datatype]


def v2_datatype(dtype: np.dtype[Any]) -> str:
    """The v2 datatype name of a numpy dtype (text and objects are ``BYTES``)."""
    if dtype.kind in "OUS":
        return "BYTES"
    try:
        return _V2_BY_KIND_SIZE[(dtype.kind, dtype.itemsize)]
    except KeyError:
        raise InvalidSpec(f"numpy dtype {dtype} has no Open Inference Protocol datatype") from None


# ---------------------------------------------------------------------------- wire structs


class WireTensor(msgspec.Struct, omit_defaults=True):
    name: str
    datatype: str
    shape: list[Annotated[int, msgspec.Meta(ge=0)]]
    parameters: dict[str, Any] | None = None
    data: msgspec.Raw = msgspec.Raw()


class WireOutputRequest(msgspec.Struct, omit_defaults=True):
    name: str
    parameters: dict[str, Any] | None = None


class WireRequest(msgspec.Struct, omit_defaults=True):
    inputs: list[WireTensor]
    id: str | None = None
    parameters: dict[str, Any] | None = None
    outputs: list[WireOutputRequest] | None = None


class WireResponse(msgspec.Struct, omit_defaults=True):
    model_name: str
    outputs: list[WireTensor]
    model_version: str | None = None
    id: str | None = None
    parameters: dict[str, Any] | None = None


class OutTensor(msgspec.Struct, omit_defaults=True):
    name: str
    datatype: str
    shape: tuple[int, ...]
    parameters: dict[str, Any] | None = None
    data: list[Any] | None = None


class OutResponse(msgspec.Struct, omit_defaults=True):
    model_name: str
    outputs: list[OutTensor]
    model_version: str | None = None
    id: str | None = None
    parameters: dict[str, Any] | None = None


class OutRequest(msgspec.Struct, omit_defaults=True):
    inputs: list[OutTensor]
    id: str | None = None
    parameters: dict[str, Any] | None = None
    outputs: list[WireOutputRequest] | None = None


REQUEST_DECODER = msgspec.json.Decoder(WireRequest)
RESPONSE_DECODER = msgspec.json.Decoder(WireResponse)
ENCODER = msgspec.json.Encoder()


def element_type(datatype: str) -> Any:
    """The msgspec type of one JSON element of a v2 datatype, bounded so nothing wraps."""
    dt = NUMPY[datatype]
    if datatype == "BYTES":
        return str
    if datatype == "BOOL":
        return bool
    if dt.kind in "iu":
        info = np.iinfo(dt)
        if info.max > np.iinfo(np.int64).max:
            # msgspec bounds must fit int64; numpy rejects anything above 2**64 - 1 itself
            return Annotated[int, msgspec.Meta(ge=0)]
        return Annotated[int, msgspec.Meta(ge=int(info.min), le=int(info.max))]
    top = float(np.finfo(dt).max)
    return Annotated[float, msgspec.Meta(ge=-top, le=top)]


def _nested(element: Any, depth: int) -> Any:
    typ: Any = element
    for _ in range(depth):
        typ = list[typ]
    return typ


MAX_NESTING = 8
# Typed decoders for each datatype and nesting depth, built once: element type errors then
# come from msgspec's C decoder with a JSON path, and no Python loop touches the numbers.
DATA_DECODERS: dict[tuple[str, int], msgspec.json.Decoder[Any]] = {
    (name, depth): msgspec.json.Decoder(_nested(element_type(name), depth))
    for name in NUMPY
    for depth in range(1, MAX_NESTING + 1)
}
