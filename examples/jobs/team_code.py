"""A team's own job code, shipped as a signed ``python``-runtime package (docs/jobs.md).

``python`` jobs call a function of this file (``model:enrich``, ``model:train``: a
python-runtime package ships its source as ``model.py``). The class is what makes it a
package (``load`` and ``predict``); the functions are what jobs run. Build and push it:

    modelplane.package(TeamCode(), name="team-code", output_dir="team-code",
                       runtime="python", sample_input={"amount": [1.0]})
    modelplane push team-code --sign KEY     (a key the policy trusts for code)
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

FEATURES = ["amount", "age_days", "merchant_risk", "night"]


class TeamCode:
    """The package's model: amounts in cents (served too, should anyone want it)."""

    def load(self, path: Path) -> None:
        del path

    def predict(self, inputs: dict[str, Any]) -> dict[str, Any]:
        return {"amount_cents": np.asarray(inputs["amount"], dtype=np.float64) * 100.0}


def enrich(rows: pa.Table, context: Any) -> pa.Table:
    """Over a shard's rows: each transaction's amount in cents, and a night flag."""
    factor = float(context.parameters.get("factor", 100))
    return pa.table(
        {
            "txn_id": rows.column("txn_id"),
            "amount_cents": pc.multiply(rows.column("amount").cast(pa.float64()), factor),
            "at_night": pc.greater(rows.column("night"), 0),
        }
    )


def train(rows: pa.Table, context: Any) -> None:
    """Fit a fraud model on every row, and build its package where the job asks."""
    from sklearn.linear_model import LogisticRegression

    import modelplane

    frame = rows.to_pandas()
    features = frame[FEATURES]
    target = (frame.merchant_risk + 0.2 * frame.night > 0.4).astype(int)
    model = LogisticRegression(C=float(context.parameters.get("C", 1.0)), max_iter=500)
    model.fit(features, target)
    accuracy = float((model.predict(features) == target).mean())
    modelplane.package(
        model,
        name="fraud",  # the job pushes it under its push_as name
        output_dir=context.package_dir,
        sample_input=features.head(),
        lineage=modelplane.LineageSource(metrics={"train_accuracy": accuracy}),
    )
