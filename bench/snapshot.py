"""What the control side's reading of the gateway costs: the typed snapshot against the
reach-through reads it replaced, and against one request.

One gateway (``ServerThread``, in this process) serves ``--endpoints`` endpoints of an ONNX
logistic regression, each on two routes (one at weight 0, as a canary starts) and a 100 %
shadow, one worker per version, after ``--requests`` predictions each so the counters and
route evidence are filled. Timed in this process, best of 5 rounds of ``--reads`` calls:

- ``snapshot_one``: ``Gateway.snapshot(endpoint)``, what the per-endpoint views build;
- ``snapshot_all``: ``Gateway.snapshot()``, what the SLO recorder and usage sampler build;
- ``load_snapshot`` / ``load_reach``: the autoscaler's load of one endpoint through
  ``system.gateway_views.GatewayConcurrency`` and through the live objects, as
  ``cli/autoscale.py`` read them before (``handler.endpoints[...].routes[...].target.pool``,
  states compared with the string ``"ready"``);
- ``slo_snapshot`` / ``slo_reach``: the SLO recorder's tallies of every endpoint, both ways;
- ``request``: one prediction over loopback HTTP at concurrency 1 (client in this process).

Ratios: each snapshot read over its reach-through twin, and the reads a control pass makes
each second (one load per endpoint for the autoscaler, one for the degrader, one SLO pass)
as a share of one request.

Run from the repository root:

    .venv/bin/python bench/snapshot.py              # ~1 minute
    .venv/bin/python bench/snapshot.py --quick
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import numpy as np
from rich.console import Console
from rich.table import Table

ROOT = Path(__file__).resolve().parents[1]
RESULTS = Path(__file__).parent / "results" / "snapshot.json"
FEATURES = 8


def _plans(work: Path, count: int) -> list[Any]:
    from skl2onnx import to_onnx
    from sklearn.linear_model import LogisticRegression

    from modelplane.core.plan import EndpointPlan, ModelSource
    from modelplane.registry.build import package
    from modelplane.spec.contract import Contract
    from modelplane.spec.endpoint import Endpoint, Route, Shadow

    rng = np.random.default_rng(0)
    x = rng.normal(size=(500, FEATURES)).astype(np.float32)
    y = (x[:, 0] + x[:, 1] > 0).astype(np.int64)
    onx = to_onnx(LogisticRegression().fit(x, y), x[:1], options={"zipmap": False})
    built = package(onx, name="lr", output_dir=work / "lr", sample_input=x[:4])
    signature = built.manifest.signature
    sources = {
        f"lr:{v}": ModelSource(f"lr:{v}", built.path, built.manifest, built.digest)
        for v in (1, 2, 3)
    }
    plans = []
    for i in range(count):
        contract = Contract(name=f"lr{i}", inputs=signature.inputs, outputs=signature.outputs)
        endpoint = Endpoint(
            name=f"lr{i}", team="bench", contract=contract,
            routes=(Route(model="lr:1", weight=100), Route(model="lr:2", weight=0)),
            shadows=(Shadow(model="lr:3", percent=100),),
        )  # fmt: skip
        plans.append(EndpointPlan(endpoint, sources))
    return plans


def _load_reach(gateway: Any, endpoint: str) -> tuple[float, int, int]:
    """The autoscaler's load as it was read before the snapshot (cli/autoscale.py)."""
    runtime = gateway.handler.endpoints.get(endpoint)
    in_flight, ready, replicas = 0.0, 0, 0
    for route in runtime.routes:
        target = route.target
        infos = target.pool.replicas()
        rows_per_batch = max(target.batcher.mean_batch_rows, 1.0)
        sent = sum(info.outstanding for info in infos)
        in_flight += target.batcher.queued_rows + sent * rows_per_batch
        ready = max(ready, sum(1 for info in infos if info.state == "ready"))
        replicas = max(replicas, len(infos))
    return in_flight, ready, replicas


def _slo_reach(gateway: Any) -> dict[str, tuple[int, int, int, int]]:
    """The SLO recorder's tallies as they were read before the snapshot (cli/up.py)."""
    metrics = gateway.metrics
    good: dict[str, int] = {}
    total: dict[str, int] = {}
    for (endpoint, _, _, status), count in list(metrics.requests.items()):
        code = int(status)
        if 400 <= code < 500 and code != 429:
            continue
        total[endpoint] = total.get(endpoint, 0) + count
        if code < 400:
            good[endpoint] = good.get(endpoint, 0) + count
    for (endpoint, _), count in list(metrics.fallbacks.items()):
        good[endpoint] = good.get(endpoint, 0) - count
    fast: dict[str, int] = {}
    timed: dict[str, int] = {}
    slos = {name: r.endpoint.contract.slo for name, r in gateway.handler.endpoints.items()}
    for (endpoint, _, _), hist in list(metrics.latency.items()):
        slo = slos.get(endpoint)
        if slo is None:
            continue
        limit_s = slo.latency_ms / 1000.0
        within = sum(c for b, c in zip(hist.bounds, hist.counts, strict=False) if b <= limit_s)
        fast[endpoint] = fast.get(endpoint, 0) + within
        timed[endpoint] = timed.get(endpoint, 0) + sum(hist.counts)
    return {
        name: (max(good.get(name, 0), 0), total.get(name, 0), fast.get(name, 0),
               timed.get(name, 0))
        for name in slos
    }  # fmt: skip


def _best_us(call: Callable[[], object], reads: int, rounds: int = 5) -> float:
    best = float("inf")
    for _ in range(rounds):
        started = time.perf_counter()
        for _ in range(reads):
            call()
        best = min(best, (time.perf_counter() - started) / reads)
    return best * 1e6


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--endpoints", type=int, default=4)
    parser.add_argument("--requests", type=int, default=200)
    parser.add_argument("--reads", type=int, default=2000)
    parser.add_argument("--quick", action="store_true")
    args = parser.parse_args()
    if args.quick:
        args.endpoints, args.requests, args.reads = 2, 50, 300

    from modelplane.dataplane.server import ServerThread
    from modelplane.system.gateway_views import GatewayConcurrency, GatewaySlo

    console = Console()
    load_at_start = os.getloadavg()
    with tempfile.TemporaryDirectory() as work:
        plans = _plans(Path(work), args.endpoints)
        with ServerThread(plans) as server:
            gateway = server.gateway
            body = {"inputs": [{"name": f"x{i}", "shape": [1], "datatype": "FP32",
                                "data": [0.5]} for i in range(FEATURES)]}  # fmt: skip
            names = [p.endpoint.name for p in plans]
            inputs = gateway.handler.endpoints[names[0]].endpoint.contract.inputs
            body = {"instances": [{spec.name: [0.5] * FEATURES for spec in inputs}]}
            with httpx.Client(base_url=server.url, timeout=30) as http:
                started = time.perf_counter()
                for name in names:
                    for _ in range(args.requests):
                        answer = http.post(f"/v1/endpoints/{name}:predict", json=body)
                        answer.raise_for_status()
                request_us = (time.perf_counter() - started) / (len(names) * args.requests)
                request_us *= 1e6
            first = names[0]
            concurrency, slo = GatewayConcurrency(gateway), GatewaySlo(gateway)
            assert (
                slo.served()[first].tallies["requests"].values()[:2]
                == _slo_reach(gateway)[first][:2]
            )
            timings = {
                "snapshot_one": _best_us(lambda: gateway.snapshot(first), args.reads),
                "snapshot_all": _best_us(gateway.snapshot, args.reads),
                "load_snapshot": _best_us(lambda: concurrency.load(first), args.reads),
                "load_reach": _best_us(lambda: _load_reach(gateway, first), args.reads),
                "slo_snapshot": _best_us(slo.served, args.reads),
                "slo_reach": _best_us(lambda: _slo_reach(gateway), args.reads),
                "request": request_us,
            }
    per_second = 2 * args.endpoints * timings["load_snapshot"] + timings["slo_snapshot"]
    ratios = {
        "load_snapshot_over_reach": timings["load_snapshot"] / timings["load_reach"],
        "slo_snapshot_over_reach": timings["slo_snapshot"] / timings["slo_reach"],
        "control_reads_per_second_over_one_request": per_second / timings["request"],
    }
    table = Table(title=f"control reads, {args.endpoints} endpoints x 3 versions (us per call)")
    table.add_column("read")
    table.add_column("us", justify="right")
    for key, value in timings.items():
        table.add_row(key, f"{value:,.1f}")
    for key, value in ratios.items():
        table.add_row(key, f"x{value:.2f}")
    console.print(table)
    results = {
        "endpoints": args.endpoints,
        "requests_per_endpoint": args.requests,
        "reads": args.reads,
        "us": timings,
        "ratios": ratios,
        "machine": {
            "python": platform.python_version(),
            "cpus": os.cpu_count(),
            "load_average_at_start": load_at_start,
            "load_average_at_end": os.getloadavg(),
        },
    }
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps(results, indent=2) + "\n")
    console.print(f"wrote {RESULTS.relative_to(ROOT)}")


if __name__ == "__main__":
    main()
