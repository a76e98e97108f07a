"""The console's outcome, usage and version views and an evidence pack, in a real browser
(headless Chromium from the Debian packages, over the DevTools protocol), against
``modelplane up`` after a real rollout under load on loopback, with labels fed back to the
gateway and the usage sampler running.

No request the pages make may fail, and none may leave loopback (the evidence pack opens
from a ``blob:`` URL the page made). Set ``MODELPLANE_SCREENSHOTS=DIR`` to keep the
screenshots (bench/results/console-views.png and evidence-pack.png are made that way).
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest
from tests.controlplane import test_console as browser_kit
from tests.kit import cli, running_up, wait_for
from tests.kit.fraud import FAST_ROLLOUT, FRAUD_ENDPOINT, FraudLoad, push_fraud_versions
from tests.kit.fraud import rollout_phase as phase

from modelplane.observe.evidence_pack import verify_pack

pd = pytest.importorskip("pandas")
pytestmark = [pytest.mark.slow, pytest.mark.timeout(300)]

browser = browser_kit.browser  # the fixture: a headless Chromium's DevTools URL
Tab = browser_kit.Tab


def whole_page(tab: Any, path: Path) -> None:
    """A screenshot of the whole page, not only the window."""
    import base64

    size = tab.call("Page.getLayoutMetrics")["cssContentSize"]
    clip = {"x": 0, "y": 0, "width": size["width"], "height": size["height"], "scale": 1}
    shot = tab.call("Page.captureScreenshot", format="png", captureBeyondViewport=True, clip=clip)
    path.write_bytes(base64.b64decode(shot["data"]))


def evaluate(tab: Any, expression: str) -> Any:
    return tab.call("Runtime.evaluate", expression=expression, returnByValue=True)["result"].get(
        "value"
    )


def test_console_views_and_an_evidence_pack_load_whole_from_loopback(
    browser: str, tmp_path: Path
) -> None:
    env = {**os.environ, "MODELPLANE_HOME": str(tmp_path / "home"),
           "MODELPLANE_USAGE_SAMPLE_S": "0.5", "MODELPLANE_USAGE_FLUSH_S": "2"}  # fmt: skip
    push_fraud_versions(env, tmp_path, rows=40)
    (tmp_path / "endpoint.yaml").write_text(FRAUD_ENDPOINT)
    (tmp_path / "fast.yaml").write_text(FAST_ROLLOUT)
    keep = Path(os.environ.get("MODELPLANE_SCREENSHOTS", tmp_path))
    with running_up(env) as up:
        cli(env, "apply", "-f", str(tmp_path / "endpoint.yaml"))
        load = FraudLoad(f"{up.url}/v1/endpoints/fraud-score:predict")
        wait_for(lambda: up.process.poll() is not None or answers(up.url), 90, "the endpoint")
        load.start()
        try:
            wait_for(lambda: len(load.answers) > 20, 60, "traffic on fraud:1")
            cli(env, "rollout", "fraud-score", "--to", "fraud:2", "-f", str(tmp_path / "fast.yaml"))
            wait_for(lambda: phase(env) == "promoted", 90, "the promotion")
            wait_for(lambda: sum(a.version == "fraud:2" for a in load.answers) > 40, 60,
                     "traffic on fraud:2")  # fmt: skip
        finally:
            load.stop.set()
            load.join(timeout=30)
        labels = [
            {"request_id": a.request_id, "label": a.label} for a in load.answers if a.status == 200
        ]
        fed = httpx.post(f"{up.url}/v1/endpoints/fraud-score:feedback",
                         json={"outcomes": labels}, timeout=30)  # fmt: skip
        assert fed.status_code < 300, fed.text
        token = (Path(env["MODELPLANE_HOME"]) / "token").read_text().strip()
        auth = {"authorization": f"Bearer {token}"}
        api = up.api_url

        def cost_has_risk() -> bool:
            doc = httpx.get(f"{api}/v1/reports/cost?since=1h", headers=auth, timeout=10).json()
            return any(t["team"] == "risk" for t in doc["teams"])

        wait_for(cost_has_risk, 60, "the usage sampler's first intervals")
        # the pack the API serves lists every decision of the audit log, in order
        pack = httpx.get(f"{api}/v1/versions/fraud:2/evidence", headers=auth, timeout=30).json()
        verify_pack(pack)
        audit = httpx.get(f"{api}/v1/audit", params={"subject": "Rollout/fraud-score",
                          "limit": 1000}, headers=auth, timeout=10).json()  # fmt: skip
        assert [d["seq"] for r in pack["rollouts"] for d in r["decisions"]] == sorted(
            e["seq"] for e in audit
        )
        assert pack["rollouts"][0]["outcome"] == "promoted"

        console = Tab(browser)
        console.call("Page.navigate", url=f"{api}/#token={token}")
        wait_for(lambda: "fraud:2" in console.text("#outcomes"), 60, "the outcome view")
        wait_for(lambda: "risk" in console.text("#cost"), 60, "the cost view")
        wait_for(lambda: "fraud:2" in console.text("#versions"), 60, "the version list")
        outcomes = console.text("#outcomes")
        assert "fraud-score" in outcomes
        assert "classifier" in outcomes
        assert "fraud:1" in outcomes
        assert console.count("#endpoints a.evidence") >= 1
        whole_page(console, keep / "console-views.png")
        evaluate(console, "document.querySelector('#versions a.evidence').click()")
        wait_for(lambda: "evidence pack" in str(evaluate(console, "document.title")), 30,
                 "the evidence pack to open")  # fmt: skip
        assert str(evaluate(console, "location.href")).startswith("blob:")
        wait_for(lambda: console.text("#rollouts"), 30, "the pack's rollouts")
        shown = console.text("#rollouts")
        assert "promoted" in shown
        assert str(pack["rollouts"][0]["decisions"][-1]["seq"]) in shown
        assert "intact" in console.text("#audit")
        embedded = evaluate(console, "document.getElementById('evidence').textContent")
        assert json.loads(embedded)["subject"] == "fraud:2"
        whole_page(console, keep / "evidence-pack.png")
        assert console.failures() == []
        requests = console.requests()
        assert all(url.startswith((api, "data:", "blob:")) for url in requests), requests
        console.close()
    assert (keep / "evidence-pack.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def answers(url: str) -> bool:
    try:
        response = httpx.post(f"{url}/v1/endpoints/fraud-score:predict",
                              json={"instances": [{"a": 1.0, "b": 0.0}]}, timeout=5)  # fmt: skip
    except httpx.TransportError:
        return False
    return response.status_code == 200


def test_outcomes_are_read_by_the_endpoints_team_only(tmp_path: Path) -> None:
    """Over real HTTP with tokens: each team sees its own endpoint's outcomes, admin both;
    a comparison names its versions apart from its metric values."""
    import time

    from sqlalchemy import insert
    from tests.kit import serving_app

    from modelplane.controlplane.api import create_api
    from modelplane.observe.outcomes import Feedback, OutcomeStore
    from modelplane.registry.service import open_registry
    from modelplane.security.auth import CachedAuthenticator
    from modelplane.security.tokens import TokenStore
    from modelplane.store.resources import ResourceStore
    from modelplane.store.schema import AnswerRow

    registry = open_registry(f"sqlite:///{tmp_path}/state.db", str(tmp_path / "art"), actor="x")
    resources = ResourceStore(registry.engine)
    contract = {"name": "score", "inputs": [{"name": "a", "dtype": "float64"}]}
    rng = np.random.default_rng(4)
    for team in ("risk", "growth"):
        name = f"{team}-score"
        spec = {"kind": "Endpoint", "name": name, "team": team, "contract": contract,
                "routes": [{"model": "m:1"}]}  # fmt: skip
        resources.apply("Endpoint", name, spec, actor="seed")
        labels = []
        with registry.engine.begin() as conn:
            for version, noise in (("m:1", 0.05), ("m:2", 0.6)):
                for i in range(60):
                    y = int(rng.integers(0, 2))
                    conn.execute(insert(AnswerRow).values(
                        request_id=f"{name}-{version}-{i}", at=time.time(), endpoint=name,
                        model_version=version, route=version, route_kind="stable", rows=1,
                        outputs={"probability": [float(np.clip(y + rng.normal(0, noise), 0, 1))]},
                    ))  # fmt: skip
                    labels.append(Feedback(f"{name}-{version}-{i}", float(y)))
        OutcomeStore(registry.engine).ingest(name, labels)
    store = TokenStore(registry.engine)
    tokens = {t: store.create(subject=t, team=t, scopes=["read"], actor="test").token
              for t in ("risk", "growth")}  # fmt: skip
    tokens["admin"] = store.create(subject="a", team="ops", scopes=["admin"], actor="test").token
    app = create_api(registry, authenticator=CachedAuthenticator(store.verify))
    with serving_app(app) as url, httpx.Client(base_url=url, timeout=30) as http:
        assert http.get("/v1/outcomes").status_code == 401
        seen = {
            who: http.get("/v1/outcomes", headers={"authorization": f"Bearer {token}"}).json()
            for who, token in tokens.items()
        }
    registry.close()
    assert [r["endpoint"] for r in seen["risk"]] == ["risk-score"]
    assert [r["endpoint"] for r in seen["growth"]] == ["growth-score"]
    assert [r["endpoint"] for r in seen["admin"]] == ["growth-score", "risk-score"]
    [report] = seen["risk"]
    assert [v["version"] for v in report["versions"]] == ["m:1", "m:2"]
    [comparison] = report["comparisons"]
    assert (comparison["baseline"], comparison["candidate"]) == ("m:1", "m:2")
    assert comparison["regressed"] is True
    assert comparison["reading"]["candidate"] < comparison["reading"]["baseline"]


def test_a_report_is_computed_again_only_when_outcomes_arrive_or_it_is_stale(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The console asks every few seconds; a report reads every labelled answer, so it is
    kept until an outcome arrives or ``fresh_s`` passes."""
    import time

    from sqlalchemy import insert

    from modelplane.controlplane import console_views
    from modelplane.observe.outcome_report import outcomes_by_version
    from modelplane.observe.outcomes import Feedback, OutcomeStore
    from modelplane.store.db import open_engine
    from modelplane.store.schema import AnswerRow
    from modelplane.types import FakeClock

    engine = open_engine(f"sqlite:///{tmp_path}/state.db")
    with engine.begin() as conn:
        for i in range(20):
            conn.execute(insert(AnswerRow).values(
                request_id=f"r{i}", at=time.time(), endpoint="score", model_version="m:1",
                route="m:1", route_kind="stable", rows=1, outputs={"probability": [0.9]},
            ))  # fmt: skip
    store = OutcomeStore(engine)
    store.ingest("score", [Feedback(f"r{i}", 1.0) for i in range(10)])
    computed: list[str] = []
    real = outcomes_by_version

    def counted(engine_: Any, name: str) -> Any:
        computed.append(name)
        return real(engine_, name)

    monkeypatch.setattr(console_views, "outcomes_by_version", counted)
    clock = FakeClock()
    cache = console_views.ReportCache(engine, fresh_s=60.0, clock=clock)
    first = cache.reports(["score"])["score"]
    assert cache.reports(["score"])["score"] is first
    assert computed == ["score"]
    store.ingest("score", [Feedback(f"r{i}", 1.0) for i in range(10, 20)])
    second = cache.reports(["score"])["score"]
    assert computed == ["score", "score"]
    assert [v.labelled_rows for v in second.versions] == [20]
    clock.advance(61.0)
    cache.reports(["score"])
    assert computed == ["score"] * 3
