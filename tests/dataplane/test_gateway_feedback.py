"""``POST /v1/endpoints/{e}:feedback`` over real HTTP on loopback: outcomes of earlier
answers are stored and join what the model answered; bad feedback names the field and
stores nothing; a token needs ``predict`` on the endpoint, as a prediction does."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy import Engine, func, select
from tests.dataplane import gateway_kit as kit
from tests.kit import wait_for

from modelplane.dataplane.openapi import openapi_document
from modelplane.dataplane.server import ServerThread
from modelplane.observe.outcome_report import OutcomeReport, outcomes_by_version
from modelplane.observe.outcomes import OutcomeStore
from modelplane.observe.predlog import PredictionLog, PredictionLogConfig
from modelplane.security.auth import CachedAuthenticator, PredictGate
from modelplane.security.tokens import TokenStore
from modelplane.store import audit
from modelplane.store.db import open_engine, read_session
from modelplane.store.schema import OutcomeRow

pytestmark = pytest.mark.timeout(120)


@pytest.fixture
def engine(sqlite_url: str) -> Iterator[Engine]:
    engine = open_engine(sqlite_url)
    audit.bind_key(engine, audit.AuditKey(b"k" * 32))
    yield engine
    engine.dispose()


@pytest.fixture(scope="module")
def shared(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Engine, str]]:
    """One gateway for the tests that need no token: starting one costs seconds."""
    engine = open_engine(f"sqlite:///{tmp_path_factory.mktemp('feedback')}/state.db")
    audit.bind_key(engine, audit.AuditKey(b"k" * 32))
    with serve(engine) as server:
        yield engine, server.url
    engine.dispose()


def serve(engine: Engine, *, auth: bool = False) -> ServerThread:
    server = ServerThread([kit.EndpointBuilder("lr", "sklearn").build()],
                          config=kit.gateway_config())  # fmt: skip
    server.gateway.sink = PredictionLog(engine, PredictionLogConfig(flush_interval_s=0.05))
    server.gateway.feedback = OutcomeStore(engine)
    if auth:
        server.gateway.auth = PredictGate(CachedAuthenticator(TokenStore(engine).verify))
    return server


def predict(client: httpx.Client, request_id: str, rows: int, **headers: str) -> Any:
    x, _ = kit.lr_data()
    instances = [{"input": row.tolist()} for row in x[:rows]]
    headers = {"x-request-id": request_id, **headers}
    return client.post("/v1/endpoints/lr:predict", json={"instances": instances}, headers=headers)


def _answered(engine: Engine, rows: int) -> OutcomeReport | None:
    report = outcomes_by_version(engine, "lr")
    done = report.versions and report.versions[0].answered_rows >= rows
    return report if done else None


def stored(engine: Engine) -> int:
    with read_session(engine) as session:
        return int(session.scalar(select(func.count()).select_from(OutcomeRow)) or 0)


def test_feedback_one_and_a_batch_join_what_was_answered(shared: tuple[Engine, str]) -> None:
    engine, url = shared
    _, y = kit.lr_data()
    with httpx.Client(base_url=url, timeout=10.0) as client:
        assert predict(client, "req-1", 1).status_code == 200
        assert predict(client, "req-2", 3).status_code == 200
        one = client.post("/v1/endpoints/lr:feedback",
                          json={"request_id": "req-1", "label": int(y[0])})  # fmt: skip
        assert one.status_code == 200, one.text
        call_id = one.headers["modelplane-request-id"]
        # the call's own id is named as such: a bare "request_id" read as the one fed back
        assert one.json() == {"stored": 1, "outcomes": 1, "labels": 1, "values": 0,
                              "feedback_request_id": call_id}  # fmt: skip
        assert call_id != "req-1"
        batch = [{"request_id": "req-2", "row": i, "label": int(y[i]),
                  "values": {"revenue": 10.0 * i}} for i in range(3)]  # fmt: skip
        many = client.post("/v1/endpoints/lr:feedback", json={"outcomes": batch})
        assert {k: many.json()[k] for k in ("stored", "outcomes", "labels", "values")} == {
            "stored": 6, "outcomes": 3, "labels": 3, "values": 3}  # fmt: skip
    report = wait_for(lambda: _answered(engine, 4), 30, "the answers to be written")
    [version] = report.versions
    assert (version.version, version.answered_rows, version.labelled_rows) == ("lr:1", 4, 4)
    assert version.metrics["accuracy"] == 1.0  # the model fits this separable data
    assert version.business["revenue"]["sum"] == 30.0
    assert report.score_output == "probabilities"


def test_bad_feedback_names_the_field_and_stores_nothing(shared: tuple[Engine, str]) -> None:
    engine, url = shared
    before = stored(engine)
    with httpx.Client(base_url=url, timeout=10.0) as client:
        bad = {"outcomes": [{"request_id": "a", "label": 1}, {"request_id": "b", "label": None}]}
        response = client.post("/v1/endpoints/lr:feedback", json=bad)
        assert response.status_code == 400
        error = response.json()["error"]
        assert error["code"] == "invalid_spec"
        assert [d["field"] for d in error["details"]] == ["outcomes[1].label"]
        garbled = client.post("/v1/endpoints/lr:feedback", content=b"{not json")
        assert garbled.json()["error"]["code"] == "malformed_request"
        assert client.get("/v1/endpoints/lr:feedback").status_code == 405
        unknown = client.post("/v1/endpoints/nope:feedback", json={"request_id": "a", "label": 1})
        assert unknown.status_code == 404
        assert unknown.json()["error"]["message"] == "unknown endpoint 'nope'"
        assert [d["field"] for d in unknown.json()["error"]["details"]] == ["endpoint"]
    assert stored(engine) == before


@pytest.mark.parametrize(
    ("body", "fields"),
    [
        ({"label": 1}, ["request_id"]),
        ({"request_id": "a", "values": {"chargeback_usd": "lots"}}, ["values.chargeback_usd"]),
        ({"request_id": "a", "label": "yes"}, ["label"]),
        ({"outcomes": [{"request_id": "a", "label": "yes"}, {"request_id": "b", "label": 1},
                       {"label": 0}]}, ["outcomes[0].label", "outcomes[2].request_id"]),
    ],
)  # fmt: skip
def test_every_bad_field_is_named_over_http(
    shared: tuple[Engine, str], body: dict[str, Any], fields: list[str]
) -> None:
    engine, url = shared
    before = stored(engine)
    response = httpx.post(f"{url}/v1/endpoints/lr:feedback", json=body, timeout=10.0)
    assert response.status_code == 400, response.text
    error = response.json()["error"]
    assert [d["field"] for d in error["details"]] == fields
    assert "Expected `" not in response.text  # the decoder's words, not the caller's
    if body.get("label") == "yes":
        assert error["details"][0]["problem"] == (
            "label must be a number (0/1 for a classifier) or null"
        )
    assert stored(engine) == before


def test_the_openapi_document_names_the_feedback_calls_own_id(shared: tuple[Engine, str]) -> None:
    _, url = shared
    document = httpx.get(f"{url}/openapi.json", timeout=10.0).json()
    schema = document["components"]["schemas"]["Stored"]
    assert "request_id" not in schema["properties"]
    assert "not an id fed back" in schema["properties"]["feedback_request_id"]["description"]
    assert set(schema["required"]) == {"stored", "outcomes", "labels", "values",
                                       "feedback_request_id"}  # fmt: skip


def test_feedback_needs_a_predict_token_for_the_endpoint(engine: Engine) -> None:
    tokens = TokenStore(engine)
    caller = tokens.create(subject="caller", team="test", scopes=["predict"], actor="t").token
    reader = tokens.create(subject="reader", team="test", scopes=["read"], actor="t").token
    label = {"request_id": "req-1", "label": 1}
    with serve(engine, auth=True) as server, httpx.Client(base_url=server.url) as client:
        assert client.post("/v1/endpoints/lr:feedback", json=label).status_code == 401
        forbidden = client.post("/v1/endpoints/lr:feedback", json=label,
                                headers={"authorization": f"Bearer {reader}"})  # fmt: skip
        assert forbidden.status_code == 403
        assert stored(engine) == 0
        allowed = client.post("/v1/endpoints/lr:feedback", json=label,
                              headers={"authorization": f"Bearer {caller}"})  # fmt: skip
        assert allowed.status_code == 200, allowed.text
    assert stored(engine) == 1


def test_the_docs_show_the_answer_the_gateway_gives() -> None:
    docs = (Path(__file__).parents[2] / "docs" / "outcomes.md").read_text()
    shown = json.loads(docs.split("The answer says what was stored", 1)[1]
                       .split("```json\n", 1)[1].split("```", 1)[0])  # fmt: skip
    schema = openapi_document("t", "1")["components"]["schemas"]["Stored"]
    assert set(shown) == set(schema["properties"]) == set(schema["required"])
    assert "unknown endpoint 'nope'" in docs
