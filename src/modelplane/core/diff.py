"""A semantic diff of two specs as plain JSON data: one change per path.

Mappings are compared key by key. A list whose items are all mappings with distinct
``name`` values (tiers, teams, nodes) is compared by name, so reordering it changes
nothing and a change reads ``teams.fraud.quotas.gpu.nominal: 4000 -> 8000``. Other lists
of mappings are compared by index (``floors[0].amount``); lists of plain values (like the
ordered degradation steps) change as a whole.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

__all__ = ["Change", "Op", "diff"]

_PLAIN_KEY = re.compile(r"^[A-Za-z0-9_/-]+$")


class Op(StrEnum):
    """What happened at a path."""

    ADDED = "added"
    """The path exists only after."""
    REMOVED = "removed"
    """The path exists only before."""
    CHANGED = "changed"
    """The path holds another value."""


@dataclass(frozen=True, slots=True)
class Change:
    path: str
    op: Op
    before: Any = None
    after: Any = None

    @property
    def line(self) -> str:
        if self.op is Op.ADDED:
            return f"+ {self.path}: {_show(self.after)}"
        if self.op is Op.REMOVED:
            return f"- {self.path}: {_show(self.before)}"
        return f"~ {self.path}: {_show(self.before)} -> {_show(self.after)}"


def _show(value: Any) -> str:
    return value if isinstance(value, str) else json.dumps(value, sort_keys=True)


def _key(path: str, key: str) -> str:
    if _PLAIN_KEY.fullmatch(key):
        return f"{path}.{key}" if path else key
    return f"{path}[{json.dumps(key)}]"


def _named(items: Sequence[Any]) -> dict[str, Any] | None:
    """``items`` by name, when every item is a mapping with a distinct string name."""
    if not items:
        return {}
    if not all(isinstance(i, Mapping) and isinstance(i.get("name"), str) for i in items):
        return None
    by_name = {str(i["name"]): i for i in items}
    return by_name if len(by_name) == len(items) else None


def diff(before: Any, after: Any, path: str = "") -> tuple[Change, ...]:
    """Every change from ``before`` to ``after``, in a stable order; empty when equal."""
    if isinstance(before, Mapping) and isinstance(after, Mapping):
        return _mappings(before, after, path)
    if _is_list(before) and _is_list(after):
        old, new = _named(before), _named(after)
        if old is not None and new is not None:
            return _mappings(old, new, path)
        if all(isinstance(i, Mapping) for i in (*before, *after)) and before and after:
            return _indexed(before, after, path)
    if before == after and type(before) is type(after):
        return ()
    return (Change(path or "(root)", Op.CHANGED, before, after),)


def _is_list(value: Any) -> bool:
    return isinstance(value, list | tuple)


def _mappings(before: Mapping[str, Any], after: Mapping[str, Any], path: str) -> tuple[Change, ...]:
    out: list[Change] = []
    for key in sorted(before.keys() | after.keys(), key=str):
        where = _key(path, str(key))
        if key not in after:
            out.append(Change(where, Op.REMOVED, before=before[key]))
        elif key not in before:
            out.append(Change(where, Op.ADDED, after=after[key]))
        else:
            out.extend(diff(before[key], after[key], where))
    return tuple(out)


def _indexed(before: Sequence[Any], after: Sequence[Any], path: str) -> tuple[Change, ...]:
    out: list[Change] = []
    for i in range(max(len(before), len(after))):
        where = f"{path}[{i}]"
        if i >= len(after):
            out.append(Change(where, Op.REMOVED, before=before[i]))
        elif i >= len(before):
            out.append(Change(where, Op.ADDED, after=after[i]))
        else:
            out.extend(diff(before[i], after[i], where))
    return tuple(out)
