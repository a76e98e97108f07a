"""``modelplane feedback import`` and ``modelplane outcomes``: ground truth in, metrics out.

Outcomes keyed by request id join what each model version answered, however late they
come (see :mod:`modelplane.observe.outcomes`); ``outcomes`` prints the report of one
endpoint per version and per feature-set version, with every regression and alert.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

from modelplane.cli.context import CliContext, registry_from
from modelplane.cli.output import console, emit_json, handle_errors, table

if TYPE_CHECKING:
    from sqlalchemy import Engine

    from modelplane.observe.outcome_report import OutcomeReport

__all__ = ["feedback_app", "register"]

feedback_app = typer.Typer(help="Outcomes of earlier answers, keyed by request id.",
                           no_args_is_help=True)  # fmt: skip


@feedback_app.command("import")
@handle_errors
def import_feedback(
    ctx: typer.Context,
    file: Annotated[Path, typer.Argument(help="Parquet: request_id, [row], [label], values...")],
    endpoint: Annotated[str, typer.Option(help="The endpoint that answered those requests.")],
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False,
) -> None:
    """Import outcomes from a Parquet file: a ``request_id`` column, an optional ``row``
    (of a multi-row request) and ``label`` (the ground truth), and any other numeric column
    as a business outcome of that name. The file is checked whole before anything is
    stored."""
    from modelplane.observe.outcomes import OutcomeStore

    cli: CliContext = ctx.obj
    started = time.perf_counter()
    with registry_from(cli) as registry:
        _check_endpoint(registry.engine, endpoint)
        stored = OutcomeStore(registry.engine).import_parquet(file, endpoint)
    took = time.perf_counter() - started
    if as_json:
        emit_json({"endpoint": endpoint, "outcomes": stored.outcomes, "labels": stored.labels,
                   "values": stored.values, "seconds": took})  # fmt: skip
        return
    console.print(f"stored {stored} for {endpoint} from {file} ({took:.2f} s)")


def _check_endpoint(engine: Engine, name: str) -> None:
    """Refuse an endpoint that is neither declared nor has answers kept (one deleted since
    still has them, and late labels for them still join), as the gateway's route refuses
    it: outcomes stored under a mistyped name would join nothing, silently."""
    from modelplane.errors import InvalidSpec, NotFound
    from modelplane.observe.outcomes import OutcomeStore
    from modelplane.store.resources import ResourceStore

    resources = ResourceStore(engine)
    try:
        resources.get("Endpoint", name)
        return
    except NotFound:
        pass
    if OutcomeStore(engine).has_answers(name):
        return
    known = [r.name for r in resources.list("Endpoint")]
    hint = f" (endpoints: {', '.join(known[:10])}{', ...' if len(known) > 10 else ''})"
    raise InvalidSpec(
        f"endpoint: no endpoint '{name}'{hint if known else ''}",
        details=[{"field": "endpoint", "problem": f"no endpoint '{name}'"}],
    )


def register(app: typer.Typer) -> None:
    app.add_typer(feedback_app, name="feedback")
    app.command("outcomes")(handle_errors(outcomes))


def outcomes(
    ctx: typer.Context,
    endpoint: Annotated[str, typer.Argument(help="The endpoint.")],
    score: Annotated[
        str | None, typer.Option(help="The output judged (default: probabilities, score...).")
    ] = None,
    task: Annotated[
        str | None, typer.Option(help="classifier or regressor (default: from the labels).")
    ] = None,
    confidence: Annotated[
        float, typer.Option(min=0.5, max=0.999, help="Of the regression test.")
    ] = 0.95,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False,
) -> None:
    """Outcomes by model version and feature-set version: label coverage and latency, the
    task's metrics, business outcomes, the CBPE estimate, and regressions between versions
    (worse with statistical evidence, not a point difference)."""
    from modelplane.observe.outcome_report import outcomes_by_version

    cli: CliContext = ctx.obj
    with registry_from(cli) as registry:
        _check_endpoint(registry.engine, endpoint)
        report = outcomes_by_version(
            registry.engine, endpoint, score=score, task=task, confidence=confidence
        )
    if as_json:
        emit_json(report.to_dict())
        return
    _print(report)


def _print(report: OutcomeReport) -> None:
    if not report.versions:
        console.print(f"{report.endpoint}: no answers kept yet")
        return
    metric_names = sorted({m for v in report.versions for m in v.metrics})
    table(
        f"outcomes of {report.endpoint} ({report.task or 'no labels yet'},"
        f" score: {report.score_output or '-'})",
        ["VERSION", "ANSWERED", "LABELLED", "COVERAGE", "LABEL LATENCY p50", *metric_names,
         "CBPE ACCURACY", "BUSINESS"],
        [
            (v.version, v.answered_rows, v.labelled_rows, _pct(v.coverage),
             _duration(v.label_latency_p50_s), *(_num(v.metrics.get(m)) for m in metric_names),
             _num((v.estimate or {}).get("accuracy")), _business(v.business))
            for v in report.versions
        ],
    )  # fmt: skip
    if report.feature_sets:
        names = sorted({m for f in report.feature_sets for m in f.metrics})
        table(
            "by feature-set version",
            ["FEATURE SET", "LABELLED", *names],
            [(f.feature_set, f.labelled_rows, *(_num(f.metrics.get(m)) for m in names))
             for f in report.feature_sets],
        )  # fmt: skip
    for comparison in report.comparisons:
        c = comparison.comparison
        verdict = "REGRESSION" if c.regressed else "no evidence of regression"
        console.print(
            f"{comparison.candidate} vs {comparison.baseline} on {c.metric.value}:"
            f" {_num(c.candidate)} vs {_num(c.baseline)}, p={_num(c.p_value)}: {verdict}"
        )
    for line in report.notes:
        console.print(f"NOTE {line}", markup=False)
    for line in report.alerts:
        console.print(f"[red]ALERT[/red] {line}")


def _num(value: Any) -> str:
    return "-" if value is None else f"{float(value):.4g}"


def _pct(value: float | None) -> str:
    return "-" if value is None else f"{value:.1%}"


def _duration(seconds: float | None) -> str:
    if seconds is None:
        return "-"
    for unit, size in (("d", 86400.0), ("h", 3600.0), ("m", 60.0)):
        if seconds >= size:
            return f"{seconds / size:.1f}{unit}"
    return f"{seconds:.1f}s"


def _business(business: dict[str, dict[str, float]]) -> str:
    return ", ".join(f"{n} sum {v['sum']:.4g} mean {v['mean']:.4g}" for n, v in business.items())
