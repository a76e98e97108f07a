"""Anchors: signed records of the audit chain's head, kept outside the state store.

Someone who can write the database can cut events off the end of the chain and move the
head back, or rewrite the whole chain without MACs; the chain itself then looks whole. An
anchor written earlier to another place (a JSON-lines file, or any fsspec URL) remembers
``(seq, hash)`` at that moment, signed with the audit key, so
:func:`modelplane.store.audit.verify` can tell that the chain no longer reaches, or no longer
passes through, a head it once had.

The place is append-only by use: local files are opened with ``O_APPEND``; fsspec targets
that cannot append (most object stores) are read and written whole, so there the bucket's
own retention or versioning must keep old lines from being removed.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import fsspec

from modelplane.errors import IntegrityError, InvalidSpec, NotFound, StoreUnavailable

__all__ = ["ANCHOR_FORMAT", "Anchor", "append_anchor", "read_anchors"]

ANCHOR_FORMAT = 1
"""Version of one anchor line; a line of another version is refused, not guessed at."""

_ALGORITHM = "hmac-sha256"


@dataclass(frozen=True, slots=True)
class Anchor:
    """The chain head ``(seq, hash)`` at ``at``, signed by the audit key ``key_id``."""

    seq: int
    hash: str
    at: datetime
    key_id: str
    signature: str = ""

    def body(self) -> bytes:
        """The canonical bytes the signature covers (everything but the signature)."""
        fields = {
            "v": ANCHOR_FORMAT,
            "alg": _ALGORITHM,
            "seq": self.seq,
            "hash": self.hash,
            "at": self.at.astimezone(UTC).isoformat(),
            "key_id": self.key_id,
        }
        return json.dumps(fields, sort_keys=True, separators=(",", ":")).encode()

    def to_line(self) -> str:
        """One JSON line: the body's fields and the signature."""
        fields = json.loads(self.body())
        fields["sig"] = self.signature
        return json.dumps(fields, sort_keys=True, separators=(",", ":")) + "\n"

    @classmethod
    def from_line(cls, line: str, *, where: str) -> Anchor:
        """Parse one line; ``where`` (``file:line``) names it in the error."""
        try:
            fields: dict[str, Any] = json.loads(line)
            if fields.get("v") != ANCHOR_FORMAT or fields.get("alg") != _ALGORITHM:
                raise ValueError(f"unknown anchor format {fields.get('v')}/{fields.get('alg')}")
            at = datetime.fromisoformat(str(fields["at"]))
            if at.tzinfo is None:
                raise ValueError("the anchor time has no time zone")
            seq = fields["seq"]
            if not isinstance(seq, int) or isinstance(seq, bool) or seq < 0:
                raise ValueError(f"seq must be a non-negative integer, not {seq!r}")
            return cls(seq, str(fields["hash"]), at, str(fields["key_id"]), str(fields["sig"]))
        except (ValueError, KeyError, TypeError, AttributeError) as exc:
            raise IntegrityError(
                f"anchor {where} is unreadable: {exc}",
                details=[{"field": where, "problem": str(exc)}],
            ) from exc


def _is_url(target: str) -> bool:
    return "://" in target


def append_anchor(target: str | Path, anchor: Anchor) -> None:
    """Append ``anchor`` as one line to the file or fsspec URL ``target`` (created if new)."""
    line = anchor.to_line().encode()
    try:
        if isinstance(target, Path) or not _is_url(target):
            _append_local(Path(target), line)
        else:
            _append_url(target, line)
    except OSError as exc:
        raise StoreUnavailable(f"cannot write the anchor to {target}: {exc}") from exc


def _append_local(path: Path, line: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    # O_APPEND: the line lands after whatever is there, even with another writer at work.
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
    try:
        os.write(fd, line)
        os.fsync(fd)
    finally:
        os.close(fd)


def _append_url(url: str, line: bytes) -> None:
    try:
        fs, path = fsspec.core.url_to_fs(url)
    except (ImportError, ValueError) as exc:
        raise InvalidSpec(
            f"anchor target {url!r}: {exc}", details=[{"field": "to", "problem": str(exc)}]
        ) from exc
    try:
        with fs.open(path, "ab") as file:
            file.write(line)
    except (NotImplementedError, ValueError):
        # Object stores cannot append: write the whole object again (see the module doc).
        existing = fs.cat_file(path) if fs.exists(path) else b""
        with fs.open(path, "wb") as file:
            file.write(existing + line)


def read_anchors(source: str | Path) -> list[Anchor]:
    """Every anchor at the file or fsspec URL ``source``, in the order written."""
    try:
        if isinstance(source, Path) or not _is_url(source):
            text = Path(source).read_text(encoding="utf-8")
        else:
            with fsspec.open(source, "rt", encoding="utf-8") as file:
                text = file.read()
    except (ImportError, ValueError) as exc:  # fsspec's "Install s3fs to access S3", ...
        raise InvalidSpec(
            f"anchor {str(source)!r}: {exc}", details=[{"field": "anchor", "problem": str(exc)}]
        ) from exc
    except FileNotFoundError as exc:
        raise NotFound(
            f"no anchors at {source}: the anchor file is missing",
            details=[{"field": "anchor", "problem": "missing"}],
        ) from exc
    except OSError as exc:
        raise StoreUnavailable(f"cannot read the anchors at {source}: {exc}") from exc
    lines = text.splitlines()
    return [
        Anchor.from_line(line, where=f"{source}:{number}")
        for number, line in enumerate(lines, start=1)
        if line.strip()
    ]
