"""Reference cases: distillation, ppo-clip, policy-kl.

References are plain Python float64 loops (math.fsum; log-softmax written out),
and for policy-kl's k3 estimator 50-digit decimal arithmetic, so they share no
code with the kernels.
"""

from __future__ import annotations

import math
from decimal import Decimal, localcontext

import numpy as np

from cases.common import Case
from conftest import ref_log_softmax as _lsm
from lossctl.ragged import Ragged


# ---------------------------------------------------------------------------
# distillation
# ---------------------------------------------------------------------------


def _kd_make(rng, p):
    n, c = 21, 7
    t = rng.normal(size=(n, c)) * 3
    s = 0.6 * t + rng.normal(size=(n, c)) * 2
    y = None if p.get("_nolabels") else rng.integers(0, c, size=n)
    return [s, t, y]


def _kd_ref(arrays, p):
    s, t, y = arrays
    temp = p.get("temperature", 2.0)
    alpha = 1.0 if y is None else p.get("alpha", 0.5)
    out = []
    for i, (srow, trow) in enumerate(zip(s.tolist(), t.tolist())):
        lt = _lsm([v / temp for v in trow])
        ls = _lsm([v / temp for v in srow])
        kl = math.fsum(math.exp(a) * (a - b) for a, b in zip(lt, ls))
        val = alpha * temp * temp * kl
        if y is not None:
            val += (1 - alpha) * -_lsm(srow)[int(y[i])]
        out.append(val)
    return out


# ---------------------------------------------------------------------------
# ppo-clip
# ---------------------------------------------------------------------------


def _ppo_make(rng, p):
    n = 64
    old = -rng.exponential(2.0, size=n)
    new = old + rng.normal(0.0, 0.4, size=n)
    adv = rng.normal(size=n)
    adv[::9] = 0.0
    return [new, old, adv]


def _ppo_grad_make(rng, p):
    """Ratios at least 1e-4 away from the kinks 1 ± ε (finite differences step 1e-6)."""
    new, old, adv = _ppo_make(rng, p)
    eps = p.get("clip", 0.2)
    r = np.exp(new - old)
    near = (np.abs(r - (1 - eps)) < 1e-4) | (np.abs(r - (1 + eps)) < 1e-4)
    new[near] += 0.01
    return [new, old, adv]


def _ppo_ref(arrays, p):
    eps = p.get("clip", 0.2)
    out = []
    for a, b, adv in zip(*(x.tolist() for x in arrays)):
        r = math.exp(a - b)
        out.append(-min(r * adv, min(max(r, 1 - eps), 1 + eps) * adv))
    return out


# ---------------------------------------------------------------------------
# policy-kl
# ---------------------------------------------------------------------------


def _pkl_make(rng, p):
    n = 19
    if p.get("_flat"):
        lr = -rng.exponential(1.5, size=n)
        lp = np.minimum(lr + rng.normal(0.0, 0.5, size=n), -1e-3)
        return [lp, lr]
    lengths = rng.integers(0, 9, size=n)
    lengths[3] = 0  # an empty sequence
    rows_p, rows_r = [], []
    for t in lengths:
        lr = -rng.exponential(1.5, size=t)
        lp = np.minimum(lr + rng.normal(0.0, 0.5, size=t), -1e-3)
        rows_p.append(lp)
        rows_r.append(lr)
    return [Ragged.from_lists(rows_p), Ragged.from_lists(rows_r)]


def _rows(x):
    if isinstance(x, Ragged):
        return x.tolist()
    return [[v] for v in np.asarray(x).tolist()]


def _k3_decimal(lp: float, lr: float) -> float:
    with localcontext() as ctx:
        ctx.prec = 50
        rho = (Decimal(lr) - Decimal(lp)).exp()
        return float((rho - 1) - rho.ln())


def _pkl_ref(arrays, p):
    est = p.get("estimator", "k1")
    out = []
    for rp, rr in zip(_rows(arrays[0]), _rows(arrays[1])):
        if est == "k1":
            terms = [a - b for a, b in zip(rp, rr)]
        elif est == "k2":
            terms = [0.5 * (a - b) ** 2 for a, b in zip(rp, rr)]
        else:
            terms = [_k3_decimal(a, b) for a, b in zip(rp, rr)]
        out.append(math.fsum(terms))
    return out


CASES = {
    "distillation": Case(
        make=_kd_make,
        reference=_kd_ref,
        params=[
            {},
            {"temperature": 1.0, "alpha": 0.3},
            {"temperature": 5.0, "alpha": 0.9},
            {"alpha": 0.0},
            {"alpha": 1.0, "temperature": 0.5},
            {"_nolabels": True},
            {"_nolabels": True, "temperature": 3.0, "alpha": 0.2},
        ],
    ),
    "ppo-clip": Case(
        make=_ppo_make,
        reference=_ppo_ref,
        params=[{}, {"clip": 0.1}, {"clip": 0.5}],
        grad_make=_ppo_grad_make,
    ),
    "policy-kl": Case(
        make=_pkl_make,
        reference=_pkl_ref,
        params=[
            {},
            {"estimator": "k2"},
            {"estimator": "k3"},
            {"_flat": True},
            {"_flat": True, "estimator": "k3"},
        ],
        rtol=1e-12,
        atol=1e-14,
    ),
}
