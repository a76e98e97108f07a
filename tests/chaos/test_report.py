"""The chaos report's attribution and recovery rules, on made-up outcomes: no server.

A failure is a fault's only on that fault's endpoint (any endpoint for ``ALL``), from the
fault's start to the endpoint's first 200 after the fault's end plus the grace; recovery is
from the fault's end to the answer of the first request sent after it that got a 200.
"""

from __future__ import annotations

import pytest
from tests.chaos.faults import ALL, Fault
from tests.chaos.load import Outcome
from tests.chaos.report import GRACE_S, UNATTRIBUTED, build_report

LIMIT_S = 30.0


def ok(endpoint: str, sent: float, took: float = 0.01) -> Outcome:
    return Outcome(sent, sent + took, endpoint, 200, "", f"{endpoint}:1")


def failed(endpoint: str, sent: float, took: float = 0.01, status: int = 503) -> Outcome:
    return Outcome(sent, sent + took, endpoint, status, "worker_failed", f"{endpoint}:1")


def fault(kind: str, target: str | None, start: float, end: float) -> Fault:
    watched = ("alpha", "beta") if target in (ALL, None) else (target or "",)
    return Fault(kind, target, start, end, watched=watched)


def causes(outcomes: list[Outcome], faults: list[Fault]) -> dict[str, int]:
    report = build_report(outcomes, faults, [], started=0.0, warm=0.0, limit_s=LIMIT_S)
    return report.failed_by_cause


KILL = fault("kill-workers", "alpha", 10.0, 10.0)
"""alpha's workers killed at 10 s; its first request after that answered 200 at 12.01 s."""
AROUND_KILL = [ok("alpha", 9.0), ok("alpha", 12.0), ok("beta", 12.0)]


@pytest.mark.parametrize(
    ("failure", "cause"),
    [
        (failed("alpha", 10.5), "kill-workers"),
        (failed("alpha", 9.9, took=0.5), "kill-workers"),  # in flight at the kill
        (failed("alpha", 12.01 + GRACE_S - 0.1), "kill-workers"),  # within the grace
        (failed("alpha", 12.01 + GRACE_S + 0.1), UNATTRIBUTED),  # after it
        (failed("alpha", 9.0), UNATTRIBUTED),  # answered before the fault began
        (failed("beta", 10.5), UNATTRIBUTED),  # another endpoint
    ],
)
def test_a_failure_is_the_faults_only_on_its_endpoint_until_it_answers_again(
    failure: Outcome, cause: str
) -> None:
    assert causes([*AROUND_KILL, failure], [KILL]) == {cause: 1}


def test_a_restart_of_up_owns_failures_on_every_endpoint_until_each_answers() -> None:
    restart = fault("restart-up", ALL, 10.0, 10.1)
    outcomes = [
        failed("alpha", 10.2, status=0),
        failed("beta", 13.0),
        ok("alpha", 12.0),
        ok("beta", 15.0),
        failed("alpha", 14.0),  # alpha answered at 12.01: past its window
    ]
    assert causes(outcomes, [restart]) == {"restart-up": 2, UNATTRIBUTED: 1}


def test_a_fault_no_endpoint_should_feel_owns_no_failure() -> None:
    terminated = fault("terminate-postgres", None, 10.0, 10.0)
    assert causes([ok("alpha", 11.0), failed("alpha", 10.0)], [terminated]) == {UNATTRIBUTED: 1}


def test_recovery_is_from_the_faults_end_to_the_first_200_sent_after_it() -> None:
    outcomes = [
        ok("alpha", 9.99, took=0.5),  # sent before the kill: proves nothing
        failed("alpha", 10.1),
        ok("alpha", 10.6, took=0.2),
        ok("alpha", 11.0),
    ]
    report = build_report(outcomes, [KILL], [], started=0.0, warm=0.0, limit_s=LIMIT_S)
    [result] = report.faults
    assert result.recovery_s == {"alpha": pytest.approx(0.8)}
    assert result.answering_s == pytest.approx(0.11)
    assert result.failures == 1
    assert report.lost == 0


def test_an_endpoint_that_never_answers_again_is_not_recovered() -> None:
    outcomes = [failed("alpha", 10.0 + step) for step in range(40)]
    report = build_report(outcomes, [KILL], [], started=0.0, warm=0.0, limit_s=LIMIT_S)
    assert report.unrecovered == report.faults
    assert report.faults[0].recovery_s == {"alpha": None}
    # failures past the limit (and the grace) are nobody's: containment did not hold
    assert report.lost == 40 - int(LIMIT_S + GRACE_S) - 1
