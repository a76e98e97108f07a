"""Packages and the registry: package, push, models, versions, alias, inspect, verify, ..."""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer
import yaml

from modelplane.cli.context import CliContext, registry_from
from modelplane.cli.output import console, emit_json, handle_errors, table
from modelplane.cli.samples import load_sample, parse_feature_ref, parse_pairs
from modelplane.errors import InvalidSpec
from modelplane.types import Digest

if TYPE_CHECKING:
    from modelplane.registry.build import BuiltPackage
    from modelplane.registry.records import ModelVersion
    from modelplane.spec.fields import FieldSpec
    from modelplane.spec.manifest import Manifest

__all__ = ["register", "resolve_manifest"]

JsonFlag = Annotated[bool, typer.Option("--json", help="Print JSON.")]
Reason = Annotated[str, typer.Option(help="Why: recorded in the audit log.")]


def _is_package_path(text: str) -> bool:
    return Path(text).exists() or "/" in text or text.endswith(".tar")


def resolve_manifest(cli: CliContext, ref: str) -> Manifest:
    """The manifest of a registered ref, or of a package folder or ``.tar`` on disk."""
    from modelplane.registry.archive import import_tar
    from modelplane.registry.digest import read_manifest

    if _is_package_path(ref):
        path = Path(ref)
        if path.suffix == ".tar":
            with tempfile.TemporaryDirectory() as tmp:
                return import_tar(path, Path(tmp) / "pkg").manifest
        return read_manifest(path)
    with registry_from(cli) as registry:
        return registry.get(ref).manifest


def _version_row(v: ModelVersion) -> tuple[Any, ...]:
    return (
        v.ref,
        v.digest[:19] + "…",
        v.runtime.value,
        ",".join(v.aliases),
        v.created_at.strftime("%Y-%m-%d %H:%M:%S"),
        v.created_by,
        "archived" if v.archived else "",
    )


_VERSION_COLUMNS = ["version", "digest", "runtime", "aliases", "created", "by", ""]


def package_cmd(
    model_file: Annotated[
        Path, typer.Argument(help="Model file: .onnx .skops .joblib .pkl .json .ubj .txt .pt .py")
    ],
    name: Annotated[str, typer.Option("--name", "-n", help="Model name.")],
    output: Annotated[Path | None, typer.Option("--output", "-o", help="Package folder.")] = None,
    runtime: Annotated[str | None, typer.Option(help="Runtime (default: from the file).")] = None,
    sample: Annotated[
        Path | None,
        typer.Option(help="Sample input: .csv .parquet .npy .json (infers the signature)."),
    ] = None,
    signature: Annotated[Path | None, typer.Option(help="Signature YAML.")] = None,
    entrypoint: Annotated[str | None, typer.Option(help="python runtime: Class name.")] = None,
    trust_pickle: Annotated[
        bool, typer.Option("--trust-pickle", help="Allow pickle/joblib (they run code on load).")
    ] = False,
    training_data: Annotated[
        list[str] | None,
        typer.Option("--training-data", help="Dataset URI or local path (repeat)."),
    ] = None,
    code: Annotated[str | None, typer.Option(help="Code folder (git) or revision.")] = None,
    param: Annotated[list[str] | None, typer.Option(help="Training parameter k=v.")] = None,
    metric: Annotated[list[str] | None, typer.Option(help="Metric k=v (number).")] = None,
    feature: Annotated[
        list[str] | None, typer.Option(help="Feature set read: set:version[:f1,f2].")
    ] = None,
    label: Annotated[list[str] | None, typer.Option(help="Label k=v.")] = None,
    description: Annotated[str, typer.Option(help="What the model does.")] = "",
    tar: Annotated[Path | None, typer.Option(help="Also write a reproducible .tar.")] = None,
    as_json: JsonFlag = False,
) -> None:
    """Build a content-addressed package from a model file."""
    from modelplane.registry.archive import export_tar
    from modelplane.registry.build import package_file
    from modelplane.registry.provenance import LineageSource

    metrics = {k: _number(k, v) for k, v in parse_pairs(metric or [], "metric").items()}
    lineage = LineageSource(
        training_data=list(training_data or []),
        code=code,
        parameters=parse_pairs(param or [], "param") or None,
        metrics=metrics,
        features=[parse_feature_ref(f) for f in feature or []],
    )
    built = package_file(
        model_file,
        name=name,
        output_dir=output or Path(f"{name}.mpkg"),
        runtime=runtime,
        sample_input=load_sample(sample) if sample else None,
        signature=signature,
        entrypoint=entrypoint,
        trust_pickle=trust_pickle,
        lineage=lineage,
        description=description,
        labels=parse_pairs(label or [], "label"),
    )
    if tar:
        export_tar(built.path, tar)
    _print_built(built, tar, as_json)


def _number(key: str, value: str) -> float:
    try:
        return float(value)
    except ValueError:
        raise InvalidSpec(f"metric {key}: '{value}' is not a number") from None


def _print_built(built: BuiltPackage, tar: Path | None, as_json: bool) -> None:
    if as_json:
        emit_json(
            {"path": built.path, "digest": built.digest, "tar": tar, "manifest": built.manifest}
        )
        return
    m = built.manifest
    console.print(
        f"packaged [bold]{m.name}[/] ({m.runtime.value}, {m.format.value}) -> {built.path}"
    )
    console.print(f"digest  {built.digest}")
    if tar:
        console.print(f"tar     {tar}")


def push(
    ctx: typer.Context,
    package: Annotated[Path, typer.Argument(help="Package folder or .tar.")],
    alias: Annotated[
        list[str] | None, typer.Option(help="Point this alias at it (repeat).")
    ] = None,
    reason: Reason = "",
    team: Annotated[
        str | None,
        typer.Option(help="Team pushing: a new model becomes theirs; others' are refused."),
    ] = None,
    sign: Annotated[
        str | None,
        typer.Option("--sign", help="Sign it with this key (a name under home/keys, or a file)."),
    ] = None,
    as_json: JsonFlag = False,
) -> None:
    """Store a package and register it as the next version (idempotent per digest)."""
    from modelplane.registry.archive import import_tar

    cli: CliContext = ctx.obj
    if cli.remote is not None:
        _push_remote(
            cli, package, reason=reason, team=team, as_json=as_json, alias=alias, sign=sign
        )
        return
    with tempfile.TemporaryDirectory() as tmp, registry_from(cli) as registry:
        folder = package
        if package.suffix == ".tar":
            folder = Path(tmp) / "pkg"
            import_tar(package, folder)
        version = registry.push(folder, reason=reason, team=team)
        for name in alias or []:
            registry.set_alias(version.name, name, version.version, reason=reason)
        if alias:
            version = registry.get(version.ref)
        if sign:
            from modelplane.cli.keys import sign_version

            signed = sign_version(cli, registry, version.ref, sign).key_id
    if as_json:
        emit_json({**_version_json(version), **({"signed_with": signed} if sign else {})})
        return
    if sign:
        console.print(f"signed {version.ref} with key {signed}")
    console.print(
        f"pushed [bold]{version.ref}[/]  {version.digest}"
        + (f"  aliases: {', '.join(version.aliases)}" if version.aliases else "")
    )


def _push_remote(
    cli: CliContext,
    package: Path,
    *,
    reason: str,
    team: str | None,
    as_json: bool,
    alias: list[str] | None,
    sign: str | None,
) -> None:
    """``push`` through the control API: the package travels as its reproducible tar."""
    from modelplane.cli.remote import Remote, RemoteUnsupported
    from modelplane.registry.archive import export_tar

    assert cli.remote is not None
    if alias or sign:
        raise RemoteUnsupported("--alias and --sign do not go through the control API yet")
    with tempfile.TemporaryDirectory() as tmp, Remote(cli.remote) as remote:
        tar = package if package.suffix == ".tar" else export_tar(package, Path(tmp) / "p.tar")
        found = remote.push(tar, reason=reason, team=team)
    if as_json:
        keys = ("name", "version", "ref", "digest", "runtime", "aliases", "archived")
        emit_json({**{k: found[k] for k in keys}, **{k: found[k] for k in found if k not in keys}})
        return
    aliases = found["aliases"]
    console.print(
        f"pushed [bold]{found['ref']}[/]  {found['digest']}"
        + (f"  aliases: {', '.join(aliases)}" if aliases else "")
    )


def _version_json(v: ModelVersion) -> dict[str, Any]:
    return {
        "name": v.name,
        "version": v.version,
        "ref": v.ref,
        "digest": v.digest,
        "runtime": v.runtime,
        "aliases": v.aliases,
        "archived": v.archived,
        "created_at": v.created_at,
        "created_by": v.created_by,
    }


def models_cmd(
    ctx: typer.Context,
    search: Annotated[str | None, typer.Option(help="Only names containing this.")] = None,
    include_archived: Annotated[bool, typer.Option("--all", help="Include archived.")] = False,
    as_json: JsonFlag = False,
) -> None:
    """List registered models."""
    cli: CliContext = ctx.obj
    if cli.remote is not None:
        from modelplane.cli.remote import Remote

        with Remote(cli.remote) as remote:
            found = remote.models(search=search, include_archived=include_archived)
    else:
        with registry_from(cli) as registry:
            found = registry.list_models(search=search, include_archived=include_archived)
    if as_json:
        emit_json(found)
        return
    table(
        "models",
        ["name", "latest", "versions", "aliases", ""],
        [
            (
                m.name,
                m.latest_version,
                m.version_count,
                " ".join(f"{a}->{v}" for a, v in sorted(m.aliases.items())),
                "archived" if m.archived else "",
            )
            for m in found
        ],
    )


def versions(
    ctx: typer.Context,
    name: Annotated[str, typer.Argument(help="Model name.")],
    include_archived: Annotated[bool, typer.Option("--all", help="Include archived.")] = False,
    as_json: JsonFlag = False,
) -> None:
    """List the versions of a model."""
    cli: CliContext = ctx.obj
    if cli.remote is not None:
        from modelplane.cli.remote import Remote

        with Remote(cli.remote) as remote:
            found = remote.versions(name, include_archived=include_archived)
    else:
        with registry_from(cli) as registry:
            found = registry.list_versions(name, include_archived=include_archived)
    if as_json:
        emit_json([_version_json(v) for v in found])
        return
    table(f"{name} versions", _VERSION_COLUMNS, [_version_row(v) for v in found])


alias_app = typer.Typer(help="Aliases: names that move between versions.", no_args_is_help=True)


@alias_app.command("set")
@handle_errors
def alias_set(
    ctx: typer.Context,
    target: Annotated[str, typer.Argument(help="name@alias")],
    version: Annotated[int, typer.Argument(help="Version to point at.")],
    expect: Annotated[
        int | None, typer.Option(help="Fail unless the alias points here now (0: must not exist).")
    ] = None,
    reason: Reason = "",
) -> None:
    """Point an alias at a version (audited; --expect guards against concurrent moves)."""
    cli: CliContext = ctx.obj
    name, alias = _split_alias(target)
    with registry_from(cli) as registry:
        registry.set_alias(name, alias, version, expected_current=expect, reason=reason)
    console.print(f"{name}@{alias} -> {name}:{version}")


@alias_app.command("rm")
@handle_errors
def alias_rm(
    ctx: typer.Context,
    target: Annotated[str, typer.Argument(help="name@alias")],
    reason: Reason = "",
) -> None:
    """Remove an alias (audited)."""
    cli: CliContext = ctx.obj
    name, alias = _split_alias(target)
    with registry_from(cli) as registry:
        registry.remove_alias(name, alias, reason=reason)
    console.print(f"removed {name}@{alias}")


@alias_app.command("history")
@handle_errors
def alias_history(
    ctx: typer.Context,
    target: Annotated[str, typer.Argument(help="name or name@alias")],
    as_json: JsonFlag = False,
) -> None:
    """Who moved which alias, when, from which version to which."""
    cli: CliContext = ctx.obj
    name, _, alias = target.partition("@")
    with registry_from(cli) as registry:
        changes = registry.alias_history(name, alias or None)
    if as_json:
        emit_json(changes)
        return
    table(
        f"{target} history",
        ["at", "alias", "from", "to", "actor", "reason"],
        [
            (
                c.at.strftime("%Y-%m-%d %H:%M:%S"),
                c.alias,
                c.from_version,
                c.to_version,
                c.actor,
                c.reason,
            )
            for c in changes
        ],
    )


def _split_alias(target: str) -> tuple[str, str]:
    name, sep, alias = target.partition("@")
    if not sep or not name or not alias:
        raise InvalidSpec(
            f"'{target}': expected name@alias",
            details=[{"field": "target", "problem": "expected name@alias"}],
        )
    return name, alias


def inspect(
    ctx: typer.Context,
    ref: Annotated[str, typer.Argument(help="name:version, name@alias, name, or a package.")],
    as_json: JsonFlag = False,
) -> None:
    """Show a package's manifest: signature, environment, lineage, files, digest."""
    cli: CliContext = ctx.obj
    if _is_package_path(ref):
        manifest, version = resolve_manifest(cli, ref), None
    else:
        with registry_from(cli) as registry:
            version = registry.get(ref)
        manifest = version.manifest
    if as_json:
        emit_json({"version": _version_json(version) if version else None, "manifest": manifest})
        return
    if version is not None:
        console.print(
            f"[bold]{version.ref}[/]  {version.digest}  aliases: "
            f"{', '.join(version.aliases) or '-'}  by {version.created_by} "
            f"at {version.created_at:%Y-%m-%d %H:%M:%S}"
        )
    _print_manifest(manifest)


def _print_manifest(manifest: Manifest) -> None:
    summary = manifest.model_dump(
        mode="json", exclude_defaults=True, exclude={"files", "signature", "api_version", "kind"}
    )
    console.print(yaml.safe_dump(summary, sort_keys=False).rstrip(), markup=False)
    for side in ("inputs", "outputs"):
        fields = getattr(manifest.signature, side)
        table(
            side,
            ["name", "dtype", "shape", "nullable", "constraints"],
            [(f.name, f.dtype.value, list(f.shape), f.nullable, _constraints(f)) for f in fields],
        )
    table(
        "files",
        ["path", "size", "sha256"],
        [(f.path, f.size, f.sha256[:16] + "…") for f in manifest.files],
    )


def _constraints(field: FieldSpec) -> str:
    parts = []
    if field.enum is not None:
        parts.append("enum " + ",".join(map(str, field.enum)))
    if field.range is not None:
        parts.append(f"range [{field.range.min}, {field.range.max}]")
    if not field.required:
        parts.append(f"optional (default {field.default})")
    return "; ".join(parts)


def verify(
    ctx: typer.Context,
    ref: Annotated[
        str,
        typer.Argument(
            help="A package folder or .tar, or a registered ref (checks the stored artifact)."
        ),
    ],
    digest: Annotated[str | None, typer.Option(help="Expected digest (sha256:...).")] = None,
    as_json: JsonFlag = False,
) -> None:
    """Check every byte; names each changed, added or removed file. Exits non-zero if bad."""
    from modelplane.registry.archive import import_tar
    from modelplane.registry.digest import verify_package

    cli: CliContext = ctx.obj
    expected = Digest(digest) if digest else None
    if _is_package_path(ref):
        path = Path(ref)
        if path.suffix == ".tar":
            with tempfile.TemporaryDirectory() as tmp:
                checked = import_tar(path, Path(tmp) / "pkg")
        else:
            checked = verify_package(path, expected)
        if expected and checked.digest != expected:
            raise InvalidSpec(f"{ref}: digest {checked.digest} != expected {expected}")
        _print_verified(checked.manifest.name, checked.digest, as_json)
        return
    from modelplane.cli.keys import describe, signature_report

    with tempfile.TemporaryDirectory() as tmp, registry_from(cli) as registry:
        version = registry.get(ref)
        registry.fetch(ref, Path(tmp) / "pkg")
        signatures = signature_report(registry, version)
    _print_verified(version.ref, version.digest, as_json, signatures)
    if not as_json:
        for signature in signatures:
            console.print(f"  {describe(signature)}")
        if not signatures:
            console.print("  unsigned")


def _print_verified(
    subject: str, digest: str, as_json: bool, signatures: list[dict[str, Any]] | None = None
) -> None:
    if as_json:
        extra = {} if signatures is None else {"signatures": signatures}
        emit_json({"ok": True, "subject": subject, "digest": digest, **extra})
    else:
        console.print(f"[green]ok[/] {subject} {digest}")


def export(
    ctx: typer.Context,
    ref: Annotated[str, typer.Argument(help="name:version or name@alias.")],
    tar: Annotated[Path, typer.Argument(help="Where to write the .tar.")],
) -> None:
    """Write a registered version as a reproducible .tar."""
    from modelplane.registry.archive import export_tar

    cli: CliContext = ctx.obj
    with tempfile.TemporaryDirectory() as tmp, registry_from(cli) as registry:
        folder = registry.fetch(ref, Path(tmp) / "pkg")
        export_tar(folder, tar)
    console.print(f"wrote {tar}")


def archive(
    ctx: typer.Context,
    ref: Annotated[str, typer.Argument(help="name or name:version")],
    reason: Reason = "",
) -> None:
    """Archive a model or a version: hidden from lists, still resolvable by number."""
    cli: CliContext = ctx.obj
    with registry_from(cli) as registry:
        registry.archive(ref, reason=reason)
    console.print(f"archived {ref}")


def lineage(
    ctx: typer.Context,
    feature_set: Annotated[str | None, typer.Option(help="set or set:version")] = None,
    dataset: Annotated[str | None, typer.Option(help="Dataset URI or sha256.")] = None,
    as_json: JsonFlag = False,
) -> None:
    """Which versions read a feature set, or were trained on a dataset?"""
    cli: CliContext = ctx.obj
    if (feature_set is None) == (dataset is None):
        raise InvalidSpec("give exactly one of --feature-set and --dataset")
    with registry_from(cli) as registry:
        if feature_set is not None:
            set_name, _, set_version = feature_set.partition(":")
            found = registry.versions_reading_feature_set(
                set_name, int(set_version) if set_version.isdigit() else None
            )
        else:
            found = registry.versions_trained_on(str(dataset))
    if as_json:
        emit_json([_version_json(v) for v in found])
        return
    table("lineage", _VERSION_COLUMNS, [_version_row(v) for v in found])


def import_mlflow_cmd(
    ctx: typer.Context,
    directory: Annotated[Path, typer.Argument(help="MLflow model folder (holds MLmodel).")],
    name: Annotated[str, typer.Option("--name", "-n", help="Model name.")],
    output: Annotated[Path | None, typer.Option("--output", "-o", help="Package folder.")] = None,
    trust_pickle: Annotated[
        bool,
        typer.Option("--trust-pickle", help="Allow loading a pickled model (re-saved as skops)."),
    ] = False,
    push_it: Annotated[bool, typer.Option("--push", help="Also push it.")] = False,
    as_json: JsonFlag = False,
) -> None:
    """Turn an MLflow model folder (sklearn flavor) into a package."""
    from modelplane.registry.mlflow_import import import_mlflow

    built = import_mlflow(
        directory, name=name, output_dir=output or Path(f"{name}.mpkg"), trust_pickle=trust_pickle
    )
    _print_built(built, None, as_json)
    if push_it:
        push(
            ctx, built.path, alias=None, reason=f"imported from MLflow {directory}", as_json=as_json
        )


def register(app: typer.Typer) -> None:
    """Add these commands to the root app, each wrapped to turn errors into one line."""
    commands: list[tuple[str, Any]] = [
        ("package", package_cmd),
        ("push", push),
        ("models", models_cmd),
        ("versions", versions),
        ("inspect", inspect),
        ("verify", verify),
        ("export", export),
        ("archive", archive),
        ("lineage", lineage),
        ("import-mlflow", import_mlflow_cmd),
    ]
    for name, func in commands:
        app.command(name)(handle_errors(func))
    app.add_typer(alias_app, name="alias")
