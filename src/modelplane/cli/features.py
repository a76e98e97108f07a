"""``modelplane features``: push, materialize and look up feature values."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

from modelplane.cli.context import CliContext, registry_from
from modelplane.cli.output import console, emit_json, handle_errors, table
from modelplane.errors import InvalidSpec

if TYPE_CHECKING:
    from modelplane.features.base import OnlineStore
    from modelplane.spec.featureset import FeatureSet

__all__ = ["app"]

app = typer.Typer(help="Feature values in the online store.", no_args_is_help=True)
SetArg = Annotated[str, typer.Argument(help="Feature set: name (latest) or name:version.")]


@contextmanager
def _opened(cli: CliContext, ref: str) -> Iterator[tuple[FeatureSet, OnlineStore]]:
    from modelplane.controlplane.featuresets import resolve_feature_set
    from modelplane.features.stores import open_online_store
    from modelplane.store.resources import ResourceStore

    with registry_from(cli) as registry:
        featureset = resolve_feature_set(ResourceStore(registry.engine), ref)
    store = open_online_store(cli.settings.resolved_feature_store_url())
    try:
        yield featureset, store
    finally:
        store.close()


def _read_rows(path: Path) -> list[Any]:
    """JSON lines (or one JSON list) of ``{"key", "event_time", "values"}``."""
    try:
        text = path.read_text(encoding="utf-8")
        items = (
            json.loads(text)
            if text.lstrip().startswith("[")
            else [json.loads(line) for line in text.splitlines() if line.strip()]
        )
    except (OSError, json.JSONDecodeError) as exc:
        raise InvalidSpec(f"{path}: {exc}") from None
    now = time.time()
    return [
        (item.get("key"), item.get("event_time", now), item.get("values"))
        if isinstance(item, dict)
        else item
        for item in items
    ]


@app.command("push")
@handle_errors
def push_cmd(
    ctx: typer.Context,
    featureset: SetArg,
    file: Annotated[
        Path, typer.Option("--file", "-f", help="JSON lines of {key, event_time, values}.")
    ],
) -> None:
    """Write rows; an older event time never overwrites a newer value."""
    from modelplane.features.ingest import push

    with _opened(ctx.obj, featureset) as (resolved, store):
        result = push(store, resolved, _read_rows(file))
    console.print(
        f"{resolved.ref}: {result.written} written, {result.skipped_older} older "
        "than stored (skipped)"
    )


@app.command("materialize")
@handle_errors
def materialize_cmd(
    ctx: typer.Context,
    featureset: SetArg,
    source: Annotated[
        Path,
        typer.Option(
            "--from", help="CSV or Parquet with the entity key, event_time and feature columns."
        ),
    ],
    checkpoint: Annotated[
        Path | None, typer.Option(help="Resume file (default: beside the source).")
    ] = None,
    batch_rows: Annotated[int, typer.Option(min=1, help="Rows per write.")] = 10_000,
) -> None:
    """Backfill the online store from a file, with progress; resumable after interruption."""
    from modelplane.features.materialize import materialize

    marker = checkpoint or source.with_name(source.name + ".checkpoint")
    with _opened(ctx.obj, featureset) as (resolved, store):
        report = materialize(
            store, resolved, source, batch_rows=batch_rows, checkpoint=marker, console=console
        )
    resumed = f", resumed at batch {report.resumed_from_batch}" if report.resumed_from_batch else ""
    console.print(
        f"{resolved.ref}: {report.rows:,} rows in {report.seconds:.1f} s "
        f"({report.rows_per_s:,.0f} rows/s){resumed}"
    )


@app.command("get")
@handle_errors
def get_cmd(
    ctx: typer.Context,
    featureset: SetArg,
    keys: Annotated[list[str], typer.Argument(help="Entity keys.")],
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False,
) -> None:
    """Look up values with their age and freshness."""
    from modelplane.features.freshness import classify
    from modelplane.spec.featureset import check_value

    with _opened(ctx.obj, featureset) as (resolved, store):
        typed = [check_value(resolved.entity.dtype, _key(k)) for k in keys]
        lookups = store.read(
            resolved.name, resolved.version, typed, resolved.feature_names, time.time()
        )
    if as_json:
        emit_json(
            [
                {
                    "key": lk.key,
                    "values": dict(lk.values),
                    "ages": dict(lk.ages),
                    "missing": list(lk.missing),
                }
                for lk in lookups
            ]
        )
        return
    rows = []
    for lookup in lookups:
        for check in classify(lookup, resolved, resolved.feature_names):
            age = lookup.ages.get(check.feature)
            rows.append(
                (
                    lookup.key,
                    check.feature,
                    lookup.values.get(check.feature),
                    "-" if age is None else f"{age:.1f}s",
                    check.state.value,
                )
            )
    table(resolved.ref, [resolved.entity.name, "feature", "value", "age", "state"], rows)


def _key(text: str) -> Any:
    return int(text) if text.lstrip("-").isdigit() else text
