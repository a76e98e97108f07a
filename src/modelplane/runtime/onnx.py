"""The ``onnx`` runtime: an onnxruntime ``InferenceSession`` on CPU.

Inputs are matched to the session's inputs by name. When the session has a single input and
the request does not name it, the tabular convention applies (see
:mod:`modelplane.runtime.tabular`): 1-D columns are stacked in signature order. Every named
session output is returned under its own name. sklearn-onnx's ``ZipMap`` output (a sequence
of ``{class: probability}`` maps) becomes a 2-D array with one column per class, in the
map's order; prefer exporting with ``options={"zipmap": False}``, which is faster.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from modelplane.errors import ContractViolation, InvalidSpec
from modelplane.runtime.base import Arrays, RuntimeOptions, SavedModel
from modelplane.runtime.tabular import FeatureMatrix
from modelplane.spec.fields import FieldSpec
from modelplane.spec.manifest import Manifest, ModelFormat, Runtime

__all__ = ["MODEL_FILE", "OnnxModel", "OnnxRuntime"]

MODEL_FILE = "model.onnx"

_ELEMENT_TYPES: dict[str, str] = {
    "tensor(float)": "float32",
    "tensor(double)": "float64",
    "tensor(float16)": "float16",
    "tensor(int8)": "int8",
    "tensor(int16)": "int16",
    "tensor(int32)": "int32",
    "tensor(int64)": "int64",
    "tensor(uint8)": "uint8",
    "tensor(uint16)": "uint16",
    "tensor(uint32)": "uint32",
    "tensor(uint64)": "uint64",
    "tensor(bool)": "bool",
    "tensor(string)": "object",
}


class OnnxRuntime:
    """Saves ONNX models (``onnx.ModelProto``, bytes or a ``.onnx`` path) and serves them."""

    name = Runtime.ONNX
    packages: tuple[str, ...] = ("onnxruntime", "onnx", "numpy")

    def __init__(self, options: RuntimeOptions | None = None) -> None:
        self.options = options or RuntimeOptions()

    def accepts(self, model: object) -> bool:
        if isinstance(model, bytes | bytearray):
            return True
        if isinstance(model, str | Path):
            return str(model).endswith(".onnx")
        kind = type(model)
        return kind.__name__ == "ModelProto" and kind.__module__.startswith("onnx")

    def save(
        self,
        model: object,
        directory: Path,
        *,
        format: ModelFormat | None = None,
        trust_pickle: bool = False,
    ) -> SavedModel:
        if format not in (None, ModelFormat.ONNX):
            raise InvalidSpec(f"the onnx runtime saves format 'onnx', not '{format}'")
        data = _model_bytes(model)
        # Fail at packaging time, not when the first replica starts.
        _session(data, self.options)
        (directory / MODEL_FILE).write_bytes(data)
        return SavedModel(model_file=MODEL_FILE, format=ModelFormat.ONNX)

    def load(self, directory: Path, manifest: Manifest) -> OnnxModel:
        if manifest.format is not ModelFormat.ONNX:
            raise InvalidSpec(f"the onnx runtime cannot load format '{manifest.format}'")
        data = (directory / manifest.model_file).read_bytes()
        return OnnxModel(_session(data, self.options), manifest.signature.inputs)


class OnnxModel:
    """A loaded ONNX session."""

    supports_batching = True

    def __init__(self, session: Any, fields: tuple[FieldSpec, ...]) -> None:
        self.session = session
        self._inputs = [
            (node.name, _ELEMENT_TYPES.get(node.type), len(node.shape))
            for node in session.get_inputs()
        ]
        self._outputs = [node.name for node in session.get_outputs()]
        self._stacked = _stacked_columns(fields) if len(self._inputs) == 1 else None

    @property
    def input_names(self) -> list[str]:
        return [name for name, _, _ in self._inputs]

    @property
    def output_names(self) -> list[str]:
        return list(self._outputs)

    def predict(self, inputs: Arrays) -> dict[str, npt.NDArray[Any]]:
        results = self.session.run(self._outputs, self._feeds(inputs))
        return {name: _to_array(value) for name, value in zip(self._outputs, results, strict=True)}

    def _feeds(self, inputs: Arrays) -> dict[str, npt.NDArray[Any]]:
        names = self.input_names
        if all(name in inputs for name in names):
            return {
                name: _fit(np.asarray(inputs[name]), dtype, rank)
                for name, dtype, rank in self._inputs
            }
        if self._stacked is not None:
            name, dtype, rank = self._inputs[0]
            return {name: _fit(np.asarray(self._stacked(inputs)), dtype, rank)}
        missing = [name for name in names if name not in inputs]
        raise ContractViolation(
            f"missing inputs {missing}",
            details=[{"field": f"inputs.{name}", "problem": "missing"} for name in missing],
        )


def _stacked_columns(fields: tuple[FieldSpec, ...]) -> FeatureMatrix | None:
    """The tabular fallback for a one-input session, if the signature is tabular at all."""
    try:
        return FeatureMatrix(fields)
    except InvalidSpec:  # an image or sequence signature: inputs must match by name
        return None


def _fit(array: npt.NDArray[Any], dtype: str | None, rank: int) -> npt.NDArray[Any]:
    """Cast to the session's element type; a column becomes ``[n, 1]`` where 2-D is wanted."""
    if dtype is not None and array.dtype != np.dtype(dtype):
        array = array.astype(dtype)
    if rank == 2 and array.ndim == 1:
        array = array.reshape(-1, 1)
    return array


def _to_array(value: Any) -> npt.NDArray[Any]:
    if isinstance(value, list) and value and isinstance(value[0], dict):
        # ZipMap: one {class: probability} map per row, all with the same keys.
        keys = list(value[0])
        return np.array([[row[key] for key in keys] for row in value], dtype=np.float32)
    return np.asarray(value)


def _model_bytes(model: object) -> bytes:
    if isinstance(model, bytes | bytearray):
        return bytes(model)
    if isinstance(model, str | Path):
        path = Path(model)
        if not path.is_file():
            raise InvalidSpec(f"{path}: no such ONNX file")
        return path.read_bytes()
    serialize = getattr(model, "SerializeToString", None)
    if not callable(serialize):
        raise InvalidSpec(f"the onnx runtime cannot save a {type(model).__name__}")
    data = serialize()
    assert isinstance(data, bytes)
    return data


def _session(data: bytes, options: RuntimeOptions) -> Any:
    import onnxruntime as ort  # a core dependency, imported late to keep other workers lean

    session_options = ort.SessionOptions()
    session_options.intra_op_num_threads = options.intra_op_threads
    session_options.inter_op_num_threads = options.inter_op_threads
    session_options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    session_options.execution_mode = (
        ort.ExecutionMode.ORT_SEQUENTIAL
        if options.inter_op_threads == 1
        else ort.ExecutionMode.ORT_PARALLEL
    )
    try:
        return ort.InferenceSession(
            data, sess_options=session_options, providers=["CPUExecutionProvider"]
        )
    except Exception as exc:  # onnxruntime raises its own untyped errors for bad graphs
        raise InvalidSpec(f"not a loadable ONNX model: {exc}") from exc
