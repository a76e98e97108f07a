"""One broken endpoint in ``modelplane up`` stalls no other, and a restart never answers
404 for an endpoint it was told to serve (issue 10, items 1 and 2)."""

from __future__ import annotations

import json
import signal
from pathlib import Path

import httpx
import numpy as np
import pytest
from tests.cli import story_models
from tests.kit import cli, home_env, running_up, trust_a_signing_key, wait_for
from tests.kit.fraud import ENDPOINT_TEMPLATE

from modelplane.registry.build import package

pd = pytest.importorskip("pandas")
pytestmark = pytest.mark.timeout(240)

ROW = {"instances": [{"a": 1.0, "b": 0.0}]}


def predict(url: str, name: str) -> httpx.Response | None:
    try:
        return httpx.post(f"{url}/v1/endpoints/{name}:predict", json=ROW, timeout=10)
    except httpx.TransportError:
        return None


def answered_by(url: str, name: str) -> str | None:
    response = predict(url, name)
    if response is None or response.status_code != 200:
        return None
    return response.headers["modelplane-model-version"]


def apply(env: dict[str, str], tmp_path: Path, name: str, team: str, model: str) -> None:
    path = tmp_path / f"{name}.yaml"
    path.write_text(ENDPOINT_TEMPLATE.format(name=name, team=team, model=model))
    cli(env, "apply", "-f", str(path))


def conditions(env: dict[str, str], name: str) -> dict[str, dict[str, str]]:
    [resource] = json.loads(cli(env, "get", "endpoint", name, "--json"))
    return {c["type"]: c for c in (resource["status"] or {}).get("conditions", [])}


def test_a_broken_endpoint_blocks_no_change_and_a_restart_never_answers_404(
    tmp_path: Path,
) -> None:
    env = home_env(tmp_path / "home")
    frame = pd.DataFrame(np.random.default_rng(2).normal(size=(30, 2)), columns=["a", "b"])
    key = trust_a_signing_key(env, tmp_path)
    models = (("fraud", story_models.Threshold()), ("fraud", story_models.Healthy()),
              ("broken", story_models.BrokenInWorker()))  # fmt: skip
    for index, (name, model) in enumerate(models):
        built = package(model, name=name, output_dir=tmp_path / f"pkg{index}",
                        runtime="python", sample_input=frame.head())  # fmt: skip
        cli(env, "push", str(built.path), "--sign", key)
    with running_up(env) as up:
        apply(env, tmp_path, "broken-score", "ads", "broken:1")
        apply(env, tmp_path, "fraud-score", "risk", "fraud:1")
        wait_for(lambda: answered_by(up.url, "fraud-score") == "fraud:1", 60, "fraud:1 serving")

        # the broken endpoint says why, where people look, and asks callers to retry
        def start_failed() -> bool:
            ready = conditions(env, "broken-score").get("Ready", {})
            return ready.get("reason") == "StartFailed"

        wait_for(start_failed, 60, "broken-score to show StartFailed")
        ready = conditions(env, "broken-score")["Ready"]
        assert "cannot load on a serving worker" in ready["message"]
        response = predict(up.url, "broken-score")
        assert response is not None
        assert response.status_code == 503, response.text
        assert "retry-after" in response.headers

        # another team's change goes through while the broken endpoint keeps failing
        apply(env, tmp_path, "fraud-score", "risk", "fraud:2")
        wait_for(lambda: answered_by(up.url, "fraud-score") == "fraud:2", 30, "fraud:2 serving")
        wait_for(lambda: conditions(env, "fraud-score")["Synced"]["status"] == "True", 10,
                 "fraud-score synced")  # fmt: skip
        up.stop(signal.SIGKILL)

    # after a restart, fraud-score answers 503 (retry) or 200, never 404, and readiness
    # comes only once what the store holds has started or failed
    with running_up(env) as up:
        seen: list[int] = []

        def serving_after_restart() -> bool:
            response = predict(up.url, "fraud-score")
            if response is not None:
                seen.append(response.status_code)
                if response.status_code == 503:
                    assert "retry-after" in response.headers
            return response is not None and response.status_code == 200

        wait_for(serving_after_restart, 60, "fraud-score after the restart", every_s=0.02)
        assert 404 not in seen, seen
        assert set(seen) <= {200, 503}, seen
        gateway_ready = httpx.get(f"{up.url}/v2/health/ready", timeout=5)
        assert gateway_ready.status_code == 200
        model_ready = httpx.get(f"{up.url}/v2/models/broken-score/ready", timeout=5)
        assert model_ready.status_code == 503
