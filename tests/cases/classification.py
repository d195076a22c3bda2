"""Reference cases: classification losses."""

from __future__ import annotations

import math

import numpy as np

from cases.common import Case


def _lsm(row):
    m = max(row)
    lse = m + math.log(math.fsum(math.exp(v - m) for v in row))
    return [v - lse for v in row]


def _ce_make(rng, p):
    n, c = 23, 5
    x = rng.normal(size=(n, c)) * 3
    if p.get("_soft"):
        return [x, rng.dirichlet(np.ones(c), size=n)]
    y = rng.integers(0, c, size=n)
    y[::7] = -100
    return [x, y]


def _ce_ref(arrays, p):
    x, y = arrays
    w = p.get("weight")
    eps = p.get("label_smoothing", 0.0)
    out = []
    for i, row in enumerate(x.tolist()):
        c = len(row)
        lsm = _lsm(row)
        wk = [1.0] * c if w is None else list(w)
        if y.ndim == 2:
            t = [(1 - eps) * v + eps / c for v in y[i].tolist()]
            out.append(-math.fsum(wk[k] * t[k] * lsm[k] for k in range(c)))
        elif y[i] == -100:
            out.append(0.0)
        else:
            t = int(y[i])
            out.append((1 - eps) * -wk[t] * lsm[t] + eps / c * -math.fsum(wk[k] * lsm[k] for k in range(c)))
    return out


def _bce_make(rng, p):
    shape = (31,) if not p.get("pos_weight") or isinstance(p["pos_weight"], float) else (31, 3)
    if p.get("pred_kind") == "probs":
        return [rng.uniform(0.01, 0.99, size=shape), rng.random(shape)]
    return [rng.normal(size=shape) * 5, rng.random(shape)]


def _bce_ref(arrays, p):
    x, y = arrays
    pw = p.get("pos_weight", 1.0)
    w = p.get("weight") or 1.0

    def one(v, t, pwk, wk):
        if p.get("pred_kind") == "probs":
            return -wk * (pwk * t * max(math.log(v), -100) + (1 - t) * max(math.log(1 - v), -100))
        log_sig = -math.log1p(math.exp(-v)) if v >= 0 else v - math.log1p(math.exp(v))
        log_sig_neg = -math.log1p(math.exp(v)) if v <= 0 else -v - math.log1p(math.exp(-v))
        return -wk * (pwk * t * log_sig + (1 - t) * log_sig_neg)

    if x.ndim == 1:
        return [one(a, b, pw, w) for a, b in zip(x.tolist(), y.tolist())]
    out = []
    for row, trow in zip(x.tolist(), y.tolist()):
        k = len(row)
        pwl = pw if isinstance(pw, list) else [pw] * k
        wl = w if isinstance(w, list) else [w] * k
        out.append(math.fsum(one(row[j], trow[j], pwl[j], wl[j]) for j in range(k)) / k)
    return out


CASES = {
    "cross-entropy": Case(
        make=_ce_make,
        reference=_ce_ref,
        params=[
            {},
            {"weight": [0.5, 1.0, 2.0, 1.5, 0.1]},
            {"label_smoothing": 0.15, "weight": [0.5, 1.0, 2.0, 1.5, 0.1]},
            {"_soft": True},
            {"_soft": True, "label_smoothing": 0.2},
        ],
    ),
    "binary-cross-entropy": Case(
        make=_bce_make,
        reference=_bce_ref,
        params=[
            {},
            {"pos_weight": 2.5},
            {"pos_weight": [1.0, 3.0, 0.5], "weight": [2.0, 1.0, 0.5]},
            {"pred_kind": "probs"},
        ],
    ),
}
