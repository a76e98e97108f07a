"""Model references: ``name``, ``name:version`` and ``name@alias``, parsed with clear errors."""

from __future__ import annotations

from dataclasses import dataclass

from modelplane.errors import InvalidSpec
from modelplane.spec.names import NAME_PATTERN

__all__ = ["Ref", "check_alias", "check_model_name", "parse_ref"]


@dataclass(frozen=True, slots=True)
class Ref:
    """A parsed reference; at most one of ``version`` and ``alias`` is set."""

    name: str
    version: int | None = None
    alias: str | None = None

    def __str__(self) -> str:
        if self.version is not None:
            return f"{self.name}:{self.version}"
        if self.alias is not None:
            return f"{self.name}@{self.alias}"
        return self.name


def _bad(text: str, problem: str) -> InvalidSpec:
    return InvalidSpec(f"{text!r}: {problem}", details=[{"field": "ref", "problem": problem}])


def check_model_name(name: str, *, text: str | None = None) -> str:
    if not NAME_PATTERN.fullmatch(name):
        raise _bad(
            text if text is not None else name,
            f"{name!r} is not a valid model name (lowercase letters, digits, '.', '_', '-';"
            " 1-63 characters; starts and ends with a letter or digit)",
        )
    return name


def check_alias(alias: str, *, text: str | None = None) -> str:
    """Aliases follow the name rules and start with a letter, so ``fraud@7`` is no alias."""
    if not NAME_PATTERN.fullmatch(alias) or not alias[0].isalpha():
        raise _bad(
            text if text is not None else alias,
            f"{alias!r} is not a valid alias (a name that starts with a letter)",
        )
    return alias


def parse_ref(text: str) -> Ref:
    """``fraud`` (latest), ``fraud:7`` or ``fraud@champion``."""
    if "@" in text:
        name, _, alias = text.partition("@")
        return Ref(check_model_name(name, text=text), alias=check_alias(alias, text=text))
    if ":" in text:
        name, _, number = text.partition(":")
        check_model_name(name, text=text)
        if not (number.isascii() and number.isdigit()):
            raise _bad(text, "version must be a number")
        version = int(number)
        if version < 1:
            raise _bad(text, "version must be 1 or more")
        return Ref(name, version=version)
    return Ref(check_model_name(text))
