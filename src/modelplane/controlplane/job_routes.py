"""The control API's job routes: list, show, logs, cancel and retry.

Jobs are submitted with ``POST /v1/apply`` (kind ``Job``, scope ``jobs`` of the job's team).
Reading needs ``read``, as for every resource; cancelling and retrying need ``jobs`` in the
job's team (or ``admin``). Both are audited with the caller's subject.
"""

from __future__ import annotations

import time
from typing import Annotated, Any

from fastapi import Depends, FastAPI, Request
from pydantic import BaseModel

from modelplane.errors import InvalidSpec
from modelplane.registry.service import Registry
from modelplane.security.scopes import Action, Principal, Scope, authorize
from modelplane.store.jobs import JobState, JobStore, job_document

__all__ = ["JobCommand", "register_jobs"]


class JobCommand(BaseModel):
    reason: str = ""


def _principal(request: Request) -> Principal:
    principal: Principal = request.state.principal
    return principal


Caller = Annotated[Principal, Depends(_principal)]
_COMMANDS = ("cancel", "retry")


def register_jobs(api: FastAPI, registry: Registry) -> None:
    jobs = JobStore(registry.engine)

    @api.get("/v1/jobs")
    def list_jobs(
        who: Caller, team: str | None = None, state: str | None = None
    ) -> list[dict[str, Any]]:
        authorize(who, Action(Scope.READ, "list jobs"))
        states = None
        if state is not None:
            try:
                states = [JobState(state)]
            except ValueError:
                known = ", ".join(s.value for s in JobState)
                raise InvalidSpec(
                    f"state: '{state}' is not one of {known}",
                    details=[{"field": "state", "problem": f"expected one of {known}"}],
                ) from None
        records = jobs.list_jobs(states=states, team=team)
        shards = jobs.shards([r.name for r in records])
        now = time.time()
        return [job_document(r, shards[r.name], now=now) for r in records]

    @api.get("/v1/jobs/{name}")
    def show_job(name: str, who: Caller) -> dict[str, Any]:
        authorize(who, Action(Scope.READ, f"read Job/{name}"))
        record = jobs.get(name)
        shards = jobs.shards([name])[name]
        return job_document(record, shards, now=time.time(), detail=True)

    @api.get("/v1/jobs/{name}/logs")
    def job_logs(name: str, who: Caller, after: int = 0, limit: int = 1000) -> list[dict[str, Any]]:
        authorize(who, Action(Scope.READ, f"read the log of Job/{name}"))
        jobs.get(name)
        return [
            {"id": e.id, "at": e.at, "shard": e.shard, "message": e.message}
            for e in jobs.events(name, after=after, limit=max(1, min(limit, 5000)))
        ]

    @api.post("/v1/jobs/{name}:{command}")
    def job_command(name: str, command: str, body: JobCommand, who: Caller) -> dict[str, Any]:
        """``cancel`` a queued or running job, or ``retry`` a failed or cancelled one."""
        record = jobs.get(name)
        authorize(who, Action(Scope.JOBS, f"{command} Job/{name}", (record.team,)))
        if command not in _COMMANDS:
            raise InvalidSpec(
                f"'{command}' is not a job command (cancel, retry)",
                details=[{"field": "command", "problem": "expected cancel or retry"}],
            )
        act = jobs.cancel if command == "cancel" else jobs.retry
        done = act(name, actor=who.subject, reason=body.reason, now=time.time())
        return {"name": done.name, "state": done.state.value, "reason": done.reason}
