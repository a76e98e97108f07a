from __future__ import annotations

import hashlib
import math
import subprocess
from pathlib import Path

import numpy as np
import pytest
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import FunctionTransformer

from modelplane.errors import InvalidSpec
from modelplane.registry.provenance import (
    LineageSource,
    capture_lineage,
    code_revision,
    dataset_ref,
    json_safe,
    model_parameters,
    tree_sha256,
)
from modelplane.spec.manifest import DatasetRef, FeatureRef, Lineage


def _git(folder: Path, *args: str) -> str:
    identity = ["-c", "user.name=t", "-c", "user.email=t@example.com"]
    done = subprocess.run(
        ["git", "-C", str(folder), *identity, *args],
        capture_output=True,
        text=True,
        check=True,
        timeout=30,
    )
    return done.stdout.strip()


def test_a_local_file_gets_its_sha256(tmp_path: Path) -> None:
    data = tmp_path / "train.csv"
    data.write_bytes(b"a,b\n1,2\n")
    expected = hashlib.sha256(b"a,b\n1,2\n").hexdigest()
    assert dataset_ref(data) == DatasetRef(uri=str(data), sha256=expected)
    assert dataset_ref(str(data)).sha256 == expected
    assert dataset_ref(data.as_uri()).sha256 == expected


def test_a_folder_gets_a_tree_hash_and_remote_data_none(tmp_path: Path) -> None:
    (tmp_path / "part-1.parquet").write_bytes(b"1")
    (tmp_path / "sub").mkdir()
    (tmp_path / "sub" / "part-2.parquet").write_bytes(b"2")
    before = tree_sha256(tmp_path)
    assert dataset_ref(tmp_path).sha256 == before
    (tmp_path / "sub" / "part-2.parquet").write_bytes(b"3")
    assert tree_sha256(tmp_path) != before
    assert dataset_ref("s3://bucket/train/").sha256 is None
    given = DatasetRef(uri="gs://x", sha256="0" * 64)
    assert dataset_ref(given) is given


def test_code_revision_from_a_git_work_tree(tmp_path: Path) -> None:
    _git(tmp_path, "init", "-q")
    (tmp_path / "train.py").write_text("print(1)\n")
    _git(tmp_path, "add", "train.py")
    _git(tmp_path, "commit", "-q", "-m", "first")
    head = _git(tmp_path, "rev-parse", "HEAD")
    assert code_revision(tmp_path) == head
    (tmp_path / "train.py").write_text("print(2)\n")
    assert code_revision(tmp_path) == f"{head}+dirty"


def test_code_revision_given_as_text_or_a_folder_without_git(tmp_path: Path) -> None:
    assert code_revision("v1.4.0") == "v1.4.0"
    with pytest.raises(InvalidSpec, match=r"lineage\.code_revision: .* not a git work tree"):
        code_revision(tmp_path)
    with pytest.raises(InvalidSpec, match=r"lineage\.code_revision: .* is not a folder"):
        code_revision(tmp_path / "missing")


def test_parameters_are_json_safe_and_deterministic() -> None:
    model = make_pipeline(FunctionTransformer(np.log1p), LogisticRegression(C=np.float64(0.5)))
    params = model_parameters(model)
    assert params["logisticregression__C"] == 0.5
    assert params["functiontransformer__func"] == "numpy.log1p"
    assert params["logisticregression"] == "sklearn.linear_model._logistic.LogisticRegression"
    assert "0x" not in repr(params)
    assert model_parameters(object()) == {}


def test_json_safe_values() -> None:
    assert json_safe({"a": np.int64(3), "b": (1, 2.5), "c": math.inf, 2: np.arange(2)}) == {
        "2": [0, 1],
        "a": 3,
        "b": [1, 2.5],
        "c": "inf",
    }
    assert json_safe(int) == "builtins.int"


def test_capture_lineage_defaults_parameters_to_the_model() -> None:
    model = LogisticRegression(C=2.0)
    lineage = capture_lineage(
        LineageSource(
            code="abc123",
            metrics={"auc": np.float64(0.9)},
            features=[FeatureRef(feature_set="customer", version=3)],
        ),
        model,
    )
    assert lineage.parameters["C"] == 2.0
    assert (lineage.code_revision, lineage.metrics) == ("abc123", {"auc": 0.9})
    explicit = capture_lineage(LineageSource(parameters={"lr": 0.1}), model)
    assert explicit.parameters == {"lr": 0.1}
    given = Lineage(code_revision="r1")
    assert capture_lineage(given, model).parameters["C"] == 2.0
    assert capture_lineage(given, None) is given
    numpy_params = Lineage(parameters={"alpha": np.float32(0.5), "layers": np.array([4, 2])})
    assert capture_lineage(numpy_params, model).parameters == {"alpha": 0.5, "layers": [4, 2]}


def test_bad_metrics_are_named() -> None:
    with pytest.raises(InvalidSpec, match=r"lineage\.metrics\.auc"):
        capture_lineage(LineageSource(metrics={"auc": "high"}))  # type: ignore[dict-item]
