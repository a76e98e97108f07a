from __future__ import annotations

import importlib.metadata
import platform

from modelplane.registry.environment import capture_environment, distribution_version


def test_python_and_numpy_are_always_recorded() -> None:
    environment = capture_environment()
    assert environment.python == platform.python_version()
    assert environment.packages == {"numpy": importlib.metadata.version("numpy")}


def test_import_names_are_recorded_under_their_distribution() -> None:
    environment = capture_environment(["sklearn", "skops"])
    assert environment.packages["scikit-learn"] == importlib.metadata.version("scikit-learn")
    assert "skops" in environment.packages
    assert "sklearn" not in environment.packages


def test_packages_that_are_not_installed_are_left_out() -> None:
    assert distribution_version("surely-not-installed-anywhere") is None
    environment = capture_environment(["surely-not-installed-anywhere"])
    assert set(environment.packages) == {"numpy"}
