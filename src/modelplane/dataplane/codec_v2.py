"""Open Inference Protocol v2 bodies, with the binary tensor extension, in and out.

Transport-agnostic: functions take and give ``bytes`` plus the value of the
``Inference-Header-Content-Length`` header, so any HTTP server (or a test) can call them.

Wire format reminders, as ``tritonclient.http`` writes them:

- a JSON tensor carries ``data``, flat (row-major) or nested to the tensor's rank;
- a binary tensor carries ``parameters.binary_data_size`` and its bytes follow the JSON
  header in input order; numbers are little-endian, BOOL is one byte per element, BYTES
  elements are a 4-byte little-endian length then the bytes;
- an output is sent binary when its ``parameters.binary_data`` is true, or, when it does not
  say, when the request's ``parameters.binary_data_output`` is true.

BYTES tensors decode to ``object`` arrays: of ``str`` from JSON and of ``bytes`` from binary,
as ``tritonclient`` does. JSON cannot carry NaN or infinities: msgspec writes them as ``null``.
Binary inputs decode to read-only arrays that share the body's memory (no copy).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import msgspec
import numpy as np
import numpy.typing as npt

from modelplane.dataplane._v2_wire import (
    DATA_DECODERS,
    ENCODER,
    MAX_NESTING,
    NUMPY,
    REQUEST_DECODER,
    RESPONSE_DECODER,
    U32,
    OutRequest,
    OutResponse,
    OutTensor,
    WireOutputRequest,
    WireTensor,
    element_type,
    numpy_dtype,
    v2_datatype,
)
from modelplane.errors import ContractViolation, InvalidSpec, MalformedRequest

__all__ = [
    "HEADER_LENGTH",
    "EncodedBody",
    "InferRequest",
    "InferResponse",
    "RequestedOutput",
    "check_datatypes",
    "decode_request",
    "decode_response",
    "element_type",
    "encode_request",
    "encode_response",
    "numpy_dtype",
    "v2_datatype",
]

HEADER_LENGTH = "Inference-Header-Content-Length"
"""The HTTP header naming the JSON part's length when binary tensors follow it."""

Array = npt.NDArray[Any]

# ---------------------------------------------------------------------------- domain types


@dataclass(frozen=True, slots=True)
class RequestedOutput:
    """An output the caller asked for; ``binary`` is ``None`` when it did not say."""

    name: str
    binary: bool | None = None
    parameters: Mapping[str, Any] = field(default_factory=dict)


@dataclass(slots=True)
class InferRequest:
    """A decoded infer request: named arrays shaped by their declared shapes."""

    inputs: dict[str, Array]
    id: str | None = None
    parameters: dict[str, Any] = field(default_factory=dict)
    outputs: list[RequestedOutput] | None = None
    """``None``: every output the model gives."""

    @property
    def binary_output_default(self) -> bool:
        """``parameters.binary_data_output``: binary for outputs that do not say."""
        return bool(self.parameters.get("binary_data_output", False))


@dataclass(slots=True)
class InferResponse:
    """What a model version answered, before encoding."""

    model_name: str
    outputs: dict[str, Array]
    model_version: str | None = None
    id: str | None = None
    parameters: dict[str, Any] | None = None


@dataclass(frozen=True, slots=True)
class EncodedBody:
    """A body to send; ``header_length`` is set when binary tensors follow the JSON."""

    body: bytes
    header_length: int | None = None

    @property
    def content_type(self) -> str:
        return "application/json" if self.header_length is None else "application/octet-stream"


class _TensorProblem(Exception):
    def __init__(self, where: str, problem: str) -> None:
        super().__init__(problem)
        self.detail = {"field": where, "problem": problem}


# ---------------------------------------------------------------------------- decoding


def decode_request(body: bytes, header_length: int | None = None) -> InferRequest:
    """Decode an infer request body; ``header_length`` is the ``HEADER_LENGTH`` header."""
    wire, view = _decode_json(REQUEST_DECODER, body, header_length, "inference request")
    inputs = _decode_tensors(wire.inputs, view, header_length, "inputs")
    outputs = None
    if wire.outputs is not None:
        outputs = [_requested(out) for out in wire.outputs]
    return InferRequest(
        inputs=inputs, id=wire.id, parameters=wire.parameters or {}, outputs=outputs
    )


def decode_response(body: bytes, header_length: int | None = None) -> InferResponse:
    """Decode an infer response body (the client side; tests and tools use it)."""
    wire, view = _decode_json(RESPONSE_DECODER, body, header_length, "inference response")
    outputs = _decode_tensors(wire.outputs, view, header_length, "outputs")
    return InferResponse(
        model_name=wire.model_name,
        outputs=outputs,
        model_version=wire.model_version,
        id=wire.id,
        parameters=wire.parameters,
    )


def _decode_json(
    decoder: msgspec.json.Decoder[Any], body: bytes, header_length: int | None, what: str
) -> tuple[Any, memoryview]:
    view = memoryview(body)
    if header_length is not None and not 0 < header_length <= len(view):
        raise InvalidSpec(
            f"{HEADER_LENGTH} is {header_length} but the body has {len(view)} bytes",
            details=[{"field": HEADER_LENGTH, "problem": "out of range"}],
        )
    head = view if header_length is None else view[:header_length]
    try:
        return decoder.decode(head), view
    except msgspec.ValidationError as exc:
        raise InvalidSpec(
            f"invalid {what}: {exc}", details=[{"field": "body", "problem": str(exc)}]
        ) from None
    except msgspec.DecodeError as exc:
        raise MalformedRequest(
            f"malformed {what}: not valid JSON: {exc}",
            details=[{"field": "body", "problem": str(exc)}],
        ) from None


def _requested(out: WireOutputRequest) -> RequestedOutput:
    params = out.parameters or {}
    binary = params.get("binary_data")
    return RequestedOutput(
        name=out.name, binary=None if binary is None else bool(binary), parameters=params
    )


def _decode_tensors(
    tensors: list[WireTensor], view: memoryview, header_length: int | None, side: str
) -> dict[str, Array]:
    arrays: dict[str, Array] = {}
    problems: list[dict[str, str]] = []
    offset = header_length if header_length is not None else len(view)
    for i, tensor in enumerate(tensors):
        where = f"{side}[{i}] '{tensor.name}'"
        try:
            if tensor.name in arrays:
                raise _TensorProblem(where, "appears twice")
            arrays[tensor.name], offset = _decode_tensor(tensor, view, offset, where)
        except _TensorProblem as exc:
            problems.append(exc.detail)
    if not problems and offset != len(view):
        extra = len(view) - offset
        problems.append({"field": "body", "problem": f"{extra} bytes after the last tensor"})
    if problems:
        listed = "; ".join(f"{p['field']}: {p['problem']}" for p in problems)
        raise InvalidSpec(f"invalid tensors: {listed}", details=problems)
    return arrays


def _decode_tensor(
    tensor: WireTensor, view: memoryview, offset: int, where: str
) -> tuple[Array, int]:
    dtype = NUMPY.get(tensor.datatype)
    if dtype is None:
        known = ", ".join(NUMPY)
        raise _TensorProblem(where, f"unknown datatype '{tensor.datatype}' (one of {known})")
    size = (tensor.parameters or {}).get("binary_data_size")
    if size is None:
        return _json_tensor(tensor, dtype, where), offset
    if len(tensor.data):
        raise _TensorProblem(where, "has both data and binary_data_size")
    if not isinstance(size, int) or isinstance(size, bool) or size < 0:
        raise _TensorProblem(where, f"binary_data_size {size!r} is not a byte count")
    end = offset + size
    if end > len(view):
        raise _TensorProblem(where, f"needs {size} binary bytes, only {len(view) - offset} left")
    return _binary_tensor(tensor, dtype, view[offset:end], where), end


def _json_tensor(tensor: WireTensor, dtype: np.dtype[Any], where: str) -> Array:
    raw = tensor.data
    if not len(raw):
        raise _TensorProblem(where, "has neither data nor parameters.binary_data_size")
    shape = tuple(tensor.shape)
    depth = _depth(memoryview(raw))
    if depth != 1 and depth != len(shape):
        raise _TensorProblem(where, f"data nested {depth} deep for a shape of rank {len(shape)}")
    decoder = DATA_DECODERS.get((tensor.datatype, depth))
    if decoder is None:
        raise _TensorProblem(where, f"data nested deeper than {MAX_NESTING}")
    try:
        values = decoder.decode(raw)
    except (msgspec.ValidationError, msgspec.DecodeError) as exc:
        raise _TensorProblem(where, f"bad {tensor.datatype} data: {exc}") from None
    try:
        array = np.array(values, dtype=dtype)
    except ValueError:
        raise _TensorProblem(where, "nested data is ragged") from None
    except OverflowError as exc:
        raise _TensorProblem(where, f"bad {tensor.datatype} data: {exc}") from None
    expected = math.prod(shape)
    if array.size != expected or (depth > 1 and array.shape != shape):
        raise _TensorProblem(
            where, f"{array.size} elements for shape {list(shape)} ({expected} expected)"
        )
    return array.reshape(shape)


def _depth(raw: memoryview) -> int:
    depth = 0
    for byte in raw:
        if byte == 0x5B:  # '['
            depth += 1
        elif byte not in b" \t\r\n":
            break
    return depth


def _binary_tensor(
    tensor: WireTensor, dtype: np.dtype[Any], chunk: memoryview, where: str
) -> Array:
    shape = tuple(tensor.shape)
    count = math.prod(shape)
    if tensor.datatype == "BYTES":
        return _split_bytes(chunk, count, where).reshape(shape)
    expected = count * dtype.itemsize
    if len(chunk) != expected:
        raise _TensorProblem(
            where,
            f"binary_data_size {len(chunk)} does not fit shape {list(shape)} of "
            f"{tensor.datatype} ({expected} bytes expected)",
        )
    return np.frombuffer(chunk, dtype=dtype).reshape(shape)


def _split_bytes(chunk: memoryview, count: int, where: str) -> Array:
    out = np.empty(count, dtype=object)
    pos, end = 0, len(chunk)
    for k in range(count):
        if pos + 4 > end:
            raise _TensorProblem(where, f"BYTES data ends inside element {k} of {count}")
        (length,) = U32.unpack_from(chunk, pos)
        pos += 4
        if pos + length > end:
            raise _TensorProblem(where, f"BYTES element {k} runs past binary_data_size")
        out[k] = bytes(chunk[pos : pos + length])
        pos += length
    if pos != end:
        raise _TensorProblem(where, f"{end - pos} bytes after the last of {count} BYTES elements")
    return out


# ---------------------------------------------------------------------------- encoding


def encode_response(
    response: InferResponse,
    requested: Sequence[RequestedOutput] | None = None,
    *,
    binary_default: bool = False,
) -> EncodedBody:
    """Encode a response; ``requested`` and ``binary_default`` come from the request.

    Only the requested outputs are sent, in the order asked; an unknown name is an error.
    """
    chosen = _choose_outputs(response.outputs, requested, binary_default)
    tensors, chunks = _encode_tensors(chosen, "outputs")
    wire = OutResponse(
        model_name=response.model_name,
        outputs=tensors,
        model_version=response.model_version,
        id=response.id,
        parameters=response.parameters,
    )
    return _assemble(ENCODER.encode(wire), chunks)


def encode_request(
    inputs: Mapping[str, Array],
    *,
    binary: bool = False,
    outputs: Sequence[RequestedOutput] | None = None,
    id: str | None = None,
    parameters: Mapping[str, Any] | None = None,
) -> EncodedBody:
    """Encode an infer request (the client side: tests, benchmarks, the CLI)."""
    tensors, chunks = _encode_tensors([(n, a, binary) for n, a in inputs.items()], "inputs")
    wire_outputs = None
    if outputs is not None:
        wire_outputs = [WireOutputRequest(name=o.name, parameters=_out_params(o)) for o in outputs]
    wire = OutRequest(
        inputs=tensors,
        id=id,
        parameters=dict(parameters) if parameters else None,
        outputs=wire_outputs,
    )
    return _assemble(ENCODER.encode(wire), chunks)


def _out_params(out: RequestedOutput) -> dict[str, Any] | None:
    params = dict(out.parameters)
    if out.binary is not None:
        params["binary_data"] = out.binary
    return params or None


def _choose_outputs(
    outputs: Mapping[str, Array],
    requested: Sequence[RequestedOutput] | None,
    binary_default: bool,
) -> list[tuple[str, Array, bool]]:
    if requested is None:
        return [(name, array, binary_default) for name, array in outputs.items()]
    missing = [r.name for r in requested if r.name not in outputs]
    if missing:
        raise InvalidSpec(
            f"requested outputs not produced: {', '.join(missing)}",
            details=[
                {"field": f"outputs '{n}'", "problem": f"not one of {sorted(outputs)}"}
                for n in missing
            ],
        )
    return [
        (r.name, outputs[r.name], binary_default if r.binary is None else r.binary)
        for r in requested
    ]


def _encode_tensors(
    items: Sequence[tuple[str, Array, bool]], side: str
) -> tuple[list[OutTensor], list[bytes]]:
    tensors: list[OutTensor] = []
    chunks: list[bytes] = []
    for name, array, binary in items:
        datatype = v2_datatype(array.dtype)
        if binary:
            chunk = _tensor_bytes(array, datatype)
            chunks.append(chunk)
            params: dict[str, Any] | None = {"binary_data_size": len(chunk)}
            tensors.append(OutTensor(name, datatype, array.shape, params))
        else:
            data = _json_data(array, datatype, f"{side} '{name}'")
            tensors.append(OutTensor(name, datatype, array.shape, None, data))
    return tensors, chunks


def _tensor_bytes(array: Array, datatype: str) -> bytes:
    if datatype != "BYTES":
        return np.ascontiguousarray(array, dtype=NUMPY[datatype]).tobytes()
    parts: list[bytes] = []
    for item in array.ravel().tolist():
        raw = item if isinstance(item, bytes) else str(item).encode()
        parts.append(U32.pack(len(raw)))
        parts.append(raw)
    return b"".join(parts)


def _json_data(array: Array, datatype: str, where: str) -> list[Any]:
    flat: list[Any] = array.ravel().tolist()
    if datatype != "BYTES":
        return flat
    try:
        return [x.decode() if isinstance(x, bytes) else str(x) for x in flat]
    except UnicodeDecodeError:
        raise InvalidSpec(
            f"{where} holds bytes that are not UTF-8; ask for it with binary_data",
            details=[{"field": where, "problem": "not UTF-8 text"}],
        ) from None


def _assemble(header: bytes, chunks: list[bytes]) -> EncodedBody:
    if not chunks:
        return EncodedBody(header)
    return EncodedBody(b"".join([header, *chunks]), header_length=len(header))


def check_datatypes(
    expected: Sequence[tuple[str, np.dtype[Any]]], inputs: Mapping[str, Array]
) -> None:
    """Refuse tensors whose declared datatype differs from the contract's input, as Triton
    does: a caller who names ``INT64`` for an ``FP64`` input has a bug worth hearing about,
    not a silent cast. ``expected`` holds the numeric inputs' dtypes (text is checked by the
    contract itself); the message is built only when something differs."""
    problems: list[dict[str, str]] = []
    for name, dtype in expected:
        array = inputs.get(name)
        if array is None or array.dtype == dtype or array.dtype.kind in "OUS":
            continue
        sent, wanted = v2_datatype(array.dtype), v2_datatype(dtype)
        problems.append(
            {"field": f"inputs.{name}.datatype",
             "problem": f"{sent} sent, the contract takes {wanted}"}
        )  # fmt: skip
    if problems:
        listed = "; ".join(f"{p['field']}: {p['problem']}" for p in problems)
        raise ContractViolation(f"wrong datatypes: {listed}", details=problems)
