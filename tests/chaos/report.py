"""What a chaos run found: requests answered, failures by cause, recovery after each fault,
memory over time.

**Attribution.** A failed request (anything but a 200) is *caused by* a fault when it was on
the fault's target endpoint (any endpoint for a restart of ``up``) and its life, from sent to
answered, overlaps the fault's window: from the fault's start to the endpoint's first 200
after the fault's end, plus :data:`GRACE_S`. Faults whose target is ``None`` (terminated
database connections, idle sockets) may cause no failure. Every other failure is *lost*:
``unattributed``, the number the suite holds at zero.

**Recovery** of an endpoint after a fault: from the fault's end (the kill; the new ``up``'s
start) to the answer of the first request sent at or after it that got a 200.
"""

from __future__ import annotations

import statistics
from bisect import bisect_left
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from typing import Any

from rich.console import Console
from rich.table import Table
from tests.chaos.faults import ALL, Fault
from tests.chaos.load import MemorySample, Outcome

__all__ = [
    "AIMS_S",
    "GRACE_S",
    "UNATTRIBUTED",
    "ChaosReport",
    "FaultResult",
    "MemoryTrend",
    "build_report",
]

GRACE_S = 1.0
"""After an endpoint's first 200, failures still in flight from the fault count as its own
for this long (a request dispatched to the second, still restarting, replica)."""
AIMS_S = {"kill-workers": 3.0, "kill-forkserver": 3.0, "restart-up": 5.0}
"""Issue 10's aims: serving again within 3 s of both replicas killed, 5 s of ``up``'s start."""
UNATTRIBUTED = "unattributed"


@dataclass(frozen=True, slots=True)
class FaultResult:
    kind: str
    target: str | None
    at_s: float
    """Start, seconds from the load's start."""
    duration_s: float
    recovery_s: dict[str, float | None]
    """Per endpoint watched; ``None``: no 200 within the limit."""
    answering_s: float | None
    """The last of the endpoints watched to give any HTTP answer (a 503 counts): for a
    restart, how long ``up`` took to listen, against ``recovery_s``'s time to serve."""
    failures: int
    """Failed requests caused by this fault."""
    detail: str
    load_avg: float
    left_behind: list[int]
    """For a restart: processes of the killed ``up`` still alive once the new one served."""

    @property
    def worst_recovery_s(self) -> float | None:
        values = list(self.recovery_s.values())
        return None if not values or None in values else max(v for v in values if v is not None)


@dataclass(frozen=True, slots=True)
class MemoryTrend:
    window_s: float
    first_mb: float
    """Median resident memory (``up`` and everything below it) over the first window: a
    restart's seconds near zero and a canary's extra workers move a median little."""
    last_mb: float
    change: float
    """``last / first - 1``."""


@dataclass(frozen=True, slots=True)
class ChaosReport:
    started_at: float
    """When the load started (``time.monotonic()``): the zero of every ``at_s``."""
    seconds: float
    requests: int
    answered: int
    failed_by_cause: dict[str, int]
    failed_by_code: dict[str, int]
    """``cause | status code``: what the lost and the caused failures looked like."""
    faults: list[FaultResult]
    memory: MemoryTrend | None
    samples: list[MemorySample]
    failures: list[tuple[float, str, str]]
    """Each failure: (seconds from the start, endpoint, cause)."""
    unattributed_examples: list[dict[str, Any]]
    log_errors: list[str]
    """Tracebacks and errors ``up`` logged (first lines, capped)."""

    @property
    def lost(self) -> int:
        return self.failed_by_cause.get(UNATTRIBUTED, 0)

    @property
    def unrecovered(self) -> list[FaultResult]:
        return [f for f in self.faults if None in f.recovery_s.values()]

    def to_json(self) -> dict[str, Any]:
        data = asdict(self)
        data["lost"] = self.lost
        # per second and cause: a restart alone fails hundreds of requests
        per_second: dict[str, Counter[int]] = {}
        for at, _, cause in self.failures:
            per_second.setdefault(cause, Counter())[int(at)] += 1
        del data["failures"]
        data["failures_per_s"] = {c: sorted(n.items()) for c, n in per_second.items()}
        data["samples"] = [
            [round(s.at, 3), s.up_bytes, s.workers_bytes, s.processes] for s in self.samples
        ]
        return data

    def print(self, console: Console, aims: bool = True) -> None:
        summary = Table(title="chaos: requests")
        for column in ("requests", "answered (200)", "failed", "lost (unattributed)"):
            summary.add_column(column, justify="right")
        failed = sum(self.failed_by_cause.values())
        summary.add_row(f"{self.requests:,}", f"{self.answered:,}", f"{failed:,}", str(self.lost))
        console.print(summary)
        causes = Table(title="failures by cause")
        causes.add_column("cause")
        causes.add_column("failed", justify="right")
        for cause, count in sorted(self.failed_by_code.items()):
            causes.add_row(cause, f"{count:,}")
        console.print(causes)
        faults = Table(title="faults (recovery: fault's end to the first 200 after it)")
        for column in (
            "at s",
            "fault",
            "target",
            "lasted s",
            "answering s",
            "recovery s",
            "aim s",
            "failed",
            "detail",
        ):
            faults.add_column(column)
        for f in self.faults:
            aim = AIMS_S.get(f.kind)
            worst = f.worst_recovery_s
            shown = "[red]not recovered[/]" if worst is None else f"{worst:.2f}"
            if aims and aim is not None and worst is not None and worst > aim:
                shown = f"[red]{shown}[/]"
            faults.add_row(
                f"{f.at_s:.0f}",
                f.kind,
                f.target or "-",
                f"{f.duration_s:.1f}",
                "-" if f.answering_s is None else f"{f.answering_s:.2f}",
                shown,
                "" if aim is None else f"{aim:g}",
                str(f.failures),
                f.detail,
            )
        console.print(faults)
        if self.memory is not None:
            m = self.memory
            console.print(
                f"memory (up + workers): first {m.window_s:.0f}s {m.first_mb:.0f} MB, "
                f"last {m.window_s:.0f}s {m.last_mb:.0f} MB ({m.change:+.1%})"
            )
        for line in self.log_errors[:10]:
            console.print(f"up log: {line}", markup=False)


class _Answers:
    """Each endpoint's outcomes in the order they were sent."""

    def __init__(self, outcomes: Sequence[Outcome]) -> None:
        self.by_endpoint: dict[str, list[Outcome]] = {}
        for outcome in outcomes:
            self.by_endpoint.setdefault(outcome.endpoint, []).append(outcome)
        self.sent: dict[str, list[float]] = {}
        for endpoint, listed in self.by_endpoint.items():
            listed.sort(key=lambda o: o.sent)
            self.sent[endpoint] = [o.sent for o in listed]

    def first_ok(self, endpoint: str, since: float, limit_s: float) -> float | None:
        """When the first request sent at or after ``since`` got its 200, within the limit."""
        return self._first(endpoint, since, limit_s, lambda status: status == 200)

    def first_answer(self, endpoint: str, since: float, limit_s: float) -> float | None:
        """When the first request sent at or after ``since`` got any HTTP answer."""
        return self._first(endpoint, since, limit_s, lambda status: status != 0)

    def _first(
        self, endpoint: str, since: float, limit_s: float, wanted: Callable[[int], bool]
    ) -> float | None:
        listed = self.by_endpoint.get(endpoint, [])
        for outcome in listed[bisect_left(self.sent.get(endpoint, []), since) :]:
            if outcome.done - since > limit_s:
                return None
            if wanted(outcome.status):
                return outcome.done
        return None


def _windows(
    faults: Sequence[Fault], answers: _Answers, limit_s: float
) -> list[tuple[int, str, float, float]]:
    """(fault index, endpoint, from, until): when failures on the endpoint are the fault's."""
    found = []
    for index, fault in enumerate(faults):
        targets = fault.watched if fault.target == ALL else (fault.target,)
        for endpoint in targets:
            if endpoint is None:
                continue
            recovered = answers.first_ok(endpoint, fault.end, limit_s)
            until = (fault.end + limit_s if recovered is None else recovered) + GRACE_S
            found.append((index, endpoint, fault.start, until))
    return found


def _cause(outcome: Outcome, windows: list[tuple[int, str, float, float]]) -> int | None:
    """The fault that caused this failure, by index; ``None``: no fault did."""
    for index, endpoint, start, until in windows:
        if endpoint == outcome.endpoint and outcome.done >= start and outcome.sent <= until:
            return index
    return None


def _memory(samples: Sequence[MemorySample], since: float) -> MemoryTrend | None:
    kept = [s for s in samples if s.at >= since]
    if len(kept) < 6:
        return None
    span = kept[-1].at - kept[0].at
    window = min(300.0, span / 3)
    total = [(s.at, (s.up_bytes + s.workers_bytes) / 2**20) for s in kept]
    first = [mb for at, mb in total if at <= kept[0].at + window]
    last = [mb for at, mb in total if at >= kept[-1].at - window]
    head, tail = statistics.median(first), statistics.median(last)
    return MemoryTrend(window, round(head, 1), round(tail, 1), round(tail / head - 1, 4))


def build_report(
    outcomes: Sequence[Outcome],
    faults: Sequence[Fault],
    samples: Sequence[MemorySample],
    *,
    started: float,
    warm: float,
    limit_s: float,
    log_errors: Sequence[str] = (),
) -> ChaosReport:
    """Attribute every failure, measure every recovery; ``warm``: when warm-up ended."""
    answers = _Answers(outcomes)
    windows = _windows(faults, answers, limit_s)
    by_cause: Counter[str] = Counter()
    by_code: Counter[str] = Counter()
    per_fault: Counter[int] = Counter()
    failures: list[tuple[float, str, str]] = []
    examples: list[dict[str, Any]] = []
    for outcome in outcomes:
        if outcome.status == 200:
            continue
        index = _cause(outcome, windows)
        cause = UNATTRIBUTED if index is None else faults[index].kind
        if index is not None:
            per_fault[index] += 1
        by_cause[cause] += 1
        by_code[f"{cause} | {outcome.status} {outcome.code}"] += 1
        failures.append((round(outcome.sent - started, 3), outcome.endpoint, cause))
        if index is None and len(examples) < 20:
            examples.append({**asdict(outcome), "at_s": round(outcome.sent - started, 3)})

    def recovery(fault: Fault, endpoint: str) -> float | None:
        at = answers.first_ok(endpoint, fault.end, limit_s)
        return None if at is None else round(at - fault.end, 3)

    def answering(fault: Fault) -> float | None:
        found = [answers.first_answer(e, fault.end, limit_s) for e in fault.watched]
        if not found or None in found:
            return None
        return round(max(at for at in found if at is not None) - fault.end, 3)

    results = [
        FaultResult(
            kind=f.kind,
            target=f.target,
            at_s=round(f.start - started, 2),
            duration_s=round(f.end - f.start, 2),
            recovery_s={e: recovery(f, e) for e in f.watched},
            answering_s=answering(f),
            failures=per_fault[index],
            detail=f.detail,
            load_avg=round(f.load_avg, 2),
            left_behind=f.left_behind,
        )
        for index, f in enumerate(faults)
    ]
    end = max((o.done for o in outcomes), default=started)
    return ChaosReport(
        started_at=started,
        seconds=round(end - started, 1),
        requests=len(outcomes),
        answered=sum(1 for o in outcomes if o.status == 200),
        failed_by_cause=dict(by_cause),
        failed_by_code=dict(by_code),
        faults=results,
        memory=_memory(samples, warm),
        samples=list(samples),
        failures=failures,
        unattributed_examples=examples,
        log_errors=list(log_errors),
    )
