"""Rollout gates: each gate's pass, fail and inconclusive, with the readings that decided."""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from typing import Any

import pytest

from modelplane.core.drift import Histogram
from modelplane.core.gates import (
    ArmStats,
    BurnWindow,
    GateResult,
    Outcome,
    ShadowStats,
    WindowStats,
    evaluate_gate,
    evaluate_gates,
    overall,
)
from modelplane.spec.contract import SLO
from modelplane.spec.rollout import (
    CustomGate,
    DriftGate,
    ErrorBudgetBurnGate,
    ErrorRateGate,
    GateSpec,
    LatencyGate,
    MinSamplesGate,
    ShadowDisagreementGate,
)

PASS, FAIL, WAIT = Outcome.PASS, Outcome.FAIL, Outcome.INCONCLUSIVE
MS = (10.0, 50.0, 100.0, 200.0, math.inf)
BINS = (0.25, 0.5, 0.75, math.inf)


@dataclass
class Window:
    """A fluent builder of :class:`WindowStats`; healthy and identical arms by default."""

    arms: dict[str, ArmStats] = field(
        default_factory=lambda: {"canary": ArmStats(1000, 2), "stable": ArmStats(10_000, 20)}
    )
    shadow: ShadowStats = field(default_factory=ShadowStats)
    burn: tuple[BurnWindow, ...] = ()

    def arm(self, which: str, **changes: Any) -> Window:
        self.arms[which] = replace(self.arms[which], **changes)
        return self

    def latency(self, which: str, *counts: int) -> Window:
        return self.arm(which, latency_ms=Histogram(MS, counts))

    def scores(self, which: str, *counts: int) -> Window:
        return self.arm(which, numeric={"score": Histogram(BINS, counts)})

    def labels(self, which: str, **counts: int) -> Window:
        return self.arm(which, labels={"label": counts})

    def compared(self, compared: int, disagreed: int = 0, rel_sum: float = 0.0) -> Window:
        self.shadow = ShadowStats(compared, disagreed, rel_sum)
        return self

    def burning(self, window_s: float, good: int, total: int) -> Window:
        self.burn = (*self.burn, BurnWindow(window_s, good, total))
        return self

    def build(self) -> WindowStats:
        return WindowStats(self.arms["canary"], self.arms["stable"], self.shadow, self.burn)


def judge(gate: GateSpec, window: Window, *, shadow_step: bool = False) -> GateResult:
    return evaluate_gate(gate, window.build(), shadow_step=shadow_step, slo=SLO(availability=0.99))


CASES: dict[str, tuple[GateSpec, Window, Outcome, str]] = {
    "error rate: like stable passes": (ErrorRateGate(), Window(), PASS, "within"),
    "error rate: above the absolute limit": (
        ErrorRateGate(max_ratio=None),
        Window().arm("canary", errors=50),
        FAIL,
        "above the limit 1.00%",
    ),
    "error rate: above 2x stable": (
        ErrorRateGate(max_rate=None),
        Window().arm("canary", errors=6),
        FAIL,
        "above 2x stable",
    ),
    "error rate: one error against a clean stable is tolerated": (
        ErrorRateGate(),
        Window().arm("canary", errors=1).arm("stable", errors=0),
        PASS,
        "within",
    ),
    "error rate: no canary requests": (
        ErrorRateGate(),
        Window().arm("canary", requests=0, errors=0),
        WAIT,
        "no requests",
    ),
    "error rate: no stable to compare": (
        ErrorRateGate(),
        Window().arm("stable", requests=0, errors=0),
        WAIT,
        "no stable",
    ),
    "latency: like stable passes": (
        LatencyGate(),
        Window().latency("canary", 90, 9, 1, 0, 0).latency("stable", 90, 9, 1, 0, 0),
        PASS,
        "within",
    ),
    "latency: p99 over the absolute limit": (
        LatencyGate(max_ms=50.0, max_ratio=None),
        Window().latency("canary", 50, 40, 10, 0, 0),
        FAIL,
        "above the limit 50 ms",
    ),
    "latency: p99 over 1.5x stable": (
        LatencyGate(),
        Window().latency("canary", 0, 0, 90, 10, 0).latency("stable", 90, 9, 1, 0, 0),
        FAIL,
        "1.5x stable",
    ),
    "latency: no canary histogram": (LatencyGate(), Window(), WAIT, "no latency"),
    "drift: same scores pass": (
        DriftGate(),
        Window().scores("canary", 25, 25, 25, 25).scores("stable", 250, 250, 250, 250),
        PASS,
        "score",
    ),
    "drift: shifted scores fail on PSI": (
        DriftGate(),
        Window().scores("canary", 5, 10, 25, 60).scores("stable", 250, 250, 250, 250),
        FAIL,
        "output 'score' drifted: PSI",
    ),
    "drift: shifted labels fail on JS": (
        DriftGate(output="label"),
        Window().labels("canary", ok=50, fraud=50).labels("stable", ok=990, fraud=10),
        FAIL,
        "output 'label' drifted: JS",
    ),
    "drift: a named output not reported waits": (
        DriftGate(output="label"),
        Window(),
        WAIT,
        "no distribution of output 'label'",
    ),
    "drift: bins that differ cannot be compared": (
        DriftGate(),
        Window()
        .scores("canary", 1, 1, 1, 1)
        .arm("stable", numeric={"score": Histogram((1.0, math.inf), (1, 1))}),
        WAIT,
        "no comparable samples",
    ),
    "drift: nothing reported passes with the reason": (
        DriftGate(),
        Window(),
        PASS,
        "no output distributions",
    ),
    "shadow: agreeing shadow passes": (
        ShadowDisagreementGate(),
        Window().compared(1000, disagreed=10),
        PASS,
        "agree",
    ),
    "shadow: label disagreement fails": (
        ShadowDisagreementGate(),
        Window().compared(1000, disagreed=80),
        FAIL,
        "disagrees on 8.00%",
    ),
    "shadow: regressor relative error fails": (
        ShadowDisagreementGate(),
        Window().compared(100, rel_sum=25.0),
        FAIL,
        "mean relative error 0.250",
    ),
    "shadow: nothing compared waits": (ShadowDisagreementGate(), Window(), WAIT, "no shadow"),
    "min samples: enough": (MinSamplesGate(requests=1000), Window(), PASS, "enough"),
    "min samples: too few": (MinSamplesGate(requests=1001), Window(), WAIT, "1000 of 1001"),
    "burn: step window within budget": (ErrorBudgetBurnGate(), Window(), PASS, "within"),
    "burn: step window burning": (
        ErrorBudgetBurnGate(max_burn_rate=2.0),
        Window().arm("canary", errors=30),
        FAIL,
        "3.0x",
    ),
    "burn: only the short window burning passes": (
        ErrorBudgetBurnGate(max_burn_rate=2.0, windows_s=(300.0, 3600.0)),
        Window().burning(300, 900, 1000).burning(3600, 9950, 10_000),
        PASS,
        "within",
    ),
    "burn: both windows burning fails": (
        ErrorBudgetBurnGate(max_burn_rate=2.0, windows_s=(300.0, 3600.0)),
        Window().burning(300, 900, 1000).burning(3600, 9700, 10_000),
        FAIL,
        "3.0x",
    ),
    "burn: a window not reported waits": (
        ErrorBudgetBurnGate(windows_s=(300.0,)),
        Window(),
        WAIT,
        "300s",
    ),
}


@pytest.mark.parametrize("case", CASES, ids=list(CASES))
def test_gate(case: str) -> None:
    gate, window, outcome, reason = CASES[case]
    result = judge(gate, window, shadow_step=gate.label == "shadow_disagreement")
    assert result.outcome is outcome, result
    assert reason in result.reason
    assert result.name == gate.label


def test_readings_hold_the_numbers_that_decided() -> None:
    result = judge(ErrorRateGate(), Window().arm("canary", errors=6))
    assert result.reading == {
        "canary_error_rate": 0.006,
        "max_rate": 0.01,
        "stable_error_rate": 0.002,
        "allowed_vs_stable": pytest.approx(0.005),
    }
    burn = judge(ErrorBudgetBurnGate(max_burn_rate=2.0), Window().arm("canary", errors=30))
    assert burn.reading["burn_step"] == pytest.approx(3.0)


def test_shadow_gate_does_not_apply_to_canary_steps() -> None:
    result = judge(ShadowDisagreementGate(), Window(), shadow_step=False)
    assert result.outcome is PASS
    assert "shadow steps only" in result.reason


def test_min_samples_counts_shadow_comparisons_in_shadow_steps() -> None:
    gate = MinSamplesGate(requests=10, shadow_comparisons=50)
    assert judge(gate, Window().compared(49), shadow_step=True).outcome is WAIT
    assert judge(gate, Window().compared(50), shadow_step=True).outcome is PASS


def test_burn_gate_without_an_objective_waits() -> None:
    result = evaluate_gate(ErrorBudgetBurnGate(), Window().build(), shadow_step=False)
    assert result.outcome is WAIT
    assert "no availability objective" in result.reason


def test_min_samples_makes_every_other_gate_inconclusive() -> None:
    gates = (MinSamplesGate(requests=5000), ErrorRateGate())
    results = evaluate_gates(gates, Window().arm("canary", errors=500).build(), shadow_step=False)
    assert [r.outcome for r in results] == [WAIT, WAIT]
    assert results[1].reason.startswith("waiting for samples: 1000 of 5000 requests")
    assert results[1].reading["canary_error_rate"] == 0.5  # still shown
    assert overall(results) is WAIT


def test_overall_outcome() -> None:
    def r(o: Outcome) -> GateResult:
        return GateResult("g", o)

    assert overall([]) is PASS
    assert overall([r(PASS), r(WAIT)]) is WAIT
    assert overall([r(WAIT), r(FAIL), r(PASS)]) is FAIL


def custom_resolver(
    table: dict[str, Callable[[WindowStats], GateResult]],
) -> Callable[[str], Callable[[WindowStats], GateResult]]:
    return table.__getitem__


def _business_metric(stats: WindowStats) -> GateResult:
    ok = stats.canary.requests >= 100
    return GateResult("anything", PASS if ok else FAIL, {"requests": stats.canary.requests})


def _broken(stats: WindowStats) -> GateResult:
    raise RuntimeError("metric backend down")


def _not_a_result(stats: WindowStats) -> Any:
    return True


@pytest.mark.parametrize(
    ("function", "outcome", "reason"),
    [
        ("gates:business", PASS, ""),
        ("gates:broken", WAIT, "raised RuntimeError: metric backend down"),
        ("gates:bad", WAIT, "did not return a GateResult"),
    ],
)
def test_custom_gates_come_from_the_injected_resolver(
    function: str, outcome: Outcome, reason: str
) -> None:
    resolve = custom_resolver(
        {"gates:business": _business_metric, "gates:broken": _broken, "gates:bad": _not_a_result}
    )
    gate = CustomGate(function=function, name="revenue")
    result = evaluate_gate(gate, Window().build(), shadow_step=False, resolver=resolve)
    assert result.outcome is outcome
    assert result.name == "revenue"
    assert reason in result.reason


def test_custom_gate_without_a_resolver_waits() -> None:
    result = evaluate_gate(CustomGate(function="m:f"), Window().build(), shadow_step=False)
    assert (result.outcome, result.name) == (WAIT, "f")


def test_gate_result_round_trips_through_a_dict() -> None:
    result = GateResult("latency", FAIL, {"canary_ms": 120.0}, "too slow")
    assert GateResult.from_dict(result.to_dict()) == result
