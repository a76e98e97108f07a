"""The embedded online store: one SQLite (or PostgreSQL) table, last write wins in SQL.

Each row is ``(set_name, version, entity_key) -> (event_time, values JSON)``. The rule
"an older event never overwrites a newer one" is a single UPSERT whose ``DO UPDATE`` has a
``WHERE`` on the event time, so it holds under any number of writers without reading
first; SQLite serialises writers on its write lock (``BEGIN IMMEDIATE``, see
:mod:`modelplane.store.db`), PostgreSQL locks the conflicting row.
"""

from __future__ import annotations

import re
import sqlite3
from collections.abc import Sequence
from operator import itemgetter
from typing import Any

import msgspec
from sqlalchemy import Engine, bindparam, text

from modelplane.errors import InvalidSpec, StoreUnavailable
from modelplane.features.base import EntityKey, Lookup, Row, WriteResult, lookup_from
from modelplane.store.db import open_engine, translate_errors, write_session

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
        self._raw_select = (
            f"SELECT entity_key, event_time, vals FROM {table}"
            " WHERE set_name = ? AND version = ? AND entity_key IN ("
        )
        self._raw = self._engine.dialect.name == "sqlite"
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
        # PostgreSQL locks each upserted row until commit: writers that met the same keys
        # in different orders deadlocked. In key order, no two can wait on each other.
        params.sort(key=itemgetter("k"))
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
        unique = list(dict.fromkeys(str(key) for key in keys))
        chunks = [unique[i : i + _READ_CHUNK] for i in range(0, len(unique), _READ_CHUNK)]
        fetch = self._fetch_raw if self._raw else self._fetch
        found = {key: (float(t), vals) for key, t, vals in fetch(set_name, version, chunks)}
        wanted = frozenset(features)
        lookups = []
        for key in keys:
            row = found.get(str(key))
            if row is None:
                lookups.append(lookup_from(key, None, None, features, now))
            else:
                lookups.append(lookup_from(key, _decode(row[1]), row[0], features, now, wanted))
        return lookups

    def _fetch(
        self, set_name: str, version: int, chunks: Sequence[Sequence[str]]
    ) -> list[tuple[str, float, str]]:
        rows: list[tuple[str, float, str]] = []
        # A Core connection, not an ORM session: a read needs no unit of work.
        with translate_errors(), self._engine.connect() as connection:
            for chunk in chunks:
                params = {"s": set_name, "v": version, "keys": chunk}
                rows += [(k, t, vals) for k, t, vals in connection.execute(self._select, params)]
        return rows

    def _fetch_raw(
        self, set_name: str, version: int, chunks: Sequence[Sequence[str]]
    ) -> list[tuple[str, float, str]]:
        """SQLite through the driver: SQLAlchemy's execution path (events, compiling the
        expanding IN, result wrapping) was ~3/4 of a 1-row lookup's CPU. The connection is
        in autocommit (see :mod:`modelplane.store.db`), so each SELECT reads one snapshot;
        the driver keeps the prepared statement per distinct batch size."""
        rows: list[tuple[str, float, str]] = []
        try:
            with translate_errors():
                dbapi = self._engine.raw_connection()
            try:
                cursor = dbapi.cursor()
                for chunk in chunks:
                    sql = f"{self._raw_select}{','.join('?' * len(chunk))})"
                    cursor.execute(sql, (set_name, version, *chunk))
                    rows += cursor.fetchall()
                cursor.close()
            finally:
                dbapi.close()
        except sqlite3.Error as exc:
            raise StoreUnavailable(f"online store (sqlite) unavailable: {exc}") from exc
        return rows

    def close(self) -> None:
        self._engine.dispose()
