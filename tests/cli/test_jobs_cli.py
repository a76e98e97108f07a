"""``modelplane jobs`` and ``why JOB`` as a user runs them, against a real ``modelplane up``."""

from __future__ import annotations

import json
import signal
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml
from tests.kit import UpProcess, cli, home_env, running_up, wait_for
from tests.kit.jobs import build_model, frame_of, job_doc, read_output, write_parquet

ROWS = 2000
REPO = Path(__file__).resolve().parents[2]
DOCS = REPO / "docs" / "jobs-queue.md"
DOCUMENTED_ROWS = 200  # examples/data/transactions.csv


def documented_job(root: Path) -> dict[str, Any]:
    """The job of docs/jobs-queue.md as submitted from the repository root (its shipped
    dataset), its output moved under ``root``."""
    text = DOCS.read_text(encoding="utf-8")
    block = text.split("```yaml\n", 1)[1].split("```", 1)[0]
    found: dict[str, Any] = yaml.safe_load(block)
    work = found["work"]
    assert (REPO / work["input"]["url"]).is_file(), "the page's dataset is shipped"
    work["input"]["url"] = str(REPO / work["input"]["url"])
    work["output"]["url"] = str(root / work["output"]["url"])
    return found


def show(env: dict[str, str], name: str) -> dict[str, Any]:
    found: dict[str, Any] = json.loads(cli(env, "jobs", "show", name, "--json"))
    return found


def served(up: UpProcess, name: str) -> dict[str, Any]:
    """The job as the control API answers (polled over HTTP: a CLI process per poll would
    cost seconds on a loaded machine); an empty answer while ``up`` is not listening yet."""
    try:
        response = httpx.get(f"{up.api_url}/v1/jobs/{name}", timeout=30)
    except httpx.TransportError:
        return {}
    found: dict[str, Any] = response.json()
    return found


def state_is(up: UpProcess, name: str, *states: str) -> dict[str, Any] | None:
    job = served(up, name)
    return job if job.get("state") in states else None


@pytest.fixture
def user(tmp_path: Path) -> tuple[dict[str, str], Path]:
    env = home_env(tmp_path / "home")
    folder, _ = build_model(tmp_path / "pkg")
    cli(env, "push", str(folder), "--alias", "champion", "--team", "risk")
    write_parquet(frame_of(ROWS), tmp_path / "txns.parquet")
    write_parquet(frame_of(ROWS), tmp_path / "transactions.parquet")
    return env, tmp_path


def write_job(path: Path, doc: dict[str, Any]) -> Path:
    path.write_text(yaml.safe_dump(doc))
    return path


def test_a_job_survives_sigkill_of_up_and_writes_every_shard_once(
    user: tuple[dict[str, str], Path],
) -> None:
    env, root = user
    out = root / "scores"
    # 2 shards one at a time, a row per model call: slow enough to be killed half-way
    doc = job_doc(
        "nightly", root / "txns.parquet", out, model="fraud@champion", parallelism=(1, 1),
        shard={"rows": ROWS // 2}, batch_rows=1,
    )  # fmt: skip
    submitted = cli(env, "jobs", "submit", str(write_job(root / "job.yaml", doc)))
    assert "job/nightly submitted (model fraud@champion -> fraud:1)" in submitted
    with running_up(env, "--no-auth") as up:

        def one_done_one_running() -> bool:
            shards = served(up, "nightly").get("shards", {})
            return bool(shards.get("done", 0) >= 1 and shards.get("running") == 1)

        wait_for(one_done_one_running, 240, "a shard done and the next running", every_s=0.5)
        up.stop(signal.SIGKILL)
    written = {p.name: p.stat().st_mtime_ns for p in out.glob("part-*")}
    assert written, "a finished shard's part is on disk"
    with running_up(env, "--no-auth") as again:
        job = wait_for(lambda: state_is(again, "nightly", "succeeded", "failed"), 300, "the job")
    assert job["state"] == "succeeded", job["reason"]
    assert sorted(p.name for p in out.glob("part-*")) == [
        "part-00000.parquet",
        "part-00001.parquet",
    ]
    for name, mtime in written.items():
        assert (out / name).stat().st_mtime_ns == mtime, f"{name} was written twice"
    scores = read_output(out)
    assert list(scores["txn_id"]) == list(range(ROWS))
    assert show(env, "nightly")["rows"] == {"done": ROWS, "total": ROWS}
    log = cli(env, "jobs", "logs", "nightly")
    assert "lost with the control plane" in log
    assert "model pinned to fraud:1" in log


def test_a_job_over_its_quota_waits_says_why_and_starts_when_freed(
    user: tuple[dict[str, str], Path],
) -> None:
    env, root = user
    box = {"name": "box", "cpu_milli": 8000, "memory_mib": 16384}
    cluster = {"kind": "Cluster", "nodes": [box], "local": {"detect": False}}
    write_job(Path(env["MODELPLANE_HOME"]) / "cluster.yaml", cluster)
    policy = {
        "kind": "Policy",
        "degradation": {"steps": []},
        "teams": [{"name": "risk", "quotas": {"cpu": {"nominal": 2000, "borrowing_limit": 0}}}],
    }
    cli(env, "apply", "-f", str(write_job(root / "policy.yaml", policy)))
    slow = job_doc(
        "first", root / "txns.parquet", root / "a", parallelism=(1, 1), shard={"count": 1},
        batch_rows=1, cpu=2,
    )  # fmt: skip
    second = documented_job(root)
    cli(env, "jobs", "submit", str(write_job(root / "first.yaml", slow)))
    with running_up(env, "--no-auth") as up:
        wait_for(lambda: state_is(up, "first", "running"), 120, "the first job to run")
        # another machine submits through the control API: the server checks the job
        laptop = home_env(root / "laptop")
        cli(laptop, "login", up.api_url, "--token", "unused-without-auth")
        submitted = cli(laptop, "jobs", "submit", str(write_job(root / "second.yaml", second)))
        assert "job/fraud-nightly submitted (model fraud@champion -> fraud:1)" in submitted
        wait_for(lambda: state_is(up, "fraud-nightly", "queued"), 60, "the job to be planned")
        wait_for(lambda: "quota" in served(up, "fraud-nightly")["reason"], 60, "the reason")
        line = cli(env, "why", "fraud-nightly")
        assert line.strip() == (
            "job fraud-nightly (team risk, tier batch) is queued: waiting for quota:"
            " cpu: 1000 asked + 2000 in use would exceed team risk's limit 2000"
        )
        listed = json.loads(cli(laptop, "jobs", "list", "--json"))
        assert [j["name"] for j in listed] == ["first", "fraud-nightly"]
        cancelled = cli(laptop, "jobs", "cancel", "first", "--reason", "make room")
        assert "job/first cancelled: cancelled by" in cancelled
        job = wait_for(lambda: state_is(up, "fraud-nightly", "succeeded", "failed"), 240, "the job")
        assert job["state"] == "succeeded", job["reason"]
        assert job["rows"] == {"done": DOCUMENTED_ROWS, "total": DOCUMENTED_ROWS}
        shown = cli(env, "jobs", "show", "fraud-nightly")
        assert "shards 2/2 | rows 200/200" in shown
        assert "job fraud-nightly (team risk, tier batch) has succeeded: 2 shard(s)" in cli(
            env, "why", "fraud-nightly"
        )
        # a cancelled job runs again from its finished shards
        assert "job/first queued: retried by" in cli(env, "jobs", "retry", "first")
        out = root / "scores" / "fraud-nightly"
        assert len(read_output(out)) == DOCUMENTED_ROWS
        # what docs/jobs.md lists: the parts, the markers and the attempts' folder
        assert sorted(p.name for p in out.iterdir()) == [
            "_JOB", "_SUCCESS", "_attempts", "part-00000.parquet", "part-00001.parquet",
        ]  # fmt: skip


def test_bad_input_gets_a_clear_error_and_nothing_is_recorded(
    user: tuple[dict[str, str], Path],
) -> None:
    env, root = user
    missing = job_doc("broken", root / "nope.parquet", root / "o")
    out = cli(env, "jobs", "submit", str(write_job(root / "bad.yaml", missing)), expect=2)
    assert out == ""
    unknown = job_doc("unknown", root / "txns.parquet", root / "o", model="ghost:1")
    cli(env, "jobs", "submit", str(write_job(root / "ghost.yaml", unknown)), expect=6)
    assert json.loads(cli(env, "jobs", "list", "--json")) == []
    assert "No jobs. Submit one" in cli(env, "jobs", "list")
    cli(env, "jobs", "show", "broken", expect=6)


def test_a_critical_endpoint_scaling_up_preempts_a_borrowed_shard_and_the_job_completes(
    user: tuple[dict[str, str], Path],
) -> None:
    env, root = user
    box = {"name": "box", "cpu_milli": 4000, "memory_mib": 16384}
    cluster = {"kind": "Cluster", "nodes": [box], "local": {"detect": False}}
    write_job(Path(env["MODELPLANE_HOME"]) / "cluster.yaml", cluster)
    policy = {
        "kind": "Policy",
        "degradation": {"steps": []},
        "teams": [
            {"name": "web", "cohort": "shared", "quotas": {"cpu": {"nominal": 3000}}},
            {"name": "risk", "cohort": "shared", "quotas": {"cpu": {"nominal": 1000}}},
        ],
    }
    cli(env, "apply", "-f", str(write_job(root / "policy.yaml", policy)))
    inputs = [
        {"name": c, "dtype": "float64"} for c in ("amount", "age_days", "merchant_risk", "night")
    ]
    endpoint = {
        "kind": "Endpoint", "name": "checkout", "team": "web", "tier": "critical", "replicas": 1,
        "contract": {"name": "checkout", "inputs": inputs}, "routes": [{"model": "fraud:1"}],
    }  # fmt: skip
    cli(env, "apply", "-f", str(write_job(root / "endpoint.yaml", endpoint)))
    # Shards long enough that the first cannot finish before the job grows to two, however
    # busy the machine: the second one, borrowed, is what the endpoint takes back.
    rows = 4 * ROWS
    write_parquet(frame_of(rows), root / "wide.parquet")
    wide = job_doc(
        "wide", root / "wide.parquet", root / "w", parallelism=(1, 2), shard={"count": 2},
        batch_rows=1,
    )  # fmt: skip
    cli(env, "jobs", "submit", str(write_job(root / "wide.yaml", wide)))
    with running_up(env, "--no-auth") as up:

        def both_running() -> dict[str, Any] | None:
            job = served(up, "wide")
            return job if job.get("shards", {}).get("running") == 2 else None

        job = wait_for(both_running, 240, "both shards to run", every_s=0.5)
        [borrowed] = [s["index"] for s in job["shard_list"] if s["borrowed"]]
        cli(env, "apply", "-f", str(write_job(root / "endpoint.yaml", {**endpoint, "replicas": 3})))
        job = wait_for(lambda: state_is(up, "wide", "succeeded", "failed"), 300, "the job")
        assert job["state"] == "succeeded", job["reason"]
    log = cli(env, "jobs", "logs", "wide")
    assert f"shard {borrowed} preempted (serving): serving replicas need the capacity" in log
    assert len(read_output(root / "w")) == rows
