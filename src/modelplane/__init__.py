"""modelplane: host machine-learning models for many teams as one system.

The names below are the public Python API. Heavy ones load on first use, so
``import modelplane`` stays cheap for command-line tools.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from modelplane.errors import ModelplaneError

__version__ = "0.1.0"

__all__ = [
    "Contract",
    "LineageSource",
    "Manifest",
    "ModelplaneError",
    "Registry",
    "Signature",
    "__version__",
    "load_yaml",
    "open_registry",
    "package",
    "package_file",
    "verify_package",
]

_LAZY: dict[str, str] = {
    "Contract": "modelplane.spec.contract",
    "LineageSource": "modelplane.registry.provenance",
    "Manifest": "modelplane.spec.manifest",
    "Registry": "modelplane.registry.service",
    "Signature": "modelplane.spec.fields",
    "load_yaml": "modelplane.spec.io",
    "open_registry": "modelplane.registry.service",
    "package": "modelplane.registry.build",
    "package_file": "modelplane.registry.build",
    "verify_package": "modelplane.registry.digest",
}

if TYPE_CHECKING:
    from modelplane.registry.build import package, package_file
    from modelplane.registry.digest import verify_package
    from modelplane.registry.provenance import LineageSource
    from modelplane.registry.service import Registry, open_registry
    from modelplane.spec.contract import Contract
    from modelplane.spec.fields import Signature
    from modelplane.spec.io import load_yaml
    from modelplane.spec.manifest import Manifest


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'modelplane' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(__all__)
