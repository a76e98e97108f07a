"""``modelplane serve`` as a user runs it: one line, a real process, SIGTERM drains."""

from __future__ import annotations

import os
import queue
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx
import pytest
from tests.dataplane import gateway_kit as kit

from modelplane.cli.context import CliContext
from modelplane.cli.serve import endpoint_for, resolve_source
from modelplane.dataplane.codec_v2 import encode_request
from modelplane.registry.service import open_registry
from modelplane.settings import Settings

pytestmark = pytest.mark.timeout(120)

# The serve command whether or not the root app registers it yet.
CLI = (
    "from modelplane.cli.main import app\n"
    "from modelplane.cli import serve\n"
    "if not any(c.name == 'serve' for c in app.registered_commands):\n"
    "    serve.register(app)\n"
    "app()\n"
)


def _lines(stream: Any, out: queue.Queue[str]) -> None:
    for line in stream:
        out.put(line)


@pytest.fixture
def served(tmp_path: Path) -> Iterator[tuple[subprocess.Popen[str], str]]:
    package_dir = kit.source("echo").directory
    env = {**os.environ, "MODELPLANE_HOME": str(tmp_path / "home")}
    process = subprocess.Popen(
        [
            sys.executable,
            "-c",
            CLI,
            "serve",
            str(package_dir),
            "--port",
            "0",
            "--max-delay-ms",
            "1",
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env=env,
    )
    lines: queue.Queue[str] = queue.Queue()
    reader = threading.Thread(target=_lines, args=(process.stdout, lines), daemon=True)
    reader.start()
    try:
        line = lines.get(timeout=60)
        assert line.startswith("serving echo (echo:"), line
        assert " sha256:" in line
        url = line.rsplit(" on ", 1)[1].strip()
        assert url.startswith("http://127.0.0.1:")
        # the URLs to paste, with the endpoint's name in them
        assert lines.get(timeout=10).strip() == f"records  POST {url}/v1/endpoints/echo:predict"
        assert lines.get(timeout=10).strip() == f"v2       POST {url}/v2/models/echo/infer"
        yield process, url
    finally:
        if process.poll() is None:
            process.kill()
        process.wait(10)
        reader.join(10)
        assert process.stdout is not None
        process.stdout.close()


def test_serve_answers_and_drains_on_sigterm(served: tuple[subprocess.Popen[str], str]) -> None:
    process, url = served
    body = encode_request(kit.echo_inputs(1)).body
    with httpx.Client(base_url=url, timeout=10) as client:
        response = client.post("/v2/models/echo/infer", content=body)
        assert response.status_code == 200, response.text
        slow = encode_request(kit.echo_inputs(1, first=kit.fake_models.SLOW)).body

        def call(_: int) -> int:
            with httpx.Client(base_url=url, timeout=20) as own:
                return own.post("/v2/models/echo/infer", content=slow).status_code

        with ThreadPoolExecutor(16) as pool:
            futures = [pool.submit(call, i) for i in range(16)]
            _wait_for_queue(client, rows=17)  # the first request's row, then 16 slow ones
            process.send_signal(signal.SIGTERM)
            statuses = [f.result(timeout=30) for f in futures]
    assert statuses == [200] * 16
    assert process.wait(30) == 0


def _wait_for_queue(client: httpx.Client, rows: int) -> None:
    """Wait until ``rows`` rows reached the batcher (queued or sent to a worker), so every
    request is in the server, not still in the kernel's accept queue, when SIGTERM comes."""
    wanted = ("modelplane_gateway_queue_rows{", "modelplane_gateway_batch_rows_sum{")
    end = time.monotonic() + 30
    while time.monotonic() < end:
        lines = client.get("/metrics").text.splitlines()
        if sum(float(line.split()[-1]) for line in lines if line.startswith(wanted)) >= rows:
            return
        time.sleep(0.01)
    raise AssertionError("requests did not reach the batcher")


def test_a_registry_ref_is_fetched_into_the_cache(tmp_path: Path) -> None:
    settings = Settings(home=tmp_path / "home", actor="alice")
    registry = open_registry(
        settings.resolved_database_url(), settings.resolved_artifact_url(), actor="alice"
    )
    try:
        version = registry.push(kit.source("echo").directory)
    finally:
        registry.close()
    cli = CliContext(settings=settings)
    route, source = resolve_source(cli, f"echo:{version.version}")
    assert route == source.label == f"echo:{version.version}"
    assert source.digest == version.digest
    assert source.directory.is_relative_to(tmp_path / "home" / "cache")
    again = resolve_source(cli, "echo")[1]  # the latest version, from the cache
    assert again.directory == source.directory
    endpoint = endpoint_for(route, source, name="echo-ep", replicas=2)
    assert endpoint.contract.inputs == source.manifest.signature.inputs
    assert endpoint.routes[0].model == route
    assert endpoint.replicas == 2


def test_a_missing_package_folder_is_a_clear_error(tmp_path: Path) -> None:
    result = subprocess.run(
        [sys.executable, "-c", CLI, "serve", str(tmp_path / "nothing/here")],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
        env={**os.environ, "MODELPLANE_HOME": str(tmp_path / "home")},
    )
    assert result.returncode != 0
    assert "not a package folder" in result.stderr
