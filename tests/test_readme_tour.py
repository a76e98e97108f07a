"""The README's tour, run as written, on a fresh home.

The ``bash`` block under "## A tour" is read from README.md, its ``\\`` continuations
joined and its trailing comments dropped, and each command runs with bash in a folder laid
out like a checkout (``examples/`` beside the inputs, ``../shared/traces`` above it, where
``sim run`` looks by default). ``HOME`` is a new folder and ``MODELPLANE_*`` is unset, so
``~/.modelplane`` is the state the tour's ``$(cat ~/.modelplane/token)`` reads. The inputs
the tour names are made first, as a user would make them: a scikit-learn model saved with
skops, its sample and training data as CSV, a retrained second version, an MLflow model
folder, and a Parquet file for the example feature set.

``serve`` and ``up`` keep running, so they start in the background on the ports the README
names (8000, 8080) and the test polls until they answer; ``serve`` stops before ``up``,
which needs the same gateway port. The prediction ``curl`` after ``apply`` is repeated
until the endpoint answers, since ``up`` reconciles the new endpoint within a moment
rather than at once. The few commands that cannot run verbatim are in ``REWRITES`` with
the reason; placeholders take the values earlier commands printed. Every command must exit
0.
"""

from __future__ import annotations

import json
import os
import re
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import skops.io as sio
import yaml
from sklearn.linear_model import LogisticRegression
from tests.kit import wait_for

REPO = Path(__file__).resolve().parents[1]
README = REPO / "README.md"
EXAMPLES = REPO / "examples"
TRACES = REPO.parent / "shared" / "traces"
VENV_BIN = Path(sys.executable).parent
GATEWAY_PORT, CONTROL_PORT = 8000, 8080
COLUMNS = ["amount", "age_days", "merchant_risk", "night"]
IN_CI = os.environ.get("CI", "").lower() == "true"

# What cannot run exactly as written here, and why: (text in the README, what runs instead).
REWRITES = {
    # The network rules allow loopback only: the login goes to the tour's own `up`.
    "login": ("http://modelplane.internal:8080", f"http://127.0.0.1:{CONTROL_PORT}"),
}
# Placeholders that are not shell variables: filled from an earlier command's output.
REQUEST_ID = "REQUEST_ID"

# The MLflow model is made in another process while the first commands run: importing
# mlflow costs seconds that the tour does not need to wait for until `import-mlflow`.
MLFLOW_SCRIPT = """
import sys
import numpy as np, pandas as pd, mlflow.sklearn
from sklearn.linear_model import LogisticRegression
rng = np.random.default_rng(3)
frame = pd.DataFrame({"tenure_months": rng.uniform(0, 60, 300),
                      "monthly_spend": rng.gamma(2.0, 20.0, 300)})
churned = (frame.tenure_months < 12).astype(float)
model = LogisticRegression().fit(frame, churned)
# An input example gives the folder a signature; naming the requirement spares mlflow
# inferring it by importing everything installed.
mlflow.sklearn.save_model(model, sys.argv[1], input_example=frame.head(3),
                          pip_requirements=["scikit-learn"])
"""


def tour_commands() -> list[str]:
    """The tour's commands: continuations joined, comments and blank lines dropped."""
    text = README.read_text(encoding="utf-8")
    found = re.search(r"^## A tour\n.*?^```bash\n(.*?)^```", text, re.S | re.M)
    assert found, "README.md has no ```bash block under '## A tour'"
    commands: list[str] = []
    pending = ""
    for raw in found.group(1).splitlines():
        line = re.sub(r"\s+#\s.*$", "", raw).rstrip()
        if line.endswith("\\"):
            pending += line[:-1].rstrip() + " "
            continue
        command = (pending + line.strip()).strip()
        pending = ""
        if command:
            commands.append(command)
    return commands


def port_free(port: int) -> bool:
    """Whether nothing listens on ``port``: connections still in TIME_WAIT from a server
    that has stopped do not count, since servers bind with SO_REUSEADDR as this does."""
    with socket.socket() as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind(("127.0.0.1", port))
        except OSError:
            return False
        return True


def answers(url: str, body: bytes | None = None) -> int | None:
    """The HTTP status ``url`` answers with (GET, or POST of ``body``); ``None`` if none."""
    request = urllib.request.Request(url, data=body, method="POST" if body else "GET")
    try:
        with urllib.request.urlopen(request, timeout=5) as response:
            return int(response.status)
    except urllib.error.HTTPError as exc:
        return int(exc.code)
    except OSError:
        return None


def make_inputs(work: Path) -> subprocess.Popen[str]:
    """The files the tour names, in ``work``; the MLflow folder comes from the process returned."""
    mlflow = subprocess.Popen(
        [sys.executable, "-c", MLFLOW_SCRIPT, str(work / "mlflow-model")],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    endpoint = yaml.safe_load((EXAMPLES / "endpoint.yaml").read_text())
    assert [i["name"] for i in endpoint["contract"]["inputs"]] == COLUMNS, (
        "examples/endpoint.yaml's inputs changed: train the tour's model on them"
    )
    rng = np.random.default_rng(42)
    rows = 1000
    frame = pd.DataFrame(
        {
            "amount": rng.gamma(2.0, 40.0, rows),
            "age_days": rng.uniform(0, 2000, rows),
            "merchant_risk": rng.beta(2, 5, rows),
            "night": rng.integers(0, 2, rows).astype(float),
        }
    )
    logit = 0.01 * frame.amount - 0.002 * frame.age_days + 4 * frame.merchant_risk + frame.night
    fraud = (rng.uniform(size=rows) < 1 / (1 + np.exp(-(logit - 2.5)))).astype(int)
    sio.dump(LogisticRegression(C=1.0, max_iter=500).fit(frame, fraud), work / "model.skops")
    sio.dump(LogisticRegression(C=0.5, max_iter=500).fit(frame, fraud), work / "model-v2.skops")
    frame.to_csv(work / "transactions.csv", index=False)
    frame.head(8).to_csv(work / "sample.csv", index=False)

    featureset = yaml.safe_load((EXAMPLES / "featureset.yaml").read_text())
    customers = 200
    columns: dict[str, object] = {
        featureset["entity"]["name"]: np.arange(customers, dtype="int64"),
        "event_time": np.full(customers, time.time()),
    }
    for feature in featureset["features"]:
        if feature["dtype"] == "int64":
            columns[feature["name"]] = rng.integers(0, 30, customers)
        else:
            columns[feature["name"]] = rng.gamma(2.0, 40.0, customers)
    pd.DataFrame(columns).to_parquet(work / "customers.parquet")
    return mlflow


@dataclass
class Tour:
    """The shell the tour runs in, and what its commands left behind."""

    work: Path
    env: dict[str, str]
    logs: Path
    background: dict[str, subprocess.Popen[bytes]] = field(default_factory=dict)
    request_id: str = ""

    def run(self, command: str, timeout_s: float = 120) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            ["bash", "-c", command],
            cwd=self.work,
            env=self.env,
            capture_output=True,
            text=True,
            timeout=timeout_s,
            check=False,
        )

    def must(self, command: str, timeout_s: float = 120) -> str:
        done = self.run(command, timeout_s)
        assert done.returncode == 0, (
            f"`{command}` exited {done.returncode}\n{done.stdout}\n{done.stderr}{self.tails()}"
        )
        return done.stdout

    def start(self, name: str, command: str) -> subprocess.Popen[bytes]:
        log = (self.logs / f"{name}.log").open("wb")
        process = subprocess.Popen(
            ["bash", "-c", command],
            cwd=self.work,
            env=self.env,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        log.close()
        self.background[name] = process
        return process

    def stop(self, name: str) -> None:
        process = self.background.pop(name)
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGTERM)
            try:
                process.wait(timeout=60)
            except subprocess.TimeoutExpired:
                os.killpg(process.pid, signal.SIGKILL)
                process.wait(timeout=30)

    def serving(self, name: str) -> None:
        """Fails, with its output, if the background command ``name`` has exited."""
        process = self.background[name]
        assert process.poll() is None, f"`modelplane {name}` exited early{self.tails()}"

    def tails(self) -> str:
        return "".join(
            f"\n--- {log.name} ---\n{log.read_text(errors='replace')[-3000:]}"
            for log in sorted(self.logs.glob("*.log"))
        )


@pytest.fixture
def tour(tmp_path: Path) -> Iterator[Tour]:
    busy = [p for p in (GATEWAY_PORT, CONTROL_PORT) if not port_free(p)]
    if busy:
        reason = f"the README's ports {busy} are in use on this machine"
        if IN_CI:
            pytest.fail(f"{reason} (CI=true: the tour must run)")
        pytest.skip(reason)
    if not TRACES.is_dir():
        if IN_CI:
            pytest.fail(f"{TRACES} is missing (CI=true: sim run needs the trace)")
        pytest.skip(f"openb trace not found at {TRACES}")
    work, home, logs = tmp_path / "checkout", tmp_path / "home", tmp_path / "logs"
    for folder in (work, home, logs, tmp_path / "shared"):
        folder.mkdir()
    (work / "examples").symlink_to(EXAMPLES)
    (tmp_path / "shared" / "traces").symlink_to(TRACES)
    env = {k: v for k, v in os.environ.items() if not k.startswith("MODELPLANE_")}
    env.update(HOME=str(home), PATH=f"{VENV_BIN}{os.pathsep}{env.get('PATH', '')}")
    shell = Tour(work, env, logs)
    try:
        yield shell
    finally:
        for name in list(shell.background):
            shell.stop(name)


GATEWAY = f"http://127.0.0.1:{GATEWAY_PORT}"
CONTROL = f"http://127.0.0.1:{CONTROL_PORT}"
ROW = {"amount": 12.5, "age_days": 100, "merchant_risk": 0.2, "night": 1}


def serve(tour: Tour, command: str) -> None:
    tour.start("serve", command)
    record = f"{GATEWAY}/v1/endpoints/fraud-score:predict"
    body = json.dumps({"instances": [ROW]}).encode()

    # It prints the record URL the tour's curl uses: that URL must answer.
    def answered() -> bool:
        tour.serving("serve")
        return answers(record, body) == 200

    wait_for(answered, 60, "`modelplane serve` to answer a prediction on :8000")


def up(tour: Tour, command: str) -> None:
    if "serve" in tour.background:
        tour.stop("serve")
        wait_for(lambda: port_free(GATEWAY_PORT), 30, "serve to let go of :8000")
    tour.start("up", command)
    admin_token = Path(tour.env["HOME"]) / ".modelplane" / "token"

    def answered() -> bool:
        tour.serving("up")
        return admin_token.exists() and all(answers(url) is not None for url in (GATEWAY, CONTROL))

    wait_for(answered, 60, "`modelplane up` to answer on :8000 and :8080")


def predict(tour: Tour, command: str) -> None:
    # `up` reconciles the endpoint just applied within a controller pass: the same curl,
    # repeated until it answers with a prediction.
    def predicted() -> dict[str, object] | None:
        done = tour.run(command, timeout_s=30)
        try:
            answer = json.loads(done.stdout)
        except ValueError:
            return None
        return answer if isinstance(answer, dict) and answer.get("predictions") else None

    answer = wait_for(predicted, 60, f"`{command}` to return a prediction", every_s=0.2)
    predictions = answer["predictions"]
    assert isinstance(predictions, list)
    assert set(predictions[0]) == {"label", "probabilities"}, answer
    tour.request_id = str(answer["request_id"])


def test_readme_tour_runs_as_written(tour: Tour) -> None:
    commands = tour_commands()
    starts = [c.split()[:2] for c in commands]
    for needed in (["modelplane", "serve"], ["modelplane", "up"], ["modelplane", "login"]):
        assert needed in starts, f"the tour no longer has `{' '.join(needed)}`: update this test"
    mlflow = make_inputs(tour.work)
    try:
        run_all(tour, commands, mlflow)
    finally:
        if mlflow.poll() is None:
            mlflow.kill()
            mlflow.communicate(timeout=30)


def run_all(tour: Tour, commands: list[str], mlflow: subprocess.Popen[str]) -> None:
    for written in commands:
        verb = written.split()[1] if written.startswith("modelplane ") else written.split()[0]
        command = written
        if verb in REWRITES:
            old, new = REWRITES[verb]
            assert old in command, f"`{command}` no longer names {old}"
            command = command.replace(old, new)
        if REQUEST_ID in command:
            assert tour.request_id, f"`{command}` needs a request id and no curl gave one"
            command = command.replace(REQUEST_ID, tour.request_id)
        if "mlflow-model" in command and mlflow.returncode is None:
            output, _ = mlflow.communicate(timeout=120)
            assert mlflow.returncode == 0, f"saving the MLflow model failed:\n{output}"

        began = time.monotonic()
        if verb == "serve":
            serve(tour, command)
        elif verb == "up":
            up(tour, command)
        elif verb == "curl" and ":predict" in command:
            predict(tour, command)
        elif verb == "curl":
            listed = json.loads(tour.must(command))
            assert "fraud-score" in {r["name"] for r in listed}, listed
        elif verb == "tokens":
            [token] = re.findall(r"^(mp_\S+)$", tour.must(command), re.M)
            # The tour's later `--token "$TOKEN"` reads it from the shell.
            tour.env["TOKEN"] = token
        else:
            tour.must(command)
        # Shown with -s, or beside a failure: where the tour's time goes.
        print(f"{time.monotonic() - began:6.1f} s  {written}")
