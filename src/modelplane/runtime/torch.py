"""The ``torch`` runtime: TorchScript modules, loaded on CPU.

Saving accepts a ``torch.jit.ScriptModule`` (from ``torch.jit.script`` or ``torch.jit.trace``)
or a plain ``nn.Module``, which is scripted. Serving calls the module in
``torch.inference_mode()`` with one tensor per signature input, in signature order. Outputs:
a tensor is ``output``; a dict of tensors keeps its keys; a tuple or list gives
``output_0``, ``output_1``, ...

torch is an optional extra (``modelplane[torch]``), imported only here and only when used.
Thread counts are process-wide in torch, which suits one model per worker process.
TorchScript is deprecated upstream (torch 2.13 warns on every ``torch.jit`` call); we keep it
as the package format until the manifest gains a ``torch.export`` one, and silence exactly
those deprecation warnings around our own calls, since a serving worker cannot act on them.
"""

from __future__ import annotations

import contextlib
import warnings
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from modelplane.errors import InvalidSpec
from modelplane.runtime.base import Arrays, RuntimeOptions, SavedModel
from modelplane.runtime.libs import imported, require
from modelplane.runtime.tabular import OUTPUT, field_arrays
from modelplane.spec.fields import FieldSpec
from modelplane.spec.manifest import Manifest, ModelFormat, Runtime

__all__ = ["MODEL_FILE", "TorchModel", "TorchRuntime", "torchscript_calls"]

MODEL_FILE = "model.pt"


@contextlib.contextmanager
def torchscript_calls() -> Iterator[None]:
    """Silence torch's deprecation warnings for ``torch.jit`` calls, and nothing else."""
    with warnings.catch_warnings():
        warnings.filterwarnings(
            "ignore",
            message=r"`torch\.jit\.\w+` is deprecated",
            category=DeprecationWarning,
        )
        yield


class TorchRuntime:
    """Saves and serves TorchScript modules."""

    name = Runtime.TORCH
    packages: tuple[str, ...] = ("torch", "numpy")

    def __init__(self, options: RuntimeOptions | None = None) -> None:
        self.options = options or RuntimeOptions()

    def accepts(self, model: object) -> bool:
        torch = imported("torch")
        return torch is not None and isinstance(model, torch.nn.Module)

    def save(
        self,
        model: object,
        directory: Path,
        *,
        format: ModelFormat | None = None,
        trust_pickle: bool = False,
    ) -> SavedModel:
        if format not in (None, ModelFormat.TORCHSCRIPT):
            raise InvalidSpec(f"the torch runtime saves format 'torchscript', not '{format}'")
        torch = require("torch", "torch")
        if not isinstance(model, torch.nn.Module):
            raise InvalidSpec(f"the torch runtime cannot save a {type(model).__name__}")
        with torchscript_calls():
            scripted = model if isinstance(model, torch.jit.ScriptModule) else _script(model)
            torch.jit.save(scripted, str(directory / MODEL_FILE))
        return SavedModel(model_file=MODEL_FILE, format=ModelFormat.TORCHSCRIPT)

    def load(self, directory: Path, manifest: Manifest) -> TorchModel:
        if manifest.format is not ModelFormat.TORCHSCRIPT:
            raise InvalidSpec(f"the torch runtime cannot load format '{manifest.format}'")
        torch = require("torch", "torch")
        _set_threads(torch, self.options)
        with torchscript_calls():
            module = torch.jit.load(str(directory / manifest.model_file), map_location="cpu")
        module.eval()
        return TorchModel(module, manifest.signature.inputs)


class TorchModel:
    """A loaded TorchScript module."""

    supports_batching = True

    def __init__(self, module: Any, fields: tuple[FieldSpec, ...]) -> None:
        self.module = module
        self._fields = fields
        self._torch = require("torch", "torch")

    def predict(self, inputs: Arrays) -> dict[str, npt.NDArray[Any]]:
        torch = self._torch
        # torch shares memory with numpy and warns about read-only arrays; copy those only.
        tensors = [
            torch.from_numpy(array if array.flags.writeable else array.copy())
            for array in map(np.ascontiguousarray, field_arrays(inputs, self._fields))
        ]
        with torch.inference_mode():
            result = self.module(*tensors)
        return _name_outputs(result)


def _name_outputs(result: Any) -> dict[str, npt.NDArray[Any]]:
    if isinstance(result, Mapping):
        return {str(name): _numpy(value) for name, value in result.items()}
    if isinstance(result, Sequence):
        return {f"{OUTPUT}_{i}": _numpy(value) for i, value in enumerate(result)}
    return {OUTPUT: _numpy(result)}


def _numpy(value: Any) -> npt.NDArray[Any]:
    detach = getattr(value, "detach", None)
    if callable(detach):
        return np.asarray(detach().cpu().numpy())
    return np.asarray(value)


def _script(model: Any) -> Any:
    torch = require("torch", "torch")
    try:
        return torch.jit.script(model)
    except Exception as exc:  # TorchScript raises many error types for unscriptable code
        raise InvalidSpec(
            f"could not script {type(model).__name__}: {exc}; trace it with"
            " torch.jit.trace(model, example_inputs) and save the traced module instead"
        ) from exc


def _set_threads(torch: Any, options: RuntimeOptions) -> None:
    torch.set_num_threads(options.intra_op_threads)
    # Inter-op threads can be set only once, before any parallel work; a worker that already
    # ran torch keeps its setting rather than failing to load.
    with contextlib.suppress(RuntimeError):
        torch.set_num_interop_threads(options.inter_op_threads)
