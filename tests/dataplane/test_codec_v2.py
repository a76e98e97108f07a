from __future__ import annotations

import json
from typing import Any

import numpy as np
import numpy.typing as npt
import pytest
import tritonclient.http as triton

from modelplane.dataplane.codec_v2 import (
    InferResponse,
    RequestedOutput,
    decode_request,
    decode_response,
    encode_request,
    encode_response,
    numpy_dtype,
    v2_datatype,
)
from modelplane.errors import InvalidSpec

DATATYPES = [
    "BOOL", "UINT8", "UINT16", "UINT32", "UINT64", "INT8", "INT16", "INT32", "INT64",
    "FP16", "FP32", "FP64", "BYTES",
]  # fmt: skip


def sample(datatype: str, *, binary: bool, shape: tuple[int, ...] = (2, 3)) -> npt.NDArray[Any]:
    """Six values per datatype, including the extremes, so nothing wraps unseen."""
    count = int(np.prod(shape))
    if datatype == "BYTES":
        words = ["", "a", "héllo", "x" * 40, "0", "end"]
        items: list[Any] = [w.encode() if binary else w for w in words]
        return np.array((items * count)[:count], dtype=object).reshape(shape)
    dtype = numpy_dtype(datatype)
    if datatype == "BOOL":
        values = np.array([True, False, True, True, False, False] * count)[:count]
    elif dtype.kind in "iu":
        info = np.iinfo(dtype)
        ints = [int(info.min), int(info.max), 0, 1, int(info.max) - 1, int(info.min) // 2]
        values = np.array(ints * count, dtype=dtype)
    else:
        info_f = np.finfo(dtype)
        values = np.array([info_f.min, info_f.max, 0.0, -1.5, 0.25, 1e-3] * count)
    return values[:count].astype(dtype).reshape(shape)


def assert_same(got: npt.NDArray[Any], want: npt.NDArray[Any]) -> None:
    assert got.shape == want.shape
    assert v2_datatype(got.dtype) == v2_datatype(want.dtype)
    if want.dtype == object:
        norm = [x.decode() if isinstance(x, bytes) else x for x in got.ravel().tolist()]
        wnorm = [x.decode() if isinstance(x, bytes) else x for x in want.ravel().tolist()]
        assert norm == wnorm
    else:
        np.testing.assert_array_equal(got, want)


@pytest.mark.parametrize("binary", [False, True], ids=["json", "binary"])
@pytest.mark.parametrize("datatype", DATATYPES)
def test_request_round_trip(datatype: str, binary: bool) -> None:
    array = sample(datatype, binary=binary)
    encoded = encode_request({"t": array, "other": sample("FP32", binary=binary)}, binary=binary)
    assert (encoded.header_length is not None) == binary
    request = decode_request(encoded.body, encoded.header_length)
    assert list(request.inputs) == ["t", "other"]
    assert_same(request.inputs["t"], array)


@pytest.mark.parametrize("binary", [False, True], ids=["json", "binary"])
@pytest.mark.parametrize("datatype", DATATYPES)
def test_response_round_trip(datatype: str, binary: bool) -> None:
    array = sample(datatype, binary=binary)
    response = InferResponse("m", {"y": array}, model_version="3", id="r1")
    encoded = encode_response(response, binary_default=binary)
    decoded = decode_response(encoded.body, encoded.header_length)
    assert (decoded.model_name, decoded.model_version, decoded.id) == ("m", "3", "r1")
    assert_same(decoded.outputs["y"], array)


def test_nested_and_flat_json_data_agree() -> None:
    head = '{"inputs":[{"name":"x","datatype":"INT32","shape":[2,2],"data":%s}]}'
    nested = decode_request((head % "[[1,2],[3,4]]").encode()).inputs["x"]
    flat = decode_request((head % "[1,2,3,4]").encode()).inputs["x"]
    np.testing.assert_array_equal(nested, flat)
    assert nested.dtype == np.int32
    assert nested.shape == (2, 2)


def test_request_fields_are_kept() -> None:
    body = {
        "id": "abc",
        "parameters": {"binary_data_output": True, "timeout": 500},
        "inputs": [{"name": "x", "datatype": "FP32", "shape": [1], "data": [1.0]}],
        "outputs": [{"name": "y", "parameters": {"binary_data": False}}, {"name": "z"}],
    }
    request = decode_request(json.dumps(body).encode())
    assert request.id == "abc"
    assert request.parameters["timeout"] == 500
    assert request.binary_output_default
    assert request.outputs is not None
    assert [(o.name, o.binary) for o in request.outputs] == [("y", False), ("z", None)]


@pytest.mark.parametrize("binary_input", [False, True], ids=["json-in", "binary-in"])
@pytest.mark.parametrize("datatype", DATATYPES)
def test_decodes_what_tritonclient_encodes(datatype: str, binary_input: bool) -> None:
    array = sample(datatype, binary=binary_input)
    tensor = triton.InferInput("t", list(array.shape), datatype)
    tensor.set_data_from_numpy(array, binary_data=binary_input)
    extra = triton.InferInput("n", [1, 2], "INT64")
    extra.set_data_from_numpy(np.array([[7, 8]], dtype=np.int64), binary_data=True)
    outputs = [triton.InferRequestedOutput("y", binary_data=True)]
    body, header_length = triton.InferenceServerClient.generate_request_body(
        [tensor, extra], outputs=outputs, request_id="rq"
    )
    request = decode_request(body, header_length)
    assert request.id == "rq"
    assert_same(request.inputs["t"], array)
    np.testing.assert_array_equal(request.inputs["n"], [[7, 8]])
    assert request.outputs == [RequestedOutput("y", True, {"binary_data": True})]


def test_tritonclient_without_outputs_asks_binary_for_all() -> None:
    tensor = triton.InferInput("t", [1], "FP32")
    tensor.set_data_from_numpy(np.array([1.0], dtype=np.float32), binary_data=False)
    body, header_length = triton.InferenceServerClient.generate_request_body([tensor])
    request = decode_request(body, header_length)
    assert request.outputs is None
    assert request.binary_output_default


@pytest.mark.parametrize("binary", [False, True], ids=["json-out", "binary-out"])
@pytest.mark.parametrize("datatype", DATATYPES)
def test_tritonclient_decodes_our_response(datatype: str, binary: bool) -> None:
    array = sample(datatype, binary=binary)
    response = InferResponse("m", {"y": array, "skipped": array}, model_version="1")
    encoded = encode_response(response, [RequestedOutput("y", binary)])
    result = triton.InferResult.from_response_body(
        encoded.body, header_length=encoded.header_length
    )
    assert [o["name"] for o in result.get_response()["outputs"]] == ["y"]
    assert_same(result.as_numpy("y"), array)


def test_binary_default_applies_only_where_output_does_not_say() -> None:
    outputs: dict[str, npt.NDArray[Any]] = {
        "a": np.arange(3, dtype=np.float32),
        "b": np.arange(2, dtype=np.int64),
    }
    encoded = encode_response(
        InferResponse("m", outputs),
        [RequestedOutput("b"), RequestedOutput("a", binary=False)],
        binary_default=True,
    )
    assert encoded.header_length is not None
    header = json.loads(encoded.body[: encoded.header_length])
    assert [o["name"] for o in header["outputs"]] == ["b", "a"]
    assert header["outputs"][0]["parameters"] == {"binary_data_size": 16}
    assert header["outputs"][1]["data"] == [0.0, 1.0, 2.0]
    assert len(encoded.body) == encoded.header_length + 16


def test_binary_inputs_share_the_body_memory() -> None:
    encoded = encode_request({"x": np.arange(1024, dtype=np.float32)}, binary=True)
    array = decode_request(encoded.body, encoded.header_length).inputs["x"]
    assert not array.flags.writeable
    assert array.base is not None


def bad(tensor: dict[str, Any]) -> bytes:
    return json.dumps({"inputs": [tensor]}).encode()


@pytest.mark.parametrize(
    ("body", "header_length", "problem"),
    [
        (bad({"name": "x", "datatype": "FP32", "shape": [2, 2], "data": [1, 2, 3]}), None,
         "3 elements for shape [2, 2] (4 expected)"),
        (bad({"name": "x", "datatype": "FP9", "shape": [1], "data": [1]}), None,
         "unknown datatype 'FP9'"),
        (bad({"name": "x", "datatype": "INT32", "shape": [2], "data": [1, 2.5]}), None,
         "Expected `int`, got `float`"),
        (bad({"name": "x", "datatype": "INT8", "shape": [1], "data": [300]}), None,
         "Expected `int` <= 127"),
        (bad({"name": "x", "datatype": "BOOL", "shape": [1], "data": [1]}), None,
         "Expected `bool`, got `int`"),
        (bad({"name": "x", "datatype": "BYTES", "shape": [1], "data": [5]}), None,
         "Expected `str`, got `int`"),
        (bad({"name": "x", "datatype": "FP16", "shape": [1], "data": [1e6]}), None,
         "Expected `float` <= 65504.0"),
        (bad({"name": "x", "datatype": "FP32", "shape": [2, 2], "data": [[1, 2], [3]]}), None,
         "ragged"),
        (bad({"name": "x", "datatype": "FP32", "shape": [2]}), None,
         "neither data nor parameters.binary_data_size"),
        (bad({"name": "x", "datatype": "FP32", "shape": [2],
              "parameters": {"binary_data_size": 8}}), None, "needs 8 binary bytes, only 0"),
    ],
)  # fmt: skip
def test_bad_tensors_are_named(body: bytes, header_length: int | None, problem: str) -> None:
    with pytest.raises(InvalidSpec) as info:
        decode_request(body, header_length)
    (detail,) = info.value.details
    assert detail["field"] == "inputs[0] 'x'"
    assert problem in detail["problem"]


def test_every_bad_tensor_is_reported() -> None:
    body = json.dumps(
        {
            "inputs": [
                {"name": "a", "datatype": "FP32", "shape": [1], "data": [1]},
                {"name": "b", "datatype": "NOPE", "shape": [1], "data": [1]},
                {"name": "a", "datatype": "FP32", "shape": [1], "data": [1]},
            ]
        }
    ).encode()
    with pytest.raises(InvalidSpec) as info:
        decode_request(body)
    assert [d["field"] for d in info.value.details] == ["inputs[1] 'b'", "inputs[2] 'a'"]


def test_binary_size_mismatch_and_trailing_bytes() -> None:
    good = encode_request({"x": np.arange(4, dtype=np.float32)}, binary=True)
    assert good.header_length is not None
    with pytest.raises(InvalidSpec, match="bytes after the last tensor"):
        decode_request(good.body + b"\0", good.header_length)
    header = good.body[: good.header_length].replace(b'"shape":[4]', b'"shape":[3]')
    with pytest.raises(InvalidSpec) as info:
        decode_request(header + good.body[good.header_length :], len(header))
    assert "does not fit shape [3] of FP32 (12 bytes expected)" in str(info.value)
    with pytest.raises(InvalidSpec, match="Inference-Header-Content-Length"):
        decode_request(good.body, len(good.body) + 1)


def test_truncated_bytes_element() -> None:
    head = b'{"inputs":[{"name":"s","datatype":"BYTES","shape":[1],'
    head += b'"parameters":{"binary_data_size":6}}]}'
    with pytest.raises(InvalidSpec, match="BYTES element 0 runs past"):
        decode_request(head + b"\x05\0\0\0ab", len(head))


def test_malformed_json_and_missing_fields() -> None:
    with pytest.raises(InvalidSpec, match="malformed inference request"):
        decode_request(b"{not json")
    with pytest.raises(InvalidSpec, match="missing required field `inputs`"):
        decode_request(b"{}")
    with pytest.raises(InvalidSpec, match=r"Expected `int` >= 0"):
        decode_request(bad({"name": "x", "datatype": "FP32", "shape": [-1], "data": [1]}))


def test_unknown_requested_output_and_non_utf8_json() -> None:
    response = InferResponse("m", {"y": np.array([b"\xff"], dtype=object)})
    with pytest.raises(InvalidSpec, match="requested outputs not produced: nope"):
        encode_response(response, [RequestedOutput("nope")])
    with pytest.raises(InvalidSpec, match="not UTF-8"):
        encode_response(response)
    assert encode_response(response, binary_default=True).header_length is not None


def test_numpy_text_arrays_are_bytes() -> None:
    assert v2_datatype(np.array(["a"]).dtype) == "BYTES"
    with pytest.raises(InvalidSpec, match="complex"):
        v2_datatype(np.dtype(np.complex64))
