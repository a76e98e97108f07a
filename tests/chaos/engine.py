"""The chaos engine: steady load on three endpoints of ``modelplane up`` while faults are
injected in a seeded random order; shared by the CI short form (``tests/chaos/
test_chaos.py``: each fault once) and the soak (``bench/soak.py``: rounds of every fault for
a bounded number of minutes).

One run:

1. :func:`chaos_world` makes the world (a throwaway PostgreSQL database, Redis as the online
   store, packages pushed and signed, endpoints applied; see ``world.py``);
2. :func:`run_chaos` starts ``up``, waits until every endpoint answers, starts the load and
   the memory sampler, warms up, then repeats: a calm pause, one fault, and a bounded wait
   until every endpoint it may have hurt answers 200 again;
3. the load stops and :func:`build_report` attributes every failure and measures every
   recovery (``report.py``).

Every wait is bounded: a fault that does not recover within ``recover_limit_s`` is reported
as such and the run goes on.
"""

from __future__ import annotations

import os
import random
import re
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path

import httpx
from rich.console import Console
from tests.chaos.faults import ALL, FAULTS, Fault, FaultSettings, Injector
from tests.chaos.load import Load, MemorySampler, request_body
from tests.chaos.report import ChaosReport, build_report
from tests.chaos.world import ENDPOINTS, World, throwaway_database

__all__ = ["ChaosConfig", "chaos_world", "run_chaos"]

READY_S = 120.0
"""How long ``up`` may take to serve every endpoint at the start of a run."""
_LOG_PROBLEM = re.compile(r"Traceback|ERROR|CRITICAL")


@dataclass(frozen=True, slots=True)
class ChaosConfig:
    seed: int = 10
    minutes: float | None = None
    """Run rounds of faults for this long; ``None``: each kind once (the short form)."""
    kinds: Sequence[str] = tuple(FAULTS)
    rate_per_s: float = 20.0
    """Requests per second to each endpoint."""
    warmup_s: float = 5.0
    calm_s: tuple[float, float] = (1.5, 2.5)
    """Pause before each fault, drawn uniformly from this range."""
    recover_limit_s: float = 30.0
    faults: FaultSettings = field(default_factory=FaultSettings)


@contextmanager
def chaos_world(admin_url: str, redis_url: str, root: Path | None = None) -> Iterator[World]:
    """A built world on a throwaway database, torn down afterwards (``up`` stopped, the
    database dropped, the feature rows deleted)."""
    with tempfile.TemporaryDirectory(prefix="chaos-") as tmp:
        folder = root or Path(tmp)
        folder.mkdir(parents=True, exist_ok=True)
        with throwaway_database(admin_url) as database_url:
            world = World(folder, database_url, redis_url)
            try:
                world.build()
                yield world
            finally:
                world.stop()
                world.drop_feature_rows()


def _wait(check: Callable[[], bool], timeout_s: float) -> bool:
    """Poll ``check()`` every 50 ms until true or ``timeout_s`` passes."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if check():
            return True
        time.sleep(0.05)
    return False


def _serves(world: World, endpoint: str) -> bool:
    token = world.token()
    try:
        response = httpx.post(
            f"{world.url}/v1/endpoints/{endpoint}:predict",
            json=request_body(endpoint, random.Random(0)),
            headers={"authorization": f"Bearer {token}"} if token else {},
            timeout=5,
        )
    except httpx.TransportError:
        return False
    return response.status_code == 200


def _recovered(load: Load, fault: Fault) -> bool:
    return all(load.ok_since(endpoint, fault.end) for endpoint in fault.watched)


def _plan(config: ChaosConfig, rng: random.Random) -> Iterator[str]:
    """Fault kinds in a seeded random order: each once, or rounds of all of them."""
    while True:
        kinds = list(config.kinds)
        rng.shuffle(kinds)
        yield from kinds
        if config.minutes is None:
            return


def _watched(fault: Fault) -> tuple[str, ...]:
    if fault.target in ENDPOINTS:
        assert fault.target is not None
        return (fault.target,)
    return ENDPOINTS  # ALL, None, or an endpoint without load: every endpoint must answer


def _log_problems(world: World, cap: int = 50) -> list[str]:
    try:
        lines = world.log_path.read_text(errors="replace").splitlines()
    except OSError:
        return []
    return [line for line in lines if _LOG_PROBLEM.search(line)][:cap]


def run_chaos(world: World, config: ChaosConfig, console: Console | None = None) -> ChaosReport:
    """Load, faults, report; ``up`` is left running for the caller to stop."""
    out = console or Console(stderr=True)
    rng = random.Random(config.seed)
    world.start_up()
    for endpoint in ENDPOINTS:
        if not _wait(partial(_serves, world, endpoint), READY_S):
            raise AssertionError(
                f"{endpoint} did not serve within {READY_S:g}s:\n{world.log_tail()}"
            )
    load = Load(world.url, ENDPOINTS, config.rate_per_s, seed=config.seed, token=world.token)
    sampler = MemorySampler(world.live_pid, lambda: list(world.workers()))
    injector = Injector(world, load, rng, config.faults)
    faults: list[Fault] = []
    started = warm = time.monotonic()
    deadline = None if config.minutes is None else started + config.minutes * 60
    load.start()
    sampler.start()
    try:
        time.sleep(config.warmup_s)  # load before the first fault, not a wait for a condition
        warm = time.monotonic()
        for kind in _plan(config, rng):
            time.sleep(rng.uniform(*config.calm_s))
            if deadline is not None and time.monotonic() >= deadline:
                break
            load_avg = os.getloadavg()[0]
            fault = FAULTS[kind](injector)
            fault.watched = _watched(fault)
            fault.load_avg = load_avg
            faults.append(fault)
            recovered = _wait(partial(_recovered, load, fault), config.recover_limit_s)
            if fault.cleanup is not None:
                fault.cleanup()
            if fault.target == ALL:
                fault.left_behind = world.leftovers()
                if fault.left_behind:
                    fault.detail += f"; processes of the killed up alive: {fault.left_behind}"
            out.print(
                f"[{time.monotonic() - started:7.1f}s] {fault.kind} -> {fault.target}: "
                f"{fault.detail}{'' if recovered else ' [NOT RECOVERED]'}",
                markup=False,
            )
        time.sleep(rng.uniform(*config.calm_s))
    finally:
        load.stop()
        sampler.stop()
    return build_report(
        load.outcomes,
        faults,
        sampler.samples,
        started=started,
        warm=warm,
        limit_s=config.recover_limit_s,
        log_errors=_log_problems(world),
    )
