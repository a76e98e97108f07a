"""``make run`` as a newcomer sees it: examples/first_run.py to its end, on a fresh home."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from tests.kit import free_port

ROOT = Path(__file__).resolve().parents[1]
pytestmark = [pytest.mark.slow, pytest.mark.timeout(420)]


def test_first_run_serves_promotes_and_rolls_back(tmp_path: Path) -> None:
    home = tmp_path / "home"
    env = {**os.environ, "MODELPLANE_HOME": str(home)}
    args = ["--exit-after-demo", "--port", str(free_port()), "--api-port", str(free_port())]
    done = subprocess.run(
        [sys.executable, str(ROOT / "examples" / "first_run.py"), *args],
        env=env, capture_output=True, text=True, timeout=400, check=False,
    )  # fmt: skip
    output = done.stdout + done.stderr
    assert done.returncode == 0, output
    outcome = json.loads((home / "first-run.json").read_text())
    assert (outcome["v2"], outcome["v3"]) == ("promoted", "rolled_back")
    # what a person reads: the curl to type, its answer, status, explain, the URLs
    assert "$ curl -X POST localhost:" in output
    assert '"model_version": "fraud:1"' in output
    assert "first answered prediction" in output
    assert "shadow_disagreement" in output  # the gate that stopped v3, in the audit log
    assert "fraud-score" in output.split("$ modelplane status", 1)[1]
    assert "route          stable (fraud:1)" in output
    assert "gateway   http://127.0.0.1:" in output


def test_state_it_did_not_make_is_left_alone(tmp_path: Path) -> None:
    foreign = tmp_path / "mine"
    foreign.mkdir()
    (foreign / "state.db").write_text("someone's")
    done = subprocess.run(
        [sys.executable, str(ROOT / "examples" / "first_run.py"), "--exit-after-demo"],
        env={**os.environ, "MODELPLANE_HOME": str(foreign)},
        capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip
    assert done.returncode != 0
    assert "holds state this demo did not make" in done.stderr
    assert (foreign / "state.db").read_text() == "someone's"
