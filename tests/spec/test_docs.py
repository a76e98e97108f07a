"""docs/resources.md is generated from the specs; these tests keep it from drifting."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from modelplane.spec import docs

ROOT = Path(__file__).resolve().parents[2]
PAGE = ROOT / "docs" / "resources.md"


def test_the_page_is_current() -> None:
    assert PAGE.read_text(encoding="utf-8") == docs.render(), (
        "docs/resources.md is stale: run "
        "`.venv/bin/python -m modelplane.spec.docs > docs/resources.md`"
    )


def test_every_field_of_every_kind_has_a_meaning() -> None:
    assert docs.undocumented() == [], "add a docstring under the field, or a line to MEANINGS"


def test_every_kind_and_every_field_is_on_the_page() -> None:
    page = docs.render()
    for kind in docs.KINDS:
        assert f"## {kind.title}\n" in page
        for name in kind.model.model_fields:
            assert f"| `{name}` |" in page


def test_every_example_named_exists() -> None:
    for kind in docs.KINDS:
        if kind.example.startswith("examples/"):
            assert (ROOT / kind.example).is_file(), kind.example


def test_the_module_prints_the_page() -> None:
    done = subprocess.run(
        [sys.executable, "-m", "modelplane.spec.docs"],
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    )
    assert done.stdout == PAGE.read_text(encoding="utf-8")
