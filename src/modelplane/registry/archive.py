"""A package as one ``.tar`` file: reproducible on the way out, distrustful on the way in.

Export writes the same bytes for the same package anywhere: entries sorted, owner and
times zeroed, modes fixed, POSIX (PAX) format, no compression (gzip would add a header
with a time and a name, and a compressor version that may change the bytes). Import
accepts regular files and folders only, below the destination, through ``tarfile``'s
``data`` filter, and then verifies every byte against the manifest.
"""

from __future__ import annotations

import io
import os
import shutil
import tarfile
from pathlib import Path, PurePosixPath

from modelplane.errors import Conflict, IntegrityError
from modelplane.registry.digest import Verified, read_manifest, verify_package
from modelplane.spec.manifest import MANIFEST_FILE

__all__ = ["DIR_MODE", "FILE_MODE", "export_tar", "import_tar"]

FILE_MODE = 0o644
DIR_MODE = 0o755


def export_tar(package_dir: Path, dest: Path) -> Path:
    """Write the (verified) package folder as an uncompressed tar at ``dest``; return ``dest``.

    The manifest comes before every file, so a reader streaming the archive learns what it
    holds before the model bytes. Folders are written as entries too.
    """
    verify_package(package_dir)
    paths = [MANIFEST_FILE, *(entry.path for entry in read_manifest(package_dir).files)]
    dest.parent.mkdir(parents=True, exist_ok=True)
    partial = dest.with_name(dest.name + ".partial")
    with tarfile.open(partial, "w", format=tarfile.PAX_FORMAT) as tar:
        for folder in _folders(paths[1:]):
            tar.addfile(_info(folder, tarfile.DIRTYPE, 0, DIR_MODE))
        for rel in paths:
            data = (package_dir / rel).read_bytes()
            tar.addfile(_info(rel, tarfile.REGTYPE, len(data), FILE_MODE), io.BytesIO(data))
    os.replace(partial, dest)
    return dest


def _folders(paths: list[str]) -> list[str]:
    found: set[str] = set()
    for rel in paths:
        found.update(str(parent) for parent in PurePosixPath(rel).parents if str(parent) != ".")
    return sorted(found)


def _info(name: str, kind: bytes, size: int, mode: int) -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.type = kind
    info.size = size
    info.mode = mode
    info.mtime = 0
    info.uid = info.gid = 0
    info.uname = info.gname = ""
    return info


def import_tar(tar_path: Path, dest_dir: Path) -> Verified:
    """Unpack a package tar into the new folder ``dest_dir`` and verify it.

    Raises :class:`IntegrityError` naming the entry for anything but plain files and
    folders inside the destination (absolute paths, ``..``, links, devices), and for any
    byte that does not match the manifest. ``dest_dir`` must not exist yet or be empty;
    on failure it is removed, so no half-unpacked package is ever mistaken for one.
    """
    if dest_dir.exists() and any(dest_dir.iterdir()):
        raise Conflict(f"{dest_dir}: the destination folder is not empty")
    dest_dir.mkdir(parents=True, exist_ok=True)
    try:
        with tarfile.open(tar_path, "r:*") as tar:
            members = tar.getmembers()
            for member in members:
                _check_member(member, tar_path)
            tar.extractall(dest_dir, members=members, filter="data")
        return verify_package(dest_dir)
    except BaseException:
        shutil.rmtree(dest_dir, ignore_errors=True)
        raise


def _check_member(member: tarfile.TarInfo, tar_path: Path) -> None:
    """Our own checks before the data filter, so the error names the entry and the rule."""
    path = PurePosixPath(member.name)
    problem = None
    if path.is_absolute() or member.name.startswith(("/", "\\")):
        problem = "absolute path"
    elif ".." in path.parts:
        problem = "path leaves the package folder ('..')"
    elif not (member.isreg() or member.isdir()):
        problem = "only regular files and folders are allowed (no links or devices)"
    if problem is not None:
        raise IntegrityError(
            f"{tar_path}: entry '{member.name}': {problem}",
            details=[{"field": member.name, "problem": problem}],
        )
