"""``modelplane evidence MODEL:VERSION``: write a version's evidence pack, HTML and JSON.

Against the embedded store the pack is built here (the audit chain checked against the
anchor file under the home folder too, when there is one); logged in to a server, it comes
from ``GET /v1/versions/{ref}/evidence`` and its digest is checked here before anything is
written, so a pack changed on the way is refused. The page is rendered here in both cases,
from the JSON it embeds.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

from modelplane.cli.context import CliContext, registry_from
from modelplane.cli.output import console, emit_json, handle_errors
from modelplane.errors import IntegrityError

if TYPE_CHECKING:
    from modelplane.cli.remote import RemoteConfig

__all__ = ["evidence", "register", "write_pack"]


def write_pack(pack: dict[str, Any], out: Path) -> tuple[Path, Path]:
    """Write ``pack`` as ``evidence-<model>-<version>.json`` and ``.html`` under ``out``."""
    from modelplane.observe.evidence_pack import pack_stem, verify_pack
    from modelplane.observe.evidence_page import render_page

    verify_pack(pack)
    out.mkdir(parents=True, exist_ok=True)
    stem = pack_stem(pack["subject"])
    data, page = out / f"{stem}.json", out / f"{stem}.html"
    # Written whole, then renamed: a reader never sees half a pack.
    for path, text in ((data, json.dumps(pack, indent=2) + "\n"), (page, render_page(pack))):
        partial = path.with_name(path.name + ".partial")
        partial.write_text(text, encoding="utf-8")
        partial.replace(path)
    return data, page


def _local(cli: CliContext, ref: str, anchor: str | None) -> dict[str, Any]:
    from modelplane.cli.audit import DEFAULT_ANCHORS
    from modelplane.controlplane.evidence import evidence_for
    from modelplane.store.audit_anchors import read_anchors

    if anchor is not None:
        anchors = read_anchors(anchor)
    else:
        place = cli.settings.home / DEFAULT_ANCHORS
        anchors = read_anchors(place) if place.exists() else []
    with registry_from(cli) as registry:
        return evidence_for(registry, ref, anchors=anchors)


def _remote(config: RemoteConfig, ref: str) -> dict[str, Any]:
    from urllib.parse import quote

    from modelplane.cli.remote import Remote

    class _Evidence(Remote):
        def pack(self) -> dict[str, Any]:
            found: dict[str, Any] = self._call("GET", f"/v1/versions/{quote(ref)}/evidence")
            return found

    remote = _Evidence(config)
    try:
        return remote.pack()
    finally:
        remote.close()


@handle_errors
def evidence(
    ctx: typer.Context,
    ref: Annotated[str, typer.Argument(help="MODEL:VERSION (or MODEL@ALIAS).")],
    out: Annotated[
        Path, typer.Option("--out", help="Folder to write the pack in (made if missing).")
    ] = Path("."),
    as_json: Annotated[bool, typer.Option("--json", help="Print what was written.")] = False,
    anchor: Annotated[
        str | None,
        typer.Option(
            "--anchor",
            help="Anchor file or fsspec URL to check the audit chain against (default:"
            " home/audit-anchors.jsonl when it exists; a server checks its own chain).",
        ),
    ] = None,
) -> None:
    """Write the evidence pack of a model version: what shipped (package, lineage,
    contracts), who pushed and promoted it, every rollout decision with its gate readings,
    approvals, SLOs, outcomes, incidents and the audit chain's verification, as one
    self-contained HTML page and a JSON file sealed with a SHA-256 digest."""
    from modelplane.observe.evidence_pack import parse_version_ref

    parse_version_ref(ref)  # a bad ref is named before any store or server is reached
    cli: CliContext = ctx.obj
    pack = _local(cli, ref, anchor) if cli.remote is None else _remote(cli.remote, ref)
    data, page = write_pack(pack, out)
    audit = pack["audit"]
    decisions = sum(len(r["decisions"]) for r in pack["rollouts"])
    if as_json:
        emit_json({"subject": pack["subject"], "json": str(data), "html": str(page),
                   "digest": pack["digest"]["value"], "rollouts": len(pack["rollouts"]),
                   "decisions": decisions, "audit_intact": audit["intact"]})  # fmt: skip
    else:
        console.print(f"evidence pack of {pack['subject']}:", markup=False)
        console.print(f"  {page}\n  {data}", markup=False, soft_wrap=True)
        console.print(f"  digest {pack['digest']['value']}", markup=False)
        console.print(
            f"  {len(pack['rollouts'])} rollouts, {decisions} decisions,"
            f" {len(pack['approvals'])} approvals", markup=False,
        )  # fmt: skip
    if not audit["intact"]:
        # Written all the same (the pack says so), but nobody should take it as evidence.
        raise IntegrityError(f"the audit chain is broken: {audit['problem']}")
    if not as_json:
        console.print(f"  audit chain intact ({audit['events']} events)", markup=False)


def register(app: typer.Typer) -> None:
    """Add ``evidence`` to the root app."""
    app.command("evidence")(evidence)
