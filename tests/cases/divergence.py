"""Reference cases: divergences (kl-divergence, js-divergence, gaussian-kl).

The references are independent of the kernels: per-row Python loops with
math.fsum over scipy.special.rel_entr for KL, scipy.spatial.distance.jensenshannon
(squared) for JS, and for Gaussians a direct loop over dimensions (diagonal) or
numpy.linalg.inv / slogdet per row (full covariance; the kernel uses Cholesky).
"""

from __future__ import annotations

import math

import numpy as np
from scipy.spatial.distance import jensenshannon
from scipy.special import rel_entr

from cases.common import Case
from conftest import ref_log_softmax as _lsm


def _encode(probs: np.ndarray, kind: str, rng) -> np.ndarray:
    """Probability rows as the given kind (logits: log p plus a per-row constant)."""
    with np.errstate(divide="ignore"):
        lp = np.log(probs)
    if kind == "probs":
        return probs
    if kind == "log-probs":
        return lp
    return lp + rng.normal(size=(len(probs), 1)) * 3  # logits: softmax undoes the shift


def _decode(x: np.ndarray, kind: str) -> list[list[float]]:
    """Rows as probability lists, computed with plain Python."""
    out = []
    for row in np.asarray(x, dtype=np.float64).tolist():
        if kind == "probs":
            out.append(row)
        elif kind == "log-probs":
            out.append([math.exp(v) for v in row])
        else:
            out.append([math.exp(v) for v in _lsm(row)])
    return out


def _dist_make(rng, p):
    n, c = 29, 6
    tk = p.get("target_kind", "probs")
    pk = p.get("pred_kind", "logits")
    P = rng.dirichlet(np.ones(c) * 0.8, size=n)
    Q = rng.dirichlet(np.ones(c) * 0.8, size=n)
    if p.get("_zeros"):  # exact zeros in the target (logits cannot express them)
        P[::3, 0] = 0.0
        P[::5, 1:3] = 0.0
        P[4] = np.eye(c)[2]  # a one-hot row: probability exactly 1
        P /= P.sum(axis=1, keepdims=True)
    if p.get("_floor"):  # gradient checks: Q away from 0 so central differences stay accurate
        Q = 0.7 * Q + 0.3 / c
    if p.get("_qzeros"):  # zeros in the prediction where the target has mass: inf (forward)
        Q[::4, 5] = 0.0
        Q /= Q.sum(axis=1, keepdims=True)
    if pk == "logits":
        return [rng.normal(size=(n, c)) * 2.5, _encode(P, tk, rng)]
    return [_encode(Q, pk, rng), _encode(P, tk, rng)]


def _grad_make(rng, p):
    return _dist_make(rng, {**p, "_floor": True})


def _kl_ref(arrays, p):
    Q = _decode(arrays[0], p.get("pred_kind", "logits"))
    P = _decode(arrays[1], p.get("target_kind", "probs"))
    if p.get("direction") == "reverse":
        P, Q = Q, P
    lb = math.log(p.get("base", math.e))
    return [math.fsum(rel_entr(a, b) for a, b in zip(pr, qr)) / lb for pr, qr in zip(P, Q)]


def _js_ref(arrays, p):
    Q = _decode(arrays[0], p.get("pred_kind", "logits"))
    P = _decode(arrays[1], p.get("target_kind", "probs"))
    base = p.get("base")
    return [float(jensenshannon(pr, qr, base=base)) ** 2 for pr, qr in zip(P, Q)]


# ---------------------------------------------------------------------------
# gaussian-kl
# ---------------------------------------------------------------------------


def _spd(rng, n, d):
    a = rng.normal(size=(n, d, d)) * 0.7
    return a @ np.swapaxes(a, 1, 2) + 0.3 * np.eye(d)


def _gauss_make(rng, p):
    n, d = 17, 4
    mu = rng.normal(size=(n, d)) * 1.5
    full = p.get("_full")
    prior = p.get("_prior")
    logvar = _spd(rng, n, d) if full else rng.normal(size=(n, d))
    out = [mu, logvar, None, None]
    if prior:
        out[2] = rng.normal(size=(n, d))
        out[3] = _spd(rng, n, d) if prior == "full" else rng.normal(size=(n, d)) * 0.8
    return out


def _cov(v):
    """A row's covariance matrix from a log-variance vector or a matrix."""
    v = np.asarray(v, dtype=np.float64)
    return np.diag(np.exp(v)) if v.ndim == 1 else v


def _gauss_ref(arrays, p):
    mu, lv, pmu, plv = arrays
    n, d = mu.shape
    out = []
    for i in range(n):
        mq = mu[i].tolist()
        mp = [0.0] * d if pmu is None else pmu[i].tolist()
        if (lv.ndim == 2) and (plv is None or plv.ndim == 2):
            lq = lv[i].tolist()
            lp = [0.0] * d if plv is None else plv[i].tolist()
            if p.get("direction") == "reverse":
                mq, mp, lq, lp = mp, mq, lp, lq
            # ½ Σ [log σp² - log σq² + (σq² + (μq - μp)²)/σp² - 1], σ² = exp(logvar)
            terms = [lp[k] - lq[k] + (math.exp(lq[k]) + (mq[k] - mp[k]) ** 2) / math.exp(lp[k]) - 1.0 for k in range(d)]
            out.append(0.5 * math.fsum(terms))
            continue
        sq = _cov(lv[i])
        sp = np.eye(d) if plv is None else _cov(plv[i])
        mq_, mp_ = np.array(mq), np.array(mp)
        if p.get("direction") == "reverse":
            mq_, mp_, sq, sp = mp_, mq_, sp, sq
        inv = np.linalg.inv(sp)
        diff = mp_ - mq_
        _, ldp = np.linalg.slogdet(sp)
        _, ldq = np.linalg.slogdet(sq)
        out.append(0.5 * (float(np.trace(inv @ sq)) + float(diff @ inv @ diff) - d + ldp - ldq))
    return out


CASES = {
    "kl-divergence": Case(
        make=_dist_make,
        reference=_kl_ref,
        params=[
            {},
            {"_zeros": True},
            {"_zeros": True, "_qzeros": True, "pred_kind": "probs"},
            {"pred_kind": "probs", "base": 2.0},
            {"pred_kind": "log-probs", "target_kind": "log-probs", "_zeros": True},
            {"target_kind": "logits"},
            {"target_kind": "logits", "pred_kind": "probs", "_qzeros": True},
            {"direction": "reverse"},
            {"direction": "reverse", "pred_kind": "probs", "target_kind": "logits", "_qzeros": True},
            {"direction": "reverse", "pred_kind": "log-probs", "_zeros": True, "base": 10.0},
        ],
        rtol=1e-10,
        atol=1e-13,
        grad_make=_grad_make,
        # Away from zeros in Q (a probability moved below 0 would be rejected) and, for reverse,
        # zeros in P (the gradient is infinite there).
        grad_params=[
            {},
            {"_zeros": True},
            {"_zeros": True, "pred_kind": "probs"},
            {"pred_kind": "log-probs", "_zeros": True, "base": 2.0},
            {"target_kind": "logits", "pred_kind": "probs"},
            {"direction": "reverse"},
            {"direction": "reverse", "pred_kind": "probs", "base": 2.0},
            {"direction": "reverse", "pred_kind": "log-probs", "target_kind": "log-probs"},
        ],
    ),
    "js-divergence": Case(
        make=_dist_make,
        reference=_js_ref,
        params=[
            {},
            {"_zeros": True, "pred_kind": "probs"},
            {"_zeros": True, "_qzeros": True, "pred_kind": "probs", "base": 2.0},
            {"pred_kind": "log-probs", "target_kind": "log-probs", "_zeros": True},
            {"target_kind": "logits", "base": 2.0},
        ],
        rtol=1e-9,
        atol=1e-13,
        grad_make=_grad_make,
        grad_params=[
            {},
            {"_zeros": True},
            {"_zeros": True, "pred_kind": "probs", "base": 2.0},
            {"pred_kind": "log-probs", "target_kind": "logits"},
        ],
    ),
    "gaussian-kl": Case(
        make=_gauss_make,
        reference=_gauss_ref,
        params=[
            {},
            {"direction": "reverse"},
            {"_prior": "diag"},
            {"_prior": "diag", "direction": "reverse"},
            {"_full": True},
            {"_full": True, "direction": "reverse"},
            {"_full": True, "_prior": "full"},
            {"_full": True, "_prior": "full", "direction": "reverse"},
            {"_prior": "full"},
            {"_full": True, "_prior": "diag", "direction": "reverse"},
        ],
        rtol=1e-9,
        atol=1e-12,
    ),
}
