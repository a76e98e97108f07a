"""Shared fixtures: real PostgreSQL and Redis on loopback.

A test that needs a server it cannot reach skips with the reason, except under ``CI=true``,
where it fails: CI must exercise the real engines.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator

import pytest

POSTGRES_URL = os.environ.get(
    "MODELPLANE_TEST_POSTGRES_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/postgres"
)


def _worker_redis_url(base: str, worker: str | None) -> str:
    """``base`` on a database of its own per pytest-xdist worker (``gw0`` keeps ``base``'s,
    ``gw1`` the next): each test flushes its database, which must not be another's."""
    if not worker or not worker.startswith("gw"):
        return base
    root, _, last = base.rstrip("/").rpartition("/")
    if not last.isdigit():
        root, last = base.rstrip("/"), "0"
    return f"{root}/{int(last) + int(worker[2:])}"


REDIS_URL = _worker_redis_url(
    os.environ.get("MODELPLANE_TEST_REDIS_URL", "redis://127.0.0.1:6379/0"),
    os.environ.get("PYTEST_XDIST_WORKER"),
)


def unavailable(reason: str) -> None:
    """Skip, or fail under CI where every engine must be present."""
    if os.environ.get("CI", "").lower() == "true":
        pytest.fail(f"{reason} (CI=true: engine tests must run, not skip)")
    pytest.skip(reason)


def _libpq_url(url: str) -> str:
    return url.replace("postgresql+psycopg://", "postgresql://", 1)


@pytest.fixture(scope="session")
def postgres_admin_url() -> str:
    import psycopg

    try:
        with psycopg.connect(_libpq_url(POSTGRES_URL), connect_timeout=3):
            pass
    except psycopg.OperationalError as exc:
        unavailable(f"PostgreSQL not reachable at {POSTGRES_URL}: {exc}")
    return POSTGRES_URL


@pytest.fixture
def postgres_url(postgres_admin_url: str) -> Iterator[str]:
    """A fresh, empty database for one test, dropped afterwards."""
    import psycopg

    name = f"mp_test_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(_libpq_url(postgres_admin_url), autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    base, _, _ = postgres_admin_url.rpartition("/")
    yield f"{base}/{name}"
    with psycopg.connect(_libpq_url(postgres_admin_url), autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@pytest.fixture
def sqlite_url(tmp_path: object) -> str:
    return f"sqlite:///{tmp_path}/state.db"


@pytest.fixture(params=["sqlite", "postgres"])
def database_url(request: pytest.FixtureRequest) -> str:
    """Runs the test once on SQLite and once on PostgreSQL."""
    name = "sqlite_url" if request.param == "sqlite" else "postgres_url"
    return str(request.getfixturevalue(name))


@pytest.fixture
def redis_url() -> Iterator[str]:
    """A Redis database flushed before and after the test."""
    import redis

    client = redis.Redis.from_url(REDIS_URL, socket_connect_timeout=3)
    try:
        client.ping()
    except redis.RedisError as exc:
        unavailable(f"Redis not reachable at {REDIS_URL}: {exc}")
    client.flushdb()
    yield REDIS_URL
    client.flushdb()
    client.close()
