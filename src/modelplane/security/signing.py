"""Signed packages: ed25519 signatures of a model version, and the policy's trust in them.

A signature covers the model's name and the version's digest (which covers the manifest
and every file), under a fixed context string, so it vouches for exactly those bytes under
that name and can never pass for a signature of anything else. Keys are named by
``key_id``, the first 16 hex digits of the SHA-256 of the raw public key.

Trust is the policy's (``trusted_keys``), never the package's: a manifest that says
``trusted_pickle: true`` only admits that it runs code on load. A package that does (pickle,
joblib, the python runtime) may be served only with a valid signature by a key the policy
trusts for ``code``; a tier with ``require_signature`` serves only versions signed by a key
trusted for ``release``. :func:`require_trusted_refs` is the check both ``apply`` and the
endpoint controller (before any worker loads the package) make.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Protocol

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from modelplane.errors import Forbidden, InvalidSpec, UnsafeFormat
from modelplane.spec.manifest import Manifest, Runtime
from modelplane.spec.policy import Policy, TrustedFor, TrustedKey
from modelplane.store.resources import ResourceStore

__all__ = [
    "CheckedSignature",
    "Signature",
    "SignatureLike",
    "SignedVersion",
    "VersionSource",
    "examine",
    "key_id_of",
    "policy_in_force",
    "public_key_text",
    "require_trusted",
    "require_trusted_refs",
    "runs_code",
    "sign",
    "signature_valid",
    "signed_message",
]

_CONTEXT = b"modelplane-version-signature-v1\0"
_PREFIX = "ed25519:"


class SignatureLike(Protocol):
    """A stored signature, as the registry returns it."""

    @property
    def key_id(self) -> str: ...
    @property
    def public_key(self) -> str: ...
    @property
    def signature(self) -> str: ...


class SignedVersion(Protocol):
    """What a signature is checked against: a registered model version."""

    @property
    def name(self) -> str: ...
    @property
    def digest(self) -> str: ...
    @property
    def ref(self) -> str: ...
    @property
    def manifest(self) -> Manifest: ...


class VersionSource(Protocol):
    """Resolves refs and reads their stored signatures (the registry does)."""

    def get(self, ref: str) -> SignedVersion: ...
    def signatures(self, ref: str) -> Sequence[SignatureLike]: ...


@dataclass(frozen=True, slots=True)
class Signature:
    """A new signature, ready to store."""

    key_id: str
    public_key: str
    signature: str


@dataclass(frozen=True, slots=True)
class CheckedSignature:
    """A stored signature after checking: is it valid, and which trusted key made it."""

    key_id: str
    valid: bool
    trusted: TrustedKey | None
    """The policy's entry for the key; ``None`` when the policy does not list it."""


def public_key_text(key: Ed25519PublicKey) -> str:
    """``ed25519:BASE64``: how policies and the registry write a public key."""
    return _PREFIX + base64.b64encode(key.public_bytes_raw()).decode()


def _raw_public(text: str) -> bytes:
    try:
        raw = base64.b64decode(text.removeprefix(_PREFIX), validate=True)
    except (binascii.Error, ValueError):
        raw = b""
    if not text.startswith(_PREFIX) or len(raw) != 32:
        raise InvalidSpec(
            f"'{text}' is not an ed25519 public key (ed25519:BASE64)",
            details=[{"field": "public_key", "problem": "not ed25519:BASE64 of 32 bytes"}],
        )
    return raw


def key_id_of(public_key: str) -> str:
    """The key's id: 16 hex digits of the SHA-256 of its raw bytes."""
    return hashlib.sha256(_raw_public(public_key)).hexdigest()[:16]


def signed_message(name: str, digest: str) -> bytes:
    """The exact bytes a signature covers."""
    return _CONTEXT + f"{name}\n{digest}".encode()


def sign(key: Ed25519PrivateKey, name: str, digest: str) -> Signature:
    """Sign version ``digest`` of model ``name``."""
    public = public_key_text(key.public_key())
    signature = base64.b64encode(key.sign(signed_message(name, digest))).decode()
    return Signature(key_id_of(public), public, signature)


def signature_valid(signature: SignatureLike, name: str, digest: str) -> bool:
    """True when ``signature`` is one its own key made over ``name`` and ``digest``."""
    try:
        raw = _raw_public(signature.public_key)
        if hashlib.sha256(raw).hexdigest()[:16] != signature.key_id:
            return False
        public = Ed25519PublicKey.from_public_bytes(raw)
        public.verify(
            base64.b64decode(signature.signature, validate=True), signed_message(name, digest)
        )
    except (InvalidSpec, InvalidSignature, binascii.Error, ValueError):
        return False
    return True


def examine(
    policy: Policy, version: SignedVersion, signatures: Sequence[SignatureLike]
) -> list[CheckedSignature]:
    """Each stored signature checked against the version, with the policy's trust in it."""
    trusted = {key_id_of(k.public_key): k for k in policy.trusted_keys}
    checked = []
    for signature in signatures:
        valid = signature_valid(signature, version.name, version.digest)
        # A key is trusted by its bytes, so a signature's claimed key id cannot borrow trust.
        entry = trusted.get(signature.key_id) if valid else None
        checked.append(CheckedSignature(signature.key_id, valid, entry))
    return checked


def runs_code(manifest: Manifest) -> bool:
    """Whether loading the package runs code it carries."""
    return manifest.format.runs_code_on_load or manifest.runtime is Runtime.PYTHON


def _vouched(checked: Sequence[CheckedSignature], purpose: TrustedFor) -> bool:
    return any(c.valid and c.trusted and purpose in c.trusted.trusted_for for c in checked)


def require_trusted(
    policy: Policy,
    version: SignedVersion,
    signatures: Sequence[SignatureLike],
    *,
    tier: str,
    field: str,
) -> None:
    """Refuse ``version`` where the policy needs a trusted signature it does not have.

    Raises :class:`UnsafeFormat` for a package that runs code on load without a valid
    signature by a key trusted for ``code``, :class:`Forbidden` for a tier that requires a
    signature by a key trusted for ``release``; ``field`` names the place in the request.
    """
    manifest = version.manifest
    needs_code = runs_code(manifest)
    needs_release = policy.tier(tier).require_signature
    if not (needs_code or needs_release):
        return
    checked = examine(policy, version, signatures)
    if needs_code and not _vouched(checked, TrustedFor.CODE):
        what = f"runtime '{manifest.runtime.value}', format '{manifest.format.value}'"
        problem = (
            f"{version.ref} runs code when loaded ({what}): it needs a signature by a key the"
            f" policy trusts for code{_found(checked)}; the manifest's trusted_pickle does not"
            " count"
        )
        raise UnsafeFormat(
            f"{field}: {problem}",
            details=[
                {"field": field, "problem": problem},
                {"field": "trusted_pickle", "problem": "a manifest cannot vouch for itself"},
            ],
        )
    if needs_release and not _vouched(checked, TrustedFor.RELEASE):
        problem = (
            f"tier '{tier}' requires a signature by a key the policy trusts for release;"
            f" {version.ref} has none{_found(checked)}"
        )
        raise Forbidden(f"{field}: {problem}", details=[{"field": field, "problem": problem}])


def _found(checked: Sequence[CheckedSignature]) -> str:
    if not checked:
        return " (it is unsigned)"
    parts = [
        f"{c.key_id}: {'trusted' if c.trusted else 'untrusted' if c.valid else 'INVALID'}"
        for c in checked
    ]
    return f" (signatures: {', '.join(parts)})"


def policy_in_force(resources: ResourceStore) -> Policy:
    """The ``default`` policy, else the first applied, else the built-in defaults."""
    found = resources.list("Policy")
    chosen = next((r for r in found if r.name == "default"), found[0] if found else None)
    return Policy() if chosen is None else Policy.model_validate(chosen.spec)


def require_trusted_refs(
    source: VersionSource,
    resources: ResourceStore,
    tier: str,
    refs: Mapping[str, str],
    policy: Policy | None = None,
) -> None:
    """:func:`require_trusted` for each ``field -> ref`` of ``refs``, under ``policy`` (by
    default the policy in force): the one call ``apply`` and the endpoint controller make
    before a version serves."""
    policy = policy or policy_in_force(resources)
    for field, ref in refs.items():
        version = source.get(ref)
        if runs_code(version.manifest) or policy.tier(tier).require_signature:
            require_trusted(policy, version, source.signatures(version.ref), tier=tier, field=field)
