"""``modelplane up`` as a user runs it: a real process, apply, predict, SIGTERM."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest
from sklearn.linear_model import LogisticRegression
from tests.kit import CLI, cli, free_port, wait_for
from tests.kit.fraud import FRAUD_ENDPOINT

from modelplane.registry.build import package

pd = pytest.importorskip("pandas")
pytestmark = pytest.mark.timeout(180)


def test_up_apply_predict_and_drain(tmp_path: Path) -> None:
    env = {**os.environ, "MODELPLANE_HOME": str(tmp_path / "home")}
    frame = pd.DataFrame(np.random.default_rng(2).normal(size=(30, 2)), columns=["a", "b"])
    model = LogisticRegression().fit(frame, (frame["a"] > 0).astype(int))
    built = package(model, name="fraud", output_dir=tmp_path / "pkg", sample_input=frame.head())
    cli(env, "push", str(built.path), "--alias", "champion")
    (tmp_path / "endpoint.yaml").write_text(FRAUD_ENDPOINT)
    port, api_port = free_port(), free_port()
    server = subprocess.Popen(
        [CLI, "up", "--port", str(port), "--api-port", str(api_port)],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        cli(env, "apply", "-f", str(tmp_path / "endpoint.yaml"))
        body = {"instances": [{"a": 1.5, "b": -0.5}]}
        url = f"http://127.0.0.1:{port}/v1/endpoints/fraud-score:predict"
        deadline, response = time.monotonic() + 90, None
        while time.monotonic() < deadline:
            try:
                response = httpx.post(url, json=body, timeout=5)
                if response.status_code == 200:
                    break
            except httpx.TransportError:
                pass
            time.sleep(0.2)
        assert response is not None
        assert response.status_code == 200, response.text
        assert response.headers["modelplane-model-version"] == "fraud:1"
        assert response.json()["predictions"] == [1]
        health = httpx.get(f"http://127.0.0.1:{api_port}/healthz", timeout=5)
        assert health.json()["status"] == "ok"

        def ready_condition() -> dict[str, Any] | None:
            [resource] = json.loads(cli(env, "get", "endpoints", "--json"))
            status = resource["status"] or {}
            found = [c for c in status.get("conditions", []) if c["type"] == "Ready"]
            return status if found and found[0]["status"] == "True" else None

        # a controller pass writes the Ready condition
        status = wait_for(ready_condition, 30, "the Ready condition")
        assert status["serving"] == {"fraud@champion": "fraud:1"}
    finally:
        server.send_signal(signal.SIGTERM)
        output, _ = server.communicate(timeout=60)
    assert server.returncode == 0, output
    assert "stopped" in output
    # The SLO recorder stores its last interval on the way out: the budget outlives the run.
    [status] = json.loads(cli(env, "status", "--json"))["endpoints"]
    availability = status["slo_budget"]["availability"]
    assert availability["total"] >= 1
    assert availability["good"] == availability["total"]
    assert status["slo_budget"]["latency"]["threshold_ms"] == 100.0


def test_up_on_port_zero_announces_the_ports_it_got(tmp_path: Path) -> None:
    env = {**os.environ, "MODELPLANE_HOME": str(tmp_path / "home")}
    process = subprocess.Popen(
        [CLI, "up", "--port", "0", "--api-port", "0"],
        env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )  # fmt: skip
    try:
        assert process.stdout is not None
        urls: dict[str, str] = {}
        deadline = time.monotonic() + 60
        while len(urls) < 2 and time.monotonic() < deadline:
            line = process.stdout.readline()
            if not line:
                break
            what, _, rest = line.partition(" ")
            if what in ("gateway", "control"):
                urls[what] = rest.split()[0]
        assert set(urls) == {"gateway", "control"}, urls
        assert not any(url.endswith(":0") for url in urls.values()), urls
        assert httpx.get(f"{urls['gateway']}/v2/health/live", timeout=10).status_code == 200
        assert httpx.get(f"{urls['control']}/healthz", timeout=10).status_code == 200
    finally:
        process.send_signal(signal.SIGTERM)
        process.communicate(timeout=60)
