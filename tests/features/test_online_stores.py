"""One contract suite for every online store: memory, SQLite, PostgreSQL and real Redis."""

from __future__ import annotations

import random
import threading
from collections.abc import Iterator

import pytest

from modelplane.features.base import OnlineStore, WriteResult
from modelplane.features.memory import MemoryOnlineStore

NOW = 1_700_000_000.0
FEATURES = ("amount", "country", "count")


@pytest.fixture(params=["memory", "sqlite", "postgres", "redis"])
def store(request: pytest.FixtureRequest, tmp_path: object) -> Iterator[OnlineStore]:
    if request.param == "memory":
        made: OnlineStore = MemoryOnlineStore()
    elif request.param in ("sqlite", "postgres"):
        from modelplane.features.sqlite import SqliteOnlineStore

        url = f"sqlite:///{tmp_path}/online.db"
        if request.param == "postgres":
            url = str(request.getfixturevalue("postgres_url"))
        made = SqliteOnlineStore(url)
    else:
        from modelplane.features.redis import RedisOnlineStore

        made = RedisOnlineStore(str(request.getfixturevalue("redis_url")))
    yield made
    made.close()


def test_round_trip_with_ages_from_now(store: OnlineStore) -> None:
    result = store.write("tx", 1, [("c1", NOW - 5, {"amount": 12.5, "country": "FR", "count": 3})])
    assert result == WriteResult(written=1, skipped_older=0)
    [lookup] = store.read("tx", 1, ["c1"], FEATURES, now=NOW)
    assert lookup.found
    assert dict(lookup.values) == {"amount": 12.5, "country": "FR", "count": 3}
    assert dict(lookup.event_times) == dict.fromkeys(FEATURES, NOW - 5)
    assert dict(lookup.ages) == dict.fromkeys(FEATURES, 5.0)
    assert lookup.missing == ()


def test_an_older_event_never_overwrites_a_newer_one(store: OnlineStore) -> None:
    store.write("tx", 1, [("c1", NOW - 1, {"amount": 2.0})])
    assert store.write("tx", 1, [("c1", NOW - 9, {"amount": 1.0})]) == WriteResult(0, 1)
    assert store.read("tx", 1, ["c1"], ["amount"], NOW)[0].values == {"amount": 2.0}
    # An equal event time rewrites: replaying a batch is idempotent.
    assert store.write("tx", 1, [("c1", NOW - 1, {"amount": 3.0})]) == WriteResult(1, 0)
    assert store.write("tx", 1, [("c1", NOW, {"amount": 4.0})]) == WriteResult(1, 0)
    assert store.read("tx", 1, ["c1"], ["amount"], NOW)[0].values == {"amount": 4.0}


def test_newest_wins_inside_one_batch_in_any_order(store: OnlineStore) -> None:
    rows = [
        ("k", NOW - 3, {"count": 3}),
        ("k", NOW - 1, {"count": 1}),
        ("k", NOW - 2, {"count": 2}),
    ]
    assert store.write("tx", 1, rows) == WriteResult(2, 1)
    assert store.read("tx", 1, ["k"], ["count"], NOW)[0].values == {"count": 1}


def test_a_winning_write_replaces_the_whole_row(store: OnlineStore) -> None:
    store.write("tx", 1, [("c1", NOW - 9, {"amount": 1.0, "country": "FR"})])
    store.write("tx", 1, [("c1", NOW - 1, {"amount": 2.0, "country": None})])
    [lookup] = store.read("tx", 1, ["c1"], ["amount", "country"], NOW)
    assert lookup.values == {"amount": 2.0}
    assert lookup.missing == ("country",)


def test_missing_keys_and_features(store: OnlineStore) -> None:
    store.write("tx", 1, [(7, NOW - 2, {"amount": 1.5})])
    unknown, known = store.read("tx", 1, [8, 7], FEATURES, NOW)
    assert (unknown.key, unknown.found, unknown.missing) == (8, False, FEATURES)
    assert unknown.values == {}
    assert unknown.ages == {}
    assert known.key == 7
    assert known.values == {"amount": 1.5}
    assert known.missing == ("country", "count")
    assert store.read("tx", 1, [], FEATURES, NOW) == []


def test_sets_and_versions_are_apart(store: OnlineStore) -> None:
    store.write("tx", 1, [("c1", NOW, {"count": 1})])
    store.write("tx", 2, [("c1", NOW - 100, {"count": 2})])
    store.write("other", 1, [("c1", NOW - 100, {"count": 3})])
    got = [
        store.read(s, v, ["c1"], ["count"], NOW)[0].values
        for s, v in [("tx", 1), ("tx", 2), ("other", 1)]
    ]
    assert got == [{"count": 1}, {"count": 2}, {"count": 3}]


def test_future_event_times_read_as_age_zero(store: OnlineStore) -> None:
    store.write("tx", 1, [("c1", NOW + 30, {"count": 1})])
    assert store.read("tx", 1, ["c1"], ["count"], NOW)[0].ages == {"count": 0.0}


def test_concurrent_writers_never_let_an_older_value_win(store: OnlineStore) -> None:
    keys = [f"k{i}" for i in range(20)]
    events = [(key, float(t)) for key in keys for t in range(60)]
    random.Random(7).shuffle(events)
    writers = 6
    errors: list[BaseException] = []

    def run(part: list[tuple[str, float]]) -> None:
        try:
            for start in range(0, len(part), 10):
                batch = part[start : start + 10]
                store.write("tx", 1, [(k, NOW - 100 + t, {"count": int(t)}) for k, t in batch])
        except BaseException as exc:  # reported below; a thread cannot raise into the test
            errors.append(exc)

    threads = [threading.Thread(target=run, args=(events[i::writers],)) for i in range(writers)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=20)
    assert not any(t.is_alive() for t in threads)
    assert not errors
    lookups = store.read("tx", 1, keys, ["count"], NOW)
    assert [lookup.values for lookup in lookups] == [{"count": 59}] * len(keys)
    assert {lookup.ages["count"] for lookup in lookups} == {100.0 - 59}


def test_a_subset_of_the_stored_features(store: OnlineStore) -> None:
    store.write("tx", 1, [("c1", NOW - 5, {"amount": 1.0, "country": "FR", "count": 3})])
    [lookup] = store.read("tx", 1, ["c1"], ["count", "amount"], NOW)
    assert dict(lookup.values) == {"count": 3, "amount": 1.0}
    assert dict(lookup.ages) == {"count": 5.0, "amount": 5.0}
    assert lookup.missing == ()


def test_values_and_event_times_round_trip_exactly(store: OnlineStore) -> None:
    event_time = NOW - 0.123456789
    values = {"amount": 0.1 + 0.2, "country": "ÉIRE", "count": -(2**53), "tags": ["a", "b"]}
    store.write("tx", 1, [("c1", event_time, values)])
    [lookup] = store.read("tx", 1, ["c1"], [*values, "flag"], NOW)
    assert dict(lookup.values) == values
    assert set(lookup.event_times.values()) == {event_time}
    assert lookup.missing == ("flag",)


def test_a_large_batch_with_repeated_keys_reads_in_order(store: OnlineStore) -> None:
    store.write("tx", 1, [(k, NOW - k % 7, {"count": k}) for k in range(0, 2500, 2)])
    keys = [*range(2500), 4, 4]
    lookups = store.read("tx", 1, keys, ["count"], NOW)
    assert [lookup.key for lookup in lookups] == keys
    assert [lookup.values.get("count") for lookup in lookups[:4]] == [0, None, 2, None]
    assert [lookup.ages["count"] for lookup in lookups[-2:]] == [4.0, 4.0]
    assert sum(lookup.found for lookup in lookups) == 1250 + 2
