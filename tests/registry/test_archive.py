from __future__ import annotations

import hashlib
import io
import os
import tarfile
from pathlib import Path

import pytest

from modelplane.errors import Conflict, IntegrityError
from modelplane.registry.archive import export_tar, import_tar
from modelplane.registry.digest import read_manifest, seal, verify_package
from modelplane.spec.fields import FieldSpec, Signature
from modelplane.spec.manifest import MANIFEST_FILE, Environment, Manifest, ModelFormat, Runtime


def _package(root: Path) -> Path:
    """A sealed two-file package; the bytes need not be a real model to be archived."""
    (root / "assets").mkdir(parents=True)
    (root / "model.onnx").write_bytes(b"\x08\x07onnx")
    (root / "assets" / "labels.txt").write_bytes(b"a\nb")
    manifest = Manifest(
        name="demo",
        runtime=Runtime.ONNX,
        format=ModelFormat.ONNX,
        model_file="model.onnx",
        signature=Signature(inputs=(FieldSpec(name="x", dtype="float32"),)),
        environment=Environment(python="3.11.0"),
    )
    seal(root, manifest)
    return root


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_export_is_byte_for_byte_reproducible(tmp_path: Path) -> None:
    first = _package(tmp_path / "one")
    second = _package(tmp_path / "two")
    os.utime(second / "model.onnx", (2_000_000_000, 2_000_000_000))
    os.chmod(second / "assets" / "labels.txt", 0o600)
    a = export_tar(first, tmp_path / "a.tar")
    b = export_tar(second, tmp_path / "out" / "b.tar")
    assert _sha256(a) == _sha256(b)


def test_long_and_non_ascii_names_export_reproducibly(tmp_path: Path) -> None:
    deep = "/".join(["très-long-dossier"] * 8) + "/poids.bin"
    exported = []
    for index, mtime in enumerate((1, 2_000_000_000)):
        root = _package(tmp_path / f"pkg{index}")
        (root / deep).parent.mkdir(parents=True)
        (root / deep).write_bytes(b"w")
        seal(root, read_manifest(root))
        os.utime(root / deep, (mtime, mtime))
        exported.append(export_tar(root, tmp_path / f"{index}.tar"))
    assert _sha256(exported[0]) == _sha256(exported[1])
    verified = import_tar(exported[0], tmp_path / "back")
    assert deep in [entry.path for entry in verified.manifest.files]


def test_exported_entries_are_sorted_anonymous_and_timeless(tmp_path: Path) -> None:
    tar_path = export_tar(_package(tmp_path / "pkg"), tmp_path / "p.tar")
    with tarfile.open(tar_path) as tar:
        members = tar.getmembers()
    assert [m.name for m in members] == ["assets", MANIFEST_FILE, "assets/labels.txt", "model.onnx"]
    for member in members:
        assert (member.mtime, member.uid, member.gid, member.uname, member.gname) == (
            0,
            0,
            0,
            "",
            "",
        )
        assert member.mode == (0o755 if member.isdir() else 0o644)


def test_round_trip_verifies_with_the_same_digest(tmp_path: Path) -> None:
    source = _package(tmp_path / "pkg")
    tar_path = export_tar(source, tmp_path / "p.tar")
    verified = import_tar(tar_path, tmp_path / "back")
    assert verified.digest == verify_package(source).digest
    assert (tmp_path / "back" / "assets" / "labels.txt").read_bytes() == b"a\nb"


def test_export_refuses_a_package_that_does_not_verify(tmp_path: Path) -> None:
    source = _package(tmp_path / "pkg")
    (source / "model.onnx").write_bytes(b"tampered")
    with pytest.raises(IntegrityError, match=r"model\.onnx"):
        export_tar(source, tmp_path / "p.tar")
    assert not (tmp_path / "p.tar").exists()


def _evil_tar(path: Path, member: tarfile.TarInfo, data: bytes = b"") -> Path:
    with tarfile.open(path, "w") as tar:
        member.size = len(data) if member.isreg() else 0
        tar.addfile(member, io.BytesIO(data) if member.isreg() else None)
    return path


def _member(name: str, kind: bytes = tarfile.REGTYPE, link: str = "") -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.type = kind
    info.linkname = link
    return info


@pytest.mark.parametrize(
    ("member", "problem"),
    [
        (_member("/etc/evil"), "absolute path"),
        (_member("../evil"), r"'\.\.'"),
        (_member("a/../../evil"), r"'\.\.'"),
        (_member("link", tarfile.SYMTYPE, "/etc/passwd"), "no links"),
        (_member("hard", tarfile.LNKTYPE, "model.onnx"), "no links"),
        (_member("dev", tarfile.CHRTYPE), "devices"),
        (_member("fifo", tarfile.FIFOTYPE), "devices"),
    ],
)
def test_import_rejects_unsafe_entries_naming_them(
    tmp_path: Path, member: tarfile.TarInfo, problem: str
) -> None:
    tar_path = _evil_tar(tmp_path / "evil.tar", member, b"x")
    with pytest.raises(IntegrityError, match=problem) as info:
        import_tar(tar_path, tmp_path / "dest")
    assert info.value.details[0]["field"] == member.name
    assert not (tmp_path / "dest").exists()
    assert not (tmp_path / "evil").exists()


def test_import_verifies_the_bytes(tmp_path: Path) -> None:
    source = _package(tmp_path / "pkg")
    tar_path = tmp_path / "p.tar"
    with tarfile.open(tar_path, "w") as tar:
        for rel in (MANIFEST_FILE, "assets/labels.txt"):
            tar.add(source / rel, arcname=rel)
        data = b"swapped model"
        info = tarfile.TarInfo("model.onnx")
        info.size = len(data)
        tar.addfile(info, io.BytesIO(data))
    with pytest.raises(IntegrityError, match=r"model\.onnx: changed"):
        import_tar(tar_path, tmp_path / "dest")
    assert not (tmp_path / "dest").exists()


def test_import_refuses_a_non_empty_destination(tmp_path: Path) -> None:
    tar_path = export_tar(_package(tmp_path / "pkg"), tmp_path / "p.tar")
    (tmp_path / "dest").mkdir()
    (tmp_path / "dest" / "keep.txt").write_text("mine")
    with pytest.raises(Conflict, match="not empty"):
        import_tar(tar_path, tmp_path / "dest")
    assert (tmp_path / "dest" / "keep.txt").read_text() == "mine"
