from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from modelplane.runtime.lightgbm import LightGBMModel, LightGBMRuntime

from .runtime_kit import COLUMNS, Package, column_fields, columns_of, tabular_data

lgb = pytest.importorskip("lightgbm")


@pytest.mark.parametrize("classes", [2, 3])
def test_classifier_matches_predict_and_predict_proba(tmp_path: Path, classes: int) -> None:
    x, y = tabular_data(classes=classes)
    model = lgb.LGBMClassifier(n_estimators=5, min_child_samples=5, verbose=-1).fit(x, y)
    out = Package(tmp_path).save(LightGBMRuntime(), model).load().predict(columns_of(x))
    assert set(out) == {"label", "probabilities"}
    np.testing.assert_array_equal(out["label"], model.predict(x))
    np.testing.assert_allclose(out["probabilities"], model.predict_proba(x), rtol=1e-9)


def test_string_classes_survive_the_text_format(tmp_path: Path) -> None:
    x, y = tabular_data(classes=3)
    names = np.array(["low", "mid", "high"], dtype=object)[y]
    model = lgb.LGBMClassifier(n_estimators=5, min_child_samples=5, verbose=-1).fit(x, names)
    package = Package(tmp_path).save(LightGBMRuntime(), model)
    assert json.loads((tmp_path / "classes.json").read_text()) == list(model.classes_)
    out = package.load().predict(columns_of(x))
    np.testing.assert_array_equal(out["label"], model.predict(x))
    assert out["label"].dtype == object


def test_regressor_gives_prediction(tmp_path: Path) -> None:
    x, _ = tabular_data()
    model = lgb.LGBMRegressor(n_estimators=5, min_child_samples=5, verbose=-1)
    model.fit(x, x[:, 0] * 2)
    loaded = Package(tmp_path).save(LightGBMRuntime(), model).load()
    assert isinstance(loaded, LightGBMModel)
    assert loaded.objective == "regression"
    out = loaded.predict(columns_of(x))
    assert list(out) == ["prediction"]
    np.testing.assert_allclose(out["prediction"], model.predict(x), rtol=1e-9)


def test_model_fitted_on_a_frame_matches_columns_by_name(tmp_path: Path) -> None:
    x, y = tabular_data()
    frame = pd.DataFrame(x, columns=list(COLUMNS))
    model = lgb.LGBMClassifier(n_estimators=5, min_child_samples=5, verbose=-1).fit(frame, y)
    shuffled = column_fields(list(reversed(COLUMNS)))
    loaded = Package(tmp_path).inputs(shuffled).save(LightGBMRuntime(), model).load()
    np.testing.assert_allclose(
        loaded.predict(columns_of(x))["probabilities"], model.predict_proba(frame), rtol=1e-9
    )
