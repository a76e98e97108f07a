"""Every YAML file under examples/ works as shipped, through the CLI a person would use.

Each file goes to a fresh embedded store holding the models the examples name (``fraud:1``
and ``fraud:2``, built here as ``make run`` builds them): resources with ``apply``,
rollouts with ``rollout -f`` (after the endpoint they move), contracts with
``contract check``, clusters with ``nodes --cluster``.
"""

from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path

import numpy as np
import pytest
import yaml
from sklearn.linear_model import LogisticRegression
from typer.testing import CliRunner

from modelplane.cli.main import app
from modelplane.registry.build import package

pd = pytest.importorskip("pandas")

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"
FILES = sorted(EXAMPLES.rglob("*.yaml"))
COLUMNS = ["amount", "age_days", "merchant_risk", "night"]


def kind_of(path: Path) -> str:
    [kind] = {str(doc["kind"]) for doc in yaml.safe_load_all(path.read_text()) if doc}
    return kind


@pytest.fixture(scope="module")
def packages(tmp_path_factory: pytest.TempPathFactory) -> list[Path]:
    """``fraud:1`` and ``fraud:2``: logistic regressions on the examples' four columns;
    ``team-code:1``: the python job example's code."""
    work = tmp_path_factory.mktemp("packages")
    rng = np.random.default_rng(7)
    frame = pd.DataFrame(
        {
            "amount": rng.gamma(2.0, 40.0, 200),
            "age_days": rng.uniform(0, 2000, 200),
            "merchant_risk": rng.beta(2, 5, 200),
            "night": rng.integers(0, 2, 200).astype(float),
        }
    )
    target = (frame.merchant_risk + 0.2 * frame.night > 0.4).astype(int)
    built = []
    for version, c in ((1, 1.0), (2, 0.1)):
        model = LogisticRegression(C=c, max_iter=500).fit(frame[COLUMNS], target)
        out = work / f"fraud-v{version}"
        built.append(package(model, name="fraud", output_dir=out, sample_input=frame.head()).path)
    # team-code:1, the python job's code (examples/jobs/team_code.py as the package's model.py)
    spec = importlib.util.spec_from_file_location("team_code", EXAMPLES / "jobs" / "team_code.py")
    assert spec is not None
    assert spec.loader is not None
    code = importlib.util.module_from_spec(spec)
    sys.modules["team_code"] = code  # the python runtime finds the class's source through it
    spec.loader.exec_module(code)
    sample = {"amount": [1.0, 2.0]}
    out = work / "team-code"
    built.append(package(code.TeamCode(), name="team-code", output_dir=out, runtime="python",
                         sample_input=sample).path)  # fmt: skip
    return built


def mp(home: Path, *args: str) -> str:
    result = CliRunner().invoke(app, ["--home", str(home), *args])
    assert result.exit_code == 0, f"modelplane {' '.join(args)}:\n{result.output}"
    return result.output


def test_every_kind_has_an_example() -> None:
    kinds = {kind_of(path) for path in FILES}
    assert {"Endpoint", "FeatureSet", "Rollout", "Policy", "Contract", "Cluster"} <= kinds


@pytest.mark.parametrize("path", FILES, ids=lambda p: str(p.relative_to(EXAMPLES)))
def test_example_applies_as_shipped(path: Path, tmp_path: Path, packages: list[Path]) -> None:
    home = tmp_path / "home"
    for built in packages:
        mp(home, "push", str(built))
    kind = kind_of(path)
    if kind == "Cluster":
        shown = mp(home, "nodes", "--cluster", str(path))
        for node in yaml.safe_load(path.read_text())["nodes"]:
            assert node["name"] in shown
        return
    if kind == "Contract":
        assert "compatible" in mp(home, "contract", "check", str(path), "fraud:1")
        return
    if kind == "Rollout":
        mp(home, "apply", "-f", str(EXAMPLES / "endpoint.yaml"))
        endpoint = yaml.safe_load(path.read_text())["endpoint"]
        assert "started" in mp(home, "rollout", endpoint, "-f", str(path))
    else:
        if kind == "Job":
            _as_its_comment_says(home, path, tmp_path)
        assert "created" in mp(home, "apply", "-f", str(path))
    names = {doc["name"] if kind != "Rollout" else doc["endpoint"]
             for doc in yaml.safe_load_all(path.read_text())}  # fmt: skip
    found = json.loads(mp(home, "get", kind.lower(), "--json"))
    assert names <= {resource["name"].partition(":")[0] for resource in found}


def _as_its_comment_says(home: Path, job: Path, tmp_path: Path) -> None:
    """What a job example's comment asks for first (apply checks a job's work whole): the
    feature set a backfill writes, or a key the policy trusts for the code a python job
    runs, signing that code."""
    work = yaml.safe_load(job.read_text())["work"]
    if work["type"] == "materialize":
        mp(home, "apply", "-f", str(EXAMPLES / "featureset.yaml"))
    if work["type"] == "python":
        public = json.loads(mp(home, "keys", "create", "ci", "--json"))["public_key"]
        policy = tmp_path / "trust.yaml"
        policy.write_text(yaml.safe_dump({
            "kind": "Policy", "name": "default",
            "trusted_keys": [{"name": "ci", "public_key": public, "trusted_for": ["code"]}],
        }))  # fmt: skip
        mp(home, "apply", "-f", str(policy))
        mp(home, "sign", work["package"], "--key", "ci")


def test_apply_help_points_to_the_reference() -> None:
    result = CliRunner().invoke(app, ["apply", "--help"])
    assert "docs/resources.md" in result.output
