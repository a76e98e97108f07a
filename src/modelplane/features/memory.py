"""An in-memory online store: the reference the engine stores are tested against."""

from __future__ import annotations

import threading
from collections.abc import Mapping, Sequence
from typing import Any

from modelplane.features.base import EntityKey, Lookup, Row, WriteResult, lookup_from

__all__ = ["MemoryOnlineStore"]


class MemoryOnlineStore:
    """Rows in a dict under one lock; the lock makes each batch's compare-and-set atomic."""

    def __init__(self) -> None:
        self._rows: dict[tuple[str, int, EntityKey], tuple[float, dict[str, Any]]] = {}
        self._lock = threading.Lock()

    def write(self, set_name: str, version: int, rows: Sequence[Row]) -> WriteResult:
        written = skipped = 0
        with self._lock:
            for key, event_time, values in rows:
                slot = (set_name, version, key)
                current = self._rows.get(slot)
                if current is not None and current[0] > event_time:
                    skipped += 1
                    continue
                self._rows[slot] = (float(event_time), _present(values))
                written += 1
        return WriteResult(written, skipped)

    def read(
        self,
        set_name: str,
        version: int,
        keys: Sequence[EntityKey],
        features: Sequence[str],
        now: float,
    ) -> list[Lookup]:
        with self._lock:
            found = [self._rows.get((set_name, version, key)) for key in keys]
        return [
            lookup_from(
                key, None if row is None else row[1], None if row is None else row[0], features, now
            )
            for key, row in zip(keys, found, strict=True)
        ]

    def close(self) -> None:
        with self._lock:
            self._rows.clear()


def _present(values: Mapping[str, Any]) -> dict[str, Any]:
    # A None value means "not provided": storing it would read back as present.
    return {name: value for name, value in values.items() if value is not None}
