"""The jobs a user submits run under a real ``modelplane up``: the shipped materialize and
python examples, submitted with ``modelplane jobs submit`` from the user's own folder
(relative paths), end with the online store filled and the trained model pushed."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml
from tests.backends.jobs.kinds_kit import FEATURESET, team_code
from tests.kit import CLI, cli, home_env, running_up, trust_a_signing_key, wait_for

from modelplane.features.stores import open_online_store
from modelplane.registry.build import package
from modelplane.registry.service import open_registry

pytestmark = pytest.mark.timeout(400)
ROOT = Path(__file__).resolve().parents[2]


def submit(env: dict[str, str], folder: Path, file: str, *, ok: bool = True) -> str:
    """``modelplane jobs submit FILE`` run from ``folder``, as a user in their project."""
    done = subprocess.run([CLI, "jobs", "submit", file], env=env, cwd=folder, text=True,
                          capture_output=True, timeout=120, check=False)  # fmt: skip
    assert (done.returncode == 0) == ok, done.stderr + done.stdout
    return done.stdout + done.stderr


def shipped(name: str, folder: Path, rename: str | None = None, **work: Any) -> str:
    """An example job, its ``examples/data/`` inputs as ``data/`` in the user's folder."""
    doc = yaml.safe_load((ROOT / "examples" / name).read_text(encoding="utf-8"))
    doc["work"]["input"]["url"] = doc["work"]["input"]["url"].replace("examples/", "")
    doc["work"].update(work)
    doc["name"] = rename or doc["name"]
    file = f"{doc['name']}.yaml"
    (folder / file).write_text(yaml.safe_dump(doc))
    return file


def finished(api: str, name: str) -> dict[str, Any] | None:
    try:
        job: dict[str, Any] = httpx.get(f"{api}/v1/jobs/{name}", timeout=30).json()
    except httpx.TransportError:
        return None
    return job if job.get("state") in ("succeeded", "failed") else None


def test_the_materialize_and_python_examples_run_under_up(tmp_path: Path) -> None:
    home = tmp_path / "home"
    env = home_env(home)
    key = trust_a_signing_key(env, tmp_path)
    code = team_code()
    for name, signed in (("team-code", True), ("unsigned-code", False)):
        built = package(code.TeamCode(), name=name, output_dir=tmp_path / name, runtime="python",
                        sample_input={"amount": [1.0]})  # fmt: skip
        cli(env, "push", str(built.path), *(("--sign", key) if signed else ()))
    cli(env, "apply", "-f", str(FEATURESET))
    project = tmp_path / "project"
    shutil.copytree(ROOT / "examples" / "data", project / "data")

    materialize = shipped("job-materialize.yaml", project)
    assert "job/backfill-customer submitted" in submit(env, project, materialize)
    python = shipped("job-python.yaml", project)
    assert "job/retrain-fraud submitted" in submit(env, project, python)
    unsigned = shipped("job-python.yaml", project, "unsigned", package="unsigned-code:1")
    refused = submit(env, project, unsigned, ok=False)
    assert "work.package" in refused
    assert "trusts for code" in refused

    with running_up(env, "--no-auth") as up:
        for name in ("backfill-customer", "retrain-fraud"):

            def ended(job_name: str = name) -> dict[str, Any] | None:
                return finished(up.api_url, job_name)

            job = wait_for(ended, 300, f"job {name}")
            assert job["state"] == "succeeded", job["reason"]

    store = open_online_store(f"sqlite:///{home}/features.db")
    try:
        [found] = store.read("customer", 1, [7], ["chargebacks_90d"], now=2e9)
    finally:
        store.close()
    assert not found.missing
    registry = open_registry(f"sqlite:///{home}/state.db", str(home / "artifacts"), actor="t")
    try:
        lineage = registry.get("fraud-retrained:1").manifest.lineage
        assert lineage.training_data[0].uri == str(project / "data" / "transactions.csv")
        assert lineage.parameters["modelplane.job"] == "retrain-fraud"
        assert registry.model_team("fraud-retrained") == "risk"
    finally:
        registry.close()
