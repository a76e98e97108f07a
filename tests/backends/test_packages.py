"""``backends.packages.ensure_package``: a node that lacks a package folder fetches it from
the artifact store, verified; one that has it keeps it; a damaged store copy is refused and
leaves no folder behind."""

from __future__ import annotations

from pathlib import Path

import pytest
from tests.dataplane import gateway_kit as kit

from modelplane.backends.packages import ensure_package
from modelplane.errors import IntegrityError
from modelplane.registry.service import verify_digest
from modelplane.store.artifacts import open_artifact_store
from modelplane.types import Digest


def stored(tmp_path: Path) -> tuple[Path, Digest]:
    store = tmp_path / "artifacts"
    model = kit.source("sklearn")
    digest = open_artifact_store(str(store), verify=verify_digest).put_package(model.directory)
    return store, digest


def test_a_missing_folder_is_fetched_and_a_present_one_kept(tmp_path: Path) -> None:
    store, digest = stored(tmp_path)
    folder = tmp_path / "node" / "cache" / digest.removeprefix("sha256:")
    assert ensure_package(str(folder), digest, str(store)) is True
    assert verify_digest(folder, digest) == digest
    assert ensure_package(str(folder), digest, str(store)) is False
    assert sorted(p.name for p in folder.parent.iterdir()) == [folder.name]  # no staging left


def test_a_damaged_copy_in_the_store_is_refused_and_leaves_nothing(tmp_path: Path) -> None:
    store, digest = stored(tmp_path)
    stored_file = next(
        p for p in sorted(store.rglob("*")) if p.is_file() and p.name != "modelplane.yaml"
    )
    stored_file.write_bytes(stored_file.read_bytes() + b"tampered")
    folder = tmp_path / "node" / digest.removeprefix("sha256:")
    with pytest.raises(IntegrityError):
        ensure_package(str(folder), digest, str(store))
    assert not folder.exists()
    # a failed fetch leaves nothing that looks like a package
    assert not [p for p in folder.parent.rglob("*") if p.is_file()]
