"""The software a model is packaged with: Python's version and its runtime's distributions."""

from __future__ import annotations

import importlib.metadata
import platform
from collections.abc import Iterable

from modelplane.spec.manifest import Environment

__all__ = ["ALWAYS_RECORDED", "capture_environment", "distribution_version"]

ALWAYS_RECORDED = ("numpy",)
"""Every runtime passes arrays through numpy, so its version always matters."""


def capture_environment(packages: Iterable[str] = ()) -> Environment:
    """This interpreter's version and the installed versions of ``packages`` plus numpy.

    A name that is not installed is left out rather than failing the build: the model was
    just saved by that runtime, so what is missing is only metadata, not the software.
    """
    versions: dict[str, str] = {}
    for name in sorted({*packages, *ALWAYS_RECORDED}):
        found = distribution_version(name)
        if found is not None:
            versions[found[0]] = found[1]
    return Environment(python=platform.python_version(), packages=versions)


def distribution_version(name: str) -> tuple[str, str] | None:
    """``(distribution, version)`` for a distribution or import name, or None.

    Import names differ from distribution names (``sklearn`` is ``scikit-learn``, and
    ``xgboost`` may come from ``xgboost-cpu``), so an import name is mapped to the
    distribution that provides it and recorded under that distribution's name.
    """
    try:
        return name, importlib.metadata.version(name)
    except importlib.metadata.PackageNotFoundError:
        pass
    providers = importlib.metadata.packages_distributions().get(name, [])
    for dist in sorted(providers):
        try:
            return dist, importlib.metadata.version(dist)
        except importlib.metadata.PackageNotFoundError:
            continue
    return None
