"""Artifact stores: the same contract on a local folder and through fsspec (memory, file)."""

from __future__ import annotations

import threading
import uuid
from collections.abc import Iterator
from pathlib import Path

import fsspec
import pytest

from modelplane.errors import IntegrityError, InvalidSpec, NotFound
from modelplane.registry.digest import seal, verify_package
from modelplane.registry.service import verify_digest
from modelplane.spec import DType, Environment, FieldSpec, Manifest, Signature
from modelplane.spec.manifest import ModelFormat, Runtime
from modelplane.store.artifacts import LocalArtifactStore, open_artifact_store
from modelplane.store.base import ArtifactStore
from modelplane.types import Digest


def make_package(folder: Path, payload: bytes = b"weights") -> tuple[Path, Digest]:
    folder.mkdir(parents=True)
    (folder / "model.onnx").write_bytes(payload)
    (folder / "extra").mkdir()
    (folder / "extra" / "vocab.txt").write_text("a\nb\n")
    manifest = Manifest(
        name="fraud",
        runtime=Runtime.ONNX,
        format=ModelFormat.ONNX,
        model_file="model.onnx",
        signature=Signature(inputs=(FieldSpec(name="x", dtype=DType.FLOAT32),)),
        environment=Environment(python="3.11"),
    )
    _, digest = seal(folder, manifest)
    return folder, digest


@pytest.fixture(params=["local", "memory", "file-url"])
def store_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    if request.param == "local":
        yield str(tmp_path / "artifacts")
    elif request.param == "file-url":
        yield (tmp_path / "artifacts").as_uri()
    else:
        url = f"memory://artifacts-{uuid.uuid4().hex}"
        yield url
        fs, root = fsspec.core.url_to_fs(url)
        if fs.exists(root):
            fs.rm(root, recursive=True)


@pytest.fixture
def store(store_url: str) -> ArtifactStore:
    return open_artifact_store(store_url, verify=verify_digest)


def stored_files(store_url: str) -> list[str]:
    fs, root = fsspec.core.url_to_fs(store_url)
    if not fs.exists(root):
        return []
    return sorted(str(p).removeprefix(str(root).rstrip("/") + "/") for p in fs.find(root))


def test_put_stores_the_sealed_folder_by_digest(
    store: ArtifactStore, store_url: str, tmp_path: Path
) -> None:
    package, digest = make_package(tmp_path / "pkg")
    assert not store.has(digest)
    assert store.put_package(package) == digest
    assert store.has(digest)
    hex_ = digest.removeprefix("sha256:")
    assert stored_files(store_url) == [
        f"sha256/{hex_}/extra/vocab.txt",
        f"sha256/{hex_}/model.onnx",
        f"sha256/{hex_}/modelplane.yaml",
    ]


def test_put_twice_is_a_no_op(store: ArtifactStore, store_url: str, tmp_path: Path) -> None:
    package, digest = make_package(tmp_path / "pkg")
    copy, same = make_package(tmp_path / "copy")
    assert store.put_package(package) == digest
    assert store.put_package(copy) == same == digest
    assert len(stored_files(store_url)) == 3


def test_fetch_returns_a_verified_copy(store: ArtifactStore, tmp_path: Path) -> None:
    package, digest = make_package(tmp_path / "pkg")
    store.put_package(package)
    dest = store.fetch(digest, tmp_path / "out" / "fraud")
    assert verify_package(dest, digest).digest == digest
    assert (dest / "extra" / "vocab.txt").read_text() == "a\nb\n"


def test_fetch_needs_a_new_or_empty_folder(store: ArtifactStore, tmp_path: Path) -> None:
    package, digest = make_package(tmp_path / "pkg")
    store.put_package(package)
    (tmp_path / "empty").mkdir()
    store.fetch(digest, tmp_path / "empty")
    with pytest.raises(InvalidSpec, match="new or empty folder"):
        store.fetch(digest, package)


def test_fetch_of_an_unknown_digest_is_not_found(store: ArtifactStore, tmp_path: Path) -> None:
    with pytest.raises(NotFound):
        store.fetch(Digest("sha256:" + "0" * 64), tmp_path / "out")
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("bad", ["sha256:xyz", "md5:" + "0" * 64, "sha256:../../etc"])
def test_malformed_digests_are_refused(store: ArtifactStore, bad: str) -> None:
    with pytest.raises(InvalidSpec, match="not a digest"):
        store.has(Digest(bad))


@pytest.mark.parametrize("damage", ["extra file", "missing file", "changed file", "manifest"])
def test_a_damaged_package_is_refused_and_nothing_is_stored(
    store: ArtifactStore, store_url: str, tmp_path: Path, damage: str
) -> None:
    package, _ = make_package(tmp_path / "pkg")
    if damage == "extra file":
        (package / "extra" / "smuggled.py").write_text("import os")
        named = "extra/smuggled.py"
    elif damage == "missing file":
        (package / "extra" / "vocab.txt").unlink()
        named = "extra/vocab.txt"
    elif damage == "changed file":
        (package / "model.onnx").write_bytes(b"weightz")
        named = "model.onnx"
    else:
        manifest = package / "modelplane.yaml"
        manifest.write_text(manifest.read_text() + "# edited by hand\n")
        named = "modelplane.yaml"
    with pytest.raises(IntegrityError) as info:
        store.put_package(package)
    assert info.value.details[0]["field"] == named
    assert stored_files(store_url) == []


def test_stored_bytes_that_rot_fail_the_fetch(
    store: ArtifactStore, store_url: str, tmp_path: Path
) -> None:
    package, digest = make_package(tmp_path / "pkg")
    store.put_package(package)
    fs, root = fsspec.core.url_to_fs(store_url)
    fs.pipe_file(f"{root}/sha256/{digest.removeprefix('sha256:')}/model.onnx", b"rotten")
    with pytest.raises(IntegrityError, match=r"model\.onnx"):
        store.fetch(digest, tmp_path / "out")
    assert not (tmp_path / "out").exists()


def test_local_store_paths_and_concurrent_puts(tmp_path: Path) -> None:
    store = LocalArtifactStore(tmp_path / "artifacts", verify=verify_digest)
    packages = [make_package(tmp_path / f"pkg{i}")[0] for i in range(4)]
    digests: list[Digest] = []
    threads = [
        threading.Thread(target=lambda p=p: digests.append(store.put_package(p))) for p in packages
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=30)
    assert len(digests) == 4
    assert len(set(digests)) == 1
    assert (store.path_of(digests[0]) / "model.onnx").read_bytes() == b"weights"
    assert list((tmp_path / "artifacts" / "tmp").iterdir()) == []
    with pytest.raises(NotFound):
        store.path_of(Digest("sha256:" + "1" * 64))


def test_a_missing_folder_is_invalid(store: ArtifactStore, tmp_path: Path) -> None:
    with pytest.raises(InvalidSpec, match="not a folder"):
        store.put_package(tmp_path / "nowhere")
