"""Reference cases: calibration (ece per-sample gaps, brier)."""

from __future__ import annotations

import math

import numpy as np

from cases.common import Case
from conftest import ref_log_softmax as _lsm


def _make(rng, p):
    n, c = 23, 4
    if p.get("_binary"):
        x = rng.normal(size=n) * 2
        y = (rng.random(n) < 0.5).astype(np.int64)
        return [x if p.get("pred_kind", "logits") == "logits" else 1 / (1 + np.exp(-x)), y]
    x = rng.normal(size=(n, c)) * 2
    y = rng.integers(0, c, size=n)
    if p.get("pred_kind") == "probs":
        x = np.exp(np.array([_lsm(r) for r in x.tolist()]))
    return [x, y]


def _probs(x, kind):
    if x.ndim == 1:
        return [v if kind == "probs" else 1 / (1 + math.exp(-v)) for v in x.tolist()]
    if kind == "probs":
        return x.tolist()
    return [[math.exp(v) for v in _lsm(r)] for r in x.tolist()]


def _ece_ref(arrays, p):
    x, y = arrays
    q = _probs(x, p.get("pred_kind", "logits"))
    out = []
    for row, t in zip(q, y.tolist()):
        if x.ndim == 1:
            out.append(abs(row - t))
        else:
            top = max(range(len(row)), key=lambda k: row[k])
            out.append(abs(row[top] - (1.0 if top == t else 0.0)))
    return out


def _brier_ref(arrays, p):
    x, y = arrays
    q = _probs(x, p.get("pred_kind", "logits"))
    out = []
    for row, t in zip(q, y.tolist()):
        if x.ndim == 1:
            out.append((row - t) ** 2)
        else:
            out.append(math.fsum((v - (1.0 if k == t else 0.0)) ** 2 for k, v in enumerate(row)))
    return out


CASES = {
    "ece": Case(
        make=_make,
        reference=_ece_ref,
        params=[{}, {"pred_kind": "probs"}, {"_binary": True}, {"_binary": True, "pred_kind": "probs"}],
        grad_params=[{}, {"_binary": True}],
    ),
    "brier": Case(
        make=_make,
        reference=_brier_ref,
        params=[{}, {"pred_kind": "probs"}, {"_binary": True}, {"_binary": True, "pred_kind": "probs"}],
        grad_params=[{}, {"_binary": True}],
    ),
}
