"""What the rollout controller stores and records: evidence baselines, windows, audit events.

The data plane's route counters are cumulative and restart at zero with their process; a
window is the difference from the step's stored baseline, and counters lower than the
baseline mean a restart, so the window is what was counted since (still after the step
began, so the gates may judge it).
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any

from modelplane.core.drift import Histogram
from modelplane.core.gates import ArmStats, ShadowStats, WindowStats
from modelplane.core.rollout import RolloutDecision, RolloutState
from modelplane.store.audit import AuditEvent

__all__ = [
    "arm_from_dict",
    "arm_to_dict",
    "audit_events",
    "diff_arm",
    "diff_shadow",
    "shadow_from_dict",
    "shadow_to_dict",
    "window",
]


def _hist_to_dict(hist: Histogram) -> dict[str, Any]:
    # JSON has no infinity: the last bound is written as null
    return {
        "bounds": [b if b != float("inf") else None for b in hist.bounds],
        "counts": list(hist.counts),
    }


def _hist_from_dict(data: Mapping[str, Any]) -> Histogram:
    bounds = tuple(float("inf") if b is None else float(b) for b in data["bounds"])
    return Histogram(bounds, tuple(int(c) for c in data["counts"]))


def arm_to_dict(arm: ArmStats | None) -> dict[str, Any] | None:
    if arm is None:
        return None
    return {
        "requests": arm.requests,
        "errors": arm.errors,
        "latency_ms": _hist_to_dict(arm.latency_ms) if arm.latency_ms else None,
        "numeric": {k: _hist_to_dict(h) for k, h in arm.numeric.items()},
        "labels": {k: dict(v) for k, v in arm.labels.items()},
    }


def arm_from_dict(data: Mapping[str, Any] | None) -> ArmStats | None:
    if data is None:
        return None
    latency = data.get("latency_ms")
    return ArmStats(
        requests=int(data["requests"]),
        errors=int(data["errors"]),
        latency_ms=_hist_from_dict(latency) if latency else None,
        numeric={k: _hist_from_dict(h) for k, h in data.get("numeric", {}).items()},
        labels={k: {str(x): int(n) for x, n in v.items()} for k, v in data["labels"].items()},
    )


def _diff_hist(now: Histogram, base: Histogram | None) -> Histogram:
    if base is None or base.bounds != now.bounds:
        return now
    return Histogram(now.bounds, tuple(a - b for a, b in zip(now.counts, base.counts, strict=True)))


def diff_arm(now: ArmStats | None, base: ArmStats | None) -> ArmStats:
    """``now - base``; all of ``now`` when there is no base or the counters restarted."""
    if now is None:
        return ArmStats()
    if base is None or now.requests < base.requests or now.errors < base.errors:
        return now
    labels = {
        name: {k: n - base.labels.get(name, {}).get(k, 0) for k, n in counts.items()}
        for name, counts in now.labels.items()
    }
    return ArmStats(
        requests=now.requests - base.requests,
        errors=now.errors - base.errors,
        latency_ms=_diff_hist(now.latency_ms, base.latency_ms) if now.latency_ms else None,
        numeric={k: _diff_hist(h, base.numeric.get(k)) for k, h in now.numeric.items()},
        labels={k: {x: n for x, n in v.items() if n > 0} for k, v in labels.items()},
    )


def shadow_to_dict(stats: ShadowStats | None) -> dict[str, Any] | None:
    if stats is None:
        return None
    return {
        "compared": stats.compared,
        "disagreed": stats.disagreed,
        "relative_error_sum": stats.relative_error_sum,
    }


def shadow_from_dict(data: Mapping[str, Any] | None) -> ShadowStats | None:
    if data is None:
        return None
    return ShadowStats(
        int(data["compared"]), int(data["disagreed"]), float(data["relative_error_sum"])
    )


def diff_shadow(now: ShadowStats | None, base: ShadowStats | None) -> ShadowStats:
    """``now - base``; all of ``now`` when there is no base or the counters restarted."""
    if now is None:
        return ShadowStats()
    if base is None or now.compared < base.compared or now.disagreed < base.disagreed:
        return now
    return ShadowStats(
        now.compared - base.compared,
        now.disagreed - base.disagreed,
        max(now.relative_error_sum - base.relative_error_sum, 0.0),
    )


def window(
    canary: ArmStats | None,
    canary_base: ArmStats | None,
    stable: ArmStats | None,
    stable_base: ArmStats | None,
    *,
    since: float,
    stable_reference: ArmStats | None = None,
    shadow: ShadowStats | None = None,
    shadow_base: ShadowStats | None = None,
) -> WindowStats:
    """The step's evidence: each arm's counters minus the step's baseline; stable's side
    counts from ``stable_reference`` instead when stable answered nothing in the step."""
    stable_window = diff_arm(stable, stable_base)
    if stable_window.requests == 0 and stable_reference is not None:
        stable_window = diff_arm(stable, stable_reference)
    return WindowStats(
        canary=diff_arm(canary, canary_base),
        stable=stable_window,
        shadow=diff_shadow(shadow, shadow_base),
        since=since,
    )


def audit_events(
    name: str,
    before: RolloutState,
    after: RolloutState,
    decision: RolloutDecision,
    *,
    actor: str,
    now: float,
) -> list[AuditEvent]:
    """One event per action and per new line of the rollout's story, each with the gate
    readings of the pass, so the audit log alone tells what moved and why."""
    at = datetime.fromtimestamp(now, UTC)
    gates = [g.to_dict() for g in (decision.gates or after.gates)]
    where = {"phase": after.phase.value, "step": after.step, "weights": list(after.weights)}
    subject = f"Rollout/{name}"
    events = [
        AuditEvent(
            actor=actor,
            action=f"rollout.{action.kind.value}",
            subject=subject,
            at=at,
            reason=action.reason,
            after={
                **where,
                "stable_weight": action.stable_weight,
                "canary_weight": action.canary_weight,
                "shadow_percent": action.shadow_percent,
                "model": action.model,
                "gates": gates,
            },
        )
        for action in decision.actions
    ]
    seen = set(before.history)
    for entry in after.history:
        if entry not in seen:
            after_data = {**where, "gates": gates, "event_phase": entry.phase.value}
            events.append(
                AuditEvent(actor, "rollout.decision", subject, at, entry.message, None, after_data)
            )
    return events
