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


def test_sim_mixed_compares_policies_on_jobs_and_serving(tmp_path: Path) -> None:
    out = tmp_path / "out"
    result = CliRunner().invoke(
        app,
        [
            "sim",
            "mixed",
            "--policy",
            str(EXAMPLES / "binpack.yaml"),
            "--vs",
            str(EXAMPLES / "fgd.yaml"),
            "--seeds",
            "1",
            "--hours",
            "3",
            "--trace-pods",
            "0",
            "--out",
            str(out),
        ],
    )
    assert result.exit_code == 0, result.output
    assert "cost per finished job" in result.output
    assert "serving floor violations" in result.output
    summary = json.loads((out / "mixed.json").read_text())
    assert set(summary["policies"]) == {"binpack", "fgd"}
    assert all(p["serving_floor_violations"] == 0 for p in summary["policies"].values())


def test_sim_run_bad_trace_folder_is_one_clear_line(tmp_path: Path) -> None:
    (tmp_path / "openb_pod_list_default.csv").write_text(
        "name,cpu_milli,memory_mib,num_gpu,gpu_milli\n"
    )
    (tmp_path / "openb_node_list_gpu_node.csv").write_text(
        "sn,cpu_milli,memory_mib,gpu,model\nn0,64000,262144,8,G2\n"
    )
    result = CliRunner().invoke(
        app,
        ["sim", "run", "--trace", str(tmp_path), "--policy", str(EXAMPLES / "fgd.yaml")],
    )
    assert result.exit_code != 0
    assert "the pod list has no rows" in result.output
    assert "Traceback" not in result.output
