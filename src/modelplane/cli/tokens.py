"""``modelplane tokens``: issue, list and revoke API tokens; and how ``up`` guards its ports.

Tokens are managed against the state store directly, as its owner: whoever can open the
database is already an administrator. A token's secret is printed once, at creation.
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass
from typing import TYPE_CHECKING, Annotated

import typer

from modelplane.cli.context import CliContext, registry_from
from modelplane.cli.output import console, emit_json, handle_errors, table

if TYPE_CHECKING:
    from sqlalchemy import Engine

    from modelplane.security.auth import CachedAuthenticator, PredictGate
    from modelplane.security.oidc import OidcConfig
    from modelplane.security.tokens import TokenStore

__all__ = ["ServerAuth", "app", "is_loopback", "refuse_insecure", "server_auth"]

app = typer.Typer(help="API tokens: who may call the control API and the gateway.")

JsonFlag = Annotated[bool, typer.Option("--json", help="Print JSON.")]
LOCAL_TEAM = "local"
"""Team of the admin token ``up`` writes for its owner."""


@app.command("create")
@handle_errors
def create(
    ctx: typer.Context,
    subject: Annotated[str, typer.Option(help="Who uses the token (a person or a service).")],
    team: Annotated[str, typer.Option(help="The team it acts for.")],
    scope: Annotated[
        list[str],
        typer.Option(help="read, predict, deploy, features:write, jobs or admin; repeatable."),
    ],
    endpoint: Annotated[
        list[str] | None,
        typer.Option(help="Limit 'predict' to this endpoint; repeatable."),
    ] = None,
    expires_in: Annotated[
        str | None, typer.Option(help="Lifetime, e.g. 30d, 12h (default: no expiry).")
    ] = None,
    reason: Annotated[str, typer.Option(help="Why, for the audit log.")] = "",
    as_json: JsonFlag = False,
) -> None:
    """Issue a token and print it once: only its hash is kept."""
    from modelplane.security.tokens import TokenStore, parse_duration

    cli: CliContext = ctx.obj
    lifetime = None if expires_in is None else parse_duration(expires_in, field="--expires-in")
    with registry_from(cli) as registry:
        issued = TokenStore(registry.engine).create(
            subject=subject,
            team=team,
            scopes=scope,
            endpoints=endpoint or None,
            expires_in_s=lifetime,
            actor=cli.actor,
            reason=reason,
        )
    if as_json:
        emit_json({**issued.record.to_dict(), "token": issued.token})
        return
    record = issued.record
    console.print(f"token {record.id} for {record.subject} (team {record.team})")
    console.print(f"scopes  {', '.join(sorted(record.scopes))}")
    if record.expires_at is not None:
        console.print(f"expires {record.expires_at:%Y-%m-%d %H:%M:%S} UTC")
    console.print("Copy it now; it is not shown again:", style="bold")
    typer.echo(issued.token)


@app.command("list")
@handle_errors
def list_tokens(
    ctx: typer.Context,
    team: Annotated[str | None, typer.Option(help="Only this team's tokens.")] = None,
    revoked: Annotated[bool, typer.Option("--revoked", help="Include revoked tokens.")] = False,
    as_json: JsonFlag = False,
) -> None:
    """Tokens (never their secrets), oldest first."""
    from modelplane.security.tokens import TokenStore

    cli: CliContext = ctx.obj
    with registry_from(cli) as registry:
        records = TokenStore(registry.engine).list(include_revoked=revoked, team=team)
    if as_json:
        emit_json([r.to_dict() for r in records])
        return
    table(
        "tokens",
        ["id", "subject", "team", "scopes", "endpoints", "expires", "revoked"],
        [
            (
                r.id,
                r.subject,
                r.team,
                ",".join(sorted(r.scopes)),
                ",".join(sorted(r.endpoints)) if r.endpoints is not None else "*",
                f"{r.expires_at:%Y-%m-%d %H:%M}" if r.expires_at else "never",
                f"{r.revoked_at:%Y-%m-%d %H:%M}" if r.revoked_at else "",
            )
            for r in records
        ],
    )


@app.command("revoke")
@handle_errors
def revoke(
    ctx: typer.Context,
    token_id: Annotated[str, typer.Argument(help="The token's id (see 'tokens list').")],
    reason: Annotated[str, typer.Option(help="Why, for the audit log.")] = "",
) -> None:
    """Revoke a token for good (servers stop accepting it within seconds)."""
    from modelplane.security.tokens import TokenStore

    cli: CliContext = ctx.obj
    with registry_from(cli) as registry:
        record = TokenStore(registry.engine).revoke(token_id, actor=cli.actor, reason=reason)
    console.print(f"revoked token {record.id} ({record.subject}, team {record.team})")


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


@dataclass(frozen=True, slots=True)
class ServerAuth:
    """What ``up`` checks: tokens on the control API and, when ``predict`` is on, on the
    gateway's predict routes; ``None`` checks nothing."""

    api: CachedAuthenticator | None
    predict: PredictGate | None


def refuse_insecure(host: str, *, auth: bool, insecure: bool) -> None:
    """Refuse to serve a non-loopback address without authentication unless told so."""
    if auth or is_loopback(host) or insecure:
        return
    console.print(
        f"refusing to listen on {host} without authentication: anyone who reaches it could"
        " change what every team serves. Drop --no-auth, or add --insecure to accept that.",
        style="red",
    )
    raise typer.Exit(2)


def server_auth(
    cli: CliContext,
    engine: Engine,
    host: str,
    *,
    auth: bool,
    predict_auth: bool | None,
    oidc: OidcConfig | None = None,
) -> ServerAuth:
    """The authenticators ``up`` serves with, announcing the choice on every start.

    On loopback with the embedded state store, an admin token for the owner is kept in
    ``MODELPLANE_HOME/token`` (mode 0600), so the first run needs no setup. With ``oidc``,
    the issuer's JWTs are accepted beside modelplane's own tokens.
    """
    from modelplane.security.auth import CachedAuthenticator, PredictGate
    from modelplane.security.oidc import OidcVerifier, either
    from modelplane.security.tokens import TokenStore

    if not auth:
        where = "loopback only" if is_loopback(host) else f"{host}: ANYONE WHO REACHES IT"
        console.print(
            f"WARNING: authentication is off ({where} may change and call every endpoint)",
            style="bold red",
        )
        return ServerAuth(None, None)
    store = TokenStore(engine)
    issuer = None if oidc is None else OidcVerifier(oidc)
    authenticator = CachedAuthenticator(either(store.verify, issuer))
    if is_loopback(host) and cli.settings.database_url is None:
        _ensure_local_token(cli, store)
    predict = not is_loopback(host) if predict_auth is None else predict_auth
    console.print(
        "auth     tokens required on the control API"
        + (" and on predictions" if predict else " (predictions on loopback need none)")
        + ("" if oidc is None else f"; JWTs from {oidc.issuer} accepted")
    )
    return ServerAuth(authenticator, PredictGate(authenticator) if predict else None)


def _ensure_local_token(cli: CliContext, store: TokenStore) -> None:
    from modelplane.errors import Unauthorized
    from modelplane.security.tokens import read_token_file, write_token_file

    path = cli.token_path
    kept = read_token_file(path)
    if kept is not None:
        try:
            store.verify(kept)
            return
        except Unauthorized:
            pass  # expired, revoked or from another state store: issue a new one
    issued = store.create(
        subject=cli.actor,
        team=LOCAL_TEAM,
        scopes=["admin"],
        actor=cli.actor,
        reason="modelplane up: the local operator's token",
    )
    write_token_file(path, issued.token)
    console.print(f"token    admin token {issued.record.id} written to {path} (mode 0600)")
