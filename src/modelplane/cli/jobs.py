"""``modelplane jobs submit | list | show | logs | cancel | retry``: batch jobs.

Each command works against the embedded store, or against the control API after
``modelplane login``, with the same output. ``submit`` checks the job (model, dataset,
columns against the model's signature, output location) before it is recorded, and pins
an alias to its version; jobs run under ``modelplane up``. ``show`` draws the progress
(shards, rows, rows/s, ETA); ``--watch`` follows it until the job ends.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, Protocol

import typer

from modelplane.cli.context import CliContext, registry_from
from modelplane.cli.output import console, emit_json, handle_errors, table
from modelplane.errors import InvalidSpec

if TYPE_CHECKING:
    from modelplane.registry.service import Registry

__all__ = ["app", "progress_line", "submitted_line"]

app = typer.Typer(help="Batch jobs: submit, follow, cancel and retry.", no_args_is_help=True)
JsonFlag = Annotated[bool, typer.Option("--json", help="Print JSON.")]
JobName = Annotated[str, typer.Argument(help="The job.")]
WhyText = Annotated[str, typer.Option(help="Why: recorded in the audit log.")]
WatchFlag = Annotated[bool, typer.Option("--watch", help="Follow the progress until the job ends.")]
WatchTimeout = Annotated[float, typer.Option(help="Most seconds --watch follows.")]
_FINISHED = frozenset({"succeeded", "failed", "cancelled"})


class _Jobs(Protocol):
    """What the commands need, from the store or from the control API."""

    def submit(self, documents: list[dict[str, Any]], reason: str) -> list[dict[str, Any]]: ...
    def list_jobs(self, team: str | None, state: str | None) -> list[dict[str, Any]]: ...
    def show(self, name: str) -> dict[str, Any]: ...
    def logs(self, name: str, after: int) -> list[dict[str, Any]]: ...
    def command(self, name: str, command: str, reason: str) -> dict[str, Any]: ...


class _LocalJobs:
    def __init__(self, registry: Registry, actor: str, home: Path) -> None:
        from modelplane.store.jobs import JobStore

        self.registry = registry
        self.actor = actor
        self.home = home
        self.jobs = JobStore(registry.engine)

    def submit(self, documents: list[dict[str, Any]], reason: str) -> list[dict[str, Any]]:
        from modelplane.controlplane.apply import Applier
        from modelplane.store.resources import ResourceStore
        from modelplane.system.jobs import submit_check

        check = submit_check(self.registry, self.home)
        applier = Applier(
            self.registry, ResourceStore(self.registry.engine), actor=self.actor, job_check=check
        )
        return [
            {"kind": r.kind, "name": r.name, "outcome": r.outcome, "resolved": dict(r.resolved)}
            for r in applier.apply_all(documents, reason=reason)
        ]

    def list_jobs(self, team: str | None, state: str | None) -> list[dict[str, Any]]:
        from modelplane.store.jobs import JobState, job_document

        states = None if state is None else [_state(state, JobState)]
        records = self.jobs.list_jobs(states=states, team=team)
        shards = self.jobs.shards([r.name for r in records])
        return [job_document(r, shards[r.name], now=time.time()) for r in records]

    def show(self, name: str) -> dict[str, Any]:
        from modelplane.store.jobs import job_document

        record = self.jobs.get(name)
        shards = self.jobs.shards([name])[name]
        return job_document(record, shards, now=time.time(), detail=True)

    def logs(self, name: str, after: int) -> list[dict[str, Any]]:
        self.jobs.get(name)
        return [
            {"id": e.id, "at": e.at, "shard": e.shard, "message": e.message}
            for e in self.jobs.events(name, after=after)
        ]

    def command(self, name: str, command: str, reason: str) -> dict[str, Any]:
        act = self.jobs.cancel if command == "cancel" else self.jobs.retry
        done = act(name, actor=self.actor, reason=reason, now=time.time())
        return {"name": done.name, "state": done.state.value, "reason": done.reason}


class _RemoteJobs:
    def __init__(self, remote: Any) -> None:
        self.remote = remote

    def submit(self, documents: list[dict[str, Any]], reason: str) -> list[dict[str, Any]]:
        found: list[dict[str, Any]] = self.remote.apply(
            documents, reason=reason, allow_breaking=False
        )
        return found

    def list_jobs(self, team: str | None, state: str | None) -> list[dict[str, Any]]:
        params = {k: v for k, v in (("team", team), ("state", state)) if v}
        found: list[dict[str, Any]] = self.remote.request("GET", "/v1/jobs", params=params)
        return found

    def show(self, name: str) -> dict[str, Any]:
        found: dict[str, Any] = self.remote.request("GET", f"/v1/jobs/{name}")
        return found

    def logs(self, name: str, after: int) -> list[dict[str, Any]]:
        path = f"/v1/jobs/{name}/logs"
        found: list[dict[str, Any]] = self.remote.request("GET", path, params={"after": after})
        return found

    def command(self, name: str, command: str, reason: str) -> dict[str, Any]:
        path = f"/v1/jobs/{name}:{command}"
        done: dict[str, Any] = self.remote.request("POST", path, json={"reason": reason})
        return done


def _state(text: str, kind: Any) -> Any:
    try:
        return kind(text)
    except ValueError:
        known = ", ".join(s.value for s in kind)
        raise InvalidSpec(
            f"--state: '{text}' is not one of {known}",
            details=[{"field": "state", "problem": f"expected one of {known}"}],
        ) from None


@contextmanager
def _jobs(ctx: typer.Context) -> Iterator[_Jobs]:
    cli: CliContext = ctx.obj
    if cli.remote is not None:
        from modelplane.cli.remote import Remote

        with Remote(cli.remote) as remote:
            yield _RemoteJobs(remote)
        return
    with registry_from(cli) as registry:
        yield _LocalJobs(registry, cli.actor, cli.settings.home)


def _documents(path: Path, overwrite: bool) -> list[dict[str, Any]]:
    from modelplane.backends.jobs.planner import absolute_urls
    from modelplane.controlplane.apply import load_documents

    documents = []
    for found in load_documents(path):
        # relative paths mean the submitter's folder, wherever the control plane runs
        document = absolute_urls({"kind": "Job", **found}, str(Path.cwd()))
        if document["kind"] != "Job":
            raise InvalidSpec(
                f"{path}: kind '{document['kind']}' is not a Job (use modelplane apply)",
                details=[{"field": "kind", "problem": "expected Job"}],
            )
        work = document.get("work")
        if overwrite and isinstance(work, dict) and isinstance(work.get("output"), dict):
            document["work"] = {**work, "output": {**work["output"], "overwrite": True}}
        documents.append(document)
    return documents


@app.command("submit")
@handle_errors
def submit(
    ctx: typer.Context,
    file: Annotated[Path, typer.Argument(help="A Job YAML file (several documents allowed).")],
    overwrite: Annotated[
        bool, typer.Option("--overwrite", help="Replace another job's finished output.")
    ] = False,
    reason: WhyText = "",
    watch: WatchFlag = False,
    timeout: WatchTimeout = 3600.0,
    as_json: JsonFlag = False,
) -> None:
    """Check and queue jobs (they run under 'modelplane up')."""
    documents = _documents(file, overwrite)
    with _jobs(ctx) as jobs:
        results = jobs.submit(documents, reason)
        if as_json:
            emit_json(results)
        else:
            for result in results:
                console.print(submitted_line(result), markup=False)
        if watch:
            for result in results:
                _watch(jobs, result["name"], timeout)


@app.command("list")
@handle_errors
def list_jobs(
    ctx: typer.Context,
    team: Annotated[str | None, typer.Option(help="Only this team's jobs.")] = None,
    state: Annotated[
        str | None, typer.Option(help="pending, queued, running, succeeded, failed, cancelled")
    ] = None,
    as_json: JsonFlag = False,
) -> None:
    """Every job, oldest first: state, progress, queue wait and why it waits."""
    with _jobs(ctx) as jobs:
        found = jobs.list_jobs(team, state)
    if as_json:
        emit_json(found)
        return
    if not found:
        # An empty table tells a newcomer nothing; say what would fill it.
        console.print("No jobs. Submit one with `modelplane jobs submit FILE` (see docs/jobs.md).")
        return
    table(
        None,
        ["JOB", "TEAM", "TIER", "STATE", "SHARDS", "ROWS", "ROWS/S", "WAITED", "REASON"],
        [
            (
                j["name"], j["team"], j["tier"], j["state"],
                f"{j['shards']['done']}/{j['shards']['total']}",
                f"{j['rows']['done']}/{j['rows']['total'] or '?'}",
                f"{j['rows_per_s']:.0f}", f"{j['queue_wait_s']:.1f}s", j["reason"],
            )
            for j in found
        ],
    )  # fmt: skip


def submitted_line(result: dict[str, Any]) -> str:
    """``job/x submitted``, with ``(model fraud@champion -> fraud:1)`` where an alias was
    pinned: a fixed version pinned to itself says nothing."""
    pins = ", ".join(
        f"{ref} -> {t['ref']}" for ref, t in result.get("resolved", {}).items() if ref != t["ref"]
    )
    done = "submitted" if result["outcome"] == "created" else result["outcome"]
    return f"job/{result['name']} {done}" + (f" (model {pins})" if pins else "")


def progress_line(job: dict[str, Any]) -> str:
    """``shards 3/4 | rows 750/1000 | 1,234 rows/s | ETA 0:00:12``"""
    shards, rows = job["shards"], job["rows"]
    total = rows["total"] if rows["total"] is not None else "?"
    eta = job.get("eta_s")
    eta_text = "-" if eta is None else time.strftime("%H:%M:%S", time.gmtime(eta))
    return (
        f"shards {shards['done']}/{shards['total']} | rows {rows['done']}/{total} |"
        f" {job['rows_per_s']:,.0f} rows/s | ETA {eta_text}"
    )


def _progress(job: dict[str, Any]) -> Any:
    from rich.progress import BarColumn, Progress, TextColumn

    bar = Progress(
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        TextColumn("{task.percentage:>3.0f}%"),
        TextColumn("{task.fields[line]}"),
        console=console,
    )
    total = job["rows"]["total"] or job["shards"]["total"] or 1
    done = job["rows"]["done"] if job["rows"]["total"] else job["shards"]["done"]
    bar.add_task(job["name"], total=total, completed=done, line=progress_line(job))
    return bar


@app.command("show")
@handle_errors
def show(
    ctx: typer.Context,
    name: JobName,
    watch: WatchFlag = False,
    timeout: WatchTimeout = 3600.0,
    as_json: JsonFlag = False,
) -> None:
    """One job: its state and why, model pinned, progress, shards and what they used."""
    with _jobs(ctx) as jobs:
        if watch and not as_json:
            _watch(jobs, name, timeout)
        job = jobs.show(name)
    if as_json:
        emit_json(job)
        return
    head = f"job/{job['name']}[/] team {job['team']}, tier {job['tier']}"
    console.print(f"[bold]{head}: {job['state']}")
    console.print(f"  reason    {job['reason']}")
    if job["model"]:
        console.print(f"  model     {job['model']} ({job['digest']})")
    # a job refused at planning never got an output folder
    console.print(f"  output    {job['output'] or '-'}", markup=False)
    console.print(f"  waited    {job['queue_wait_s']:.1f}s in the queue")
    used = job["used"]
    console.print(
        f"  used      {used['wall_seconds']:.1f} shard-seconds, {used['cpu_seconds']:.1f} CPU-s,"
        f" peak {used['peak_memory_mib']:.0f} MiB"
    )
    if not watch:
        bar = _progress(job)
        console.print(bar.get_renderable())
    table(
        None,
        ["SHARD", "STATE", "ROWS", "ATTEMPTS", "FAILURES", "BORROWED", "LAST ERROR"],
        [
            (s["index"], s["state"], s["rows"], s["attempts"], s["failures"],
             "yes" if s["borrowed"] else "", s["last_error"] or "")
            for s in job.get("shard_list", [])
        ],
    )  # fmt: skip


def _watch(jobs: _Jobs, name: str, timeout_s: float) -> None:
    """A live progress bar until the job ends or ``timeout_s`` passes."""
    deadline = time.monotonic() + timeout_s
    job = jobs.show(name)
    bar = _progress(job)
    [task] = bar.task_ids
    with bar:
        while time.monotonic() < deadline:
            job = jobs.show(name)
            total = job["rows"]["total"] or job["shards"]["total"] or 1
            done = job["rows"]["done"] if job["rows"]["total"] else job["shards"]["done"]
            bar.update(task, total=total, completed=done, line=progress_line(job))
            if job["state"] in _FINISHED:
                break
            time.sleep(0.5)
    console.print(f"job/{name} {job['state']}: {job['reason']}")


@app.command("logs")
@handle_errors
def logs(
    ctx: typer.Context,
    name: JobName,
    follow: Annotated[
        bool, typer.Option("--follow", "-f", help="Keep printing until the job ends.")
    ] = False,
    timeout: Annotated[float, typer.Option(help="Most seconds --follow follows.")] = 3600.0,
    as_json: JsonFlag = False,
) -> None:
    """The job's log: submit, plan, admissions, each shard's attempts, retries, preemptions."""
    deadline = time.monotonic() + timeout
    after = 0
    with _jobs(ctx) as jobs:
        while True:
            events = jobs.logs(name, after)
            if as_json:
                emit_json(events)
            else:
                for e in events:
                    stamp = time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime(e["at"]))
                    console.print(f"{stamp}  {e['message']}", markup=False)
            after = events[-1]["id"] if events else after
            if not follow or time.monotonic() >= deadline:
                return
            if jobs.show(name)["state"] in _FINISHED and not events:
                return
            time.sleep(0.5)


def _command(ctx: typer.Context, name: str, command: str, reason: str, as_json: bool) -> None:
    with _jobs(ctx) as jobs:
        done = jobs.command(name, command, reason)
    if as_json:
        emit_json(done)
    else:
        console.print(f"job/{done['name']} {done['state']}: {done['reason']}")


@app.command("cancel")
@handle_errors
def cancel(
    ctx: typer.Context,
    name: JobName,
    reason: WhyText = "",
    as_json: JsonFlag = False,
) -> None:
    """Stop a queued or running job; finished shards stay, running ones are stopped."""
    _command(ctx, name, "cancel", reason, as_json)


@app.command("retry")
@handle_errors
def retry(
    ctx: typer.Context,
    name: JobName,
    reason: WhyText = "",
    as_json: JsonFlag = False,
) -> None:
    """Run a failed or cancelled job again from its finished shards."""
    _command(ctx, name, "retry", reason, as_json)
