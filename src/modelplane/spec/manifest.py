"""The package manifest (``modelplane.yaml``): everything needed to load and trust a model."""

from __future__ import annotations

from enum import StrEnum
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator
from pydantic_core import PydanticCustomError

from modelplane.spec.fields import Signature
from modelplane.spec.names import Name

__all__ = [
    "MANIFEST_FILE",
    "DatasetRef",
    "Environment",
    "FeatureRef",
    "FileEntry",
    "Lineage",
    "Manifest",
    "ModelFormat",
    "Resources",
    "Runtime",
]

MANIFEST_FILE = "modelplane.yaml"


class Runtime(StrEnum):
    """How a model is loaded and called."""

    ONNX = "onnx"
    SKLEARN = "sklearn"
    XGBOOST = "xgboost"
    LIGHTGBM = "lightgbm"
    TORCH = "torch"
    PYTHON = "python"


class ModelFormat(StrEnum):
    """How the model's bytes are stored; only pickle-family formats can run code on load."""

    ONNX = "onnx"
    SKOPS = "skops"
    JOBLIB = "joblib"
    PICKLE = "pickle"
    XGBOOST_JSON = "xgboost-json"
    LIGHTGBM_TEXT = "lightgbm-text"
    TORCHSCRIPT = "torchscript"
    PYTHON = "python"

    @property
    def runs_code_on_load(self) -> bool:
        return self in (ModelFormat.JOBLIB, ModelFormat.PICKLE, ModelFormat.PYTHON)


_SHA256_HEX = r"^[0-9a-f]{64}$"


class FileEntry(BaseModel):
    """One file of the package, with its content hash."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    path: str = Field(min_length=1)
    sha256: str = Field(pattern=_SHA256_HEX)
    size: int = Field(ge=0)


class Resources(BaseModel):
    """What one replica of this model asks for."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    cpu: float = Field(default=1.0, gt=0)
    memory_mb: int = Field(default=512, gt=0)
    gpus: float = Field(default=0.0, ge=0)
    gpu_memory_mb: int = Field(default=0, ge=0)
    gpu_models: tuple[str, ...] = ()


class Environment(BaseModel):
    """The software the model was packaged with."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    python: str
    packages: dict[str, str] = {}


class DatasetRef(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    uri: str = Field(min_length=1)
    sha256: str | None = Field(default=None, pattern=_SHA256_HEX)


class FeatureRef(BaseModel):
    """A feature set (and version) the model was trained on."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    feature_set: str = Field(min_length=1)
    version: int = Field(ge=1)
    features: tuple[str, ...] = ()


class Lineage(BaseModel):
    """Where the model came from."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    training_data: tuple[DatasetRef, ...] = ()
    code_revision: str | None = None
    parameters: dict[str, Any] = {}
    metrics: dict[str, float] = {}
    features: tuple[FeatureRef, ...] = ()


class Manifest(BaseModel):
    """``modelplane.yaml``: a package describes itself with this."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    api_version: Literal["modelplane/v1"] = "modelplane/v1"
    kind: Literal["Package"] = "Package"
    name: Name
    runtime: Runtime
    format: ModelFormat
    model_file: str = Field(min_length=1)
    entrypoint: str | None = None
    trusted_pickle: bool = False
    signature: Signature
    resources: Resources = Resources()
    environment: Environment
    lineage: Lineage = Lineage()
    description: str = ""
    labels: dict[str, str] = {}
    files: tuple[FileEntry, ...] = ()

    @model_validator(mode="after")
    def _coherent(self) -> Manifest:
        if self.format in (ModelFormat.JOBLIB, ModelFormat.PICKLE) and not self.trusted_pickle:
            raise PydanticCustomError(
                "unsafe_format",
                "format '{fmt}' can run code on load; it needs trusted_pickle: true",
                {"fmt": self.format.value},
            )
        if self.runtime is Runtime.PYTHON and not self.entrypoint:
            raise PydanticCustomError(
                "entrypoint", "the python runtime needs entrypoint: 'module:Class'", {}
            )
        paths = [f.path for f in self.files]
        if len(paths) != len(set(paths)):
            raise PydanticCustomError("files", "a file is listed twice", {})
        if self.files and self.model_file not in paths:
            raise PydanticCustomError(
                "model_file", "'{path}' is not among the package files", {"path": self.model_file}
            )
        return self
