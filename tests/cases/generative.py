"""Reference cases: the VAE negative ELBO.

Reference: plain Python float64 loops with math.fsum; the KL term written as
-½ Σ (1 + logvar - μ² - exp(logvar)) (the form in Kingma & Welling, App. B),
not the kernel's expm1 form; BCE as -[x log σ(z) + (1-x) log(1-σ(z))] with
log σ evaluated branch-wise.
"""

from __future__ import annotations

import math

import numpy as np

from cases.common import Case


def _make(rng, p):
    n, d, z = 17, 6, 3
    x = rng.random((n, d)) if p.get("reconstruction") == "bce" else rng.normal(size=(n, d))
    if p.get("reconstruction") == "bce":
        x[0, :2] = [0.0, 1.0]  # exact 0/1 targets
        recon = rng.normal(size=(n, d)) * 3
    else:
        recon = x + rng.normal(size=(n, d)) * 0.5
    mu = rng.normal(size=(n, z))
    logvar = rng.normal(size=(n, z)) * 1.5
    logvar[1] = 0.0
    mu[1] = 0.0  # KL exactly 0 for this row
    if p.get("_1d"):
        return [recon[:, 0], x[:, 0], mu[:, 0], logvar[:, 0]]
    return [recon, x, mu, logvar]


def _log_sigmoid(z):
    return -math.log1p(math.exp(-z)) if z >= 0 else z - math.log1p(math.exp(z))


def _ref(arrays, p):
    recon, x, mu, logvar = (np.atleast_2d(a.T).T for a in arrays)
    beta = p.get("beta", 1.0)
    out = []
    for r, t, m, lv in zip(recon.tolist(), x.tolist(), mu.tolist(), logvar.tolist()):
        if p.get("reconstruction") == "bce":
            rec = math.fsum(-(ti * _log_sigmoid(ri) + (1 - ti) * _log_sigmoid(-ri)) for ri, ti in zip(r, t))
        else:
            rec = math.fsum((ti - ri) ** 2 for ri, ti in zip(r, t))
        kl = -0.5 * math.fsum(1 + l - mi * mi - math.exp(l) for mi, l in zip(m, lv))
        out.append(rec + beta * kl)
    return out


CASES = {
    "vae": Case(
        make=_make,
        reference=_ref,
        params=[
            {},
            {"beta": 4.0},
            {"reconstruction": "bce"},
            {"reconstruction": "bce", "beta": 0.0},
            {"beta": 0.5, "_1d": True},
        ],
    ),
}
