"""The console: one page at ``/`` of the control API, and ``/docs`` that works offline.

The page is self-written HTML, CSS and JavaScript in this module; it loads nothing from
the internet. Its script reads the API's own JSON (endpoints, rollouts, and recent errors
from the prediction log) every two seconds, and, every fifteen, the slower views: outcomes
by version (``/v1/outcomes``, :mod:`.console_views`), usage and idle cost by team over the
last seven days (``/v1/reports/cost`` and ``/v1/reports/usage``) and the model versions.
Every version shown links to its evidence pack (``/v1/versions/{ref}/evidence.html``); with
a token, the script fetches the pack with it and opens it from a ``blob:`` URL.

When the server requires tokens, the script sends the one given in the URL fragment
(``/#token=...``, kept in ``localStorage``), so a token never reaches a server log through a
query string.

``/docs`` is Swagger UI served from the ``swagger-ui-bundle-v2`` package, not from a CDN.
The page and its assets hold nothing stored, so they are served without a token
(:data:`CONSOLE_PATHS`); the JSON they read is guarded like every other route.
"""

from __future__ import annotations

import html
from pathlib import Path
from typing import Annotated, Any

from fastapi import Depends, FastAPI, Query, Request
from fastapi.openapi.docs import get_swagger_ui_html, get_swagger_ui_oauth2_redirect_html
from fastapi.responses import FileResponse, HTMLResponse
from sqlalchemy import Engine, func, or_, select

from modelplane.controlplane.console_views import register_console_views
from modelplane.security.scopes import Action, Principal, Scope, authorize, decide
from modelplane.store.db import read_session
from modelplane.store.resources import ResourceStore
from modelplane.store.schema import PredictionRow

__all__ = ["CONSOLE_PATHS", "ERRORS_SCANNED", "recent_errors", "register_console"]

_ASSETS = {"swagger-ui-bundle.js": "text/javascript", "swagger-ui.css": "text/css"}
CONSOLE_PATHS = frozenset({"/", *(f"/docs/{name}" for name in _ASSETS)})
"""Paths served to anyone: the page and the docs' scripts, nothing stored."""

ERRORS_SCANNED = 10_000
"""Recent errors are looked for among this many newest prediction-log rows, so the page's
poll stays cheap however long the log is."""


def recent_errors(engine: Engine, limit: int = 20) -> list[dict[str, Any]]:
    """The newest failed predictions (an error status or code), newest first."""
    failed = or_(PredictionRow.status >= 400, PredictionRow.error_code.is_not(None))
    columns = (
        PredictionRow.request_id,
        PredictionRow.at,
        PredictionRow.endpoint,
        PredictionRow.model_version,
        PredictionRow.route_kind,
        PredictionRow.status,
        PredictionRow.error_code,
        PredictionRow.fallback_reason,
        PredictionRow.detail,
    )
    with read_session(engine) as session:
        newest = session.scalar(select(func.max(PredictionRow.id))) or 0
        query = (
            select(*columns)
            .where(PredictionRow.id > newest - ERRORS_SCANNED, failed)
            .order_by(PredictionRow.id.desc())
            .limit(limit)
        )
        rows = [dict(row._mapping) for row in session.execute(query)]
    for row in rows:
        row["at"] = row["at"].isoformat()
    return rows


def _principal(request: Request) -> Principal:
    principal: Principal = request.state.principal
    return principal


def register_console(api: FastAPI, engine: Engine, *, gateway_url: str | None = None) -> FastAPI:
    """Add ``/``, ``/docs`` (offline) and ``GET /v1/errors`` to ``api``; ``api``.

    ``api`` must be created with ``docs_url=None``; ``gateway_url`` is where the page
    points for the gateway's ``/metrics``.
    """
    from swagger_ui_bundle import swagger_ui_path  # type: ignore[import-untyped]

    assets = Path(swagger_ui_path)
    resources = ResourceStore(engine)
    page = _PAGE.replace("__GATEWAY__", html.escape(gateway_url or "", quote=True))

    @api.get("/", include_in_schema=False)
    def console() -> HTMLResponse:
        return HTMLResponse(page, headers={"cache-control": "no-cache"})

    @api.get("/docs", include_in_schema=False)
    def docs() -> HTMLResponse:
        return get_swagger_ui_html(
            openapi_url=api.openapi_url or "/openapi.json",
            title=f"{api.title} - API",
            swagger_js_url="/docs/swagger-ui-bundle.js",
            swagger_css_url="/docs/swagger-ui.css",
            swagger_favicon_url="data:,",
            oauth2_redirect_url="/docs/oauth2-redirect",
            swagger_ui_parameters={"validatorUrl": None},
        )

    @api.get("/docs/oauth2-redirect", include_in_schema=False)
    def oauth2_redirect() -> HTMLResponse:
        return get_swagger_ui_oauth2_redirect_html()

    def asset(name: str, media_type: str) -> None:
        def serve() -> FileResponse:
            return FileResponse(assets / name, media_type=media_type)

        api.get(f"/docs/{name}", include_in_schema=False)(serve)

    for name, media_type in _ASSETS.items():
        asset(name, media_type)

    @api.get("/v1/errors")
    def errors(
        who: Annotated[Principal, Depends(_principal)],
        limit: Annotated[int, Query(ge=1, le=200)] = 20,
    ) -> list[dict[str, Any]]:
        """Recent failed predictions from the prediction log, of the endpoints the caller's
        team owns (all of them for admin)."""
        authorize(who, Action(Scope.READ, "read recent errors"))
        teams = {r.name: r.spec.get("team") for r in resources.list("Endpoint")}
        return [
            row
            for row in recent_errors(engine, limit)
            if decide(
                who, Action(Scope.READ, "read errors", (teams.get(str(row["endpoint"])),))
            ).allowed
        ]

    register_console_views(api, engine)
    return api


_PAGE = """<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>modelplane console</title>
<link rel="icon" href="data:,">
<style>
  body { font: 14px/1.4 system-ui, sans-serif; margin: 0; color: #1d2430; background: #f5f6f8; }
  header { background: #1d2430; color: #fff; padding: 10px 20px; display: flex; gap: 20px;
           align-items: baseline; }
  header h1 { font-size: 18px; margin: 0; }
  header a { color: #9cc3ff; }
  header .when { margin-left: auto; color: #aab; font-size: 12px; }
  main { padding: 4px 20px 20px; }
  section { background: #fff; border: 1px solid #dde; border-radius: 6px; margin-top: 16px;
            padding: 8px 14px 12px; }
  h2 { font-size: 15px; margin: 6px 0 8px; }
  table { border-collapse: collapse; width: 100%; }
  th, td { text-align: left; padding: 4px 8px; border-bottom: 1px solid #eef; vertical-align: top; }
  th { font-weight: 600; color: #556; font-size: 12px; text-transform: uppercase; }
  .ok { color: #137333; font-weight: 600; }
  .bad { color: #b3261e; font-weight: 600; }
  .wait { color: #a56a00; font-weight: 600; }
  .muted { color: #778; }
  .bar { display: inline-block; height: 8px; background: #4a7fd4; border-radius: 2px;
         vertical-align: middle; margin-right: 6px; }
  .note { background: #fff4d6; border: 1px solid #f0d58a; padding: 8px 12px; border-radius: 6px;
          margin-top: 16px; }
  code { font-size: 12px; }
  h3 { font-size: 13px; margin: 10px 0 4px; }
  a.evidence { font-size: 12px; margin-left: 6px; }
</style>
</head>
<body data-gateway="__GATEWAY__">
<header>
  <h1>modelplane</h1>
  <a href="/docs">API docs</a>
  <a id="metrics" href="#">gateway /metrics</a>
  <a href="/openapi.json">OpenAPI</a>
  <span class="when" id="when">loading</span>
</header>
<main>
  <div id="note" class="note" hidden></div>
  <div id="sandbox"></div>
  <section><h2>Endpoints</h2><div id="endpoints" class="muted">loading</div></section>
  <section><h2>Rollouts</h2><div id="rollouts" class="muted">loading</div></section>
  <section><h2>Recent errors</h2><div id="errors" class="muted">loading</div></section>
  <section><h2>Outcomes by version</h2><div id="outcomes" class="muted">loading</div></section>
  <section><h2>Usage and idle cost by team, last 7 days</h2>
    <div id="cost" class="muted">loading</div><div id="waste" class="muted"></div></section>
  <section><h2>Model versions</h2><div id="versions" class="muted">loading</div></section>
</main>
<script>
"use strict";
const KEY = "modelplane-token";
const fragment = new URLSearchParams(location.hash.slice(1));
if (fragment.get("token")) {
  localStorage.setItem(KEY, fragment.get("token"));
  history.replaceState(null, "", location.pathname);
}

function gatewayUrl() {
  const given = document.body.dataset.gateway;
  if (!given) return location.protocol + "//" + location.hostname + ":8000";
  const url = new URL(given);
  if (["0.0.0.0", "[::]", "::"].includes(url.hostname)) url.hostname = location.hostname;
  return url.origin;
}
document.getElementById("metrics").href = gatewayUrl() + "/metrics";

function el(tag, attrs, ...children) {
  const node = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) node.setAttribute(k, v);
  for (const c of children.flat()) {
    node.append(c instanceof Node ? c : document.createTextNode(c == null ? "" : String(c)));
  }
  return node;
}

function table(headings, rows, empty) {
  if (!rows.length) return el("p", {class: "muted"}, empty);
  return el("table", {}, el("tr", {}, headings.map(h => el("th", {}, h))),
            rows.map(cells => el("tr", {}, cells.map(c => el("td", {}, c)))));
}

class Refused extends Error {}

async function get(path) {
  const token = localStorage.getItem(KEY);
  const response = await fetch(path, {headers: token ? {authorization: "Bearer " + token} : {}});
  if (response.status === 401 || response.status === 403) {
    const body = await response.json().catch(() => ({}));
    throw new Refused((body.error && body.error.message) || response.statusText);
  }
  if (!response.ok) throw new Error(path + ": HTTP " + response.status);
  return response.json();
}

function evidenceLink(ref) {
  const link = el("a", {class: "evidence", title: "the evidence pack of " + ref,
                        href: "/v1/versions/" + encodeURIComponent(ref) + "/evidence.html"},
                  "evidence");
  link.addEventListener("click", openEvidence);
  return link;
}

async function openEvidence(event) {
  const token = localStorage.getItem(KEY);
  if (!token) return;  // a server that asks for no token serves the page to a plain link
  event.preventDefault();
  const link = event.currentTarget;
  try {
    const response = await fetch(link.href, {headers: {authorization: "Bearer " + token}});
    if (!response.ok) throw new Error("evidence pack: HTTP " + response.status);
    const page = new Blob([await response.text()], {type: "text/html"});
    location.assign(URL.createObjectURL(page));
  } catch (error) {
    link.replaceWith(el("span", {class: "bad"}, error.message));
  }
}

function health(status) {
  const ready = ((status || {}).conditions || []).find(c => c.type === "Ready");
  if (!ready) return el("span", {class: "wait"}, "not observed yet");
  const cls = ready.status === "True" ? "ok" : ready.status === "False" ? "bad" : "wait";
  return el("span", {title: ready.message || ""},
            el("span", {class: cls}, ready.status === "True" ? "Ready" : "Not ready"),
            " ", el("span", {class: "muted"}, ready.reason || ""));
}

function routes(spec, status) {
  // before a controller has resolved them, the routes as applied
  const resolved = (status && status.routes) || [];
  const shown = resolved.length ? resolved : spec.routes.map(r => ({...r, version: r.model}));
  const total = shown.reduce((sum, r) => sum + r.weight, 0) || 1;
  const lines = shown.map(r => el("div", {},
    el("span", {class: "bar", style: "width:" + Math.round(60 * r.weight / total) + "px"}),
    (100 * r.weight / total).toFixed(0) + "% " + r.version, evidenceLink(r.version)));
  for (const s of (status && status.shadows) || spec.shadows || []) {
    lines.push(el("div", {class: "muted"}, "shadow " + s.percent + "% " + (s.version || s.model)));
  }
  return lines;
}

function endpoints(list) {
  return table(["endpoint", "team / tier", "health", "replicas", "routes", "contract"],
    list.map(r => [
      el("b", {}, r.name), r.spec.team + " / " + r.spec.tier, health(r.status),
      r.status && r.status.replicas ? r.status.replicas.ready + "/" + r.status.replicas.total : "-",
      routes(r.spec, r.status),
      r.spec.contract.name + " v" + r.spec.contract.version,
    ]), "No endpoints yet: modelplane apply -f examples/endpoint.yaml");
}

function gates(state) {
  const readings = (state && state.gates) || [];
  if (!readings.length) return el("span", {class: "muted"}, "no readings yet");
  return readings.map(g => el("div", {},
    el("span", {class: g.outcome === "pass" ? "ok" : g.outcome === "fail" ? "bad" : "wait"},
       g.outcome), " " + g.name + ": " + (g.reason || "")));
}

function rollouts(list) {
  return table(["endpoint", "change", "phase", "step", "weights", "gates"],
    list.map(r => {
      const state = (r.status && r.status.state) || {};
      const spec = r.spec.rollout || {};
      const steps = (spec.steps || []).length;
      const phase = state.phase || "pending";
      const cls = phase === "promoted" ? "ok" : phase.startsWith("roll") ? "bad" : "wait";
      return [el("b", {}, r.name), (r.spec.stable || "?") + " \\u2192 " + (spec.to || "?"),
              el("span", {class: cls}, phase),
              state.step == null ? "-" : (state.step + 1) + " of " + steps,
              (state.weights || []).map((w, i) => (i ? "canary " : "stable ") + w + "%")
                .join(" / ") +
                (state.shadow_percent ? " (shadow " + state.shadow_percent + "%)" : ""),
              gates(state)];
    }), "No rollouts: modelplane rollout ENDPOINT --to MODEL:VERSION");
}

function errors(list) {
  return table(["at", "endpoint", "version", "status", "error", "request id"],
    list.map(e => [new Date(e.at).toLocaleTimeString(), e.endpoint,
                   (e.model_version || "-") + " (" + e.route_kind + ")", e.status,
                   el("span", {title: e.detail || ""}, e.error_code || e.fallback_reason || ""),
                   el("code", {}, e.request_id)]),
    "No failed predictions in the log.");
}

function num(x, digits) {
  return x == null ? "-" : typeof x === "number" ? Number(x.toPrecision(digits || 4)).toString()
                                                 : String(x);
}
function pct(x) { return x == null ? "-" : (100 * x).toFixed(1) + "%"; }
function money(x) { return x == null ? "-" : x.toFixed(2); }
function age(s) {
  if (s == null) return "-";
  if (s < 120) return s.toFixed(0) + " s";
  if (s < 7200) return (s / 60).toFixed(0) + " min";
  return s < 172800 ? (s / 3600).toFixed(1) + " h" : (s / 86400).toFixed(1) + " d";
}

function versusPrevious(report, version) {
  const c = report.comparisons.find(c => c.candidate === version);
  if (!c) return el("span", {class: "muted"}, "-");
  const r = c.reading;
  return el("span", {class: c.regressed ? "bad" : "ok",
                     title: c.metric + " " + num(r.candidate) + " vs " + num(r.baseline)},
            (c.regressed ? "worse than " : "not worse than ") + c.baseline);
}

function outcomeTable(report) {
  const names = [...new Set(report.versions.flatMap(v => Object.keys(v.metrics)))].sort();
  return el("div", {class: "outcome"},
    el("h3", {}, report.endpoint + " ", el("span", {class: "muted"},
       (report.task || "no labels yet") + (report.metric ? ", compared by " + report.metric : ""))),
    table(["version", "answered", "labelled", "label latency p50", ...names, "estimate (CBPE)",
           "vs previous", ""],
      report.versions.map(v => [
        el("b", {}, v.version), v.answered_rows, v.labelled_rows + " (" + pct(v.coverage) + ")",
        age(v.label_latency_p50_s), ...names.map(m => num(v.metrics[m])),
        v.estimate ? "accuracy " + num(v.estimate.accuracy, 3) +
                     (v.estimate_parted ? " (parted from realised)" : "") : "-",
        versusPrevious(report, v.version), evidenceLink(v.version)]), ""),
    report.alerts.map(line => el("div", {class: "bad"}, line)));
}

function outcomes(list) {
  const shown = list.filter(r => r.versions.length);
  if (!shown.length) {
    return el("p", {class: "muted"}, "No outcomes yet: send ground truth to POST " +
              "/v1/endpoints/ENDPOINT:feedback, or modelplane feedback import FILE --endpoint E");
  }
  return el("div", {}, shown.map(outcomeTable));
}

function usedOf(t, r) { return num(t.used_hours[r], 3) + " / " + num(t.reserved_hours[r], 3); }

function cost(doc) {
  return el("div", {},
    table(["team", "cost", "serving", "jobs", "idle share", "idle cost",
           "CPU core-h used / reserved", "memory GiB-h used / reserved", "GPU-h used / reserved"],
      doc.teams.map(t => [el("b", {}, t.team), money(t.cost), money(t.serving_cost),
                          money(t.jobs_cost), pct(t.idle_share), money(t.waste),
                          usedOf(t, "cpu"), usedOf(t, "memory"), usedOf(t, "gpu")]),
      "No usage recorded in the last 7 days."),
    el("p", {class: "muted"}, "nodes " + money(doc.nodes_cost) + " = teams " +
       money(doc.teams_cost) + " + reserved by nobody " + money(doc.idle_cost)));
}

function waste(doc) {
  const worst = doc.groups.filter(g => doc.reserve_most_use_least.includes(g.name));
  if (!worst.length) {
    return el("p", {class: "muted"}, "No endpoint or job reserves much more than it uses.");
  }
  return el("div", {}, el("h3", {}, "Reserve most, use least"),
    table(["what", "team", "idle share", "idle cost", "CPU used", "saving at peak"],
      worst.map(g => [el("b", {}, g.kind + " " + g.name), g.team, pct(g.idle_share),
                      money(g.waste), pct(g.utilization.cpu), money(g.saving_at_peak)]), ""));
}

function versions(models) {
  const rows = [];
  for (const m of models) {
    const aliases = Object.entries(m.aliases || {});
    for (let v = m.latest_version || 0; v >= 1 && v > (m.latest_version || 0) - 5; v--) {
      const named = aliases.filter(([, to]) => to === v).map(([a]) => "@" + a).join(" ");
      rows.push([el("b", {}, m.name + ":" + v), named, evidenceLink(m.name + ":" + v)]);
    }
  }
  return table(["version", "aliases", ""], rows, "No models yet: modelplane push PACKAGE");
}

function sandbox(gateways) {
  // what the serving gateway's model workers cannot give up, while it reports (as status)
  const status = (gateways[0] || {}).status || {};
  const fresh = Date.now() / 1000 - (status.heartbeat_at || 0) <= 3 * (status.every_s || 0);
  const missing = Object.entries((fresh && status.sandbox_missing) || {});
  if (!missing.length) return el("span", {});
  return el("div", {class: "note"}, "Model workers here run without: ",
            missing.map(([feature, why]) => feature + " (" + why + ")").join("; "),
            ". See docs/security.md#the-sandbox");
}

async function section(id, path, render) {
  const target = document.getElementById(id);
  try {
    target.replaceChildren(await render(await get(path)));
    target.className = "";
    return null;
  } catch (error) {
    target.replaceChildren(el("span", {class: "bad"}, error.message));
    return error;
  }
}

async function refresh() {
  const failures = await Promise.all([
    section("sandbox", "/v1/resources/Gateway", sandbox),
    section("endpoints", "/v1/resources/Endpoint", endpoints),
    section("rollouts", "/v1/resources/Rollout", rollouts),
    section("errors", "/v1/errors?limit=20", errors),
  ]);
  const note = document.getElementById("note");
  note.hidden = !failures.some(f => f instanceof Refused);
  note.textContent = "This server requires a token: open " + location.origin +
    "/#token=YOUR_TOKEN (it is kept in this browser) or create one with 'modelplane tokens'.";
  document.getElementById("when").textContent = "updated " + new Date().toLocaleTimeString();
}

async function refreshSlow() {
  await Promise.all([
    section("outcomes", "/v1/outcomes", outcomes),
    section("cost", "/v1/reports/cost?since=7d", cost),
    section("waste", "/v1/reports/usage?since=7d&top=5", waste),
    section("versions", "/v1/models", versions),
  ]);
}

refresh();
refreshSlow();
setInterval(refresh, 2000);
// outcomes and usage move slowly and cost more to compute: read them less often
setInterval(refreshSlow, 15000);
</script>
</body>
</html>
"""
