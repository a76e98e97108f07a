"""The evidence pack as one self-contained HTML page, to hand to a person.

Everything is inline: the CSS, and the pack's JSON itself (in a ``<script
type="application/json">`` element, with ``<`` escaped so no text can close it), so the page
opens from a file or an e-mail with no network and carries the data it shows. There is no
script to run: the page is plain HTML. Every value is escaped.
"""

from __future__ import annotations

import html
import json
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

__all__ = ["render_page"]


def _text(value: Any) -> str:
    if value is None:
        return "—"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, float):
        return f"{value:.6g}"
    if isinstance(value, (dict, list)):
        return json.dumps(value, sort_keys=True)
    return str(value)


def _esc(value: Any) -> str:
    return html.escape(_text(value), quote=True)


def _table(headings: Sequence[str], rows: Iterable[Sequence[Any]], empty: str) -> str:
    body = "".join(
        "<tr>" + "".join(f"<td>{c if isinstance(c, _Html) else _esc(c)}</td>" for c in row)
        + "</tr>"
        for row in rows
    )  # fmt: skip
    if not body:
        return f'<p class="muted">{html.escape(empty)}</p>'
    head = "".join(f"<th>{html.escape(h)}</th>" for h in headings)
    return f"<table><tr>{head}</tr>{body}</table>"


class _Html(str):
    """Markup already escaped: tables put it in as it is."""


def _pairs(mapping: Mapping[str, Any]) -> str:
    return _table(["", ""], [(k, v) for k, v in mapping.items()], "nothing recorded")


def _gates(gates: Sequence[Mapping[str, Any]]) -> _Html:
    if not gates:
        return _Html('<span class="muted">—</span>')
    lines = []
    for gate in gates:
        outcome = str(gate.get("outcome", ""))
        cls = {"pass": "ok", "fail": "bad"}.get(outcome, "wait")
        reading = ", ".join(f"{k}={_text(v)}" for k, v in (gate.get("reading") or {}).items())
        lines.append(
            f'<div><span class="{cls}">{html.escape(outcome)}</span> '
            f"{_esc(gate.get('name'))}: {_esc(gate.get('reason') or '')}"
            + (f' <span class="muted">({html.escape(reading)})</span>' if reading else "")
            + "</div>"
        )
    return _Html("".join(lines))


def _badge(ok: bool | None, yes: str, no: str) -> _Html:
    if ok is None:
        return _Html('<span class="wait">not judged</span>')
    return _Html(f'<span class="{"ok" if ok else "bad"}">{html.escape(yes if ok else no)}</span>')


def _definition(spec: Mapping[str, Any] | None) -> tuple[Any, Any, Any]:
    """A feature set's entity, features and freshness, as applied."""
    if not spec:
        return ("no longer in the store", None, None)
    entity = spec.get("entity") or {}
    features = ", ".join(f"{f.get('name')}:{f.get('dtype')}" for f in spec.get("features") or [])
    return (f"{entity.get('name')}:{entity.get('dtype')}", features, spec.get("freshness"))


def _package(pack: Mapping[str, Any]) -> str:
    p = pack["package"]
    lineage = p["lineage"]
    summary = {
        "digest": p["digest"], "runtime": p["runtime"], "team": p["team"],
        "aliases": ", ".join(p["aliases"]) or None, "created": p["created_at"],
        "pushed by": p["created_by"], "archived": p["archived"],
        "python": (p.get("environment") or {}).get("python"),
        "code revision": lineage["code_revision"],
    }  # fmt: skip
    packages = (p.get("environment") or {}).get("packages") or {}
    return (
        _pairs(summary)
        + "<h3>Environment</h3>"
        + _table(["package", "version"], sorted(packages.items()), "no packages recorded")
        + "<h3>Lineage</h3>"
        + _table(["training data", "sha256"],
                 [(d["uri"], d["sha256"]) for d in lineage["training_data"]],
                 "no training data recorded")
        + _table(["feature set", "version", "entity", "features", "freshness"],
                 [(f["feature_set"], f["version"], *_definition(f.get("definition")))
                  for f in lineage["features"]],
                 "reads no feature set")
        + _table(["parameter", "value"], sorted(lineage["parameters"].items()), "no parameters")
        + _table(["training metric", "value"], sorted(lineage["metrics"].items()), "no metrics")
        + "<h3>Signatures</h3>"
        + _table(["key", "signed by", "at", "valid"],
                 [(s["key_id"], s["signed_by"], s["at"], s["valid"]) for s in p["signatures"]],
                 "not signed")
        + "<details><summary>manifest</summary><pre>"
        + html.escape(json.dumps(p["manifest"], indent=2, sort_keys=True))
        + "</pre></details>"
    )  # fmt: skip


def _contracts(pack: Mapping[str, Any]) -> str:
    rows = []
    for c in pack["contracts"]:
        contract = c["contract"]
        slo = contract.get("slo") or {}
        fields = ", ".join(f"{f.get('name')}:{f.get('dtype')}" for f in contract.get("inputs", []))
        rows.append((c["endpoint"], f"{contract.get('name')} v{contract.get('version', 1)}",
                     f"{c['team']} / {c['tier']}", fields,
                     f"availability {slo.get('availability', 0.999)}, p"
                     f"{100 * float(slo.get('latency_quantile', 0.99)):g} ≤ "
                     f"{slo.get('latency_ms', 100)} ms", c["first_served_at"]))  # fmt: skip
    return _table(["endpoint", "contract", "team / tier", "inputs", "SLO", "first served"],
                  rows, "never served an endpoint")  # fmt: skip


def _history(pack: Mapping[str, Any]) -> str:
    h = pack["history"]
    pushed = h["pushed"] or {}
    lines = _pairs({
        "pushed by": pushed.get("actor"), "pushed at": pushed.get("at"),
        "reason": pushed.get("reason") or None, "audit seq": pushed.get("seq"),
    })  # fmt: skip
    lines += "<h3>Promotions</h3>" + _table(
        ["at", "endpoint", "by", "reason", "seq"],
        [(p["at"], p["endpoint"], p["actor"], p["reason"], p["seq"]) for p in h["promotions"]],
        "never promoted by a rollout",
    )
    lines += "<h3>Alias moves</h3>" + _table(
        ["at", "alias", "from", "to", "by", "reason"],
        [(m["at"], m["alias"], m["from_version"], m["to_version"], m["actor"], m["reason"])
         for m in h["alias_moves"]],
        "no alias moved to or from it",
    )  # fmt: skip
    return lines


def _rollouts(pack: Mapping[str, Any]) -> str:
    if not pack["rollouts"]:
        return '<p class="muted">no rollout moved traffic to or from this version</p>'
    parts = []
    for r in pack["rollouts"]:
        outcome = r["outcome"]
        cls = "ok" if outcome == "promoted" else "bad" if outcome.startswith("roll") else "wait"
        parts.append(
            f'<h3 class="rollout">{_esc(r["endpoint"])}: {_esc(r["stable"])} → {_esc(r["to"])}'
            f' <span class="{cls}">{_esc(outcome)}</span></h3>'
            f'<p class="muted">started {_esc(r["started_at"])} by {_esc(r["started_by"])}'
            f" ({_esc(r['role'])} this version){': ' + _esc(r['reason']) if r['reason'] else ''}"
            "</p>"
            + _table(
                ["seq", "at", "actor", "decision", "phase", "step", "weights", "reason", "gates"],
                [(d["seq"], d["at"], d["actor"], d["kind"], d["phase"], d["step"], d["weights"],
                  d["reason"], _gates(d["gates"])) for d in r["decisions"]],
                "no decisions recorded",
            )
        )  # fmt: skip
    return "".join(parts)


def _production(pack: Mapping[str, Any]) -> str:
    prod = pack["production"]
    slo = _table(
        ["endpoint", "from", "to", "traffic", "requests", "availability", "within latency"],
        [(s["endpoint"], s["from"], s["to"] or "now",
          f"{s['weight_percent']:g}%" + (f" (shadow {s['shadow_percent']:g}%)"
                                          if s["shadow_percent"] else ""),
          s["requests"],
          _Html(f"{_esc(s['availability'])} "
                + _badge(s["availability_met"], "met", "missed")),
          _Html(f"{_esc(s['within_latency'])} " + _badge(s["latency_met"], "met", "missed")))
         for s in prod["slo"]],
        "never served",
    )  # fmt: skip
    figures = prod["requests"]
    latency = figures["latency_ms"]
    return slo + "<h3>Requests this version answered</h3>" + _pairs({
        "requests seen": figures["requests_seen"], "errors": figures["errors"],
        "fallbacks": figures["fallbacks"], "p50 ms": latency["p50"], "p90 ms": latency["p90"],
        "p99 ms": latency["p99"], "source": figures["source"],
    })  # fmt: skip


def _outcomes(pack: Mapping[str, Any]) -> str:
    parts = []
    for e in pack["outcomes"]["endpoints"]:
        v = e["version"]
        parts.append(f"<h3>{_esc(e['endpoint'])} <span class=\"muted\">({_esc(e['task'])},"
                     f" compared by {_esc(e['metric'])})</span></h3>")  # fmt: skip
        if v is None:
            parts.append('<p class="muted">no answer of this version is kept to join labels to</p>')
            continue
        parts.append(_pairs({
            "answered": v["answered_rows"], "labelled": v["labelled_rows"],
            "label coverage": v["coverage"], "label latency p50 s": v["label_latency_p50_s"],
            "label latency p90 s": v["label_latency_p90_s"],
            **{f"metric {k}": m for k, m in sorted(v["metrics"].items())},
            **{f"business {k}": b for k, b in sorted(v["business"].items())},
            "estimate (CBPE)": v["estimate"], "estimate parted from realised": v["estimate_parted"],
        }))  # fmt: skip
        parts.append(_table(
            ["baseline", "candidate", "metric", "regressed", "reading"],
            [(c["baseline"], c["candidate"], c["metric"], _badge(not c["regressed"], "no", "yes"),
              ", ".join(f"{k}={_text(x)}" for k, x in sorted(c["reading"].items())))
             for c in e["comparisons"]],
            "not compared with another version yet",
        ))  # fmt: skip
        parts.extend(f'<p class="bad">{_esc(line)}</p>' for line in e["alerts"])
    return "".join(parts) or '<p class="muted">served no endpoint: no outcomes</p>'


def _incidents(pack: Mapping[str, Any]) -> str:
    inc = pack["incidents"]
    return (
        "<h3>Rollbacks</h3>"
        + _table(["at", "endpoint", "by", "what", "reason"],
                 [(r["at"], r["endpoint"], r["actor"], r["kind"], r.get("reason"))
                  for r in inc["rollbacks"]], "none")
        + "<h3>Fallbacks</h3>"
        + _table(["reason", "answers", "first", "last", "endpoints", "example requests"],
                 [(f["reason"], f["count"], f["first"], f["last"], ", ".join(f["endpoints"]),
                   ", ".join(f["example_request_ids"])) for f in inc["fallbacks"]], "none")
        + "<h3>Circuit breaker openings</h3>"
        + _table(["endpoint", "first seen", "last seen", "answers while open"],
                 [(o["endpoint"], o["first_seen"], o["last_seen"], o["answers_while_open"])
                  for o in inc["breaker_openings"]], "none")
        + "<h3>Degradations while it served</h3>"
        + _table(["at", "what", "policy", "level", "reason"],
                 [(d["at"], d["action"], d["subject"], d["level"], d["reason"])
                  for d in inc["degradations"]], "none")
    )  # fmt: skip


def _approvals(pack: Mapping[str, Any]) -> str:
    return _table(
        ["what", "by", "at", "endpoint", "detail"],
        [(a["kind"], a["by"], a["at"], a.get("endpoint"),
          a.get("key_id") or a.get("reason")) for a in pack["approvals"]],
        "no approval recorded",
    )  # fmt: skip


def _audit(pack: Mapping[str, Any]) -> str:
    a = pack["audit"]
    if not a["intact"]:
        return (
            f'<p class="bad">The audit chain is broken: {_esc(a["problem"])}</p>'
            "<p>Nothing in this pack that comes from the audit log can be trusted.</p>"
        )
    return _pairs({"verified": _Html('<span class="ok">intact</span>'), "events": a["events"],
                   "head hash": a["head_hash"], "keyed (MACs checked)": a["keyed"],
                   "key id": a["key_id"], "events without MAC": a["unkeyed"],
                   "anchors checked": a["anchors"]})  # fmt: skip


_SECTIONS = (
    ("package", "Package", _package),
    ("contracts", "Contracts it served under", _contracts),
    ("history", "Pushed and promoted", _history),
    ("rollouts", "Rollouts and every decision", _rollouts),
    ("approvals", "Approvals", _approvals),
    ("production", "SLOs in production", _production),
    ("outcomes", "Outcomes", _outcomes),
    ("incidents", "Incidents", _incidents),
    ("audit", "Audit chain", _audit),
)


def render_page(pack: Mapping[str, Any]) -> str:
    """The sealed ``pack`` as one HTML document."""
    subject = _esc(pack["subject"])
    audit_ok = bool(pack["audit"]["intact"])
    embedded = json.dumps(pack, sort_keys=True, indent=1).replace("<", "\\u003c")
    body = "".join(
        f'<section id="{key}"><h2>{title}</h2>{render(pack)}</section>'
        for key, title, render in _SECTIONS
    )
    return (
        _HEAD.replace("__TITLE__", f"evidence pack: {subject}")
        + f"<header><h1>Evidence pack: {subject}</h1>"
        f"<span>generated {_esc(pack['generated']['at'])} by {_esc(pack['generated']['by'])}"
        "</span>"
        f'<span class="{"ok" if audit_ok else "bad"}">audit chain '
        f"{'intact' if audit_ok else 'BROKEN'}</span></header>"
        f'<main><p class="digest">content digest <code>{_esc(pack["digest"]["value"])}</code>'
        f' <span class="muted">({_esc(pack["digest"]["canonicalisation"])})</span></p>'
        f"{body}</main>"
        f'<script type="application/json" id="evidence">{embedded}</script>'
        "</body></html>\n"
    )


_HEAD = """<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>__TITLE__</title>
<link rel="icon" href="data:,">
<style>
  body { font: 14px/1.4 system-ui, sans-serif; margin: 0; color: #1d2430; background: #f5f6f8; }
  header { background: #1d2430; color: #fff; padding: 10px 20px; display: flex; gap: 20px;
           align-items: baseline; flex-wrap: wrap; }
  header h1 { font-size: 18px; margin: 0; }
  header .ok { color: #8fe3a8; } header .bad { color: #ff9d94; }
  main { padding: 4px 20px 20px; }
  section { background: #fff; border: 1px solid #dde; border-radius: 6px; margin-top: 16px;
            padding: 8px 14px 12px; }
  h2 { font-size: 15px; margin: 6px 0 8px; } h3 { font-size: 13px; margin: 12px 0 4px; }
  table { border-collapse: collapse; width: 100%; margin-bottom: 6px; }
  th, td { text-align: left; padding: 3px 8px; border-bottom: 1px solid #eef;
           vertical-align: top; overflow-wrap: anywhere; }
  th { font-weight: 600; color: #556; font-size: 12px; text-transform: uppercase; }
  .ok { color: #137333; font-weight: 600; } .bad { color: #b3261e; font-weight: 600; }
  .wait { color: #a56a00; font-weight: 600; } .muted { color: #778; }
  .digest { margin-top: 12px; overflow-wrap: anywhere; }
  pre { background: #f5f6f8; padding: 8px; overflow-x: auto; font-size: 12px; }
  code { font-size: 12px; }
  @media print { body { background: #fff; } section { break-inside: avoid; } }
</style>
</head>
<body>
"""
