"""A module that crashes on import, for the forkserver's preload (see test_pool_supervision)."""

from __future__ import annotations

__all__: list[str] = []

raise RuntimeError("this module crashes whoever imports it")
