"""Build a package from a Python object or a model file: save, describe, seal.

Both ways end the same: the model's files are in a staging folder beside ``output_dir``;
the package is loaded back through its runtime exactly as a worker would (so a package
that cannot be served fails here, not when its first replica starts) and, given a sample,
predicts once to learn its outputs; the manifest is sealed; the folder is renamed into
place, so ``output_dir`` never holds half a package.

The digest depends only on the model's bytes and its description, never on where or when
it was built: file names inside the package are fixed per format, and formats whose bytes
vary from save to save (skops) are rewritten canonically (see :mod:`.reproducible`).
"""

from __future__ import annotations

import ast
import os
import platform
import shutil
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from modelplane.errors import Conflict, InvalidSpec, ModelplaneError, UnsafeFormat
from modelplane.registry.digest import seal
from modelplane.registry.environment import capture_environment
from modelplane.registry.provenance import LineageSource, capture_lineage
from modelplane.registry.reproducible import canonicalize_skops
from modelplane.registry.signature import infer_inputs, load_signature
from modelplane.runtime.base import LoadedModel, ModelRuntime, SavedModel
from modelplane.runtime.infer import fields_for
from modelplane.runtime.registry import get_runtime, runtime_for
from modelplane.spec.fields import Signature
from modelplane.spec.io import parse
from modelplane.spec.manifest import Environment, Lineage, Manifest, ModelFormat, Resources
from modelplane.types import Digest

__all__ = [
    "FILE_FORMATS",
    "BuiltPackage",
    "PackageMeta",
    "SignatureSource",
    "package",
    "package_file",
]

SignatureSource = Signature | str | Path
"""A signature, or the path of a YAML file holding one."""

FILE_FORMATS: dict[str, tuple[ModelFormat, str]] = {
    ".onnx": (ModelFormat.ONNX, "onnx"),
    ".skops": (ModelFormat.SKOPS, "sklearn"),
    ".joblib": (ModelFormat.JOBLIB, "sklearn"),
    ".pkl": (ModelFormat.PICKLE, "sklearn"),
    ".pickle": (ModelFormat.PICKLE, "sklearn"),
    ".json": (ModelFormat.XGBOOST_JSON, "xgboost"),
    ".ubj": (ModelFormat.XGBOOST_JSON, "xgboost"),
    ".txt": (ModelFormat.LIGHTGBM_TEXT, "lightgbm"),
    ".pt": (ModelFormat.TORCHSCRIPT, "torch"),
    ".py": (ModelFormat.PYTHON, "python"),
}
"""Model file suffix: its format and the runtime that serves it by default."""

_PICKLES = (ModelFormat.JOBLIB, ModelFormat.PICKLE)
"""Formats a manifest may only hold with ``trusted_pickle: true``."""

SaveStep = Callable[[Path], SavedModel]


@dataclass(frozen=True, slots=True)
class BuiltPackage:
    """A sealed package folder, its manifest and its digest."""

    path: Path
    manifest: Manifest
    digest: Digest


@dataclass(frozen=True)
class PackageMeta:
    """What the caller says about a package besides the model itself."""

    name: str
    signature: SignatureSource | None = None
    sample_input: object = None
    lineage: LineageSource | Lineage | None = None
    description: str = ""
    labels: Mapping[str, str] | None = None
    resources: Resources | None = None
    trust_pickle: bool = False


def package(
    model: object,
    *,
    name: str,
    output_dir: str | Path,
    sample_input: object = None,
    signature: SignatureSource | None = None,
    runtime: str | None = None,
    format: ModelFormat | str | None = None,
    trust_pickle: bool = False,
    lineage: LineageSource | Lineage | None = None,
    description: str = "",
    labels: Mapping[str, str] | None = None,
    resources: Resources | None = None,
) -> BuiltPackage:
    """Package an in-memory model into the new folder ``output_dir``.

    The runtime is ``runtime`` by name, else the first that accepts the model. The
    signature is ``signature`` (object or YAML path), else inferred from ``sample_input``
    (DataFrame, array, dict of arrays, records); outputs missing from a given signature are
    inferred from the sample too. ``lineage`` parameters default to ``model.get_params()``.
    """
    chosen = get_runtime(runtime) if runtime else runtime_for(model)
    meta = PackageMeta(
        name=name,
        signature=signature,
        sample_input=sample_input,
        lineage=lineage,
        description=description,
        labels=labels,
        resources=resources,
        trust_pickle=trust_pickle,
    )
    wanted = _format(format)
    _guard_trust(wanted, trust_pickle, "format")

    def save(staging: Path) -> SavedModel:
        return chosen.save(model, staging, format=wanted, trust_pickle=trust_pickle)

    return _build(Path(output_dir), chosen, save, meta, model=model)


def package_file(
    path: str | Path,
    *,
    name: str,
    output_dir: str | Path,
    runtime: str | None = None,
    sample_input: object = None,
    signature: SignatureSource | None = None,
    entrypoint: str | None = None,
    trust_pickle: bool = False,
    lineage: LineageSource | Lineage | None = None,
    description: str = "",
    labels: Mapping[str, str] | None = None,
    resources: Resources | None = None,
) -> BuiltPackage:
    """Package a model file (see :data:`FILE_FORMATS`) into the new folder ``output_dir``.

    The file's bytes are copied as they are (skops files are made canonical), so the digest
    covers exactly what was trained. A ``.py`` file ships one class with ``load`` and
    ``predict``: ``entrypoint`` names it, or the file must define exactly one such class.
    """
    source = Path(path)
    if not source.is_file():
        raise InvalidSpec(f"{source}: no such model file", details=[_detail("path", "missing")])
    model_format, default_runtime = _file_format(source)
    _guard_trust(model_format, trust_pickle, str(source))
    chosen = get_runtime(runtime or default_runtime)
    meta = PackageMeta(
        name=name,
        signature=signature,
        sample_input=sample_input,
        lineage=lineage,
        description=description,
        labels=labels,
        resources=resources,
        trust_pickle=trust_pickle,
    )

    def save(staging: Path) -> SavedModel:
        return _copy_model_file(source, staging, model_format, entrypoint)

    return _build(Path(output_dir), chosen, save, meta, model=None)


def _build(
    output_dir: Path,
    runtime: ModelRuntime,
    save: SaveStep,
    meta: PackageMeta,
    *,
    model: object,
) -> BuiltPackage:
    """Staging, saving, probing, sealing, then the rename into place; see the module docs."""
    _check_destination(output_dir)
    staging = output_dir.parent / f".{output_dir.name}.staging-{uuid.uuid4().hex[:12]}"
    staging.mkdir(parents=True)
    try:
        saved = save(staging)
        if saved.format is ModelFormat.SKOPS:
            canonicalize_skops(staging / saved.model_file)
        signature = _signature(staging, runtime, saved, meta)
        manifest = _manifest(runtime, saved, signature, meta, model)
        sealed, digest = seal(staging, manifest)
        _move_into_place(staging, output_dir)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return BuiltPackage(path=output_dir, manifest=sealed, digest=digest)


def _signature(
    staging: Path, runtime: ModelRuntime, saved: SavedModel, meta: PackageMeta
) -> Signature:
    """The given or inferred signature, after loading the model (and predicting if sampled)."""
    given = _given_signature(meta.signature)
    if meta.sample_input is None:
        if given is None:
            raise InvalidSpec(
                "give a signature or a sample_input to infer one from",
                details=[_detail("signature", "neither signature nor sample_input given")],
            )
        _load(staging, runtime, _provisional(runtime, saved, given, meta))
        return given
    inferred = infer_inputs(meta.sample_input)
    inputs = given.inputs if given is not None else inferred.fields
    loaded = _load(staging, runtime, _provisional(runtime, saved, Signature(inputs=inputs), meta))
    if given is not None and given.outputs:
        return given
    try:
        outputs = fields_for(loaded.predict(inferred.arrays))
    except ModelplaneError:
        raise
    except Exception as exc:
        raise InvalidSpec(
            f"sample_input: the model failed to predict on the sample: {_first_line(exc)}",
            details=[_detail("sample_input", _first_line(exc))],
        ) from exc
    return Signature(inputs=inputs, outputs=outputs)


def _load(staging: Path, runtime: ModelRuntime, manifest: Manifest) -> LoadedModel:
    """Load as a worker would; a library's own error becomes one naming the model file."""
    try:
        return runtime.load(staging, manifest)
    except ModelplaneError:
        raise
    except Exception as exc:
        problem = f"the {runtime.name} runtime cannot load it: {_first_line(exc)}"
        raise InvalidSpec(
            f"{manifest.model_file}: {problem}", details=[_detail("model_file", problem)]
        ) from exc


def _first_line(exc: BaseException) -> str:
    """Native libraries append stack traces to their messages; the first line says it all."""
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


def _given_signature(source: SignatureSource | None) -> Signature | None:
    if source is None or isinstance(source, Signature):
        return source
    return load_signature(source)


def _provisional(
    runtime: ModelRuntime, saved: SavedModel, signature: Signature, meta: PackageMeta
) -> Manifest:
    """Enough of a manifest to load the model before its description is complete."""
    data = _manifest_data(runtime, saved, signature, meta)
    data["environment"] = Environment(python=platform.python_version())
    return parse(Manifest, data, what="package manifest")


def _manifest(
    runtime: ModelRuntime,
    saved: SavedModel,
    signature: Signature,
    meta: PackageMeta,
    model: object,
) -> Manifest:
    data = _manifest_data(runtime, saved, signature, meta)
    data["environment"] = capture_environment(runtime.packages)
    data["lineage"] = capture_lineage(meta.lineage, model)
    data["description"] = meta.description
    data["labels"] = dict(meta.labels or {})
    if meta.resources is not None:
        data["resources"] = meta.resources
    return parse(Manifest, data, what="package manifest")


def _manifest_data(
    runtime: ModelRuntime, saved: SavedModel, signature: Signature, meta: PackageMeta
) -> dict[str, Any]:
    return {
        "name": meta.name,
        "runtime": runtime.name,
        "format": saved.format,
        "model_file": saved.model_file,
        "entrypoint": saved.entrypoint,
        "trusted_pickle": meta.trust_pickle and saved.format in _PICKLES,
        "signature": signature,
    }


def _move_into_place(staging: Path, output_dir: Path) -> None:
    _check_destination(output_dir)
    try:
        os.replace(staging, output_dir)
    except OSError as exc:
        # something else wrote into output_dir after we checked it
        raise Conflict(
            f"{output_dir}: could not move the package into place: {exc.strerror}",
            details=[_detail("output_dir", str(exc.strerror))],
        ) from exc


def _check_destination(output_dir: Path) -> None:
    if output_dir.exists() and (not output_dir.is_dir() or any(output_dir.iterdir())):
        raise Conflict(
            f"{output_dir}: already exists and is not an empty folder; choose a new output_dir",
            details=[_detail("output_dir", "exists")],
        )


def _format(value: ModelFormat | str | None) -> ModelFormat | None:
    if value is None or isinstance(value, ModelFormat):
        return value
    try:
        return ModelFormat(value)
    except ValueError:
        known = ", ".join(f.value for f in ModelFormat)
        raise InvalidSpec(
            f"format '{value}' is not one of: {known}", details=[_detail("format", "unknown")]
        ) from None


def _guard_trust(model_format: ModelFormat | None, trusted: bool, where: str) -> None:
    if model_format in _PICKLES and not trusted:
        raise UnsafeFormat(
            f"{where}: format '{model_format}' runs code when loaded; pass trust_pickle=True"
            " (--trust-pickle) only for a model you trust, or use skops or onnx",
            details=[_detail(where, "pickle-family format not trusted")],
        )


def _file_format(source: Path) -> tuple[ModelFormat, str]:
    suffix = source.suffix.lower()
    if suffix not in FILE_FORMATS:
        raise InvalidSpec(
            f"{source.name}: unknown model file type '{suffix}'; expected one of "
            + ", ".join(FILE_FORMATS),
            details=[_detail("path", f"unknown suffix '{suffix}'")],
        )
    return FILE_FORMATS[suffix]


def _copy_model_file(
    source: Path, staging: Path, model_format: ModelFormat, entrypoint: str | None
) -> SavedModel:
    """Copy under a fixed name (``model`` + suffix) so the digest ignores the file's name."""
    target = f"model{source.suffix.lower()}"
    shutil.copyfile(source, staging / target)
    if model_format is not ModelFormat.PYTHON:
        return SavedModel(model_file=target, format=model_format)
    class_name = entrypoint.rpartition(":")[2] if entrypoint else _model_class(source)
    return SavedModel(model_file=target, format=model_format, entrypoint=f"model:{class_name}")


def _model_class(source: Path) -> str:
    """The one top-level class in ``source`` that defines both ``load`` and ``predict``."""
    try:
        tree = ast.parse(source.read_bytes(), filename=str(source))
    except SyntaxError as exc:
        raise InvalidSpec(f"{source.name}: not valid Python: {exc}") from None
    found = [
        node.name
        for node in tree.body
        if isinstance(node, ast.ClassDef)
        and {"load", "predict"}
        <= {n.name for n in node.body if isinstance(n, ast.FunctionDef | ast.AsyncFunctionDef)}
    ]
    if len(found) != 1:
        problem = "defines no class" if not found else f"defines {len(found)} classes"
        raise InvalidSpec(
            f"{source.name}: {problem} with load() and predict(); pass entrypoint='model:Class'",
            details=[_detail("entrypoint", problem)],
        )
    return found[0]


def _detail(field: str, problem: str) -> dict[str, str]:
    return {"field": field, "problem": problem}
