"""Secret key files: the audit key and ed25519 signing keys, mode 0600, never in the database.

Signing keys live as ``NAME.key`` (PKCS#8 PEM, mode 0600) beside ``NAME.pub`` (the public
key as ``ed25519:BASE64``, readable by anyone) under ``MODELPLANE_HOME/keys`` unless another
folder is given.

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
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from modelplane.errors import Conflict, InvalidSpec, NotFound
from modelplane.security.signing import key_id_of, public_key_text
from modelplane.spec.names import check_name
from modelplane.store.audit import AuditKey

if TYPE_CHECKING:
    from modelplane.settings import Settings

__all__ = [
    "AUDIT_KEY_FILE",
    "KEYS_DIR",
    "SigningKeyFiles",
    "create_signing_key",
    "load_signing_key",
    "audit_key_from",
    "load_audit_key",
    "read_secret_file",
    "write_secret_file",
]

AUDIT_KEY_FILE = "audit.key"
"""The audit key's file name under ``MODELPLANE_HOME``."""

KEYS_DIR = "keys"
"""The folder of signing keys under ``MODELPLANE_HOME``."""


@dataclass(frozen=True, slots=True)
class SigningKeyFiles:
    """Where a new signing key was written, and its public half."""

    private: Path
    public: Path
    public_key: str
    """``ed25519:BASE64``: what a policy's ``trusted_keys`` entry lists."""
    key_id: str


def create_signing_key(name: str, directory: Path) -> SigningKeyFiles:
    """A new ed25519 key ``NAME.key`` (0600) and ``NAME.pub`` in ``directory``; never
    overwrites an existing key."""
    try:
        check_name(name)
    except ValueError as exc:
        raise InvalidSpec(
            f"key name: {exc}", details=[{"field": "name", "problem": str(exc)}]
        ) from None
    key = Ed25519PrivateKey.generate()
    pem = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    private, public = directory / f"{name}.key", directory / f"{name}.pub"
    if not write_secret_file(private, pem):
        raise Conflict(f"a key named '{name}' already exists at {private}")
    text = public_key_text(key.public_key())
    public.write_text(text + "\n", encoding="utf-8")
    return SigningKeyFiles(private, public, text, key_id_of(text))


def load_signing_key(key: str, home: Path) -> Ed25519PrivateKey:
    """The private key ``key``: a path to a key file, else a name under ``home/keys``."""
    path = Path(key)
    if not path.is_file():
        path = home / KEYS_DIR / f"{key}.key"
    try:
        loaded = serialization.load_pem_private_key(read_secret_file(path), password=None)
    except ValueError as exc:
        raise InvalidSpec(
            f"{path} is not a PEM private key: {exc}",
            details=[{"field": "key", "problem": "not a PEM private key"}],
        ) from exc
    if not isinstance(loaded, Ed25519PrivateKey):
        raise InvalidSpec(
            f"{path} is not an ed25519 key", details=[{"field": "key", "problem": "not ed25519"}]
        )
    return loaded


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
