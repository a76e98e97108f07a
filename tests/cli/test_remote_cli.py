"""``modelplane login URL``: the same commands through the control API, same output and exit."""

from __future__ import annotations

import json
import os
import stat
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import yaml
from sklearn.linear_model import LogisticRegression
from tests.kit import CLI, serving_app

from modelplane.controlplane.api import create_api
from modelplane.registry.build import package
from modelplane.registry.service import open_registry
from modelplane.security.auth import CachedAuthenticator
from modelplane.security.tokens import TokenStore

pd = pytest.importorskip("pandas")
pytestmark = pytest.mark.timeout(180)

ENDPOINT = {
    "kind": "Endpoint",
    "name": "risk-score",
    "team": "risk",
    "contract": {
        "name": "risk-score",
        "inputs": [{"name": "a", "dtype": "float64"}, {"name": "b", "dtype": "float64"}],
    },
    "routes": [{"model": "fraud:1"}],
}


@dataclass
class Server:
    url: str
    env: dict[str, str]
    """The environment of a CLI on the server's own machine (its home)."""
    deployer: str
    reader: str


@pytest.fixture
def server(tmp_path: Path) -> Iterator[Server]:
    home = tmp_path / "server-home"
    env = {**os.environ, "MODELPLANE_HOME": str(home), "MODELPLANE_ACTOR": "root"}
    home.mkdir()
    registry = open_registry(f"sqlite:///{home}/state.db", str(home / "artifacts"), actor="root")
    frame = pd.DataFrame(np.random.default_rng(2).normal(size=(30, 2)), columns=["a", "b"])
    model = LogisticRegression().fit(frame, (frame["a"] > 0).astype(int))
    built = package(model, name="fraud", output_dir=tmp_path / "pkg", sample_input=frame.head())
    registry.push(built.path, team="risk")
    better = LogisticRegression(C=0.1).fit(frame, (frame["a"] > 0).astype(int))
    second = package(better, name="fraud", output_dir=tmp_path / "pkg2", sample_input=frame.head())
    registry.push(second.path, team="risk")
    store = TokenStore(registry.engine)
    deployer = store.create(subject="dana", team="risk", scopes=["deploy", "read"], actor="root")
    reader = store.create(subject="rex", team="growth", scopes=["read"], actor="root")
    app = create_api(registry, authenticator=CachedAuthenticator(store.verify))
    with serving_app(app) as url:
        yield Server(url, env, deployer.token, reader.token)
    registry.close()


def _data() -> tuple[Any, Any]:
    frame = pd.DataFrame(np.random.default_rng(2).normal(size=(30, 2)), columns=["a", "b"])
    return frame, (frame["a"] > 0).astype(int)


def run(env: dict[str, str], *args: str, code: int = 0) -> subprocess.CompletedProcess[str]:
    done = subprocess.run(
        [CLI, *args], env=env, capture_output=True, text=True, timeout=60, check=False
    )
    assert done.returncode == code, done.stdout + done.stderr
    return done


def test_commands_go_through_the_api_with_the_same_output(server: Server, tmp_path: Path) -> None:
    laptop = {**os.environ, "MODELPLANE_HOME": str(tmp_path / "laptop")}
    assert json.loads(run(laptop, "get", "endpoints", "--json").stdout) == []  # a local store
    login = run(laptop, "login", server.url, "--token", server.deployer)
    assert "as dana (team risk" in login.stdout
    remote_file = tmp_path / "laptop" / "remote.json"
    assert stat.S_IMODE(remote_file.stat().st_mode) == 0o600
    spec = tmp_path / "endpoint.yaml"
    spec.write_text(yaml.safe_dump(ENDPOINT))

    applied = run(laptop, "apply", "-f", str(spec), "--reason", "launch")
    assert "endpoint/risk-score created (generation 1)" in applied.stdout
    same = (
        ["get", "endpoints", "--json"],
        ["get", "endpoints"],
        ["audit", "log", "--json"],
        ["models", "--json"],
        ["models"],
        ["versions", "fraud", "--json"],
        ["versions", "fraud", "--all"],
    )
    for args in (*same, ["status"], ["status", "--json"]):
        assert run(laptop, *args).stdout == run(server.env, *args).stdout, args
    [event] = json.loads(run(laptop, "audit", "log", "--action", "endpoint.apply", "--json").stdout)
    assert (event["actor"], event["reason"]) == ("dana", "launch")

    # the same errors and exit codes as a local command
    missing = run(laptop, "get", "endpoints", "nope", code=6)
    assert "Endpoint/nope not found" in missing.stderr
    assert run(server.env, "get", "endpoints", "nope", code=6).stderr == missing.stderr
    # commands the API does not serve refuse, rather than read the laptop's own database
    refused = run(laptop, "inspect", "fraud:1", code=1)
    assert "logout" in refused.stderr

    # a package, through the API: the model's team is the token's
    third = LogisticRegression(C=0.01).fit(*_data())
    built = package(third, name="fraud", output_dir=tmp_path / "pkg3", sample_input=_data()[0][:5])
    pushed = run(laptop, "push", str(built.path), "--reason", "retrained")
    assert f"pushed fraud:3  {built.digest}" in pushed.stdout
    assert "--alias" in run(laptop, "push", str(built.path), "--alias", "x", code=1).stderr

    # a rollout and its rollback, through the API
    started = run(laptop, "rollout", "risk-score", "--to", "fraud:2", "--reason", "better")
    assert "rollout/risk-score started: fraud:1 -> fraud:2" in started.stdout
    run(laptop, "login", server.url, "--token", server.reader)
    assert "'deploy' scope" in run(laptop, "push", str(built.path), code=11).stderr
    forbidden = run(laptop, "rollback", "risk-score", code=11)
    assert "'deploy' scope" in forbidden.stderr
    forbidden = run(laptop, "delete", "endpoint", "risk-score", code=11)
    assert "'deploy' scope" in forbidden.stderr
    run(laptop, "login", server.url, "--token", server.deployer)
    rolled = run(laptop, "rollback", "risk-score", "--reason", "p99", "--json")
    assert json.loads(rolled.stdout)["changed"] is True
    actors = {
        (e["action"], e["actor"])
        for e in json.loads(run(laptop, "audit", "log", "--subject", "Rollout/risk-score",
                                "--json").stdout)
    }  # fmt: skip
    assert actors == {("rollout.apply", "dana")}
    run(laptop, "login", server.url, "--token", server.deployer)
    assert "deleted" in run(laptop, "delete", "endpoint", "risk-score").stdout

    run(laptop, "logout")
    assert not remote_file.exists()
    assert json.loads(run(laptop, "get", "endpoints", "--json").stdout) == []


def test_a_bad_token_is_refused_at_login(server: Server, tmp_path: Path) -> None:
    laptop = {**os.environ, "MODELPLANE_HOME": str(tmp_path / "laptop")}
    done = run(laptop, "login", server.url, "--token", "mp_0123456789abcdef_" + "x" * 43, code=10)
    assert "not valid" in done.stderr
    assert not (tmp_path / "laptop" / "remote.json").exists()
