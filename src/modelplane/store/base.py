"""What every artifact store provides: content-addressed package folders.

Stores do not know the package format; they are handed a :class:`PackageVerifier` (the
registry passes :func:`modelplane.registry.service.verify_digest`) so that the dependency
runs one way, registry → store.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Protocol, runtime_checkable

from modelplane.errors import InvalidSpec
from modelplane.types import Digest

__all__ = ["ArtifactStore", "PackageVerifier", "check_digest", "digest_hex"]

_DIGEST = re.compile(r"^sha256:([0-9a-f]{64})$")


class PackageVerifier(Protocol):
    """Check every byte of a package folder and return its digest.

    Raises :class:`~modelplane.errors.IntegrityError` naming each bad file, and when
    ``expected`` is given, when the digest differs from it.
    """

    def __call__(self, directory: Path, expected: Digest | None = None) -> Digest: ...


@runtime_checkable
class ArtifactStore(Protocol):
    """Package folders stored by digest, under ``<root>/sha256/<hex>/``, exactly as sealed."""

    @property
    def url(self) -> str:
        """Where the store lives, as a path or fsspec URL."""
        ...

    def put_package(self, directory: Path) -> Digest:
        """Verify and store a sealed package folder; storing it twice is a no-op."""
        ...

    def has(self, digest: Digest) -> bool:
        """True once a package with this digest is completely stored."""
        ...

    def fetch(self, digest: Digest, dest: Path) -> Path:
        """Copy the package into the new or empty folder ``dest``, verify it, return ``dest``."""
        ...


def check_digest(value: str) -> Digest:
    """``value`` as a :data:`Digest`, or :class:`InvalidSpec` (it also becomes a path)."""
    if not _DIGEST.fullmatch(value):
        raise InvalidSpec(f"{value!r} is not a digest (expected sha256:<64 hex digits>)")
    return Digest(value)


def digest_hex(digest: str) -> str:
    return check_digest(digest).removeprefix("sha256:")
