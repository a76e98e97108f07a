"""The steady load on the endpoints, and the memory of ``up``'s process tree over time.

:class:`Load` runs one thread per endpoint, each sending requests at a fixed pace over one
keep-alive connection (``httpx``, loopback only) and recording every outcome: when it was
sent and answered, the status (0 when no HTTP answer came) and the error code (the body's
``error.code``, or the transport error's name). A thread never bursts to catch up after a
slow answer: it keeps its pace or falls behind, like a client with a fixed request budget.

:class:`MemorySampler` reads, once a second, the resident memory of ``up`` and of every
process below it (its workers and their forkserver) from ``/proc``.
"""

from __future__ import annotations

import random
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import httpx
from tests.chaos.procs import rss_bytes

__all__ = ["Load", "MemorySample", "MemorySampler", "Outcome", "request_body"]

REQUEST_TIMEOUT_S = 10.0


@dataclass(frozen=True, slots=True)
class Outcome:
    """One request as its client saw it; times are ``time.monotonic()``."""

    sent: float
    done: float
    endpoint: str
    status: int
    """HTTP status, 0 when the request got no HTTP answer."""
    code: str
    """The error's code (``not_ready``, ``worker_failed``...) or transport error's name."""
    version: str


def request_body(endpoint: str, rng: random.Random) -> dict[str, object]:
    a = rng.gauss(0.0, 1.0)
    if endpoint == "gamma":  # b is joined from the online store by customer_id
        return {"instances": [{"a": a, "customer_id": rng.randrange(100)}]}
    return {"instances": [{"a": a, "b": rng.gauss(0.0, 1.0)}]}


def _error_code(response: httpx.Response) -> str:
    try:
        return str(response.json()["error"]["code"])
    except (ValueError, KeyError, TypeError):
        return f"http_{response.status_code}"


class Load:
    """Paced requests to each endpoint, one thread each, until :meth:`stop`."""

    def __init__(
        self,
        url: str,
        endpoints: Sequence[str],
        rate_per_s: float,
        *,
        seed: int = 0,
        token: Callable[[], str | None] = lambda: None,
    ) -> None:
        self.url = url
        self.interval_s = 1.0 / rate_per_s
        self.outcomes: list[Outcome] = []
        self.last_ok: dict[str, float] = {}
        """Per endpoint, when the latest request that got a 200 was sent."""
        self._token = token
        self._stop = threading.Event()
        self._threads = [
            threading.Thread(
                target=self._run,
                args=(name, random.Random(f"{seed}:{name}")),
                name=f"load-{name}",
                daemon=True,
            )
            for name in endpoints
        ]

    def start(self) -> None:
        for thread in self._threads:
            thread.start()

    def stop(self) -> None:
        self._stop.set()
        for thread in self._threads:
            thread.join(timeout=REQUEST_TIMEOUT_S + 5)

    def _run(self, endpoint: str, rng: random.Random) -> None:
        target = f"{self.url}/v1/endpoints/{endpoint}:predict"
        next_at = time.monotonic()
        with httpx.Client(timeout=REQUEST_TIMEOUT_S) as http:
            while not self._stop.is_set():
                token = self._token()
                headers = {"authorization": f"Bearer {token}"} if token else {}
                sent = time.monotonic()
                try:
                    response = http.post(target, json=request_body(endpoint, rng), headers=headers)
                except httpx.TransportError as exc:
                    status, code, version = 0, type(exc).__name__, ""
                else:
                    status = response.status_code
                    code = "" if status == 200 else _error_code(response)
                    version = response.headers.get("modelplane-model-version", "")
                done = time.monotonic()
                self.outcomes.append(Outcome(sent, done, endpoint, status, code, version))
                if status == 200:
                    self.last_ok[endpoint] = sent
                # keep the pace; a late answer delays the next request, never doubles it
                next_at = max(next_at + self.interval_s, done)
                self._stop.wait(max(0.0, next_at - time.monotonic()))

    def ok_since(self, endpoint: str, since: float) -> bool:
        """Whether a request sent at or after ``since`` got a 200 from ``endpoint``."""
        return self.last_ok.get(endpoint, -1.0) >= since


@dataclass(frozen=True, slots=True)
class MemorySample:
    at: float
    up_bytes: int
    """Resident memory of ``up`` itself (the gateway, API and controllers)."""
    workers_bytes: int
    """Summed over every process below ``up``: workers and the forkserver."""
    processes: int
    """How many processes are below ``up``."""


class MemorySampler:
    """Samples ``up``'s tree once a second, while ``up`` runs, until :meth:`stop`."""

    def __init__(self, up_pid: Callable[[], int | None], below: Callable[[], list[int]]) -> None:
        self.samples: list[MemorySample] = []
        self._up_pid = up_pid
        self._below = below
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="memory", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=10)

    def _run(self) -> None:
        while not self._stop.wait(1.0):
            pid = self._up_pid()
            if pid is None:
                continue  # between a kill and a restart
            below = self._below()
            up = rss_bytes([pid])
            if up:
                self.samples.append(
                    MemorySample(time.monotonic(), up, rss_bytes(below), len(below))
                )
