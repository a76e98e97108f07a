"""Signed packages: signatures that verify, forgeries that do not, and trust that comes
from the policy, never from the manifest."""

from __future__ import annotations

import base64
import os
import pickle
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from sklearn.linear_model import LogisticRegression

from modelplane.controlplane.apply import Applier
from modelplane.errors import Forbidden, UnsafeFormat
from modelplane.registry.build import package
from modelplane.registry.digest import read_manifest, seal
from modelplane.registry.service import Registry, open_registry
from modelplane.security import signing
from modelplane.spec.manifest import ModelFormat
from modelplane.spec.policy import DEFAULT_TIERS, Policy, TrustedFor, TrustedKey
from modelplane.store.audit import AuditKey
from modelplane.store.resources import ResourceStore

pd = pytest.importorskip("pandas")

DIGEST = "sha256:" + "ab" * 32
CODE_KEY = Ed25519PrivateKey.generate()
RELEASE_KEY = Ed25519PrivateKey.generate()
STRANGER = Ed25519PrivateKey.generate()


def trusted(name: str, key: Ed25519PrivateKey, *purposes: TrustedFor) -> dict[str, Any]:
    public = signing.public_key_text(key.public_key())
    return {"name": name, "public_key": public, "trusted_for": [p.value for p in purposes]}


def policy_doc(*, require_signature_in: str | None = None) -> dict[str, Any]:
    tiers = [
        {**t.model_dump(mode="json"), "require_signature": t.name == require_signature_in}
        for t in DEFAULT_TIERS
    ]
    return {
        "kind": "Policy",
        "tiers": tiers,
        "trusted_keys": [
            trusted("build-bot", CODE_KEY, TrustedFor.CODE),
            trusted("release-bot", RELEASE_KEY, TrustedFor.RELEASE),
        ],
    }


# -- signatures, no store ----------------------------------------------------------------


def test_a_signature_round_trips_and_covers_name_and_digest() -> None:
    made = signing.sign(CODE_KEY, "fraud", DIGEST)
    assert made.key_id == signing.key_id_of(signing.public_key_text(CODE_KEY.public_key()))
    assert signing.signature_valid(made, "fraud", DIGEST)
    assert not signing.signature_valid(made, "fraud", "sha256:" + "cd" * 32)
    assert not signing.signature_valid(made, "other", DIGEST)


def test_a_forged_signature_does_not_verify() -> None:
    made = signing.sign(CODE_KEY, "fraud", DIGEST)
    flipped = bytearray(base64.b64decode(made.signature))
    flipped[0] ^= 1
    forged = signing.Signature(made.key_id, made.public_key, base64.b64encode(flipped).decode())
    assert not signing.signature_valid(forged, "fraud", DIGEST)
    # A stranger's signature that claims the trusted key's id borrows nothing.
    theirs = signing.sign(STRANGER, "fraud", DIGEST)
    borrowed = signing.Signature(made.key_id, theirs.public_key, theirs.signature)
    assert not signing.signature_valid(borrowed, "fraud", DIGEST)
    assert not signing.signature_valid(
        signing.Signature(made.key_id, made.public_key, "not base64!"), "fraud", DIGEST
    )


def test_policy_keys_must_be_ed25519() -> None:
    with pytest.raises(ValueError, match="not an ed25519 public key"):
        TrustedKey(name="x", public_key="ed25519:AAAA", trusted_for=(TrustedFor.CODE,))


# -- trust at apply, against SQLite and PostgreSQL -------------------------------------


@pytest.fixture
def registry(database_url: str, tmp_path: Path) -> Iterator[Registry]:
    registry = open_registry(
        database_url, str(tmp_path / "art"), actor="alice", audit_key=AuditKey(b"a" * 32)
    )
    yield registry
    registry.close()


class Payload:
    """What an attacker pickles: loading it would run a shell command."""

    def __reduce__(self) -> tuple[Any, tuple[str]]:
        return (os.system, ("touch /tmp/modelplane-pwned",))


def hand_written_pickle(tmp_path: Path) -> Path:
    """A package whose manifest was written by hand to say ``trusted_pickle: true``."""
    rng = np.random.default_rng(1)
    frame = pd.DataFrame(rng.normal(size=(40, 2)), columns=["amount", "age"])
    model = LogisticRegression().fit(frame, (frame["amount"] > 0).astype(int))
    built = package(model, name="fraud", output_dir=tmp_path / "pkg", sample_input=frame.head())
    manifest = read_manifest(built.path)
    (built.path / manifest.model_file).unlink()
    (built.path / "model.joblib").write_bytes(pickle.dumps(Payload()))
    changed = manifest.model_copy(
        update={
            "format": ModelFormat.JOBLIB,
            "model_file": "model.joblib",
            "trusted_pickle": True,
            "files": (),
        }
    )
    seal(built.path, changed)
    return built.path


def endpoint(tier: str = "standard") -> dict[str, Any]:
    return {
        "kind": "Endpoint",
        "name": "fraud-score",
        "team": "risk",
        "tier": tier,
        "contract": {
            "name": "fraud-score",
            "inputs": [{"name": "amount", "dtype": "float64"}, {"name": "age", "dtype": "float64"}],
            "outputs": [{"name": "label", "dtype": "int64"}],
        },
        "routes": [{"model": "fraud:1"}],
    }


def add(registry: Registry, key: Ed25519PrivateKey, ref: str = "fraud:1") -> None:
    version = registry.get(ref)
    made = signing.sign(key, version.name, version.digest)
    registry.add_signature(
        ref, key_id=made.key_id, public_key=made.public_key, signature=made.signature
    )


def test_a_hand_written_trusted_pickle_is_refused_until_a_trusted_code_key_signs(
    registry: Registry, tmp_path: Path
) -> None:
    registry.push(hand_written_pickle(tmp_path))
    applier = Applier(registry, ResourceStore(registry.engine), actor="alice")
    applier.apply_all([policy_doc()])
    with pytest.raises(UnsafeFormat) as refused:
        applier.apply_all([endpoint()])
    fields = [d["field"] for d in refused.value.details]
    assert fields == ["routes[0].model", "trusted_pickle"]
    assert "unsigned" in str(refused.value)

    add(registry, STRANGER)  # valid, but the policy does not know the key
    add(registry, RELEASE_KEY)  # trusted, but not for code
    with pytest.raises(UnsafeFormat) as refused:
        applier.apply_all([endpoint()])
    stranger, release = (signing.sign(k, "x", DIGEST).key_id for k in (STRANGER, RELEASE_KEY))
    assert f"{stranger}: untrusted, {release}: trusted" in str(refused.value)

    add(registry, CODE_KEY)
    [applied] = applier.apply_all([endpoint()])
    assert applied.outcome == "created"
    assert not Path("/tmp/modelplane-pwned").exists()
    actions = [e.action for e in registry.audit_events(subject="fraud:1")]
    assert actions.count("model.sign") == 3


def test_a_forged_signature_row_earns_no_trust(registry: Registry, tmp_path: Path) -> None:
    registry.push(hand_written_pickle(tmp_path))
    applier = Applier(registry, ResourceStore(registry.engine), actor="alice")
    applier.apply_all([policy_doc()])
    made = signing.sign(STRANGER, "fraud", registry.get("fraud:1").digest)
    code_public = signing.public_key_text(CODE_KEY.public_key())
    # Mallory stores the trusted key's public half with her own signature bytes.
    registry.add_signature(
        "fraud:1",
        key_id=signing.key_id_of(code_public),
        public_key=code_public,
        signature=made.signature,
        actor="mallory",
    )
    with pytest.raises(UnsafeFormat, match="INVALID"):
        applier.apply_all([endpoint()])


def test_a_tier_can_require_a_release_signature(registry: Registry, tmp_path: Path) -> None:
    rng = np.random.default_rng(1)
    frame = pd.DataFrame(rng.normal(size=(40, 2)), columns=["amount", "age"])
    model = LogisticRegression().fit(frame, (frame["amount"] > 0).astype(int))
    built = package(model, name="fraud", output_dir=tmp_path / "pkg", sample_input=frame.head())
    registry.push(built.path)
    applier = Applier(registry, ResourceStore(registry.engine), actor="alice")
    applier.apply_all([policy_doc(require_signature_in="critical")])
    applier.apply_all([endpoint("standard")])  # a skops package, no tier rule: no signature
    with pytest.raises(Forbidden, match="tier 'critical' requires"):
        applier.apply_all([endpoint("critical")])
    add(registry, CODE_KEY)
    with pytest.raises(Forbidden):
        applier.apply_all([endpoint("critical")])
    add(registry, RELEASE_KEY)
    assert applier.apply_all([endpoint("critical")])[0].outcome == "configured"


def test_the_load_time_check_reads_the_policy_in_force(registry: Registry, tmp_path: Path) -> None:
    registry.push(hand_written_pickle(tmp_path))
    resources = ResourceStore(registry.engine)
    refs = {"routes[0].model": "fraud:1"}
    with pytest.raises(UnsafeFormat):  # no policy applied: nobody is trusted
        signing.require_trusted_refs(registry, resources, "standard", refs)
    add(registry, CODE_KEY)
    with pytest.raises(UnsafeFormat):
        signing.require_trusted_refs(registry, resources, "standard", refs)
    Applier(registry, resources, actor="alice").apply_all([policy_doc()])
    signing.require_trusted_refs(registry, resources, "standard", refs)
    assert Policy.model_validate(policy_doc()).trusted_keys[0].name == "build-bot"


def test_a_policy_and_the_endpoint_it_trusts_apply_in_one_file(
    registry: Registry, tmp_path: Path
) -> None:
    """The endpoint is checked under the policy the same apply puts in force (as its tier
    is): one file may bring the trusted key and the endpoint it lets serve."""
    registry.push(hand_written_pickle(tmp_path))
    add(registry, CODE_KEY)
    applier = Applier(registry, ResourceStore(registry.engine), actor="alice")
    created = applier.apply_all([policy_doc(), endpoint()])
    assert [r.outcome for r in created] == ["created", "created"]
    assert not Path("/tmp/modelplane-pwned").exists()
