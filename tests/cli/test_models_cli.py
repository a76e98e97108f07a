"""The CLI driven as a user would: real files, a real SQLite store, one-line errors."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import skops.io as sio
from sklearn.linear_model import LogisticRegression
from typer.testing import CliRunner

from modelplane.cli.main import app

pd = pytest.importorskip("pandas")


@pytest.fixture
def workdir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    rng = np.random.default_rng(7)
    frame = pd.DataFrame(rng.normal(size=(80, 3)), columns=["amount", "age", "score"])
    target = (frame["amount"] + frame["age"] > 0).astype(int)
    sio.dump(LogisticRegression().fit(frame, target), tmp_path / "model.skops")
    frame.head(4).to_csv(tmp_path / "sample.csv", index=False)
    frame.to_csv(tmp_path / "train.csv", index=False)
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("MODELPLANE_HOME", str(tmp_path / "home"))
    monkeypatch.setenv("MODELPLANE_ACTOR", "alice")
    return tmp_path


def run(*args: str, code: int = 0) -> str:
    result = CliRunner().invoke(app, list(args))
    assert result.exit_code == code, result.output
    return result.output


def package(name: str = "fraud", *extra: str) -> None:
    run("package", "model.skops", "-n", name, "--sample", "sample.csv", *extra)


def test_package_push_alias_inspect(workdir: Path) -> None:
    package(
        "fraud",
        "--training-data",
        "train.csv",
        "--feature",
        "customer:3:amount,age",
        "--metric",
        "auc=0.9",
        "--tar",
        "fraud.tar",
    )
    pushed = json.loads(run("push", "fraud.mpkg", "--alias", "champion", "--json"))
    assert pushed["ref"] == "fraud:1"
    assert pushed["aliases"] == ["champion"]
    # the .tar holds the same bytes, so the same digest and the same version
    again = json.loads(run("push", "fraud.tar", "--json"))
    assert again["version"] == 1
    assert again["digest"] == pushed["digest"]

    shown = json.loads(run("inspect", "fraud@champion", "--json"))
    assert shown["manifest"]["lineage"]["metrics"] == {"auc": 0.9}
    assert [f["name"] for f in shown["manifest"]["signature"]["inputs"]] == [
        "amount",
        "age",
        "score",
    ]
    assert json.loads(run("lineage", "--feature-set", "customer:3", "--json"))[0]["ref"] == (
        "fraud:1"
    )
    assert "fraud:1" in run("verify", "fraud:1")
    events = json.loads(run("audit", "log", "--json"))
    assert [e["action"] for e in events] == ["alias.set", "model.push"]
    assert {e["actor"] for e in events} == {"alice"}
    run("audit", "verify")


def test_versions_and_alias_moves(workdir: Path) -> None:
    package("fraud")
    run("push", "fraud.mpkg")
    run(
        "package",
        "model.skops",
        "-n",
        "fraud",
        "-o",
        "v2",
        "--sample",
        "sample.csv",
        "--label",
        "stage=two",
    )
    run("push", "v2")
    listed = json.loads(run("versions", "fraud", "--json"))
    assert [v["version"] for v in listed] == [1, 2]
    run("alias", "set", "fraud@champion", "1")
    run("alias", "set", "fraud@champion", "2", "--expect", "1", "--reason", "better")
    # a stale expectation is a conflict and changes nothing
    out = run("alias", "set", "fraud@champion", "1", "--expect", "1", code=7)
    assert "error" in out
    history = json.loads(run("alias", "history", "fraud@champion", "--json"))
    assert [(h["from_version"], h["to_version"]) for h in history][-1] == (1, 2)
    assert json.loads(run("inspect", "fraud@champion", "--json"))["version"]["version"] == 2
    models = json.loads(run("models", "--json"))
    assert models[0]["aliases"] == {"champion": 2}


def test_verify_names_the_changed_file(workdir: Path) -> None:
    package("fraud")
    with (workdir / "fraud.mpkg" / "model.skops").open("ab") as handle:
        handle.write(b"x")
    (workdir / "fraud.mpkg" / "extra.bin").write_bytes(b"new")
    out = run("verify", "fraud.mpkg", code=4)
    assert "model.skops" in out
    assert "extra.bin" in out
    assert "Traceback" not in out
    # a package that fails verification is never registered
    run("push", "fraud.mpkg", code=4)
    assert json.loads(run("models", "--json")) == []


@pytest.mark.parametrize(
    ("args", "code", "needle"),
    [
        (("package", "missing.onnx", "-n", "m"), 2, "no such model file"),
        (("package", "model.skops", "-n", "Bad Name", "--sample", "sample.csv"), 2, "name"),
        (("inspect", "nope:1"), 6, "not found"),
        (("inspect", "fraud:x"), 2, "version"),
        (("alias", "set", "fraud", "1"), 2, "name@alias"),
        (("package", "model.skops", "-n", "m", "--runtime", "tensorflow"), 6, "tensorflow"),
    ],
)
def test_bad_input_is_one_clear_line(
    workdir: Path, args: tuple[str, ...], code: int, needle: str
) -> None:
    out = run(*args, code=code)
    assert needle in out
    assert "Traceback" not in out


def test_pickle_needs_trust(workdir: Path) -> None:
    import joblib

    joblib.dump(
        sio.load(
            workdir / "model.skops", trusted=sio.get_untrusted_types(file=workdir / "model.skops")
        ),
        workdir / "model.joblib",
    )
    out = run("package", "model.joblib", "-n", "risky", "--sample", "sample.csv", code=5)
    assert "--trust-pickle" in out
    assert not (workdir / "risky.mpkg").exists()
    run("package", "model.joblib", "-n", "risky", "--sample", "sample.csv", "--trust-pickle")
    manifest = json.loads(run("inspect", "risky.mpkg", "--json"))["manifest"]
    assert manifest["trusted_pickle"] is True


CONTRACT = """
name: fraud-score
version: 1
inputs:
  - {name: amount, dtype: float64}
  - {name: age, dtype: float64}
  - {name: score, dtype: float64}
outputs:
  - {name: label, dtype: int64}
"""


def test_contract_check(workdir: Path) -> None:
    package("fraud")
    run("push", "fraud.mpkg")
    (workdir / "contract.yaml").write_text(CONTRACT)
    assert "compatible" in run("contract", "check", "contract.yaml", "fraud:1")
    broken = CONTRACT.replace("{name: label, dtype: int64}", "{name: churn, dtype: int64}")
    (workdir / "broken.yaml").write_text(broken)
    out = run("contract", "check", "broken.yaml", "fraud:1", code=3)
    assert "churn" in out
    report = json.loads(
        CliRunner().invoke(app, ["contract", "check", "broken.yaml", "fraud:1", "--json"]).output
    )
    assert report["compatible"] is False
    assert any("churn" in f["field"] for f in report["findings"])


def test_contract_check_refuses_a_fallback_that_cannot_be_served(workdir: Path) -> None:
    package("fraud")
    run("push", "fraud.mpkg")
    unservable = CONTRACT + "fallback: {kind: static, value: {label: not-a-number}}\n"
    (workdir / "fallback.yaml").write_text(unservable)
    out = run("contract", "check", "fallback.yaml", "fraud:1", code=2)
    assert "fallback.value.label" in out
