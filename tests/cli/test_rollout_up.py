"""Rollouts through ``modelplane up`` under steady load on loopback: a rollback puts all
traffic back on stable at once, then a healthy v2 is promoted; no request fails."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
from pathlib import Path
from typing import Any

import httpx
import pytest
from tests.kit import CLI, cli, free_port, wait_for
from tests.kit.fraud import FAST_ROLLOUT, FRAUD_ENDPOINT, FraudLoad, push_fraud_versions
from tests.kit.fraud import rollout_phase as phase

pd = pytest.importorskip("pandas")
pytestmark = pytest.mark.timeout(240)

SLOW = """
kind: Rollout
steps: [{weight: 50, hold_s: 600}]
max_duration_s: 3600
"""


def shut_down(load: FraudLoad, server: subprocess.Popen[str]) -> str:
    """Stop the load, then SIGTERM ``modelplane up`` (it drains); what it printed."""
    load.stop.set()
    load.join(timeout=30)
    server.send_signal(signal.SIGTERM)
    output, _ = server.communicate(timeout=60)
    return output


def serves_only(env: dict[str, str], version: str) -> bool:
    """The endpoint's status says the gateway serves its latest generation, with all the
    weight on ``version``."""
    [resource] = json.loads(cli(env, "get", "endpoint", "fraud-score", "--json"))
    status = resource["status"] or {}
    synced: dict[str, Any] = next(
        (c for c in status.get("conditions", []) if c["type"] == "Synced"), {}
    )
    live = {r["version"] for r in status.get("routes", []) if r["weight"] > 0}
    return synced.get("status") == "True" and live == {version}


def test_rollback_then_promote_under_load(tmp_path: Path) -> None:
    env = {**os.environ, "MODELPLANE_HOME": str(tmp_path / "home")}
    push_fraud_versions(env, tmp_path, rows=30)
    for name, text in (("endpoint", FRAUD_ENDPOINT), ("slow", SLOW), ("fast", FAST_ROLLOUT)):
        (tmp_path / f"{name}.yaml").write_text(text)
    port, api_port = free_port(), free_port()
    server = subprocess.Popen(
        [CLI, "up", "--port", str(port), "--api-port", str(api_port)],
        env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )  # fmt: skip
    load = FraudLoad(f"http://127.0.0.1:{port}/v1/endpoints/fraud-score:predict")
    try:
        cli(env, "apply", "-f", str(tmp_path / "endpoint.yaml"))
        wait_for(lambda: serves(port), 90, "the endpoint")
        load.start()
        cli(env, "rollout", "fraud-score", "--to", "fraud:2", "-f", str(tmp_path / "slow.yaml"))
        wait_for(lambda: any(a.version == "fraud:2" for a in load.answers), 60, "canary traffic")
        [shown] = json.loads(cli(env, "status", "--json"))["endpoints"]
        rollout = shown["rollout"]
        assert (rollout["phase"], rollout["step"], rollout["steps"]) == ("canary", 1, 1)
        assert (rollout["to"], rollout["canary_weight"], rollout["in_progress"]) == (
            "fraud:2", 50.0, True
        )  # fmt: skip
        assert "canary 50% -> fraud:2" in cli(env, "status")
        cli(env, "rollback", "fraud-score")
        wait_for(lambda: phase(env) == "rolled_back", 30, "the rollback")
        # once status says the gateway serves only stable, no request sent after reaches
        # the canary (how fast that is, bench/rollout.py measures)
        wait_for(lambda: serves_only(env, "fraud:1"), 30, "the gateway to serve only stable")
        served_at = time.monotonic()
        wait_for(lambda: load.answers[-1].sent > served_at, 30, "traffic after the rollback")
        assert {a.version for a in load.answers if a.sent > served_at} == {"fraud:1"}
        cli(env, "rollout", "fraud-score", "--to", "fraud:2", "-f", str(tmp_path / "fast.yaml"))
        wait_for(lambda: phase(env) == "promoted", 90, "the promotion")
        settled = time.monotonic() + 1.5
        wait_for(lambda: load.answers[-1].sent > settled, 30, "traffic after promotion")
    finally:
        output = shut_down(load, server)
    assert server.returncode == 0, output
    assert {a.status for a in load.answers} == {200}, output
    after = {a.version for a in load.answers if a.sent > settled}
    assert after == {"fraud:2"}
    events = json.loads(cli(env, "audit", "log", "--json", "--limit", "500"))
    actions = {e["action"] for e in events}
    assert {"rollout.set_weights", "rollout.rollback", "rollout.promote", "alias.set"} <= actions


def serves(port: int) -> bool:
    try:
        response = httpx.post(
            f"http://127.0.0.1:{port}/v1/endpoints/fraud-score:predict",
            json={"instances": [{"a": 1.0, "b": 0.0}]},
            timeout=5,
        )
    except httpx.TransportError:
        return False
    return response.status_code == 200
