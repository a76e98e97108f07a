from __future__ import annotations

import os
import subprocess
import sys
import textwrap
import zipfile
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from sklearn.linear_model import LinearRegression, LogisticRegression

from modelplane.errors import Conflict, InvalidSpec, UnsafeFormat
from modelplane.registry.build import BuiltPackage, package, package_file
from modelplane.registry.digest import verify_package
from modelplane.registry.provenance import LineageSource
from modelplane.spec.dtypes import DType
from modelplane.spec.fields import FieldSpec, Signature
from modelplane.spec.manifest import ModelFormat, Resources, Runtime


def _frame() -> pd.DataFrame:
    rs = np.random.RandomState(0)
    return pd.DataFrame({"amount": rs.rand(40) * 100, "age": rs.randint(18, 90, 40)})


def _classifier() -> LogisticRegression:
    frame = _frame()
    return LogisticRegression().fit(frame, np.where(frame["amount"] > 50, "fraud", "ok"))


def _matrix() -> np.ndarray:
    return np.random.RandomState(1).rand(30, 3).astype(np.float32)


def _outputs(built: BuiltPackage) -> dict[str, tuple[DType, tuple[int, ...]]]:
    return {f.name: (f.dtype, f.shape) for f in built.manifest.signature.outputs}


def test_sklearn_model_with_dataframe_sample(tmp_path: Path) -> None:
    built = package(
        _classifier(),
        name="fraud",
        sample_input=_frame().head(5),
        description="scores card payments",
        labels={"team": "risk"},
        resources=Resources(cpu=2, memory_mb=1024),
        output_dir=tmp_path / "pkg",
    )
    manifest = built.manifest
    assert (manifest.runtime, manifest.format, manifest.model_file) == (
        Runtime.SKLEARN,
        ModelFormat.SKOPS,
        "model.skops",
    )
    assert [(f.name, f.dtype) for f in manifest.signature.inputs] == [
        ("amount", DType.FLOAT64),
        ("age", DType.INT64),
    ]
    assert _outputs(built) == {
        "label": (DType.STRING, (-1,)),
        "probabilities": (DType.FLOAT64, (-1, 2)),
    }
    assert manifest.labels == {"team": "risk"}
    assert manifest.resources.cpu == 2
    assert manifest.lineage.parameters["C"] == 1.0
    assert {"numpy", "scikit-learn", "skops"} <= set(manifest.environment.packages)
    assert verify_package(built.path).digest == built.digest
    assert not [p for p in tmp_path.iterdir() if p.name != "pkg"], "staging folder left behind"


def test_same_model_twice_gives_the_same_digest(tmp_path: Path) -> None:
    model = _classifier()
    first = package(model, name="fraud", sample_input=_frame().head(3), output_dir=tmp_path / "a")
    os.utime(first.path / "model.skops", (1, 1))
    second = package(model, name="fraud", sample_input=_frame().head(3), output_dir=tmp_path / "b")
    assert first.digest == second.digest
    assert (first.path / "model.skops").read_bytes() == (second.path / "model.skops").read_bytes()


_CHILD_BUILD = """
import sys
import numpy as np, pandas as pd
from sklearn.linear_model import LogisticRegression
from modelplane.registry.build import package
rs = np.random.RandomState(0)
frame = pd.DataFrame({"amount": rs.rand(40) * 100, "age": rs.randint(18, 90, 40)})
model = LogisticRegression().fit(frame, np.where(frame["amount"] > 50, "fraud", "ok"))
print(package(model, name="fraud", sample_input=frame.head(3), output_dir=sys.argv[1]).digest)
"""


@pytest.mark.slow
def test_builds_in_different_processes_agree(tmp_path: Path) -> None:
    # skops names arrays after id() values, which differ between processes; a build in
    # another interpreter is the honest test that the skops bytes were made canonical.
    here = package(
        _classifier(), name="fraud", sample_input=_frame().head(3), output_dir=tmp_path / "a"
    )
    child = subprocess.run(
        [sys.executable, "-c", _CHILD_BUILD, str(tmp_path / "b")],
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    )
    assert child.stdout.strip() == here.digest


def test_skops_entries_are_canonical(tmp_path: Path) -> None:
    built = package(
        _classifier(), name="fraud", sample_input=_frame().head(2), output_dir=tmp_path / "p"
    )
    with zipfile.ZipFile(built.path / "model.skops") as archive:
        infos = archive.infolist()
    names = [info.filename for info in infos]
    assert names == sorted(names)
    assert {info.date_time for info in infos} == {(1980, 1, 1, 0, 0, 0)}
    assert all(len(name) < 12 for name in names), names  # ids, not memory addresses


def test_numpy_sample_and_regressor(tmp_path: Path) -> None:
    x = _matrix()
    model = LinearRegression().fit(x, x.sum(axis=1))
    built = package(model, name="reg", sample_input=x[:4], output_dir=tmp_path / "p")
    assert [(f.name, f.shape) for f in built.manifest.signature.inputs] == [("input", (-1, 3))]
    assert _outputs(built) == {"prediction": (DType.FLOAT32, (-1,))}


def test_given_signature_yaml_with_outputs_needs_no_sample(tmp_path: Path) -> None:
    path = tmp_path / "signature.yaml"
    path.write_text(
        "inputs:\n  - {name: amount, dtype: float64}\n  - {name: age, dtype: int64}\n"
        "outputs:\n  - {name: label, dtype: string}\n"
    )
    built = package(_classifier(), name="fraud", signature=path, output_dir=tmp_path / "p")
    assert [f.name for f in built.manifest.signature.outputs] == ["label"]


def test_given_inputs_and_a_sample_infer_the_outputs(tmp_path: Path) -> None:
    signature = Signature(
        inputs=(
            FieldSpec(name="amount", dtype="float64", range={"min": 0}),
            FieldSpec(name="age", dtype="int64"),
        )
    )
    built = package(
        _classifier(),
        name="fraud",
        signature=signature,
        sample_input=_frame().head(3),
        output_dir=tmp_path / "p",
    )
    assert built.manifest.signature.inputs == signature.inputs
    assert set(_outputs(built)) == {"label", "probabilities"}


def test_neither_signature_nor_sample_is_refused(tmp_path: Path) -> None:
    with pytest.raises(InvalidSpec, match="signature or a sample_input"):
        package(_classifier(), name="fraud", output_dir=tmp_path / "p")
    assert list(tmp_path.iterdir()) == []


def test_bad_name_is_named(tmp_path: Path) -> None:
    with pytest.raises(InvalidSpec, match=r"name: 'Fraud Model' is not a valid name"):
        package(_classifier(), name="Fraud Model", sample_input=_frame(), output_dir=tmp_path / "p")
    assert list(tmp_path.iterdir()) == []


def test_pickle_formats_need_trust(tmp_path: Path) -> None:
    with pytest.raises(UnsafeFormat, match="trust_pickle"):
        package(
            _classifier(), name="f", sample_input=_frame(), format="joblib", output_dir=tmp_path
        )
    built = package(
        _classifier(),
        name="f",
        sample_input=_frame().head(2),
        format="joblib",
        trust_pickle=True,
        output_dir=tmp_path / "p",
    )
    assert (built.manifest.format, built.manifest.trusted_pickle) == (ModelFormat.JOBLIB, True)


def test_output_dir_must_be_new_or_empty(tmp_path: Path) -> None:
    (tmp_path / "p").mkdir()
    (tmp_path / "p" / "old.txt").write_text("keep")
    with pytest.raises(Conflict, match="not an empty folder"):
        package(_classifier(), name="f", sample_input=_frame(), output_dir=tmp_path / "p")
    assert (tmp_path / "p" / "old.txt").read_text() == "keep"
    (tmp_path / "empty").mkdir()
    built = package(_classifier(), name="f", sample_input=_frame(), output_dir=tmp_path / "empty")
    verify_package(built.path)


def test_lineage_is_recorded(tmp_path: Path) -> None:
    data = tmp_path / "train.csv"
    data.write_text("amount,age\n1,2\n")
    built = package(
        _classifier(),
        name="fraud",
        sample_input=_frame().head(2),
        lineage=LineageSource(
            training_data=[data, "s3://bucket/train.parquet"],
            code="v1.2.3",
            metrics={"auc": 0.91},
        ),
        output_dir=tmp_path / "p",
    )
    lineage = built.manifest.lineage
    assert lineage.training_data[0].sha256 is not None
    assert lineage.training_data[1].sha256 is None
    assert (lineage.code_revision, lineage.metrics) == ("v1.2.3", {"auc": 0.91})
    assert lineage.parameters["solver"] == "lbfgs"


# -- boosted trees ----------------------------------------------------------------------------


def test_xgboost_and_lightgbm_are_deterministic(tmp_path: Path) -> None:
    import lightgbm as lgb
    import xgboost as xgb

    x = _matrix()
    y = (x[:, 0] > 0.5).astype(int)
    models = {
        "xgb": xgb.XGBClassifier(n_estimators=3, max_depth=2).fit(x, y),
        "lgb": lgb.LGBMClassifier(n_estimators=3, verbose=-1).fit(x, y),
    }
    for key, model in models.items():
        one = package(model, name=key, sample_input=x[:3], output_dir=tmp_path / f"{key}1")
        two = package(model, name=key, sample_input=x[:3], output_dir=tmp_path / f"{key}2")
        assert one.digest == two.digest, key
        assert set(_outputs(one)) == {"label", "probabilities"}


# -- model files ------------------------------------------------------------------------------


def test_onnx_file(tmp_path: Path) -> None:
    from skl2onnx import to_onnx

    x = _matrix()
    onnx_model = to_onnx(LinearRegression().fit(x, x[:, 0]), x[:1])
    source = tmp_path / "exported-v3.onnx"
    source.write_bytes(onnx_model.SerializeToString())
    built = package_file(source, name="reg", sample_input=x[:2], output_dir=tmp_path / "p")
    assert (built.manifest.runtime, built.manifest.model_file) == (Runtime.ONNX, "model.onnx")
    assert (built.path / "model.onnx").read_bytes() == source.read_bytes()
    assert built.manifest.signature.outputs


def test_skops_file_is_made_canonical_and_named_by_content(tmp_path: Path) -> None:
    import skops.io

    model = _classifier()
    digests = []
    for index in range(2):
        source = tmp_path / f"model-{index}.skops"
        skops.io.dump(model, source)
        built = package_file(
            source, name="fraud", sample_input=_frame().head(2), output_dir=tmp_path / f"p{index}"
        )
        digests.append(built.digest)
    assert digests[0] == digests[1]


def test_joblib_file_needs_trust(tmp_path: Path) -> None:
    import joblib

    source = tmp_path / "model.joblib"
    joblib.dump(_classifier(), source)
    with pytest.raises(UnsafeFormat, match=r"model\.joblib"):
        package_file(source, name="f", sample_input=_frame(), output_dir=tmp_path / "p")
    assert not (tmp_path / "p").exists()
    built = package_file(
        source, name="f", sample_input=_frame(), trust_pickle=True, output_dir=tmp_path / "p"
    )
    assert built.manifest.trusted_pickle


def test_xgboost_ubj_and_lightgbm_text_files(tmp_path: Path) -> None:
    import lightgbm as lgb
    import xgboost as xgb

    x = _matrix()
    y = x.sum(axis=1)
    xgb.XGBRegressor(n_estimators=2).fit(x, y).save_model(str(tmp_path / "m.ubj"))
    lgb.LGBMRegressor(n_estimators=2, verbose=-1).fit(x, y).booster_.save_model(
        str(tmp_path / "m.txt")
    )
    for suffix, runtime in ((".ubj", Runtime.XGBOOST), (".txt", Runtime.LIGHTGBM)):
        built = package_file(
            tmp_path / f"m{suffix}",
            name="reg",
            sample_input=x[:2],
            output_dir=tmp_path / suffix[1:],
        )
        assert built.manifest.runtime is runtime
        assert built.manifest.model_file == f"model{suffix}"
        assert set(_outputs(built)) == {"prediction"}


_PYTHON_MODEL = """
import numpy as np


class Helper:
    pass


class Doubler:
    def load(self, path):
        self.factor = 2.0

    def predict(self, inputs):
        return {"doubled": np.asarray(inputs["x"], dtype=np.float64) * self.factor}
"""


def test_python_model_file(tmp_path: Path) -> None:
    source = tmp_path / "scoring.py"
    source.write_text(textwrap.dedent(_PYTHON_MODEL))
    built = package_file(
        source, name="doubler", sample_input={"x": [1.0, 2.0]}, output_dir=tmp_path / "p"
    )
    assert (built.manifest.entrypoint, built.manifest.model_file) == ("model:Doubler", "model.py")
    assert _outputs(built) == {"doubled": (DType.FLOAT64, (-1,))}
    verify_package(built.path)  # loading wrote nothing (no __pycache__) into the package


def test_python_model_file_without_a_model_class(tmp_path: Path) -> None:
    source = tmp_path / "util.py"
    source.write_text("def f():\n    return 1\n")
    with pytest.raises(InvalidSpec, match=r"util\.py: defines no class"):
        package_file(source, name="u", sample_input={"x": [1]}, output_dir=tmp_path / "p")


def test_unknown_and_missing_files(tmp_path: Path) -> None:
    (tmp_path / "model.h5").write_bytes(b"\x89HDF")
    with pytest.raises(InvalidSpec, match=r"model\.h5: unknown model file type '\.h5'"):
        package_file(tmp_path / "model.h5", name="k", sample_input={}, output_dir=tmp_path / "p")
    with pytest.raises(InvalidSpec, match="no such model file"):
        package_file(tmp_path / "gone.onnx", name="k", sample_input={}, output_dir=tmp_path / "p")


def test_a_file_the_runtime_cannot_load_fails_the_build(tmp_path: Path) -> None:
    (tmp_path / "model.json").write_text('{"not": "an xgboost model"}')
    with pytest.raises(InvalidSpec, match=r"model\.json: the xgboost runtime cannot load it"):
        package_file(
            tmp_path / "model.json", name="x", sample_input=_matrix(), output_dir=tmp_path / "p"
        )
    assert [p.name for p in tmp_path.iterdir()] == ["model.json"]


def test_a_sample_the_model_cannot_take_is_named(tmp_path: Path) -> None:
    x = _matrix()
    model = LinearRegression().fit(x, x[:, 0])
    with pytest.raises(InvalidSpec, match="sample_input: the model failed to predict"):
        package(model, name="r", sample_input=np.ones((2, 5)), output_dir=tmp_path / "p")
    assert list(tmp_path.iterdir()) == []


def test_torch_module_and_torchscript_file(tmp_path: Path) -> None:
    torch = pytest.importorskip("torch")
    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Linear(3, 2), torch.nn.ReLU())
    x = _matrix()
    built = package(net, name="net", sample_input=x[:4], output_dir=tmp_path / "obj")
    again = package(net, name="net", sample_input=x[:4], output_dir=tmp_path / "obj2")
    assert built.digest == again.digest
    assert _outputs(built) == {"output": (DType.FLOAT32, (-1, 2))}
    source = tmp_path / "net.pt"
    from modelplane.runtime.torch import torchscript_calls

    with torchscript_calls():  # torch deprecates TorchScript, the format we still load
        torch.jit.save(torch.jit.script(net), str(source))
    from_file = package_file(source, name="net", sample_input=x[:4], output_dir=tmp_path / "f")
    assert (from_file.manifest.runtime, from_file.manifest.format) == (
        Runtime.TORCH,
        ModelFormat.TORCHSCRIPT,
    )
