"""``modelplane keys create`` and ``modelplane sign``: ed25519 signing keys and signatures.

Also the helpers ``push --sign`` and ``verify`` use to sign a version and to report who
signed it, with which key, and whether the policy trusts that key.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

from modelplane.cli.context import CliContext, registry_from
from modelplane.cli.output import console, emit_json, handle_errors
from modelplane.errors import IntegrityError

if TYPE_CHECKING:
    from modelplane.registry.records import ModelVersion
    from modelplane.registry.service import Registry
    from modelplane.security.signing import Signature

__all__ = ["app", "register", "sign_version", "signature_report"]

app = typer.Typer(help="Signing keys (ed25519) for model versions.", no_args_is_help=True)

JsonFlag = Annotated[bool, typer.Option("--json", help="Print JSON.")]
KeyOption = Annotated[
    str, typer.Option("--key", help="Key name under home/keys, or a private key file.")
]


@app.command("create")
@handle_errors
def create(
    ctx: typer.Context,
    name: Annotated[str, typer.Argument(help="The key's name (its files are NAME.key/.pub).")],
    directory: Annotated[
        Path | None, typer.Option("--dir", help="Folder for the key files (default home/keys).")
    ] = None,
    as_json: JsonFlag = False,
) -> None:
    """Create an ed25519 key pair; print the public key to list in a policy's trusted_keys."""
    from modelplane.security.keys import KEYS_DIR, create_signing_key

    cli: CliContext = ctx.obj
    files = create_signing_key(name, directory or cli.settings.home / KEYS_DIR)
    if as_json:
        emit_json(
            {
                "name": name,
                "key_id": files.key_id,
                "public_key": files.public_key,
                "private": str(files.private),
                "public": str(files.public),
            }
        )
        return
    console.print(f"created key [bold]{name}[/] (id {files.key_id})")
    console.print(f"private  {files.private}  (mode 0600: keep it secret)")
    console.print(f"public   {files.public}")
    # Printed alone on its line, so it can be pasted into a policy or piped to a file.
    print(files.public_key)


def sign_version(cli: CliContext, registry: Registry, ref: str, key: str) -> Signature:
    """Sign version ``ref`` with ``key`` and store the signature (audited)."""
    from modelplane.security.keys import load_signing_key
    from modelplane.security.signing import sign

    private = load_signing_key(key, cli.settings.home)
    version = registry.get(ref)
    made = sign(private, version.name, version.digest)
    registry.add_signature(
        version.ref, key_id=made.key_id, public_key=made.public_key, signature=made.signature
    )
    return made


def signature_report(registry: Registry, version: ModelVersion) -> list[dict[str, Any]]:
    """Who signed ``version`` with which key, and the policy's trust in each key; raises
    :class:`IntegrityError` naming a stored signature that does not verify."""
    from modelplane.security.signing import examine, policy_in_force
    from modelplane.store.resources import ResourceStore

    stored = registry.signatures(version.ref)
    checked = examine(policy_in_force(ResourceStore(registry.engine)), version, stored)
    for signature, result in zip(stored, checked, strict=True):
        if not result.valid:
            raise IntegrityError(
                f"{version.ref}: the signature by key {result.key_id} (stored by"
                f" {signature.signed_by}) does not verify: forged, or made for other bytes",
                details=[{"field": f"signatures[{result.key_id}]", "problem": "invalid"}],
            )
    return [
        {
            "key_id": result.key_id,
            "signed_by": signature.signed_by,
            "at": signature.at,
            "trusted_as": result.trusted.name if result.trusted else None,
            "trusted_for": [p.value for p in result.trusted.trusted_for] if result.trusted else [],
        }
        for signature, result in zip(stored, checked, strict=True)
    ]


def describe(signature: dict[str, Any]) -> str:
    """One line for one entry of :func:`signature_report`."""
    trust = (
        f"trusted as '{signature['trusted_as']}' for {', '.join(signature['trusted_for'])}"
        if signature["trusted_as"]
        else "not trusted by the policy"
    )
    return f"signed by {signature['signed_by']} with key {signature['key_id']} ({trust})"


def sign_cmd(
    ctx: typer.Context,
    ref: Annotated[str, typer.Argument(help="name:version or name@alias.")],
    key: KeyOption,
    as_json: JsonFlag = False,
) -> None:
    """Sign a registered version (its name and digest) with an ed25519 key."""
    cli: CliContext = ctx.obj
    with registry_from(cli) as registry:
        version = registry.get(ref)
        made = sign_version(cli, registry, version.ref, key)
    if as_json:
        emit_json({"ref": version.ref, "digest": version.digest, "key_id": made.key_id})
        return
    console.print(f"signed {version.ref} {version.digest} with key {made.key_id}")


def register(root: typer.Typer) -> None:
    """Add ``keys`` and ``sign`` to the root app."""
    root.add_typer(app, name="keys")
    root.command("sign")(handle_errors(sign_cmd))
