"""What a worker process runs to get its model: verify the package, then load it.

Workers import this by path (``WorkerSpec(loader=LOADER, args=(str(directory),))``), so the
gateway never loads model code itself. The digest is checked in the worker, on the bytes it
is about to load, so a package altered after the gateway resolved it is refused.
"""

from __future__ import annotations

from pathlib import Path

from modelplane.errors import IntegrityError
from modelplane.registry.digest import verify_package
from modelplane.runtime.base import LoadedModel, RuntimeOptions
from modelplane.runtime.registry import get_runtime

__all__ = ["LOADER", "load_package"]

LOADER = "modelplane.dataplane.loader:load_package"
"""The import path a :class:`~modelplane.dataplane.pool.WorkerSpec` names."""


def load_package(
    directory: str,
    expected_digest: str | None = None,
    *,
    intra_op_threads: int = 1,
    inter_op_threads: int = 1,
    allow_python_code: bool = True,
) -> LoadedModel:
    """Verify the package at ``directory`` (against ``expected_digest`` when given) and load it.

    One compute thread per replica by default: replicas are sized one per core, and more
    threads per replica only fight each other (onnxruntime, BLAS, OpenMP).
    """
    folder = Path(directory)
    verified = verify_package(folder)
    if expected_digest is not None and verified.digest != expected_digest:
        raise IntegrityError(
            f"package {folder} has digest {verified.digest}, expected {expected_digest}",
            details=[{"field": "digest", "problem": "differs from the one resolved"}],
        )
    options = RuntimeOptions(
        intra_op_threads=intra_op_threads,
        inter_op_threads=inter_op_threads,
        allow_python_code=allow_python_code,
    )
    manifest = verified.manifest
    return get_runtime(manifest.runtime.value, options).load(folder, manifest)
