"""Generative-model losses: the VAE negative ELBO (Kingma & Welling 2014).

Per sample::

    l_n = Σ_d recon(x_nd, x̂_nd) + β · ½ Σ_z (μ_nz² + σ_nz² - log σ_nz² - 1),   σ² = exp(logvar)

with ``recon`` the squared error ``(x - x̂)²`` (``mse``) or the binary
cross-entropy of logits ``x̂`` against targets ``x`` in [0, 1] (``bce``). The
second term is β · KL(N(μ, diag σ²) ‖ N(0, I)). Sums run over the feature and
latent axes; the headline is the mean over samples (the usual per-batch
average of the summed per-sample loss). Computed in float64.
"""

from __future__ import annotations

import math

import numpy as np

from lossctl.errors import InputError, ParamError
from lossctl.losses import Result
from lossctl.losses._common import as_rows, check_finite, check_unit_interval, match_shape, sigmoid, softplus

RECONSTRUCTIONS = ("mse", "bce")


def _inputs(recon, target, mu, logvar, reconstruction: str, beta: float):
    if reconstruction not in RECONSTRUCTIONS:
        raise ParamError(
            "reconstruction", f"--reconstruction must be one of {', '.join(RECONSTRUCTIONS)}; got {reconstruction!r}"
        )
    beta = float(beta)
    if not (beta >= 0.0 and math.isfinite(beta)):
        raise ParamError("beta", f"--beta must be a finite number >= 0; got {beta!r}")
    xh = as_rows(recon, "recon", "the reconstruction")
    x = as_rows(target, "target", "the target")
    m = as_rows(mu, "mu", "mu")
    lv = as_rows(logvar, "logvar", "logvar")
    match_shape(xh, x, "target", "the reconstruction")
    match_shape(m, lv, "logvar", "mu")
    if len(m) != len(xh):
        raise InputError("mu", f"{len(m)} rows for {len(xh)} reconstructions", [], expected="one latent row per sample")
    check_finite(xh, "recon", "logits" if reconstruction == "bce" else "reconstructions")
    check_finite(x, "target", "targets")
    check_finite(m, "mu", "latent means")
    check_finite(lv, "logvar", "latent log-variances")
    if reconstruction == "bce":
        check_unit_interval(x, "target", "targets (with --reconstruction bce)")
    return xh, x, m, lv, beta


def vae(
    recon: np.ndarray,
    target: np.ndarray,
    mu: np.ndarray,
    logvar: np.ndarray,
    *,
    reconstruction: str = "mse",
    beta: float = 1.0,
) -> Result:
    """Negative ELBO per sample; components ``reconstruction`` and ``kl`` (β-weighted) sum to it."""
    xh, x, m, lv, beta = _inputs(recon, target, mu, logvar, reconstruction, beta)
    if reconstruction == "mse":
        rec = ((x - xh) ** 2).sum(axis=1)
    else:
        # -[x log σ(x̂) + (1-x) log(1-σ(x̂))] = x·softplus(-x̂) + (1-x)·softplus(x̂): no cancellation
        rec = (x * softplus(-xh) + (1.0 - x) * softplus(xh)).sum(axis=1)
    # e^lv - lv - 1 = expm1(lv) - lv (exact near lv = 0); overflows to +inf for lv > ~709
    with np.errstate(over="ignore"):
        kl = 0.5 * (m * m + (np.expm1(lv) - lv)).sum(axis=1)
    kl_w = beta * kl if beta != 0.0 else np.zeros_like(kl)
    return Result(loss=rec + kl_w, components={"reconstruction": rec, "kl": kl_w})


def vae_grad(
    recon: np.ndarray,
    target: np.ndarray,
    mu: np.ndarray,
    logvar: np.ndarray,
    *,
    reconstruction: str = "mse",
    beta: float = 1.0,
) -> np.ndarray:
    """``∂l/∂x̂``: ``2(x̂ - x)`` (mse) or ``σ(x̂) - x`` (bce, logits); the KL term does not depend on x̂."""
    xh, x, _, _, _ = _inputs(recon, target, mu, logvar, reconstruction, beta)
    g = 2.0 * (xh - x) if reconstruction == "mse" else sigmoid(xh) - x
    return g.reshape(np.shape(recon))
