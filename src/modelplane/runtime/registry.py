"""Find a runtime: by name (a manifest's ``runtime``) or by the model object to package.

Builtin runtimes come first; packages add more through the entry point group
``modelplane.runtimes``, whose entries name a callable taking :class:`RuntimeOptions` and
returning a :class:`ModelRuntime` (a runtime class itself is such a callable). An entry
point never replaces a builtin, so installing a package cannot hijack how ``onnx`` or
``sklearn`` models load.
"""

from __future__ import annotations

import importlib.metadata
import importlib.util
from collections.abc import Callable, Iterable

from modelplane.errors import InvalidSpec, MissingExtra, NotFound
from modelplane.runtime.base import ModelRuntime, RuntimeOptions
from modelplane.runtime.lightgbm import LightGBMRuntime
from modelplane.runtime.onnx import OnnxRuntime
from modelplane.runtime.python import PythonRuntime
from modelplane.runtime.sklearn import SklearnRuntime
from modelplane.runtime.torch import TorchRuntime
from modelplane.runtime.xgboost import XGBoostRuntime

__all__ = [
    "BUILTIN_ORDER",
    "ENTRY_POINT_GROUP",
    "RuntimeFactory",
    "get_runtime",
    "installed_versions",
    "runtime_for",
    "runtime_names",
]

ENTRY_POINT_GROUP = "modelplane.runtimes"

RuntimeFactory = Callable[[RuntimeOptions], ModelRuntime]

_BUILTINS: dict[str, RuntimeFactory] = {
    "onnx": OnnxRuntime,
    "torch": TorchRuntime,
    "xgboost": XGBoostRuntime,
    "lightgbm": LightGBMRuntime,
    "sklearn": SklearnRuntime,
    "python": PythonRuntime,
}
BUILTIN_ORDER: tuple[str, ...] = tuple(_BUILTINS)
"""The order :func:`runtime_for` asks in: specific formats before the generic fallbacks
(an ``XGBClassifier`` is also a scikit-learn estimator; anything with ``predict`` and
``load`` would do for ``python``)."""

# Optional libraries: (module, extra). Checked on lookup so a worker fails at start, clearly.
_EXTRAS: dict[str, tuple[str, str]] = {
    "xgboost": ("xgboost", "boost"),
    "lightgbm": ("lightgbm", "boost"),
    "torch": ("torch", "torch"),
}


def runtime_names() -> tuple[str, ...]:
    """Builtin names in :data:`BUILTIN_ORDER`, then entry point names."""
    plugins = [ep.name for ep in _entry_points() if ep.name not in _BUILTINS]
    return BUILTIN_ORDER + tuple(sorted(set(plugins)))


def get_runtime(name: str, options: RuntimeOptions | None = None) -> ModelRuntime:
    """The runtime called ``name``; :class:`MissingExtra` if its library is not installed."""
    chosen = options or RuntimeOptions()
    key = str(name)
    if key in _BUILTINS:
        extra = _EXTRAS.get(key)
        if extra is not None and importlib.util.find_spec(extra[0]) is None:
            raise MissingExtra(*extra)
        return _BUILTINS[key](chosen)
    for entry_point in _entry_points():
        if entry_point.name == key:
            factory: RuntimeFactory = entry_point.load()
            return factory(chosen)
    raise NotFound(
        f"no runtime named '{key}'; known: {', '.join(runtime_names())}",
        details=[{"field": "runtime", "problem": f"unknown runtime '{key}'"}],
    )


def runtime_for(model: object, options: RuntimeOptions | None = None) -> ModelRuntime:
    """The first runtime (builtins in :data:`BUILTIN_ORDER`, then plugins) accepting ``model``."""
    for runtime in _candidates(options or RuntimeOptions()):
        if runtime.accepts(model):
            return runtime
    raise InvalidSpec(
        f"no runtime can package a {type(model).__module__}.{type(model).__qualname__}",
        details=[{"field": "model", "problem": "no runtime accepts this object"}],
    )


def installed_versions(runtime: ModelRuntime) -> dict[str, str]:
    """Versions of the runtime's ``packages`` that are installed, for a manifest."""
    versions: dict[str, str] = {}
    for distribution in runtime.packages:
        try:
            versions[distribution] = importlib.metadata.version(distribution)
        except importlib.metadata.PackageNotFoundError:
            continue
    return versions


def _candidates(options: RuntimeOptions) -> Iterable[ModelRuntime]:
    # Constructing a builtin imports no model library, so trying them all is cheap.
    for factory in _BUILTINS.values():
        yield factory(options)
    for entry_point in _entry_points():
        if entry_point.name not in _BUILTINS:
            plugin: RuntimeFactory = entry_point.load()
            yield plugin(options)


def _entry_points() -> importlib.metadata.EntryPoints:
    return importlib.metadata.entry_points(group=ENTRY_POINT_GROUP)
