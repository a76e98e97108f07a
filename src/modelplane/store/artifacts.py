"""Content-addressed artifact stores: a local folder, and any fsspec URL.

Layout, for both: ``<root>/sha256/<hex>/`` holds the package folder exactly as sealed.
A package is verified before it is stored and again after every fetch, so bytes that
rot or are tampered with on the way surface as :class:`~modelplane.errors.IntegrityError`.

Completeness is signalled differently where rename is and is not atomic: the local store
copies into ``<root>/tmp/`` and renames the finished folder into place; the fsspec store
(object stores have no rename) uploads the manifest last, so a package is present exactly
when its manifest is.
"""

from __future__ import annotations

import os
import shutil
import uuid
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import fsspec

from modelplane.errors import IntegrityError, InvalidSpec, NotFound, StoreUnavailable
from modelplane.spec.manifest import MANIFEST_FILE
from modelplane.store.base import ArtifactStore, PackageVerifier, digest_hex
from modelplane.types import Digest

__all__ = ["FsspecArtifactStore", "LocalArtifactStore", "open_artifact_store"]


def open_artifact_store(
    url: str, *, verify: PackageVerifier, storage_options: Mapping[str, Any] | None = None
) -> ArtifactStore:
    """A plain path gives the local store; any ``scheme://`` URL goes through fsspec."""
    if "://" in url:
        return FsspecArtifactStore(url, verify=verify, storage_options=storage_options)
    return LocalArtifactStore(Path(url), verify=verify)


def _source_folder(directory: Path) -> Path:
    if not directory.is_dir():
        raise InvalidSpec(f"{directory}: not a folder; a package is a folder")
    return directory


def _empty_destination(dest: Path) -> Path:
    if dest.exists() and (not dest.is_dir() or any(dest.iterdir())):
        raise InvalidSpec(f"{dest}: fetch needs a new or empty folder")
    dest.mkdir(parents=True, exist_ok=True)
    return dest


@contextmanager
def _cleared_on_error(dest: Path) -> Iterator[None]:
    # A half-written or unverified fetch must not look like a usable package.
    try:
        yield
    except BaseException:
        shutil.rmtree(dest, ignore_errors=True)
        raise


@contextmanager
def _io_errors(what: str) -> Iterator[None]:
    try:
        yield
    except FileNotFoundError as exc:
        raise NotFound(f"{what}: {exc}") from exc
    except OSError as exc:
        raise StoreUnavailable(f"{what}: {exc}") from exc


class LocalArtifactStore:
    """Packages in a local folder; a finished package appears by one atomic rename."""

    def __init__(self, root: Path, *, verify: PackageVerifier) -> None:
        self._root = root
        self._verify = verify

    @property
    def url(self) -> str:
        return str(self._root)

    def path_of(self, digest: Digest) -> Path:
        """The stored folder of ``digest``; read it, never write to it."""
        path = self._root / "sha256" / digest_hex(digest)
        if not path.is_dir():
            raise NotFound(f"artifact {digest} is not in {self._root}")
        return path

    def has(self, digest: Digest) -> bool:
        return (self._root / "sha256" / digest_hex(digest)).is_dir()

    def put_package(self, directory: Path) -> Digest:
        source = _source_folder(directory)
        staging = self._root / "tmp" / uuid.uuid4().hex
        with _io_errors(f"storing {directory} in {self._root}"):
            try:
                shutil.copytree(source, staging, symlinks=True)
                # Verify the copy, not the source: the copy is what is kept, and one pass over
                # freshly written (cached) bytes costs half of checking the source first.
                digest = _verified_as(self._verify, staging, source)
                final = self._root / "sha256" / digest_hex(digest)
                if not final.is_dir():
                    final.parent.mkdir(parents=True, exist_ok=True)
                    self._publish(staging, final)
            finally:
                shutil.rmtree(staging, ignore_errors=True)
        return digest

    @staticmethod
    def _publish(staging: Path, final: Path) -> None:
        try:
            os.rename(staging, final)
        except OSError:
            if not final.is_dir():
                raise
            # Another writer stored the same digest first: same bytes, nothing to do.

    def fetch(self, digest: Digest, dest: Path) -> Path:
        source = self.path_of(digest)
        dest = _empty_destination(dest)
        with _cleared_on_error(dest), _io_errors(f"fetching {digest}"):
            shutil.copytree(source, dest, symlinks=True, dirs_exist_ok=True)
            self._verify(dest, digest)
        return dest


class FsspecArtifactStore:
    """Packages under any fsspec URL (``s3://``, ``gs://``, ``memory://``, ``file://``)."""

    def __init__(
        self,
        url: str,
        *,
        verify: PackageVerifier,
        storage_options: Mapping[str, Any] | None = None,
    ) -> None:
        self._url = url
        self._verify = verify
        with _io_errors(f"opening artifact store {url}"):
            self._fs, root = fsspec.core.url_to_fs(url, **dict(storage_options or {}))
        self._root = str(root).rstrip("/")

    @property
    def url(self) -> str:
        return self._url

    def _folder(self, digest: Digest) -> str:
        return f"{self._root}/sha256/{digest_hex(digest)}"

    def has(self, digest: Digest) -> bool:
        with _io_errors(f"looking up {digest}"):
            return bool(self._fs.exists(f"{self._folder(digest)}/{MANIFEST_FILE}"))

    def put_package(self, directory: Path) -> Digest:
        digest = self._verify(_source_folder(directory))
        if self.has(digest):
            return digest
        folder = self._folder(digest)
        files = sorted(
            p.relative_to(directory).as_posix() for p in directory.rglob("*") if p.is_file()
        )
        files.remove(MANIFEST_FILE)
        with _io_errors(f"storing {directory} in {self._url}"):
            for rel in [*files, MANIFEST_FILE]:  # the manifest last: it marks completion
                remote = f"{folder}/{rel}"
                self._fs.makedirs(remote.rpartition("/")[0], exist_ok=True)
                self._fs.put_file(str(directory / rel), remote)
        return digest

    def fetch(self, digest: Digest, dest: Path) -> Path:
        if not self.has(digest):
            raise NotFound(f"artifact {digest} is not in {self._url}")
        folder = self._folder(digest)
        dest = _empty_destination(dest)
        with _cleared_on_error(dest), _io_errors(f"fetching {digest}"):
            for remote in self._fs.find(folder):
                rel = str(remote).removeprefix(folder + "/")
                if rel.startswith("/") or ".." in rel.split("/"):
                    raise IntegrityError(f"artifact {digest}: unexpected stored path {remote!r}")
                local = dest / rel
                local.parent.mkdir(parents=True, exist_ok=True)
                self._fs.get_file(remote, str(local))
            self._verify(dest, digest)
        return dest


def _verified_as(verify: PackageVerifier, copy: Path, source: Path) -> Digest:
    """Verify ``copy``, reporting any problem against the ``source`` the user named."""
    try:
        return verify(copy)
    except IntegrityError as exc:
        message = exc.message.replace(str(copy), str(source))
        raise IntegrityError(message, details=exc.details) from None
