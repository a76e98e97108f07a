"""The ``lightgbm`` runtime: models in LightGBM's text format, served by a ``Booster``.

Saving accepts a ``lightgbm.Booster`` or a sklearn wrapper (``LGBMClassifier``, ...). The
text format does not keep a classifier's original class labels, so for an ``LGBMClassifier``
they are written beside it as ``classes.json`` and ``label`` gives them back; a bare
``Booster`` labels classes ``0..n-1``. Inputs follow the tabular convention of
:mod:`modelplane.runtime.tabular`; objectives ``binary``, ``multiclass``, ``multiclassova``
and ``cross_entropy`` give ``label`` and ``probabilities``, the others ``prediction``.
Needs the ``boost`` extra.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from modelplane.errors import InvalidSpec
from modelplane.runtime.base import Arrays, RuntimeOptions, SavedModel
from modelplane.runtime.libs import imported, require
from modelplane.runtime.tabular import PREDICTION, FeatureMatrix, class_outputs
from modelplane.spec.fields import FieldSpec
from modelplane.spec.manifest import Manifest, ModelFormat, Runtime

__all__ = ["CLASSES_FILE", "MODEL_FILE", "LightGBMModel", "LightGBMRuntime"]

MODEL_FILE = "model.txt"
CLASSES_FILE = "classes.json"

_PROBABILITY_OBJECTIVES = frozenset({"binary", "multiclass", "multiclassova", "cross_entropy"})
_AUTO_NAME = re.compile(r"^Column_\d+$")


class LightGBMRuntime:
    """Saves and serves LightGBM models."""

    name = Runtime.LIGHTGBM
    packages: tuple[str, ...] = ("lightgbm", "numpy")

    def __init__(self, options: RuntimeOptions | None = None) -> None:
        self.options = options or RuntimeOptions()

    def accepts(self, model: object) -> bool:
        lgb = imported("lightgbm")
        return lgb is not None and isinstance(model, lgb.LGBMModel | lgb.Booster)

    def save(
        self,
        model: object,
        directory: Path,
        *,
        format: ModelFormat | None = None,
        trust_pickle: bool = False,
    ) -> SavedModel:
        if format not in (None, ModelFormat.LIGHTGBM_TEXT):
            raise InvalidSpec(f"the lightgbm runtime saves format 'lightgbm-text', not '{format}'")
        lgb = require("lightgbm", "boost")
        if isinstance(model, lgb.LGBMModel):
            model.booster_.save_model(str(directory / MODEL_FILE))
            if isinstance(model, lgb.LGBMClassifier):
                classes = np.asarray(model.classes_).tolist()
                (directory / CLASSES_FILE).write_text(json.dumps(classes), encoding="utf-8")
        elif isinstance(model, lgb.Booster):
            model.save_model(str(directory / MODEL_FILE))
        else:
            raise InvalidSpec(f"the lightgbm runtime cannot save a {type(model).__name__}")
        return SavedModel(model_file=MODEL_FILE, format=ModelFormat.LIGHTGBM_TEXT)

    def load(self, directory: Path, manifest: Manifest) -> LightGBMModel:
        if manifest.format is not ModelFormat.LIGHTGBM_TEXT:
            raise InvalidSpec(f"the lightgbm runtime cannot load format '{manifest.format}'")
        lgb = require("lightgbm", "boost")
        booster = lgb.Booster(model_file=str(directory / manifest.model_file))
        classes_path = directory / CLASSES_FILE
        classes = _read_classes(classes_path) if classes_path.is_file() else None
        return LightGBMModel(booster, manifest.signature.inputs, self.options, classes)


class LightGBMModel:
    """A loaded ``Booster``."""

    supports_batching = True

    def __init__(
        self,
        booster: Any,
        fields: tuple[FieldSpec, ...],
        options: RuntimeOptions,
        classes: npt.NDArray[Any] | None = None,
    ) -> None:
        self.booster = booster
        self.objective = str(booster.params.get("objective", "regression")).split()[0]
        self._threads = options.intra_op_threads
        self._classes = classes
        names = [str(name) for name in booster.feature_name()]
        # Names LightGBM made up for a numpy matrix carry no meaning to match columns by.
        auto = all(_AUTO_NAME.match(name) for name in names)
        self._matrix = FeatureMatrix(fields, feature_names=None if auto else names)

    def predict(self, inputs: Arrays) -> dict[str, npt.NDArray[Any]]:
        matrix = self._matrix(inputs)
        raw = np.asarray(self.booster.predict(matrix, num_threads=self._threads))
        if self.objective in _PROBABILITY_OBJECTIVES:
            return class_outputs(raw, self._classes)
        return {PREDICTION: raw}


def _read_classes(path: Path) -> npt.NDArray[Any]:
    values = json.loads(path.read_text(encoding="utf-8"))
    if not isinstance(values, list) or not values:
        raise InvalidSpec(f"{path.name} must hold a non-empty list of class labels")
    # String labels stay objects, as sklearn keeps them, rather than fixed-width unicode.
    as_objects = any(isinstance(value, str) for value in values)
    return np.asarray(values, dtype=object if as_objects else None)
