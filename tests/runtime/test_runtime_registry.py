from __future__ import annotations

import importlib.metadata
import sys
from pathlib import Path

import numpy as np
import pytest
from sklearn.linear_model import LogisticRegression

from modelplane.errors import InvalidSpec, MissingExtra, NotFound
from modelplane.runtime.base import ModelRuntime, RuntimeOptions
from modelplane.runtime.onnx import OnnxRuntime
from modelplane.runtime.registry import (
    BUILTIN_ORDER,
    ENTRY_POINT_GROUP,
    get_runtime,
    installed_versions,
    runtime_for,
    runtime_names,
)
from modelplane.runtime.sklearn import SklearnRuntime
from modelplane.spec.manifest import Runtime

from .runtime_kit import tabular_data


class PluginRuntime(SklearnRuntime):
    """Stands in for a runtime another distribution registers through entry points."""


class UserModel:
    def load(self, path: Path) -> None:
        pass

    def predict(self, inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        return dict(inputs)


def test_builtins_by_name_carry_options() -> None:
    options = RuntimeOptions(intra_op_threads=3)
    for name in BUILTIN_ORDER:
        runtime = get_runtime(name, options)
        assert runtime.name == Runtime(name)
    onnx = get_runtime(Runtime.ONNX, options)
    assert isinstance(onnx, OnnxRuntime)
    assert onnx.options == options


def test_unknown_name_lists_the_known_ones() -> None:
    with pytest.raises(NotFound, match="sklearn"):
        get_runtime("tensorflow")


@pytest.mark.parametrize(
    ("runtime", "module", "extra"),
    [
        ("xgboost", "xgboost", "boost"),
        ("lightgbm", "lightgbm", "boost"),
        ("torch", "torch", "torch"),
    ],
)
def test_missing_library_names_the_extra(
    monkeypatch: pytest.MonkeyPatch, runtime: str, module: str, extra: str
) -> None:
    monkeypatch.setitem(sys.modules, module, None)
    with pytest.raises(MissingExtra, match=rf"modelplane\[{extra}\]") as info:
        get_runtime(runtime)
    assert info.value.extra == extra


def test_runtime_for_picks_the_specific_runtime_first() -> None:
    xgb = pytest.importorskip("xgboost")
    lgb = pytest.importorskip("lightgbm")
    x, y = tabular_data()
    cases: list[tuple[object, Runtime]] = [
        (xgb.XGBClassifier(n_estimators=1).fit(x, y), Runtime.XGBOOST),
        (lgb.LGBMClassifier(n_estimators=1, verbose=-1).fit(x, y), Runtime.LIGHTGBM),
        (LogisticRegression().fit(x, y), Runtime.SKLEARN),
        (b"\x08\x07", Runtime.ONNX),
        ("exported/model.onnx", Runtime.ONNX),
        (UserModel, Runtime.PYTHON),
        (UserModel(), Runtime.PYTHON),
    ]
    for model, expected in cases:
        assert runtime_for(model).name is expected, model


def test_torch_modules_go_to_torch() -> None:
    torch = pytest.importorskip("torch")
    assert runtime_for(torch.nn.Linear(2, 1)).name is Runtime.TORCH


def test_nothing_accepts_a_plain_object() -> None:
    with pytest.raises(InvalidSpec, match=r"builtins\.object"):
        runtime_for(object())


def test_installed_versions_skip_absent_distributions() -> None:
    versions = installed_versions(SklearnRuntime())
    assert versions["scikit-learn"] == importlib.metadata.version("scikit-learn")
    xgboost_versions = installed_versions(get_runtime("xgboost"))
    assert len(xgboost_versions) >= 2  # xgboost or xgboost-cpu, and numpy


def test_entry_points_add_runtimes_but_never_replace_builtins(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    value = f"{__name__}:PluginRuntime"
    plugins = importlib.metadata.EntryPoints(
        [
            importlib.metadata.EntryPoint("extra-sklearn", value, ENTRY_POINT_GROUP),
            importlib.metadata.EntryPoint("onnx", value, ENTRY_POINT_GROUP),
        ]
    )

    def fake_entry_points(group: str) -> importlib.metadata.EntryPoints:
        return plugins if group == ENTRY_POINT_GROUP else importlib.metadata.EntryPoints([])

    monkeypatch.setattr(importlib.metadata, "entry_points", fake_entry_points)
    assert runtime_names() == (*BUILTIN_ORDER, "extra-sklearn")
    plugin: ModelRuntime = get_runtime("extra-sklearn")
    assert isinstance(plugin, PluginRuntime)
    assert isinstance(get_runtime("onnx"), OnnxRuntime)
