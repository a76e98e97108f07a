"""Names of models, endpoints and other resources."""

from __future__ import annotations

import re
from typing import Annotated

from pydantic import AfterValidator
from pydantic_core import PydanticCustomError

__all__ = ["NAME_PATTERN", "Name", "check_name"]

NAME_PATTERN = re.compile(r"^[a-z0-9]([a-z0-9._-]{0,61}[a-z0-9])?$")


def check_name(value: str) -> str:
    if not NAME_PATTERN.fullmatch(value):
        raise PydanticCustomError(
            "name",
            "'{value}' is not a valid name (lowercase letters, digits, '.', '_', '-';"
            " 1-63 characters; starts and ends with a letter or digit)",
            {"value": value},
        )
    return value


Name = Annotated[str, AfterValidator(check_name)]
