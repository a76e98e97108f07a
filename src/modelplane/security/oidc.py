"""Tokens from a company's own issuer (OIDC / JWT), verified with PyJWT.

For teams that already have an identity provider: ``up --oidc-issuer URL --oidc-audience
A`` accepts the provider's signed JWTs beside (or, with no local tokens issued, instead of)
modelplane's own. The signing keys come from the issuer's JWKS (fetched once and cached by
``PyJWKClient``) or from a PEM key given directly. A token must carry ``sub``, ``exp``,
``iss`` and ``aud``; the team comes from a claim (``team`` by default) and the scopes from
another (``scope``, space separated as OAuth writes it, or a list), of which only
modelplane's scope names count: a provider's ``openid profile`` grant nothing here.

This is the only module that imports PyJWT (the ``oidc`` extra).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from modelplane.errors import InvalidSpec, MissingExtra, Unauthorized
from modelplane.security.scopes import Principal, Scope

__all__ = ["OidcConfig", "OidcVerifier", "either"]

_SCOPES = {s.value: s for s in Scope}


@dataclass(frozen=True, slots=True)
class OidcConfig:
    """Which issuer to trust, and where its tokens say team and scopes."""

    issuer: str
    audience: str
    jwks_url: str | None = None
    """Default: ``{issuer}/.well-known/jwks.json``."""
    public_key: str | None = None
    """A PEM public key instead of a JWKS (an issuer with one fixed key)."""
    algorithms: tuple[str, ...] = ("RS256", "ES256", "EdDSA")
    team_claim: str = "team"
    scope_claim: str = "scope"
    endpoints_claim: str = "modelplane_endpoints"
    """Endpoints a ``predict`` scope is limited to; absent: every endpoint of the team."""
    leeway_s: float = 30.0
    """Clock skew tolerated on ``exp`` and ``nbf``."""

    def __post_init__(self) -> None:
        if not self.issuer.startswith(("https://", "http://")):
            raise InvalidSpec(
                f"oidc issuer: '{self.issuer}' is not a URL",
                details=[{"field": "oidc_issuer", "problem": "expected http(s)://..."}],
            )


class OidcVerifier:
    """A ``verify`` for :class:`~modelplane.security.auth.CachedAuthenticator`: a JWT to a
    principal, or :class:`Unauthorized` saying why not. Blocking (it may fetch the JWKS)."""

    def __init__(self, config: OidcConfig) -> None:
        try:
            import jwt
        except ImportError:
            raise MissingExtra("PyJWT", "oidc") from None
        self.config = config
        self._jwt = jwt
        self._jwks: jwt.PyJWKClient | None = None
        if config.public_key is None:
            url = config.jwks_url or f"{config.issuer.rstrip('/')}/.well-known/jwks.json"
            self._jwks = jwt.PyJWKClient(url, cache_keys=True, lifespan=300, timeout=5)

    def __call__(self, token: str) -> Principal:
        jwt = self._jwt
        config = self.config
        try:
            key: Any = config.public_key
            if self._jwks is not None:
                key = self._jwks.get_signing_key_from_jwt(token).key
            claims: dict[str, Any] = jwt.decode(
                token,
                key,
                algorithms=list(config.algorithms),
                audience=config.audience,
                issuer=config.issuer,
                leeway=config.leeway_s,
                options={"require": ["exp", "iss", "aud", "sub"]},
            )
        except jwt.ExpiredSignatureError:
            raise Unauthorized("the token expired") from None
        except jwt.PyJWKClientError as exc:
            raise Unauthorized(f"the issuer's signing keys are unavailable: {exc}") from None
        except jwt.PyJWTError as exc:
            raise Unauthorized(f"the token is not valid: {exc}") from None
        return self._principal(claims)

    def _principal(self, claims: dict[str, Any]) -> Principal:
        config = self.config
        team = claims.get(config.team_claim)
        if not isinstance(team, str) or not team:
            raise Unauthorized(f"the token names no team (claim '{config.team_claim}')")
        granted = claims.get(config.scope_claim, "")
        names = granted.split() if isinstance(granted, str) else list(granted or [])
        scopes = frozenset(_SCOPES[n] for n in names if isinstance(n, str) and n in _SCOPES)
        limited = claims.get(config.endpoints_claim)
        endpoints = None if limited is None else frozenset(str(e) for e in limited)
        subject = str(claims["sub"])
        return Principal(
            subject,
            team,
            scopes,
            endpoints,
            token_id=f"jwt:{claims.get('jti') or subject}",
            expires_at=float(claims["exp"]),
        )


def either(
    local: Callable[[str], Principal], oidc: OidcVerifier | None
) -> Callable[[str], Principal]:
    """One ``verify`` for both kinds: modelplane's own tokens (``mp_...``) go to ``local``,
    anything else to the issuer's verifier (when one is configured)."""

    def verify(token: str) -> Principal:
        if token.startswith("mp_") or oidc is None:
            return local(token)
        return oidc(token)

    return verify
