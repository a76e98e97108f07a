"""The chaos suite's short form: each fault once, in a seeded random order, under steady load
on three endpoints of ``modelplane up`` (PostgreSQL state, Redis features).

No request may fail except on the endpoint a fault was injected into, while that fault
lasts and until the endpoint answers again (any endpoint while ``up`` restarts); every
fault must be followed by every endpoint answering again within a generous bound. The real
recovery times, against issue 10's aims, are ``bench/soak.py``'s to report.
"""

from __future__ import annotations

import os

import pytest
from rich.console import Console
from tests.chaos.engine import ChaosConfig, chaos_world, run_chaos
from tests.chaos.faults import FAULTS
from tests.chaos.world import chaos_redis_url
from tests.conftest import REDIS_URL, unavailable

# the short form takes 1-2 minutes; the bound leaves room for every fault to hit its 30 s limit
pytestmark = [pytest.mark.chaos, pytest.mark.timeout(480)]

SEED = int(os.environ.get("MODELPLANE_CHAOS_SEED", "10"))


@pytest.fixture
def chaos_redis() -> str:
    import redis

    url = chaos_redis_url(REDIS_URL)
    client = redis.Redis.from_url(url, socket_connect_timeout=3)
    try:
        client.ping()
    except redis.RedisError as exc:
        unavailable(f"Redis not reachable at {url}: {exc}")
    finally:
        client.close()
    return url


def test_every_fault_costs_only_its_own_endpoint_and_is_recovered_from(
    postgres_admin_url: str, chaos_redis: str
) -> None:
    console = Console(width=160, force_terminal=False)
    with chaos_world(postgres_admin_url, chaos_redis) as world:
        report = run_chaos(world, ChaosConfig(seed=SEED), console)
        code = world.stop()
        stragglers = world.stragglers
        log = world.log_tail(80)
    report.print(console)

    assert sorted(f.kind for f in report.faults) == sorted(FAULTS)
    assert report.answered > 0
    assert report.lost == 0, (
        f"{report.lost} requests failed outside any fault's endpoint and window (seed {SEED}): "
        f"{report.unattributed_examples}\n{log}"
    )
    assert not report.unrecovered, f"not serving again within 30 s: {report.unrecovered}\n{log}"
    # a rollout and its rollback cost the endpoint nothing (issue 4), its own endpoint included
    assert [f.failures for f in report.faults if f.kind == "rollout-rollback"] == [0]
    # a killed up's workers and forkserver exit by themselves: nothing leaks across a restart
    assert [f.left_behind for f in report.faults if f.kind == "restart-up"] == [[]]
    assert code == 0, log  # a graceful stop after all of it
    assert stragglers == [], f"processes of up alive 10 s after it stopped: {stragglers}"
