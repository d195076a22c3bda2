"""numexpr as a fused kernel for lossctl? Measures MSE and Huber (20,000,000 float32 pairs) and
cross-entropy (1,000,000 x 100 float32 logits) three ways, in the same run, alternating order:
lossctl's NumPy kernels (float64 per-sample values), numexpr evaluating the same float64 formula
(float32 inputs widened inside numexpr's blocks by adding a float64 zero, exact), and PyTorch CPU
(``reduction="mean"``). Prints medians and whether numexpr's per-sample values are bit-identical
to lossctl's.

    pip install numexpr torch && python benchmarks/numexpr_kernels.py [--reps 5]

numexpr has no row-wise reduction, so its cross-entropy computes only exp(x - max) fused and
leaves the row sums, log and gather to NumPy.
"""

from __future__ import annotations

import argparse
import os
import statistics
import time

import numpy as np


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--reps", type=int, default=5)
    args = ap.parse_args()
    import numexpr as ne
    import torch
    import torch.nn.functional as F

    from lossctl.losses import classification as C
    from lossctl.losses import regression as R

    torch.set_num_threads(os.cpu_count() or 1)
    ne.set_num_threads(os.cpu_count() or 1)
    rng = np.random.default_rng(0)
    n = 20_000_000
    p, t = rng.standard_normal(n, dtype=np.float32), rng.standard_normal(n, dtype=np.float32)
    nc, c = 1_000_000, 100
    x = rng.standard_normal((nc, c), dtype=np.float32) * 3
    y = rng.integers(0, c, nc)
    z = np.zeros(1)  # a float64 operand: numexpr then computes in float64, block by block
    tp, tt, tx, ty = (torch.from_numpy(a) for a in (p, t, x, y))
    env = {"a": p, "b": t, "z": z}

    def ne_ce():
        m = x.max(axis=1)[:, None]
        e = ne.evaluate("exp((x + z) - m)", local_dict={"x": x, "m": m, "z": z})
        return (m[:, 0] + np.log(e.sum(axis=1))) - x[np.arange(nc), y]

    cases = {
        "mse": {
            "lossctl": lambda: R.mse(p, t).loss,
            "numexpr": lambda: ne.evaluate("((a + z) - b) ** 2", local_dict=env),
            "torch": lambda: F.mse_loss(tp, tt),
        },
        "huber": {
            "lossctl": lambda: R.huber(p, t).loss,
            "numexpr": lambda: ne.evaluate(
                "where(abs((a + z) - b) <= 1.0, 0.5 * ((a + z) - b) ** 2, abs((a + z) - b) - 0.5)", local_dict=env
            ),
            "torch": lambda: F.huber_loss(tp, tt),
        },
        "cross-entropy": {
            "lossctl": lambda: C.cross_entropy(x, y).loss,
            "numexpr": ne_ce,
            "torch": lambda: F.cross_entropy(tx, ty),
        },
    }
    for name, fns in cases.items():
        for f in fns.values():
            f()
        res: dict[str, list[float]] = {k: [] for k in fns}
        names = list(fns)
        for i in range(args.reps):
            for k in names[i % 3 :] + names[: i % 3]:
                a = time.perf_counter()
                fns[k]()
                res[k].append(time.perf_counter() - a)
        med = {k: statistics.median(v) for k, v in res.items()}
        same = np.array_equal(np.asarray(fns["lossctl"]()), np.asarray(fns["numexpr"]()))
        print(
            f"{name:<14}" + "  ".join(f"{k} {v * 1e3:7.1f} ms" for k, v in med.items())
            + f"   torch/lossctl {med['torch'] / med['lossctl']:.2f}x  torch/numexpr {med['torch'] / med['numexpr']:.2f}x"
            + f"   numexpr bit-identical: {same}",
            flush=True,
        )


if __name__ == "__main__":
    main()
