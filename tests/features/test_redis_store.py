"""What only the Redis online store has: its row layout, and connections it reads on."""

from __future__ import annotations

import uuid
from collections.abc import Iterator

import pytest
import redis

from modelplane.errors import StoreUnavailable
from modelplane.features.base import WriteResult
from modelplane.features.redis import RedisOnlineStore

pytestmark = pytest.mark.timeout(60)

NOW = 1_700_000_000.0


@pytest.fixture
def client(redis_url: str) -> Iterator[redis.Redis]:
    made = redis.Redis.from_url(redis_url)
    yield made
    made.close()


def test_a_row_of_the_old_hash_layout_reads_missing_and_is_replaced(
    redis_url: str, client: redis.Redis
) -> None:
    store = RedisOnlineStore(redis_url)
    try:
        key = store.row_key("tx", 1, "c1")
        client.hset(key, mapping={"__ts": repr(NOW), "amount": b"\xcb"})
        [before] = store.read("tx", 1, ["c1"], ["amount"], NOW)
        assert not before.found
        assert store.write("tx", 1, [("c1", NOW - 100, {"amount": 2.5})]) == WriteResult(1, 0)
        [after] = store.read("tx", 1, ["c1"], ["amount"], NOW)
        assert after.values == {"amount": 2.5}
    finally:
        store.close()


def test_a_read_survives_the_server_closing_an_idle_connection(
    redis_url: str, client: redis.Redis
) -> None:
    name = f"mp-test-{uuid.uuid4().hex[:8]}"
    store = RedisOnlineStore(f"{redis_url}?client_name={name}")
    try:
        store.write("tx", 1, [("c1", NOW, {"count": 1})])
        assert store.read("tx", 1, ["c1"], ["count"], NOW)[0].values == {"count": 1}
        mine = [c for c in client.client_list() if c.get("name") == name]
        assert mine
        for connection in mine:
            client.client_kill_filter(_id=connection["id"])
        assert store.read("tx", 1, ["c1"], ["count"], NOW)[0].values == {"count": 1}
    finally:
        store.close()


def test_a_closed_store_reads_nothing(redis_url: str) -> None:
    store = RedisOnlineStore(redis_url)
    store.read("tx", 1, ["c1"], ["count"], NOW)
    store.close()
    with pytest.raises(StoreUnavailable, match="closed"):
        store.read("tx", 1, ["c1"], ["count"], NOW)


def test_an_unreachable_redis_is_a_typed_error() -> None:
    store = RedisOnlineStore("redis://127.0.0.1:1/0", timeout_s=0.5)
    try:
        with pytest.raises(StoreUnavailable, match="unavailable"):
            store.read("tx", 1, ["c1"], ["count"], NOW)
    finally:
        store.close()
