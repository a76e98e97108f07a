"""The evidence pack of a model version: what shipped, why it shipped and how it behaved.

:func:`build_pack` reads the state store once (one read transaction) and returns a plain
JSON document: the package (digest, manifest, environment, lineage to data, code and
features, signatures), the contracts it served under, who pushed and promoted it and when,
every rollout that moved traffic to or from it with each decision and its gate readings, the
approvals people gave, the SLOs and request figures it had in production, incidents
(rollbacks, fallbacks, circuit-breaker openings, degradations while it served) and the audit
chain's verification. Every fact taken from the audit log carries the event's ``seq`` and
``hash``, so a reader can find it in the chain that was verified.

The document is sealed by :func:`seal`: its ``digest`` member is the SHA-256 of the
*canonical form* of everything else (:data:`CANONICALISATION`), which :func:`verify_pack`
recomputes. The digest shows the file was not edited since it was made; it is not a
signature (whoever can run ``build_pack`` can seal a document).
"""

from __future__ import annotations

import hashlib
import importlib.metadata
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import fields
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import Engine, select
from sqlalchemy.orm import Session

from modelplane.errors import IntegrityError, InvalidSpec, NotFound
from modelplane.observe.evidence_incidents import incidents_section, production_section
from modelplane.observe.evidence_timeline import (
    Period,
    RolloutStory,
    decision_row,
    rollouts_of,
    serving_periods,
)
from modelplane.store import audit
from modelplane.store.audit_anchors import Anchor
from modelplane.store.db import read_session
from modelplane.store.schema import (
    AliasHistoryRow,
    AliasRow,
    AuditEventRow,
    DatasetLineageRow,
    FeatureLineageRow,
    ModelRow,
    ModelVersionRow,
    ResourceRow,
    VersionSignatureRow,
)

__all__ = [
    "CANONICALISATION",
    "FORMAT",
    "MAX_EVENTS",
    "SignatureCheck",
    "build_pack",
    "canonical_bytes",
    "content_digest",
    "pack_stem",
    "parse_version_ref",
    "seal",
    "verify_pack",
]

FORMAT = "modelplane-evidence/1"
CANONICALISATION = (
    "modelplane-canonical-json-v1: the document without its 'digest' member, as JSON with"
    " object keys sorted, no whitespace between tokens, non-ASCII characters written as"
    " \\uXXXX escapes, no NaN or Infinity, encoded as UTF-8 (Python: json.dumps(doc,"
    " sort_keys=True, separators=(',', ':'), ensure_ascii=True, allow_nan=False))"
)
"""How the digest's input is spelled; the JSON file states it beside the digest."""
MAX_EVENTS = 100_000
"""Bounds how many audit events of one kind the pack reads."""

SignatureCheck = Callable[[str, str, str, str, str], bool]
"""``(key_id, public_key, signature, model name, digest) -> valid``: passed in by the
caller (observe may not import security), so the pack can say whether each stored
signature holds."""

_NAME = r"[a-z0-9](?:[a-z0-9._-]{0,61}[a-z0-9])?"
_REF = re.compile(rf"^(?P<name>{_NAME})(?::(?P<version>\d+)|@(?P<alias>{_NAME}))$")


def parse_version_ref(ref: str) -> tuple[str, int | None, str | None]:
    """``name:version`` or ``name@alias``; :class:`InvalidSpec` naming ``ref`` otherwise."""
    found = _REF.match(ref.strip())
    if found is None:
        raise InvalidSpec(
            f"'{ref}' is not a model version: write MODEL:VERSION (fraud:2) or MODEL@ALIAS",
            details=[{"field": "ref", "problem": "expected MODEL:VERSION or MODEL@ALIAS"}],
        )
    version = found["version"]
    return found["name"], None if version is None else int(version), found["alias"]


def pack_stem(ref: str) -> str:
    """``fraud:2`` -> ``evidence-fraud-2``: the file name of a pack, without its suffix."""
    return "evidence-" + re.sub(r"[^A-Za-z0-9._-]", "-", ref)


def canonical_bytes(document: Mapping[str, Any]) -> bytes:
    """The bytes the digest covers (see :data:`CANONICALISATION`)."""
    body = {k: v for k, v in document.items() if k != "digest"}
    return audit.canonical_json(body).encode("utf-8")


def content_digest(document: Mapping[str, Any]) -> str:
    """``sha256:HEX`` of :func:`canonical_bytes`."""
    return "sha256:" + hashlib.sha256(canonical_bytes(document)).hexdigest()


def seal(document: Mapping[str, Any]) -> dict[str, Any]:
    """``document`` with its ``digest`` member set."""
    body = {k: v for k, v in document.items() if k != "digest"}
    value = content_digest(body)
    return {**body, "digest": {"algorithm": "sha256", "canonicalisation": CANONICALISATION,
                               "value": value}}  # fmt: skip


def verify_pack(document: Mapping[str, Any]) -> str:
    """The pack's digest when it matches its content; :class:`IntegrityError` otherwise."""
    stated = document.get("digest")
    if not isinstance(stated, Mapping) or not isinstance(stated.get("value"), str):
        raise IntegrityError(
            "the evidence pack has no digest",
            details=[{"field": "digest.value", "problem": "missing"}],
        )
    actual = content_digest(document)
    if stated["value"] != actual:
        raise IntegrityError(
            f"the evidence pack was changed after it was made: its digest says"
            f" {stated['value']}, its content hashes to {actual}",
            details=[{"field": "digest.value", "problem": "does not match the content"}],
        )
    return actual


def build_pack(
    engine: Engine,
    ref: str,
    *,
    now: datetime,
    anchors: Sequence[Anchor] = (),
    signature_check: SignatureCheck | None = None,
) -> dict[str, Any]:
    """The sealed evidence pack of version ``ref`` (``name:version`` or ``name@alias``);
    ``anchors`` are checked with the audit chain."""
    name, number, alias = parse_version_ref(ref)
    with read_session(engine) as session:
        row = _version_row(session, name, number, alias)
        version_ref = f"{row.model_name}:{row.version}"
        team = session.scalar(select(ModelRow.team).where(ModelRow.name == row.model_name))
        endpoint_events = _events(session, _endpoint_events())
        periods = serving_periods(endpoint_events, version_ref)
        stories = _stories(session, version_ref, endpoint_events)
        document: dict[str, Any] = {
            "format": FORMAT,
            "subject": version_ref,
            "generated": {
                "at": now.astimezone(UTC).isoformat(),
                "by": f"modelplane {importlib.metadata.version('modelplane')}",
                "store": engine.url.render_as_string(hide_password=True),
            },
            "package": _package(session, row, team, signature_check),
            "contracts": _contracts(periods),
            "history": _history(session, row, stories),
            "rollouts": [_rollout(story, role) for story, role in stories],
            "approvals": _approvals(session, row, stories, signature_check),
            "production": production_section(session, periods, row.digest, version_ref, now=now),
            "outcomes": None,  # read below, by its own report
            "incidents": incidents_section(
                session, row.digest, version_ref, periods, [s for s, _ in stories]
            ),
            "audit": _verification(session, anchors),
        }
    document["outcomes"] = _outcomes(engine, version_ref, periods)
    return seal(document)


def _version_row(
    session: Session, name: str, number: int | None, alias: str | None
) -> ModelVersionRow:
    if alias is not None:
        target = session.get(AliasRow, (name, alias))
        if target is None:
            raise NotFound(f"alias '{name}@{alias}' not found")
        number = target.version
    found = session.scalars(
        select(ModelVersionRow).where(
            ModelVersionRow.model_name == name, ModelVersionRow.version == number
        )
    ).first()
    if found is None:
        if session.get(ModelRow, name) is None:
            raise NotFound(f"model '{name}' not found")
        raise NotFound(f"model version '{name}:{number}' not found")
    return found


_RECORD_FIELDS = tuple(f.name for f in fields(audit.AuditRecord))


def _events(session: Session, where: Sequence[Any]) -> list[audit.AuditRecord]:
    """Audit events matching ``where``, oldest first (the chain's order)."""
    query = select(AuditEventRow).where(*where).order_by(AuditEventRow.seq.desc()).limit(MAX_EVENTS)
    rows = list(session.scalars(query))
    rows.reverse()
    return [audit.AuditRecord(**{n: getattr(r, n) for n in _RECORD_FIELDS}) for r in rows]


def _endpoint_events() -> list[Any]:
    return [
        AuditEventRow.subject.like("Endpoint/%"),
        AuditEventRow.action.in_(("endpoint.apply", "endpoint.delete")),
    ]


def _event_row(event: audit.AuditRecord) -> dict[str, Any]:
    return {
        "seq": event.seq,
        "at": event.at.isoformat(),
        "actor": event.actor,
        "action": event.action,
        "subject": event.subject,
        "reason": event.reason,
        "hash": event.hash,
    }


def _package(
    session: Session, row: ModelVersionRow, team: str | None, check: SignatureCheck | None
) -> dict[str, Any]:
    manifest = dict(row.manifest)
    lineage = dict(manifest.get("lineage") or {})
    datasets = session.scalars(
        select(DatasetLineageRow).where(DatasetLineageRow.version_id == row.id)
    )
    features = session.scalars(
        select(FeatureLineageRow).where(FeatureLineageRow.version_id == row.id)
    )
    aliases = session.scalars(
        select(AliasRow.alias).where(
            AliasRow.model_name == row.model_name, AliasRow.version == row.version
        )
    )
    return {
        "name": row.model_name,
        "version": row.version,
        "team": team,
        "digest": row.digest,
        "runtime": row.runtime,
        "archived": row.archived,
        "aliases": sorted(aliases),
        "created_at": row.created_at.isoformat(),
        "created_by": row.created_by,
        "environment": manifest.get("environment"),
        "resources": manifest.get("resources"),
        "signature": manifest.get("signature"),
        "lineage": {
            "training_data": [{"uri": d.uri, "sha256": d.sha256} for d in datasets],
            "code_revision": lineage.get("code_revision"),
            "parameters": lineage.get("parameters") or {},
            "metrics": lineage.get("metrics") or {},
            "features": [
                {
                    "feature_set": f.feature_set,
                    "version": f.feature_set_version,
                    "definition": _feature_set(session, f.feature_set, f.feature_set_version),
                }
                for f in features
            ],
        },
        "signatures": _signatures(session, row, check),
        "manifest": manifest,
    }


def _feature_set(session: Session, name: str, version: int) -> dict[str, Any] | None:
    """The feature set version's definition as applied (entity, features, freshness), if
    the store still holds it."""
    row = session.get(ResourceRow, ("FeatureSet", f"{name}:{version}"))
    return None if row is None else dict(row.spec)


def _signatures(
    session: Session, row: ModelVersionRow, check: SignatureCheck | None
) -> list[dict[str, Any]]:
    query = select(VersionSignatureRow).where(VersionSignatureRow.version_id == row.id)
    return [
        {
            "key_id": s.key_id,
            "public_key": s.public_key,
            "signed_by": s.signed_by,
            "at": s.at.isoformat(),
            "valid": None
            if check is None
            else check(s.key_id, s.public_key, s.signature, row.model_name, row.digest),
        }
        for s in session.scalars(query.order_by(VersionSignatureRow.id))
    ]


def _contracts(periods: Sequence[Period]) -> list[dict[str, Any]]:
    """Each (endpoint, contract version) the version served under, first seen first."""
    seen: dict[tuple[str, Any, Any], dict[str, Any]] = {}
    for period in periods:
        contract = dict(period.spec.get("contract") or {})
        key = (period.endpoint, contract.get("name"), contract.get("version", 1))
        if key not in seen:
            seen[key] = {
                "endpoint": period.endpoint,
                "team": period.spec.get("team"),
                "tier": period.spec.get("tier", "standard"),
                "first_served_at": period.start.isoformat(),
                "contract": contract,
            }
    return list(seen.values())


def _stories(
    session: Session, ref: str, endpoint_events: Sequence[audit.AuditRecord]
) -> list[tuple[RolloutStory, str]]:
    """The rollouts that moved traffic to ``ref`` or away from it, with that role."""
    stories = rollouts_of(_events(session, [AuditEventRow.subject.like("Rollout/%")]))
    found = []
    for story in stories:
        role = story.role(ref, _pins_during(endpoint_events, story))
        if role is not None:
            found.append((story, role))
    return found


def _pins_during(events: Sequence[audit.AuditRecord], story: RolloutStory) -> dict[str, str]:
    """What aliases resolved to on the endpoint from just before the rollout to its end."""
    subject = f"Endpoint/{story.endpoint}"
    first, last = story.events[0].seq, story.events[-1].seq
    pins: dict[str, str] = {}
    for event in events:
        if event.subject != subject or event.seq > last or not isinstance(event.after, dict):
            continue
        if event.seq < first:
            pins = {}  # only the last apply before the start counts
        pins.update(event.after.get("pins") or {})
    return pins


def _rollout(story: RolloutStory, role: str) -> dict[str, Any]:
    return {
        "endpoint": story.endpoint,
        "role": role,
        "to": story.to,
        "stable": story.stable,
        "started_at": story.started_at.isoformat(),
        "started_by": story.started_by,
        "reason": story.reason,
        "outcome": story.phase,
        "strategy": dict(story.spec),
        "decisions": [decision_row(event) for event in story.events],
    }


def _history(
    session: Session, row: ModelVersionRow, stories: Sequence[tuple[RolloutStory, str]]
) -> dict[str, Any]:
    ref = f"{row.model_name}:{row.version}"
    own = _events(session, [AuditEventRow.subject == ref])
    pushed = next((e for e in own if e.action == "model.push"), None)
    moves = session.scalars(
        select(AliasHistoryRow)
        .where(AliasHistoryRow.model_name == row.model_name)
        .order_by(AliasHistoryRow.id)
    )
    promotions = [
        {**decision_row(e), "endpoint": s.endpoint}
        for s, role in stories
        if role == "to"
        for e in s.events
        if e.action == "rollout.promote"
    ]
    return {
        "pushed": None if pushed is None else _event_row(pushed),
        "promotions": promotions,
        "alias_moves": [
            {
                "alias": m.alias,
                "from_version": m.from_version,
                "to_version": m.to_version,
                "actor": m.actor,
                "at": m.at.isoformat(),
                "reason": m.reason,
            }
            for m in moves
            if row.version in (m.from_version, m.to_version)
        ],
        "events": [_event_row(e) for e in own],
    }


def _approvals(
    session: Session,
    row: ModelVersionRow,
    stories: Sequence[tuple[RolloutStory, str]],
    check: SignatureCheck | None,
) -> list[dict[str, Any]]:
    """Who vouched for the version: signatures, rollouts started and commands given by
    people (the controller's own moves are decisions, not approvals)."""
    out: list[dict[str, Any]] = [
        {"kind": "signature", "by": s["signed_by"], "at": s["at"], "key_id": s["key_id"],
         "valid": s["valid"], "endpoint": None}
        for s in _signatures(session, row, check)
    ]  # fmt: skip
    for story, role in stories:
        out.append({"kind": f"rollout started ({role} this version)", "by": story.started_by,
                    "at": story.started_at.isoformat(), "endpoint": story.endpoint,
                    "reason": story.reason})  # fmt: skip
        for given in story.commands():
            at = given.get("at")
            when = datetime.fromtimestamp(float(at), UTC).isoformat() if at is not None else None
            out.append({"kind": f"{given.get('command')} command", "by": given.get("by"),
                        "at": when, "endpoint": story.endpoint})  # fmt: skip
    return out


def _outcomes(engine: Engine, ref: str, periods: Sequence[Period]) -> dict[str, Any]:
    """Per endpoint it served, the version's labelled outcomes, the comparisons with the
    versions before and after it, and the alerts that name it."""
    from modelplane.observe.outcome_report import outcomes_by_version

    endpoints = []
    for endpoint in sorted({p.endpoint for p in periods}):
        report = outcomes_by_version(engine, endpoint)
        whole = report.to_dict()
        mine = [v for v in whole["versions"] if v["version"] == ref]
        # Named from the objects: the comparison's numbers reuse "baseline" and "candidate".
        comparisons = [
            {"baseline": c.baseline, "candidate": c.candidate, "metric": c.comparison.metric.value,
             "regressed": c.regressed, "confidence": c.comparison.confidence,
             "reading": c.comparison.to_reading()}
            for c in report.comparisons
            if ref in (c.baseline, c.candidate)
        ]  # fmt: skip
        endpoints.append({
            "endpoint": endpoint,
            "task": whole["task"],
            "metric": whole["metric"],
            "version": mine[0] if mine else None,
            "comparisons": comparisons,
            "feature_sets": whole["feature_sets"],
            "alerts": [line for line in whole["alerts"] if ref in line],
        })  # fmt: skip
    return {"endpoints": endpoints}


def _verification(session: Session, anchors: Sequence[Anchor]) -> dict[str, Any]:
    """The whole chain checked as of now; a broken chain is reported, not raised: the
    pack of a version is still wanted, and says the log cannot be trusted."""
    try:
        report = audit.verify(session, anchors=anchors)
    except (IntegrityError, InvalidSpec) as exc:
        return {"intact": False, "problem": exc.message, "details": list(exc.details)}
    return {
        "intact": True,
        "events": report.events,
        "head_hash": report.head_hash,
        "unkeyed": report.unkeyed,
        "anchors": report.anchors,
        "key_id": report.key_id,
        "keyed": report.key_id is not None,
    }
