"""Reference cases: classification losses."""

from __future__ import annotations

import math

import numpy as np

from cases.common import Case
from conftest import ref_log_softmax as _lsm


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


# ---------------------------------------------------------------------------
# nll, focal, softmax-focal, entropy, token-cross-entropy
# ---------------------------------------------------------------------------


def _nll_make(rng, p):
    n, c = 21, 4
    x = rng.normal(size=(n, c)) * 2
    lp = np.array([_lsm(r) for r in x.tolist()])
    y = rng.integers(0, c, size=n)
    y[::5] = p.get("ignore_index", -100)
    return [lp, y]


def _nll_ref(arrays, p):
    lp, y = arrays
    w = p.get("weight")
    ig = p.get("ignore_index", -100)
    return [0.0 if t == ig else -(1.0 if w is None else w[t]) * row[t] for row, t in zip(lp.tolist(), y.tolist())]


def _log_sig(v):
    return -math.log1p(math.exp(-v)) if v >= 0 else v - math.log1p(math.exp(v))


def _focal_one(v, t, alpha, gamma):
    # torchvision: p = σ(x); ce = BCEWithLogits; p_t = p·y + (1-p)(1-y); ce·(1-p_t)^γ·α_t
    p = math.exp(_log_sig(v))
    ce = -(t * _log_sig(v) + (1 - t) * _log_sig(-v))
    one_m_pt = t * math.exp(_log_sig(-v)) + (1 - t) * p
    out = ce * one_m_pt**gamma
    if alpha >= 0:
        out *= alpha * t + (1 - alpha) * (1 - t)
    return out


def _focal_make(rng, p):
    shape = (29, 3) if p.get("_multi") else (29,)
    x = rng.normal(size=shape) * 4
    y = rng.random(shape) if p.get("_soft") else (rng.random(shape) < 0.3).astype(float)
    return [x, y]


def _focal_ref(arrays, p):
    x, y = arrays
    a, g = p.get("alpha", 0.25), p.get("gamma", 2.0)
    if x.ndim == 1:
        return [_focal_one(v, t, a, g) for v, t in zip(x.tolist(), y.tolist())]
    return [math.fsum(_focal_one(v, t, a, g) for v, t in zip(r, tr)) / len(r) for r, tr in zip(x.tolist(), y.tolist())]


def _sfocal_make(rng, p):
    n, c = 25, 5
    return [rng.normal(size=(n, c)) * 3, rng.integers(0, c, size=n)]


def _sfocal_ref(arrays, p):
    x, y = arrays
    a, g = p.get("alpha"), p.get("gamma", 2.0)
    out = []
    for row, t in zip(x.tolist(), y.tolist()):
        lp = _lsm(row)[t]
        out.append(-(1.0 if a is None else a[t]) * (1 - math.exp(lp)) ** g * lp)
    return out


def _entropy_make(rng, p):
    n, c = 17, 6
    x = rng.normal(size=(n, c)) * 2
    kind = p.get("pred_kind", "logits")
    if kind == "logits":
        return [x]
    lp = np.array([_lsm(r) for r in x.tolist()])
    if p.get("_zeros"):
        # exact zeros (0 log 0 = 0): renormalised rows with two classes at probability 0
        pr = np.exp(lp)
        pr[::3, :2] = 0.0
        pr /= pr.sum(axis=1, keepdims=True)
        return [pr if kind == "probs" else np.log(np.where(pr > 0, pr, 1.0)) + np.where(pr > 0, 0.0, -np.inf)]
    return [np.exp(lp) if kind == "probs" else lp]


def _entropy_ref(arrays, p):
    (x,) = arrays
    from scipy.stats import entropy as sp_entropy

    kind = p.get("pred_kind", "logits")
    if kind == "logits":
        probs = [[math.exp(v) for v in _lsm(r)] for r in x.tolist()]
    elif kind == "probs":
        probs = x.tolist()
    else:
        probs = np.exp(x).tolist()
    base = p.get("base", math.e)
    # SciPy renormalises; the rows here already sum to 1 within round-off.
    return [float(sp_entropy(r, base=base)) for r in probs]


def _entropy_grad_make(rng, p):
    # Probability inputs away from 0 (the gradient of -p log p is infinite at p = 0).
    n, c = 9, 4
    x = rng.normal(size=(n, c))
    lp = np.array([_lsm(r) for r in x.tolist()])
    kind = p.get("pred_kind", "logits")
    return [x if kind == "logits" else (np.exp(lp) if kind == "probs" else lp)]


def _tok_make(rng, p):
    from lossctl.ragged import Ragged

    if p.get("_ragged"):
        lengths = rng.integers(0, 9, size=13)
        lengths[1] = 0
        rows = [-rng.gamma(0.7, 1.5, size=int(t)) for t in lengths]
        return [Ragged.from_lists(rows), None]
    n, t, v = 7, 6, 5
    x = rng.normal(size=(n, t, v)) * 3
    y = rng.integers(0, v, size=(n, t))
    ig = p.get("ignore_index", -100)
    y[rng.random((n, t)) < 0.25] = ig
    y[2] = ig  # a sequence with no tokens: an ignored row
    return [x, y]


def _tok_ref(arrays, p):
    pred, y = arrays
    if y is None:
        out = []
        for i in range(len(pred)):
            r = pred.row(i).tolist()
            out.append(-math.fsum(r) / len(r) if r else 0.0)
        return out
    ig = p.get("ignore_index", -100)
    out = []
    for seq, lab in zip(pred.tolist(), y.tolist()):
        terms = [-_lsm(row)[t] for row, t in zip(seq, lab) if t != ig]
        out.append(math.fsum(terms) / len(terms) if terms else 0.0)
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
    "nll": Case(
        make=_nll_make,
        reference=_nll_ref,
        params=[{}, {"weight": [0.5, 2.0, 1.0, 3.0]}, {"ignore_index": 2, "weight": [1.0, 1.0, 0.2, 4.0]}],
    ),
    "focal": Case(
        make=_focal_make,
        reference=_focal_ref,
        params=[
            {},
            {"alpha": -1.0},
            {"alpha": 0.6, "gamma": 0.5},
            {"gamma": 0.0, "alpha": 0.9},
            {"gamma": 3.0, "_soft": True},
            {"_multi": True},
            {"_multi": True, "_soft": True, "alpha": -1.0, "gamma": 1.5},
        ],
    ),
    "softmax-focal": Case(
        make=_sfocal_make,
        reference=_sfocal_ref,
        params=[{}, {"gamma": 0.0}, {"gamma": 0.5}, {"alpha": [0.25, 1.0, 0.5, 2.0, 0.75], "gamma": 3.0}],
    ),
    "entropy": Case(
        make=_entropy_make,
        reference=_entropy_ref,
        params=[
            {},
            {"base": 2.0},
            {"pred_kind": "probs"},
            {"pred_kind": "probs", "_zeros": True, "base": 10.0},
            {"pred_kind": "log-probs"},
            {"pred_kind": "log-probs", "_zeros": True},
        ],
        grad_make=_entropy_grad_make,
        grad_params=[{}, {"base": 2.0}, {"pred_kind": "probs"}, {"pred_kind": "log-probs", "base": 3.0}],
    ),
    "token-cross-entropy": Case(
        make=_tok_make,
        reference=_tok_ref,
        params=[{}, {"ignore_index": 0}, {"_ragged": True}],
    ),
}
