"""docs/simulator.md runs as written: its files are written, its commands run."""

from __future__ import annotations

import json
import re
import shlex
from pathlib import Path

import pytest
from typer.testing import CliRunner

from modelplane.cli.main import app

REPO = Path(__file__).resolve().parents[2]
GUIDE = REPO / "docs" / "simulator.md"
FILE = re.compile(r"<!-- file: (\S+) -->\n```\w*\n(.*?)```", re.S)
RUN = re.compile(r"<!-- run -->\n```bash\n(.*?)```", re.S)


def test_the_guides_example_runs(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    text = GUIDE.read_text(encoding="utf-8")
    files = FILE.findall(text)
    commands = [" ".join(c.replace("\\\n", " ").split()) for c in RUN.findall(text)]
    assert len(files) == 3
    assert len(commands) == 3
    for name, body in files:
        path = tmp_path / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(body, encoding="utf-8")
    (tmp_path / "examples").symlink_to(REPO / "examples")
    monkeypatch.chdir(tmp_path)
    outputs = []
    for command in commands:
        argv = shlex.split(command)
        assert argv[0] == "modelplane"
        result = CliRunner().invoke(app, argv[1:])
        assert result.exit_code == 0, f"{command}\n{result.output}"
        outputs.append(result.output)
    assert "inflation (ATC '23)" in outputs[0]
    summary = json.loads((tmp_path / "mini-out" / "summary.json").read_text())
    assert set(summary["policies"]) == {"fgd", "binpack"}
    assert "openb_pod_list_multigpu50.csv" in summary["experiment"]
    packing = json.loads((tmp_path / "packing-out" / "summary.json").read_text())
    assert set(packing["policies"]) == {"packing", "fgd"}
    mixed = json.loads((tmp_path / "mixed-out" / "mixed.json").read_text())
    assert all(p["serving_floor_violations"] == 0 for p in mixed["policies"].values())
