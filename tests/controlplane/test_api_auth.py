"""Every control-API route, over real HTTP on loopback, against every kind of bad caller.

For each route: no token, a malformed one, an expired one and a revoked one answer 401; a
token without the route's scope, or of another team, answers 403; each in the error shape,
and the state store and the online store are exactly as they were. Then each route is
called with a token that may, to show the refusals were not for some other reason.
"""

from __future__ import annotations

import re
import time
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest
from fastapi.routing import APIRoute
from sklearn.linear_model import LogisticRegression
from sqlalchemy import Engine, insert, select
from tests.kit import serving_app

from modelplane.controlplane.api import create_api
from modelplane.controlplane.limits import OPEN_PATHS
from modelplane.features.base import OnlineStore
from modelplane.features.stores import open_online_store
from modelplane.registry.archive import export_tar
from modelplane.registry.build import package
from modelplane.registry.service import Registry, open_registry
from modelplane.security.auth import CachedAuthenticator
from modelplane.security.tokens import TokenStore
from modelplane.store.db import read_session
from modelplane.store.jobs import JobStore
from modelplane.store.resources import ResourceStore
from modelplane.store.schema import Base, PredictionRow
from modelplane.types import FakeClock

pd = pytest.importorskip("pandas")

CONTRACT = {
    "name": "score",
    "inputs": [{"name": "a", "dtype": "float64"}, {"name": "b", "dtype": "float64"}],
}


def endpoint(name: str, team: str) -> dict[str, Any]:
    return {
        "kind": "Endpoint",
        "name": name,
        "team": team,
        "contract": CONTRACT,
        "routes": [{"model": "fraud:1"}],
    }


FEATURE_SET = {
    "kind": "FeatureSet",
    "name": "customer",
    "version": 1,
    "team": "risk",
    "entity": {"name": "customer_id", "dtype": "string"},
    "features": [{"name": "spend", "dtype": "float64"}],
    "freshness": {"max_age_s": 3600.0},
}
POLICY = {"kind": "Policy", "name": "default"}
JOB = {
    "kind": "Job",
    "name": "risk-backfill",
    "team": "risk",
    "work": {
        "type": "batch-score",
        "model": "fraud:1",
        "input": {"url": "/data/risk.parquet"},
        "output": {"url": "/data/risk-scores"},
    },
}
REQUEST_ID = "req-risk-1"


@dataclass(frozen=True)
class Route:
    """One route: how to call it, the token that may, and the ones that may not."""

    name: str
    method: str
    path: str
    allowed: str
    wrong_scope: str | None
    wrong_team: str | None = None
    body: dict[str, Any] | None = None
    upload: bool = False
    """Send the stack's new package tar as the body."""


ROUTES = [
    Route("whoami", "GET", "/v1/whoami", "caller", None),
    # other teams' errors are left out (below), not refused
    Route("recent errors", "GET", "/v1/errors", "reader", "caller"),
    Route("outcomes", "GET", "/v1/outcomes", "reader", "caller"),  # left out, as errors
    Route("status", "GET", "/v1/status", "reader", "caller"),
    Route("list resources", "GET", "/v1/resources/Endpoint", "reader", "caller"),
    Route("read resource", "GET", "/v1/resources/Endpoint/risk-score", "reader", "caller"),
    Route("list models", "GET", "/v1/models", "reader", "caller"),
    Route(
        "push model", "POST", "/v1/models:push", "deployer", "reader", wrong_team="growth",
        upload=True,
    ),
    Route("list versions", "GET", "/v1/models/fraud/versions", "reader", "caller"),
    Route("read version", "GET", "/v1/versions/fraud:1", "reader", "caller"),
    Route("read audit", "GET", "/v1/audit", "reader", "caller"),
    Route(
        "read evidence", "GET", "/v1/versions/fraud:1/evidence", "reader", "caller",
        wrong_team="growth",
    ),
    Route(
        "read evidence page", "GET", "/v1/versions/fraud:1/evidence.html", "reader", "caller",
        wrong_team="growth",
    ),
    Route(
        "read prediction log", "GET", f"/v1/predictions/{REQUEST_ID}", "reader", "caller",
        wrong_team="growth",
    ),
    Route(
        "apply endpoint", "POST", "/v1/apply", "deployer", "reader", wrong_team="growth",
        body={"documents": [endpoint("risk-new", "risk")]},
    ),
    Route(
        "apply feature set", "POST", "/v1/apply", "deployer", "reader", wrong_team="growth",
        body={"documents": [{**FEATURE_SET, "description": "changed"}]},
    ),
    Route(
        "apply policy", "POST", "/v1/apply", "admin", "deployer",
        body={"documents": [POLICY]},
    ),
    Route(
        "push features", "POST", "/v1/features/customer:push", "deployer", "reader",
        wrong_team="growth", body={"rows": [{"key": "c1", "values": {"spend": 2.0}}]},
    ),
    Route(
        "start rollout", "POST", "/v1/rollouts", "deployer", "reader", wrong_team="growth",
        body={"document": {"endpoint": "risk-score", "to": "fraud:2"}, "reason": "better"},
    ),
    Route(
        "roll back", "POST", "/v1/rollouts/risk-score:rollback", "deployer", "reader",
        wrong_team="growth", body={"reason": "p99"},
    ),
    Route(
        "delete feature set", "DELETE", "/v1/resources/FeatureSet/customer:1", "deployer",
        "reader", wrong_team="growth",
    ),
    Route(
        "delete endpoint", "DELETE", "/v1/resources/Endpoint/risk-score", "deployer", "reader",
        wrong_team="growth",
    ),
    Route("cost report", "GET", "/v1/reports/cost", "reader", "caller"),
    Route("usage report", "GET", "/v1/reports/usage", "reader", "caller"),
    Route("list jobs", "GET", "/v1/jobs", "reader", "caller"),
    Route("show job", "GET", "/v1/jobs/risk-job", "reader", "caller"),
    Route("job logs", "GET", "/v1/jobs/risk-job/logs", "reader", "caller"),
    Route(
        "submit job", "POST", "/v1/apply", "runner", "reader", wrong_team="growth",
        body={"documents": [JOB]},
    ),
    Route(
        "cancel job", "POST", "/v1/jobs/risk-job:cancel", "runner", "reader",
        wrong_team="growth", body={"reason": "wrong input"},
    ),
    Route(
        "retry job", "POST", "/v1/jobs/risk-job:retry", "runner", "reader",
        wrong_team="growth", body={"reason": "input fixed"},
    ),
    # last: the admin's call (the allowed one) hands the endpoint to another team
    Route(
        "take over endpoint", "POST", "/v1/apply", "admin", "reader", wrong_team="growth",
        body={"documents": [endpoint("risk-score", "growth")]},
    ),
]  # fmt: skip

BAD_CALLERS = ["none", "malformed", "expired", "revoked"]


@dataclass
class Stack:
    url: str
    registry: Registry
    online: OnlineStore
    tokens: dict[str, str]
    artifacts: Path
    package_tar: bytes
    """A third version of fraud, not pushed yet."""


def _issue(engine: Engine) -> dict[str, str]:
    store = TokenStore(engine)
    issued: dict[str, str] = {}

    def issue(key: str, team: str, *scopes: str, **kwargs: Any) -> None:
        issued[key] = store.create(
            subject=key, team=team, scopes=list(scopes), actor="test", **kwargs
        ).token

    issue("admin", "platform", "admin")
    issue("deployer", "risk", "deploy", "features:write", "read")
    issue("reader", "risk", "read")
    issue("caller", "risk", "predict")
    issue("growth", "growth", "deploy", "features:write", "read", "predict", "jobs")
    issue("runner", "risk", "jobs", "read")
    issue("revoked", "risk", "deploy", "features:write", "read", "predict")
    store.revoke(issued["revoked"].split("_")[1], actor="test")
    past = TokenStore(engine, clock=FakeClock(start=time.time() - 3600))
    issued["expired"] = past.create(
        subject="expired", team="risk", scopes=["admin"], actor="test", expires_in_s=60
    ).token
    issued["malformed"] = "mp_not-a-token"
    return issued


def _seed(registry: Registry, tmp_path: Path) -> None:
    frame = pd.DataFrame(np.random.default_rng(3).normal(size=(30, 2)), columns=["a", "b"])
    model = LogisticRegression().fit(frame, (frame["a"] > 0).astype(int))
    built = package(model, name="fraud", output_dir=tmp_path / "pkg", sample_input=frame.head())
    registry.push(built.path, team="risk")
    better = LogisticRegression(C=0.1).fit(frame, (frame["a"] > 0).astype(int))
    built = package(better, name="fraud", output_dir=tmp_path / "pkg2", sample_input=frame.head())
    registry.push(built.path, team="risk")  # fraud:2, for the rollout
    third = LogisticRegression(C=0.01).fit(frame, (frame["a"] > 0).astype(int))
    built = package(third, name="fraud", output_dir=tmp_path / "pkg3", sample_input=frame.head())
    export_tar(built.path, tmp_path / "fraud3.tar")
    resources = ResourceStore(registry.engine)
    for name, team in (("risk-score", "risk"), ("growth-score", "growth")):
        resources.apply("Endpoint", name, endpoint(name, team), actor="seed")
    resources.apply("FeatureSet", "customer:1", FEATURE_SET, actor="seed")
    resources.apply("Job", "risk-job", {**JOB, "name": "risk-job"}, actor="seed")
    JobStore(registry.engine).create(
        name="risk-job", uid="00000000-0000-4000-8000-000000000001", generation=1,
        team="risk", tier="batch", work_type="batch-score", submitted_at=1.0, now=1.0,
    )  # fmt: skip
    with registry.engine.begin() as conn:
        for status in (200, 503):
            conn.execute(
                insert(PredictionRow).values(
                    request_id=REQUEST_ID, at=datetime.now(UTC), endpoint="risk-score",
                    contract="score", contract_version=1, route_kind="stable", status=status,
                    error_code=None if status == 200 else "worker_failed",
                    queue_ms=0.1, batch_ms=0.1, compute_ms=0.1, total_ms=0.3,
                )
            )  # fmt: skip


@pytest.fixture
def stack(tmp_path: Path, database_url: str) -> Iterator[Stack]:
    """The API over a fresh store, on SQLite and on PostgreSQL."""
    registry = open_registry(database_url, str(tmp_path / "art"), actor="x")
    online = open_online_store(f"sqlite:///{tmp_path}/features.db")
    _seed(registry, tmp_path)
    tokens = _issue(registry.engine)
    authenticator = CachedAuthenticator(TokenStore(registry.engine).verify)
    app = create_api(registry, authenticator=authenticator, online_store=online)
    tar = (tmp_path / "fraud3.tar").read_bytes()
    with serving_app(app) as url:
        yield Stack(url, registry, online, tokens, tmp_path / "art", tar)
    online.close()
    registry.close()


def snapshot(stack: Stack) -> dict[str, Any]:
    """Every row of every table, and the online store's value for the pushed key."""
    tables: dict[str, Any] = {}
    with read_session(stack.registry.engine) as session:
        for table in Base.metadata.sorted_tables:
            rows = session.execute(select(table)).all()
            tables[table.name] = sorted(repr(tuple(row)) for row in rows)
    found = stack.online.read("customer", 1, ["c1"], ["spend"], now=time.time())
    tables["online"] = [dict(lookup.values) for lookup in found]
    tables["artifacts"] = sorted(str(p) for p in stack.artifacts.rglob("*"))
    return tables


def call(stack: Stack, http: httpx.Client, route: Route, token: str | None) -> httpx.Response:
    headers = {} if token is None else {"authorization": f"Bearer {token}"}
    if route.upload:
        return http.post(route.path, content=stack.package_tar, headers=headers)
    return http.request(route.method, route.path, json=route.body, headers=headers)


def test_every_route_refuses_every_bad_caller_and_changes_nothing(stack: Stack) -> None:
    before = snapshot(stack)
    with httpx.Client(base_url=stack.url, timeout=10) as http:
        for route in ROUTES:
            callers = [(c, 401, "unauthorized") for c in BAD_CALLERS]
            if route.wrong_scope is not None:
                callers.append((route.wrong_scope, 403, "forbidden"))
            if route.wrong_team is not None:
                callers.append((route.wrong_team, 403, "forbidden"))
            for caller, status, code in callers:
                token = None if caller == "none" else stack.tokens[caller]
                response = call(stack, http, route, token)
                where = f"{route.name} as {caller}"
                assert response.status_code == status, f"{where}: {response.text}"
                assert response.json()["error"]["code"] == code, where
                assert response.json()["error"]["message"], where
                if status == 401:
                    assert response.headers["www-authenticate"].startswith("Bearer"), where
    assert snapshot(stack) == before


def test_every_route_serves_a_caller_who_may(stack: Stack) -> None:
    with httpx.Client(base_url=stack.url, timeout=10) as http:
        for route in ROUTES:
            response = call(stack, http, route, stack.tokens[route.allowed])
            assert response.status_code == 200, f"{route.name}: {response.text}"
        # admin may do what a team's token may not
        growth_delete = http.delete(
            "/v1/resources/Endpoint/growth-score",
            headers={"authorization": f"Bearer {stack.tokens['admin']}"},
        )
        assert growth_delete.status_code == 200
        assert http.get("/healthz").status_code == 200  # liveness needs no token


def test_the_audit_actor_is_the_token_subject_never_a_header(stack: Stack) -> None:
    with httpx.Client(base_url=stack.url, timeout=10) as http:
        headers = {
            "authorization": f"Bearer {stack.tokens['deployer']}",
            "x-actor": "someone-else",
        }
        body = {"documents": [endpoint("risk-new", "risk")], "reason": "launch"}
        assert http.post("/v1/apply", json=body, headers=headers).status_code == 200
    events = stack.registry.audit_events(subject="Endpoint/risk-new")
    assert [(e.action, e.actor) for e in events] == [("endpoint.apply", "deployer")]


def test_a_team_token_reads_every_team_but_only_its_own_prediction_log(stack: Stack) -> None:
    with httpx.Client(base_url=stack.url, timeout=10) as http:
        growth = {"authorization": f"Bearer {stack.tokens['growth']}"}
        listed = http.get("/v1/resources/Endpoint", headers=growth)
        assert {r["name"] for r in listed.json()} == {"risk-score", "growth-score"}
        log = http.get(f"/v1/predictions/{REQUEST_ID}", headers=growth)
        assert log.status_code == 403
        assert "team 'risk'" in log.json()["error"]["message"]
        reader = {"authorization": f"Bearer {stack.tokens['reader']}"}
        rows = http.get(f"/v1/predictions/{REQUEST_ID}", headers=reader).json()
        assert [r["endpoint"] for r in rows] == ["risk-score", "risk-score"]
        assert http.get("/v1/errors", headers=growth).json() == []
        [error] = http.get("/v1/errors", headers=reader).json()
        assert error["endpoint"] == "risk-score"


def test_the_matrix_covers_every_route(stack: Stack) -> None:
    """A route added to the API without a row here fails this test, not silently open."""
    app = create_api(stack.registry)
    covered = {(r.method, r.path) for r in ROUTES}
    for route in app.routes:
        if not isinstance(route, APIRoute) or route.path in OPEN_PATHS:
            continue
        pattern = re.compile("^" + re.sub(r"\\{[^}]+\\}", "[^/]+", re.escape(route.path)) + "$")
        for method in route.methods or ():
            assert any(m == method and pattern.match(p) for m, p in covered), (method, route.path)
