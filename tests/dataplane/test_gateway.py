"""The gateway over real HTTP on loopback: routes, records, contracts, headers, metrics."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import httpx
import numpy as np
import pytest
from tests.dataplane import gateway_kit as kit

from modelplane.dataplane.codec_v2 import decode_response, encode_request
from modelplane.dataplane.server import ServerThread

pytestmark = pytest.mark.timeout(120)

ECHO_ROW = {"x": [1.0, 2.0, 3.0, 4.0], "n": 5, "s": "hello", "b": True}


@pytest.fixture(scope="module")
def server() -> Iterator[ServerThread]:
    endpoints = [
        kit.EndpointBuilder("echo", "echo", contract=kit.echo_contract()).build(),
        kit.EndpointBuilder("lr", "sklearn").build(),
    ]
    config = kit.gateway_config(max_body_bytes=1 << 20)
    with ServerThread(endpoints, config=config) as running:
        yield running


@pytest.fixture
def client(server: ServerThread) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=server.url, timeout=10.0) as http:
        yield http


def infer_body(inputs: dict[str, Any], **kwargs: Any) -> tuple[bytes, dict[str, str]]:
    encoded = encode_request(inputs, **kwargs)
    headers = {"content-type": encoded.content_type}
    if encoded.header_length is not None:
        headers["inference-header-content-length"] = str(encoded.header_length)
    return encoded.body, headers


def test_health_and_server_metadata(client: httpx.Client) -> None:
    assert client.get("/v2/health/live").status_code == 200
    assert client.get("/v2/health/ready").status_code == 200
    meta = client.get("/v2").json()
    assert meta["name"] == "modelplane"
    assert "binary_tensor_data" in meta["extensions"]


def test_model_metadata_comes_from_the_contract(client: httpx.Client) -> None:
    meta = client.get("/v2/models/echo").json()
    assert meta["versions"] == ["echo:1"]
    assert {i["name"]: (i["datatype"], i["shape"]) for i in meta["inputs"]} == {
        "x": ("FP32", [-1, 4]),
        "n": ("INT64", [-1]),
        "s": ("BYTES", [-1]),
        "b": ("BOOL", [-1]),
    }
    assert client.get("/v2/models/echo/versions/1").json() == meta
    assert client.get("/v2/models/echo/ready").status_code == 200
    assert client.get("/v2/models/echo/versions/echo:1/ready").status_code == 200
    missing = client.get("/v2/models/echo/versions/9")
    assert missing.status_code == 404


def test_unknown_model_and_route_answer_v2_errors(client: httpx.Client) -> None:
    response = client.post("/v2/models/nope/infer", content=b"{}")
    assert response.status_code == 404
    assert "nope" in response.json()["error"]
    assert client.get("/v2/models/echo/bogus").status_code == 404
    assert client.get("/nothing").status_code == 404
    assert client.get("/v2/models/echo/infer").status_code == 405


def test_v2_infer_json_and_binary(client: httpx.Client) -> None:
    inputs = kit.echo_inputs(3)
    for binary in (False, True):
        body, headers = infer_body(inputs, binary=binary, parameters={"binary_data_output": binary})
        response = client.post("/v2/models/echo/infer", content=body, headers=headers)
        assert response.status_code == 200, response.text
        length = response.headers.get("inference-header-content-length")
        decoded = decode_response(response.content, int(length) if length else None)
        assert decoded.model_version == "echo:1"
        np.testing.assert_array_equal(decoded.outputs["y"], inputs["x"] * 2)
        np.testing.assert_array_equal(decoded.outputs["n1"], inputs["n"] + 1)
        assert response.headers["modelplane-model-version"] == "echo:1"


def test_records_predict(client: httpx.Client) -> None:
    response = client.post("/v1/endpoints/echo:predict", json={"instances": [ECHO_ROW, ECHO_ROW]})
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["model_version"] == "echo:1"
    assert body["request_id"] == response.headers["modelplane-request-id"]
    assert body["predictions"][0] == {
        "y": [2.0, 4.0, 6.0, 8.0], "n1": 6, "s_up": "HELLO", "b_not": False,
    }  # fmt: skip
    assert len(body["predictions"]) == 2


def test_records_predict_with_sklearn(client: httpx.Client) -> None:
    x, _ = kit.lr_data()
    rows = [{"input": row.tolist()} for row in x[:5]]
    response = client.post("/v1/endpoints/lr:predict", json={"instances": rows})
    assert response.status_code == 200, response.text
    predictions = response.json()["predictions"]
    assert [p["label"] for p in predictions] == [int(r[0] + r[1] > 0) for r in x[:5]]


def test_contract_violation_names_every_field(client: httpx.Client) -> None:
    bad = dict(ECHO_ROW, n=-5, s="nope")
    response = client.post("/v1/endpoints/echo:predict", json={"instances": [bad]})
    assert response.status_code == 400
    error = response.json()["error"]
    assert error["code"] == "contract_violation"
    assert {d["field"] for d in error["details"]} == {"n", "s"}
    assert "n:" in error["message"]
    assert "s:" in error["message"]


def test_mistyped_record_is_a_contract_violation(client: httpx.Client) -> None:
    response = client.post(
        "/v1/endpoints/echo:predict", json={"instances": [dict(ECHO_ROW, n="x")]}
    )
    assert response.status_code == 400
    assert response.json()["error"]["code"] == "contract_violation"


def test_v2_wrong_shape_names_the_tensor(client: httpx.Client) -> None:
    inputs = kit.echo_inputs(2)
    inputs["x"] = inputs["x"][:, :3].copy()
    body, headers = infer_body(inputs)
    response = client.post("/v2/models/echo/infer", content=body, headers=headers)
    assert response.status_code == 400
    message = response.json()["error"]
    assert "x: expected shape [-1, 4]" in message


def test_request_ids(client: httpx.Client) -> None:
    kept = client.post(
        "/v1/endpoints/echo:predict",
        json={"instances": [ECHO_ROW]},
        headers={"x-request-id": "abc-123"},
    )
    assert kept.headers["modelplane-request-id"] == "abc-123"
    assert kept.json()["request_id"] == "abc-123"
    first = client.get("/v2/health/live").headers["modelplane-request-id"]
    second = client.get("/v2/health/live").headers["modelplane-request-id"]
    assert first
    assert first != second
    error = client.post("/v2/models/nope/infer", content=b"{}", headers={"x-request-id": "e-1"})
    assert error.headers["modelplane-request-id"] == "e-1"


def test_body_over_the_limit_is_413(client: httpx.Client) -> None:
    response = client.post("/v2/models/echo/infer", content=b"x" * (2 << 20))
    assert response.status_code == 413


def test_malformed_body_is_400(client: httpx.Client) -> None:
    response = client.post("/v2/models/echo/infer", content=b"{not json")
    assert response.status_code == 400
    assert "error" in response.json()
    response = client.post(
        "/v2/models/echo/infer", content=b"{}", headers={"modelplane-timeout-ms": "soon"}
    )
    assert response.status_code == 400


def test_deadline_from_header_is_504(client: httpx.Client) -> None:
    body, headers = infer_body(kit.echo_inputs(1, first=kit.fake_models.VERY_SLOW))
    headers["modelplane-timeout-ms"] = "150"
    response = client.post("/v2/models/echo/infer", content=body, headers=headers)
    assert response.status_code == 504
    # the v2 timeout parameter lowers it the same way
    body, headers = infer_body(
        kit.echo_inputs(1, first=kit.fake_models.VERY_SLOW), parameters={"timeout": 150}
    )
    response = client.post("/v2/models/echo/infer", content=body, headers=headers)
    assert response.status_code == 504


def test_metrics_count_requests(client: httpx.Client) -> None:
    for _ in range(3):
        client.post("/v1/endpoints/echo:predict", json={"instances": [ECHO_ROW]})
    client.post("/v1/endpoints/echo:predict", json={"instances": [dict(ECHO_ROW, n=-1)]})
    text = client.get("/metrics").text
    ok = _sample(text, "modelplane_gateway_requests_total", 'code="200",endpoint="echo"')
    bad = _sample(
        text, "modelplane_gateway_errors_total", 'code="contract_violation",endpoint="echo"'
    )
    assert ok >= 3
    assert bad >= 1
    assert "modelplane_gateway_request_duration_seconds_bucket" in text
    assert "modelplane_gateway_batch_rows_count" in text
    assert "modelplane_gateway_queue_rows" in text
    assert "modelplane_gateway_worker_restarts_total" in text


def _sample(text: str, metric: str, labels: str) -> float:
    total = 0.0
    for line in text.splitlines():
        if line.startswith(metric + "{") and labels in line:
            total += float(line.rsplit(" ", 1)[1])
    return total


def test_endpoint_list_and_openapi(client: httpx.Client) -> None:
    listing = client.get("/v1/endpoints").json()["endpoints"]
    assert {e["name"]: e["versions"] for e in listing} == {"echo": ["echo:1"], "lr": ["lr:1"]}
    document = client.get("/openapi.json").json()
    assert document["openapi"].startswith("3.1")
    assert "/v2/models/{name}/infer" in document["paths"]
    assert "/v1/endpoints/{name}:predict" in document["paths"]


def test_a_request_without_rows_is_400(client: httpx.Client) -> None:
    body = b'{"inputs":[{"name":"input","datatype":"FP32","shape":[0,16],"data":[]}]}'
    response = client.post("/v2/models/lr/infer", content=body)
    assert response.status_code == 400
    assert "at least one row" in response.json()["error"]


def test_a_body_that_is_not_json_is_malformed_not_a_contract_violation(
    client: httpx.Client,
) -> None:
    for path in ("/v1/endpoints/echo:predict", "/v2/models/echo/infer"):
        response = client.post(path, content=b'{"instances": [')
        assert response.status_code == 400
        error = response.json()["error"]
        code = error["code"] if isinstance(error, dict) else None
        message = error["message"] if isinstance(error, dict) else error
        assert code in ("malformed_request", None), path
        assert "not valid JSON" in message, path


def test_v2_datatype_other_than_the_contracts_is_refused(client: httpx.Client) -> None:
    inputs = kit.echo_inputs(1)
    inputs["n"] = inputs["n"].astype(np.float64)  # the contract takes INT64
    body, headers = infer_body(inputs)
    response = client.post("/v2/models/echo/infer", content=body, headers=headers)
    assert response.status_code == 400
    assert "inputs.n.datatype: FP64 sent, the contract takes INT64" in response.json()["error"]


def test_v2_tensor_problems_are_in_the_message(client: httpx.Client) -> None:
    body = b'{"inputs": [{"name": "x", "datatype": "FP32", "shape": [1, 4], "data": [1, 2, 3]}]}'
    response = client.post("/v2/models/echo/infer", content=body)
    assert response.status_code == 400
    message = response.json()["error"]
    assert "inputs[0] 'x': " in message
    assert "3" in message.split("inputs[0] 'x': ", 1)[1]
