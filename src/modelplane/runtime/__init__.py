"""Model runtimes: save a model into a package, load it in a worker, predict on arrays.

One module per runtime (``onnx``, ``sklearn``, ``xgboost``, ``lightgbm``, ``torch``,
``python``); each imports its model library only when used. Output names follow the
conventions in :mod:`modelplane.runtime.tabular`.
"""

from modelplane.runtime.base import Arrays, LoadedModel, ModelRuntime, RuntimeOptions, SavedModel
from modelplane.runtime.infer import dtype_of, field_for, fields_for, output_fields_for
from modelplane.runtime.registry import (
    ENTRY_POINT_GROUP,
    get_runtime,
    installed_versions,
    runtime_for,
    runtime_names,
)
from modelplane.runtime.tabular import LABEL, OUTPUT, PREDICTION, PROBABILITIES

__all__ = [
    "ENTRY_POINT_GROUP",
    "LABEL",
    "OUTPUT",
    "PREDICTION",
    "PROBABILITIES",
    "Arrays",
    "LoadedModel",
    "ModelRuntime",
    "RuntimeOptions",
    "SavedModel",
    "dtype_of",
    "field_for",
    "fields_for",
    "get_runtime",
    "installed_versions",
    "output_fields_for",
    "runtime_for",
    "runtime_names",
]
