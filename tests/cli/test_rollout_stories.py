"""Four rollouts of one endpoint through ``modelplane up``, under steady load on loopback:

1. a v2 that fails about 5 % of requests is rolled back by the error gate;
2. a v3 whose outputs drift is rolled back by the drift gate;
3. a v4 that disagrees with stable in shadow is rolled back and never answers a caller;
4. a healthy v5 goes through a shadow step and canary steps and is promoted.

No request fails except the flaky canary's own, and the audit log tells each story.
"""

from __future__ import annotations

import json
import os
import sqlite3
import subprocess
import time
from collections import Counter
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from tests.cli import story_models
from tests.cli.test_rollout_up import serves, shut_down
from tests.kit import CLI, cli, free_port, trust_a_signing_key, wait_for
from tests.kit.fraud import FRAUD_ENDPOINT, FraudLoad

from modelplane.registry.build import package

pd = pytest.importorskip("pandas")
pytestmark = pytest.mark.timeout(300)

CANARY = """
kind: Rollout
steps: [{weight: 50, hold_s: 4}]
gates:
  - {type: min_samples, requests: 40}
  - {type: error_rate, max_rate: 0.01}
  - {type: drift, js_max: 0.05}
"""
SHADOW_THEN_CANARY = """
kind: Rollout
strategy: shadow-then-canary
steps: [{kind: shadow, percent: 100, hold_s: 3}, {weight: 50, hold_s: 2}, {weight: 100, hold_s: 1}]
gates:
  - {type: min_samples, requests: 20, shadow_comparisons: 30}
  - {type: error_rate, max_rate: 0.01}
  - {type: shadow_disagreement, max_disagreement: 0.05}
"""
MODELS = (
    ("fraud:1", story_models.Threshold()),
    ("fraud:2", story_models.Flaky()),
    ("fraud:3", story_models.Drifted()),
    ("fraud:4", story_models.Contrarian()),
    ("fraud:5", story_models.Healthy()),
)


def query(env: dict[str, str], sql: str, *args: Any) -> list[tuple[Any, ...]]:
    """Read the state store directly: a CLI process per poll is slow on a loaded machine."""
    path = Path(env["MODELPLANE_HOME"]) / "state.db"
    with sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=10) as conn:
        return conn.execute(sql, args).fetchall()


def phase(env: dict[str, str]) -> str:
    [(status,)] = query(env, "SELECT status FROM resources WHERE kind = 'Rollout'")
    return str(json.loads(status)["state"]["phase"])


def story(env: dict[str, str], after_seq: int) -> str:
    """Every rollout event after ``after_seq``, as one text to search."""
    rows = query(env, "SELECT action, reason, after FROM audit_events WHERE seq > ? "
                      "AND subject LIKE 'Rollout/%' ORDER BY seq", after_seq)  # fmt: skip
    return json.dumps([[action, reason, json.loads(after)] for action, reason, after in rows])


def roll(env: dict[str, str], tmp_path: Path, to: str, spec: str, end: str) -> str:
    """Roll out ``to`` and wait for the rollout to reach ``end``; the story it wrote."""
    [(before,)] = query(env, "SELECT coalesce(max(seq), 0) FROM audit_events")
    (tmp_path / "rollout.yaml").write_text(spec)
    cli(env, "rollout", "fraud-score", "--to", to, "-f", str(tmp_path / "rollout.yaml"))
    wait_for(lambda: phase(env) == end, 90, f"{to} to be {end}")
    return story(env, before)


def test_four_rollout_stories_under_load(tmp_path: Path) -> None:
    env = {**os.environ, "MODELPLANE_HOME": str(tmp_path / "home")}
    frame = pd.DataFrame(np.random.default_rng(2).normal(size=(30, 2)), columns=["a", "b"])
    key = trust_a_signing_key(env, tmp_path)
    for ref, model in MODELS:
        built = package(model, name="fraud", output_dir=tmp_path / ref.replace(":", "-"),
                        runtime="python", sample_input=frame.head())  # fmt: skip
        pushed = cli(
            env,
            "push",
            str(built.path),
            "--sign",
            key,
            *(("--alias", "champion") if ref == "fraud:1" else ()),
        )
        assert ref in pushed
    (tmp_path / "endpoint.yaml").write_text(FRAUD_ENDPOINT)
    port, api_port = free_port(), free_port()
    server = subprocess.Popen(
        [CLI, "up", "--port", str(port), "--api-port", str(api_port)],
        env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )  # fmt: skip
    load = FraudLoad(f"http://127.0.0.1:{port}/v1/endpoints/fraud-score:predict")
    stories: dict[str, str] = {}
    try:
        cli(env, "apply", "-f", str(tmp_path / "endpoint.yaml"))
        wait_for(lambda: serves(port), 90, "the endpoint")
        load.start()
        stories["flaky"] = roll(env, tmp_path, "fraud:2", CANARY, "rolled_back")
        stories["drift"] = roll(env, tmp_path, "fraud:3", CANARY, "rolled_back")
        stories["shadow"] = roll(env, tmp_path, "fraud:4", SHADOW_THEN_CANARY, "rolled_back")
        stories["healthy"] = roll(env, tmp_path, "fraud:5", SHADOW_THEN_CANARY, "promoted")
        settled = time.monotonic() + 1.5
        wait_for(lambda: load.answers[-1].sent > settled, 30, "traffic after the promotion")
    finally:
        output = shut_down(load, server)
    assert server.returncode == 0, output

    answered = {a.version for a in load.answers if a.status == 200}
    assert "fraud:4" not in answered, "the disagreeing shadow answered a caller"
    assert {"fraud:1", "fraud:2", "fraud:3", "fraud:5"} <= answered
    failed = Counter((a.status, a.version) for a in load.answers if a.status != 200)
    # only the flaky canary fails requests (503 worker_failed, naming the version)
    assert set(failed) == {(503, "fraud:2")}, failed
    assert {a.version for a in load.answers if a.sent > settled} == {"fraud:5"}

    for name, gate in (("flaky", "error_rate"), ("drift", "drift"),
                       ("shadow", "shadow_disagreement")):  # fmt: skip
        assert "rollout.rollback" in stories[name]
        assert f"gates failed at step 1: {gate}:" in stories[name], stories[name]
    assert "rollout.set_weights" not in stories["shadow"]  # it never got live weight
    assert "rollout.promote" in stories["healthy"]
    assert "rollout.rollback" not in stories["healthy"]
    assert "intact" in cli(env, "audit", "verify")
