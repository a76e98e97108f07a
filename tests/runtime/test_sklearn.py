from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
import pandas as pd
import pytest
import skops.io
from sklearn.base import BaseEstimator, TransformerMixin
from sklearn.ensemble import HistGradientBoostingRegressor, RandomForestClassifier
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import FunctionTransformer, StandardScaler

from modelplane.errors import ContractViolation, UnsafeFormat
from modelplane.runtime.base import LoadedModel, SavedModel
from modelplane.runtime.sklearn import SklearnRuntime, is_trusted_type
from modelplane.spec.manifest import ModelFormat

from .runtime_kit import COLUMNS, Package, column_fields, columns_of, matrix_field, tabular_data


class Doubler(BaseEstimator, TransformerMixin):  # type: ignore[misc]
    """A custom type skops does not know, so it must not be loaded without review."""

    def fit(self, x: Any, y: Any = None) -> Doubler:
        return self

    def transform(self, x: Any) -> Any:
        return x * 2


def test_logistic_regression_from_columns_matches_the_model(tmp_path: Path) -> None:
    x, y = tabular_data(classes=3)
    model = LogisticRegression(max_iter=200).fit(x, y)
    loaded = Package(tmp_path).save(SklearnRuntime(), model).load()
    out = loaded.predict(columns_of(x[:17]))
    assert set(out) == {"label", "probabilities"}
    np.testing.assert_array_equal(out["label"], model.predict(x[:17]))
    np.testing.assert_allclose(out["probabilities"], model.predict_proba(x[:17]))
    assert isinstance(loaded, LoadedModel)
    assert loaded.supports_batching


def test_skops_is_the_default_format(tmp_path: Path) -> None:
    x, y = tabular_data()
    saved = SklearnRuntime().save(LogisticRegression().fit(x, y), tmp_path)
    assert saved == SavedModel(model_file="model.skops", format=ModelFormat.SKOPS)


def test_random_forest_from_one_matrix_field(tmp_path: Path) -> None:
    x, y = tabular_data()
    model = RandomForestClassifier(n_estimators=5, random_state=0).fit(x, y)
    package = Package(tmp_path).inputs(matrix_field("x", 4)).save(SklearnRuntime(), model)
    out = package.load().predict({"x": x})
    np.testing.assert_array_equal(out["label"], model.predict(x))
    np.testing.assert_allclose(out["probabilities"], model.predict_proba(x))


def test_regressor_gives_prediction(tmp_path: Path) -> None:
    x, _ = tabular_data()
    model = HistGradientBoostingRegressor(max_iter=10).fit(x, x[:, 0] * 3)
    out = Package(tmp_path).save(SklearnRuntime(), model).load().predict(columns_of(x))
    assert list(out) == ["prediction"]
    np.testing.assert_allclose(out["prediction"], model.predict(x))


def test_model_fitted_on_a_frame_gets_columns_in_its_fitted_order(tmp_path: Path) -> None:
    x, y = tabular_data()
    frame = pd.DataFrame(x, columns=list(COLUMNS))
    model = make_pipeline(StandardScaler(), LogisticRegression()).fit(frame, y)
    shuffled = column_fields(list(reversed(COLUMNS)))
    package = Package(tmp_path).inputs(shuffled).save(SklearnRuntime(), model)
    out = package.load().predict(columns_of(x))
    np.testing.assert_allclose(out["probabilities"], model.predict_proba(frame))


def test_string_labels_come_back_as_labels(tmp_path: Path) -> None:
    x, y = tabular_data()
    names = np.array(["legit", "fraud"], dtype=object)[y]
    model = LogisticRegression().fit(x, names)
    out = Package(tmp_path).save(SklearnRuntime(), model).load().predict(columns_of(x[:5]))
    np.testing.assert_array_equal(out["label"], model.predict(x[:5]))


def test_inputs_are_cast_to_the_signature_dtype(tmp_path: Path) -> None:
    x, y = tabular_data()
    model = LogisticRegression().fit(x, y)
    loaded = Package(tmp_path).save(SklearnRuntime(), model).load()
    as_lists: dict[str, npt.NDArray[Any]] = {
        k: np.asarray(v.tolist(), dtype=object) for k, v in columns_of(x[:4]).items()
    }
    np.testing.assert_array_equal(loaded.predict(as_lists)["label"], model.predict(x[:4]))


def test_missing_input_names_the_field(tmp_path: Path) -> None:
    x, y = tabular_data()
    loaded = Package(tmp_path).save(SklearnRuntime(), LogisticRegression().fit(x, y)).load()
    inputs = columns_of(x)
    del inputs["f2"]
    with pytest.raises(ContractViolation, match="f2"):
        loaded.predict(inputs)


def test_pickle_formats_need_trust(tmp_path: Path) -> None:
    x, y = tabular_data()
    model = LogisticRegression().fit(x, y)
    for fmt in (ModelFormat.JOBLIB, ModelFormat.PICKLE):
        with pytest.raises(UnsafeFormat, match="--trust-pickle"):
            SklearnRuntime().save(model, tmp_path, format=fmt)
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("fmt", [ModelFormat.JOBLIB, ModelFormat.PICKLE])
def test_trusted_pickle_round_trips(tmp_path: Path, fmt: ModelFormat) -> None:
    x, y = tabular_data()
    model = LogisticRegression().fit(x, y)
    package = Package(tmp_path).save(SklearnRuntime(), model, format=fmt, trust_pickle=True)
    assert package.manifest.trusted_pickle
    out = package.load().predict(columns_of(x))
    np.testing.assert_array_equal(out["label"], model.predict(x))


def test_loading_an_untrusted_custom_type_names_it(tmp_path: Path) -> None:
    x, y = tabular_data()
    model = make_pipeline(Doubler(), LogisticRegression()).fit(x, y)
    skops.io.dump(model, tmp_path / "model.skops")
    package = Package(tmp_path).written(
        SklearnRuntime(), SavedModel("model.skops", ModelFormat.SKOPS)
    )
    qualified = f"{Doubler.__module__}.Doubler"
    with pytest.raises(UnsafeFormat, match=re.escape(qualified)) as info:
        package.load()
    assert info.value.details == [{"field": "model_file", "problem": f"untrusted type {qualified}"}]


def test_saving_an_untrusted_type_fails_early_and_writes_nothing(tmp_path: Path) -> None:
    model = make_pipeline(FunctionTransformer(eval), LogisticRegression())
    with pytest.raises(UnsafeFormat, match=r"builtins\.eval"):
        SklearnRuntime().save(model, tmp_path)
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize(
    ("name", "trusted"),
    [
        ("sklearn.tree._tree.Tree", True),
        ("numpy.float64", True),
        ("builtins.int", True),
        ("builtins.eval", False),
        ("builtins.exec", False),
        ("os.system", False),
        ("sklearnx.Evil", False),
    ],
)
def test_trusted_types(name: str, trusted: bool) -> None:
    assert is_trusted_type(name) is trusted
