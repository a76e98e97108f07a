"""The console and ``/docs`` in a real browser: headless Chromium from the Debian packages,
driven over the DevTools protocol, against ``modelplane up`` with an endpoint applied.

Every request the pages make is recorded; none may fail and none may leave loopback (the
machine may have no internet). Set ``MODELPLANE_SCREENSHOTS=DIR`` to keep the screenshots
(bench/results/console.png is made that way).
"""

from __future__ import annotations

import base64
import json
import os
import shutil
import signal
import subprocess
import time
import urllib.request
from collections.abc import Iterator
from contextlib import ExitStack
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest
from sklearn.linear_model import LogisticRegression
from tests.conftest import unavailable
from tests.kit import CLI, free_port, wait_for

from modelplane.registry.build import package

pd = pytest.importorskip("pandas")
websockets_sync = pytest.importorskip("websockets.sync.client")
pytestmark = [pytest.mark.slow, pytest.mark.timeout(240)]

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"
COLUMNS = ["amount", "age_days", "merchant_risk", "night"]
ROW = {"amount": 40.0, "age_days": 300.0, "merchant_risk": 0.3, "night": 0.0}


class Tab:
    """One browser tab over the DevTools protocol: calls, and the events seen meanwhile."""

    def __init__(self, devtools: str) -> None:
        request = urllib.request.Request(f"{devtools}/json/new?about:blank", method="PUT")
        with urllib.request.urlopen(request, timeout=10) as response:
            target = json.loads(response.read())
        self._stack = ExitStack()
        connection = websockets_sync.connect(target["webSocketDebuggerUrl"], max_size=2**26)
        self.ws = self._stack.enter_context(connection)
        self.next_id = 0
        self.events: list[dict[str, Any]] = []
        for domain in ("Network", "Page", "Runtime"):
            self.call(f"{domain}.enable")

    def call(self, method: str, **params: Any) -> dict[str, Any]:
        self.next_id += 1
        self.ws.send(json.dumps({"id": self.next_id, "method": method, "params": params}))
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            message = json.loads(self.ws.recv(timeout=max(0.1, deadline - time.monotonic())))
            if message.get("id") == self.next_id:
                assert "error" not in message, message
                result: dict[str, Any] = message.get("result", {})
                return result
            self.events.append(message)
        raise AssertionError(f"no answer to {method}")

    def text(self, selector: str) -> str:
        expression = f"(document.querySelector({json.dumps(selector)}) || {{}}).innerText || ''"
        result = self.call("Runtime.evaluate", expression=expression, returnByValue=True)
        return str(result["result"].get("value", ""))

    def count(self, selector: str) -> int:
        expression = f"document.querySelectorAll({json.dumps(selector)}).length"
        result = self.call("Runtime.evaluate", expression=expression, returnByValue=True)
        return int(result["result"]["value"])

    def screenshot(self, path: Path) -> None:
        data = self.call("Page.captureScreenshot", format="png")["data"]
        path.write_bytes(base64.b64decode(data))

    def requests(self) -> list[str]:
        return [
            e["params"]["request"]["url"]
            for e in self.events
            if e.get("method") == "Network.requestWillBeSent"
        ]

    def failures(self) -> list[str]:
        """Requests that failed or answered an error status, and uncaught script errors."""
        out = []
        for event in self.events:
            method, params = event.get("method"), event.get("params", {})
            if method == "Network.loadingFailed":
                out.append(f"failed: {params.get('errorText')} ({params.get('requestId')})")
            elif method == "Network.responseReceived" and params["response"]["status"] >= 400:
                out.append(f"{params['response']['status']}: {params['response']['url']}")
            elif method == "Runtime.exceptionThrown":
                out.append(f"script error: {params['exceptionDetails'].get('text')}")
        return out

    def close(self) -> None:
        self._stack.close()


@pytest.fixture
def browser(tmp_path: Path) -> Iterator[str]:
    """A headless Chromium; the URL of its DevTools endpoint."""
    binary = shutil.which("chromium")
    if binary is None:
        unavailable("chromium is not installed (apt-get install -y chromium)")
        return
    profile = tmp_path / "profile"
    process = subprocess.Popen(
        [binary, "--headless", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
         "--no-first-run", "--no-default-browser-check", "--hide-scrollbars",
         "--window-size=1280,800", "--remote-debugging-port=0", "--remote-allow-origins=*",
         f"--user-data-dir={profile}", "about:blank"],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    try:
        active = profile / "DevToolsActivePort"
        wait_for(lambda: active.exists() and active.read_text().count("\n") >= 1, 60, "chromium")
        port = active.read_text().split("\n")[0]
        yield f"http://127.0.0.1:{port}"
    finally:
        process.terminate()
        try:
            process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=10)


# As root, up runs without CAP_SYS_ADMIN (a container that is not privileged), so that its
# workers lack their namespaces and the console must say so (CI runs as root).
WITHOUT_NAMESPACES = (
    ["setpriv", "--bounding-set=-sys_admin"] if os.geteuid() == 0 and shutil.which("setpriv")
    else []
)  # fmt: skip


@pytest.fixture
def served(tmp_path: Path) -> Iterator[tuple[str, str, dict[str, str]]]:
    """``modelplane up`` serving examples/endpoint.yaml; (console URL, gateway URL, env)."""
    env = {**os.environ, "MODELPLANE_HOME": str(tmp_path / "home")}
    rng = np.random.default_rng(5)
    frame = pd.DataFrame(rng.uniform(0, 1, size=(60, 4)), columns=COLUMNS)
    model = LogisticRegression().fit(frame, (frame.merchant_risk > 0.5).astype(int))
    built = package(model, name="fraud", output_dir=tmp_path / "pkg", sample_input=frame.head())
    subprocess.run([CLI, "push", str(built.path)], env=env, check=True, timeout=60,
                   capture_output=True)  # fmt: skip
    port, api_port = free_port(), free_port()
    server = subprocess.Popen(
        [*WITHOUT_NAMESPACES, CLI, "up", "--port", str(port), "--api-port", str(api_port)],
        env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )  # fmt: skip
    gateway = f"http://127.0.0.1:{port}"
    try:
        subprocess.run([CLI, "apply", "-f", str(EXAMPLES / "endpoint.yaml")], env=env,
                       check=True, timeout=60, capture_output=True)  # fmt: skip
        url = f"{gateway}/v1/endpoints/fraud-score:predict"

        def answers() -> bool:
            try:
                return httpx.post(url, json={"instances": [ROW]}, timeout=5).status_code == 200
            except httpx.TransportError:
                return False

        wait_for(answers, 90, "the endpoint to answer")
        yield f"http://127.0.0.1:{api_port}", gateway, env
    finally:
        server.send_signal(signal.SIGTERM)
        server.communicate(timeout=60)


def test_console_and_docs_load_whole_from_loopback(
    browser: str, served: tuple[str, str, dict[str, str]], tmp_path: Path
) -> None:
    api, gateway, env = served
    # an input the contract forbids: refused, and kept in the prediction log as an error
    bad = httpx.post(
        f"{gateway}/v1/endpoints/fraud-score:predict",
        json={"instances": [{**ROW, "merchant_risk": 7.0}]},
        timeout=5,
    )
    assert bad.status_code == 400, bad.text
    code = bad.json()["error"]["code"]
    keep = Path(os.environ.get("MODELPLANE_SCREENSHOTS", tmp_path))
    token = (Path(env["MODELPLANE_HOME"]) / "token").read_text().strip()

    anonymous = Tab(browser)
    anonymous.call("Page.navigate", url=f"{api}/")
    wait_for(lambda: "requires a token" in anonymous.text("#note"), 30, "the token note")
    anonymous.close()

    console = Tab(browser)
    console.call("Page.navigate", url=f"{api}/#token={token}")
    wait_for(lambda: "Ready" in console.text("#endpoints"), 30, "the endpoint's health")
    wait_for(lambda: code in console.text("#errors"), 30, "the recent error")
    endpoints = console.text("#endpoints")
    assert "fraud-score" in endpoints
    assert "100% fraud:1" in endpoints
    assert "Serving" in endpoints  # the Ready condition's reason
    assert "#token" not in console.text("body")
    if WITHOUT_NAMESPACES or os.environ.get("CI") == "true":
        wait_for(lambda: "mount_ns" in console.text("#sandbox"), 30, "the sandbox note")
        assert console.text("#sandbox").startswith("Model workers here run without: mount_ns")
    links = console.call(
        "Runtime.evaluate",
        expression="[...document.querySelectorAll('header a')].map(a => a.href)",
        returnByValue=True,
    )["result"]["value"]
    assert f"{api}/docs" in links
    assert f"{gateway}/metrics" in links
    console.screenshot(keep / "console.png")
    assert console.failures() == []
    assert all(url.startswith((api, "data:")) for url in console.requests()), console.requests()
    console.close()

    docs = Tab(browser)
    docs.call("Page.navigate", url=f"{api}/docs")
    wait_for(lambda: docs.count(".opblock") > 5, 60, "Swagger UI to render the API")
    assert "/v1/apply" in docs.text("#swagger-ui")
    docs.screenshot(keep / "docs.png")
    assert docs.failures() == []
    assert all(url.startswith((api, "data:")) for url in docs.requests()), docs.requests()
    docs.close()
    assert (keep / "console.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


@pytest.fixture
def guarded(tmp_path: Path) -> Iterator[tuple[str, dict[str, str]]]:
    """The control API with tokens required, two teams' endpoints and a failed prediction
    of each in the log, served over loopback; (its URL, a token per team)."""
    import threading
    from datetime import UTC, datetime

    import uvicorn
    from sqlalchemy import insert

    from modelplane.controlplane.api import create_api
    from modelplane.registry.service import open_registry
    from modelplane.security.auth import CachedAuthenticator
    from modelplane.security.tokens import TokenStore
    from modelplane.store.resources import ResourceStore
    from modelplane.store.schema import PredictionRow

    registry = open_registry(f"sqlite:///{tmp_path}/state.db", str(tmp_path / "art"), actor="x")
    resources = ResourceStore(registry.engine)
    contract = {"name": "score", "inputs": [{"name": "a", "dtype": "float64"}]}
    for team in ("risk", "growth"):
        spec = {"kind": "Endpoint", "name": f"{team}-score", "team": team,
                "contract": contract, "routes": [{"model": "m:1"}]}  # fmt: skip
        resources.apply("Endpoint", f"{team}-score", spec, actor="seed")
    with registry.engine.begin() as conn:
        for team in ("risk", "growth"):
            conn.execute(
                insert(PredictionRow).values(
                    request_id=f"req-{team}", at=datetime.now(UTC), endpoint=f"{team}-score",
                    contract="score", contract_version=1, route_kind="stable", status=503,
                    error_code="worker_failed", queue_ms=0.1, batch_ms=0.1, compute_ms=0.1,
                    total_ms=0.3,
                )
            )  # fmt: skip
    store = TokenStore(registry.engine)
    tokens = {
        team: store.create(subject=team, team=team, scopes=["read"], actor="test").token
        for team in ("risk", "growth")
    }
    app = create_api(registry, authenticator=CachedAuthenticator(store.verify))
    port = free_port()
    config = uvicorn.Config(app, host="127.0.0.1", port=port, log_level="error", lifespan="off")
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    try:
        wait_for(lambda: server.started, 20, "the API")
        yield f"http://127.0.0.1:{port}", tokens
    finally:
        server.should_exit = True
        thread.join(timeout=20)
        registry.close()


def test_the_page_and_docs_need_no_token_and_the_data_does(
    guarded: tuple[str, dict[str, str]],
) -> None:
    api, tokens = guarded
    with httpx.Client(base_url=api, timeout=10) as http:
        page = http.get("/")
        assert page.status_code == 200
        assert "modelplane console" in page.text
        assert "https://" not in page.text  # nothing from the internet
        docs = http.get("/docs")
        assert docs.status_code == 200
        assert "cdn" not in docs.text
        for asset in ("/docs/swagger-ui-bundle.js", "/docs/swagger-ui.css"):
            assert http.get(asset).status_code == 200, asset
        assert http.get("/redoc").status_code != 200  # FastAPI's CDN page is off
        refused = http.get("/v1/errors")
        assert refused.status_code == 401
        assert refused.json()["error"]["code"] == "unauthorized"
        for team, token in tokens.items():
            seen = http.get("/v1/errors", headers={"authorization": f"Bearer {token}"})
            assert seen.status_code == 200, seen.text
            # each team reads its own endpoints' errors only
            assert [row["request_id"] for row in seen.json()] == [f"req-{team}"]
            assert seen.json()[0]["error_code"] == "worker_failed"
