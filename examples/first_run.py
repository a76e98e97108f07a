"""`make run`: a model answering requests, then a safe change and a refused one.

On the embedded default (SQLite and local processes, state under ``$MODELPLANE_HOME``):

1. starts ``modelplane up`` (gateway and control API on loopback);
2. trains a small fraud model, packages it, pushes it and applies ``examples/endpoint.yaml``;
3. sends a prediction, printing the ``curl`` a person would type and the answer;
4. under a light steady load, rolls out a second version (shadow, then canary: promoted),
   then a deliberately worse third one, which its gate rolls back by itself;
5. prints ``modelplane status`` and one ``modelplane explain``;
6. keeps serving until Ctrl-C, with the URLs printed (``--exit-after-demo`` stops instead).

Every change is a real ``modelplane`` command, printed before it runs, so what you see is
what you would type. The time from start to the first answered prediction is printed too.
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
CLI = str(Path(sys.executable).with_name("modelplane"))
COLUMNS = ["amount", "age_days", "merchant_risk", "night"]
MARKER = ".modelplane-first-run"
ENDPOINT = "fraud-score"
PREDICT = f"/v1/endpoints/{ENDPOINT}:predict"
ROW = {"amount": 312.5, "age_days": 12.0, "merchant_risk": 0.83, "night": 1.0}


def say(text: str = "") -> None:
    print(text, flush=True)


def heading(text: str) -> None:
    say(f"\n\033[1m== {text}\033[0m")


def sh(*args: str, quiet: bool = False) -> str:
    """Run ``modelplane ARGS`` as a person would; its output, or exit with its status."""
    if not quiet:
        say(f"\n\033[36m$ modelplane {shlex.join(args)}\033[0m")
    done = subprocess.run([CLI, *args], capture_output=True, text=True, check=False, timeout=120)
    if not quiet:
        print(done.stdout, end="", flush=True)
    if done.returncode != 0:
        print(done.stderr, end="", file=sys.stderr, flush=True)
        raise SystemExit(f"modelplane {args[0]} failed with exit status {done.returncode}")
    return done.stdout


def port_or_free(wanted: int) -> int:
    """``wanted`` when it is free on loopback, else any free port."""
    with socket.socket() as sock:
        try:
            sock.bind(("127.0.0.1", wanted))
            return wanted
        except OSError:
            sock.bind(("127.0.0.1", 0))
            return int(sock.getsockname()[1])


def fresh_home(home: Path) -> None:
    """Start from an empty state folder: ours from a previous run, or a new one."""
    if home.exists() and any(home.iterdir()):
        if not (home / MARKER).exists():
            raise SystemExit(
                f"{home} holds state this demo did not make; set MODELPLANE_HOME to an "
                "empty folder (make run uses run-home/first-run)"
            )
        shutil.rmtree(home)
    home.mkdir(parents=True, exist_ok=True)
    (home / MARKER).write_text("made by examples/first_run.py; removed on its next run\n")


def post(port: int, body: dict[str, Any]) -> tuple[int, dict[str, str], Any]:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    try:
        conn.request("POST", PREDICT, json.dumps(body), {"content-type": "application/json"})
        response = conn.getresponse()
        payload = json.loads(response.read() or b"null")
        return response.status, {k.lower(): v for k, v in response.getheaders()}, payload
    finally:
        conn.close()


def wait_for(check: Any, timeout_s: float, what: str) -> Any:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        found = check()
        if found:
            return found
        time.sleep(0.1)
    raise SystemExit(f"timed out after {timeout_s:g}s waiting for {what}")


class Load(threading.Thread):
    """Steady requests from many card holders, so the rollout's gates have evidence."""

    def __init__(self, port: int, rows: list[dict[str, float]], per_second: float) -> None:
        super().__init__(daemon=True)
        self.port, self.rows, self.pause = port, rows, 1.0 / per_second
        self.stop = threading.Event()
        self.answers: dict[tuple[int, str], int] = {}

    def run(self) -> None:
        conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=10)
        headers = {"content-type": "application/json"}
        sent = 0
        while not self.stop.wait(self.pause):
            row = self.rows[sent % len(self.rows)]
            sent += 1
            try:
                conn.request("POST", PREDICT, json.dumps({"instances": [row]}), headers)
                response = conn.getresponse()
                response.read()
                version = response.getheader("modelplane-model-version") or "a fallback"
                key = (response.status, version)
            except (OSError, http.client.HTTPException):
                conn.close()
                conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=10)
                key = (0, "")
            self.answers[key] = self.answers.get(key, 0) + 1
        conn.close()


class Models:
    """Three versions of one fraud model: v1 serves, v2 is better, v3 is deliberately bad."""

    def __init__(self, work: Path) -> None:
        import numpy as np
        import pandas as pd

        self.work = work
        rng = np.random.default_rng(42)
        rows = 4000
        self.frame = pd.DataFrame(
            {
                "amount": rng.gamma(2.0, 40.0, rows),
                "age_days": rng.uniform(0, 2000, rows),
                "merchant_risk": rng.beta(2, 5, rows),
                "night": rng.integers(0, 2, rows).astype(float),
            }
        )
        f = self.frame
        logit = 0.01 * f.amount - 0.002 * f.age_days + 4 * f.merchant_risk + f.night
        self.target = (rng.uniform(size=rows) < 1 / (1 + np.exp(-(logit - 2.5)))).astype(int)

    def rows(self, count: int) -> list[dict[str, float]]:
        records: list[dict[str, float]] = self.frame.head(count).to_dict("records")
        return records

    def build(self, version: int) -> Path:
        """Train and package one version; the folder to push."""
        from sklearn.linear_model import LogisticRegression
        from sklearn.metrics import roc_auc_score

        import modelplane
        from modelplane.registry.provenance import LineageSource

        # v3 learns from flipped labels: it calls most fraud clean and most clean fraud.
        target = 1 - self.target if version == 3 else self.target
        c = {1: 1.0, 2: 0.5, 3: 1.0}[version]
        model = LogisticRegression(C=c, max_iter=500).fit(self.frame, target)
        auc = float(roc_auc_score(self.target, model.predict_proba(self.frame)[:, 1]))
        note = "  (deliberately worse: trained on flipped labels)" if version == 3 else ""
        say(f"\ntrained fraud v{version}: LogisticRegression(C={c}), AUC {auc:.3f}{note}")
        out = self.work / f"fraud-v{version}"
        shutil.rmtree(out, ignore_errors=True)
        say(f'modelplane.package(model, name="fraud", output_dir="{out.name}", ...)')
        built = modelplane.package(
            model,
            name="fraud",
            output_dir=out,
            sample_input=self.frame.head(8),
            lineage=LineageSource(metrics={"auc": round(auc, 4)}),
            description="fraud probability per card transaction",
        )
        return Path(built.path)


def rollout(to: str, reason: str) -> str:
    """Roll ``to`` out with the quick example spec; the phase it ended in."""
    sh("rollout", ENDPOINT, "--to", to, "-f", str(HERE / "rollout-quick.yaml"), "--reason", reason)
    shown: list[str] = []

    def ended() -> str | None:
        [resource] = json.loads(sh("get", "rollouts", ENDPOINT, "--json", quiet=True))
        state = (resource.get("status") or {}).get("state") or {}
        phase, step = str(state.get("phase", "pending")), state.get("step")
        line = f"  rollout {to}: {phase}" + (f", step {step + 1}" if step is not None else "")
        if not shown or shown[-1] != line:
            shown.append(line)
            say(line)
        return phase if phase in ("promoted", "rolled_back", "failed") else None

    return str(wait_for(ended, 180, f"the rollout of {to} to finish"))


def first_prediction(port: int, server: subprocess.Popen[bytes], home: Path) -> dict[str, str]:
    """Steps 2 and 3: a model behind an endpoint, and its first answer; its headers."""
    body = {"instances": [ROW]}
    say(
        f"\033[36m$ curl -X POST localhost:{port}{PREDICT} "
        f"-H 'content-type: application/json' \\\n    -d '{json.dumps(body)}'\033[0m"
    )

    def answered() -> tuple[dict[str, str], Any] | None:
        if server.poll() is not None:
            raise SystemExit(f"modelplane up stopped; see {home}/up.log")
        try:
            status, headers, payload = post(port, body)
        except OSError:
            return None
        return (headers, payload) if status == 200 else None

    headers: dict[str, str]
    headers, payload = wait_for(answered, 120, "the endpoint to answer")
    say(json.dumps(payload))
    say(
        f"(model version {headers.get('modelplane-model-version')}, "
        f"request id {headers.get('modelplane-request-id')})"
    )
    return headers


def changes(port: int, models: Models) -> tuple[str, str]:
    """Steps 4 and 5 under steady load: a good version promoted, a bad one rolled back."""
    heading("4. a safe change: v2 in shadow, then canary steps, judged by gates")
    load = Load(port, models.rows(500), per_second=40)
    load.start()
    try:
        sh("push", str(models.build(2)), "--reason", "candidate with stronger L2")
        sh("push", str(models.build(3)), "--reason", "a candidate that should never ship")
        v2 = rollout("fraud:2", "better AUC")
        heading("5. a bad change: v3 disagrees with stable in shadow; its gate rolls it back")
        v3 = rollout("fraud:3", "show a gate at work")
    finally:
        load.stop.set()
        load.join(timeout=15)
    answers = {f"{status} {version}": n for (status, version), n in sorted(load.answers.items())}
    say(f"\nanswers while the rollouts ran (status, version): {json.dumps(answers)}")
    sh("audit", "log", "--limit", "6")
    return v2, v3


def demo(args: argparse.Namespace, started: float) -> int:
    home = Path(os.environ["MODELPLANE_HOME"])
    work = home / "work"
    work.mkdir(parents=True, exist_ok=True)
    port, api_port = port_or_free(args.port), port_or_free(args.api_port)
    heading("1. the platform: gateway, control API and controllers in one process")
    # --sample-rate 1 keeps every request in the prediction log: any id can be explained.
    up_args = ["up", "--port", str(port), "--api-port", str(api_port), "--sample-rate", "1"]
    say(f"\033[36m$ modelplane {shlex.join(up_args)} &\033[0m   (its log: {home}/up.log)")
    log = (home / "up.log").open("wb")
    server = subprocess.Popen([CLI, *up_args], stdout=log, stderr=subprocess.STDOUT)
    try:
        heading("2. a model: train, package, push, and an endpoint that serves it")
        models = Models(work)
        sh("push", str(models.build(1)), "--alias", "champion", "--reason", "first model")
        sh("apply", "-f", str(HERE / "endpoint.yaml"), "--reason", "first endpoint")
        heading("3. a prediction")
        headers = first_prediction(port, server, home)
        first_answer_s = time.monotonic() - started
        say(f"\033[1mfirst answered prediction {first_answer_s:.1f} s after start\033[0m")
        v2, v3 = changes(port, models)
        heading("6. what exactly is running, and where one answer came from")
        sh("status")
        sh("explain", headers.get("modelplane-request-id", ""))
        heading("serving")
        say(f"gateway   http://127.0.0.1:{port}   (POST {PREDICT}, /metrics)")
        say(f"console   http://127.0.0.1:{api_port}/   (API docs at /docs); with the local token:")
        say(f'          open "http://127.0.0.1:{api_port}/#token=$(cat {home}/token)"')
        say(f"state     export MODELPLANE_HOME={home}   (then modelplane status, ...)")
        say(f"first answered prediction: {first_answer_s:.1f} s after start")
        outcome = {"first_answer_s": round(first_answer_s, 2), "v2": v2, "v3": v3}
        (home / "first-run.json").write_text(json.dumps(outcome) + "\n")
        if (v2, v3) != ("promoted", "rolled_back"):
            say(f"\033[31munexpected: v2 {v2}, v3 {v3}\033[0m")
            return 1
        if not args.exit_after_demo:
            say("Ctrl-C to stop.")
            server.wait()
        return 0
    except KeyboardInterrupt:
        return 0
    finally:
        stop(server)
        log.close()


def stop(server: subprocess.Popen[bytes]) -> None:
    """SIGINT, as Ctrl-C would: ``up`` drains accepted requests, then exits."""
    if server.poll() is None:
        server.send_signal(signal.SIGINT)
        try:
            server.wait(timeout=60)
        except subprocess.TimeoutExpired:
            server.kill()
            server.wait(timeout=10)
    say("stopped")


def main() -> int:
    started = time.monotonic()
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--port", type=int, default=8000, help="gateway port (8000)")
    parser.add_argument("--api-port", type=int, default=8080, help="control API port (8080)")
    parser.add_argument(
        "--exit-after-demo",
        action="store_true",
        default=os.environ.get("MODELPLANE_EXIT_AFTER_DEMO", "") not in ("", "0"),
        help="stop after the demo instead of serving until Ctrl-C",
    )
    args = parser.parse_args()
    home = Path(os.environ.setdefault("MODELPLANE_HOME", str(HERE.parent / "run-home")))
    fresh_home(home)
    return demo(args, started)


if __name__ == "__main__":
    sys.exit(main())
