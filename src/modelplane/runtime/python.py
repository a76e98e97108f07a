"""The ``python`` runtime: a class the team wrote, shipped as source inside the package.

The class has ``predict(self, inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]`` and
``load``, either ``load(self, path: Path)`` (called on ``cls()``) or a classmethod
``load(cls, path: Path)`` returning the instance. ``path`` is the package folder, read-only;
artifacts listed when saving are under ``path / "artifacts"``. A class attribute
``supports_batching = False`` makes the data plane call ``predict`` one row at a time.

Saving copies the source file that defines the class into the package as ``model.py`` and
sets ``entrypoint: model:ClassName``. Only that one file travels, so it may import installed
libraries but not sibling modules. Saving an instance saves its class: state is rebuilt by
``load``, from artifacts.

**Trust rule.** Such a package runs code on load (its format is ``python``), like pickle,
but the code is readable source, reviewed with the package and covered by its digest, so the
runtime loads it by default. Operators hosting packages they do not trust turn this off with
``RuntimeOptions(allow_python_code=False)``; loading then raises ``UnsafeFormat``.
"""

from __future__ import annotations

import importlib.util
import inspect
import re
import shutil
import sys
import uuid
from collections.abc import Mapping, Sequence
from pathlib import Path
from types import ModuleType
from typing import Any

import numpy as np
import numpy.typing as npt

from modelplane.errors import ContractViolation, InvalidSpec, UnsafeFormat
from modelplane.runtime.base import Arrays, RuntimeOptions, SavedModel
from modelplane.spec.manifest import Manifest, ModelFormat, Runtime

__all__ = ["ARTIFACTS_DIR", "MODEL_FILE", "Artifacts", "PythonModel", "PythonRuntime"]

MODEL_FILE = "model.py"
ARTIFACTS_DIR = "artifacts"

Artifacts = Mapping[str, str | Path] | Sequence[str | Path]
"""Files or folders to ship: ``{name: source}``, or sources kept under their own names."""

_ARTIFACT_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*$")


class PythonRuntime:
    """Saves a user class as source and serves it."""

    name = Runtime.PYTHON
    packages: tuple[str, ...] = ("numpy",)

    def __init__(self, options: RuntimeOptions | None = None) -> None:
        self.options = options or RuntimeOptions()

    def accepts(self, model: object) -> bool:
        cls = model if isinstance(model, type) else type(model)
        has_methods = callable(getattr(cls, "predict", None)) and callable(
            getattr(cls, "load", None)
        )
        return has_methods and _source_file(cls) is not None

    def save(
        self,
        model: object,
        directory: Path,
        *,
        format: ModelFormat | None = None,
        trust_pickle: bool = False,
        artifacts: Artifacts = (),
    ) -> SavedModel:
        if format not in (None, ModelFormat.PYTHON):
            raise InvalidSpec(f"the python runtime saves format 'python', not '{format}'")
        cls = model if isinstance(model, type) else type(model)
        if not self.accepts(cls):
            raise InvalidSpec(
                f"{cls.__qualname__} needs load() and predict() and must be defined at the"
                " top level of a source file"
            )
        source = _source_file(cls)
        assert source is not None
        shutil.copyfile(source, directory / MODEL_FILE)
        for name, origin in _artifact_items(artifacts):
            _copy_artifact(Path(origin), directory / ARTIFACTS_DIR / name)
        return SavedModel(
            model_file=MODEL_FILE,
            format=ModelFormat.PYTHON,
            entrypoint=f"{Path(MODEL_FILE).stem}:{cls.__qualname__}",
        )

    def load(self, directory: Path, manifest: Manifest) -> PythonModel:
        if not self.options.allow_python_code:
            raise UnsafeFormat(
                f"package '{manifest.name}' runs Python code on load and this worker does not"
                " allow it (allow_python_code is off)"
            )
        module_name, _, class_path = (manifest.entrypoint or "").partition(":")
        if not module_name.isidentifier() or not class_path:
            raise InvalidSpec(
                f"entrypoint '{manifest.entrypoint}' is not 'module:Class'",
                details=[{"field": "entrypoint", "problem": "expected 'module:Class'"}],
            )
        module = _import_source(directory / f"{module_name}.py", module_name)
        cls = _resolve(module, class_path, manifest.entrypoint or "")
        return PythonModel(_instantiate(cls, directory), cls)


class PythonModel:
    """A loaded user model; its outputs are checked to be a dict of arrays."""

    def __init__(self, instance: Any, cls: type) -> None:
        self.instance = instance
        self.supports_batching = bool(getattr(cls, "supports_batching", True))

    def predict(self, inputs: Arrays) -> dict[str, npt.NDArray[Any]]:
        result = self.instance.predict(dict(inputs))
        if not isinstance(result, Mapping):
            raise ContractViolation(
                f"{type(self.instance).__name__}.predict returned a {type(result).__name__},"
                " not a dict of arrays"
            )
        return {str(name): np.asarray(value) for name, value in result.items()}


def _source_file(cls: type) -> Path | None:
    if "<locals>" in cls.__qualname__:
        return None
    try:
        source = inspect.getsourcefile(cls)
    except (TypeError, OSError):  # builtins and classes made at runtime have no file
        return None
    return Path(source) if source and source.endswith(".py") else None


def _artifact_items(artifacts: Artifacts) -> list[tuple[str, str | Path]]:
    if isinstance(artifacts, Mapping):
        items = [(str(name), origin) for name, origin in artifacts.items()]
    else:
        items = [(Path(origin).name, origin) for origin in artifacts]
    for name, _ in items:
        if not _ARTIFACT_NAME.match(name):
            raise InvalidSpec(f"artifact name '{name}' must be a plain file name")
    return items


def _copy_artifact(origin: Path, target: Path) -> None:
    target.parent.mkdir(parents=True, exist_ok=True)
    if origin.is_dir():
        shutil.copytree(origin, target)
    elif origin.is_file():
        shutil.copyfile(origin, target)
    else:
        raise InvalidSpec(f"artifact {origin}: no such file or folder")


def _import_source(path: Path, module_name: str) -> ModuleType:
    """Import ``path`` as a fresh module, reading only the source.

    The package folder is verified byte for byte, so nothing may be written into it, and a
    ``__pycache__`` shipped inside it must not run instead of the reviewed source: we compile
    the source ourselves instead of going through the loader's bytecode cache.
    """
    if not path.is_file():
        raise InvalidSpec(f"the package has no {path.name}")
    # A unique name per load, so two versions of one model can live in one process.
    unique = f"modelplane_package_{uuid.uuid4().hex}_{module_name}"
    spec = importlib.util.spec_from_file_location(unique, path)
    if spec is None:
        raise InvalidSpec(f"cannot import {path.name}")
    module = importlib.util.module_from_spec(spec)
    code = compile(path.read_bytes(), str(path), "exec", dont_inherit=True)
    sys.modules[unique] = module  # dataclasses and typing look the module up by name
    try:
        exec(code, module.__dict__)
    except BaseException:
        del sys.modules[unique]
        raise
    return module


def _resolve(module: ModuleType, class_path: str, entrypoint: str) -> type:
    target: Any = module
    for part in class_path.split("."):
        target = getattr(target, part, None)
    if not isinstance(target, type):
        raise InvalidSpec(
            f"entrypoint '{entrypoint}' names no class in the package",
            details=[{"field": "entrypoint", "problem": "class not found"}],
        )
    return target


def _instantiate(cls: type, directory: Path) -> Any:
    raw_load = inspect.getattr_static(cls, "load", None)
    if isinstance(raw_load, classmethod | staticmethod):
        instance = cls.load(directory)  # type: ignore[attr-defined]
    else:
        instance = cls()
        instance.load(directory)
    if not callable(getattr(instance, "predict", None)):
        raise InvalidSpec(f"{cls.__qualname__} has no predict()")
    return instance
