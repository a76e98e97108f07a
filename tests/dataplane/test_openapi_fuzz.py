"""schemathesis, driven by the gateway's own OpenAPI document, finds no server error."""

from __future__ import annotations

import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from tests.dataplane import gateway_kit as kit

from modelplane.dataplane.server import ServerThread

pytestmark = pytest.mark.timeout(240)
ST = shutil.which("st", path=str(Path(sys.executable).parent))


@pytest.fixture(scope="module")
def server() -> Iterator[ServerThread]:
    endpoints = [
        kit.EndpointBuilder("echo", "echo", contract=kit.echo_contract()).build(),
        kit.EndpointBuilder("lr", "sklearn").build(),
    ]
    with ServerThread(endpoints, config=kit.gateway_config()) as running:
        yield running


def test_no_5xx_from_generated_requests(server: ServerThread, tmp_path: Path) -> None:
    assert ST is not None, "schemathesis is a dev dependency"
    done = subprocess.run(
        [
            ST,
            "run",
            f"{server.url}/openapi.json",
            "--checks",
            "not_a_server_error",
            "--max-examples",
            "25",
            "--request-timeout",
            "10",
            "--no-color",
            "--seed",
            "7",
        ],
        capture_output=True,
        text=True,
        timeout=200,
        check=False,
        cwd=tmp_path,
    )
    assert done.returncode == 0, done.stdout[-4000:] + done.stderr[-2000:]
