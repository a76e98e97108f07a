"""Load a model by import path and predict on it: the part every replica host shares.

A pool worker (``dataplane.pool.worker``) and a backend replica (``backends.replica_host``)
both receive a loader as plain strings, so the spec crosses a process or a Ray boundary;
both must load it and answer a batch the same way, whichever model does or does not batch.
"""

from __future__ import annotations

import importlib
import sys
from collections.abc import Callable, Iterable, Mapping
from typing import Any

import numpy as np
import numpy.typing as npt

from modelplane.runtime.base import Arrays, LoadedModel

__all__ = ["load_model_from", "predict_checked"]


def _resolve(path: str) -> Callable[..., LoadedModel]:
    module_name, sep, attr = path.partition(":")
    if not sep or not module_name or not attr:
        raise ValueError(f"loader '{path}' is not 'module:callable'")
    target: Any = importlib.import_module(module_name)
    for part in attr.split("."):
        target = getattr(target, part)
    if not callable(target):
        raise TypeError(f"loader '{path}' is not callable")
    return target  # type: ignore[no-any-return]


def load_model_from(
    loader: str,
    args: tuple[Any, ...] = (),
    kwargs: Mapping[str, Any] | None = None,
    paths: Iterable[str] = (),
) -> LoadedModel:
    """Put ``paths`` first on ``sys.path``, call ``loader(*args, **kwargs)``, check the result.

    The check is by shape, not by class: a package's model need not import modelplane.
    """
    for path in reversed(tuple(paths)):
        if path not in sys.path:
            sys.path.insert(0, path)
    model = _resolve(loader)(*args, **dict(kwargs or {}))
    if not callable(getattr(model, "predict", None)) or not hasattr(model, "supports_batching"):
        raise TypeError(f"loader '{loader}' returned {type(model).__name__}, not a model")
    return model


def predict_checked(model: LoadedModel, inputs: Arrays) -> dict[str, npt.NDArray[Any]]:
    """One batch through ``model`` (row by row where it cannot batch), as a dict of arrays.

    A model's ``predict`` is user code: its answer is checked here so that a bad one is an
    error for this request, not a crash in whoever encodes the reply.
    """
    outputs = model.predict(inputs) if model.supports_batching else _row_by_row(model, inputs)
    if not isinstance(outputs, Mapping):
        raise TypeError(f"predict returned {type(outputs).__name__}, not a dict of arrays")
    return {str(k): np.asarray(v) for k, v in outputs.items()}


def _row_by_row(model: LoadedModel, inputs: Arrays) -> dict[str, npt.NDArray[Any]]:
    rows = len(next(iter(inputs.values())))
    answers = [model.predict({k: v[i : i + 1] for k, v in inputs.items()}) for i in range(rows)]
    if not answers:
        return {}
    return {k: np.concatenate([a[k] for a in answers]) for k in answers[0]}
