"""The ``sklearn`` runtime: scikit-learn estimators and pipelines.

**Formats.** ``skops`` by default: it cannot run arbitrary code on load. Loading trusts
only the types skops reports that come from scikit-learn or numpy, plus plain builtin
value types (:func:`is_trusted_type`); any other type (a custom transformer, a function
such as ``builtins.eval`` stored in a ``FunctionTransformer``) fails with
:class:`~modelplane.errors.UnsafeFormat` naming it, both when saving and when loading.
``joblib`` and ``pickle`` run code on load, so they need ``trust_pickle=True`` (the
``--trust-pickle`` flag) and a manifest with ``trusted_pickle: true``.

**Inputs and outputs** follow the tabular convention of :mod:`modelplane.runtime.tabular`:
classifiers give ``label`` (``predict``) and ``probabilities`` (``predict_proba``, when
the estimator has it); other estimators with ``predict`` give ``prediction``; a
transformer without ``predict`` gives ``output`` (``transform``). A classifier runs both
``predict`` and ``predict_proba``: deriving the label from the probabilities would be
cheaper but differs from ``predict`` for some estimators (``SVC(probability=True)``).

**Threads.** Loading caps BLAS and OpenMP threads process-wide at ``intra_op_threads``.
"""

from __future__ import annotations

import pickle
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from modelplane.errors import InvalidSpec, UnsafeFormat
from modelplane.runtime.base import Arrays, RuntimeOptions, SavedModel
from modelplane.runtime.libs import imported
from modelplane.runtime.tabular import LABEL, OUTPUT, PREDICTION, PROBABILITIES, FeatureMatrix
from modelplane.spec.fields import FieldSpec
from modelplane.spec.manifest import Manifest, ModelFormat, Runtime

__all__ = [
    "MODEL_FILES",
    "TRUSTED_BUILTINS",
    "SklearnModel",
    "SklearnRuntime",
    "is_trusted_type",
    "predict_outputs",
    "untrusted_types",
]

MODEL_FILES: dict[ModelFormat, str] = {
    ModelFormat.SKOPS: "model.skops",
    ModelFormat.JOBLIB: "model.joblib",
    ModelFormat.PICKLE: "model.pkl",
}

_TRUSTED_ROOTS = frozenset({"sklearn", "numpy"})

_VALUE_TYPES: tuple[type, ...] = (
    bool, bytearray, bytes, complex, dict, float, frozenset, int, list, type(None), range, set,
    slice, str, tuple,
)  # fmt: skip
TRUSTED_BUILTINS = frozenset(f"builtins.{kind.__name__}" for kind in _VALUE_TYPES)
"""Builtin value types; builtin *functions* (``eval``, ``exec``, ``open``) are never trusted."""


def is_trusted_type(name: str) -> bool:
    """True for a type name skops reports that the sklearn runtime will load."""
    return name in TRUSTED_BUILTINS or name.partition(".")[0] in _TRUSTED_ROOTS


def untrusted_types(path: Path) -> list[str]:
    """The types in a skops file that :func:`is_trusted_type` rejects, sorted."""
    import skops.io

    reported = skops.io.get_untrusted_types(file=path)
    return sorted(name for name in reported if not is_trusted_type(name))


def predict_outputs(estimator: Any, matrix: Any) -> dict[str, npt.NDArray[Any]]:
    """Run ``estimator`` on ``matrix`` and name the results by the convention above."""
    from sklearn.base import is_classifier

    if is_classifier(estimator):
        outputs = {LABEL: np.asarray(estimator.predict(matrix))}
        if hasattr(estimator, "predict_proba"):
            outputs[PROBABILITIES] = np.asarray(estimator.predict_proba(matrix))
        return outputs
    if hasattr(estimator, "predict"):
        return {PREDICTION: np.asarray(estimator.predict(matrix))}
    if hasattr(estimator, "transform"):
        return {OUTPUT: np.asarray(estimator.transform(matrix))}
    raise InvalidSpec(f"a {type(estimator).__name__} has neither predict nor transform")


class SklearnRuntime:
    """Saves and serves scikit-learn estimators."""

    name = Runtime.SKLEARN
    packages: tuple[str, ...] = ("scikit-learn", "skops", "numpy", "scipy", "joblib")

    def __init__(self, options: RuntimeOptions | None = None) -> None:
        self.options = options or RuntimeOptions()

    def accepts(self, model: object) -> bool:
        base = imported("sklearn.base")
        return base is not None and isinstance(model, base.BaseEstimator)

    def save(
        self,
        model: object,
        directory: Path,
        *,
        format: ModelFormat | None = None,
        trust_pickle: bool = False,
    ) -> SavedModel:
        chosen = format or ModelFormat.SKOPS
        if chosen not in MODEL_FILES:
            raise InvalidSpec(f"the sklearn runtime saves skops, joblib or pickle, not '{chosen}'")
        _guard_pickle(chosen, trusted=trust_pickle)
        path = directory / MODEL_FILES[chosen]
        if chosen is ModelFormat.SKOPS:
            _dump_skops(model, path)
        elif chosen is ModelFormat.JOBLIB:
            import joblib

            joblib.dump(model, path)
        else:
            with path.open("wb") as file:
                pickle.dump(model, file, protocol=pickle.HIGHEST_PROTOCOL)
        return SavedModel(model_file=path.name, format=chosen)

    def load(self, directory: Path, manifest: Manifest) -> SklearnModel:
        if manifest.format not in MODEL_FILES:
            raise InvalidSpec(f"the sklearn runtime cannot load format '{manifest.format}'")
        _guard_pickle(manifest.format, trusted=manifest.trusted_pickle)
        estimator = _load_estimator(directory / manifest.model_file, manifest.format)
        model = SklearnModel(estimator, manifest.signature.inputs)
        _limit_threads(self.options.intra_op_threads)
        return model


class SklearnModel:
    """A loaded estimator."""

    supports_batching = True

    def __init__(self, estimator: Any, fields: tuple[FieldSpec, ...]) -> None:
        self.estimator = estimator
        names = getattr(estimator, "feature_names_in_", None)
        self._matrix = FeatureMatrix(
            fields, feature_names=None if names is None else [str(name) for name in names]
        )

    def predict(self, inputs: Arrays) -> dict[str, npt.NDArray[Any]]:
        return predict_outputs(self.estimator, self._matrix(inputs))


def _limit_threads(threads: int) -> None:
    """Cap BLAS and OpenMP threads for the whole process, as torch does.

    A worker process serves one model, so a process-wide cap set once at load is enough; a
    cap scoped to each call would cost about 18 us per prediction.
    """
    from threadpoolctl import ThreadpoolController  # type: ignore[import-untyped]

    ThreadpoolController().limit(limits=threads)


def _guard_pickle(format: ModelFormat, *, trusted: bool) -> None:
    if format.runs_code_on_load and not trusted:
        raise UnsafeFormat(
            f"format '{format}' runs code when loaded; pass --trust-pickle"
            " (trust_pickle=True) only for a model you trust, or use the skops format",
            details=[{"field": "format", "problem": "pickle-family format not trusted"}],
        )


def _dump_skops(model: object, path: Path) -> None:
    import skops.io

    skops.io.dump(model, path)
    rejected = untrusted_types(path)
    if rejected:
        path.unlink()
        raise _unsafe_types(rejected, path)


def _load_estimator(path: Path, format: ModelFormat) -> Any:
    if format is ModelFormat.SKOPS:
        import skops.io

        reported = skops.io.get_untrusted_types(file=path)
        rejected = sorted(name for name in reported if not is_trusted_type(name))
        if rejected:
            raise _unsafe_types(rejected, path)
        return skops.io.load(path, trusted=reported)
    if format is ModelFormat.JOBLIB:
        import joblib

        return joblib.load(path)
    with path.open("rb") as file:
        return pickle.load(file)  # only reached for a trusted package


def _unsafe_types(rejected: list[str], path: Path) -> UnsafeFormat:
    return UnsafeFormat(
        f"{path.name} holds types that skops cannot load safely: {', '.join(rejected)};"
        " use the python runtime, or format joblib with --trust-pickle for a model you trust",
        details=[{"field": "model_file", "problem": f"untrusted type {name}"} for name in rejected],
    )
