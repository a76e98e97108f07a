"""Secret key files: the audit key and ed25519 signing keys, mode 0600, never in the database.

A key file is created whole or not at all: the secret is written to a private temporary file
in the same folder and hard-linked to its name, which fails if another process got there
first; that process's key is then read instead. A key file that others can read is refused,
as ``ssh`` refuses one: a secret that was exposed is no longer a secret.
"""

from __future__ import annotations

import os
import secrets
import stat
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING

from modelplane.errors import InvalidSpec, NotFound
from modelplane.store.audit import AuditKey

if TYPE_CHECKING:
    from modelplane.settings import Settings

__all__ = [
    "AUDIT_KEY_FILE",
    "audit_key_from",
    "load_audit_key",
    "read_secret_file",
    "write_secret_file",
]

AUDIT_KEY_FILE = "audit.key"
"""The audit key's file name under ``MODELPLANE_HOME``."""


def load_audit_key(home: Path, secret: str | None = None) -> AuditKey:
    """The audit key: ``secret`` (from ``MODELPLANE_AUDIT_KEY``) when given, else the file
    ``home/audit.key``, created with 32 random bytes on first use."""
    if secret:
        return AuditKey(secret.encode())
    path = home / AUDIT_KEY_FILE
    if not path.exists():
        write_secret_file(path, secrets.token_hex(32).encode() + b"\n")
    return AuditKey(read_secret_file(path).strip())


def audit_key_from(settings: Settings) -> AuditKey:
    """The audit key the settings name (``MODELPLANE_AUDIT_KEY``, else the home's file)."""
    secret = settings.audit_key.get_secret_value() if settings.audit_key else None
    return load_audit_key(settings.home, secret)


def write_secret_file(path: Path, content: bytes) -> bool:
    """Create ``path`` (mode 0600) holding ``content``; False if it already existed."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, temporary = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    try:
        with os.fdopen(fd, "wb") as file:  # mkstemp creates the file with mode 0600
            file.write(content)
            file.flush()
            os.fsync(file.fileno())
        os.link(temporary, path)
    except FileExistsError:
        return False
    finally:
        os.unlink(temporary)
    return True


def read_secret_file(path: Path) -> bytes:
    """The bytes of the key file ``path``, refused when group or others may read it."""
    try:
        mode = path.stat().st_mode
        if mode & (stat.S_IRWXG | stat.S_IRWXO):
            raise InvalidSpec(
                f"key file {path} is open to others (mode {stat.S_IMODE(mode):04o}):"
                f" run chmod 600 {path}",
                details=[{"field": str(path), "problem": "mode must be 0600"}],
            )
        return path.read_bytes()
    except FileNotFoundError as exc:
        raise NotFound(f"no key file at {path}") from exc
