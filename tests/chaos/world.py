"""The platform the chaos suite shakes: ``modelplane up`` as a real process on a throwaway
PostgreSQL database, with Redis as its online feature store, serving three endpoints.

- ``alpha`` and ``beta``: two replicas each of a python-runtime model; each has a second
  version pushed, for rollouts;
- ``gamma``: two replicas, its input ``b`` joined from the run's feature set in Redis
  by ``customer_id`` (policy ``fail``: a store that cannot answer fails the request, so a
  Redis fault shows);
- ``broken:1`` is pushed too: it loads where it is built and fails in every worker.

Everything the world creates is its own: the database (dropped at the end), the feature
set's rows in Redis (deleted), the processes (stopped by pid). The operator's commands run
through the CLI's own entry point, in this process.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from pathlib import Path
from typing import IO

import numpy as np
from tests.chaos import models
from tests.chaos.procs import alive, descendants, name_of
from tests.cli import story_models
from tests.kit import CLI, free_port

from modelplane.registry.build import package

__all__ = ["ENDPOINTS", "NEXT_VERSION", "World", "chaos_redis_url", "throwaway_database"]

ENDPOINTS = ("alpha", "beta", "gamma")
"""The endpoints under load."""
NEXT_VERSION = {"alpha": "alpha:2", "beta": "beta:2"}
"""Endpoints with a second version, and that version: what a rollout moves to."""
CUSTOMERS = 100
"""Entity keys with a row in Redis; every request of ``gamma`` names one of them."""
STRAGGLE_S = 10.0
"""How long the processes of a stopped ``up`` may take to exit on their own."""
SIGNER = "chaos-ci"
REDIS_DB = 7
"""Other tests flush Redis database 0; the suite's rows live in a database of their own."""

ENDPOINT = """
kind: Endpoint
name: {name}
team: chaos
contract:
  name: {name}
  inputs: [{{name: a, dtype: float64}}, {{name: b, dtype: float64}}]
  outputs: [{{name: label, dtype: int64}}]
routes: [{{model: {model}}}]
replicas: {replicas}
{extra}"""
FEATURES = "features: [{{feature_set: '{set}:1', entity_key: customer_id, policy: fail}}]\n"
FEATURE_SET = """
kind: FeatureSet
name: {set}
version: 1
team: chaos
entity: {{name: customer_id, dtype: int64}}
features: [{{name: b, dtype: float64, default: 0.0}}]
freshness: {{max_age_s: 86400}}
"""
ROLLOUT = """
kind: Rollout
steps: [{weight: 50, hold_s: 600}]
max_duration_s: 3600
"""


def chaos_redis_url(base: str) -> str:
    """``base`` (``redis://host:port/N``) pointed at the suite's own database."""
    root, _, last = base.rstrip("/").rpartition("/")
    return f"{root}/{REDIS_DB}" if last.isdigit() else f"{base.rstrip('/')}/{REDIS_DB}"


def _libpq(url: str) -> str:
    return url.replace("postgresql+psycopg://", "postgresql://", 1)


@contextmanager
def throwaway_database(admin_url: str) -> Iterator[str]:
    """A fresh PostgreSQL database for one run (its SQLAlchemy URL), dropped afterwards."""
    import psycopg

    name = f"mp_chaos_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(_libpq(admin_url), autocommit=True, connect_timeout=5) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    base, _, _ = admin_url.rpartition("/")
    try:
        yield f"{base}/{name}"
    finally:
        with psycopg.connect(_libpq(admin_url), autocommit=True, connect_timeout=5) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


class World:
    """The state folder, the engines' URLs, and the ``modelplane up`` process of one run."""

    def __init__(self, root: Path, database_url: str, redis_url: str, replicas: int = 2) -> None:
        self.root = root
        self.home = root / "home"
        self.database_url = database_url
        self.redis_url = redis_url
        self.replicas = replicas
        self.featureset = f"chaos-{uuid.uuid4().hex[:8]}"
        """The run's own feature set: runs at once share Redis database 7, not its rows."""
        self.cli_env = {
            "MODELPLANE_HOME": str(self.home),
            "MODELPLANE_DATABASE_URL": database_url,
            "MODELPLANE_FEATURE_STORE_URL": redis_url,
            "MODELPLANE_ACTOR": "chaos",
        }
        self.env = {**os.environ, **self.cli_env}
        self.port, self.api_port = free_port(), free_port()
        self.log_path = root / "up.log"
        self.process: subprocess.Popen[bytes] | None = None
        self.starts = 0
        self.seen: dict[int, tuple[int, str]] = {}
        """Every pid seen below ``up``: the start of ``up`` it belonged to, and its name.
        A worker whose forkserver was killed leaves ``up``'s tree but still serves it; one
        left behind by a killed ``up`` is found (and stopped) by pid."""
        self.stragglers: list[int] = []
        """Processes of ``up`` still alive :data:`STRAGGLE_S` after it stopped (then killed)."""
        self._log: IO[bytes] | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    # ------------------------------------------------------------------ the CLI

    def cli(self, *args: str) -> str:
        """``modelplane ARGS`` in this process (a new process per command costs 2-3 s of
        imports on a loaded two-core machine); its output. Raises on failure."""
        from typer.testing import CliRunner

        from modelplane.cli.main import app

        result = CliRunner().invoke(app, list(args), env=self.cli_env)
        if result.exit_code != 0:
            raise RuntimeError(
                f"modelplane {' '.join(args)}: exit {result.exit_code}: {result.output}"
            )
        return result.output

    def write(self, name: str, text: str) -> Path:
        path = self.root / name
        path.write_text(text)
        return path

    def endpoint_yaml(self, name: str, model: str) -> str:
        extra = FEATURES.format(set=self.featureset) if name == "gamma" else ""
        return ENDPOINT.format(name=name, model=model, replicas=self.replicas, extra=extra)

    # ------------------------------------------------------------------ set-up

    def build(self) -> None:
        """Packages pushed, the feature set applied and filled, the endpoints applied."""
        self.home.mkdir(parents=True, exist_ok=True)
        sample = {"a": np.zeros(4), "b": np.zeros(4)}
        built = (
            ("alpha", models.Alpha()),
            ("alpha", models.AlphaNext()),
            ("beta", models.Beta()),
            ("beta", models.BetaNext()),
            ("gamma", models.Gamma()),
            ("broken", story_models.BrokenInWorker()),
        )
        self.trust_a_signing_key()
        for index, (name, model) in enumerate(built):
            made = package(
                model,
                name=name,
                output_dir=self.root / f"pkg{index}",
                runtime="python",
                sample_input=sample,
            )
            self.cli("push", str(made.path), "--sign", SIGNER)
        rows = [
            {"key": key, "event_time": time.time(), "values": {"b": float(key % 7 - 3)}}
            for key in range(CUSTOMERS)
        ]
        featureset = FEATURE_SET.format(set=self.featureset)
        self.cli("apply", "-f", str(self.write("featureset.yaml", featureset)))
        rows_path = self.write("rows.jsonl", "\n".join(json.dumps(row) for row in rows))
        self.cli("features", "push", f"{self.featureset}:1", "-f", str(rows_path))
        endpoints = "---".join(self.endpoint_yaml(name, f"{name}:1") for name in ENDPOINTS)
        self.cli("apply", "-f", str(self.write("endpoints.yaml", endpoints)))
        self.write("rollout.yaml", ROLLOUT)

    def trust_a_signing_key(self) -> None:
        """Python-runtime models run code when loaded: they serve only when signed by a key
        the policy trusts for code. The policy turns degradation off: shedding under the
        suite's own load would be a cause of failure no fault injected."""
        public = json.loads(self.cli("keys", "create", SIGNER, "--json"))["public_key"]
        policy = (
            "kind: Policy\ndegradation: {steps: []}\n"
            f"trusted_keys: [{{name: {SIGNER}, public_key: '{public}', trusted_for: [code]}}]\n"
        )
        self.cli("apply", "-f", str(self.write("policy.yaml", policy)))

    # ------------------------------------------------------------------ modelplane up

    def start_up(self) -> float:
        """Start ``modelplane up`` on the run's ports; when it was started (monotonic)."""
        if self._log is None:
            self._log = self.log_path.open("ab")
        self.starts += 1
        self._log.write(f"\n===== start {self.starts} at {time.time():.3f}\n".encode())
        self._log.flush()
        started = time.monotonic()
        self.process = subprocess.Popen(
            [CLI, "up", "--port", str(self.port), "--api-port", str(self.api_port)],
            env=self.env,
            stdout=self._log,
            stderr=subprocess.STDOUT,
        )
        return started

    @property
    def up_pid(self) -> int:
        assert self.process is not None, "modelplane up is not running"
        return self.process.pid

    def live_pid(self) -> int | None:
        """``up``'s pid while it runs."""
        process = self.process
        return process.pid if process is not None and process.poll() is None else None

    def token(self) -> str | None:
        """The token predictions send, if ``up`` keeps one for its operator: read where the
        CLI reads it (``MODELPLANE_HOME/token``)."""
        from modelplane.security.tokens import read_token_file

        return read_token_file(self.home / "token")

    def kill_up(self) -> float:
        """SIGKILL ``up`` (its workers are left to notice by themselves); when (monotonic)."""
        assert self.process is not None
        self.process.send_signal(signal.SIGKILL)
        killed = time.monotonic()
        self.process.wait(timeout=30)
        return killed

    def workers(self) -> dict[int, str]:
        """Processes of the running ``up``: pid to name (workers take their endpoint's).
        Its descendants, and those seen below it before that still live under their name."""
        if self.process is None or self.process.poll() is not None:
            return {}
        found = {pid: name_of(pid) for pid in descendants(self.up_pid)}
        for pid, (start, name) in list(self.seen.items()):
            if start == self.starts and pid not in found and alive(pid) and name_of(pid) == name:
                found[pid] = name
        for pid, name in found.items():
            self.seen.setdefault(pid, (self.starts, name))
        return found

    def workers_of(self, endpoint: str) -> list[int]:
        wanted = models.process_name(endpoint)
        return [pid for pid, name in self.workers().items() if name == wanted]

    def leftovers(self) -> list[int]:
        """Processes of an earlier ``up`` that still live."""
        return sorted(
            pid
            for pid, (start, name) in self.seen.items()
            if start != self.starts and alive(pid) and name_of(pid) == name
        )

    def survivors(self) -> list[int]:
        """Every process ever seen below ``up`` that still lives (once ``up`` is stopped:
        none should)."""
        return sorted(
            pid for pid, (_, name) in self.seen.items() if alive(pid) and name_of(pid) == name
        )

    def stop(self) -> int | None:
        """SIGTERM ``up`` (it drains), SIGKILL if it takes over a minute; then stop any
        process it left behind. Its exit code."""
        code = None
        if self.process is not None:
            self.workers()
            if self.process.poll() is None:
                self.process.send_signal(signal.SIGTERM)
            try:
                code = self.process.wait(timeout=60)
            except subprocess.TimeoutExpired:
                self.process.kill()
                code = self.process.wait(timeout=30)
        deadline = time.monotonic() + STRAGGLE_S
        while self.survivors() and time.monotonic() < deadline:
            time.sleep(0.05)
        self.stragglers = self.survivors()
        for pid in self.stragglers:
            with suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        if self._log is not None:
            self._log.close()
            self._log = None
        return code

    def log_tail(self, lines: int = 40) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return ""

    def drop_feature_rows(self) -> None:
        import redis

        client = redis.Redis.from_url(self.redis_url, socket_connect_timeout=3)
        try:
            keys = list(client.scan_iter(match=f"mp:fs:{self.featureset}:*", count=1000))
            if keys:
                client.delete(*keys)
        finally:
            client.close()
