"""``modelplane why WORKLOAD``: one line saying why a workload is pending, preempted or placed.

It reads the decisions the scheduler already made (admission, placement, preemption), newest
last, and reports the latest one that concerns the workload: each decision carries its own
reason, so this module only chooses and words.
"""

from __future__ import annotations

from collections.abc import Sequence

from modelplane.core.admission import Admission
from modelplane.core.placement import Placement
from modelplane.core.preemption import Preemption

__all__ = ["Decision", "why"]

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
