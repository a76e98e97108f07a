"""Content addressing: a package's digest and its verification.

A package is a folder holding ``modelplane.yaml`` and the model files. The manifest lists
every other file with its sha256 and size, sorted by path, and is written in canonical
form; the package digest is the sha256 of those canonical manifest bytes. So the digest
covers the manifest and, through it, every byte of every file, and it does not depend on
mtimes, permissions or the order a filesystem lists files in.
"""

from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass
from pathlib import Path

from modelplane.errors import IntegrityError, InvalidSpec
from modelplane.spec.io import dump_yaml, load_yaml
from modelplane.spec.manifest import MANIFEST_FILE, FileEntry, Manifest
from modelplane.types import Digest

__all__ = [
    "CHUNK",
    "digest_of_manifest",
    "file_entries",
    "hash_file",
    "read_manifest",
    "seal",
    "Verified",
    "verify_package",
]

CHUNK = 1 << 20


def hash_file(path: Path) -> tuple[str, int]:
    """sha256 hex and size of one file, read in 1 MiB chunks."""
    sha = hashlib.sha256()
    size = 0
    with path.open("rb") as handle:
        while chunk := handle.read(CHUNK):
            sha.update(chunk)
            size += len(chunk)
    return sha.hexdigest(), size


def _package_files(directory: Path) -> list[str]:
    """Every regular file below ``directory`` except the manifest, as sorted POSIX paths."""
    found: list[str] = []
    for root, dirs, files in os.walk(directory):
        dirs.sort()
        for name in files:
            full = Path(root) / name
            rel = full.relative_to(directory).as_posix()
            if rel == MANIFEST_FILE:
                continue
            if full.is_symlink():
                raise InvalidSpec(f"{rel}: symbolic links are not allowed in a package")
            found.append(rel)
    return sorted(found)


def file_entries(directory: Path) -> tuple[FileEntry, ...]:
    """Hash every file of a package folder."""
    entries = []
    for rel in _package_files(directory):
        sha, size = hash_file(directory / rel)
        entries.append(FileEntry(path=rel, sha256=sha, size=size))
    return tuple(entries)


def digest_of_manifest(manifest: Manifest) -> Digest:
    return Digest("sha256:" + hashlib.sha256(dump_yaml(manifest).encode()).hexdigest())


def seal(directory: Path, manifest: Manifest) -> tuple[Manifest, Digest]:
    """Record the folder's files in the manifest, write it canonically, return the digest."""
    sealed = manifest.model_copy(update={"files": file_entries(directory)})
    sealed = Manifest.model_validate(sealed.model_dump())  # re-run cross-field checks
    (directory / MANIFEST_FILE).write_text(dump_yaml(sealed), encoding="utf-8")
    return sealed, digest_of_manifest(sealed)


def read_manifest(directory: Path) -> Manifest:
    path = directory / MANIFEST_FILE
    if not path.is_file():
        raise InvalidSpec(f"{directory}: no {MANIFEST_FILE}; is this a modelplane package?")
    return load_yaml(Manifest, path)


@dataclass(frozen=True, slots=True)
class Verified:
    manifest: Manifest
    digest: Digest


def verify_package(directory: Path, expected: Digest | None = None) -> Verified:
    """Check every byte of a package folder; raise :class:`IntegrityError` naming each file.

    Detects files changed, added or removed since the manifest was sealed, a manifest
    edited by hand (not in canonical form), and, given ``expected``, any other digest.
    """
    manifest = read_manifest(directory)
    problems: list[dict[str, str]] = []
    on_disk = (directory / MANIFEST_FILE).read_text(encoding="utf-8")
    canonical = dump_yaml(manifest)
    if on_disk != canonical:
        problems.append({"field": MANIFEST_FILE, "problem": "edited: not in canonical form"})
    listed = {entry.path: entry for entry in manifest.files}
    present = set(_package_files(directory))
    for rel in sorted(present - listed.keys()):
        problems.append({"field": rel, "problem": "added: not listed in the manifest"})
    for rel in sorted(listed.keys() - present):
        problems.append({"field": rel, "problem": "removed: listed in the manifest but missing"})
    for rel in sorted(present & listed.keys()):
        sha, size = hash_file(directory / rel)
        entry = listed[rel]
        if sha != entry.sha256 or size != entry.size:
            problems.append(
                {"field": rel, "problem": f"changed: sha256 {sha[:12]}… != {entry.sha256[:12]}…"}
            )
    digest = Digest("sha256:" + hashlib.sha256(canonical.encode()).hexdigest())
    if expected is not None and digest != expected:
        problems.append(
            {"field": MANIFEST_FILE, "problem": f"digest {digest} != expected {expected}"}
        )
    if problems:
        first = problems[0]
        raise IntegrityError(
            f"package {directory} failed verification: {first['field']}: {first['problem']}",
            details=problems,
        )
    return Verified(manifest=manifest, digest=digest)
