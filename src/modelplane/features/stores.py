"""Open the online store a URL names; each engine's driver is imported only when named."""

from __future__ import annotations

from modelplane.errors import InvalidSpec
from modelplane.features.base import OnlineStore
from modelplane.features.memory import MemoryOnlineStore

__all__ = ["open_online_store"]


def open_online_store(url: str) -> OnlineStore:
    """``sqlite:///path``, ``redis://host:port/db`` or ``memory://``."""
    if url.startswith("sqlite"):
        from modelplane.features.sqlite import SqliteOnlineStore

        return SqliteOnlineStore(url)
    if url.startswith(("redis://", "rediss://", "unix://")):
        from modelplane.features.redis import RedisOnlineStore

        return RedisOnlineStore(url)
    if url.startswith("memory://"):
        return MemoryOnlineStore()
    raise InvalidSpec(
        f"online store URL {url!r}: expected sqlite:///..., redis://... or memory://",
        details=[{"field": "feature_store_url", "problem": "unknown scheme"}],
    )
