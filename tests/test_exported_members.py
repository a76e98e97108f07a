"""The public API is pinned: a change here is a change users feel."""

from __future__ import annotations

import subprocess
import sys

import pytest

import modelplane


def test_public_names_resolve() -> None:
    for name in modelplane.__all__:
        assert getattr(modelplane, name) is not None, name
    assert set(modelplane.__all__) == {
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
    }


def test_unknown_name_is_an_attribute_error() -> None:
    with pytest.raises(AttributeError, match="nothing_here"):
        modelplane.nothing_here  # noqa: B018


def test_import_is_light() -> None:
    """``import modelplane`` must not pull in the store, the runtimes or numpy."""
    code = (
        "import sys, modelplane; "
        "heavy = [m for m in ('sqlalchemy', 'numpy', 'onnxruntime', 'sklearn') "
        "if m in sys.modules]; "
        "print(','.join(heavy))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == ""
