"""Small types shared by every layer: ids, the clock, common enums."""

from __future__ import annotations

import time
from enum import StrEnum
from typing import NewType, Protocol

__all__ = [
    "Clock",
    "Digest",
    "FakeClock",
    "ModelRef",
    "SystemClock",
    "Tier",
]

Digest = NewType("Digest", str)
"""A content digest, always spelled ``sha256:<64 hex digits>``."""

ModelRef = NewType("ModelRef", str)
"""``name:version`` or ``name@alias``."""


class Tier(StrEnum):
    """Default business criticality tiers; policies may declare more."""

    CRITICAL = "critical"
    """Reserved floor, never preempted, never scaled to zero."""
    STANDARD = "standard"
    """Ordinary serving work."""
    BATCH = "batch"
    """Elastic and preemptible."""


class Clock(Protocol):
    """Time, injected: ``monotonic`` for durations, ``wall`` for timestamps people read."""

    def monotonic(self) -> float: ...

    def wall(self) -> float: ...


class SystemClock:
    """The real clock."""

    def monotonic(self) -> float:
        return time.monotonic()

    def wall(self) -> float:
        return time.time()


class FakeClock:
    """A clock tests move by hand."""

    def __init__(self, start: float = 1_000_000.0) -> None:
        self._now = start

    def monotonic(self) -> float:
        return self._now

    def wall(self) -> float:
        return self._now

    def advance(self, seconds: float) -> None:
        self._now += seconds
