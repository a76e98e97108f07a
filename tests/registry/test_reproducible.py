from __future__ import annotations

import zipfile
from pathlib import Path

import numpy as np
import pytest
import skops.io
from sklearn.ensemble import RandomForestClassifier

from modelplane.errors import InvalidSpec
from modelplane.registry.reproducible import ZIP_EPOCH, canonicalize_skops, canonicalize_zip


def _forest() -> tuple[RandomForestClassifier, np.ndarray]:
    x = np.random.RandomState(0).rand(40, 3)
    model = RandomForestClassifier(n_estimators=3, random_state=0).fit(x, x[:, 0] > 0.5)
    return model, x


def test_canonical_skops_loads_to_the_same_model(tmp_path: Path) -> None:
    model, x = _forest()
    path = tmp_path / "model.skops"
    skops.io.dump(model, path)
    canonicalize_skops(path)
    loaded = skops.io.load(path, trusted=skops.io.get_untrusted_types(file=path))
    assert np.array_equal(loaded.predict_proba(x), model.predict_proba(x))


def test_canonical_skops_does_not_depend_on_object_ids(tmp_path: Path) -> None:
    model, _ = _forest()
    first, second = tmp_path / "a.skops", tmp_path / "b.skops"
    skops.io.dump(model, first)
    # a copy holds equal values in objects with other ids, as a new process would
    skops.io.dump(skops.io.load(first, trusted=skops.io.get_untrusted_types(file=first)), second)
    assert first.read_bytes() != second.read_bytes()
    canonicalize_skops(first)
    canonicalize_skops(second)
    assert first.read_bytes() == second.read_bytes()
    with zipfile.ZipFile(first) as archive:
        infos = archive.infolist()
    assert [i.filename for i in infos] == sorted(i.filename for i in infos)
    assert {i.date_time for i in infos} == {ZIP_EPOCH}


def test_canonicalize_is_idempotent(tmp_path: Path) -> None:
    model, _ = _forest()
    path = tmp_path / "model.skops"
    skops.io.dump(model, path)
    canonicalize_skops(path)
    once = path.read_bytes()
    canonicalize_skops(path)
    assert path.read_bytes() == once


def test_not_a_skops_file_is_named(tmp_path: Path) -> None:
    path = tmp_path / "model.skops"
    path.write_bytes(b"not a zip")
    with pytest.raises(InvalidSpec, match=r"model\.skops: not a skops file"):
        canonicalize_skops(path)


def test_canonicalize_zip_fixes_times_and_order(tmp_path: Path) -> None:
    path = tmp_path / "x.zip"
    with zipfile.ZipFile(path, "w") as archive:
        archive.writestr(zipfile.ZipInfo("b.txt", date_time=(2020, 5, 1, 1, 2, 3)), b"b")
        archive.writestr(zipfile.ZipInfo("a.txt", date_time=(2021, 5, 1, 1, 2, 3)), b"a")
    canonicalize_zip(path)
    with zipfile.ZipFile(path) as archive:
        assert [(i.filename, i.date_time) for i in archive.infolist()] == [
            ("a.txt", ZIP_EPOCH),
            ("b.txt", ZIP_EPOCH),
        ]
        assert archive.read("b.txt") == b"b"


def _nodes(padding: int) -> np.ndarray:
    """Tree-node-like records whose padding bytes hold ``padding``, as fresh memory may."""
    dtype = np.dtype([("child", "<i8"), ("left", "u1")], align=True)
    nodes = np.empty(3, dtype=dtype)
    nodes.view(np.uint8)[:] = padding
    nodes["child"] = [1, 2, -1]
    nodes["left"] = [1, 0, 1]
    return nodes


def test_padding_inside_structured_arrays_is_zeroed(tmp_path: Path) -> None:
    dirty, clean = tmp_path / "dirty.skops", tmp_path / "clean.skops"
    skops.io.dump({"nodes": _nodes(0xAB)}, dirty)
    skops.io.dump({"nodes": _nodes(0x00)}, clean)
    canonicalize_skops(dirty)
    canonicalize_skops(clean)
    assert dirty.read_bytes() == clean.read_bytes()
    loaded = skops.io.load(dirty, trusted=skops.io.get_untrusted_types(file=dirty))
    assert loaded["nodes"].tolist() == _nodes(0).tolist()
