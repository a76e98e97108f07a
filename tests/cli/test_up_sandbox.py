"""``modelplane up`` on a machine whose sandbox cannot hold whole says so in ``status``.

Here the server runs as root without ``CAP_SYS_ADMIN`` (``setpriv --bounding-set``), as in
a container that is not privileged: its model workers cannot have their own mount and network
namespaces. They still serve, and ``status`` names what they keep and why, in the JSON and
under the table, rather than only in a worker's log line.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from sklearn.linear_model import LogisticRegression
from tests.conftest import unavailable
from tests.kit import CLI, cli, free_port, home_env, wait_for
from tests.kit.fraud import ENDPOINT_TEMPLATE

from modelplane.registry.build import package

pd = pytest.importorskip("pandas")
pytestmark = pytest.mark.timeout(240)

NO_NAMESPACES = "no CAP_SYS_ADMIN or no namespaces"


def serving_status(env: dict[str, str]) -> dict[str, Any] | None:
    document = json.loads(cli(env, "status", "--json"))
    [endpoint] = document["endpoints"]
    return document if endpoint["health"]["ready"] and document["sandbox_missing"] else None


def test_up_without_cap_sys_admin_says_in_status_what_its_workers_keep(tmp_path: Path) -> None:
    setpriv = shutil.which("setpriv")
    if os.geteuid() != 0 or setpriv is None:
        unavailable("dropping CAP_SYS_ADMIN from a server needs root and setpriv (util-linux)")
    assert setpriv is not None
    env = home_env(tmp_path / "home")
    frame = pd.DataFrame(np.random.default_rng(5).normal(size=(40, 2)), columns=["a", "b"])
    model = LogisticRegression().fit(frame, (frame["a"] > 0).astype(int))
    built = package(model, name="fraud", output_dir=tmp_path / "pkg", sample_input=frame.head())
    cli(env, "push", str(built.path))
    endpoint = tmp_path / "endpoint.yaml"
    endpoint.write_text(ENDPOINT_TEMPLATE.format(name="fraud", team="risk", model="fraud:1"))
    cli(env, "apply", "-f", str(endpoint))

    port, api_port = free_port(), free_port()
    command = [setpriv, "--bounding-set=-sys_admin", CLI, "up", "--port", str(port),
               "--api-port", str(api_port)]  # fmt: skip
    up = subprocess.Popen(command, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                          text=True)  # fmt: skip
    try:
        found = wait_for(lambda: serving_status(env), 120, "fraud ready, with what is missing")
        table = cli(env, "status")
    finally:
        up.terminate()
        output, _ = up.communicate(timeout=60)
    # on a kernel without Landlock or seccomp those are named too
    missing = found["sandbox_missing"]
    assert (missing["mount_ns"], missing["net_ns"]) == (NO_NAMESPACES, NO_NAMESPACES)
    [line] = [line for line in table.splitlines() if line.startswith("SANDBOX")]
    assert line.startswith("SANDBOX model workers here run without: mount_ns (no CAP_SYS_ADMIN")
    assert "docs/security.md#the-sandbox" in line
    assert up.returncode == 0, output
