"""What many tests share: polling with a deadline, free loopback ports, the CLI as a user
runs it, and ``modelplane up`` as a process. Tests poll; they never sleep to wait."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, TypeVar

__all__ = [
    "CLI",
    "UpProcess",
    "cli",
    "free_port",
    "home_env",
    "running_up",
    "serving_app",
    "trust_a_signing_key",
    "wait_for",
]

T = TypeVar("T")

CLI = str(Path(sys.executable).with_name("modelplane"))


def wait_for(
    check: Callable[[], T | None], timeout_s: float, what: str, every_s: float = 0.05
) -> T:
    """Poll ``check`` until it returns something true; its value. Fails naming ``what``."""
    deadline = time.monotonic() + timeout_s
    while True:
        found = check()
        if found:
            return found
        if time.monotonic() >= deadline:
            raise AssertionError(f"timed out after {timeout_s} s waiting for {what}")
        time.sleep(every_s)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def cli(env: dict[str, str], *args: str, expect: int = 0, timeout_s: float = 60) -> str:
    """Run ``modelplane ARGS``; its stdout. Fails with stderr unless it exits ``expect``."""
    done = subprocess.run(
        [CLI, *args], env=env, capture_output=True, text=True, timeout=timeout_s, check=False
    )
    assert done.returncode == expect, f"exit {done.returncode}: {done.stderr}{done.stdout}"
    return done.stdout


class UpProcess:
    """``modelplane up`` on free loopback ports."""

    def __init__(self, env: dict[str, str], *extra: str) -> None:
        self.env = env
        self.port, self.api_port = free_port(), free_port()
        self.process = subprocess.Popen(
            [CLI, "up", "--port", str(self.port), "--api-port", str(self.api_port), *extra],
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def api_url(self) -> str:
        return f"http://127.0.0.1:{self.api_port}"

    def stop(self, sig: int = signal.SIGTERM, timeout_s: float = 60) -> str:
        """Signal it and wait; what it printed."""
        if self.process.poll() is None:
            self.process.send_signal(sig)
        output, _ = self.process.communicate(timeout=timeout_s)
        return output


@contextmanager
def running_up(env: dict[str, str], *extra: str) -> Iterator[UpProcess]:
    """``modelplane up`` for the ``with`` block; killed if it outlives a graceful stop."""
    up = UpProcess(env, *extra)
    try:
        yield up
    finally:
        try:
            up.stop()
        except subprocess.TimeoutExpired:
            up.process.kill()
            up.process.communicate(timeout=30)


def home_env(home: Path) -> dict[str, str]:
    """The environment of a user whose state lives in ``home``."""
    return {**os.environ, "MODELPLANE_HOME": str(home)}


def trust_a_signing_key(env: dict[str, str], folder: Path, name: str = "ci") -> str:
    """Create a signing key and apply a policy that trusts it for code: python-runtime and
    pickle packages serve only when signed so. The policy changes nothing else (no
    degradation steps). The key's name, for ``push --sign``."""
    public = json.loads(cli(env, "keys", "create", name, "--json"))["public_key"]
    path = folder / "trust-policy.yaml"
    path.write_text(
        "kind: Policy\ndegradation: {steps: []}\n"
        f"trusted_keys: [{{name: {name}, public_key: '{public}', trusted_for: [code]}}]\n"
    )
    cli(env, "apply", "-f", str(path))
    return name


@contextmanager
def serving_app(app: Any) -> Iterator[str]:
    """An ASGI app (the control API) under uvicorn on a free loopback port, in a thread, for
    the ``with`` block; its base URL."""
    import uvicorn

    port = free_port()
    config = uvicorn.Config(app, host="127.0.0.1", port=port, log_level="error", lifespan="off")
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    try:
        wait_for(lambda: server.started, 20, "the server to start", every_s=0.02)
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(timeout=10)
