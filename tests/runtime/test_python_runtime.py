from __future__ import annotations

import hashlib
import importlib.util
import sys
import textwrap
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from modelplane.errors import ContractViolation, InvalidSpec, UnsafeFormat
from modelplane.runtime.base import RuntimeOptions, SavedModel
from modelplane.runtime.python import PythonRuntime
from modelplane.spec.manifest import ModelFormat

from .runtime_kit import Package, column_fields

USER_SOURCE = textwrap.dedent(
    '''
    """A team's model, as it would sit in their repository."""
    from pathlib import Path

    import numpy as np


    class Scaler:
        def load(self, path: Path) -> None:
            self.weights = np.load(path / "artifacts" / "weights.npy")

        def predict(self, inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
            stacked = np.column_stack([inputs["a"], inputs["b"]])
            return {"score": stacked @ self.weights, "count": len(stacked)}


    class Constant:
        supports_batching = False

        def __init__(self, value: float) -> None:
            self.value = value

        @classmethod
        def load(cls, path: Path) -> "Constant":
            return cls(float((path / "artifacts" / "value.txt").read_text()))

        def predict(self, inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
            return {"value": np.full(len(inputs["a"]), self.value)}


    class Broken:
        def load(self, path: Path) -> None:
            pass

        def predict(self, inputs: dict[str, np.ndarray]) -> list[int]:
            return [1]
    '''
)


def _user_module(tmp_path: Path) -> Any:
    source = tmp_path / "src" / "team_model.py"
    source.parent.mkdir()
    source.write_text(USER_SOURCE)
    spec = importlib.util.spec_from_file_location("team_model", source)
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules["team_model"] = module
    spec.loader.exec_module(module)
    return module


def _tree_digest(folder: Path) -> dict[str, str]:
    return {
        str(path.relative_to(folder)): hashlib.sha256(path.read_bytes()).hexdigest()
        for path in sorted(folder.rglob("*"))
        if path.is_file()
    }


@pytest.fixture
def user(tmp_path: Path) -> Iterator[Any]:
    yield _user_module(tmp_path)
    sys.modules.pop("team_model", None)


def test_class_with_artifacts_round_trips_without_writing_into_the_package(
    tmp_path: Path, user: Any
) -> None:
    weights = tmp_path / "weights.npy"
    np.save(weights, np.array([2.0, 3.0]))
    folder = tmp_path / "package"
    folder.mkdir()
    saved = PythonRuntime().save(user.Scaler, folder, artifacts=[weights])
    assert saved == SavedModel("model.py", ModelFormat.PYTHON, entrypoint="model:Scaler")
    assert (folder / "model.py").read_text() == USER_SOURCE
    before = _tree_digest(folder)

    package = Package(folder).inputs(column_fields(("a", "b"))).written(PythonRuntime(), saved)
    loaded = package.load()
    out = loaded.predict({"a": np.array([1.0, 0.0]), "b": np.array([1.0, 2.0])})

    np.testing.assert_allclose(out["score"], [5.0, 6.0])
    assert out["count"].shape == ()
    assert loaded.supports_batching
    assert _tree_digest(folder) == before
    assert not (folder / "__pycache__").exists()


def test_instance_with_classmethod_load_and_named_artifact(tmp_path: Path, user: Any) -> None:
    value = tmp_path / "some-value.txt"
    value.write_text("7.5")
    folder = tmp_path / "package"
    folder.mkdir()
    saved = PythonRuntime().save(user.Constant(1.0), folder, artifacts={"value.txt": value})
    assert saved.entrypoint == "model:Constant"
    loaded = Package(folder).inputs(column_fields(("a",))).written(PythonRuntime(), saved).load()
    assert not loaded.supports_batching
    np.testing.assert_array_equal(loaded.predict({"a": np.zeros(2)})["value"], [7.5, 7.5])


def test_shipped_bytecode_is_never_run(tmp_path: Path, user: Any) -> None:
    folder = tmp_path / "package"
    folder.mkdir()
    saved = PythonRuntime().save(user.Constant, folder, artifacts={"value.txt": _file(tmp_path)})
    cache = folder / "__pycache__"
    cache.mkdir()
    tag = sys.implementation.cache_tag
    (cache / f"model.{tag}.pyc").write_bytes(b"garbage that would crash if it were read")
    before = _tree_digest(folder)
    loaded = Package(folder).inputs(column_fields(("a",))).written(PythonRuntime(), saved).load()
    assert loaded.predict({"a": np.zeros(1)})["value"].tolist() == [1.0]
    assert _tree_digest(folder) == before  # the stale cache was neither read nor rewritten


def _file(tmp_path: Path) -> Path:
    path = tmp_path / "one.txt"
    path.write_text("1")
    return path


def test_operators_can_refuse_python_code(tmp_path: Path, user: Any) -> None:
    saved = PythonRuntime().save(user.Scaler, tmp_path)
    package = Package(tmp_path).inputs(column_fields(("a",))).written(PythonRuntime(), saved)
    with pytest.raises(UnsafeFormat, match="allow_python_code"):
        package.load(PythonRuntime(RuntimeOptions(allow_python_code=False)))


def test_predict_must_return_a_mapping(tmp_path: Path, user: Any) -> None:
    saved = PythonRuntime().save(user.Broken, tmp_path)
    package = Package(tmp_path).inputs(column_fields(("a",))).written(PythonRuntime(), saved)
    with pytest.raises(ContractViolation, match="not a dict of arrays"):
        package.load().predict({"a": np.zeros(1)})


def test_classes_without_a_source_file_are_refused(tmp_path: Path) -> None:
    class Local:
        def load(self, path: Path) -> None:
            pass

        def predict(self, inputs: dict[str, Any]) -> dict[str, Any]:
            return {}

    assert not PythonRuntime().accepts(Local)
    with pytest.raises(InvalidSpec, match="top level of a source file"):
        PythonRuntime().save(Local, tmp_path)
    assert not PythonRuntime().accepts(dict)


def test_artifact_names_must_be_plain(tmp_path: Path, user: Any) -> None:
    with pytest.raises(InvalidSpec, match="plain file name"):
        PythonRuntime().save(user.Scaler, tmp_path, artifacts={"../escape": _file(tmp_path)})
