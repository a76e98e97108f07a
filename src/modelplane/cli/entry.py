"""The ``modelplane`` executable.

``modelplane status`` is what people type when something is wrong, and it should answer in
about the time the interpreter takes to start. The CLI framework (typer, rich) and the
settings model (pydantic-settings) take most of a second to import on a small machine, so
``status`` and ``status --json`` run here on the standard library alone: settings come
from the same ``MODELPLANE_*`` environment variables, the store is read by
:func:`modelplane.observe.status.read_status` and the text is the full CLI's. The other
commands typed in a hurry (``rollback``, ``pause``, ``resume``, ``promote``, ``get``,
``explain``) run here too in their common case (:mod:`modelplane.cli.fast_commands`).
Anything else, ``--help`` included, goes to the full CLI (:mod:`modelplane.cli.main`).
"""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path

__all__ = ["database_url", "fast", "main"]


def main() -> None:
    code = fast(sys.argv[1:])
    if code is not None:
        sys.exit(code)
    from modelplane.cli.main import main as full

    full()


def fast(args: Sequence[str]) -> int | None:
    """Run ``args`` here if this entry handles them; their exit code, or None."""
    if list(args[:1]) != ["status"]:
        from modelplane.cli.fast_commands import run

        return run(args, os.environ, database_url(os.environ))
    if not set(args[1:]) <= {"--json"}:
        return None
    if (_home(os.environ) / "remote.json").exists():
        return None  # logged in to a server: the full CLI speaks for it (or refuses)
    from modelplane.observe.status import read_status

    try:
        document = read_status(database_url(os.environ))
    except Exception:  # the full CLI reports store errors, with their codes
        return None
    if "--json" in args:
        sys.stdout.write(json.dumps(document, indent=2) + "\n")
        return 0
    from modelplane.cli.status_text import NO_ENDPOINTS, status_lines

    endpoints = document["endpoints"]
    lines = status_lines(endpoints, document["sandbox_missing"]) if endpoints else [NO_ENDPOINTS]
    sys.stdout.write("".join(f"{line}\n" for line in lines))
    return 0


def _home(environ: Mapping[str, str]) -> Path:
    home = {key.upper(): value for key, value in environ.items()}.get("MODELPLANE_HOME")
    return Path(home) if home else Path.home() / ".modelplane"


def database_url(environ: Mapping[str, str]) -> str:
    """The state store's URL as :class:`modelplane.settings.Settings` resolves it
    (environment variable names are case-insensitive there too)."""
    env = {key.upper(): value for key, value in environ.items()}
    url = env.get("MODELPLANE_DATABASE_URL")
    if url:
        return url
    home = env.get("MODELPLANE_HOME")
    folder = Path(home) if home else Path.home() / ".modelplane"
    return f"sqlite:///{folder / 'state.db'}"
