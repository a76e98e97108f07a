from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest
from skl2onnx import to_onnx
from sklearn.ensemble import RandomForestRegressor
from sklearn.linear_model import LogisticRegression

from modelplane.errors import ContractViolation, InvalidSpec
from modelplane.runtime.base import RuntimeOptions, SavedModel
from modelplane.runtime.onnx import OnnxModel, OnnxRuntime
from modelplane.spec.dtypes import DType
from modelplane.spec.manifest import ModelFormat

from .runtime_kit import Package, column_fields, columns_of, matrix_field, tabular_data

FLOAT_COLUMNS = column_fields(dtype=DType.FLOAT32)


def _classifier(zipmap: bool) -> tuple[LogisticRegression, Any]:
    x, y = tabular_data(classes=3)
    model = LogisticRegression(max_iter=200).fit(x.astype(np.float32), y)
    proto = to_onnx(
        model,
        x[:1].astype(np.float32),
        options={id(model): {"zipmap": zipmap}},
        target_opset=17,
    )
    return model, proto


def _load(tmp_path: Path, model: object, runtime: OnnxRuntime | None = None) -> OnnxModel:
    chosen = runtime or OnnxRuntime()
    loaded = Package(tmp_path).inputs(matrix_field("X", 4, DType.FLOAT32)).save(chosen, model)
    model_ = loaded.load()
    assert isinstance(model_, OnnxModel)
    return model_


def test_classifier_without_zipmap_matches_sklearn(tmp_path: Path) -> None:
    model, proto = _classifier(zipmap=False)
    x, _ = tabular_data(classes=3)
    out = _load(tmp_path, proto).predict({"X": x.astype(np.float32)})
    assert set(out) == {"label", "probabilities"}
    np.testing.assert_array_equal(out["label"], model.predict(x.astype(np.float32)))
    np.testing.assert_allclose(out["probabilities"], model.predict_proba(x), rtol=1e-4, atol=1e-5)


def test_zipmap_output_becomes_a_matrix(tmp_path: Path) -> None:
    model, proto = _classifier(zipmap=True)
    x, _ = tabular_data(classes=3)
    out = _load(tmp_path, proto).predict({"X": x})
    # skl2onnx names its outputs differently with zipmap on; the session's names are kept.
    assert out["output_probability"].shape == (len(x), 3)
    np.testing.assert_allclose(
        out["output_probability"], model.predict_proba(x), rtol=1e-4, atol=1e-5
    )


def test_saves_bytes_and_paths_too(tmp_path: Path) -> None:
    _, proto = _classifier(zipmap=False)
    data = proto.SerializeToString()
    source = tmp_path / "exported.onnx"
    source.write_bytes(data)
    for i, model in enumerate((data, source, str(source))):
        folder = tmp_path / f"package-{i}"
        folder.mkdir()
        saved = OnnxRuntime().save(model, folder)
        assert saved == SavedModel("model.onnx", ModelFormat.ONNX)
        assert (folder / "model.onnx").read_bytes() == data


def test_columns_are_stacked_for_a_single_matrix_input(tmp_path: Path) -> None:
    model, proto = _classifier(zipmap=False)
    x, _ = tabular_data(classes=3)
    package = Package(tmp_path).inputs(FLOAT_COLUMNS).save(OnnxRuntime(), proto)
    out = package.load().predict(columns_of(x))
    np.testing.assert_array_equal(out["label"], model.predict(x.astype(np.float32)))


def test_regressor_with_thread_options(tmp_path: Path) -> None:
    x, _ = tabular_data()
    model = RandomForestRegressor(n_estimators=3, random_state=0).fit(x, x[:, 1])
    proto = to_onnx(model, x[:1].astype(np.float32), target_opset=17)
    options = RuntimeOptions(intra_op_threads=2, inter_op_threads=1)
    loaded = _load(tmp_path, proto, OnnxRuntime(options))
    assert loaded.session.get_session_options().intra_op_num_threads == 2
    out = loaded.predict({"X": x})
    assert loaded.output_names == ["variable"]
    np.testing.assert_allclose(out["variable"].ravel(), model.predict(x), rtol=1e-4, atol=1e-4)


def test_default_is_one_thread_each(tmp_path: Path) -> None:
    _, proto = _classifier(zipmap=False)
    options = _load(tmp_path, proto).session.get_session_options()
    assert (options.intra_op_num_threads, options.inter_op_num_threads) == (1, 1)


def test_missing_input_is_named(tmp_path: Path) -> None:
    _, proto = _classifier(zipmap=False)
    loaded = _load(tmp_path, proto)
    with pytest.raises(ContractViolation, match="X"):
        loaded.predict({"Y": np.zeros((2, 4))})


def test_garbage_is_refused_when_saving(tmp_path: Path) -> None:
    with pytest.raises(InvalidSpec, match="not a loadable ONNX model"):
        OnnxRuntime().save(b"not onnx", tmp_path)
    assert list(tmp_path.iterdir()) == []
