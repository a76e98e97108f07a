"""A home with a trusted signing key, the examples' team code pushed signed (and an
unsigned copy), a feature set applied: what the materialize and python job tests share."""

from __future__ import annotations

import importlib.util
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
from tests.kit import cli, home_env, trust_a_signing_key, wait_for

from modelplane.backends.jobs.local import LocalShardExecutor
from modelplane.backends.jobs.planner import JobsPlanner
from modelplane.core.jobplan import PlannedJob
from modelplane.core.jobs import OutcomeStatus, ShardOutcome
from modelplane.registry.build import package
from modelplane.registry.service import Registry, open_registry
from modelplane.security.keys import audit_key_from
from modelplane.settings import Settings
from modelplane.spec.io import parse
from modelplane.spec.job import Job

ROOT = Path(__file__).resolve().parents[3]
TEAM_CODE = ROOT / "examples" / "jobs" / "team_code.py"
FEATURESET = ROOT / "examples" / "featureset.yaml"


def team_code(path: Path = TEAM_CODE, name: str = "team_code") -> ModuleType:
    """``examples/jobs/team_code.py`` as a module (its class is what gets packaged)."""
    spec = importlib.util.spec_from_file_location(name, path)
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module  # the python runtime finds a class's source through it
    spec.loader.exec_module(module)
    return module


@dataclass(frozen=True)
class Home:
    root: Path
    env: dict[str, str]
    registry: Registry

    def planner(self, store_url: str | None = None) -> JobsPlanner:
        return JobsPlanner(self.registry, self.root / "cache" / "packages",
                           state_dir=self.root / "jobs", feature_store_url=store_url)  # fmt: skip


def make_home(root: Path) -> Iterator[Home]:
    home = root / "home"
    env = home_env(home)
    key = trust_a_signing_key(env, root)
    module = team_code()
    for name, signed in (("team-code", True), ("unsigned-code", False)):
        built = package(module.TeamCode(), name=name, output_dir=root / name, runtime="python",
                        sample_input={"amount": [1.0, 2.0]})  # fmt: skip
        cli(env, "push", str(built.path), *(("--sign", key) if signed else ()))
    probe = team_code(Path(__file__).with_name("probe_code.py"), "probe_code")
    built = package(probe.Probe(), name="probe-code", output_dir=root / "probe-code",
                    runtime="python", sample_input={"x": [1.0]})  # fmt: skip
    cli(env, "push", str(built.path), "--sign", key)
    cli(env, "apply", "-f", str(FEATURESET))
    registry = open_registry(
        f"sqlite:///{home}/state.db", str(home / "artifacts"), actor="jobs",
        audit_key=audit_key_from(Settings(home=home)),
    )  # fmt: skip
    yield Home(home, env, registry)
    registry.close()


def job(name: str, work: dict[str, Any], **extra: Any) -> Job:
    return parse(Job, {"name": name, "team": "risk", "work": work, **extra})


def run_all(
    planner: JobsPlanner, job: Job, uid: str, executor: LocalShardExecutor
) -> tuple[PlannedJob, list[ShardOutcome]]:
    """What the controller does with a job: plan, claim, one attempt per shard, finish."""
    planned = planner.plan(job, uid)
    planner.claim(job, uid, planned)
    for plan in planned.shards:
        executor.start(planner.task(job, uid, plan, 1, planned))
    outcomes: list[ShardOutcome] = []

    def all_ended() -> bool:
        outcomes.extend(executor.wait(0.5))
        return len(outcomes) == len(planned.shards)

    wait_for(all_ended, 120, f"the {len(planned.shards)} shard(s) of {job.name}")
    failed = [o.error for o in outcomes if o.status is not OutcomeStatus.DONE]
    assert not failed, failed
    planner.finish(job, uid, planned, sum(o.rows for o in outcomes))
    return planned, sorted(outcomes, key=lambda o: o.index)


def parts(folder: str | Path) -> pa.Table:
    found = sorted(Path(folder).glob("part-*.parquet"))
    return pa.concat_tables([pq.read_table(p) for p in found])
