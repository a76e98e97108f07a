"""Stored signatures of model versions: the registry keeps them, it does not judge them.

Whether a signature is valid, and whether its key is trusted, is decided by
:mod:`modelplane.security.signing` against the policy whenever it matters (apply, worker
start, ``modelplane verify``); a forged row stored here gains nothing, since every reader
checks it again.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import select
from sqlalchemy.orm import Session

from modelplane.store.schema import VersionSignatureRow

__all__ = ["VersionSignature", "add_signature", "signatures_of"]


@dataclass(frozen=True, slots=True)
class VersionSignature:
    """One stored signature of a version's name and digest."""

    key_id: str
    public_key: str
    """``ed25519:BASE64`` of the key that signed."""
    signature: str
    """The ed25519 signature, base64."""
    signed_by: str
    """Who stored it (the actor), not necessarily who holds the key."""
    at: datetime


def add_signature(session: Session, version_id: int, signature: VersionSignature) -> bool:
    """Store ``signature`` for the version; False when that key's signature is already there
    (ed25519 is deterministic: the same key signs the same version the same way)."""
    exists = session.scalar(
        select(VersionSignatureRow.id).where(
            VersionSignatureRow.version_id == version_id,
            VersionSignatureRow.key_id == signature.key_id,
        )
    )
    if exists is not None:
        return False
    session.add(
        VersionSignatureRow(
            version_id=version_id,
            key_id=signature.key_id,
            public_key=signature.public_key,
            signature=signature.signature,
            signed_by=signature.signed_by,
            at=signature.at,
        )
    )
    return True


def signatures_of(session: Session, version_id: int) -> list[VersionSignature]:
    """The version's signatures, oldest first."""
    rows = session.scalars(
        select(VersionSignatureRow)
        .where(VersionSignatureRow.version_id == version_id)
        .order_by(VersionSignatureRow.id)
    )
    return [VersionSignature(r.key_id, r.public_key, r.signature, r.signed_by, r.at) for r in rows]
