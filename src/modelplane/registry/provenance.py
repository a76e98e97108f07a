"""Lineage captured at build time: data hashes, code revisions, JSON-safe parameters.

What goes into a manifest is part of the package digest, so everything here is
deterministic: the same data, code and model always give the same lineage. Values that
cannot be written faithfully as JSON (objects, functions) are recorded by their type's
name, never by ``repr``, which often holds a memory address.
"""

from __future__ import annotations

import hashlib
import math
import subprocess
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlparse

from modelplane.errors import InvalidSpec
from modelplane.registry.digest import hash_file
from modelplane.spec.manifest import DatasetRef, FeatureRef, Lineage

__all__ = [
    "GIT_TIMEOUT_S",
    "LineageSource",
    "capture_lineage",
    "code_revision",
    "dataset_ref",
    "json_safe",
    "model_parameters",
    "tree_sha256",
]

GIT_TIMEOUT_S = 10.0


@dataclass(frozen=True)
class LineageSource:
    """What a caller knows about where a model came from; :func:`capture_lineage` resolves it.

    ``training_data``: URIs or local paths (a local file or folder gets its sha256 computed).
    ``code``: a folder (a git work tree: its ``HEAD`` commit) or a revision string.
    ``parameters``: None means "ask the model" (``get_params()`` when it has one).
    """

    training_data: Sequence[str | Path | DatasetRef] = ()
    code: str | Path | None = None
    parameters: Mapping[str, Any] | None = None
    metrics: Mapping[str, float] = field(default_factory=dict)
    features: Sequence[FeatureRef] = ()


def capture_lineage(source: LineageSource | Lineage | None, model: object = None) -> Lineage:
    """A :class:`Lineage` for the manifest; parameters default to the model's own."""
    if isinstance(source, Lineage):
        if not source.parameters and model is None:
            return source
        parameters = json_safe(source.parameters) if source.parameters else model_parameters(model)
        return source.model_copy(update={"parameters": parameters})
    source = source or LineageSource()
    parameters = source.parameters if source.parameters is not None else model_parameters(model)
    return Lineage(
        training_data=tuple(dataset_ref(item) for item in source.training_data),
        code_revision=None if source.code is None else code_revision(source.code),
        parameters=json_safe(dict(parameters)),
        metrics=_metrics(source.metrics),
        features=tuple(source.features),
    )


def dataset_ref(item: str | Path | DatasetRef) -> DatasetRef:
    """A dataset reference; a local file or folder (path or ``file://``) gets its sha256."""
    if isinstance(item, DatasetRef):
        return item
    uri = str(item)
    local = _local_path(item)
    if local is None or not local.exists():
        return DatasetRef(uri=uri)
    sha = hash_file(local)[0] if local.is_file() else tree_sha256(local)
    return DatasetRef(uri=uri, sha256=sha)


def _local_path(item: str | Path) -> Path | None:
    if isinstance(item, Path):
        return item
    parsed = urlparse(item)
    if parsed.scheme == "file":
        return Path(unquote(parsed.path))
    # one-letter schemes are Windows drive letters, not URLs
    if len(parsed.scheme) <= 1:
        return Path(item)
    return None


def tree_sha256(directory: Path) -> str:
    """sha256 over a folder's files: each one's relative POSIX path and sha256, sorted."""
    lines = []
    for path in sorted(p for p in directory.rglob("*") if p.is_file()):
        rel = path.relative_to(directory).as_posix()
        lines.append(f"{hash_file(path)[0]}  {rel}\n")
    return hashlib.sha256("".join(lines).encode()).hexdigest()


def code_revision(code: str | Path) -> str:
    """``HEAD`` of a git work tree (``+dirty`` when it has uncommitted changes), or ``code``."""
    folder = Path(code)
    if not folder.is_dir():
        if isinstance(code, Path):
            raise InvalidSpec(
                f"lineage.code_revision: {code} is not a folder",
                details=[{"field": "lineage.code_revision", "problem": "no such folder"}],
            )
        return code
    head = _git(folder, "rev-parse", "HEAD")
    # a revision of code that has since been edited would name the wrong code
    dirty = _git(folder, "status", "--porcelain", "--untracked-files=no")
    return f"{head}+dirty" if dirty else head


def _git(folder: Path, *args: str) -> str:
    try:
        done = subprocess.run(
            ["git", "-C", str(folder), *args],
            capture_output=True,
            text=True,
            timeout=GIT_TIMEOUT_S,
            check=False,
        )
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise InvalidSpec(
            f"lineage.code_revision: cannot run git in {folder}: {exc}",
            details=[{"field": "lineage.code_revision", "problem": str(exc)}],
        ) from exc
    if done.returncode != 0:
        raise InvalidSpec(
            f"lineage.code_revision: {folder} is not a git work tree with a commit; "
            "pass the revision as a string instead",
            details=[{"field": "lineage.code_revision", "problem": done.stderr.strip()}],
        )
    return done.stdout.strip()


def model_parameters(model: object) -> dict[str, Any]:
    """``model.get_params()`` (scikit-learn and its wrappers) made JSON-safe, else empty."""
    get_params = getattr(model, "get_params", None)
    if not callable(get_params):
        return {}
    params = get_params()
    return json_safe(dict(params)) if isinstance(params, Mapping) else {}


def json_safe(value: Any) -> Any:
    """Plain JSON values: numpy scalars unwrapped, non-finite floats and objects as strings."""
    if value is None or isinstance(value, bool | int | str):
        return value
    if isinstance(value, float):
        return value if math.isfinite(value) else str(value)
    if isinstance(value, Mapping):
        return {str(k): json_safe(v) for k, v in sorted(value.items(), key=lambda kv: str(kv[0]))}
    if isinstance(value, list | tuple):
        return [json_safe(v) for v in value]
    tolist = getattr(value, "tolist", None)
    if callable(tolist) and type(value).__module__ == "numpy":
        return json_safe(tolist())
    kind = value if isinstance(value, type) else type(value)
    name = getattr(value, "__qualname__", None) if callable(value) else None
    if name is not None and not isinstance(value, type):
        return f"{getattr(value, '__module__', '')}.{name}"
    return f"{kind.__module__}.{kind.__qualname__}"


def _metrics(metrics: Mapping[str, float]) -> dict[str, float]:
    out = {}
    for key, value in metrics.items():
        try:
            out[str(key)] = float(value)
        except (TypeError, ValueError):
            raise InvalidSpec(
                f"lineage.metrics.{key}: {value!r} is not a number",
                details=[{"field": f"lineage.metrics.{key}", "problem": "not a number"}],
            ) from None
    return out
