"""The faults the suite injects, each as an operator or a bad day would cause it.

Each fault returns a :class:`Fault`: what was done, to which endpoint, and its window
(``start`` to ``end``, ``time.monotonic()``). ``target`` is the one endpoint the fault may
make fail, :data:`ALL` when every endpoint may fail (``up`` itself was killed), or ``None``
when no request should fail at all (the platform is meant to absorb it: a database that
drops its connections, idle sockets at the edge).
"""

from __future__ import annotations

import os
import random
import signal
import socket
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from urllib.parse import urlsplit

from tests.chaos.load import Load
from tests.chaos.procs import children_of, command_of, local_ports_to
from tests.chaos.world import ENDPOINTS, NEXT_VERSION, World

__all__ = ["ALL", "FAULTS", "Fault", "FaultSettings", "Injector"]

ALL = "*"


@dataclass(slots=True)
class Fault:
    kind: str
    target: str | None
    start: float
    end: float
    detail: str = ""
    watched: tuple[str, ...] = ()
    """The endpoints whose recovery is measured (set by the engine)."""
    cleanup: Callable[[], None] | None = None
    """What undoes the fault's leftovers once every endpoint answers (set by the fault)."""
    load_avg: float = 0.0
    """The machine's 1-minute load average as the fault began: recovery times on a busy
    two-core machine are read against it."""
    left_behind: list[int] = field(default_factory=list)
    """For a restart: processes of the killed ``up`` still alive once the new one serves."""


@dataclass(frozen=True, slots=True)
class FaultSettings:
    stop_s: float = 3.0
    """How long a stopped worker stays stopped."""
    broken_s: float = 5.0
    """How long the broken endpoint stays applied."""
    canary_wait_s: float = 30.0
    """How long a rollout may take to get a canary answer before it is rolled back."""
    postgres_s: float = 3.0
    """How long PostgreSQL connections keep being terminated."""
    redis_s: float = 2.0
    """How long Redis connections keep being killed."""
    flood_sockets: int = 2000
    flood_s: float = 5.0
    """How long the idle sockets stay open."""


class Injector:
    """Injects faults into ``world`` under ``load``, choices drawn from ``rng``."""

    def __init__(
        self, world: World, load: Load, rng: random.Random, settings: FaultSettings
    ) -> None:
        self.world, self.load, self.rng, self.settings = world, load, rng, settings

    def kill_workers(self) -> Fault:
        """SIGKILL every worker of one endpoint (both replicas)."""
        endpoint = self.rng.choice(ENDPOINTS)
        pids = self.world.workers_of(endpoint)
        now = time.monotonic()
        for pid in pids:
            _signal(pid, signal.SIGKILL)
        return Fault("kill-workers", endpoint, now, now, f"SIGKILL pids {pids}")

    def kill_forkserver(self) -> Fault:
        """SIGKILL the process workers are forked from (multiprocessing's forkserver), then
        both workers of one endpoint: their restart needs a new one."""
        endpoint = self.rng.choice(ENDPOINTS)
        pids = self.world.workers_of(endpoint)
        # up's own children only: the workers it forked share the forkserver's command line
        servers = [
            pid
            for pid in children_of().get(self.world.up_pid, [])
            if "multiprocessing.forkserver" in command_of(pid)
        ]
        now = time.monotonic()
        for pid in sorted(servers):
            _signal(pid, signal.SIGKILL)
        for pid in pids:
            _signal(pid, signal.SIGKILL)
        detail = f"SIGKILL forkserver {sorted(servers)}, then workers {pids}"
        return Fault("kill-forkserver", endpoint, now, now, detail)

    def stop_worker(self) -> Fault:
        """SIGSTOP one worker of one endpoint for a few seconds, then SIGCONT."""
        endpoint = self.rng.choice(ENDPOINTS)
        pids = self.world.workers_of(endpoint)
        if not pids:
            now = time.monotonic()
            return Fault("stop-worker", endpoint, now, now, "no worker found")
        pid = self.rng.choice(pids)
        start = time.monotonic()
        _signal(pid, signal.SIGSTOP)
        time.sleep(self.settings.stop_s)  # the fault's own duration
        resumed = _signal(pid, signal.SIGCONT)
        detail = f"pid {pid} stopped {self.settings.stop_s:g}s" + (
            "" if resumed else " (gone before SIGCONT: the gateway replaced it)"
        )
        return Fault("stop-worker", endpoint, start, time.monotonic(), detail)

    def broken_endpoint(self) -> Fault:
        """Apply an endpoint whose model fails to load in every worker, then delete it."""
        start = time.monotonic()
        self._apply_broken()
        time.sleep(self.settings.broken_s)  # the fault's own duration
        self._delete_broken()
        return Fault("broken-endpoint", "broken", start, time.monotonic(), "broken:1 applied")

    def rollout_rollback(self) -> Fault:
        """Start a rollout to an endpoint's next version, wait for canary answers, roll back."""
        endpoint = self.rng.choice(sorted(NEXT_VERSION))
        canary = NEXT_VERSION[endpoint]
        start = time.monotonic()
        rollout = str(self.world.root / "rollout.yaml")
        self.world.cli("rollout", endpoint, "--to", canary, "-f", rollout)
        seen = self._wait(
            lambda: self._answered_by(endpoint, canary, start), self.settings.canary_wait_s
        )
        self.world.cli("rollback", endpoint, "--reason", "chaos: rollback")
        detail = f"to {canary}, " + (
            f"canary answered after {seen - start:.1f}s"
            if seen
            else f"no canary answer in {self.settings.canary_wait_s:g}s"
        )
        return Fault("rollout-rollback", endpoint, start, time.monotonic(), detail)

    def restart_up(self) -> Fault:
        """SIGKILL ``modelplane up`` and start it again on the same ports. Every other time
        (the first included), with a broken endpoint in the store: the restart must serve
        every other endpoint all the same (issue 10, item 1), deleted once they answer."""
        broken = self.world.starts % 2 == 1
        if broken:
            self._apply_broken()
        killed = self.world.kill_up()
        started = self.world.start_up()
        detail = f"start {self.world.starts}" + (", broken:1 in the store" if broken else "")
        fault = Fault("restart-up", ALL, killed, started, detail)
        if broken:
            fault.cleanup = self._delete_broken
        return fault

    def _apply_broken(self) -> None:
        path = self.world.write("broken.yaml", self.world.endpoint_yaml("broken", "broken:1"))
        self.world.cli("apply", "-f", str(path))

    def _delete_broken(self) -> None:
        self.world.cli("delete", "endpoint", "broken", "--reason", "chaos: broken endpoint")

    def terminate_postgres(self) -> Fault:
        """Terminate every PostgreSQL connection to the run's database, again and again for
        a few seconds (controllers and the prediction log reconnect in between)."""
        import psycopg

        url = self.world.database_url.replace("postgresql+psycopg://", "postgresql://", 1)
        name = urlsplit(url).path.lstrip("/")
        admin = url.rsplit("/", 1)[0] + "/postgres"
        start = time.monotonic()
        terminated = rounds = 0
        with psycopg.connect(admin, autocommit=True, connect_timeout=5) as conn:
            while time.monotonic() - start < self.settings.postgres_s:
                terminated += len(
                    conn.execute(
                        "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                        "WHERE datname = %s AND pid <> pg_backend_pid()",
                        (name,),
                    ).fetchall()
                )
                rounds += 1
                time.sleep(0.2)  # the fault's own pace
        detail = f"{terminated} connections terminated in {rounds} rounds"
        return Fault("terminate-postgres", None, start, time.monotonic(), detail)

    def kill_redis_clients(self) -> Fault:
        """``CLIENT KILL`` every Redis connection ``up`` holds (the feature join's), again
        and again for a few seconds, so that some die idle and some with a read in flight."""
        import redis

        parts = urlsplit(self.world.redis_url)
        client = redis.Redis.from_url(self.world.redis_url, socket_connect_timeout=3)
        start = time.monotonic()
        killed = rounds = 0
        try:
            while time.monotonic() - start < self.settings.redis_s:
                ports = local_ports_to(self.world.up_pid, parts.port or 6379)
                for info in client.client_list():
                    if int(str(info.get("addr", ":0")).rsplit(":", 1)[1]) in ports:
                        killed += int(client.client_kill_filter(_id=info["id"]))
                rounds += 1
                time.sleep(0.02)  # the fault's own pace
        finally:
            client.close()
        detail = f"{killed} connections killed in {rounds} rounds"
        return Fault("kill-redis-clients", "gamma", start, time.monotonic(), detail)

    def idle_flood(self) -> Fault:
        """Open thousands of idle connections to the gateway, hold them, close them."""
        count = self.settings.flood_sockets
        opened: list[socket.socket] = []
        refused = 0
        start = time.monotonic()
        try:
            for _ in range(count):
                try:
                    opened.append(socket.create_connection(("127.0.0.1", self.world.port), 2.0))
                except OSError:
                    refused += 1
            time.sleep(self.settings.flood_s)  # the fault's own duration
        finally:
            for sock in opened:
                sock.close()
        detail = f"{len(opened)} idle sockets held {self.settings.flood_s:g}s, {refused} refused"
        return Fault("idle-flood", None, start, time.monotonic(), detail)

    def _answered_by(self, endpoint: str, version: str, since: float) -> bool:
        # newest first: the canary's answers are at the end of the list
        for outcome in reversed(self.load.outcomes):
            if outcome.sent < since:
                return False
            if outcome.endpoint == endpoint and outcome.version == version:
                return True
        return False

    @staticmethod
    def _wait(check: Callable[[], bool], timeout_s: float) -> float | None:
        """Poll ``check`` until true (when, monotonic) or ``timeout_s`` passes (``None``)."""
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if check():
                return time.monotonic()
            time.sleep(0.05)
        return None


FAULTS: dict[str, Callable[[Injector], Fault]] = {
    "kill-workers": Injector.kill_workers,
    "kill-forkserver": Injector.kill_forkserver,
    "stop-worker": Injector.stop_worker,
    "broken-endpoint": Injector.broken_endpoint,
    "rollout-rollback": Injector.rollout_rollback,
    "restart-up": Injector.restart_up,
    "terminate-postgres": Injector.terminate_postgres,
    "kill-redis-clients": Injector.kill_redis_clients,
    "idle-flood": Injector.idle_flood,
}
"""Every fault kind, by name."""


def _signal(pid: int, sig: signal.Signals) -> bool:
    try:
        os.kill(pid, sig)
    except ProcessLookupError:
        return False
    return True
