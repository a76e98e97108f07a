"""``modelplane why WORKLOAD``: one line saying why a workload is pending, preempted or placed.

It reads the decisions the scheduler already made (admission, placement, preemption), newest
last, and reports the latest one that concerns the workload: each decision carries its own
reason, so this module only chooses and words. :func:`replay` makes those decisions for a
snapshot that has none recorded (the live system's endpoints over its nodes): one cycle of
the same ``admit``, ``place`` and ``preempt`` the simulator calls.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from modelplane.core.admission import Admission, AdmissionSnapshot, AdmissionState, admit
from modelplane.core.cluster import ClusterSnapshot, Running, Workload
from modelplane.core.placement import (
    Placement,
    PlacementRequest,
    PlacementState,
    place,
    queue_order,
)
from modelplane.core.preemption import Preemption, PreemptionRequest, PreemptionState, preempt
from modelplane.spec.policy import Policy

__all__ = ["Decision", "Replay", "replay", "why"]

Decision = Admission | Placement | Preemption


def _line(name: str, decision: Decision) -> str | None:
    if isinstance(decision, Preemption):
        for victim in decision.victims:
            if victim.name == name:
                return f"{name} is preempted: {victim.reason} on {decision.node}"
        if decision.preemptor == name and decision.binding is not None:
            return f"{name} is placed on {decision.node} by preemption: {decision.reason}"
        return None
    if isinstance(decision, Placement):
        if decision.workload != name:
            return None
        if decision.placed:
            return f"{name} is {decision.reason}"
        return f"{name} is pending: {decision.reason}"
    if decision.workload != name:
        return None
    if decision.reclaim:
        return f"{name} is pending: {decision.reason}"
    if decision.admitted:
        return f"{name} is admitted ({decision.reason}) and waits for placement"
    return f"{name} is pending admission: {decision.reason}"


def why(name: str, decisions: Sequence[Decision]) -> str:
    """The latest decision about ``name``, as one line."""
    for decision in reversed(decisions):
        line = _line(name, decision)
        if line is not None:
            return line
    return f"{name}: no scheduling decision mentions it"


@dataclass(frozen=True, slots=True)
class Replay:
    """Every decision of one cycle, in order, and what runs where afterwards."""

    decisions: tuple[Decision, ...]
    running: tuple[Running, ...]
    cluster: ClusterSnapshot


def replay(
    pending: Sequence[Workload],
    cluster: ClusterSnapshot,
    policy: Policy,
    now: float,
    *,
    paused_tiers: frozenset[str] = frozenset(),
) -> Replay:
    """One scheduling cycle over ``pending`` on an empty ``cluster``:

    1. admit the whole queue under the policy's quotas;
    2. place each admitted workload in queue order (highest tier first);
    3. where one does not fit, preempt running ones the policy lets it evict.
    """
    snapshot = AdmissionSnapshot(tuple(pending), paused_tiers=paused_tiers)
    admission, _ = admit(snapshot, policy, now, AdmissionState())
    decisions: list[Decision] = list(admission.admissions)
    admitted = {a.workload: a for a in admission.admitted}
    running: dict[str, Running] = {}
    placement_state, preemption_state = PlacementState(), PreemptionState()
    for workload in queue_order(pending, policy):
        verdict = admitted.get(workload.name)
        if verdict is None:
            continue
        placed, placement_state = place(
            PlacementRequest(cluster, workload), policy.placement, now, placement_state
        )
        decisions.append(placed)
        binding = placed.binding
        if binding is None:
            request = PreemptionRequest(
                cluster, tuple(running.values()), workload, verdict.borrowed
            )
            evicted, preemption_state = preempt(request, policy, now, preemption_state)
            decisions.append(evicted)
            for victim in evicted.victims:
                gone = running.pop(victim.name)
                cluster = cluster.release(gone.workload.demand, gone.binding)
            binding = evicted.binding
        if binding is not None:
            cluster = cluster.bind(workload.demand, binding)
            running[workload.name] = Running(workload, binding, now, None, verdict.borrowed)
    return Replay(tuple(decisions), tuple(running.values()), cluster)
