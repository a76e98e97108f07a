"""The online store Protocol and the values it trades in.

An online store holds, per feature set version and entity key, the newest row of feature
values and the event time it describes. A write is a snapshot of the entity at its event
time: it replaces the stored row when its event time is at least the stored one (so a
replayed batch is idempotent) and is skipped when older, whatever order writes arrive in
and however many writers race. Features a winning row leaves out are missing afterwards,
so every stored value carries the event time it was true at, and ages are exact.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from collections.abc import Set as AbstractSet
from dataclasses import dataclass, field
from typing import Any, Protocol

__all__ = [
    "EntityKey",
    "Lookup",
    "OnlineStore",
    "Row",
    "WriteResult",
    "lookup_from",
]

EntityKey = str | int
"""An entity key: a string or an integer, as the feature set's entity declares."""

Row = tuple[EntityKey, float, Mapping[str, Any]]
"""``(entity_key, event_time, values)``; event time in seconds since the epoch."""


@dataclass(frozen=True, slots=True)
class WriteResult:
    """How many rows replaced the stored ones, and how many lost to a newer event."""

    written: int = 0
    skipped_older: int = 0

    def __add__(self, other: WriteResult) -> WriteResult:
        return WriteResult(self.written + other.written, self.skipped_older + other.skipped_older)


@dataclass(frozen=True, slots=True)
class Lookup:
    """What the store holds for one entity key and the features asked for.

    ``values``, ``event_times`` and ``ages`` have an entry for each present feature;
    ``missing`` names the ones asked for and absent (all of them when the key is unknown).
    Ages are ``now - event_time``, never below zero (a writer's clock may run ahead).
    """

    key: EntityKey
    values: Mapping[str, Any] = field(default_factory=dict)
    event_times: Mapping[str, float] = field(default_factory=dict)
    ages: Mapping[str, float] = field(default_factory=dict)
    missing: tuple[str, ...] = ()

    @property
    def found(self) -> bool:
        """True when the store holds any asked-for value for the key."""
        return bool(self.values)


def lookup_from(
    key: EntityKey,
    stored: Mapping[str, Any] | None,
    event_time: float | None,
    features: Sequence[str],
    now: float,
    wanted: AbstractSet[str] | None = None,
) -> Lookup:
    """The :class:`Lookup` for one stored row (``None`` when the key is unknown).

    ``wanted`` is ``set(features)``; a store reading many rows passes it, built once.
    """
    if stored is None or event_time is None:
        return Lookup(key=key, missing=tuple(features))
    if wanted is None:
        wanted = frozenset(features)
    values: dict[str, Any]
    missing: tuple[str, ...] = ()
    # The common case, a row holding exactly the features asked for, costs a few C-level
    # set and dict operations instead of a Python loop per feature (50 per row, 64 rows).
    if stored.keys() == wanted and None not in stored.values():
        values = dict(stored)
    else:
        values = {n: v for n in features if (v := stored.get(n)) is not None}
        if len(values) < len(wanted):
            missing = tuple(name for name in features if name not in values)
    age = max(0.0, now - event_time)
    return Lookup(
        key=key,
        values=values,
        event_times=dict.fromkeys(values, event_time),
        ages=dict.fromkeys(values, age),
        missing=missing,
    )


class OnlineStore(Protocol):
    """Newest feature values per entity, last write wins on event time."""

    def write(self, set_name: str, version: int, rows: Sequence[Row]) -> WriteResult:
        """Store each row unless the stored row has a newer event time; atomic per row."""
        ...

    def read(
        self,
        set_name: str,
        version: int,
        keys: Sequence[EntityKey],
        features: Sequence[str],
        now: float,
    ) -> list[Lookup]:
        """One :class:`Lookup` per key, in order, in one round trip to the engine."""
        ...

    def close(self) -> None:
        """Release connections; the store is unusable afterwards."""
        ...
