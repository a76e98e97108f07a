from __future__ import annotations

import json
from pathlib import Path

from typer.testing import CliRunner

from modelplane.cli.main import app

EXAMPLES = Path(__file__).resolve().parents[2] / "examples" / "policies"


def test_sim_run_compares_two_policies(tmp_path: Path) -> None:
    out = tmp_path / "out"
    result = CliRunner().invoke(
        app,
        [
            "sim",
            "run",
            "--trace",
            "synthetic",
            "--policy",
            str(EXAMPLES / "binpack.yaml"),
            "--vs",
            str(EXAMPLES / "fgd.yaml"),
            "--seeds",
            "1",
            "--out",
            str(out),
            "--no-plots",
        ],
    )
    assert result.exit_code == 0, result.output
    assert "binpack" in result.output
    assert "fgd" in result.output
    assert (out / "summary.json").is_file()
    json.loads((out / "summary.json").read_text())


def test_sim_run_bad_policy_is_one_clear_line(tmp_path: Path) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text("placement: {strategy: sideways}\n")
    result = CliRunner().invoke(
        app,
        [
            "sim",
            "run",
            "--trace",
            "synthetic",
            "--policy",
            str(bad),
            "--seeds",
            "1",
        ],
    )
    assert result.exit_code == 2
    assert "placement.strategy" in result.output
