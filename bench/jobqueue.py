"""The job queue's pass at depth: ``core.jobqueue.decide`` against ``core.admission.admit``
alone over the same shard workloads, side by side.

20 teams in 4 cohorts (and in one, ``--cohorts``) with CPU quotas, jobs of 1-4 shard
minimum and up to 8 maximum, 50 of them running, the rest pending; a 2,000-core pool. The
ratio is what the queue adds to admission (serving first, gangs, room, growth, shrink).
Best of 5 passes each.

"before" runs the same snapshot through the slow references kept as the tests' oracles
(``tests/core/admission_reference.py``, ``tests/core/jobqueue_reference.py``: every cohort's
pool recomputed for every workload), best of 2, so the speedup is measured in one sitting.

    .venv/bin/python bench/jobqueue.py [--depths 1000,10000,50000]
"""

from __future__ import annotations

import argparse
import json
import platform
import random
import sys
import time
from pathlib import Path

from rich.console import Console
from rich.table import Table

from modelplane.core.admission import AdmissionSnapshot, AdmissionState, Admitted, admit
from modelplane.core.cluster import Demand, Workload, WorkloadKind
from modelplane.core.jobqueue import QueuedJob, QueueSnapshot, QueueState, RunningShard, decide
from modelplane.spec.policy import Policy, Quota, Team

__all__ = ["main"]

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))  # the slow references live with the tests that use them
CAPACITY = {"cpu": 2_000_000, "memory": 8_000_000}


def _policy(cohorts: int = 4) -> Policy:
    teams = tuple(
        Team(name=f"t{i}", cohort=f"c{i % cohorts}", quotas={"cpu": Quota(nominal=100_000)})
        for i in range(20)
    )
    return Policy(teams=teams)


def _jobs(depth: int, rng: random.Random) -> list[QueuedJob]:
    out = []
    for i in range(depth):
        demand = Demand(cpu_milli=rng.choice((500, 1000, 2000)), memory_mib=1024)
        running = tuple(RunningShard(k, float(k)) for k in range(2)) if i < 50 else ()
        out.append(
            QueuedJob(
                f"j{i}", f"t{i % 20}", rng.choice(("batch", "batch", "standard")), float(i),
                demand, rng.randint(1, 4), 8, rng.randint(1, 20), running,
            )
        )  # fmt: skip
    return out


def _best(run: object, repeat: int = 5) -> float:
    assert callable(run)
    best = float("inf")
    for _ in range(repeat):
        began = time.perf_counter()
        run()
        best = min(best, time.perf_counter() - began)
    return best


def _times(demand: Demand, n: int) -> Demand:
    return Demand(demand.cpu_milli * n, demand.memory_mib * n)


def bench(depth: int, cohorts: int = 4) -> dict[str, float]:
    from tests.core import admission_reference, jobqueue_reference

    policy, jobs = _policy(cohorts), _jobs(depth, random.Random(depth))
    snapshot = QueueSnapshot(tuple(jobs), CAPACITY)
    queue_s = _best(lambda: decide(snapshot, policy, 0.0, QueueState()))
    queue_before_s = _best(
        lambda: jobqueue_reference.decide(snapshot, policy, 0.0, QueueState()), repeat=2
    )
    # the same work through admission alone: each waiting job's minimum as one workload
    pending = tuple(
        Workload(f"{j.name}/g", _times(j.shard, min(j.min_shards, j.ready)), j.team, j.tier,
                 WorkloadKind.JOB, j.submitted_at)
        for j in jobs
        if not j.running
    )  # fmt: skip
    admitted = tuple(
        Admitted(Workload(f"{j.name}/{s.index}", j.shard, j.team, j.tier)) for j in jobs
        for s in j.running
    )  # fmt: skip
    plain = AdmissionSnapshot(pending, admitted)
    admit_s = _best(lambda: admit(plain, policy, 0.0, AdmissionState()))
    admit_before_s = _best(
        lambda: admission_reference.admit(plain, policy, 0.0, AdmissionState()), repeat=2
    )
    return {
        "pending_jobs": depth,
        "cohorts": cohorts,
        "queue_pass_s": queue_s,
        "admission_only_s": admit_s,
        "ratio": queue_s / admit_s,
        "queue_pass_before_s": queue_before_s,
        "admission_only_before_s": admit_before_s,
        "queue_speedup": queue_before_s / queue_s,
        "admission_speedup": admit_before_s / admit_s,
    }


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--depths", default="1000,10000,50000")
    parser.add_argument(
        "--cohorts", default="4,1", help="cohorts the 20 teams form (before: cost grows with size)"
    )
    args = parser.parse_args(argv)
    rows = [bench(int(d), int(c)) for c in args.cohorts.split(",") for d in args.depths.split(",")]
    table = Table(title="one queue pass (best of 5; before: best of 2)")
    columns = (
        "pending jobs", "cohorts", "queue pass", "before", "speedup", "admission only", "before",
        "speedup", "queue / admission",
    )  # fmt: skip
    for column in columns:
        table.add_column(column, justify="right")
    for row in rows:
        table.add_row(
            f"{row['pending_jobs']:,.0f}", f"{row['cohorts']:.0f}",
            f"{row['queue_pass_s'] * 1000:.0f} ms",
            f"{row['queue_pass_before_s'] * 1000:.0f} ms", f"{row['queue_speedup']:.2f}x",
            f"{row['admission_only_s'] * 1000:.0f} ms",
            f"{row['admission_only_before_s'] * 1000:.0f} ms",
            f"{row['admission_speedup']:.2f}x", f"{row['ratio']:.2f}x",
        )  # fmt: skip
    Console(width=120).print(table)
    out = REPO / "bench" / "results" / "jobqueue.json"
    meta = {"python": sys.version.split()[0], "machine": platform.machine()}
    out.write_text(json.dumps({"meta": meta, "rows": rows}, indent=2) + "\n")
    Console().print(f"wrote {out.relative_to(REPO)}")


if __name__ == "__main__":
    main()
