"""The ``xgboost`` runtime: models in xgboost's native JSON format, served by a ``Booster``.

Saving accepts an ``xgboost.Booster`` or any sklearn wrapper (``XGBClassifier``,
``XGBRegressor``, ...). Serving uses the ``Booster`` and ``inplace_predict`` (no
``DMatrix`` per call) with the tabular convention of :mod:`modelplane.runtime.tabular`.
The objective decides the outputs: ``binary:logistic`` and ``multi:softprob`` give
``label`` and ``probabilities`` (two columns for binary, as ``predict_proba`` does);
``multi:softmax`` and ``binary:hinge`` give ``label``; every other objective gives
``prediction``. Needs the ``boost`` extra.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from modelplane.errors import InvalidSpec
from modelplane.runtime.base import Arrays, RuntimeOptions, SavedModel
from modelplane.runtime.libs import imported, require
from modelplane.runtime.tabular import LABEL, PREDICTION, FeatureMatrix, class_outputs
from modelplane.spec.fields import FieldSpec
from modelplane.spec.manifest import Manifest, ModelFormat, Runtime

__all__ = ["MODEL_FILE", "XGBoostModel", "XGBoostRuntime"]

MODEL_FILE = "model.json"

_PROBABILITY_OBJECTIVES = frozenset({"binary:logistic", "multi:softprob"})
_LABEL_OBJECTIVES = frozenset({"multi:softmax", "binary:hinge"})


class XGBoostRuntime:
    """Saves and serves xgboost models."""

    name = Runtime.XGBOOST
    # The CPU-only wheel is a different distribution with the same module; record whichever.
    packages: tuple[str, ...] = ("xgboost", "xgboost-cpu", "numpy")

    def __init__(self, options: RuntimeOptions | None = None) -> None:
        self.options = options or RuntimeOptions()

    def accepts(self, model: object) -> bool:
        xgb = imported("xgboost")
        return xgb is not None and isinstance(model, xgb.XGBModel | xgb.Booster)

    def save(
        self,
        model: object,
        directory: Path,
        *,
        format: ModelFormat | None = None,
        trust_pickle: bool = False,
    ) -> SavedModel:
        if format not in (None, ModelFormat.XGBOOST_JSON):
            raise InvalidSpec(f"the xgboost runtime saves format 'xgboost-json', not '{format}'")
        xgb = require("xgboost", "boost")
        if not isinstance(model, xgb.XGBModel | xgb.Booster):
            raise InvalidSpec(f"the xgboost runtime cannot save a {type(model).__name__}")
        model.save_model(str(directory / MODEL_FILE))
        return SavedModel(model_file=MODEL_FILE, format=ModelFormat.XGBOOST_JSON)

    def load(self, directory: Path, manifest: Manifest) -> XGBoostModel:
        if manifest.format is not ModelFormat.XGBOOST_JSON:
            raise InvalidSpec(f"the xgboost runtime cannot load format '{manifest.format}'")
        xgb = require("xgboost", "boost")
        booster = xgb.Booster()
        booster.load_model(str(directory / manifest.model_file))
        booster.set_param({"nthread": self.options.intra_op_threads})
        return XGBoostModel(booster, manifest.signature.inputs)


class XGBoostModel:
    """A loaded ``Booster``."""

    supports_batching = True

    def __init__(self, booster: Any, fields: tuple[FieldSpec, ...]) -> None:
        self.booster = booster
        self.objective: str = json.loads(booster.save_config())["learner"]["objective"]["name"]
        names = booster.feature_names
        self._matrix = FeatureMatrix(fields, feature_names=None if names is None else list(names))
        # The sklearn wrapper predicts with the best iteration after early stopping; so do we.
        best = booster.attr("best_iteration")
        self._iterations = (0, int(best) + 1) if best is not None else (0, 0)

    def predict(self, inputs: Arrays) -> dict[str, npt.NDArray[Any]]:
        matrix = self._matrix(inputs)
        raw = np.asarray(self.booster.inplace_predict(matrix, iteration_range=self._iterations))
        if self.objective in _PROBABILITY_OBJECTIVES:
            return class_outputs(raw)
        if self.objective in _LABEL_OBJECTIVES:
            return {LABEL: raw.astype(np.int64)}
        return {PREDICTION: raw}
