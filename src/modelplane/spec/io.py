"""YAML in and out for every spec, with validation errors that name the field path."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any, TypeVar

import yaml
from pydantic import BaseModel, ValidationError

from modelplane.errors import InvalidSpec

__all__ = ["dump_yaml", "field_path", "invalid_spec_from", "load_yaml", "parse"]

M = TypeVar("M", bound=BaseModel)


def field_path(loc: tuple[int | str, ...]) -> str:
    """``("inputs", 2, "dtype")`` becomes ``inputs[2].dtype``."""
    out = ""
    for part in loc:
        if isinstance(part, int):
            out += f"[{part}]"
        else:
            out += f".{part}" if out else str(part)
    return out or "(root)"


def _without_tags(loc: tuple[int | str, ...], data: Any) -> tuple[int | str, ...]:
    """``loc`` as the document spells it: pydantic puts a tagged union's tag in the path
    (``work.batch-score.shard.rows``), where the YAML has none (``work.shard.rows``)."""
    kept: list[int | str] = []
    node = data
    last = len(loc) - 1
    for at, part in enumerate(loc):
        if isinstance(node, Mapping) and isinstance(part, str) and part not in node:
            # the tag (the value of the mapping's discriminator field) is never last: an
            # error is inside the variant; a last part absent is a missing field, kept
            if at < last and any(v == part for v in node.values() if isinstance(v, str)):
                continue
            node = None
        elif isinstance(node, Mapping):
            node = node.get(part)
        elif isinstance(node, (list, tuple)) and isinstance(part, int) and part < len(node):
            node = node[part]
        else:
            node = None
        kept.append(part)
    return tuple(kept)


def invalid_spec_from(exc: ValidationError, what: str, data: Any = None) -> InvalidSpec:
    details = [
        {"field": field_path(_without_tags(tuple(err["loc"]), data)), "problem": err["msg"]}
        for err in exc.errors()
    ]
    head = details[0]
    more = f" (and {len(details) - 1} more)" if len(details) > 1 else ""
    return InvalidSpec(f"invalid {what}: {head['field']}: {head['problem']}{more}", details=details)


def parse(model: type[M], data: Any, *, what: str | None = None) -> M:
    """Validate plain data into ``model``, raising :class:`InvalidSpec` naming each field."""
    label = what or model.__name__
    if not isinstance(data, Mapping):
        raise InvalidSpec(
            f"invalid {label}: expected a mapping, got {type(data).__name__}",
            details=[{"field": "(root)", "problem": "expected a mapping"}],
        )
    try:
        return model.model_validate(dict(data))
    except ValidationError as exc:
        raise invalid_spec_from(exc, label, data) from None


def load_yaml(model: type[M], source: str | Path) -> M:
    """Read ``model`` from a YAML file path or YAML text."""
    if isinstance(source, Path):
        what = str(source)
        try:
            text = source.read_text(encoding="utf-8")
        except FileNotFoundError:
            raise InvalidSpec(f"{source}: no such file") from None
        except UnicodeDecodeError as exc:
            raise InvalidSpec(f"{source}: not UTF-8 text ({exc.reason})") from None
    else:
        what, text = model.__name__, source
    try:
        data = yaml.load(text, Loader=_Loader)
    except yaml.YAMLError as exc:
        raise InvalidSpec(f"{what}: not valid YAML: {exc}") from None
    return parse(model, data, what=what)


def dump_yaml(spec: BaseModel) -> str:
    """Deterministic YAML: fields in declaration order, mappings sorted, no aliases.

    Package digests hash these bytes, so they come from PyYAML's own emitter on every
    machine: libyaml's (faster) escapes some characters differently, e.g. ``\U00010000``.
    """
    data = spec.model_dump(mode="json")
    return yaml.dump(
        _sorted_mappings(data),
        Dumper=_CanonicalDumper,
        sort_keys=False,
        # Escaped non-ASCII round-trips exactly; PyYAML's unicode mode turns NEL into a space.
        allow_unicode=False,
        default_flow_style=False,
        width=100,
    )


def _sorted_mappings(value: Any, top: bool = True) -> Any:
    if isinstance(value, dict):
        items = value.items() if top else sorted(value.items())
        return {k: _sorted_mappings(v, top=False) for k, v in items}
    if isinstance(value, list):
        return [_sorted_mappings(v, top=False) for v in value]
    return value


class _CanonicalDumper(yaml.SafeDumper):
    def ignore_aliases(self, data: Any) -> bool:
        return True


# Parsing with libyaml is safe to speed up: both loaders give the same data.
_Loader: Any = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
