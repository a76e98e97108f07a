"""The live system built in this process from settings, as ``modelplane up`` runs it: an
endpoint in the store is served on a real gateway over loopback, its status is written,
every controller runs, the snapshot names the node, and a stop drains and closes it all;
a server that cannot start stops the ones that did."""

from __future__ import annotations

import asyncio
import json
import socket
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pandas as pd
import psutil
import pytest
from sklearn.linear_model import LogisticRegression
from tests.kit import cli, free_port, home_env, wait_for
from tests.kit.fraud import FRAUD_ENDPOINT

from modelplane.controlplane.nodes import node_name
from modelplane.core.serving import ReplicaState
from modelplane.registry.build import package
from modelplane.security.auth import Authenticator, PredictAuthorizer
from modelplane.settings import Settings
from modelplane.system.live import CONTROLLERS, LiveSystem, SystemOptions, local_node_name

pytestmark = pytest.mark.timeout(240)


@dataclass(frozen=True)
class Open:
    """Nobody is asked for a token (loopback, a test)."""

    api: Authenticator | None = None
    predict: PredictAuthorizer | None = None


def _open(_: Any) -> Open:
    return Open()


class Running:
    """A live system served on its own event loop in a thread, as ``up`` serves it."""

    def __init__(self, system: LiveSystem) -> None:
        self.system = system
        self.announced: list[str] = []
        self.error: BaseException | None = None
        self.loop = asyncio.new_event_loop()
        self.stop = asyncio.Event()
        self.thread = threading.Thread(target=self._serve, daemon=True)
        self.thread.start()

    def _serve(self) -> None:
        try:
            self.loop.run_until_complete(
                self.system.serve(self.stop, announce=self.announced.append)
            )
        except BaseException as exc:  # SystemExit included: uvicorn's when a bind fails
            self.error = exc
        finally:
            self.loop.close()

    def end(self, timeout_s: float = 60.0) -> None:
        if self.thread.is_alive():
            self.loop.call_soon_threadsafe(self.stop.set)
        self.thread.join(timeout_s)
        assert not self.thread.is_alive(), "the live system did not stop"


def _gone(pid: int | None) -> bool:
    try:
        return bool(psutil.Process(pid).status() == psutil.STATUS_ZOMBIE)
    except psutil.NoSuchProcess:
        return True


def _refused(url: str) -> bool:
    try:
        httpx.get(url, timeout=2)
    except httpx.TransportError:
        return True
    return False


def test_an_endpoint_in_the_store_is_served_and_stops_cleanly(tmp_path: Path) -> None:
    home = tmp_path / "home"
    env = home_env(home)
    sample = pd.DataFrame(np.random.default_rng(2).normal(size=(30, 2)), columns=["a", "b"])
    model = LogisticRegression().fit(sample, (sample["a"] > 0).astype(int))
    built = package(model, name="fraud", output_dir=tmp_path / "pkg", sample_input=sample.head())
    cli(env, "push", str(built.path), "--alias", "champion")
    (tmp_path / "endpoint.yaml").write_text(FRAUD_ENDPOINT)
    cli(env, "apply", "-f", str(tmp_path / "endpoint.yaml"))

    options = SystemOptions(port=free_port(), api_port=free_port(), actor="tester", node="node-a")
    system = LiveSystem.open(Settings(home=home), options, _open)
    # no placement controller: replicas are this gateway's own worker processes
    assert [what for what, _ in system.controllers] == [
        c for c in CONTROLLERS if c not in ("placement controller", "node reader")
    ]
    running = Running(system)
    gateway = f"http://127.0.0.1:{options.port}"
    try:
        body = {"instances": [{"a": 1.5, "b": -0.5}]}

        def predicted() -> httpx.Response | None:
            try:
                answer = httpx.post(f"{gateway}/v1/endpoints/fraud-score:predict", json=body)
            except httpx.TransportError:
                return None
            return answer if answer.status_code == 200 else None

        answer = wait_for(predicted, 90, "a prediction from the live system")
        assert answer.headers["modelplane-model-version"] == "fraud:1"
        assert answer.json()["predictions"] == [1]
        assert running.announced[0] == (
            f"gateway  {gateway}  (Open Inference Protocol v2, records)"
        )
        health = httpx.get(f"http://127.0.0.1:{options.api_port}/healthz", timeout=5)
        assert health.json()["status"] == "ok"

        view = system.gateway.snapshot().endpoints["fraud-score"]
        (replica,) = view.routes[0].version.replicas
        assert (replica.node, replica.state) == ("node-a", ReplicaState.READY)

        def ready() -> dict[str, Any] | None:
            [resource] = json.loads(cli(env, "get", "endpoints", "--json"))
            status = resource["status"] or {}
            found = [c for c in status.get("conditions", []) if c["type"] == "Ready"]
            return status if found and found[0]["status"] == "True" else None

        status = wait_for(ready, 60, "the endpoint controller's Ready condition")
        assert status["serving"] == {"fraud@champion": "fraud:1"}
        assert status["replicas"] == {"ready": 1, "total": 1}
    finally:
        running.end()
        system.close()
    assert running.error is None
    assert _refused(f"{gateway}/v2/health/live")
    assert _refused(f"http://127.0.0.1:{options.api_port}/healthz")
    assert replica.pid is not None
    wait_for(lambda: _gone(replica.pid), 30, "the drained worker process to end")


def test_a_server_that_cannot_start_stops_those_that_did(tmp_path: Path) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        api_port = taken.getsockname()[1]
        options = SystemOptions(port=free_port(), api_port=api_port, node="node-a")
        system = LiveSystem.open(Settings(home=tmp_path / "home"), options, _open)
        running = Running(system)
        try:
            running.thread.join(60)
            assert not running.thread.is_alive()
        finally:
            running.end()
            system.close()
    assert isinstance(running.error, SystemExit)
    assert running.announced == []  # nothing was announced as serving
    # the gateway had started before the API failed: it is stopped, its port free again
    with socket.socket() as again:
        again.bind(("127.0.0.1", options.port))


def test_the_local_node_is_named_as_the_cluster_file_names_it(tmp_path: Path) -> None:
    host = node_name(socket.gethostname())
    assert local_node_name(tmp_path / "absent.yaml") == host
    declared = tmp_path / "cluster.yaml"
    declared.write_text("local:\n  name: rack-7\n")
    assert local_node_name(declared) == "rack-7"
    declared.write_text("local:\n  name: [not, a, name]\n")
    assert local_node_name(declared) == host  # up still starts; nodes reports the file
