"""The Grafana dashboard under examples/ (and the Prometheus rules docs/tracing.md gives)
query only series a real gateway exports.

Every PromQL expression of ``examples/grafana/modelplane.json`` (panels and template
variables) is parsed by the small PromQL parser below (the grammar of what dashboards use:
selectors, ranges, functions, aggregations with ``by``/``without``, binary operators with
``on``/``ignoring``/``group_left``/``group_right``); the metric names it selects must each
have samples in a real ``/metrics`` scrape of a real gateway after traffic that touches every
feature the dashboard shows: errors, fallbacks, canary weights, shadows, feature lookups.
"""

from __future__ import annotations

import json
import re
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest
import yaml
from prometheus_client.parser import text_string_to_metric_families
from tests.dataplane import gateway_kit as kit
from tests.kit import wait_for

from modelplane.dataplane.codec_v2 import encode_request
from modelplane.dataplane.endpoint_runtime import EndpointConfig
from modelplane.dataplane.server import ServerThread
from modelplane.features.stores import open_online_store
from modelplane.spec.endpoint import FeatureBinding, Route, Shadow

pytestmark = pytest.mark.timeout(120)

DASHBOARD = Path(__file__).resolve().parents[1] / "examples" / "grafana" / "modelplane.json"
DOC = Path(__file__).resolve().parents[1] / "docs" / "tracing.md"

# ------------------------------------------------------------------ a small PromQL parser

_FUNCTIONS = {
    "rate", "irate", "increase", "delta", "histogram_quantile", "clamp_min", "clamp_max",
    "abs", "time", "vector", "scalar", "avg_over_time", "max_over_time",
}  # fmt: skip
_AGGREGATIONS = {"sum", "max", "min", "avg", "count", "topk", "bottomk", "quantile", "stddev"}
_BINARY = {"+", "-", "*", "/", "%", "^", "==", "!=", ">", "<", ">=", "<=", "and", "or", "unless"}
_TOKEN = re.compile(
    r"""\s*(?:
      (?P<number>\d+(?:\.\d+)?(?:e[+-]?\d+)?)
    | (?P<duration>\[\d+[smhdwy]\])
    | (?P<string>"(?:[^"\\]|\\.)*")
    | (?P<op>==|!=|>=|<=|=~|!~|[-+*/%^(){}\[\],=<>])
    | (?P<ident>[a-zA-Z_:][a-zA-Z0-9_:]*)
    )""",
    re.VERBOSE,
)


def _tokens(expr: str) -> list[tuple[str, str]]:
    out: list[tuple[str, str]] = []
    pos = 0
    expr = expr.strip()
    while pos < len(expr):
        match = _TOKEN.match(expr, pos)
        if match is None or match.end() == pos:
            raise SyntaxError(f"cannot read {expr[pos:]!r}")
        kind = match.lastgroup
        assert kind is not None
        out.append((kind, match.group(kind)))
        pos = match.end()
    return out


class PromQL:
    """Parses one expression; ``metrics`` holds the metric names it selects."""

    def __init__(self, expr: str) -> None:
        self.tokens = _tokens(expr)
        self.pos = 0
        self.metrics: set[str] = set()
        self.expression()
        if self.pos != len(self.tokens):
            raise SyntaxError(f"unexpected {self.peek()} in {expr!r}")

    def peek(self) -> tuple[str, str]:
        return self.tokens[self.pos] if self.pos < len(self.tokens) else ("end", "")

    def take(self, value: str | None = None, kind: str | None = None) -> str:
        got_kind, got = self.peek()
        if (value is not None and got != value) or (kind is not None and got_kind != kind):
            raise SyntaxError(f"expected {value or kind}, got {got!r}")
        self.pos += 1
        return got

    def expression(self) -> None:
        self.unary()
        while self.peek()[1] in _BINARY:
            self.take()
            if self.peek()[1] == "bool":
                self.take()
            if self.peek()[1] in ("on", "ignoring"):
                self.take()
                self.labels()
            if self.peek()[1] in ("group_left", "group_right"):
                self.take()
                if self.peek()[1] == "(":
                    self.labels()
            self.unary()

    def unary(self) -> None:
        if self.peek()[1] in ("-", "+"):
            self.take()
        kind, value = self.peek()
        if kind == "number":
            self.take()
        elif value == "(":
            self.take("(")
            self.expression()
            self.take(")")
        elif kind == "ident" and value in _AGGREGATIONS:
            self.take()
            self.grouping()
            self.arguments()
            self.grouping()
        elif value == "label_values":  # Grafana's variable query: a selector, then a label
            self.take()
            self.take("(")
            self.unary()
            self.take(",")
            self.take(kind="ident")
            self.take(")")
        elif kind == "ident" and value in _FUNCTIONS:
            self.take()
            self.arguments()
        elif kind == "ident":
            self.metrics.add(self.take())
            if self.peek()[1] == "{":
                self.matchers()
        elif value == "{":
            self.matchers()
        else:
            raise SyntaxError(f"unexpected {value!r}")
        if self.peek()[0] == "duration":
            self.take()

    def grouping(self) -> None:
        if self.peek()[1] in ("by", "without"):
            self.take()
            self.labels()

    def arguments(self) -> None:
        self.take("(")
        self.expression()
        while self.peek()[1] == ",":
            self.take(",")
            self.expression()
        self.take(")")

    def labels(self) -> None:
        self.take("(")
        while self.peek()[1] != ")":
            self.take(kind="ident")
            if self.peek()[1] == ",":
                self.take(",")
        self.take(")")

    def matchers(self) -> None:
        self.take("{")
        while self.peek()[1] != "}":
            self.take(kind="ident")
            if self.peek()[1] not in ("=", "!=", "=~", "!~"):
                raise SyntaxError(f"expected a label matcher, got {self.peek()[1]!r}")
            self.take()
            self.take(kind="string")
            if self.peek()[1] == ",":
                self.take(",")
        self.take("}")


_GRAFANA_VARIABLES = {"$__rate_interval": "5m", "$__range": "1h", "$__interval": "1m"}


def _expand(expr: str) -> str:
    for name, value in _GRAFANA_VARIABLES.items():
        expr = expr.replace(name, value)
    return re.sub(r"\$\{?(\w+)\}?", ".*", expr)  # template variables: regex matchers


def _expressions(node: Any) -> Iterator[str]:
    """Every PromQL query in the dashboard: panel targets (rows included) and variables."""
    if isinstance(node, dict):
        for key, value in node.items():
            if (key == "expr" and isinstance(value, str)) or (
                key == "definition" and isinstance(value, str)
            ):
                yield value
            else:
                yield from _expressions(value)
    elif isinstance(node, list):
        for item in node:
            yield from _expressions(item)


def test_the_parser_reads_promql_and_refuses_what_is_not() -> None:
    parsed = PromQL(
        'sum by (team) (clamp_min(a{x=~"1"} - rate(b_total[5m]), 0) * ignoring (t) group_right c)'
    )
    assert parsed.metrics == {"a", "b_total", "c"}
    assert PromQL("histogram_quantile(0.99, sum by (le) (rate(h_bucket[5m])))").metrics == {
        "h_bucket"
    }
    for broken in ("sum(rate(a[5m])", 'a{x="1"', "rate(a[5m]) +", "a{x}", "sum by (a (b)"):
        with pytest.raises(SyntaxError):
            PromQL(broken)


# ------------------------------------------------------------------ the scrape

CUSTOMERS = kit.customers(version=1)


def _endpoints() -> list[EndpointConfig]:
    """``echo``: two versions (a canary at 25%) and a shadow; ``echo-fb``: a static
    fallback; ``echo-features``: a bound feature set."""
    base = kit.EndpointBuilder("echo", "echo").build()
    v1, v2, steady = kit.source("echo", 1), kit.source("echo", 2), kit.source("steady")
    echo = base.endpoint.model_copy(
        update={
            "routes": (Route(model=v1.label, weight=75), Route(model=v2.label, weight=25)),
            "shadows": (Shadow(model=steady.label, percent=100),),
        }
    )
    echo = type(echo).model_validate(echo.model_dump())
    fallback = (
        kit.EndpointBuilder("echo-fb", "echo", contract=kit.echo_contract("echo-fb"))
        .static_fallback(kit.ECHO_FALLBACK)
        .build()
    )
    builder = kit.EndpointBuilder(
        "echo-features", "echo", contract=kit.echo_contract("echo-features")
    )
    binding = FeatureBinding(feature_set="customers:1", entity_key="customer_id", policy="default")
    builder.settings["features"] = (binding,)
    featured = builder.build()
    return [
        EndpointConfig(echo, {v1.label: v1, v2.label: v2, steady.label: steady}),
        fallback,
        EndpointConfig(featured.endpoint, featured.models, {"customers:1": CUSTOMERS}),
    ]


def _scrape_after_traffic(tmp_path: Path) -> str:
    store = open_online_store(f"sqlite:///{tmp_path}/features.db")
    now = time.time()
    store.write("customers", 1, [("fresh", now - 2, {"n": 1}), ("stale", now - 600, {"n": 2})])
    server = ServerThread(_endpoints(), config=kit.gateway_config())
    server.gateway.handler.online_store = store
    with server, httpx.Client(base_url=server.url, timeout=10.0) as client:
        for i in range(20):
            body = encode_request(kit.echo_inputs(1, first=float(i + 1))).body
            assert client.post("/v2/models/echo/infer", content=body).status_code == 200
        failing = encode_request(kit.echo_inputs(1, first=kit.fake_models.RAISE)).body
        assert client.post("/v2/models/echo/infer", content=failing).status_code == 503
        wrong = encode_request(kit.echo_inputs(2, first=kit.fake_models.WRONG_SHAPE)).body
        answered = client.post("/v2/models/echo-fb/infer", content=wrong)
        assert answered.headers["modelplane-fallback"] == "contract_violation"
        for customer in ("fresh", "stale", "unknown"):
            inputs = kit.echo_inputs(1)
            del inputs["n"]
            inputs["customer_id"] = np.array([customer], dtype=object)
            body = encode_request(inputs).body
            assert client.post("/v2/models/echo-features/infer", content=body).status_code == 200

        # shadows are compared off the request path: the scrape waits for their counts
        def scrape() -> str | None:
            text = client.get("/metrics").text
            compared = "modelplane_gateway_shadow_compared_total{"
            return text if compared in text else None

        return wait_for(scrape, 10.0, "the shadow's comparisons")


def _samples(text: str) -> dict[str, int]:
    """Metric name (as queried: ``_total``, ``_bucket``...) → how many samples it has."""
    counts: dict[str, int] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            counts[sample.name] = counts.get(sample.name, 0) + 1
    return counts


def _rules() -> list[dict[str, Any]]:
    """The Prometheus rules docs/tracing.md gives (its YAML block of ``groups``)."""
    blocks = re.findall(r"```yaml\n(.*?)```", DOC.read_text(), re.S)
    (rules,) = [yaml.safe_load(b) for b in blocks if b.startswith("groups:")]
    return [rule for group in rules["groups"] for rule in group["rules"]]


def test_every_series_the_dashboard_and_the_rules_query_exists(tmp_path: Path) -> None:
    dashboard = json.loads(DASHBOARD.read_text())
    expressions = list(_expressions(dashboard))
    assert len(expressions) >= 20
    rules = _rules()
    recorded = {rule["record"] for rule in rules if "record" in rule}
    assert {"modelplane:idle_cost_per_hour", "modelplane:error_ratio:rate5m"} <= recorded
    assert {rule["alert"] for rule in rules if "alert" in rule} == {
        "ModelplaneErrorBudgetBurnFast", "ModelplaneErrorBudgetBurnSlow"
    }  # fmt: skip
    queried: dict[str, str] = {}
    for expr in [*expressions, *(rule["expr"] for rule in rules)]:
        expanded = _expand(expr)
        try:
            parsed = PromQL(expanded)
        except SyntaxError as exc:
            raise AssertionError(f"does not parse: {expr}\n{exc}") from None
        for name in parsed.metrics - recorded:
            queried.setdefault(name, expr)
    samples = _scrape_after_traffic(tmp_path)
    exported = _samples(samples)
    missing = {name: expr for name, expr in queried.items() if not exported.get(name)}
    assert not missing, f"queried but not exported (or no samples): {missing}"
    # what the dashboard promises to show
    promised = (
        "requests_total", "errors_total", "request_duration_seconds_bucket", "queue_rows",
        "batch_rows_bucket", "replicas_ready", "route_traffic_share",
        "slo_availability_objective", "busy_seconds_total", "replica_price_per_hour",
    )  # fmt: skip
    for part in promised:
        assert f"modelplane_gateway_{part}" in queried, part
    values = {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(samples)
        for sample in family.samples
    }
    share = "modelplane_gateway_route_traffic_share"
    canary = (("endpoint", "echo"), ("model_version", "echo:2"), ("route", "echo:2"))
    assert values[(share, canary)] == 0.25
    ready = (("endpoint", "echo"), ("model_version", "steady:1"))
    assert values[("modelplane_gateway_replicas_ready", ready)] == 1.0
    assert values[("modelplane_gateway_busy_seconds_total", ready)] > 0.0


def test_every_panel_has_a_unit_a_title_and_its_own_place() -> None:
    dashboard = json.loads(DASHBOARD.read_text())
    places = set()
    for panel in dashboard["panels"]:
        assert panel["title"]
        place = (panel["gridPos"]["x"], panel["gridPos"]["y"])
        assert place not in places, panel["title"]
        places.add(place)
        if panel["type"] != "row":
            assert panel["fieldConfig"]["defaults"]["unit"], panel["title"]
            assert panel["datasource"]["uid"] == "${datasource}"
