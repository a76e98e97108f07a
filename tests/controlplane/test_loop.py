"""The controller loop survives whatever one pass raises, backs off, and keeps reconciling,
also when PostgreSQL terminates its connections."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from typing import TypeVar

import pytest
from sqlalchemy import text

from modelplane.controlplane.loop import backoff_s, every, keep_running
from modelplane.errors import StoreUnavailable
from modelplane.store.db import open_engine, read_session
from modelplane.store.resources import ResourceStore

T = TypeVar("T")
log = logging.getLogger("test.loop")


def run(scenario: Callable[[], Awaitable[T]], timeout_s: float = 60.0) -> T:
    async def bounded() -> T:
        return await asyncio.wait_for(scenario(), timeout_s)

    return asyncio.run(bounded())


async def wait_until(check: Callable[[], bool], timeout_s: float = 20.0) -> None:
    end = time.monotonic() + timeout_s
    while not check():
        assert time.monotonic() < end, "condition not reached in time"
        await asyncio.sleep(0.01)


@pytest.mark.parametrize(
    ("failures", "expected"),
    [(0, 1.0), (1, 1.0), (2, 2.0), (3, 4.0), (4, 8.0), (5, 10.0), (60, 10.0), (10_000, 10.0)],
)
def test_backoff_doubles_from_the_interval_up_to_the_cap(failures: int, expected: float) -> None:
    assert backoff_s(1.0, failures, 10.0) == expected


def test_a_cap_below_the_interval_keeps_the_interval() -> None:
    assert backoff_s(5.0, 3, 1.0) == 5.0


def test_any_exception_is_logged_and_the_loop_goes_on(caplog: pytest.LogCaptureFixture) -> None:
    raised: list[BaseException] = [
        OSError(24, "Too many open files"),
        RuntimeError("a bug"),
        StoreUnavailable("state store unavailable: server closed the connection"),
        KeyError("gone"),
    ]
    passes = 0

    async def one_pass() -> None:
        nonlocal passes
        passes += 1
        if raised:
            raise raised.pop(0)

    async def scenario() -> None:
        stop = asyncio.Event()
        task = asyncio.create_task(
            every(stop, 0.001, one_pass, log=log, what="test pass", max_backoff_s=0.004)
        )
        await wait_until(lambda: passes >= 7)
        assert not task.done()
        stop.set()
        await asyncio.wait_for(task, 5.0)

    with caplog.at_level(logging.WARNING, logger="test.loop"):
        run(scenario)
    messages = [r.getMessage() for r in caplog.records]
    # failures 1, 2 and 4 of the streak are logged, the 3rd is thinned out
    assert [m.split(":")[0] for m in messages[:3]] == [
        "test pass failed (1 in a row, next try in 0.001s)",
        "test pass failed (2 in a row, next try in 0.002s)",
        "test pass failed (4 in a row, next try in 0.004s)",
    ]
    assert "OSError" in messages[0]
    assert "KeyError" in messages[2]
    assert messages[3] == "test pass recovered after 4 failed passes"
    assert caplog.records[0].exc_info is not None  # an unexpected error shows where it came from


def test_cancellation_still_ends_the_loop() -> None:
    async def one_pass() -> None:
        await asyncio.sleep(3600)

    async def scenario() -> None:
        task = asyncio.create_task(every(asyncio.Event(), 1.0, one_pass, log=log, what="x"))
        await asyncio.sleep(0)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await asyncio.wait_for(task, 5.0)

    run(scenario)


# ------------------------------------------------------------------ against PostgreSQL


class StatusMirror:
    """A small level-triggered controller: each pass reads every endpoint's spec and writes
    the generation it saw into its status, through the same store calls real ones use, after
    a slow query that a test can catch in flight."""

    def __init__(self, resources: ResourceStore) -> None:
        self.resources = resources
        self.passes = 0
        self.failed = 0
        self.seen: dict[str, int] = {}

    async def reconcile(self) -> None:
        self.passes += 1
        try:
            await asyncio.to_thread(self._slow_query)
            for resource in await asyncio.to_thread(self.resources.list, "Endpoint"):
                status = {"observed_generation": resource.generation}
                await asyncio.to_thread(
                    self.resources.set_status, "Endpoint", resource.name, status
                )
                self.seen[resource.name] = resource.generation
        except Exception:
            self.failed += 1
            raise

    def _slow_query(self) -> None:
        with read_session(self.resources.engine) as session:
            session.execute(text("SELECT pg_sleep(0.2)"))


def terminate_backends(admin_url: str, database: str) -> int:
    """End every session on ``database`` but ours, as a PostgreSQL restart would, once one of
    them is running a query (bounded wait)."""
    import psycopg

    url = admin_url.replace("postgresql+psycopg://", "postgresql://", 1)
    with psycopg.connect(url, autocommit=True) as conn:
        end = time.monotonic() + 10.0
        while time.monotonic() < end:
            busy = conn.execute(
                "SELECT count(*) FROM pg_stat_activity WHERE datname = %s AND state = 'active'"
                " AND pid <> pg_backend_pid()",
                (database,),
            ).fetchone()
            if busy is not None and busy[0] > 0:
                break
            time.sleep(0.005)
        rows = conn.execute(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity"
            " WHERE datname = %s AND pid <> pg_backend_pid()",
            (database,),
        ).fetchall()
    return len(rows)


@pytest.mark.postgres
def test_a_controller_keeps_reconciling_after_postgres_drops_its_connections(
    postgres_url: str, postgres_admin_url: str
) -> None:
    database = postgres_url.rpartition("/")[2]
    engine = open_engine(postgres_url)
    resources = ResourceStore(engine)
    resources.apply("Endpoint", "fraud-score", {"replicas": 1}, actor="alice")
    controller = StatusMirror(resources)

    def passes_from(count: int) -> Callable[[], bool]:
        return lambda: controller.passes >= count

    async def scenario() -> None:
        stop = asyncio.Event()
        task = asyncio.create_task(
            every(stop, 0.02, controller.reconcile, log=log, what="mirror", max_backoff_s=0.1)
        )
        await wait_until(lambda: controller.seen.get("fraud-score") == 1)
        terminated = 0
        for _ in range(3):  # each lands on a query in flight and on idle pooled connections
            terminated += await asyncio.to_thread(terminate_backends, postgres_admin_url, database)
            await wait_until(passes_from(controller.passes + 2))
        assert terminated > 0
        assert controller.failed > 0
        assert not task.done()
        # a change applied after the outage is still picked up by the same loop
        await asyncio.to_thread(
            resources.apply, "Endpoint", "fraud-score", {"replicas": 2}, actor="alice"
        )
        await wait_until(lambda: controller.seen.get("fraud-score") == 2)
        stop.set()
        await asyncio.wait_for(task, 10.0)

    try:
        run(scenario)
        status = resources.get("Endpoint", "fraud-score").status
        assert status == {"observed_generation": 2}
    finally:
        engine.dispose()


def test_keep_running_restarts_a_controller_that_raises_or_returns(
    caplog: pytest.LogCaptureFixture,
) -> None:
    ends: list[BaseException | None] = [OSError(5, "I/O error"), None, RuntimeError("bug")]
    runs = 0
    steady_passes = 0

    async def flaky(stop: asyncio.Event) -> None:
        nonlocal runs
        runs += 1
        if ends:
            end = ends.pop(0)
            if end is not None:
                raise end
            return
        await stop.wait()

    async def steady(stop: asyncio.Event) -> None:
        nonlocal steady_passes
        while not stop.is_set():
            steady_passes += 1
            await asyncio.sleep(0.001)

    async def scenario() -> None:
        stop = asyncio.Event()
        both = asyncio.gather(
            keep_running(stop, flaky, log=log, what="flaky", retry_s=0.001, max_backoff_s=0.004),
            keep_running(stop, steady, log=log, what="steady"),
        )
        await wait_until(lambda: runs == 4)
        before = steady_passes
        await wait_until(lambda: steady_passes > before)  # the other one never stopped
        stop.set()
        await asyncio.wait_for(both, 5.0)

    with caplog.at_level(logging.ERROR, logger="test.loop"):
        run(scenario)
    messages = [r.getMessage() for r in caplog.records]
    assert (
        messages[0]
        == "flaky ended (1 in a row), restarting in 0.001s: OSError: [Errno 5] I/O error"
    )
    assert messages[1] == (
        "flaky ended (2 in a row), restarting in 0.002s: returned before it was asked to stop"
    )
    assert len(messages) == 2  # the 3rd in a row is thinned out
