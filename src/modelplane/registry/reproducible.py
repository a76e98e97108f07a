"""Make saved model files byte-for-byte reproducible, so the same model gives the same digest.

skops writes a zip whose bytes change on every save: each entry carries the time of the
save, and the object ids it uses to share state (``__id__`` in ``schema.json``) and to
name array files (``<id>.npy``) are ``id()`` values, memory addresses that differ from
one process to the next. :func:`canonicalize_skops` renumbers those ids 1, 2, 3, ... in
the order ``schema.json`` first mentions them (ids only link nodes to each other, so any
consistent renaming keeps the meaning; 0 is skipped because skops treats a falsy id as
"none") and rewrites the zip with fixed times and modes and entries sorted by name.

One more source hides inside the arrays: a numpy structured array (scikit-learn's tree
nodes are one) has padding bytes between fields that numpy never initialises, and
``np.save`` writes them as they are, so two equal trees can differ in bytes that mean
nothing. Such arrays are rewritten with the padding zeroed.
"""

from __future__ import annotations

import io
import json
import os
import zipfile
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Any

import numpy as np
import numpy.typing as npt

from modelplane.errors import InvalidSpec

__all__ = ["SKOPS_SCHEMA", "ZIP_EPOCH", "canonicalize_skops", "canonicalize_zip"]

SKOPS_SCHEMA = "schema.json"
ZIP_EPOCH = (1980, 1, 1, 0, 0, 0)
"""The earliest time a zip entry can carry."""
_FILE_ATTR = (0o100644 & 0xFFFF) << 16


@dataclass
class _Renumbering:
    """Old ids and file names to new ones, assigned in first-seen order."""

    ids: dict[int, int] = field(default_factory=dict)
    files: dict[str, str] = field(default_factory=dict)

    def new_id(self, old: int) -> int:
        return self.ids.setdefault(old, len(self.ids) + 1)

    def new_file(self, old: str) -> str:
        if old not in self.files:
            self.files[old] = f"{len(self.files) + 1}{PurePosixPath(old).suffix}"
        return self.files[old]


def canonicalize_skops(path: Path) -> None:
    """Rewrite a ``.skops`` file in place in canonical form; it loads exactly as before."""
    try:
        with zipfile.ZipFile(path) as source:
            schema = json.loads(source.read(SKOPS_SCHEMA))
            entries = {info.filename: source.read(info) for info in source.infolist()}
            methods = {info.filename: info.compress_type for info in source.infolist()}
    except (zipfile.BadZipFile, KeyError, ValueError) as exc:
        raise InvalidSpec(f"{path.name}: not a skops file ({exc})") from exc
    renumbering = _Renumbering()
    schema = _renumber(schema, renumbering, set(entries))
    rewritten = {
        renumbering.files.get(name, name): _zero_padding(data) if name.endswith(".npy") else data
        for name, data in entries.items()
    }
    # skops writes its schema with indent=2; we keep that so the file stays familiar
    rewritten[SKOPS_SCHEMA] = json.dumps(schema, indent=2).encode()
    method = zipfile.ZIP_DEFLATED if zipfile.ZIP_DEFLATED in methods.values() else 0
    _write_zip(path, rewritten, method)


def _renumber(node: Any, renumbering: _Renumbering, members: set[str]) -> Any:
    if isinstance(node, list):
        return [_renumber(item, renumbering, members) for item in node]
    if not isinstance(node, dict):
        return node
    out: dict[str, Any] = {}
    for key, value in node.items():
        if key == "__id__" and isinstance(value, int) and not isinstance(value, bool):
            out[key] = renumbering.new_id(value)
        elif key == "file" and isinstance(value, str) and value in members:
            out[key] = renumbering.new_file(value)
        else:
            out[key] = _renumber(value, renumbering, members)
    return out


def _zero_padding(data: bytes) -> bytes:
    """The ``.npy`` bytes again, with a structured array's padding bytes set to zero."""
    array = np.load(io.BytesIO(data), allow_pickle=False)
    if not _has_padding(array.dtype):
        return data
    clean: npt.NDArray[Any] = np.zeros(array.shape, dtype=array.dtype)
    # assigning field by field copies values only; the zeroed padding stays zero
    for name in array.dtype.names or ():
        clean[name] = array[name]
    out = io.BytesIO()
    np.save(out, np.asfortranarray(clean) if _fortran_only(array) else clean)
    return out.getvalue()


def _has_padding(dtype: np.dtype[Any]) -> bool:
    if dtype.fields is None:
        return False
    subtypes = [sub for sub, *_ in dtype.fields.values()]
    used = sum(sub.itemsize for sub in subtypes)
    return used != dtype.itemsize or any(_has_padding(sub) for sub in subtypes)


def _fortran_only(array: npt.NDArray[Any]) -> bool:
    return bool(array.flags.f_contiguous and not array.flags.c_contiguous)


def canonicalize_zip(path: Path) -> None:
    """Rewrite any zip in place with entries sorted, fixed times and modes, same contents."""
    with zipfile.ZipFile(path) as source:
        entries = {info.filename: source.read(info) for info in source.infolist()}
        methods = {info.compress_type for info in source.infolist()}
    _write_zip(path, entries, zipfile.ZIP_DEFLATED if zipfile.ZIP_DEFLATED in methods else 0)


def _write_zip(path: Path, entries: dict[str, bytes], method: int) -> None:
    partial = path.with_name(path.name + ".partial")
    with zipfile.ZipFile(partial, "w") as target:
        for name in sorted(entries):
            info = zipfile.ZipInfo(name, date_time=ZIP_EPOCH)
            info.compress_type = method
            info.external_attr = _FILE_ATTR
            info.create_system = 3  # unix, so the mode bits above are read as such
            target.writestr(info, entries[name])
    os.replace(partial, path)
