"""How the CLI speaks: rich tables for people, ``--json`` for programs, one-line errors."""

from __future__ import annotations

import dataclasses
import json
import sys
from collections.abc import Callable, Iterable, Mapping, Sequence
from datetime import datetime
from enum import Enum
from functools import wraps
from pathlib import Path
from typing import Any, ParamSpec, TypeVar

from rich.console import Console
from rich.table import Table

from modelplane.errors import ModelplaneError

__all__ = [
    "EXIT_CODES",
    "console",
    "emit_json",
    "err_console",
    "handle_errors",
    "table",
    "to_jsonable",
]

# Piped output is read by people in logs and CI too: don't fold it at 80 columns.
_WIDTH = None if sys.stdout.isatty() else 200
console = Console(highlight=False, soft_wrap=True, width=_WIDTH)
err_console = Console(stderr=True, highlight=False, soft_wrap=True)

EXIT_CODES: dict[str, int] = {
    "invalid_spec": 2,
    "contract_violation": 2,
    "incompatible": 3,
    "integrity_error": 4,
    "unsafe_format": 5,
    "not_found": 6,
    "conflict": 7,
    "missing_extra": 8,
    "store_unavailable": 9,
    "unauthorized": 10,
    "forbidden": 11,
}
"""Exit code per error code; anything else exits 1."""

P = ParamSpec("P")
R = TypeVar("R")


def to_jsonable(value: Any) -> Any:
    # Duck-typed: importing pydantic just for isinstance would slow every command down.
    if hasattr(value, "model_dump") and not isinstance(value, type):
        return value.model_dump(mode="json")
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {f.name: to_jsonable(getattr(value, f.name)) for f in dataclasses.fields(value)}
    if isinstance(value, Mapping):
        return {str(k): to_jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple | set | frozenset):
        return [to_jsonable(v) for v in value]
    if isinstance(value, datetime):
        return value.isoformat()
    if isinstance(value, Enum):
        return value.value
    if isinstance(value, Path):
        return str(value)
    return value


def emit_json(value: Any) -> None:
    sys.stdout.write(json.dumps(to_jsonable(value), indent=2, sort_keys=False) + "\n")


def table(title: str | None, columns: Sequence[str], rows: Iterable[Sequence[Any]]) -> None:
    out = Table(title=title, title_justify="left", header_style="bold")
    for column in columns:
        out.add_column(column)
    for row in rows:
        out.add_row(*("" if cell is None else str(cell) for cell in row))
    console.print(out)


def handle_errors(func: Callable[P, R]) -> Callable[P, R]:
    """Turn a ModelplaneError into one clear message and a non-zero exit, never a traceback."""

    @wraps(func)
    def wrapper(*args: P.args, **kwargs: P.kwargs) -> R:
        try:
            return func(*args, **kwargs)
        except ModelplaneError as exc:
            err_console.print(f"[bold red]error[/]: {exc.message}", markup=True, soft_wrap=True)
            for detail in exc.details if len(exc.details) > 1 else []:
                field = detail.get("field")
                err_console.print(f"  {field}: {detail.get('problem', '')}", markup=False)
            raise SystemExit(EXIT_CODES.get(exc.code, 1)) from None

    return wrapper
