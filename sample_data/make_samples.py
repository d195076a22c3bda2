"""Regenerate the bundled sample data (deterministic): python sample_data/make_samples.py

Small, realistic examples: a 5-class classifier's logits with labels (Parquet,
CSV, NPY, NPZ), a binary classifier, and a regressor with a few outliers.
"""

from __future__ import annotations

import os

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

HERE = os.path.dirname(os.path.abspath(__file__))
rng = np.random.default_rng(20261127)


def classifier(n: int = 200, c: int = 5):
    label = rng.integers(0, c, size=n)
    logits = rng.normal(0.0, 1.0, size=(n, c))
    # A decent but imperfect model: the true class gets a boost, sometimes a wrong one does.
    logits[np.arange(n), label] += rng.normal(2.0, 1.0, size=n)
    confused = rng.random(n) < 0.15
    wrong = (label + rng.integers(1, c, size=n)) % c
    logits[np.flatnonzero(confused), wrong[confused]] += 3.0
    return logits.astype(np.float32), label.astype(np.int64)


def main() -> None:
    logits, label = classifier()
    n, c = logits.shape
    ids = np.array([f"s{i:04d}" for i in range(n)])
    table = pa.table(
        {
            "id": pa.array(ids),
            "logits": pa.FixedSizeListArray.from_arrays(pa.array(logits.ravel()), c),
            "label": pa.array(label),
        }
    )
    pq.write_table(table, os.path.join(HERE, "classifier.parquet"))
    with open(os.path.join(HERE, "classifier.csv"), "w") as fh:
        fh.write("id," + ",".join(f"logit_{k}" for k in range(c)) + ",label\n")
        for i in range(n):
            fh.write(ids[i] + "," + ",".join(repr(float(v)) for v in logits[i]) + f",{label[i]}\n")
    np.save(os.path.join(HERE, "classifier_logits.npy"), logits)
    np.save(os.path.join(HERE, "classifier_labels.npy"), label)
    np.savez(os.path.join(HERE, "classifier.npz"), logits=logits, label=label)
    # Labels in another order, keyed by id (for --id-col).
    perm = rng.permutation(n)
    with open(os.path.join(HERE, "classifier_labels_shuffled.csv"), "w") as fh:
        fh.write("id,label\n")
        for i in perm:
            fh.write(f"{ids[i]},{label[i]}\n")

    # Binary classifier: one logit per sample.
    m = 300
    y = (rng.random(m) < 0.3).astype(np.int64)
    logit = rng.normal(-1.0, 1.5, size=m) + 2.5 * y
    with open(os.path.join(HERE, "binary.csv"), "w") as fh:
        fh.write("logit,label\n")
        for v, t in zip(logit, y):
            fh.write(f"{v:.6f},{t}\n")

    # Regression with a few outliers.
    k = 250
    target = rng.normal(10.0, 3.0, size=k)
    pred = target + rng.normal(0.0, 0.8, size=k)
    pred[rng.choice(k, 5, replace=False)] += rng.choice([-1, 1], 5) * rng.uniform(8, 15, 5)
    with open(os.path.join(HERE, "regression.csv"), "w") as fh:
        fh.write("pred,target\n")
        for a, b in zip(pred, target):
            fh.write(f"{a:.5f},{b:.5f}\n")


if __name__ == "__main__":
    main()
