"""Per-endpoint autoscaling after Knative's KPA.

Desired replicas are observed concurrency over target concurrency, averaged over a 60 s
*stable* window. When the 6 s *panic* window asks for at least twice (200%) the ready
replicas, the autoscaler panics: it scales on the short window and never scales down until
the stable window has passed without a panic trigger. Every delay is seconds against
``now``; nothing counts loop ticks, so a late or doubled call changes nothing.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from modelplane.spec.policy import AutoscalingDefaults, Policy

__all__ = ["ScaleConfig", "ScaleDecision", "ScaleSnapshot", "ScaleState", "autoscale"]


@dataclass(frozen=True, slots=True)
class ScaleConfig:
    target_concurrency: float = 10.0
    stable_window_s: float = 60.0
    panic_window_s: float = 6.0
    panic_threshold: float = 2.0
    max_scale_up_rate: float = 1000.0
    max_scale_down_rate: float = 2.0
    scale_to_zero_grace_s: float = 30.0
    min_replicas: int = 0
    max_replicas: int = 100
    scale_to_zero: bool = True

    @classmethod
    def for_tier(
        cls,
        policy: Policy,
        tier: str,
        *,
        min_replicas: int = 0,
        max_replicas: int = 100,
        knobs: AutoscalingDefaults | None = None,
    ) -> ScaleConfig:
        """The policy's KPA knobs with the tier's floor: warm replicas, no scale-to-zero."""
        k = knobs or policy.autoscaling
        rule = policy.tier(tier)
        floor = max(min_replicas, rule.min_warm_replicas, 0 if rule.scale_to_zero else 1)
        return cls(
            target_concurrency=k.target_concurrency,
            stable_window_s=k.stable_window_s,
            panic_window_s=k.panic_window_s,
            panic_threshold=k.panic_threshold,
            max_scale_up_rate=k.max_scale_up_rate,
            max_scale_down_rate=k.max_scale_down_rate,
            scale_to_zero_grace_s=k.scale_to_zero_grace_s,
            min_replicas=floor,
            max_replicas=max(max_replicas, floor),
            scale_to_zero=rule.scale_to_zero and floor == 0,
        )


@dataclass(frozen=True, slots=True)
class ScaleSnapshot:
    """Concurrency in flight across the endpoint's replicas, observed at ``now``."""

    endpoint: str
    ready_replicas: int
    concurrency: float


@dataclass(frozen=True, slots=True)
class ScaleState:
    samples: tuple[tuple[float, float], ...] = ()
    panic_since: float | None = None
    panic_peak: int = 0
    last_busy_at: float | None = None


@dataclass(frozen=True, slots=True)
class ScaleDecision:
    endpoint: str
    desired: int
    panic: bool
    reason: str


def _average(samples: tuple[tuple[float, float], ...], since: float) -> float:
    window = [c for t, c in samples if t > since]
    return sum(window) / len(window) if window else 0.0


def autoscale(
    snapshot: ScaleSnapshot, config: ScaleConfig, now: float, state: ScaleState
) -> tuple[ScaleDecision, ScaleState]:
    """Desired replicas for one endpoint, and the window of samples to keep."""
    samples = tuple(
        s
        for s in (*state.samples, (now, snapshot.concurrency))
        if s[0] > now - config.stable_window_s
    )
    target = config.target_concurrency
    stable = math.ceil(_average(samples, now - config.stable_window_s) / target)
    burst = math.ceil(_average(samples, now - config.panic_window_s) / target)
    ready = max(snapshot.ready_replicas, 1)
    panic_since = state.panic_since
    if burst / ready >= config.panic_threshold:
        panic_since = now
    elif panic_since is not None and now - panic_since >= config.stable_window_s:
        panic_since = None
    if panic_since is not None:
        # In panic never scale down: the burst may come back before the window says so.
        desired = max(burst, state.panic_peak, snapshot.ready_replicas)
        why = f"panic: {burst} wanted over {config.panic_window_s:g}s"
    else:
        desired = stable
        why = f"stable: {stable} wanted over {config.stable_window_s:g}s"
    desired = min(desired, math.ceil(config.max_scale_up_rate * ready))
    if snapshot.ready_replicas > 0:
        desired = max(desired, math.floor(snapshot.ready_replicas / config.max_scale_down_rate))
    busy = now if snapshot.concurrency > 0 else state.last_busy_at
    desired = _bounded(desired, config, now, busy)
    why += f" at target {target:g} -> {desired}"
    new = ScaleState(samples, panic_since, desired if panic_since is not None else 0, busy)
    return ScaleDecision(snapshot.endpoint, desired, panic_since is not None, why), new


def _bounded(desired: int, config: ScaleConfig, now: float, busy: float | None) -> int:
    floor = config.min_replicas
    if not config.scale_to_zero:
        floor = max(floor, 1)
    elif desired == 0 and busy is not None and now - busy < config.scale_to_zero_grace_s:
        # Zero only after a quiet grace period: a lull between requests is not idleness.
        floor = max(floor, 1)
    return max(floor, min(desired, config.max_replicas))
