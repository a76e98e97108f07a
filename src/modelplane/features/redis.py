"""The production online store: one Redis hash per entity per feature set version.

A hash holds the entity's feature values (msgpack, compact and typed) and ``__ts``, the
event time of the row. Writes go through one Lua script (EVALSHA): Redis runs a script
alone, so reading ``__ts`` and replacing the hash is one atomic compare-and-set, with no
WATCH retries however many writers race. Reads are one pipeline of HMGET: one round trip
for a whole batch of keys.

A script call touches many keys, so on Redis Cluster a batch would have to be split by
hash slot; this store speaks to one Redis (or a primary with replicas).
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from typing import Any

import msgspec
import redis

from modelplane.errors import StoreUnavailable
from modelplane.features.base import EntityKey, Lookup, Row, WriteResult, lookup_from

__all__ = ["DEFAULT_PREFIX", "RedisOnlineStore"]

DEFAULT_PREFIX = "mp:fs:"
_TS = "__ts"
# Rows per script call: big enough to amortise the round trip, small enough that the
# script (which blocks Redis while it runs) stays well under a millisecond or so.
_ROWS_PER_CALL = 256

# KEYS[i] is row i's hash; ARGV holds, per row: event time, n, then n field/value pairs.
_LWW_SCRIPT = """
local written = 0
local a = 1
for i = 1, #KEYS do
  local ts = ARGV[a]
  local n = tonumber(ARGV[a + 1])
  local current = redis.call('HGET', KEYS[i], '__ts')
  if (not current) or tonumber(current) <= tonumber(ts) then
    if current then redis.call('DEL', KEYS[i]) end
    local args = {'__ts', ts}
    for j = a + 2, a + 1 + 2 * n do args[#args + 1] = ARGV[j] end
    redis.call('HSET', KEYS[i], unpack(args))
    written = written + 1
  end
  a = a + 2 + 2 * n
end
return written
"""

_encode = msgspec.msgpack.Encoder().encode
_decode = msgspec.msgpack.Decoder().decode


@contextmanager
def _translate() -> Iterator[None]:
    try:
        yield
    except redis.RedisError as exc:
        raise StoreUnavailable(f"online store (redis) unavailable: {exc}") from exc


class RedisOnlineStore:
    """Feature values in Redis at ``url`` (``redis://host:port/db``), keys under ``prefix``."""

    def __init__(self, url: str, *, prefix: str = DEFAULT_PREFIX, timeout_s: float = 5.0) -> None:
        self._client: redis.Redis = redis.Redis.from_url(
            url, socket_timeout=timeout_s, socket_connect_timeout=timeout_s
        )
        self._prefix = prefix
        self._script = self._client.register_script(_LWW_SCRIPT)

    def hash_key(self, set_name: str, version: int, key: EntityKey) -> str:
        """The Redis key of one entity's hash."""
        return f"{self._prefix}{set_name}:{version}:{key}"

    def write(self, set_name: str, version: int, rows: Sequence[Row]) -> WriteResult:
        written = 0
        with _translate():
            for start in range(0, len(rows), _ROWS_PER_CALL):
                chunk = rows[start : start + _ROWS_PER_CALL]
                keys = [self.hash_key(set_name, version, row[0]) for row in chunk]
                args: list[Any] = []
                for _key, event_time, values in chunk:
                    _append_row(args, float(event_time), values)
                written += int(self._script(keys=keys, args=args))
        return WriteResult(written, len(rows) - written)

    def read(
        self,
        set_name: str,
        version: int,
        keys: Sequence[EntityKey],
        features: Sequence[str],
        now: float,
    ) -> list[Lookup]:
        fields = [_TS, *features]
        with _translate():
            pipe = self._client.pipeline(transaction=False)
            for key in keys:
                pipe.hmget(self.hash_key(set_name, version, key), fields)
            replies: list[list[bytes | None]] = pipe.execute()
        return [
            _lookup(key, reply, features, now) for key, reply in zip(keys, replies, strict=True)
        ]

    def close(self) -> None:
        self._client.close()


def _append_row(args: list[Any], event_time: float, values: Mapping[str, Any]) -> None:
    start = len(args)
    args += (repr(event_time), 0)
    for name, value in values.items():
        if value is not None:
            args += (name, _encode(value))
    args[start + 1] = (len(args) - start - 2) // 2


def _lookup(
    key: EntityKey, reply: Sequence[bytes | None], features: Sequence[str], now: float
) -> Lookup:
    if reply[0] is None:
        return lookup_from(key, None, None, features, now)
    stored = {
        name: _decode(raw) for name, raw in zip(features, reply[1:], strict=True) if raw is not None
    }
    return lookup_from(key, stored, float(reply[0]), features, now)
