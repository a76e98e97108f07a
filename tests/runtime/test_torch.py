from __future__ import annotations

import sys
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import pytest

from modelplane.errors import MissingExtra
from modelplane.runtime.base import SavedModel
from modelplane.runtime.torch import TorchRuntime, torchscript_calls
from modelplane.spec.dtypes import DType
from modelplane.spec.manifest import ModelFormat

from .runtime_kit import Package, column_fields, matrix_field

# torch is an optional extra: skip without it. TorchScript reads the annotations, so the
# modules below need real ``Tensor`` annotations, resolvable at run time.
if TYPE_CHECKING:
    import torch
    from torch import Tensor, nn
else:
    torch = pytest.importorskip("torch")
    Tensor = torch.Tensor
    nn = torch.nn


class Scorer(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.linear = nn.Linear(4, 3)

    def forward(self, x: Tensor) -> Tensor:
        scores: Tensor = self.linear(x)
        return scores.softmax(dim=1)


class TwoHeads(nn.Module):
    def forward(self, a: Tensor, b: Tensor) -> dict[str, Tensor]:
        return {"total": a + b, "product": a * b}


def _fixed_seed() -> Scorer:
    torch.manual_seed(0)
    return Scorer().eval()


def test_scripted_module_matches_the_original(tmp_path: Path) -> None:
    module = _fixed_seed()
    x = np.random.default_rng(0).normal(size=(9, 4)).astype(np.float32)
    package = Package(tmp_path).inputs(matrix_field("x", 4, DType.FLOAT32))
    loaded = package.save(TorchRuntime(), module).load()
    out = loaded.predict({"x": x})
    assert list(out) == ["output"]
    with torch.inference_mode():
        expected = module(torch.from_numpy(x)).numpy()
    np.testing.assert_allclose(out["output"], expected, rtol=1e-6)


def test_traced_module_and_float64_inputs(tmp_path: Path) -> None:
    module = _fixed_seed()
    with torchscript_calls():
        traced = torch.jit.trace(module, torch.zeros(1, 4))  # type: ignore[no-untyped-call]
    saved = TorchRuntime().save(traced, tmp_path)
    assert saved == SavedModel("model.pt", ModelFormat.TORCHSCRIPT)
    package = Package(tmp_path).inputs(matrix_field("x", 4, DType.FLOAT32))
    x = np.ones((3, 4))  # float64 from JSON; the signature says float32
    x.flags.writeable = False
    out = package.written(TorchRuntime(), saved).load().predict({"x": x})
    with torch.inference_mode():
        expected = module(torch.ones(3, 4)).numpy()
    np.testing.assert_allclose(out["output"], expected, rtol=1e-6)


def test_dict_outputs_keep_their_names_and_inputs_go_in_signature_order(tmp_path: Path) -> None:
    fields = column_fields(("a", "b"), DType.FLOAT32)
    loaded = Package(tmp_path).inputs(fields).save(TorchRuntime(), TwoHeads()).load()
    a = np.array([1.0, 2.0], dtype=np.float32)
    out = loaded.predict({"b": a * 10, "a": a})
    np.testing.assert_allclose(out["total"], [11.0, 22.0])
    np.testing.assert_allclose(out["product"], [10.0, 40.0])


def test_missing_torch_names_the_extra(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    Package(tmp_path).inputs(matrix_field("x", 4, DType.FLOAT32)).save(TorchRuntime(), Scorer())
    monkeypatch.setitem(sys.modules, "torch", None)
    package = Package(tmp_path).inputs(matrix_field("x", 4, DType.FLOAT32))
    package.written(TorchRuntime(), SavedModel("model.pt", ModelFormat.TORCHSCRIPT))
    with pytest.raises(MissingExtra, match=r"modelplane\[torch\]") as info:
        package.load()
    assert info.value.extra == "torch"
