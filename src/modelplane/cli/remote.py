"""``modelplane login URL``: the CLI as a client of a control API instead of the database.

``login`` checks the URL and the token against the server, then keeps both in
``MODELPLANE_HOME/remote.json`` (mode 0600). From then on the commands that the API serves
(``push``, ``models``, ``versions``, ``apply``, ``get``, ``delete``, ``status``, ``audit
log``, ``rollout`` and its ``pause``, ``resume``, ``promote``, ``rollback``) go through it,
with the same output and exit codes; the others refuse with a message rather than read a
local database that is not the server's. ``logout`` forgets the server; the embedded
default needs neither.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

from modelplane.cli.output import console, handle_errors
from modelplane.errors import ModelplaneError

if TYPE_CHECKING:
    from types import TracebackType

    from modelplane.cli.context import CliContext
    from modelplane.registry.records import ModelInfo, ModelVersion
    from modelplane.store.audit import AuditRecord
    from modelplane.store.resources import Resource

__all__ = [
    "Remote",
    "RemoteConfig",
    "RemoteUnsupported",
    "login",
    "logout",
    "read_remote",
    "register",
]

REMOTE_FILE = "remote.json"


class RemoteUnsupported(ModelplaneError):
    """The command has no counterpart in the control API yet."""

    code = "remote_unsupported"


@dataclass(frozen=True, slots=True)
class RemoteConfig:
    url: str
    token: str | None


def read_remote(home: Path) -> RemoteConfig | None:
    """The server ``login`` stored under ``home``, or ``None``."""
    try:
        data = json.loads((home / REMOTE_FILE).read_text(encoding="utf-8"))
    except FileNotFoundError:
        return None
    except (OSError, ValueError) as exc:
        raise ModelplaneError(f"{home / REMOTE_FILE} is unreadable ({exc}); run login") from None
    return RemoteConfig(str(data["url"]), data.get("token"))


def _error_classes() -> dict[str, type[ModelplaneError]]:
    from modelplane import errors

    found: dict[str, type[ModelplaneError]] = {}
    for name in errors.__all__:
        value = getattr(errors, name)
        if isinstance(value, type) and issubclass(value, ModelplaneError):
            found[value.code] = value
    found.pop("missing_extra", None)  # built from a module and an extra, not a message
    return found


class Remote:
    """The control API, as the commands need it; its errors become the same errors."""

    def __init__(self, config: RemoteConfig, *, timeout_s: float = 30.0) -> None:
        import httpx

        headers = {"authorization": f"Bearer {config.token}"} if config.token else {}
        self.url = config.url
        self.http = httpx.Client(base_url=config.url, headers=headers, timeout=timeout_s)

    def close(self) -> None:
        self.http.close()

    def __enter__(self) -> Remote:
        return self

    def __exit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()

    def _call(self, method: str, path: str, **kwargs: Any) -> Any:
        import httpx

        try:
            response = self.http.request(method, path, **kwargs)
        except httpx.TransportError as exc:
            raise ModelplaneError(f"cannot reach {self.url}: {exc}") from None
        if response.status_code < 400:
            return response.json()
        try:
            error = response.json()["error"]
            code, message = str(error["code"]), str(error["message"])
            details = error.get("details") or []
        except (ValueError, KeyError, TypeError):
            code, message, details = "internal", f"{response.status_code}: {response.text}", []
        cls = _error_classes().get(code)
        if cls is None:
            raise ModelplaneError(message, details=details)
        raise cls(message, details=details)

    def request(self, method: str, path: str, **kwargs: Any) -> Any:
        """Any API call: its JSON answer, or the API's error raised as the same error."""
        return self._call(method, path, **kwargs)

    def apply(
        self, documents: list[dict[str, Any]], *, reason: str, allow_breaking: bool
    ) -> list[dict[str, Any]]:
        body = {"documents": documents, "reason": reason, "allow_breaking": allow_breaking}
        results: list[dict[str, Any]] = self._call("POST", "/v1/apply", json=body)
        return results

    def resources(self, kind: str, name: str | None) -> list[Resource]:
        from modelplane.store.resources import Resource

        path = f"/v1/resources/{kind}" + (f"/{name}" if name else "")
        found = self._call("GET", path)
        return [
            Resource(
                kind=r["kind"],
                name=r["name"],
                generation=r["generation"],
                spec=r["spec"],
                status=r["status"],
                updated_at=datetime.fromisoformat(r["updated_at"]),
            )
            for r in ([found] if name else found)
        ]

    def delete(self, kind: str, name: str, *, reason: str) -> None:
        self._call("DELETE", f"/v1/resources/{kind}/{name}", params={"reason": reason})

    def audit_events(
        self, *, subject: str | None, action: str | None, actor: str | None, limit: int
    ) -> list[AuditRecord]:
        from modelplane.store.audit import AuditRecord

        params = {"subject": subject, "action": action, "actor": actor, "limit": limit}
        found = self._call("GET", "/v1/audit", params={k: v for k, v in params.items() if v})
        return [
            AuditRecord(
                seq=e["seq"],
                at=datetime.fromisoformat(e["at"]),
                actor=e["actor"],
                action=e["action"],
                subject=e["subject"],
                reason=e["reason"],
                before=e["before"],
                after=e["after"],
                prev_hash=e.get("prev_hash", ""),
                hash=e.get("hash", ""),
                mac=e.get("mac"),
            )
            for e in found
        ]

    def start_rollout(self, document: dict[str, Any], *, reason: str) -> dict[str, Any]:
        body = {"document": document, "reason": reason}
        started: dict[str, Any] = self._call("POST", "/v1/rollouts", json=body)
        return started

    def rollout_command(self, endpoint: str, command: str, *, reason: str) -> dict[str, Any]:
        path = f"/v1/rollouts/{endpoint}:{command}"
        done: dict[str, Any] = self._call("POST", path, json={"reason": reason})
        return done

    def push(self, tar: Path, *, reason: str, team: str | None) -> dict[str, Any]:
        params = {"reason": reason, **({"team": team} if team else {})}
        with tar.open("rb") as body:  # streamed: a package may be large
            found: dict[str, Any] = self._call(
                "POST", "/v1/models:push", params=params, content=body,
                headers={"content-type": "application/x-tar"},
            )  # fmt: skip
        return found

    def models(self, *, search: str | None, include_archived: bool) -> list[ModelInfo]:
        from modelplane.registry.records import ModelInfo

        params = {"include_archived": include_archived, **({"search": search} if search else {})}
        return [
            ModelInfo(
                name=m["name"],
                created_at=datetime.fromisoformat(m["created_at"]),
                archived=m["archived"],
                latest_version=m["latest_version"],
                version_count=m["version_count"],
                aliases=m["aliases"],
            )
            for m in self._call("GET", "/v1/models", params=params)
        ]

    def versions(self, name: str, *, include_archived: bool) -> list[ModelVersion]:
        from modelplane.registry.records import ModelVersion
        from modelplane.spec.manifest import Runtime
        from modelplane.types import Digest

        path = f"/v1/models/{name}/versions"
        found = self._call("GET", path, params={"include_archived": include_archived})
        return [
            ModelVersion(
                name=v["name"],
                version=v["version"],
                digest=Digest(v["digest"]),
                runtime=Runtime(v["runtime"]),
                created_at=datetime.fromisoformat(v["created_at"]),
                created_by=v["created_by"],
                aliases=tuple(v["aliases"]),
                archived=v["archived"],
                manifest_data={},  # listings never show it; `inspect` reads it on the server
            )
            for v in found
        ]

    def status(self) -> dict[str, Any]:
        """``status``'s document: ``endpoints`` and ``sandbox_missing``."""
        document: dict[str, Any] = self._call("GET", "/v1/status")
        return document

    def get(self, path: str, params: dict[str, Any] | None = None) -> Any:
        """A read-only route's JSON (reports and the like that the CLI only prints)."""
        return self._call("GET", path, params=params or {})

    def whoami(self) -> dict[str, Any]:
        found: dict[str, Any] = self._call("GET", "/v1/whoami")
        return found


@handle_errors
def login(
    ctx: typer.Context,
    url: Annotated[str, typer.Argument(help="The control API, e.g. http://host:8080")],
    token: Annotated[
        str | None,
        typer.Option(
            envvar="MODELPLANE_TOKEN",
            help="API token (default: $MODELPLANE_TOKEN, the token 'up' keeps here, or ask).",
        ),
    ] = None,
) -> None:
    """Use the control API at URL for every command, as the token's subject."""
    from modelplane.security.tokens import write_token_file

    cli: CliContext = ctx.obj
    url = url.rstrip("/")
    if not url.startswith(("http://", "https://")):
        raise ModelplaneError(f"'{url}' is not an http(s) URL")
    if token is None:
        # On the server's own machine, the admin token that ``up`` keeps will do.
        token = cli.token or typer.prompt("token", hide_input=True)
    with Remote(RemoteConfig(url, token)) as remote:
        who = remote.whoami()
    # The file holds a secret: written 0600 like the local admin token.
    write_token_file(cli.settings.home / REMOTE_FILE, json.dumps({"url": url, "token": token}))
    scopes = ", ".join(who.get("scopes", []))
    console.print(f"logged in to {url} as {who['subject']} (team {who['team']}; {scopes})")


@handle_errors
def logout(ctx: typer.Context) -> None:
    """Forget the server: commands use the local state store again."""
    cli: CliContext = ctx.obj
    path = cli.settings.home / REMOTE_FILE
    if path.exists():
        path.unlink()
        console.print("logged out; commands use the local state store")
    else:
        console.print("not logged in")


def register(app: typer.Typer) -> None:
    app.command("login")(login)
    app.command("logout")(logout)
