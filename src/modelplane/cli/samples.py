"""Read the small inputs the CLI takes: sample files, ``k=v`` pairs, feature references."""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING, Any

from modelplane.errors import InvalidSpec, MissingExtra

if TYPE_CHECKING:
    from modelplane.spec.manifest import FeatureRef

__all__ = ["load_sample", "parse_feature_ref", "parse_pairs"]


def load_sample(path: Path) -> Any:
    """A sample input from ``.csv``/``.parquet`` (a DataFrame), ``.npy`` or ``.json``."""
    if not path.is_file():
        raise InvalidSpec(f"{path}: no such sample file")
    suffix = path.suffix.lower()
    if suffix in (".csv", ".parquet"):
        try:
            import pandas as pd
        except ImportError:
            raise MissingExtra("pandas", "dev") from None
        return pd.read_csv(path) if suffix == ".csv" else pd.read_parquet(path)
    if suffix == ".npy":
        import numpy as np

        return np.load(path, allow_pickle=False)
    if suffix == ".json":
        try:
            return json.loads(path.read_text(encoding="utf-8"))
        except json.JSONDecodeError as exc:
            raise InvalidSpec(f"{path}: not valid JSON: {exc}") from None
    raise InvalidSpec(
        f"{path}: unknown sample format '{suffix}' (use .csv, .parquet, .npy or .json)"
    )


def parse_pairs(items: list[str], what: str) -> dict[str, str]:
    """``["a=1", "b=x"]`` as a dict; a malformed item names itself."""
    pairs: dict[str, str] = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise InvalidSpec(f"--{what} '{item}': expected key=value")
        pairs[key] = value
    return pairs


def parse_feature_ref(text: str) -> FeatureRef:
    """``set:version`` or ``set:version:f1,f2``."""
    from modelplane.spec.manifest import FeatureRef

    parts = text.split(":")
    if len(parts) not in (2, 3) or not parts[1].isdigit():
        raise InvalidSpec(f"--feature '{text}': expected set:version[:f1,f2]")
    features = tuple(f for f in parts[2].split(",") if f) if len(parts) == 3 else ()
    return FeatureRef(feature_set=parts[0], version=int(parts[1]), features=features)
