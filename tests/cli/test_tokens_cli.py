"""``modelplane tokens`` and ``modelplane up`` with authentication, as a user runs them."""

from __future__ import annotations

import json
import os
import signal
import stat
import subprocess
import time
from pathlib import Path

import httpx
import numpy as np
import pytest
from sklearn.linear_model import LogisticRegression
from tests.kit import CLI, free_port

from modelplane.registry.build import package

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


def run(env: dict[str, str], *args: str, code: int = 0) -> subprocess.CompletedProcess[str]:
    done = subprocess.run(
        [CLI, *args], env=env, capture_output=True, text=True, timeout=60, check=False
    )
    assert done.returncode == code, done.stdout + done.stderr
    return done


def home_env(tmp_path: Path) -> dict[str, str]:
    return {**os.environ, "MODELPLANE_HOME": str(tmp_path / "home"), "MODELPLANE_ACTOR": "alice"}


def test_create_list_revoke(tmp_path: Path) -> None:
    env = home_env(tmp_path)
    created = run(
        env, "tokens", "create", "--subject", "checkout", "--team", "risk",
        "--scope", "predict", "--endpoint", "risk-score", "--expires-in", "30d", "--json",
    )  # fmt: skip
    issued = json.loads(created.stdout)
    assert issued["token"].startswith(f"mp_{issued['id']}_")
    assert issued["endpoints"] == ["risk-score"]
    [listed] = json.loads(run(env, "tokens", "list", "--json").stdout)
    assert listed["id"] == issued["id"]
    assert "token" not in listed
    run(env, "tokens", "revoke", issued["id"], "--reason", "rotated")
    assert json.loads(run(env, "tokens", "list", "--json").stdout) == []
    audit = json.loads(run(env, "audit", "log", "--json").stdout)
    assert [(e["action"], e["actor"]) for e in audit] == [
        ("token.revoke", "alice"),
        ("token.create", "alice"),
    ]
    bad = run(env, "tokens", "create", "--subject", "s", "--team", "risk", "--scope", "root",
              code=2)  # fmt: skip
    assert "root" in bad.stdout + bad.stderr


def test_up_refuses_an_open_non_loopback_address(tmp_path: Path) -> None:
    done = run(home_env(tmp_path), "up", "--host", "0.0.0.0", "--no-auth", code=2)
    assert "--insecure" in done.stdout + done.stderr


def test_up_checks_the_oidc_issuer(tmp_path: Path) -> None:
    done = run(home_env(tmp_path), "up", "--oidc-issuer", "not-a-url", code=2)
    assert "oidc issuer" in done.stdout + done.stderr


def _wait_for_token(path: Path, server: subprocess.Popen[str]) -> str:
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and server.poll() is None:
        if path.exists() and path.read_text().strip():
            return path.read_text().strip()
        time.sleep(0.1)
    raise AssertionError("up wrote no token")


def _wait_for_api(url: str) -> None:
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        try:
            if httpx.get(f"{url}/healthz", timeout=2).status_code == 200:
                return
        except httpx.TransportError:
            pass
        time.sleep(0.1)
    raise AssertionError("the control API did not answer")


def test_up_keeps_an_admin_token_and_the_api_needs_one(tmp_path: Path) -> None:
    env = home_env(tmp_path)
    frame = pd.DataFrame(np.random.default_rng(2).normal(size=(30, 2)), columns=["a", "b"])
    model = LogisticRegression().fit(frame, (frame["a"] > 0).astype(int))
    built = package(model, name="fraud", output_dir=tmp_path / "pkg", sample_input=frame.head())
    run(env, "push", str(built.path), "--team", "risk")
    port, api_port = free_port(), free_port()
    server = subprocess.Popen(
        [CLI, "up", "--port", str(port), "--api-port", str(api_port)],
        env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )  # fmt: skip
    api = f"http://127.0.0.1:{api_port}"
    try:
        token_file = tmp_path / "home" / "token"
        admin = _wait_for_token(token_file, server)
        assert stat.S_IMODE(token_file.stat().st_mode) == 0o600
        _wait_for_api(api)
        with httpx.Client(base_url=api, timeout=10) as http:
            body = {"documents": [ENDPOINT]}
            forged = http.post("/v1/apply", json=body, headers={"x-actor": "someone-else"})
            assert forged.status_code == 401
            headers = {"authorization": f"Bearer {admin}", "x-actor": "someone-else"}
            assert http.post("/v1/apply", json=body, headers=headers).status_code == 200
            growth = json.loads(
                run(env, "tokens", "create", "--subject", "g", "--team", "growth",
                    "--scope", "deploy", "--json").stdout
            )["token"]  # fmt: skip
            taken = http.delete(
                "/v1/resources/Endpoint/risk-score",
                headers={"authorization": f"Bearer {growth}"},
            )
            assert taken.status_code == 403
            assert taken.json()["error"]["code"] == "forbidden"
        # on the server's machine, login takes the token up keeps: no token to type
        assert "as alice (team local" in run(env, "login", api).stdout
        [served] = json.loads(run(env, "get", "endpoints", "--json").stdout)
        assert served["name"] == "risk-score"
        run(env, "logout")
    finally:
        server.send_signal(signal.SIGTERM)
        output, _ = server.communicate(timeout=60)
    assert server.returncode == 0, output
    assert "tokens required on the control API" in output
    events = json.loads(
        run(env, "audit", "log", "--subject", "Endpoint/risk-score", "--json").stdout
    )
    assert [(e["action"], e["actor"]) for e in events] == [("endpoint.apply", "alice")]
    assert [e["actor"] for e in events if e["actor"] == "someone-else"] == []


def test_up_without_auth_says_so(tmp_path: Path) -> None:
    env = home_env(tmp_path)
    port, api_port = free_port(), free_port()
    server = subprocess.Popen(
        [CLI, "up", "--no-auth", "--port", str(port), "--api-port", str(api_port)],
        env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )  # fmt: skip
    try:
        _wait_for_api(f"http://127.0.0.1:{api_port}")
    finally:
        server.send_signal(signal.SIGTERM)
        output, _ = server.communicate(timeout=60)
    assert "WARNING: authentication is off" in output
    assert not (tmp_path / "home" / "token").exists()


@pytest.mark.parametrize(
    ("host", "database", "predict_auth", "predict_checked", "token_file"),
    [
        ("127.0.0.1", False, None, False, True),
        ("127.0.0.1", False, True, True, True),
        ("127.0.0.1", True, None, False, False),  # an external store: tokens are the admin's
        ("10.1.2.3", False, None, True, False),
    ],
)
def test_what_up_checks_where(
    tmp_path: Path,
    host: str,
    database: bool,
    predict_auth: bool | None,
    predict_checked: bool,
    token_file: bool,
) -> None:
    from modelplane.cli.context import CliContext
    from modelplane.cli.tokens import server_auth
    from modelplane.settings import Settings
    from modelplane.store.db import open_engine

    url = f"sqlite:///{tmp_path}/state.db"
    settings = Settings(home=tmp_path / "home", database_url=url if database else None)
    engine = open_engine(url)
    try:
        guard = server_auth(
            CliContext(settings=settings), engine, host, auth=True, predict_auth=predict_auth
        )
    finally:
        engine.dispose()
    assert guard.api is not None
    assert (guard.predict is not None) is predict_checked
    assert (tmp_path / "home" / "token").exists() is token_file
