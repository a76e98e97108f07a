"""Rollout gates: each judges one window of evidence as pass, fail or inconclusive.

A gate reads a :class:`WindowStats` snapshot (what the data plane counted for the new
version, called *canary* here even while it is a shadow, and for *stable* since the step
began) and answers a :class:`GateResult` whose ``reading`` holds the numbers that decided,
so the audit log alone shows why. Missing evidence is inconclusive, never a pass by default,
except where a gate does not apply (shadow comparisons in a canary step).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from enum import StrEnum
from typing import Any

from modelplane.core.drift import Histogram, label_js, psi
from modelplane.core.outcomes import Comparison
from modelplane.spec.contract import SLO
from modelplane.spec.rollout import (
    CustomGate,
    DriftGate,
    ErrorBudgetBurnGate,
    ErrorRateGate,
    GateSpec,
    LatencyGate,
    MinSamplesGate,
    OutcomeGate,
    ShadowDisagreementGate,
)

__all__ = [
    "ArmStats",
    "BurnWindow",
    "CustomResolver",
    "GateResult",
    "Outcome",
    "ShadowStats",
    "WindowStats",
    "evaluate_gate",
    "evaluate_gates",
    "overall",
]


class Outcome(StrEnum):
    """A gate's verdict on one window."""

    PASS = "pass"
    """The evidence is enough and within bounds."""
    FAIL = "fail"
    """The evidence is enough and out of bounds."""
    INCONCLUSIVE = "inconclusive"
    """Not enough evidence yet; keep holding."""


@dataclass(frozen=True, slots=True)
class GateResult:
    name: str
    outcome: Outcome
    reading: Mapping[str, float] = field(default_factory=dict)
    reason: str = ""

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "outcome": self.outcome.value,
            "reading": dict(self.reading),
            "reason": self.reason,
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> GateResult:
        return cls(
            name=str(data["name"]),
            outcome=Outcome(data["outcome"]),
            reading={str(k): float(v) for k, v in data.get("reading", {}).items()},
            reason=str(data.get("reason", "")),
        )


@dataclass(frozen=True, slots=True)
class ArmStats:
    """One version's evidence over the window. Latency in milliseconds."""

    requests: int = 0
    errors: int = 0
    latency_ms: Histogram | None = None
    numeric: Mapping[str, Histogram] = field(default_factory=dict)
    """Numeric outputs by name, over bins both arms share."""
    labels: Mapping[str, Mapping[str, int]] = field(default_factory=dict)
    """Label outputs by name: counts per label."""

    @property
    def error_rate(self) -> float | None:
        return self.errors / self.requests if self.requests else None


@dataclass(frozen=True, slots=True)
class ShadowStats:
    """Shadow answers compared with stable's for the same requests."""

    compared: int = 0
    disagreed: int = 0
    """Pairs whose labels differ (classifiers)."""
    relative_error_sum: float = 0.0
    """Sum over pairs of ``|shadow - stable| / max(|stable|, tiny)`` (regressors)."""


@dataclass(frozen=True, slots=True)
class BurnWindow:
    """The new version's good and total requests over a trailing window."""

    window_s: float
    good: int
    total: int


@dataclass(frozen=True, slots=True)
class WindowStats:
    canary: ArmStats = ArmStats()
    stable: ArmStats = ArmStats()
    shadow: ShadowStats = ShadowStats()
    burn: tuple[BurnWindow, ...] = ()
    since: float | None = None
    """When counting began; evidence from before the step started is not the step's."""
    outcomes: Mapping[str, Comparison] = field(default_factory=dict)
    """Labelled outcomes of the new version against stable's, by ``outcome`` gate label."""


CustomResolver = Callable[[str], Callable[[WindowStats], GateResult]]
"""Turns ``module:function`` into the gate's callable; the controller owns the importing."""


def evaluate_gates(
    gates: Sequence[GateSpec],
    stats: WindowStats,
    *,
    shadow_step: bool,
    slo: SLO | None = None,
    resolver: CustomResolver | None = None,
) -> tuple[GateResult, ...]:
    """Every gate's result; below a min_samples gate's counts, the others are inconclusive."""
    results = tuple(
        evaluate_gate(gate, stats, shadow_step=shadow_step, slo=slo, resolver=resolver)
        for gate in gates
    )
    short = [r for r, g in zip(results, gates, strict=True) if isinstance(g, MinSamplesGate)]
    short = [r for r in short if r.outcome is not Outcome.PASS]
    if not short:
        return results
    why = f"waiting for samples: {short[0].reason}"
    return tuple(
        r if r in short else replace(r, outcome=Outcome.INCONCLUSIVE, reason=f"{why} ({r.reason})")
        for r in results
    )


def overall(results: Sequence[GateResult]) -> Outcome:
    """Fail if any fails, else inconclusive if any is, else pass (no gates pass)."""
    outcomes = {r.outcome for r in results}
    if Outcome.FAIL in outcomes:
        return Outcome.FAIL
    if Outcome.INCONCLUSIVE in outcomes:
        return Outcome.INCONCLUSIVE
    return Outcome.PASS


def evaluate_gate(
    gate: GateSpec,
    stats: WindowStats,
    *,
    shadow_step: bool,
    slo: SLO | None = None,
    resolver: CustomResolver | None = None,
) -> GateResult:
    """One gate's verdict on the window."""
    if isinstance(gate, MinSamplesGate):
        return _min_samples(gate, stats, shadow_step)
    if isinstance(gate, ErrorRateGate):
        return _error_rate(gate, stats)
    if isinstance(gate, LatencyGate):
        return _latency(gate, stats)
    if isinstance(gate, DriftGate):
        return _drift(gate, stats)
    if isinstance(gate, ShadowDisagreementGate):
        return _shadow(gate, stats, shadow_step)
    if isinstance(gate, ErrorBudgetBurnGate):
        return _burn(gate, stats, slo)
    if isinstance(gate, OutcomeGate):
        return _outcome(gate, stats, shadow_step)
    return _custom(gate, stats, resolver)


def _result(gate: GateSpec, failed: list[str], reading: dict[str, float], ok: str) -> GateResult:
    if failed:
        return GateResult(gate.label, Outcome.FAIL, reading, "; ".join(failed))
    return GateResult(gate.label, Outcome.PASS, reading, ok)


def _wait(gate: GateSpec, reason: str, reading: dict[str, float] | None = None) -> GateResult:
    return GateResult(gate.label, Outcome.INCONCLUSIVE, reading or {}, reason)


def _min_samples(gate: MinSamplesGate, stats: WindowStats, shadow_step: bool) -> GateResult:
    reading = {"requests": float(stats.canary.requests), "required": float(gate.requests)}
    missing = []
    if stats.canary.requests < gate.requests:
        missing.append(f"{stats.canary.requests} of {gate.requests} requests")
    if shadow_step:
        reading["shadow_comparisons"] = float(stats.shadow.compared)
        reading["required_comparisons"] = float(gate.shadow_comparisons)
        if stats.shadow.compared < gate.shadow_comparisons:
            missing.append(f"{stats.shadow.compared} of {gate.shadow_comparisons} comparisons")
    if missing:
        return _wait(gate, ", ".join(missing), reading)
    return GateResult(gate.label, Outcome.PASS, reading, "enough samples")


def _error_rate(gate: ErrorRateGate, stats: WindowStats) -> GateResult:
    canary, stable = stats.canary.error_rate, stats.stable.error_rate
    if canary is None:
        return _wait(gate, "no requests answered by the new version yet")
    reading = {"canary_error_rate": canary}
    failed = []
    if gate.max_rate is not None:
        reading["max_rate"] = gate.max_rate
        if canary > gate.max_rate:
            failed.append(f"error rate {canary:.2%} above the limit {gate.max_rate:.2%}")
    if gate.max_ratio is not None:
        if stable is None:
            return _wait(gate, "no stable requests to compare with", reading)
        allowed = stable * gate.max_ratio + gate.tolerance
        reading |= {"stable_error_rate": stable, "allowed_vs_stable": allowed}
        if canary > allowed:
            failed.append(
                f"error rate {canary:.2%} above {gate.max_ratio:g}x stable's {stable:.2%}"
                f" (+{gate.tolerance:.2%})"
            )
    return _result(gate, failed, reading, f"error rate {canary:.2%} within limits")


def _latency(gate: LatencyGate, stats: WindowStats) -> GateResult:
    q = gate.quantile
    canary = stats.canary.latency_ms.quantile(q) if stats.canary.latency_ms else None
    if canary is None:
        return _wait(gate, "no latency samples from the new version yet")
    reading = {"quantile": q, "canary_ms": canary}
    failed = []
    if gate.max_ms is not None:
        reading["max_ms"] = gate.max_ms
        if canary > gate.max_ms:
            failed.append(f"p{q * 100:g} {canary:.1f} ms above the limit {gate.max_ms:g} ms")
    if gate.max_ratio is not None:
        stable = stats.stable.latency_ms.quantile(q) if stats.stable.latency_ms else None
        if stable is None:
            return _wait(gate, "no stable latency samples to compare with", reading)
        reading |= {"stable_ms": stable, "max_ratio": gate.max_ratio}
        if canary > stable * gate.max_ratio:
            failed.append(
                f"p{q * 100:g} {canary:.1f} ms above {gate.max_ratio:g}x stable's {stable:.1f} ms"
            )
    return _result(gate, failed, reading, f"p{q * 100:g} {canary:.1f} ms within limits")


def _drift(gate: DriftGate, stats: WindowStats) -> GateResult:
    c, s = stats.canary, stats.stable
    names = sorted({*c.numeric, *c.labels} & {*s.numeric, *s.labels})
    if gate.output is not None:
        if gate.output not in names:
            return _wait(gate, f"no distribution of output '{gate.output}' from both versions")
        names = [gate.output]
    if not names:
        return GateResult(gate.label, Outcome.PASS, {}, "no output distributions reported")
    reading: dict[str, float] = {}
    failed = []
    for name in names:
        if name in c.numeric and name in s.numeric:
            value, limit, metric = _psi(s.numeric[name], c.numeric[name]), gate.psi_max, "psi"
        elif name in c.labels and name in s.labels:
            value, limit, metric = _js(s.labels[name], c.labels[name]), gate.js_max, "js"
        else:
            return _wait(gate, f"output '{name}' is numeric on one side, labels on the other")
        if value is None:
            return _wait(gate, f"no comparable samples of output '{name}'", reading)
        reading[f"{name}.{metric}"] = value
        if value > limit:
            failed.append(f"output '{name}' drifted: {metric.upper()} {value:.3f} > {limit:g}")
    return _result(gate, failed, reading, f"outputs {', '.join(names)} within drift limits")


def _psi(stable: Histogram, canary: Histogram) -> float | None:
    if stable.bounds != canary.bounds or not stable.total or not canary.total:
        return None
    return psi(stable.counts, canary.counts)


def _js(stable: Mapping[str, int], canary: Mapping[str, int]) -> float | None:
    if not sum(stable.values()) or not sum(canary.values()):
        return None
    return label_js(stable, canary)


def _shadow(gate: ShadowDisagreementGate, stats: WindowStats, shadow_step: bool) -> GateResult:
    if not shadow_step:
        return GateResult(gate.label, Outcome.PASS, {}, "applies to shadow steps only")
    shadow = stats.shadow
    if not shadow.compared:
        return _wait(gate, "no shadow answers compared yet")
    disagreement = shadow.disagreed / shadow.compared
    relative = shadow.relative_error_sum / shadow.compared
    reading = {
        "compared": float(shadow.compared),
        "disagreement": disagreement,
        "mean_relative_error": relative,
    }
    failed = []
    if gate.max_disagreement is not None and disagreement > gate.max_disagreement:
        failed.append(f"shadow disagrees on {disagreement:.2%} (max {gate.max_disagreement:.2%})")
    if gate.max_relative_error is not None and relative > gate.max_relative_error:
        failed.append(
            f"shadow mean relative error {relative:.3f} (max {gate.max_relative_error:g})"
        )
    return _result(gate, failed, reading, "shadow answers agree with stable")


def _burn(gate: ErrorBudgetBurnGate, stats: WindowStats, slo: SLO | None) -> GateResult:
    target = gate.availability or (slo.availability if slo else None)
    if target is None:
        return _wait(gate, "no availability objective: the contract has no SLO")
    if gate.windows_s:
        by_window = {w.window_s: w for w in stats.burn}
        missing = [w for w in gate.windows_s if w not in by_window]
        if missing:
            return _wait(gate, f"no counts for the {missing[0]:g}s window")
        counts = [
            (w, by_window[w].total - by_window[w].good, by_window[w].total) for w in gate.windows_s
        ]
    else:
        counts = [(0.0, stats.canary.errors, stats.canary.requests)]
    reading = {"availability": target, "max_burn_rate": gate.max_burn_rate}
    rates = []
    for window, bad, total in counts:
        if not total:
            return _wait(gate, f"no requests in the {window:g}s window", reading)
        rate = (bad / total) / (1 - target)
        reading[f"burn_{window:g}s" if window else "burn_step"] = rate
        rates.append(rate)
    # all windows must exceed, as in multiwindow alerts: a short spike alone is not a failure
    if all(r > gate.max_burn_rate for r in rates):
        worst = min(rates)
        why = f"burning the error budget at {worst:.1f}x (max {gate.max_burn_rate:g}x)"
        return GateResult(gate.label, Outcome.FAIL, reading, why)
    return GateResult(gate.label, Outcome.PASS, reading, "error budget burn within limits")


def _outcome(gate: OutcomeGate, stats: WindowStats, shadow_step: bool) -> GateResult:
    if shadow_step:
        # a shadow's answers reach no caller, so no outcome is ever about them
        return GateResult(gate.label, Outcome.PASS, {}, "applies to canary steps only")
    found = stats.outcomes.get(gate.label)
    if found is None:
        return _wait(gate, "no outcome evidence read for this step")
    reading = found.to_reading() | {"min_labels": float(gate.min_labels)}
    short = min(found.baseline_rows, found.candidate_rows)
    if short < gate.min_labels or found.worse_by is None:
        return _wait(
            gate,
            f"waiting for labels: {found.candidate_rows} for the new version,"
            f" {found.baseline_rows} for stable, {gate.min_labels} each needed",
            reading,
        )
    metric = found.metric.value
    if found.regressed:
        why = (
            f"{metric} {found.candidate:.4g} vs stable's {found.baseline:.4g}: worse by at least"
            f" {found.bound:.3g} at {found.confidence:.0%} (p={found.p_value:.2g})"
        )
        return GateResult(gate.label, Outcome.FAIL, reading, why)
    ok = f"{metric} {found.candidate:.4g} vs stable's {found.baseline:.4g}: no evidence of worse"
    return GateResult(gate.label, Outcome.PASS, reading, ok)


def _custom(gate: CustomGate, stats: WindowStats, resolver: CustomResolver | None) -> GateResult:
    if resolver is None:
        return _wait(gate, f"custom gate {gate.function} has no resolver here")
    try:
        # typed as object: user code may return anything, whatever its annotation says
        result: object = resolver(gate.function)(stats)
    except Exception as exc:
        # a broken gate is missing evidence, not evidence of a bad release
        return _wait(gate, f"custom gate {gate.function} raised {type(exc).__name__}: {exc}")
    if not isinstance(result, GateResult):
        return _wait(gate, f"custom gate {gate.function} did not return a GateResult")
    return replace(result, name=gate.label)
