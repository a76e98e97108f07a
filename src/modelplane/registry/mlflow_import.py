"""Import an MLflow model folder (``MLmodel`` + files) with the ``sklearn`` flavor.

The MLflow signature becomes our input fields; output fields are learned by running the
model on the saved input example through our runtime, because our outputs follow our own
naming convention (``label``, ``probabilities``, ``prediction``), not MLflow's.

A ``skops`` model is packaged as it is. A ``pickle`` or ``cloudpickle`` model runs code
when loaded, so it is only read with ``trust_pickle=True``, and then re-saved as skops so
the package is safe to load anywhere; only when skops cannot hold the estimator (a custom
class) does it stay a trusted joblib package. Labels record what happened and where the
model came from. MLflow itself is not needed: ``MLmodel`` is YAML and the files are read
directly.
"""

from __future__ import annotations

import json
import pickle
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Any

import numpy as np
import yaml

from modelplane.errors import InvalidSpec, UnsafeFormat
from modelplane.registry.build import BuiltPackage, package, package_file
from modelplane.registry.provenance import LineageSource
from modelplane.registry.signature import TENSOR_INPUT
from modelplane.spec.dtypes import DType
from modelplane.spec.fields import FieldSpec, Signature
from modelplane.spec.manifest import Lineage

__all__ = [
    "COLSPEC_DTYPES",
    "MLMODEL_FILE",
    "MlflowModel",
    "import_mlflow",
    "mlflow_fields",
    "read_mlmodel",
]

MLMODEL_FILE = "MLmodel"

COLSPEC_DTYPES: dict[str, DType] = {
    "double": DType.FLOAT64,
    "float": DType.FLOAT32,
    "long": DType.INT64,
    "integer": DType.INT32,
    "boolean": DType.BOOL,
    "string": DType.STRING,
    "binary": DType.STRING,
}
"""MLflow column types with an exact counterpart; others (datetime, array, map) are refused."""

_PICKLED = ("pickle", "cloudpickle")


@dataclass(frozen=True)
class MlflowModel:
    """What we read from an ``MLmodel`` file with an sklearn flavor."""

    directory: Path
    model_path: Path
    serialization: str
    inputs: tuple[FieldSpec, ...] | None
    example: object
    labels: dict[str, str]


def import_mlflow(
    mlflow_dir: str | Path,
    *,
    name: str,
    output_dir: str | Path,
    trust_pickle: bool = False,
    lineage: LineageSource | Lineage | None = None,
    description: str | None = None,
) -> BuiltPackage:
    """Package the MLflow model in ``mlflow_dir`` into the new folder ``output_dir``."""
    found = read_mlmodel(Path(mlflow_dir))
    if found.inputs is None and found.example is None:
        raise InvalidSpec(
            f"{found.directory / MLMODEL_FILE}: no signature and no input example;"
            " save the MLflow model with one of them",
            details=[{"field": "signature", "problem": "missing"}],
        )
    signature = Signature(inputs=found.inputs) if found.inputs else None
    text = description if description is not None else _description(found)
    if found.serialization == "skops":
        return package_file(
            found.model_path,
            name=name,
            runtime="sklearn",
            signature=signature,
            sample_input=found.example,
            lineage=lineage,
            description=text,
            labels=found.labels,
            output_dir=output_dir,
        )
    estimator = _unpickle(found, trust_pickle)
    common: dict[str, Any] = {
        "name": name,
        "runtime": "sklearn",
        "signature": signature,
        "sample_input": found.example,
        "lineage": lineage,
        "description": text,
        "output_dir": output_dir,
    }
    try:
        labels = {**found.labels, "mlflow.converted_to": "skops"}
        return package(estimator, labels=labels, **common)
    except UnsafeFormat:
        # skops refused a type it cannot load safely; the caller already trusts this pickle
        labels = {**found.labels, "mlflow.converted_to": "joblib"}
        return package(estimator, format="joblib", trust_pickle=True, labels=labels, **common)


def read_mlmodel(directory: Path) -> MlflowModel:
    """Read ``MLmodel``: the sklearn flavor's file, the signature, the example, provenance."""
    where = directory / MLMODEL_FILE
    spec = _read_yaml(where)
    flavor = (spec.get("flavors") or {}).get("sklearn")
    if not isinstance(flavor, dict):
        found = ", ".join(sorted(spec.get("flavors") or {})) or "none"
        raise InvalidSpec(
            f"{where}: no sklearn flavor (found: {found}); only sklearn models can be imported",
            details=[{"field": "flavors.sklearn", "problem": "missing"}],
        )
    serialization = str(flavor.get("serialization_format", "cloudpickle"))
    if serialization not in (*_PICKLED, "skops"):
        raise InvalidSpec(
            f"{where}: unknown sklearn serialization_format '{serialization}'",
            details=[{"field": "flavors.sklearn.serialization_format", "problem": serialization}],
        )
    signature = spec.get("signature") or {}
    inputs = mlflow_fields(signature["inputs"]) if signature.get("inputs") else None
    return MlflowModel(
        directory=directory,
        model_path=_inside(directory, str(flavor.get("pickled_model", "")), "pickled_model"),
        serialization=serialization,
        inputs=inputs,
        example=_example(directory, spec.get("saved_input_example_info"), inputs),
        labels=_labels(spec, serialization),
    )


def mlflow_fields(schema: str | list[Any]) -> tuple[FieldSpec, ...]:
    """Fields from an MLflow schema (the JSON string ``MLmodel`` holds, or its parsed list)."""
    specs = json.loads(schema) if isinstance(schema, str) else schema
    if not isinstance(specs, list) or not specs:
        raise InvalidSpec(
            "MLmodel signature.inputs: expected a non-empty JSON list",
            details=[{"field": "signature.inputs", "problem": "not a list"}],
        )
    unnamed = sum(1 for spec in specs if not spec.get("name"))
    return tuple(_field(spec, index, unnamed) for index, spec in enumerate(specs))


def _field(spec: dict[str, Any], index: int, unnamed: int) -> FieldSpec:
    where = f"signature.inputs[{index}]"
    default_name = TENSOR_INPUT if unnamed == 1 else f"{TENSOR_INPUT}_{index}"
    name = str(spec.get("name") or default_name)
    required = bool(spec.get("required", True))
    if spec.get("type") == "tensor":
        tensor = spec.get("tensor-spec") or {}
        dtype = _tensor_dtype(str(tensor.get("dtype")), where)
        shape = tuple(-1 if int(d) < 1 else int(d) for d in tensor.get("shape") or [-1])
        return FieldSpec(name=name, dtype=dtype, shape=shape, required=required)
    kind = str(spec.get("type"))
    if kind not in COLSPEC_DTYPES:
        raise InvalidSpec(
            f"MLmodel {where} ('{name}'): MLflow type '{kind}' has no modelplane dtype;"
            f" supported: {', '.join(COLSPEC_DTYPES)}",
            details=[{"field": where, "problem": f"unsupported type '{kind}'"}],
        )
    return FieldSpec(name=name, dtype=COLSPEC_DTYPES[kind], required=required)


def _tensor_dtype(name: str, where: str) -> DType:
    if name in ("object", "str", "bytes"):
        return DType.STRING
    try:
        return DType(np.dtype(name).name)
    except (TypeError, ValueError):
        raise InvalidSpec(
            f"MLmodel {where}: tensor dtype '{name}' has no modelplane dtype",
            details=[{"field": where, "problem": f"unsupported dtype '{name}'"}],
        ) from None


def _example(directory: Path, info: Any, inputs: tuple[FieldSpec, ...] | None) -> object:
    """The saved input example as a sample we can infer from: records, arrays or a dict."""
    if not isinstance(info, dict):
        return None
    path = _inside(directory, str(info.get("artifact_path", "input_example.json")), "example")
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise InvalidSpec(f"{path}: unreadable input example: {exc}") from None
    if info.get("type") == "dataframe":
        if isinstance(data, dict) and "columns" in data:  # orient "split"
            return [dict(zip(data["columns"], row, strict=True)) for row in data["data"]]
        return data  # orient "records"
    if isinstance(data, dict) and "inputs" in data:
        data = data["inputs"]
    if isinstance(data, dict):
        return {str(key): np.asarray(value) for key, value in data.items()}
    name = inputs[0].name if inputs and len(inputs) == 1 else TENSOR_INPUT
    return {name: np.asarray(data)}


def _labels(spec: dict[str, Any], serialization: str) -> dict[str, str]:
    labels = {"mlflow.serialization_format": serialization}
    for key in ("run_id", "model_uuid", "mlflow_version", "model_id"):
        value = spec.get(key)
        if value:
            labels[f"mlflow.{key}"] = str(value)
    return labels


def _description(found: MlflowModel) -> str:
    uuid = found.labels.get("mlflow.model_uuid")
    return f"imported from MLflow model {uuid}" if uuid else "imported from an MLflow model"


def _unpickle(found: MlflowModel, trusted: bool) -> object:
    if not trusted:
        raise UnsafeFormat(
            f"{found.model_path}: MLflow saved this model with {found.serialization}, which runs"
            " code when loaded; pass trust_pickle=True (--trust-pickle) only for a model you"
            " trust (it is then re-saved as skops)",
            details=[{"field": "trust_pickle", "problem": f"{found.serialization} not trusted"}],
        )
    # cloudpickle writes ordinary pickles (naming its own helpers), so pickle reads both
    with found.model_path.open("rb") as handle:
        return pickle.load(handle)  # the caller marked this model trusted


def _inside(directory: Path, rel: str, what: str) -> Path:
    """``directory / rel``, refusing names that leave the MLflow folder."""
    parts = PurePosixPath(rel.replace("\\", "/"))
    if not rel or parts.is_absolute() or ".." in parts.parts:
        raise InvalidSpec(
            f"{directory / MLMODEL_FILE}: {what} path '{rel}' must be a file inside the folder",
            details=[{"field": what, "problem": f"bad path '{rel}'"}],
        )
    path = directory / parts
    if not path.is_file():
        raise InvalidSpec(
            f"{path}: missing ({what} named in {MLMODEL_FILE})",
            details=[{"field": what, "problem": "missing file"}],
        )
    return path


def _read_yaml(path: Path) -> dict[str, Any]:
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise InvalidSpec(f"{path}: no such file; is this an MLflow model folder?") from None
    except (OSError, UnicodeDecodeError, yaml.YAMLError) as exc:
        raise InvalidSpec(f"{path}: unreadable: {exc}") from None
    if not isinstance(data, dict):
        raise InvalidSpec(f"{path}: expected a YAML mapping")
    return data
