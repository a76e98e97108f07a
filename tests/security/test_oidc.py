"""Tokens from an OIDC issuer: keys fetched from its JWKS over real HTTP on loopback."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from modelplane.errors import InvalidSpec, Unauthorized
from modelplane.security.oidc import OidcConfig, OidcVerifier, either
from modelplane.security.scopes import Principal, Scope

jwt = pytest.importorskip("jwt")

AUDIENCE = "modelplane"


def _key() -> rsa.RSAPrivateKey:
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


SIGNING, STRANGER = _key(), _key()


class Issuer:
    """A JWKS endpoint on loopback, and a way to sign tokens as the issuer would."""

    def __init__(self) -> None:
        jwk = json.loads(jwt.algorithms.RSAAlgorithm.to_jwk(SIGNING.public_key()))
        body = json.dumps({"keys": [{**jwk, "kid": "k1", "use": "sig", "alg": "RS256"}]})

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                payload = body.encode()
                self.send_response(200 if self.path == "/.well-known/jwks.json" else 404)
                self.send_header("content-type", "application/json")
                self.send_header("content-length", str(len(payload)))
                self.end_headers()
                self.wfile.write(payload)

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def token(self, key: rsa.RSAPrivateKey = SIGNING, **claims: Any) -> str:
        now = int(time.time())
        body = {"iss": self.url, "aud": AUDIENCE, "sub": "dana", "exp": now + 300, "iat": now}
        body.update(claims)
        pem = key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
        return str(jwt.encode(body, pem, algorithm="RS256", headers={"kid": "k1"}))

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture(scope="module")
def issuer() -> Iterator[Issuer]:
    running = Issuer()
    yield running
    running.close()


@pytest.fixture
def verify(issuer: Issuer) -> OidcVerifier:
    return OidcVerifier(OidcConfig(issuer=issuer.url, audience=AUDIENCE))


def test_a_valid_token_is_a_principal(issuer: Issuer, verify: OidcVerifier) -> None:
    token = issuer.token(team="risk", scope="openid profile deploy read", jti="t-1")
    principal = verify(token)
    assert (principal.subject, principal.team) == ("dana", "risk")
    assert principal.scopes == frozenset({Scope.DEPLOY, Scope.READ})  # openid grants nothing
    assert principal.token_id == "jwt:t-1"
    assert principal.expires_at is not None
    assert principal.expires_at > time.time()


def test_scopes_as_a_list_and_endpoint_limits(issuer: Issuer, verify: OidcVerifier) -> None:
    token = issuer.token(team="risk", scope=["predict"], modelplane_endpoints=["fraud-score"])
    principal = verify(token)
    assert principal.scopes == frozenset({Scope.PREDICT})
    assert principal.endpoints == frozenset({"fraud-score"})


@pytest.mark.parametrize(
    ("claims", "key", "why"),
    [
        ({"team": "risk", "exp": int(time.time()) - 600}, SIGNING, "expired"),
        ({"team": "risk", "aud": "someone-else"}, SIGNING, "not valid"),
        ({"team": "risk", "iss": "https://evil.example"}, SIGNING, "not valid"),
        ({"team": "risk"}, STRANGER, "not valid"),
        ({"scope": "admin"}, SIGNING, "no team"),
    ],
)
def test_bad_tokens_are_refused(
    issuer: Issuer, verify: OidcVerifier, claims: dict[str, Any], key: Any, why: str
) -> None:
    with pytest.raises(Unauthorized, match=why):
        verify(issuer.token(key=key, **claims))


def test_garbage_and_an_unreachable_issuer_are_refused(issuer: Issuer) -> None:
    with pytest.raises(Unauthorized):
        OidcVerifier(OidcConfig(issuer=issuer.url, audience=AUDIENCE))("not.a.jwt")
    gone = OidcConfig(issuer="http://127.0.0.1:9", audience=AUDIENCE)
    with pytest.raises(Unauthorized, match="signing keys"):
        OidcVerifier(gone)(issuer.token(team="risk"))
    with pytest.raises(InvalidSpec):
        OidcConfig(issuer="risk", audience=AUDIENCE)


def test_local_tokens_and_jwts_side_by_side(issuer: Issuer, verify: OidcVerifier) -> None:
    local_principal = Principal("bot", "risk", frozenset({Scope.READ}))
    seen: list[str] = []

    def local(token: str) -> Principal:
        seen.append(token)
        return local_principal

    both = either(local, verify)
    assert both("mp_0123456789abcdef_secret") is local_principal
    assert both(issuer.token(team="growth", scope="read")).team == "growth"
    assert seen == ["mp_0123456789abcdef_secret"]


def test_the_control_api_takes_jwts(issuer: Issuer, verify: OidcVerifier, tmp_path: Any) -> None:
    import socket

    import httpx
    import uvicorn

    from modelplane.controlplane.api import create_api
    from modelplane.registry.service import open_registry
    from modelplane.security.auth import CachedAuthenticator
    from modelplane.security.tokens import TokenStore
    from modelplane.store.resources import ResourceStore

    registry = open_registry(f"sqlite:///{tmp_path}/state.db", str(tmp_path / "art"), actor="x")
    ResourceStore(registry.engine).apply("Policy", "default", {"kind": "Policy"}, actor="seed")
    authenticator = CachedAuthenticator(either(TokenStore(registry.engine).verify, verify))
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = int(sock.getsockname()[1])
    config = uvicorn.Config(
        create_api(registry, authenticator=authenticator),
        host="127.0.0.1", port=port, log_level="error", lifespan="off",
    )  # fmt: skip
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 20
    while not server.started and time.monotonic() < deadline:
        time.sleep(0.02)
    try:
        reader = issuer.token(team="risk", scope="read")
        deployer = issuer.token(team="risk", scope="deploy")
        with httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=10) as http:
            who = http.get("/v1/whoami", headers={"authorization": f"Bearer {reader}"}).json()
            assert (who["subject"], who["team"], who["scopes"]) == ("dana", "risk", ["read"])
            listed = http.get("/v1/resources/Policy", headers={"authorization": f"Bearer {reader}"})
            assert listed.status_code == 200
            refused = http.delete(
                "/v1/resources/Policy/default", headers={"authorization": f"Bearer {deployer}"}
            )
            assert refused.status_code == 403
            forged = issuer.token(key=STRANGER, team="risk", scope="admin")
            denied = http.get("/v1/resources/Policy", headers={"authorization": f"Bearer {forged}"})
            assert denied.status_code == 401
    finally:
        server.should_exit = True
        thread.join(timeout=10)
        registry.close()
