from __future__ import annotations

from modelplane.types import FakeClock, SystemClock, Tier


def test_fake_clock_moves_only_when_told() -> None:
    clock = FakeClock(start=10.0)
    assert clock.monotonic() == 10.0
    clock.advance(2.5)
    assert clock.monotonic() == clock.wall() == 12.5


def test_system_clock_is_monotonic() -> None:
    clock = SystemClock()
    first = clock.monotonic()
    assert clock.monotonic() >= first
    assert clock.wall() > 1_600_000_000


def test_tiers() -> None:
    assert [t.value for t in Tier] == ["critical", "standard", "batch"]
