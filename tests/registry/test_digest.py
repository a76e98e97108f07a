from __future__ import annotations

import os
import tempfile
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from modelplane.errors import IntegrityError, InvalidSpec
from modelplane.registry.digest import digest_of_manifest, read_manifest, seal, verify_package
from modelplane.spec.fields import FieldSpec, Signature
from modelplane.spec.manifest import MANIFEST_FILE, Environment, Manifest, ModelFormat, Runtime
from modelplane.types import Digest


class PackageBuilder:
    """``PackageBuilder(dir).file("model.onnx", b"...").seal()`` writes a sealed package."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self._files: list[tuple[str, bytes]] = []

    def file(self, rel: str, data: bytes) -> PackageBuilder:
        self._files.append((rel, data))
        return self

    def seal(self) -> tuple[Manifest, Digest]:
        self.directory.mkdir(parents=True, exist_ok=True)
        for rel, data in self._files:
            target = self.directory / rel
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_bytes(data)
        model_file = min(rel for rel, _ in self._files) if self._files else "model.onnx"
        manifest = Manifest(
            name="demo",
            runtime=Runtime.ONNX,
            format=ModelFormat.ONNX,
            model_file=model_file,
            signature=Signature(inputs=(FieldSpec(name="x", dtype="float32", shape=(-1, 2)),)),
            environment=Environment(python="3.11.0", packages={"numpy": "2.0.0"}),
        )
        return seal(self.directory, manifest)


def _sealed(tmp_path: Path) -> Path:
    builder = (
        PackageBuilder(tmp_path / "pkg")
        .file("model.onnx", b"model-bytes")
        .file("extra/vocab.txt", b"a")
    )
    builder.seal()
    return builder.directory


def _problem_fields(exc: IntegrityError) -> list[str]:
    return [str(d["field"]) for d in exc.details]


def test_a_sealed_package_verifies_and_lists_every_file(tmp_path: Path) -> None:
    directory = _sealed(tmp_path)
    verified = verify_package(directory)
    assert [f.path for f in verified.manifest.files] == ["extra/vocab.txt", "model.onnx"]
    assert verified.digest == digest_of_manifest(read_manifest(directory))
    assert verified.digest.startswith("sha256:")


def test_a_changed_byte_is_named(tmp_path: Path) -> None:
    directory = _sealed(tmp_path)
    (directory / "model.onnx").write_bytes(b"model-bytez")
    with pytest.raises(IntegrityError, match=r"model\.onnx: changed") as info:
        verify_package(directory)
    assert _problem_fields(info.value) == ["model.onnx"]


def test_an_added_file_is_named(tmp_path: Path) -> None:
    directory = _sealed(tmp_path)
    (directory / "extra" / "sneaky.py").write_text("import os")
    with pytest.raises(IntegrityError, match=r"extra/sneaky\.py: added") as info:
        verify_package(directory)
    assert _problem_fields(info.value) == ["extra/sneaky.py"]


def test_a_removed_file_is_named(tmp_path: Path) -> None:
    directory = _sealed(tmp_path)
    (directory / "extra" / "vocab.txt").unlink()
    with pytest.raises(IntegrityError, match=r"extra/vocab\.txt: removed") as info:
        verify_package(directory)
    assert _problem_fields(info.value) == ["extra/vocab.txt"]


def test_a_hand_edited_manifest_is_named(tmp_path: Path) -> None:
    directory = _sealed(tmp_path)
    path = directory / MANIFEST_FILE
    path.write_text(path.read_text().replace("description: ''", "description: 'better'"))
    with pytest.raises(IntegrityError, match=MANIFEST_FILE) as info:
        verify_package(directory)
    assert _problem_fields(info.value) == [MANIFEST_FILE]


def test_a_manifest_edited_in_canonical_form_changes_the_digest(tmp_path: Path) -> None:
    directory = _sealed(tmp_path)
    before = verify_package(directory).digest
    manifest = read_manifest(directory)
    seal(directory, manifest.model_copy(update={"description": "retrained"}))
    with pytest.raises(IntegrityError, match="expected") as info:
        verify_package(directory, expected=before)
    assert _problem_fields(info.value) == [MANIFEST_FILE]


def test_a_folder_without_manifest_is_not_a_package(tmp_path: Path) -> None:
    with pytest.raises(InvalidSpec, match=MANIFEST_FILE):
        verify_package(tmp_path)


def test_symbolic_links_are_refused(tmp_path: Path) -> None:
    builder = PackageBuilder(tmp_path / "pkg").file("model.onnx", b"m")
    builder.directory.mkdir(parents=True)
    (builder.directory / "link").symlink_to("/etc/hostname")
    with pytest.raises(InvalidSpec, match="link: symbolic links"):
        builder.seal()


# -- properties -------------------------------------------------------------------------------

_names = st.text(alphabet="abcdefghij_", min_size=1, max_size=8)
_contents = st.dictionaries(
    keys=st.lists(_names, min_size=1, max_size=3).map("/".join).map(lambda p: p + ".bin"),
    values=st.binary(max_size=64),
    min_size=1,
    max_size=6,
).filter(lambda files: _no_file_is_a_folder(list(files)))


def _no_file_is_a_folder(paths: list[str]) -> bool:
    """``a.bin`` and ``a.bin/b.bin`` cannot both exist; neither can ``a`` as file and folder."""
    folders = {str(parent) for rel in paths for parent in Path(rel).parents}
    return not folders & set(paths)


def _write_and_seal(
    builder: PackageBuilder, files: dict[str, bytes], order: list[str], mtime: int
) -> str:
    for rel in order:
        builder.file(rel, files[rel])
    builder.seal()
    for rel in order:
        os.utime(builder.directory / rel, (mtime, mtime))
    return verify_package(builder.directory).digest


_property = settings(max_examples=40, deadline=None)


@_property
@given(files=_contents, data=st.data())
def test_digest_ignores_creation_order_and_mtimes(
    files: dict[str, bytes], data: st.DataObject
) -> None:
    order = list(files)
    shuffled = data.draw(st.permutations(order))
    with tempfile.TemporaryDirectory() as first, tempfile.TemporaryDirectory() as second:
        one = _write_and_seal(PackageBuilder(Path(first)), files, order, mtime=1_000)
        two = _write_and_seal(PackageBuilder(Path(second)), files, shuffled, mtime=2_000_000_000)
    assert one == two


@_property
@given(files=_contents, data=st.data())
def test_digest_changes_with_any_byte(files: dict[str, bytes], data: st.DataObject) -> None:
    rel = data.draw(st.sampled_from(sorted(files)))
    original = files[rel]
    if original:
        index = data.draw(st.integers(0, len(original) - 1))
        flip = data.draw(st.integers(1, 255))
        changed = original[:index] + bytes([original[index] ^ flip]) + original[index + 1 :]
    else:
        changed = b"\x00"
    with tempfile.TemporaryDirectory() as first, tempfile.TemporaryDirectory() as second:
        one = _write_and_seal(PackageBuilder(Path(first)), files, list(files), mtime=1_000)
        two = _write_and_seal(
            PackageBuilder(Path(second)), {**files, rel: changed}, list(files), mtime=1_000
        )
        assert one != two
        # and a package sealed before the change no longer verifies, naming the file
        (Path(first) / rel).write_bytes(changed)
        with pytest.raises(IntegrityError) as info:
            verify_package(Path(first))
    assert _problem_fields(info.value) == [rel]
