"""Open Inference Protocol v2 conformance, driven by the real ``tritonclient`` (sync and aio)."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from typing import Any

import numpy as np
import pytest
from tests.dataplane import gateway_kit as kit

from modelplane.dataplane.server import ServerThread

httpclient = pytest.importorskip("tritonclient.http")
aioclient = pytest.importorskip("tritonclient.http.aio")
from tritonclient.utils import InferenceServerException  # noqa: E402

pytestmark = pytest.mark.timeout(120)


@pytest.fixture(scope="module")
def server() -> Iterator[ServerThread]:
    endpoints = [
        kit.EndpointBuilder("echo", "echo").build(),
        kit.EndpointBuilder("lronnx", "onnx").build(),
    ]
    with ServerThread(endpoints, config=kit.gateway_config()) as running:
        yield running


@pytest.fixture
def client(server: ServerThread) -> Iterator[Any]:
    triton = httpclient.InferenceServerClient(url=f"127.0.0.1:{server.port}", network_timeout=10.0)
    yield triton
    triton.close()


def echo_inputs(binary: bool, rows: int = 2) -> tuple[list[Any], dict[str, np.ndarray[Any, Any]]]:
    arrays = kit.echo_inputs(rows)
    arrays["s"] = np.array([b"hello", b"world"][:rows] * (rows // 2 or 1), dtype=object)[:rows]
    arrays["b"] = np.array([True, False] * rows, dtype=bool)[:rows]
    datatypes = {"x": "FP32", "n": "INT64", "s": "BYTES", "b": "BOOL"}
    inputs = []
    for name, array in arrays.items():
        tensor = httpclient.InferInput(name, list(array.shape), datatypes[name])
        tensor.set_data_from_numpy(array, binary_data=binary)
        inputs.append(tensor)
    return inputs, arrays


def check_echo(result: Any, arrays: dict[str, np.ndarray[Any, Any]], names: list[str]) -> None:
    expected = {
        "y": arrays["x"] * 2,
        "n1": arrays["n"] + 1,
        "s_up": np.array([v.upper() for v in arrays["s"]], dtype=object),
        "b_not": ~arrays["b"],
    }
    for name in names:
        got = result.as_numpy(name)
        assert got is not None, name
        if name == "s_up":
            got = np.array([v if isinstance(v, bytes) else v.encode() for v in got], dtype=object)
        np.testing.assert_array_equal(got, expected[name])


def test_server_live_ready_and_metadata(client: Any) -> None:
    assert client.is_server_live()
    assert client.is_server_ready()
    metadata = client.get_server_metadata()
    assert metadata["name"] == "modelplane"
    assert "binary_tensor_data" in metadata["extensions"]


def test_model_metadata_and_ready(client: Any) -> None:
    assert client.is_model_ready("lronnx")
    assert client.is_model_ready("lronnx", "1")
    assert not client.is_model_ready("nope")
    metadata = client.get_model_metadata("lronnx")
    assert metadata["inputs"] == [{"name": "input", "datatype": "FP32", "shape": [-1, 16]}]
    assert {o["name"] for o in metadata["outputs"]} == {"label", "probabilities"}
    assert client.get_model_metadata("lronnx", "1")["name"] == "lronnx"


@pytest.mark.parametrize("binary_in", [False, True])
@pytest.mark.parametrize("binary_out", [False, True])
def test_infer_fp32_int64_bytes_bool(client: Any, binary_in: bool, binary_out: bool) -> None:
    inputs, arrays = echo_inputs(binary_in)
    names = ["y", "n1", "s_up", "b_not"]
    outputs = [httpclient.InferRequestedOutput(n, binary_data=binary_out) for n in names]
    result = client.infer("echo", inputs, outputs=outputs, request_id="r-1")
    check_echo(result, arrays, names)
    response = result.get_response()
    assert response["model_name"] == "echo"
    assert response["model_version"] == "echo:1"
    assert response["id"] == "r-1"


def test_requested_outputs_only(client: Any) -> None:
    inputs, arrays = echo_inputs(True)
    outputs = [httpclient.InferRequestedOutput("n1", binary_data=False)]
    result = client.infer("echo", inputs, outputs=outputs)
    assert [o["name"] for o in result.get_response()["outputs"]] == ["n1"]
    assert result.as_numpy("y") is None
    check_echo(result, arrays, ["n1"])


def test_all_outputs_by_default(client: Any) -> None:
    inputs, arrays = echo_inputs(True)
    result = client.infer("echo", inputs)
    check_echo(result, arrays, ["y", "n1", "s_up", "b_not"])


def test_infer_onnx_model(client: Any) -> None:
    x, _ = kit.lr_data()
    tensor = httpclient.InferInput("input", [4, 16], "FP32")
    tensor.set_data_from_numpy(x[:4], binary_data=True)
    result = client.infer("lronnx", [tensor])
    np.testing.assert_array_equal(result.as_numpy("label"), (x[:4, 0] + x[:4, 1] > 0).astype(int))
    assert result.as_numpy("probabilities").shape == (4, 2)


def test_unknown_model_is_an_error(client: Any) -> None:
    inputs, _ = echo_inputs(False)
    with pytest.raises(InferenceServerException, match="nope"):
        client.infer("nope", inputs)


def test_wrong_shape_is_400_naming_the_tensor(client: Any) -> None:
    tensor = httpclient.InferInput("input", [1, 15], "FP32")
    tensor.set_data_from_numpy(np.zeros((1, 15), dtype=np.float32), binary_data=True)
    with pytest.raises(InferenceServerException) as caught:
        client.infer("lronnx", [tensor])
    assert caught.value.status() == "400"
    assert "input" in caught.value.message()
    assert "[-1, 16]" in caught.value.message()


def test_unknown_requested_output_is_an_error(client: Any) -> None:
    inputs, _ = echo_inputs(True)
    with pytest.raises(InferenceServerException, match="zzz"):
        client.infer("echo", inputs, outputs=[httpclient.InferRequestedOutput("zzz")])


def test_aio_client(server: ServerThread) -> None:
    async def scenario() -> None:
        triton = aioclient.InferenceServerClient(url=f"127.0.0.1:{server.port}")
        try:
            assert await triton.is_server_live()
            assert await triton.is_model_ready("echo")
            metadata = await triton.get_model_metadata("echo")
            assert [i["name"] for i in metadata["inputs"]] == ["x", "n", "s", "b"]
            arrays = kit.echo_inputs(3)
            inputs = []
            for name, datatype in (("x", "FP32"), ("n", "INT64"), ("s", "BYTES"), ("b", "BOOL")):
                tensor = aioclient.InferInput(name, list(arrays[name].shape), datatype)
                tensor.set_data_from_numpy(arrays[name], binary_data=name != "b")
                inputs.append(tensor)
            results = await asyncio.gather(*(triton.infer("echo", inputs) for _ in range(8)))
            for result in results:
                np.testing.assert_array_equal(result.as_numpy("y"), arrays["x"] * 2)
            with pytest.raises(InferenceServerException):
                await triton.infer("nope", inputs)
        finally:
            await triton.close()

    asyncio.run(scenario())
