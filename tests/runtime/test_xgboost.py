from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from modelplane.errors import InvalidSpec
from modelplane.runtime.base import SavedModel
from modelplane.runtime.xgboost import XGBoostModel, XGBoostRuntime
from modelplane.spec.manifest import ModelFormat

from .runtime_kit import COLUMNS, Package, column_fields, columns_of, matrix_field, tabular_data

xgb = pytest.importorskip("xgboost")


@pytest.mark.parametrize("classes", [2, 3])
def test_classifier_matches_predict_and_predict_proba(tmp_path: Path, classes: int) -> None:
    x, y = tabular_data(classes=classes)
    model = xgb.XGBClassifier(n_estimators=5, max_depth=3).fit(x, y)
    package = Package(tmp_path).save(XGBoostRuntime(), model)
    out = package.load().predict(columns_of(x))
    assert set(out) == {"label", "probabilities"}
    np.testing.assert_array_equal(out["label"], model.predict(x))
    np.testing.assert_allclose(out["probabilities"], model.predict_proba(x), rtol=1e-6)


def test_regressor_gives_prediction_from_a_matrix(tmp_path: Path) -> None:
    x, _ = tabular_data()
    model = xgb.XGBRegressor(n_estimators=5).fit(x, x[:, 0] * 2)
    package = Package(tmp_path).inputs(matrix_field("x", 4)).save(XGBoostRuntime(), model)
    saved_file = package.manifest.model_file
    assert saved_file == "model.json"
    out = package.load().predict({"x": x})
    assert list(out) == ["prediction"]
    np.testing.assert_allclose(out["prediction"], model.predict(x), rtol=1e-6)


def test_model_fitted_on_a_frame_matches_columns_by_name(tmp_path: Path) -> None:
    x, y = tabular_data()
    frame = pd.DataFrame(x, columns=list(COLUMNS))
    model = xgb.XGBClassifier(n_estimators=5).fit(frame, y)
    shuffled = column_fields(list(reversed(COLUMNS)))
    out = Package(tmp_path).inputs(shuffled).save(XGBoostRuntime(), model).load()
    np.testing.assert_allclose(
        out.predict(columns_of(x))["probabilities"], model.predict_proba(frame), rtol=1e-6
    )


def test_best_iteration_is_used_after_early_stopping(tmp_path: Path) -> None:
    x, y = tabular_data(rows=200)
    model = xgb.XGBClassifier(n_estimators=50, early_stopping_rounds=2, learning_rate=0.5)
    model.fit(x[:150], y[:150], eval_set=[(x[150:], y[150:])], verbose=False)
    loaded = Package(tmp_path).save(XGBoostRuntime(), model).load()
    np.testing.assert_allclose(
        loaded.predict(columns_of(x))["probabilities"], model.predict_proba(x), rtol=1e-6
    )


def test_a_bare_booster_saves_and_loads(tmp_path: Path) -> None:
    x, y = tabular_data()
    booster = xgb.train({"objective": "binary:logistic"}, xgb.DMatrix(x, label=y), 3)
    loaded = Package(tmp_path).save(XGBoostRuntime(), booster).load()
    assert isinstance(loaded, XGBoostModel)
    assert loaded.objective == "binary:logistic"
    proba = loaded.predict(columns_of(x))["probabilities"]
    np.testing.assert_allclose(proba[:, 1], booster.predict(xgb.DMatrix(x)), rtol=1e-6)


def test_other_formats_are_refused(tmp_path: Path) -> None:
    x, y = tabular_data()
    model = xgb.XGBClassifier(n_estimators=2).fit(x, y)
    with pytest.raises(InvalidSpec, match="xgboost-json"):
        XGBoostRuntime().save(model, tmp_path, format=ModelFormat.PICKLE)
    assert XGBoostRuntime().save(model, tmp_path) == SavedModel(
        "model.json", ModelFormat.XGBOOST_JSON
    )


def test_softmax_objective_gives_labels_only(tmp_path: Path) -> None:
    x, y = tabular_data(classes=3)
    params = {"objective": "multi:softmax", "num_class": 3}
    booster = xgb.train(params, xgb.DMatrix(x, label=y), 3)
    out = Package(tmp_path).save(XGBoostRuntime(), booster).load().predict(columns_of(x))
    assert list(out) == ["label"]
    np.testing.assert_array_equal(out["label"], booster.predict(xgb.DMatrix(x)).astype(int))
