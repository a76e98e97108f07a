"""`make tour`: train a small fraud model, then package, push, alias and inspect it.

Every step is a real `modelplane` command, printed before it runs, so what you see is
what you would type.
"""

from __future__ import annotations

import os
import shlex
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import skops.io as sio
from rich.console import Console
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import roc_auc_score

console = Console(highlight=False, soft_wrap=True)
HERE = Path(__file__).resolve().parent
CLI = str(Path(sys.executable).with_name("modelplane"))
COLUMNS = ["amount", "age_days", "merchant_risk", "night"]


def make_data(rows: int, seed: int) -> tuple[pd.DataFrame, np.ndarray]:
    rng = np.random.default_rng(seed)
    frame = pd.DataFrame(
        {
            "amount": rng.gamma(2.0, 40.0, rows),
            "age_days": rng.uniform(0, 2000, rows),
            "merchant_risk": rng.beta(2, 5, rows),
            "night": rng.integers(0, 2, rows).astype(float),
        }
    )
    logit = 0.01 * frame.amount - 0.002 * frame.age_days + 4 * frame.merchant_risk + frame.night
    target = (rng.uniform(size=rows) < 1 / (1 + np.exp(-(logit - 2.5)))).astype(int)
    return frame, target


def train(work: Path, c: float) -> tuple[Path, float]:
    frame, target = make_data(4000, seed=42)
    model = LogisticRegression(C=c, max_iter=500).fit(frame, target)
    auc = float(roc_auc_score(target, model.predict_proba(frame)[:, 1]))
    path = work / f"fraud-c{c}.skops"
    sio.dump(model, path)
    frame.to_csv(work / "transactions.csv", index=False)
    frame.head(8).to_csv(work / "sample.csv", index=False)
    return path, auc


def sh(*args: str, check: bool = True) -> None:
    console.print(f"\n[bold cyan]$ modelplane {shlex.join(args)}[/]")
    done = subprocess.run([CLI, *args], check=False)
    if check and done.returncode != 0:
        raise SystemExit(done.returncode)


def main() -> None:
    home = Path(os.environ.setdefault("MODELPLANE_HOME", str(HERE.parent / "run-home" / "tour")))
    work = home / "quickstart"
    work.mkdir(parents=True, exist_ok=True)
    os.chdir(work)
    console.rule("[bold]modelplane quickstart")
    console.print(f"state: {home}  (SQLite + content-addressed artifacts)")
    for version, c in ((1, 1.0), (2, 0.05)):
        model_file, auc = train(work, c)
        console.print(f"\ntrained LogisticRegression(C={c}) on 4,000 rows: AUC {auc:.3f}")
        sh(
            "package",
            model_file.name,
            "--name",
            "fraud",
            "--output",
            f"fraud-v{version}",
            "--sample",
            "sample.csv",
            "--training-data",
            "transactions.csv",
            "--param",
            f"C={c}",
            "--metric",
            f"auc={auc:.4f}",
            "--feature",
            "transactions:1:" + ",".join(COLUMNS),
            "--description",
            "fraud probability per card transaction",
        )
        sh("push", f"fraud-v{version}", "--reason", "quickstart")
    sh("alias", "set", "fraud@champion", "1", "--reason", "first production model")
    sh("alias", "set", "fraud@challenger", "2", "--reason", "candidate with stronger L2")
    sh("versions", "fraud")
    sh("inspect", "fraud@champion")
    sh("contract", "check", str(HERE / "fraud-contract.yaml"), "fraud@challenger")
    sh("verify", "fraud@champion")
    sh("lineage", "--dataset", "transactions.csv")
    sh("audit", "log", "--limit", "8")
    sh("audit", "verify")
    console.rule("[bold green]done")
    console.print("Next: `modelplane --help`; state lives in " + str(home))


if __name__ == "__main__":
    main()
