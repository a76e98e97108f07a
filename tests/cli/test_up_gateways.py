"""``modelplane up --gateways 2``: two gateway processes on one port (SO_REUSEPORT) over one
SQLite store. Both answer; a rollout and a rollback applied once reach both; the rollout's
evidence counts what both answered; a child killed with SIGKILL comes back while requests
keep being answered, and children stop with ``up``, however it stops."""

from __future__ import annotations

import json
import signal
import subprocess
import threading
from collections import Counter
from pathlib import Path

import httpx
import psutil
import pytest
from tests.kit import CLI, cli, home_env, running_up, wait_for
from tests.kit.fraud import FRAUD_ENDPOINT, push_fraud_versions

pytest.importorskip("sklearn")
pytestmark = pytest.mark.timeout(300)

HELD = """
kind: Rollout
steps: [{weight: 100, hold_s: 600}]
max_duration_s: 3600
gates:
  - {type: min_samples, requests: 1000000}
"""
"""All traffic on the new version, held: the gate's reading counts the canary's requests."""

ROW = {"instances": [{"a": 1.0, "b": 0.0}]}


def ask(url: str) -> httpx.Response:
    """One prediction on a fresh connection (the kernel picks the gateway per connection);
    a refused or reset connection is tried once more, as a client would."""
    for attempt in (1, 2):
        try:
            with httpx.Client(timeout=10) as client:
                return client.post(f"{url}/v1/endpoints/fraud-score:predict", json=ROW)
        except (httpx.ConnectError, httpx.RemoteProtocolError, httpx.ReadError):
            if attempt == 2:
                raise
    raise AssertionError("unreachable")


def answers(url: str, n: int) -> list[tuple[str, str]]:
    """``n`` answers as (gateway, model version); each must be a 200."""
    found = []
    for _ in range(n):
        response = ask(url)
        assert response.status_code == 200, response.text
        found.append(
            (response.headers["modelplane-gateway"], response.headers["modelplane-model-version"])
        )
    return found


def child_pids(up_pid: int) -> list[int]:
    """The child gateways of ``up`` that run (a killed one not reaped yet left out)."""
    found = []
    for process in psutil.Process(up_pid).children():
        try:
            if "modelplane.system.gateway_child" in " ".join(process.cmdline()):
                found.append(process.pid)
        except psutil.Error:
            continue
    return found


def running(pid: int) -> bool:
    try:
        return bool(psutil.Process(pid).status() != psutil.STATUS_ZOMBIE)
    except psutil.NoSuchProcess:
        return False


def canary_reading(env: dict[str, str]) -> int:
    [rollout] = json.loads(cli(env, "get", "rollouts", "--json"))
    readings = (rollout["status"] or {}).get("readings") or {}
    gate = next((g for g in readings.get("gates", []) if g["name"] == "min_samples"), None)
    return int(gate["reading"]["requests"]) if gate else -1


@pytest.fixture
def fraud_env(tmp_path: Path) -> dict[str, str]:
    env = home_env(tmp_path / "home")
    push_fraud_versions(env, tmp_path, rows=30)
    (tmp_path / "endpoint.yaml").write_text(FRAUD_ENDPOINT)
    (tmp_path / "held.yaml").write_text(HELD)
    cli(env, "apply", "-f", str(tmp_path / "endpoint.yaml"))
    env["TEST_FOLDER"] = str(tmp_path)
    return env


def both_serve(url: str) -> bool:
    try:
        seen = answers(url, 16)
    except (AssertionError, httpx.TransportError):
        return False
    return {g for g, _ in seen} == {"1", "2"}


DOCS = Path(__file__).resolve().parents[2] / "docs" / "backends.md"


def docs_loop(port: int) -> str:
    """The curl loop of docs/backends.md's "More than one gateway", on ``port``."""
    section = DOCS.read_text().split("## More than one gateway", 1)[1]
    block = section.split("```sh\n", 1)[1].split("```", 1)[0]
    assert block.startswith("modelplane up --gateways 2 &")
    loop = block.split("\n", 1)[1]
    return loop.replace("127.0.0.1:8000", f"127.0.0.1:{port}")


def test_two_gateways_serve_one_rollout_and_count_together(fraud_env: dict[str, str]) -> None:
    env = fraud_env
    with running_up(env, "--gateways", "2") as up:
        wait_for(lambda: both_serve(up.url), 120, "both gateways to answer")
        shown = subprocess.run(
            ["bash", "-c", docs_loop(up.port)],
            capture_output=True,
            text=True,
            timeout=60,
            check=True,
        )
        counted = {line.split()[1] for line in shown.stdout.splitlines() if line.strip()}
        assert counted, shown.stdout + shown.stderr
        assert counted <= {"1", "2"}, shown.stdout
        [child] = child_pids(up.process.pid)
        assert child != up.process.pid
        held = str(Path(env["TEST_FOLDER"]) / "held.yaml")
        cli(env, "rollout", "fraud-score", "--to", "fraud:2", "-f", held)
        sent: list[tuple[str, str]] = []

        def moved() -> bool:
            batch = answers(up.url, 12)
            sent.extend(batch)
            return {v for _, v in batch} == {"fraud:2"} and {g for g, _ in batch} == {"1", "2"}

        # the weight change reached both gateways once a batch from both is all fraud:2
        wait_for(moved, 60, "the rollout's weights on both gateways")
        after = answers(up.url, 60)
        sent += after
        assert {v for _, v in after} == {"fraud:2"}
        by_gateway = Counter(g for g, _ in after)
        assert by_gateway["1"] > 0, by_gateway
        assert by_gateway["2"] > 0, by_gateway
        canary = sum(1 for _, v in sent if v == "fraud:2")
        # the gate reads what both gateways counted, not one gateway's share
        try:
            wait_for(lambda: canary_reading(env) == canary, 30, f"a reading of {canary}")
        finally:
            print("reading", canary_reading(env), "sent", canary, Counter(sent))
        cli(env, "rollback", "fraud-score")

        def back() -> bool:
            batch = answers(up.url, 12)
            return {v for _, v in batch} == {"fraud:1"} and {g for g, _ in batch} == {"1", "2"}

        # a rollback reaches both gateways as the rollout did
        wait_for(back, 60, "the rollback on both gateways")
        assert {v for _, v in answers(up.url, 30)} == {"fraud:1"}
        output = up.stop()
    assert up.process.returncode == 0, output
    assert "2 gateways, SO_REUSEPORT" in output
    assert "gateway  2 serving" in output
    assert not running(child)


def test_a_killed_child_gateway_comes_back(fraud_env: dict[str, str]) -> None:
    env = fraud_env
    with running_up(env, "--gateways", "2") as up:
        wait_for(lambda: both_serve(up.url), 120, "both gateways to answer")
        [child] = child_pids(up.process.pid)
        statuses: list[int] = []
        failures: list[str] = []
        stop = threading.Event()

        def load() -> None:
            while not stop.is_set():
                try:
                    statuses.append(ask(up.url).status_code)
                except httpx.TransportError as exc:
                    failures.append(repr(exc))

        worker = threading.Thread(target=load, daemon=True)
        worker.start()
        try:
            wait_for(lambda: len(statuses) > 20, 30, "load before the kill")
            psutil.Process(child).send_signal(signal.SIGKILL)
            wait_for(lambda: child_pids(up.process.pid) not in ([], [child]), 60, "a new child")
            wait_for(lambda: both_serve(up.url), 120, "both gateways again")
            answered = len(statuses)
            wait_for(lambda: len(statuses) > answered + 20, 30, "load after the restart")
        finally:
            stop.set()
            worker.join(timeout=30)
        [again] = child_pids(up.process.pid)
        # up dies without a word: its child gateways stop with it
        up.process.kill()
        wait_for(lambda: not running(again), 60, "the child gateway to stop with up")
        output = up.stop()
    assert failures == [], failures
    assert set(statuses) == {200}, Counter(statuses)
    assert f"gateway  2 (pid {child}) stopped (signal 9); restarting" in output


def test_gateways_zero_names_the_flag(tmp_path: Path) -> None:
    env = home_env(tmp_path / "home")
    done = subprocess.run(
        [CLI, "up", "--gateways", "0"],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode != 0
    assert "--gateways" in done.stderr + done.stdout
