"""The PNG of ``modelplane report usage --plot``: per endpoint (and job), what one replica
reserves against its observed peak and its mean use, for CPU and memory."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from modelplane.errors import InvalidSpec

__all__ = ["plot_usage"]

_MAX_ROWS = 20
"""More bars than this cannot be read; the worst come first, so the rest are cut."""


def plot_usage(document: dict[str, Any], path: Path, *, title: str) -> None:
    """Draw ``document`` (a usage report) into ``path``."""
    if path.suffix.lower() != ".png":
        raise InvalidSpec(
            f"plot: '{path}' must end in .png",
            details=[{"field": "plot", "problem": "expected a .png file name"}],
        )
    if not path.parent.is_dir():
        raise InvalidSpec(
            f"plot: the folder {path.parent} does not exist",
            details=[{"field": "plot", "problem": "no such folder"}],
        )
    import matplotlib

    matplotlib.use("Agg")  # no display: a file only
    import matplotlib.pyplot as plt

    groups = document["groups"][:_MAX_ROWS]
    names = [g["name"] if g["kind"] == "replica" else f"job {g['name']}" for g in groups]
    figure, axes = plt.subplots(1, 2, figsize=(12, 1.2 + 0.45 * max(len(groups), 1)))
    for axis, resource, unit in ((axes[0], "cpu", "cores"), (axes[1], "memory", "GiB")):
        rows = range(len(groups))
        reserved = [g["reserved"][resource] for g in groups]
        peak = [g["peak"][resource] for g in groups]
        mean = [g["reserved"][resource] * (g["utilization"][resource] or 0.0) for g in groups]
        axis.barh(rows, reserved, color="#d9d9d9", label="reserved")
        axis.barh(rows, peak, height=0.5, color="#f4a261", label="peak")
        axis.barh(rows, mean, height=0.25, color="#2a9d8f", label="mean use")
        axis.set_yticks(list(rows), names)
        axis.invert_yaxis()
        axis.set_xlabel(f"{resource} per replica ({unit})")
        axis.legend(loc="lower right", fontsize="small")
    axes[1].set_yticks([])
    figure.suptitle(title)
    figure.tight_layout()
    figure.savefig(path, dpi=100)
    plt.close(figure)
