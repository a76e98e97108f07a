"""Issue 15.5: what an evidence pack costs as the store's history grows.

One embedded SQLite store per size: two versions of ``fraud`` and an endpoint, then
``rollouts`` real rollouts through the rollout controller (route counters moved by the
bench, as in tests/observe/test_evidence_pack.py), alternating fraud:2 and fraud:1, and
``noise`` unrelated audit events (other subjects: the chain the pack verifies grows, the
events it reads do not) plus a fallback row per 10 noise events in the prediction log. For
each size it times, median of ``--repeats``: building the sealed pack of fraud:2
(``build_pack``), the audit chain's verification alone (part of the build), and rendering
the page; with the JSON's and the page's sizes. Sizes run side by side in one run, with the
build's time per thousand audit events as the ratio to read. Prints one table and writes
``bench/results/evidence.json``.

    .venv/bin/python bench/evidence.py [--sizes 2:1000,10:10000,20:50000] [--repeats 3]
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

__all__ = ["main"]

RESULTS = REPO / "bench" / "results" / "evidence.json"


def _store(folder: Path, rollouts: int, noise: int) -> Any:
    from sqlalchemy import insert
    from tests.observe.test_evidence_pack import KEY, Counters, seed

    from modelplane.controlplane.rollouts import RolloutController, start_rollout
    from modelplane.core.rollout import Phase
    from modelplane.registry.service import open_registry
    from modelplane.spec.rollout import RolloutSpec
    from modelplane.store import audit
    from modelplane.store.db import write_session
    from modelplane.store.schema import PredictionRow
    from modelplane.types import FakeClock

    registry = open_registry(f"sqlite:///{folder}/state.db", str(folder / "art"), actor="bench",
                             audit_key=KEY)  # fmt: skip
    seed(registry, folder)
    clock = FakeClock(time.time())
    for number in range(rollouts):
        to = "fraud:2" if number % 2 == 0 else "fraud:1"
        spec = RolloutSpec.model_validate({
            "endpoint": "fraud-score", "to": to,
            "steps": [{"weight": 50, "hold_s": 1}, {"weight": 100, "hold_s": 1}],
            "gates": [{"type": "min_samples", "requests": 5}],
        })  # fmt: skip
        counters = Counters()
        counters.ready |= {to, "fraud:1", "fraud:2"}
        counters.serve("fraud@champion", 100)
        start_rollout(registry, spec, actor="bench", now=clock.wall())
        controller = RolloutController(registry, counters, clock=clock)
        for _ in range(20):
            counters.serve(to, 50)
            for stable in ("fraud@champion", "fraud:1", "fraud:2"):
                counters.serve(stable, 50)
            clock.advance(2)
            if controller.reconcile_one("fraud-score").phase is Phase.PROMOTED:
                break
    now = datetime.now(UTC)
    digest = registry.get("fraud:2").digest
    with write_session(registry.engine) as session:
        for i in range(noise):
            event = audit.AuditEvent("bench", "policy.apply", f"Policy/p{i % 50}", now,
                                     after={"i": i})  # fmt: skip
            audit.append(session, event)
            if i % 10 == 0:
                session.execute(insert(PredictionRow).values(
                    request_id=f"r{i}", at=now + timedelta(seconds=i), endpoint="fraud-score",
                    contract="fraud-score", contract_version=1, model_version="fraud:2",
                    digest=digest, route_kind="fallback", fallback_reason="timeout",
                    status=200, queue_ms=0.0, batch_ms=0.0, compute_ms=0.0, total_ms=1.0,
                ))  # fmt: skip
    return registry


def _measure(rollouts: int, noise: int, repeats: int) -> dict[str, Any]:
    from modelplane.controlplane.evidence import check_signature
    from modelplane.observe.evidence_pack import build_pack
    from modelplane.observe.evidence_page import render_page
    from modelplane.store import audit
    from modelplane.store.db import read_session

    with tempfile.TemporaryDirectory() as folder:
        registry = _store(Path(folder), rollouts, noise)
        builds, verifies, renders = [], [], []
        pack: dict[str, Any] = {}
        page = ""
        for _ in range(repeats):
            started = time.perf_counter()
            pack = build_pack(registry.engine, "fraud:2", now=datetime.now(UTC),
                              signature_check=check_signature)  # fmt: skip
            builds.append(time.perf_counter() - started)
            started = time.perf_counter()
            with read_session(registry.engine) as session:
                audit.verify(session)
            verifies.append(time.perf_counter() - started)
            started = time.perf_counter()
            page = render_page(pack)
            renders.append(time.perf_counter() - started)
        registry.close()
    events = pack["audit"]["events"]
    build_s = statistics.median(builds)
    return {
        "rollouts": rollouts,
        "noise_events": noise,
        "audit_events": events,
        "rollouts_in_pack": len(pack["rollouts"]),
        "decisions": sum(len(r["decisions"]) for r in pack["rollouts"]),
        "build_s": round(build_s, 4),
        "verify_s": round(statistics.median(verifies), 4),
        "render_s": round(statistics.median(renders), 4),
        "json_kb": round(len(json.dumps(pack, indent=2)) / 1024, 1),
        "html_kb": round(len(page) / 1024, 1),
        "build_ms_per_1k_events": round(1000 * build_s / max(events, 1) * 1000, 2),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--sizes", default="2:1000,10:10000,20:50000",
                        help="ROLLOUTS:NOISE_EVENTS, comma separated")  # fmt: skip
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    sizes = [tuple(int(x) for x in size.split(":")) for size in args.sizes.split(",")]
    rows = [_measure(rollouts, noise, args.repeats) for rollouts, noise in sizes]
    table = Table(title="evidence pack of fraud:2, by history size (median of repeats)")
    for column in ("audit events", "rollouts in pack", "decisions", "build s", "verify s",
                   "render s", "json KB", "html KB", "build ms / 1k events"):  # fmt: skip
        table.add_column(column, justify="right")
    for r in rows:
        table.add_row(*(str(r[k]) for k in ("audit_events", "rollouts_in_pack", "decisions",
                      "build_s", "verify_s", "render_s", "json_kb", "html_kb",
                      "build_ms_per_1k_events")))  # fmt: skip
    Console(width=150).print(table)
    RESULTS.write_text(json.dumps({"bench": "evidence", "repeats": args.repeats, "rows": rows},
                                  indent=2) + "\n")  # fmt: skip
    print(f"wrote {RESULTS}")


if __name__ == "__main__":
    main()
