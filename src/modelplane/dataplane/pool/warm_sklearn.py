"""The warm template of scikit-learn workers: imported by the forkserver, never the gateway.

The sklearn runtime loads models with ``skops.io``, whose import lists every scikit-learn
estimator by walking all of scikit-learn's packages. That walk imports
``sklearn.externals.array_api_compat.torch``, hence torch itself when it is installed:
seconds of CPU and some 180 MB that a scikit-learn model never uses. Importing it here once,
with torch hidden for the duration (the walk skips a package that fails to import), lets
every scikit-learn worker fork with its engine ready and share those pages with its
siblings. A worker that needs torch later (the torch runtime) imports it as usual.

Importing scikit-learn starts native threads (OpenBLAS pools of numpy and scipy, pyarrow's
jemalloc purger, pulled in through pandas); each of those libraries re-initialises itself in a
forked child (``pthread_atfork``), and the GNU OpenMP runtime starts none at import, so
forking from this template is safe (``tests/dataplane/test_pool_supervision.py`` runs an
OpenMP prediction in such a child).
"""

from __future__ import annotations

import importlib
import sys
from importlib.machinery import ModuleSpec
from types import ModuleType

__all__: list[str] = []

_HIDDEN = "torch"


class _Hide:
    """A meta path finder that makes one top-level package fail to import."""

    def find_spec(
        self, name: str, path: object = None, target: ModuleType | None = None
    ) -> ModuleSpec | None:
        if name == _HIDDEN or name.startswith(_HIDDEN + "."):
            raise ImportError(f"{name} is not imported by the scikit-learn template")
        return None


def _warm() -> None:
    if _HIDDEN in sys.modules:
        importlib.import_module("skops.io")
        return
    hide = _Hide()
    sys.meta_path.insert(0, hide)
    try:
        importlib.import_module("skops.io")
    except ImportError:
        pass  # skops not installed: the runtime names the extra when a worker loads
    finally:
        sys.meta_path.remove(hide)


_warm()
