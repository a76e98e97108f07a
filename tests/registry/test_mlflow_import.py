from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from sklearn.base import BaseEstimator, TransformerMixin
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import make_pipeline

from modelplane.errors import InvalidSpec, UnsafeFormat
from modelplane.registry.digest import verify_package
from modelplane.registry.mlflow_import import import_mlflow, mlflow_fields, read_mlmodel
from modelplane.spec.dtypes import DType
from modelplane.spec.manifest import ModelFormat, Runtime

mlflow_sklearn = pytest.importorskip("mlflow.sklearn")
mlflow_models = pytest.importorskip("mlflow.models")


def _frame() -> pd.DataFrame:
    rs = np.random.RandomState(0)
    return pd.DataFrame({"amount": rs.rand(30) * 100, "age": rs.randint(18, 90, 30)})


def _fitted(*, tabular: bool) -> LogisticRegression:
    frame = _frame()
    features = frame if tabular else frame.to_numpy()
    return LogisticRegression().fit(features, (frame["amount"] > 50).astype(np.int64))


def _save(path: Path, serialization: str, *, tabular: bool = True) -> Path:
    """A model folder written by MLflow itself, with a signature and an input example."""
    model = _fitted(tabular=tabular)
    sample = _frame().head(3) if tabular else _frame().to_numpy()[:3]
    signature = mlflow_models.infer_signature(sample, model.predict(sample))
    mlflow_sklearn.save_model(
        model,
        str(path),
        signature=signature,
        input_example=sample,
        serialization_format=serialization,
        # given, so MLflow skips inferring requirements by importing the model (seconds)
        pip_requirements=["scikit-learn"],
    )
    return path


@pytest.fixture(scope="module")
def saved(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """MLflow folders, written once per module: a tabular skops model and tensor pickles."""
    root = tmp_path_factory.mktemp("mlflow")
    return {
        "skops": _save(root / "skops", "skops"),
        "cloudpickle": _save(root / "cloudpickle", "cloudpickle", tabular=False),
        "pickle": _save(root / "pickle", "pickle", tabular=False),
    }


def _copy(source: Path, tmp_path: Path) -> Path:
    """A private copy for a test that edits the folder."""
    return Path(shutil.copytree(source, tmp_path / "mlflow"))


def test_skops_model_with_dataframe_signature(tmp_path: Path, saved: dict[str, Path]) -> None:
    source = saved["skops"]
    built = import_mlflow(source, name="fraud", output_dir=tmp_path / "pkg")
    manifest = built.manifest
    assert (manifest.runtime, manifest.format) == (Runtime.SKLEARN, ModelFormat.SKOPS)
    assert [(f.name, f.dtype, f.shape) for f in manifest.signature.inputs] == [
        ("amount", DType.FLOAT64, (-1,)),
        ("age", DType.INT64, (-1,)),
    ]
    assert [f.name for f in manifest.signature.outputs] == ["label", "probabilities"]
    uuid = read_mlmodel(source).labels["mlflow.model_uuid"]
    assert manifest.labels["mlflow.model_uuid"] == uuid
    assert manifest.labels["mlflow.serialization_format"] == "skops"
    assert "mlflow.mlflow_version" in manifest.labels
    assert uuid in manifest.description
    verify_package(built.path)


def test_importing_twice_gives_the_same_digest(tmp_path: Path, saved: dict[str, Path]) -> None:
    source = saved["skops"]
    one = import_mlflow(source, name="fraud", output_dir=tmp_path / "a")
    two = import_mlflow(source, name="fraud", output_dir=tmp_path / "b")
    assert one.digest == two.digest


@pytest.mark.parametrize("serialization", ["cloudpickle", "pickle"])
def test_pickled_model_is_refused_without_trust(
    tmp_path: Path, saved: dict[str, Path], serialization: str
) -> None:
    source = saved[serialization]
    with pytest.raises(UnsafeFormat, match=f"{serialization}.*trust_pickle"):
        import_mlflow(source, name="fraud", output_dir=tmp_path / "pkg")
    assert not (tmp_path / "pkg").exists()


@pytest.mark.parametrize("serialization", ["cloudpickle", "pickle"])
def test_trusted_pickled_model_is_resaved_as_skops(
    tmp_path: Path, saved: dict[str, Path], serialization: str
) -> None:
    source = saved[serialization]
    built = import_mlflow(source, name="fraud", output_dir=tmp_path / "pkg", trust_pickle=True)
    manifest = built.manifest
    assert (manifest.format, manifest.trusted_pickle) == (ModelFormat.SKOPS, False)
    assert manifest.labels["mlflow.converted_to"] == "skops"
    assert manifest.labels["mlflow.serialization_format"] == serialization
    assert [(f.name, f.dtype, f.shape) for f in manifest.signature.inputs] == [
        ("input", DType.FLOAT64, (-1, 2))
    ]
    assert {f.name for f in manifest.signature.outputs} == {"label", "probabilities"}
    assert manifest.lineage.parameters["solver"] == "lbfgs"
    verify_package(built.path)


def test_a_folder_without_mlmodel(tmp_path: Path) -> None:
    with pytest.raises(InvalidSpec, match="MLmodel: no such file"):
        import_mlflow(tmp_path, name="x", output_dir=tmp_path / "pkg")


def test_a_model_without_sklearn_flavor_is_named(tmp_path: Path, saved: dict[str, Path]) -> None:
    source = _copy(saved["skops"], tmp_path)
    mlmodel = source / "MLmodel"
    mlmodel.write_text(mlmodel.read_text().replace("  sklearn:", "  keras:"))
    with pytest.raises(InvalidSpec, match=r"no sklearn flavor \(found: keras, python_function\)"):
        import_mlflow(source, name="x", output_dir=tmp_path / "pkg")


def test_a_pickled_model_path_may_not_leave_the_folder(
    tmp_path: Path, saved: dict[str, Path]
) -> None:
    source = _copy(saved["skops"], tmp_path)
    mlmodel = source / "MLmodel"
    mlmodel.write_text(
        mlmodel.read_text().replace("pickled_model: model.skops", "pickled_model: ../x")
    )
    with pytest.raises(InvalidSpec, match=r"pickled_model path '\.\./x'"):
        import_mlflow(source, name="x", output_dir=tmp_path / "pkg")


def test_colspec_and_tensorspec_mapping() -> None:
    fields = mlflow_fields(
        '[{"type": "double", "name": "a"}, {"type": "float", "name": "b"},'
        ' {"type": "long", "name": "c"}, {"type": "integer", "name": "d"},'
        ' {"type": "boolean", "name": "e"}, {"type": "string", "name": "f"},'
        ' {"type": "binary", "name": "g", "required": false}]'
    )
    assert [(f.name, f.dtype) for f in fields] == [
        ("a", DType.FLOAT64),
        ("b", DType.FLOAT32),
        ("c", DType.INT64),
        ("d", DType.INT32),
        ("e", DType.BOOL),
        ("f", DType.STRING),
        ("g", DType.STRING),
    ]
    assert not fields[-1].required
    tensors = mlflow_fields(
        [
            {"type": "tensor", "tensor-spec": {"dtype": "float32", "shape": [-1, 28, 28]}},
            {"type": "tensor", "name": "ids", "tensor-spec": {"dtype": "int64", "shape": [-1]}},
        ]
    )
    assert [(f.name, f.dtype, f.shape) for f in tensors] == [
        ("input", DType.FLOAT32, (-1, 28, 28)),
        ("ids", DType.INT64, (-1,)),
    ]


def test_unsupported_mlflow_types_are_named() -> None:
    with pytest.raises(InvalidSpec, match=r"signature\.inputs\[1\] \('when'\).*'datetime'"):
        mlflow_fields('[{"type": "double", "name": "a"}, {"type": "datetime", "name": "when"}]')


class Doubling(BaseEstimator, TransformerMixin):  # type: ignore[misc]
    """A custom class: skops cannot vouch for it, so the import keeps a trusted pickle."""

    def fit(self, x: object, y: object = None) -> Doubling:
        return self

    def transform(self, x: np.ndarray) -> np.ndarray:
        return np.asarray(x) * 2.0


def test_a_model_skops_cannot_hold_stays_a_trusted_joblib(tmp_path: Path) -> None:
    x = _frame().to_numpy()
    model = make_pipeline(Doubling(), LogisticRegression()).fit(x, (x[:, 0] > 50).astype(int))
    signature = mlflow_models.infer_signature(x[:3], model.predict(x[:3]))
    mlflow_sklearn.save_model(
        model,
        str(tmp_path / "mlflow"),
        signature=signature,
        input_example=x[:3],
        serialization_format="cloudpickle",
        pip_requirements=["scikit-learn"],
    )
    built = import_mlflow(
        tmp_path / "mlflow", name="custom", output_dir=tmp_path / "pkg", trust_pickle=True
    )
    manifest = built.manifest
    assert (manifest.format, manifest.trusted_pickle) == (ModelFormat.JOBLIB, True)
    assert manifest.labels["mlflow.converted_to"] == "joblib"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["mlflow", "pkg"]  # no staging left
