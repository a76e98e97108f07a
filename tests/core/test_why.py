from __future__ import annotations

from modelplane.core.admission import Admission
from modelplane.core.cluster import Binding
from modelplane.core.placement import Placement
from modelplane.core.preemption import Preemption, Victim
from modelplane.core.why import why

PENDING = Placement("w", None, None, "no node fits (2 nodes: 2 lack gpu)")
PLACED = Placement("w", Binding(0, (1,)), "n0", "placed on n0 gpus [1] by fgd (score 0)")
EVICTED = Preemption(
    "crit",
    "n0",
    (Victim("w", "preempted by crit (critical): lower tier batch", 3.0),),
    Binding(0, (1,)),
    "evicting 1 workload(s) on n0 for crit",
)


def test_latest_decision_wins() -> None:
    assert why("w", [PENDING]) == "w is pending: no node fits (2 nodes: 2 lack gpu)"
    assert why("w", [PENDING, PLACED]) == "w is placed on n0 gpus [1] by fgd (score 0)"
    assert why("w", [PLACED, EVICTED]) == (
        "w is preempted: preempted by crit (critical): lower tier batch on n0"
    )
    assert why("crit", [EVICTED]).startswith("crit is placed on n0 by preemption")


def test_admission_reasons() -> None:
    quota = Admission("w", False, "gpu: 7000 would exceed a's limit 6000")
    assert why("w", [quota]) == "w is pending admission: gpu: 7000 would exceed a's limit 6000"
    reclaim = Admission("w", False, "reclaiming gpu lent to the cohort", reclaim=("b",))
    assert why("w", [reclaim]) == "w is pending: reclaiming gpu lent to the cohort"
    assert why("w", [Admission("w", True, "admitted within nominal quota")]).endswith(
        "waits for placement"
    )
    assert why("zzz", [PLACED]) == "zzz: no scheduling decision mentions it"
