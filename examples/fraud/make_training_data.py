"""Write training.csv: the reference data of the fraud example.

Features f0..f3 are standard normal (seed 7), and the prediction and
probability columns are what the demo model server (same seed) answers for
them, so the live traffic of an undisturbed model matches this reference.

    python examples/fraud/make_training_data.py        # rewrites training.csv
"""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np

from driftline_operator.cli.demo.model_server import Classifier

ROWS = 2000
SEED = 7


def main() -> None:
    model = Classifier(n_features=4, seed=SEED)
    rows = np.random.default_rng(SEED).normal(0.0, 1.0, (ROWS, len(model.feature_names)))
    probability = model.probability(rows)
    path = Path(__file__).with_name("training.csv")
    with path.open("w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow([*model.feature_names, "prediction", "probability"])
        for row, p in zip(rows, probability, strict=True):
            label = "fraud" if p >= 0.5 else "ok"
            writer.writerow([*(f"{v:.6f}" for v in row), label, f"{p:.6f}"])
    print(f"wrote {ROWS} rows to {path}")


if __name__ == "__main__":
    main()
