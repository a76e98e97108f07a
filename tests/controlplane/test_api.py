"""The control-plane API over real HTTP on loopback."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import httpx
import numpy as np
import pytest
from sklearn.linear_model import LogisticRegression
from tests.kit import serving_app

from modelplane.controlplane.api import create_api
from modelplane.registry.build import package
from modelplane.registry.service import open_registry

pd = pytest.importorskip("pandas")


@pytest.fixture
def api_url(tmp_path: Path) -> Iterator[str]:
    registry = open_registry(
        f"sqlite:///{tmp_path}/state.db", str(tmp_path / "art"), actor="system"
    )
    frame = pd.DataFrame(np.random.default_rng(3).normal(size=(30, 2)), columns=["a", "b"])
    model = LogisticRegression().fit(frame, (frame["a"] > 0).astype(int))
    registry.push(
        package(model, name="fraud", output_dir=tmp_path / "pkg", sample_input=frame.head()).path
    )
    # Without an authenticator every caller is the local operator, named here.
    app = create_api(registry, actor="alice")
    with serving_app(app) as url:
        yield url
    registry.close()


ENDPOINT = {
    "kind": "Endpoint",
    "name": "fraud-score",
    "team": "risk",
    "contract": {
        "name": "fraud-score",
        "inputs": [{"name": "a", "dtype": "float64"}, {"name": "b", "dtype": "float64"}],
    },
    "routes": [{"model": "fraud:1"}],
}


def test_apply_read_delete_and_audit(api_url: str) -> None:
    with httpx.Client(base_url=api_url, timeout=10) as http:
        assert http.get("/healthz").json()["status"] == "ok"
        applied = http.post("/v1/apply", json={"documents": [ENDPOINT], "reason": "launch"})
        assert applied.status_code == 200, applied.text
        assert applied.json()[0]["outcome"] == "created"
        got = http.get("/v1/resources/Endpoint/fraud-score").json()
        assert got["spec"]["routes"] == [{"model": "fraud:1", "weight": 100.0}]
        assert http.get("/v1/models/fraud/versions").json()[0]["ref"] == "fraud:1"
        assert http.delete("/v1/resources/Endpoint/fraud-score").status_code == 200
        events = http.get("/v1/audit").json()
        assert [e["action"] for e in events[:2]] == ["endpoint.delete", "endpoint.apply"]
        assert events[0]["actor"] == "alice"
        assert http.get("/openapi.json").status_code == 200


def test_errors_have_codes_and_name_the_field(api_url: str) -> None:
    with httpx.Client(base_url=api_url, timeout=10) as http:
        missing = http.get("/v1/resources/Endpoint/nope")
        assert missing.status_code == 404
        assert missing.json()["error"]["code"] == "not_found"
        bad = {**ENDPOINT, "routes": [{"model": "fraud:7"}]}
        response = http.post("/v1/apply", json={"documents": [bad]})
        assert response.status_code == 404
        assert response.json()["error"]["details"][0]["field"] == "routes[0].model"
        invalid = http.post("/v1/apply", json={"documents": [{**ENDPOINT, "team": "Bad Team"}]})
        assert invalid.status_code == 400
        assert invalid.json()["error"]["details"][0]["field"] == "team"
