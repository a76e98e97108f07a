"""docs/security.md runs as written: its ``console`` blocks, in order, in one shell on a fresh
state folder, with the files its ``# NAME`` blocks give, each command's output compared
with the page's (``...`` stands for what differs from run to run).

One shell, not a process per command: the page keeps shell variables (``$READER``) and a
background ``modelplane up`` between commands, as a reader's terminal would. A command whose
shown output starts with ``error:`` must fail; every other one must succeed.
"""

from __future__ import annotations

import contextlib
import doctest
import os
import re
import signal
import socket
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PAGE = ROOT / "docs" / "security.md"
MARK = "@@modelplane-doc-step"

pytestmark = pytest.mark.timeout(180)


@dataclass(frozen=True)
class Step:
    command: str
    expected: str


def page_files(text: str) -> dict[str, str]:
    """Blocks whose first line is ``# NAME``: the files the commands read."""
    found = {}
    for body in re.findall(r"```(?:python|yaml)\n(.*?)```", text, re.S):
        first, _, rest = body.partition("\n")
        if re.fullmatch(r"# [\w.-]+\.(py|yaml)", first):
            found[first[2:]] = rest if first.endswith(".py") else body
    return found


def page_steps(text: str) -> list[Step]:
    """Each ``$ command`` (continued by ``> `` lines) with the output shown under it."""
    steps: list[Step] = []
    for block in re.findall(r"```console\n(.*?)```", text, re.S):
        command: list[str] = []
        output: list[str] = []
        for line in block.splitlines():
            if line.startswith("$ "):
                if command:
                    steps.append(Step("\n".join(command), "\n".join(output)))
                command, output = [line[2:]], []
            elif line.startswith("> ") and not output:
                command.append(line[2:])
            else:
                output.append(line)
        if command:
            steps.append(Step("\n".join(command), "\n".join(output)))
    return steps


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def script_of(steps: list[Step], ports: dict[str, str]) -> str:
    lines = []
    for index, step in enumerate(steps):
        command = step.command
        for shown, used in ports.items():
            command = re.sub(rf"\b{shown}\b", used, command)
        lines += [f"echo '{MARK} {index}'", "{", command, "} 2>&1", f"echo '{MARK} rc' $?"]
    return "\n".join(lines) + "\n"


def outputs_of(stdout: str, count: int) -> list[tuple[str, int]]:
    found = re.findall(rf"{MARK} (\d+)\n(.*?){MARK} rc (\d+)\n", stdout, re.S)
    assert [int(i) for i, _, _ in found] == list(range(count)), stdout[-4000:]
    return [(output, int(rc)) for _, output, rc in found]


def test_the_page_runs_as_written(tmp_path: Path) -> None:
    text = PAGE.read_text(encoding="utf-8")
    for name, content in page_files(text).items():
        (tmp_path / name).write_text(content, encoding="utf-8")
    steps = page_steps(text)
    assert len(steps) > 20, "the page lost its examples"
    ports = {"8000": str(free_port()), "8080": str(free_port())}
    env = {k: v for k, v in os.environ.items() if not k.startswith(("MODELPLANE_", "OTEL_"))}
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}"
    shell = subprocess.Popen(
        ["bash", "-c", script_of(steps, ports)], cwd=tmp_path, env=env, text=True,
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, start_new_session=True,
    )  # fmt: skip
    try:
        stdout, _ = shell.communicate(timeout=150)
    finally:
        # the page stops its server itself; this is for a run that failed half-way
        with contextlib.suppress(ProcessLookupError):
            os.killpg(shell.pid, signal.SIGKILL)
        shell.wait(timeout=10)
    checker = doctest.OutputChecker()
    flags = doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE
    wrong = []
    for step, (output, rc) in zip(steps, outputs_of(stdout, len(steps)), strict=True):
        expected = step.expected.strip()
        got = output.strip()
        for shown, used in ports.items():
            got = got.replace(used, shown)
        if not checker.check_output(expected + "\n", got + "\n", flags):
            wrong.append(f"$ {step.command}\nexpected:\n{expected}\ngot:\n{got}")
        elif (rc != 0) != expected.startswith("error:"):
            wrong.append(f"$ {step.command}\nexit {rc}\n{got}")
    assert not wrong, "\n\n".join(wrong)
