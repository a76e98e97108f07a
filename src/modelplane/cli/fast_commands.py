"""Commands typed in a hurry, over the embedded store with the standard library alone.

``rollback``, ``pause``, ``resume``, ``promote``, ``get`` and ``explain`` are what people
type when something is wrong, and the full CLI spends most of a second importing typer,
pydantic and SQLAlchemy before it does anything. Here each reads (and for the rollout
commands writes) the SQLite state store with ``sqlite3``, in one transaction under the
write lock, and prints what the full CLI prints, with its exit codes.

Only the common case is handled; everything else returns ``None`` and the full CLI runs
instead, so every refusal, hint and error message stays the full CLI's own: another store,
a server chosen with ``modelplane login``, a schema this module does not know, an audit key
that is missing or badly protected, a flag it does not know, a rollout command the
rollout's phase refuses or that changes nothing, anything not found.

What is written is what :mod:`modelplane.controlplane.rollout_commands` writes through the
resource store: the command appended to the ``Rollout`` resource (its generation bumped),
and for ``rollback`` all of the endpoint's traffic on stable, each with its audit event,
hash-chained and keyed (:mod:`modelplane.store.audit`). A test writes the same commands
both ways and compares the stores and the output.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import os
import sqlite3
import stat
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

__all__ = [
    "ALLOWED",
    "ALREADY",
    "KIND_ALIASES",
    "PLURALS",
    "resource_summary",
    "SCHEMA",
    "run",
]

SCHEMA = "0009"
"""The store schema this module writes (``store.db.SCHEMA_HEAD``; a test keeps them equal)."""

_ACTIVE = frozenset({"pending", "shadow", "canary"})
ALLOWED: dict[str, frozenset[str]] = {
    "pause": _ACTIVE,
    "resume": frozenset({"paused"}),
    "promote": _ACTIVE | {"paused"},
    "rollback": _ACTIVE | {"paused", "promoting"},
}
"""``core.rollout``'s table of the phases each command may leave (a test keeps them equal)."""
ALREADY: dict[str, frozenset[str]] = {
    "pause": frozenset({"paused"}),
    "resume": _ACTIVE,
    "promote": frozenset({"promoting", "promoted"}),
    "rollback": frozenset({"rolling_back", "rolled_back"}),
}
"""Phases in which a command changes nothing."""

KIND_ALIASES = {
    "endpoint": "Endpoint",
    "endpoints": "Endpoint",
    "ep": "Endpoint",
    "policy": "Policy",
    "policies": "Policy",
    "featureset": "FeatureSet",
    "featuresets": "FeatureSet",
    "fs": "FeatureSet",
    "rollout": "Rollout",
    "rollouts": "Rollout",
    "job": "Job",
    "jobs": "Job",
}
"""``modelplane get``'s kinds (``cli.resources``; a test keeps them equal)."""
PLURALS = {"Policy": "policies", "FeatureSet": "feature sets"}

_ROLLOUT_COMMANDS = frozenset(ALLOWED)
_EVENT_PURPOSE = b"modelplane-audit-event-v1\0"
_MIN_KEY_BYTES = 16
_BUSY_MS = 30_000


class _FallBack(Exception):
    """This case is the full CLI's: leave the store as it was and hand over."""


def run(args: Sequence[str], environ: Mapping[str, str], database_url: str) -> int | None:
    """Run ``args`` here if handled; the exit code, or None for the full CLI."""
    parsed = _parse(args)
    if parsed is None:
        return None
    command, positional, options = parsed
    path = _embedded(environ, database_url)
    if path is None:
        return None
    try:
        with _connect(path, write=command in _ROLLOUT_COMMANDS) as conn:
            if _schema(conn) != SCHEMA:
                return None
            if command in _ROLLOUT_COMMANDS:
                emit = _rollout_command(conn, command, positional, options, environ)
            elif command == "get":
                emit = _get(conn, positional, options)
            else:
                emit = _explain(path, positional, options)
    except (_FallBack, sqlite3.Error, OSError, KeyError, ValueError, TypeError):
        return None
    # Printed once committed: a failed write falls back to the full CLI having said nothing.
    emit()
    return 0


# ---------------------------------------------------------------------- arguments and settings

_SHAPES: dict[str, tuple[int, int, frozenset[str]]] = {
    # command: (fewest positional, most positional, options taking a value)
    **{name: (1, 1, frozenset({"--reason"})) for name in _ROLLOUT_COMMANDS},
    "get": (1, 2, frozenset()),
    "explain": (1, 1, frozenset()),
}


def _parse(args: Sequence[str]) -> tuple[str, list[str], dict[str, str | bool]] | None:
    """``COMMAND POSITIONAL... [--json] [--reason R]`` as typer reads them; None otherwise."""
    if not args or args[0] not in _SHAPES:
        return None
    fewest, most, valued = _SHAPES[args[0]]
    positional: list[str] = []
    options: dict[str, str | bool] = {}
    rest = list(args[1:])
    while rest:
        token = rest.pop(0)
        name, equals, value = token.partition("=")
        if token == "--json":
            options["json"] = True
        elif name in valued and equals:
            options[name[2:]] = value
        elif token in valued and rest:
            options[token[2:]] = rest.pop(0)
        elif token.startswith("-"):
            return None  # --help, a flag not known here, or a value that looks like one
        else:
            positional.append(token)
    if not fewest <= len(positional) <= most:
        return None
    return args[0], positional, options


def _embedded(environ: Mapping[str, str], database_url: str) -> str | None:
    """The embedded store's file, when the full CLI would use it and it exists."""
    prefix = "sqlite:///"
    if not database_url.startswith(prefix) or "?" in database_url:
        return None
    path = database_url[len(prefix) :]
    if not os.path.exists(path) or (_home(environ) / "remote.json").exists():
        return None  # nothing applied here yet, or a server chosen with modelplane login
    return path


def _env(environ: Mapping[str, str], name: str) -> str | None:
    # pydantic-settings reads environment variable names case-insensitively
    return {key.upper(): value for key, value in environ.items()}.get(name)


def _home(environ: Mapping[str, str]) -> Path:
    home = _env(environ, "MODELPLANE_HOME")
    return Path(home) if home else Path.home() / ".modelplane"


def _actor(environ: Mapping[str, str]) -> str:
    import getpass

    return _env(environ, "MODELPLANE_ACTOR") or getpass.getuser()


def _audit_key(environ: Mapping[str, str]) -> bytes:
    """``security.keys.audit_key_from``: the variable, else the home's key file as it is."""
    secret = _env(environ, "MODELPLANE_AUDIT_KEY")
    if secret:
        key = secret.encode()
    else:
        path = _home(environ) / "audit.key"
        # missing (the full CLI creates it) or open to others (the full CLI refuses it)
        if stat.S_IMODE(path.stat().st_mode) & (stat.S_IRWXG | stat.S_IRWXO):
            raise _FallBack
        key = path.read_bytes().strip()
    if len(key) < _MIN_KEY_BYTES:
        raise _FallBack
    return key


# ---------------------------------------------------------------------- the store


class _connect:
    """A connection; for writing, inside ``BEGIN IMMEDIATE`` (committed on success)."""

    def __init__(self, path: str, *, write: bool) -> None:
        self.write = write
        uri = f"file:{path}" + ("" if write else "?mode=ro")
        self.conn = sqlite3.connect(uri, uri=True, timeout=_BUSY_MS / 1000, isolation_level=None)

    def __enter__(self) -> sqlite3.Connection:
        if self.write:
            self.conn.execute(f"PRAGMA busy_timeout = {_BUSY_MS}")
            self.conn.execute("BEGIN IMMEDIATE")
        return self.conn

    def __exit__(self, kind: type[BaseException] | None, *_: object) -> None:
        try:
            if self.write:
                self.conn.execute("COMMIT" if kind is None else "ROLLBACK")
        finally:
            self.conn.close()


def _schema(conn: sqlite3.Connection) -> str | None:
    row = conn.execute("SELECT version_num FROM alembic_version").fetchone()
    return None if row is None else str(row[0])


def _stored_time(at: datetime) -> str:
    """How SQLAlchemy keeps a ``UTCDateTime`` in SQLite: naive UTC text."""
    return at.astimezone(UTC).replace(tzinfo=None).isoformat(sep=" ", timespec="microseconds")


def _read_time(text: str) -> datetime:
    return datetime.fromisoformat(text).replace(tzinfo=UTC)


def _canonical(value: Any) -> str:
    return json.dumps(value, sort_keys=True, separators=(",", ":"), allow_nan=False)


def _apply(
    conn: sqlite3.Connection,
    kind: str,
    name: str,
    before: dict[str, Any],
    after: dict[str, Any],
    *,
    actor: str,
    reason: str,
    key: bytes,
) -> None:
    """``ResourceStore.apply`` of a changed spec: generation bumped, one audit event."""
    now = datetime.fromtimestamp(time.time(), UTC)
    conn.execute(
        "UPDATE resources SET generation = generation + 1, spec = ?, updated_at = ?"
        " WHERE kind = ? AND name = ?",
        (json.dumps(after), _stored_time(now), kind, name),
    )
    _audit(conn, actor, f"{kind.lower()}.apply", f"{kind}/{name}", now, reason, before, after, key)


def _audit(
    conn: sqlite3.Connection,
    actor: str,
    action: str,
    subject: str,
    at: datetime,
    reason: str,
    before: Any,
    after: Any,
    key: bytes,
) -> None:
    """``store.audit.append``: the next link of the hash chain, with its MAC."""
    before, after = json.loads(_canonical(before)), json.loads(_canonical(after))
    head = conn.execute("SELECT seq, hash FROM audit_head WHERE id = 1").fetchone()
    if head is None:
        raise _FallBack  # a store the full CLI has not initialized
    seq, prev_hash = int(head[0]) + 1, str(head[1])
    body = {"seq": seq, "at": at.astimezone(UTC).isoformat(), "actor": actor, "action": action,
            "subject": subject, "reason": reason, "before": before, "after": after}  # fmt: skip
    digest = hashlib.sha256((prev_hash + _canonical(body)).encode()).hexdigest()
    mac = hmac.new(key, _EVENT_PURPOSE + digest.encode(), hashlib.sha256).hexdigest()
    conn.execute(
        "INSERT INTO audit_events (seq, at, actor, action, subject, reason, before, after,"
        " prev_hash, hash, mac) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
        (seq, _stored_time(at), actor, action, subject, reason, json.dumps(before),
         json.dumps(after), prev_hash, digest, mac),
    )  # fmt: skip
    conn.execute("UPDATE audit_head SET seq = ?, hash = ? WHERE id = 1", (seq, digest))


def _resource(conn: sqlite3.Connection, kind: str, name: str) -> tuple[int, dict[str, Any], Any]:
    row = conn.execute(
        "SELECT generation, spec, status FROM resources WHERE kind = ? AND name = ?", (kind, name)
    ).fetchone()
    if row is None:
        raise _FallBack  # the full CLI says what is not found, and how
    status = json.loads(row[2]) if row[2] is not None else None
    return int(row[0]), json.loads(row[1]), status


# ---------------------------------------------------------------------- rollout commands


def _moved(phase: str, paused_from: str | None, command: str) -> tuple[str, str | None] | None:
    """``core.rollout.command`` on the phase alone; None when it changes nothing or is refused."""
    if phase in ALREADY[command] or phase not in ALLOWED[command]:
        return None
    if command == "pause":
        return "paused", phase
    if command == "resume":
        return paused_from or "pending", None
    return ("promoting" if command == "promote" else "rolling_back"), None


def _pending_phase(spec: Mapping[str, Any], status: Mapping[str, Any] | None) -> tuple[str, Any]:
    """``rollout_commands.pending_state``: the stored phase, with commands not seen applied."""
    status = status or {}
    state = status.get("state") or {}
    phase, paused_from = str(state.get("phase", "pending")), state.get("paused_from")
    for entry in spec["commands"][status.get("commands_seen", 0) :]:
        moved = _moved(phase, paused_from, entry["command"])
        if moved is not None:
            phase, paused_from = moved
    return phase, paused_from


def _rollout_command(
    conn: sqlite3.Connection,
    command: str,
    positional: Sequence[str],
    options: Mapping[str, str | bool],
    environ: Mapping[str, str],
) -> Callable[[], None]:
    [endpoint] = positional
    reason = str(options.get("reason", ""))
    key, actor, now = _audit_key(environ), _actor(environ), time.time()
    _, spec, status = _resource(conn, "Rollout", endpoint)
    moved = _moved(*_pending_phase(spec, status), command)
    if moved is None:
        raise _FallBack  # refused, with a hint, or "nothing recorded": the full CLI says it
    commands = [*spec["commands"], {"command": command, "by": actor, "at": now}]
    why = f"{command} rollout" + (f": {reason}" if reason else "")
    _apply(conn, "Rollout", endpoint, spec, {**spec, "commands": commands}, actor=actor,
           reason=why, key=key)  # fmt: skip
    traffic = command == "rollback" and _rollback_traffic(conn, endpoint, spec, actor, reason, key)
    phase = moved[0]
    if options.get("json"):
        document = {"endpoint": endpoint, "command": command, "phase": phase, "changed": True}
        return _write(json.dumps(document, indent=2) + "\n")
    note = "; all traffic back on stable" if traffic else ""
    return _write(f"rollout/{endpoint}: {command} recorded (now {phase}){note}\n")


def _write(text: str) -> Callable[[], None]:
    def emit() -> None:
        sys.stdout.write(text)

    return emit


def _rollback_traffic(
    conn: sqlite3.Connection,
    endpoint: str,
    rollout: Mapping[str, Any],
    actor: str,
    reason: str,
    key: bytes,
) -> bool:
    """``rollout_commands.rollback_traffic``: every request to stable; False if already."""
    _, current, _ = _resource(conn, "Endpoint", endpoint)
    stable = rollout["stable"]
    routes = [(r["model"], float(r.get("weight", 100.0))) for r in current["routes"]]
    shadows = [(s["model"], float(s.get("percent", 100.0))) for s in current.get("shadows", ())]
    if (routes, shadows) == ([(stable, 100.0)], []):
        return False
    after = {**current, "routes": [{"model": stable, "weight": 100.0}], "shadows": []}
    why = "rollback: all traffic to stable" + (f": {reason}" if reason else "")
    _apply(conn, "Endpoint", endpoint, current, after, actor=actor, reason=why, key=key)
    return True


# ---------------------------------------------------------------------- get and explain


def _get(
    conn: sqlite3.Connection, positional: Sequence[str], options: Mapping[str, Any]
) -> Callable[[], None]:
    kind = KIND_ALIASES.get(positional[0].lower())
    if kind is None:
        raise _FallBack
    query = "SELECT name, generation, spec, status, updated_at FROM resources WHERE kind = ?"
    params: tuple[str, ...] = (kind,)
    if len(positional) == 2:
        query, params = query + " AND name = ?", (kind, positional[1])
    rows = conn.execute(query + " ORDER BY name", params).fetchall()
    if len(positional) == 2 and not rows:
        raise _FallBack
    found = [
        (name, int(gen), json.loads(spec), None if status is None else json.loads(status),
         _read_time(updated))
        for name, gen, spec, status, updated in rows
    ]  # fmt: skip
    if options.get("json"):
        documents = [
            {"kind": kind, "name": name, "generation": gen, "spec": spec, "status": status,
             "updated_at": updated.isoformat()}
            for name, gen, spec, status, updated in found
        ]  # fmt: skip
        return _write(json.dumps(documents, indent=2) + "\n")
    rows = [
        (name, gen, resource_summary(spec), f"{updated:%Y-%m-%d %H:%M:%S}")
        for name, gen, spec, _, updated in found
    ]

    def emit() -> None:
        # The table is rich's, as the full CLI draws it: importing rich alone is cheap enough.
        from modelplane.cli.output import table

        table(PLURALS.get(kind, f"{kind.lower()}s"), ["name", "generation", "summary", "updated"],
              rows)  # fmt: skip

    return emit


def resource_summary(spec: Mapping[str, Any]) -> str:
    """One line about a resource for ``get``'s table (the full CLI's ``get`` uses it too)."""
    if spec.get("kind") == "Endpoint":
        routes = " ".join(f"{r['model']}={r['weight']:g}" for r in spec["routes"])
        contract = spec["contract"]
        return (
            f"team={spec['team']} tier={spec['tier']} contract={contract['name']} "
            f"v{contract['version']} routes: {routes}"
        )
    if spec.get("kind") == "Job":
        work = spec.get("work", {})
        what = f"{work.get('type', '')} {work.get('model') or work.get('package') or ''}"
        return f"team={spec['team']} tier={spec['tier']} {what}".rstrip()
    return str(spec.get("placement", ""))


def _explain(
    path: str, positional: Sequence[str], options: Mapping[str, Any]
) -> Callable[[], None]:
    from modelplane.errors import NotFound
    from modelplane.observe.explain import explain_sqlite

    try:
        found = explain_sqlite(path, positional[0])
    except NotFound:
        raise _FallBack from None  # the full CLI words the error and sets its exit code
    if options.get("json"):
        return _write(json.dumps(_jsonable(found), indent=2) + "\n")
    from modelplane.cli.explain_text import explain_lines

    return _write("".join(f"{line}\n" for line in explain_lines(found)))


def _jsonable(value: Any) -> Any:
    """``cli.output.to_jsonable`` for what explain returns: datetimes as ISO text."""
    convert: Callable[[Any], Any] = _jsonable
    if isinstance(value, Mapping):
        return {str(k): convert(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [convert(v) for v in value]
    return value.isoformat() if isinstance(value, datetime) else value
