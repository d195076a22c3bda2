"""Reference case: hinge (torch.nn.functional.multi_margin_loss), plain-Python float64 loops."""

from __future__ import annotations

import math

import numpy as np

from cases.common import Case

N, C = 29, 5
WEIGHT = [0.5, 2.0, 1.0, 0.0, 3.25]


def hinge_reference(x, y, p=1, margin=1.0, weight=None) -> list[float]:
    """(1/C) Σ_{i≠y} w[y] · max(0, margin - x_y + x_i)^p per row, one term at a time with fsum."""
    out = []
    for row, t in zip(np.asarray(x, dtype=np.float64).tolist(), np.asarray(y).tolist()):
        t = int(t)
        w = 1.0 if weight is None else float(weight[t])
        terms = []
        for i, v in enumerate(row):
            if i == t:
                continue
            z = margin - row[t] + v
            if z > 0:
                terms.append(w * (z if int(p) == 1 else z * z))
        out.append(math.fsum(terms) / len(row))
    return out


def _make(rng, p):
    x = rng.normal(size=(N, C)) * 1.5
    y = rng.integers(0, C, size=N)
    return [x, y]


def _make_away_from_kinks(rng, p):
    """Scores whose every margin term z = margin - x_y + x_i is at least 0.05 away from 0, so that
    central differences never straddle a kink."""
    margin = float(p.get("margin", 1.0))
    x, y = _make(rng, p)
    for n in range(N):
        while True:
            z = margin - x[n, y[n]] + x[n]
            z[y[n]] = 1.0
            if np.all(np.abs(z) > 0.05):
                break
            x[n] = rng.normal(size=C) * 1.5
    return [x, y]


def _ref(arrays, p):
    x, y = arrays
    return hinge_reference(x, y, p.get("p", 1), p.get("margin", 1.0), p.get("weight"))


_PARAMS = [
    {},
    {"p": "2"},
    {"margin": 0.25},
    {"margin": -0.5, "p": "2"},
    {"weight": WEIGHT},
    {"weight": WEIGHT, "p": "2", "margin": 2.0},
]

CASES = {
    "hinge": Case(
        make=_make,
        reference=_ref,
        params=_PARAMS,
        grad_make=_make_away_from_kinks,
    ),
}
