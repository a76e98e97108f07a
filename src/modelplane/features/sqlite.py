"""The embedded online store: one SQLite (or PostgreSQL) table, last write wins in SQL.

Each row is ``(set_name, version, entity_key) -> (event_time, values JSON)``. The rule
"an older event never overwrites a newer one" is a single UPSERT whose ``DO UPDATE`` has a
``WHERE`` on the event time, so it holds under any number of writers without reading
first; SQLite serialises writers on its write lock (``BEGIN IMMEDIATE``, see
:mod:`modelplane.store.db`), PostgreSQL locks the conflicting row.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import Any

import msgspec
from sqlalchemy import Engine, bindparam, text

from modelplane.errors import InvalidSpec
from modelplane.features.base import EntityKey, Lookup, Row, WriteResult, lookup_from
from modelplane.store.db import open_engine, read_session, write_session

__all__ = ["DEFAULT_TABLE", "SqliteOnlineStore"]

DEFAULT_TABLE = "mp_feature_values"
_TABLE_NAME = re.compile(r"^[a-z_][a-z0-9_]{0,62}$")
# SQLite allows 32766 bound parameters per statement; reads bind one per key.
_READ_CHUNK = 30_000

_encode = msgspec.json.Encoder().encode
_decode = msgspec.json.Decoder(dict[str, Any]).decode


class SqliteOnlineStore:
    """Feature values in one table of a SQLite file (or a PostgreSQL database).

    ``url`` is ``sqlite:///path`` (the embedded default) or ``postgresql://…``; the store
    opens its own engine and disposes of it on :meth:`close`.
    """

    def __init__(self, url: str, *, table: str = DEFAULT_TABLE) -> None:
        if not _TABLE_NAME.fullmatch(table):
            raise InvalidSpec(f"online store table {table!r} is not a plain SQL identifier")
        self._engine: Engine = open_engine(url, migrate_schema=False)
        self._table = table
        self._upsert = text(
            f"INSERT INTO {table} (set_name, version, entity_key, event_time, vals)"
            " VALUES (:s, :v, :k, :t, :vals)"
            " ON CONFLICT (set_name, version, entity_key) DO UPDATE"
            " SET event_time = excluded.event_time, vals = excluded.vals"
            f" WHERE excluded.event_time >= {table}.event_time"
        )
        self._select = text(
            f"SELECT entity_key, event_time, vals FROM {table}"
            " WHERE set_name = :s AND version = :v AND entity_key IN :keys"
        ).bindparams(bindparam("keys", expanding=True))
        try:
            self._create()
        except BaseException:
            self._engine.dispose()
            raise

    def _create(self) -> None:
        with write_session(self._engine) as session:
            session.execute(
                text(
                    f"CREATE TABLE IF NOT EXISTS {self._table} ("
                    " set_name VARCHAR(63) NOT NULL, version INTEGER NOT NULL,"
                    " entity_key VARCHAR(512) NOT NULL, event_time DOUBLE PRECISION NOT NULL,"
                    " vals TEXT NOT NULL, PRIMARY KEY (set_name, version, entity_key))"
                )
            )

    def write(self, set_name: str, version: int, rows: Sequence[Row]) -> WriteResult:
        if not rows:
            return WriteResult()
        params = [
            {
                "s": set_name,
                "v": version,
                "k": str(key),
                "t": float(event_time),
                "vals": _encode({n: v for n, v in values.items() if v is not None}).decode(),
            }
            for key, event_time, values in rows
        ]
        with write_session(self._engine) as session:
            result = session.connection().execute(self._upsert, params)
            # executemany sums the rows each statement changed; a skipped UPSERT changes none.
            written = int(result.rowcount)
        return WriteResult(written, len(rows) - written)

    def read(
        self,
        set_name: str,
        version: int,
        keys: Sequence[EntityKey],
        features: Sequence[str],
        now: float,
    ) -> list[Lookup]:
        found: dict[str, tuple[float, str]] = {}
        unique = list(dict.fromkeys(str(key) for key in keys))
        with read_session(self._engine) as session:
            connection = session.connection()
            for start in range(0, len(unique), _READ_CHUNK):
                chunk = unique[start : start + _READ_CHUNK]
                params = {"s": set_name, "v": version, "keys": chunk}
                for entity_key, event_time, vals in connection.execute(self._select, params):
                    found[entity_key] = (float(event_time), vals)
        lookups = []
        for key in keys:
            row = found.get(str(key))
            stored = None if row is None else _decode(row[1])
            event_time = None if row is None else row[0]
            lookups.append(lookup_from(key, stored, event_time, features, now))
        return lookups

    def close(self) -> None:
        self._engine.dispose()
