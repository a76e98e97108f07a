"""Lazy access to model libraries, so that a worker imports only the one it serves.

``accepts`` checks use :func:`imported`: an object cannot be an xgboost model unless xgboost
is already imported, so asking never pays for (or fails on) importing a library.
"""

from __future__ import annotations

import importlib
import sys
from types import ModuleType

from modelplane.errors import MissingExtra

__all__ = ["imported", "require"]


def require(module: str, extra: str) -> ModuleType:
    """Import ``module``, or raise :class:`MissingExtra` naming the extra that provides it."""
    try:
        return importlib.import_module(module)
    except ImportError as exc:
        raise MissingExtra(module, extra) from exc


def imported(module: str) -> ModuleType | None:
    """The module if something already imported it, else None (never imports)."""
    return sys.modules.get(module)
