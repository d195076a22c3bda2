"""Gaussian KL divergence (closed form, Kingma & Welling 2014, appendix B): diagonal or full
covariances, against a standard-normal or a given Gaussian prior.

Shapes use N for rows (samples) and D for dimensions. The kernel returns per-sample float64
values of shape ``[N]``. The discrete divergences (KL, Jensen-Shannon) are in ``divergence``.
"""

from __future__ import annotations

import math

from lossctl.losses._lazy import lazy

from lossctl.errors import InputError
from lossctl.losses import Result
from lossctl.losses._common import as_float, check_finite, first_rows
from lossctl.losses.spec import loss, Param, Role
from lossctl.losses.divergence import _check_direction

np = lazy(globals())  # NumPy is imported on first use (lossctl/losses/_lazy.py)


# ---------------------------------------------------------------------------
# gaussian-kl
# ---------------------------------------------------------------------------


def expm1_minus_x(t: np.ndarray) -> np.ndarray:
    """exp(t) - 1 - t, accurate near 0 (Taylor series for |t| < 0.01, expm1 elsewhere)."""
    t = np.asarray(t, dtype=np.float64)
    with np.errstate(over="ignore", invalid="ignore"):
        out = np.expm1(t) - t
    small = np.abs(t) < 1e-2
    if small.any():
        ts = t[small]
        # t²/2 + t³/6 + ... + t⁸/8!: truncation error below 1e-20 relative to t²/2.
        acc = np.full_like(ts, 1.0 / 40320.0)
        for k in (5040.0, 720.0, 120.0, 24.0, 6.0, 2.0):
            acc = acc * ts + 1.0 / k
        out[small] = acc * ts * ts
    return out


def _as_matrix(x, role: str, n: int | None = None, d: int | None = None) -> np.ndarray:
    """(N,) or (N, D) values as a float64 (N, D) array; finite."""
    a = np.asarray(as_float(np.asarray(x)), dtype=np.float64)
    if a.ndim == 1:
        a = a[:, None]
    if a.ndim != 2:
        raise InputError(role, f"expected (N, D) values; got shape {a.shape}", [], expected="an (N, D) array")
    if n is not None and len(a) != n:
        raise InputError(role, f"{len(a)} rows but mu has {n}", [], expected=f"{n} rows, one per sample")
    if d is not None and a.shape[1] != d:
        raise InputError(
            role,
            f"{a.shape[1]} columns but mu has {d} dimensions",
            [],
            expected=f"{d} columns (one per dimension of mu)",
        )
    check_finite(a, role, "values")
    return a


def _variance(x, role: str, n: int, d: int) -> tuple[str, np.ndarray]:
    """("diag", log-variances (N, D)) or ("full", covariance matrices (N, D, D))."""
    a = np.asarray(x)
    if a.ndim == 3:
        if a.shape[1:] != (d, d):
            raise InputError(
                role,
                f"covariance matrices of shape {a.shape[1:]} but mu has {d} dimensions",
                [],
                expected=f"(N, {d}, {d}) covariance matrices",
            )
        if len(a) != n:
            raise InputError(role, f"{len(a)} rows but mu has {n}", [], expected=f"{n} rows, one per sample")
        s = np.asarray(as_float(a), dtype=np.float64)
        check_finite(s, role, "covariance entries")
        _check_symmetric(s, a.dtype, role)
        return "full", 0.5 * (s + np.swapaxes(s, 1, 2))
    return "diag", _as_matrix(a, role, n, d)


def _check_symmetric(s: np.ndarray, dtype, role: str) -> None:
    eps = float(np.finfo(dtype).eps) if np.issubdtype(dtype, np.floating) else float(np.finfo(np.float64).eps)
    scale = np.abs(s).reshape(len(s), -1).max(axis=1, initial=0.0)
    gap = np.abs(s - np.swapaxes(s, 1, 2)).reshape(len(s), -1).max(axis=1, initial=0.0)
    bad = gap > math.sqrt(eps) * np.maximum(scale, np.finfo(np.float64).tiny)
    if bad.any():
        rows = first_rows(bad)
        m = s[rows[0]]
        i, j = np.unravel_index(int(np.argmax(np.abs(m - m.T))), m.shape)
        raise InputError(
            role,
            f"covariance matrix is not symmetric (entry [{i}, {j}] = {m[i, j]:.9g}, entry [{j}, {i}] = {m[j, i]:.9g})",
            rows,
            expected="symmetric positive-definite (N, D, D) covariance matrices",
        )


def _first_failing(s: np.ndarray) -> int:
    """Index of the first matrix on which Cholesky fails (bisection; s fails as a whole)."""
    lo, hi = 0, len(s)
    while hi - lo > 1:
        mid = (lo + hi) // 2
        try:
            np.linalg.cholesky(s[lo:mid])
        except np.linalg.LinAlgError:
            hi = mid
        else:
            lo = mid
    return lo


def _cholesky(s: np.ndarray, role: str) -> np.ndarray:
    try:
        return np.linalg.cholesky(s)
    except np.linalg.LinAlgError:
        pass
    ev = np.linalg.eigvalsh(s)
    bad = ev.min(axis=1) <= 0 if ev.size else np.zeros(len(s), bool)
    rows = first_rows(bad) if bad.any() else [_first_failing(s)]
    lo = float(np.linalg.eigvalsh(s[rows[0]]).min()) if s.shape[1] else 0.0
    raise InputError(
        role,
        f"covariance matrix is not positive definite (smallest eigenvalue {lo:.9g}; Cholesky failed)",
        rows,
        expected="symmetric positive-definite (N, D, D) covariance matrices",
    )


def _full(kind_v: tuple[str, np.ndarray]) -> np.ndarray:
    kind, v = kind_v
    if kind == "full":
        return v
    n, d = v.shape
    out = np.zeros((n, d, d))
    idx = np.arange(d)
    out[:, idx, idx] = np.exp(v)
    return out


def _gaussian_inputs(mu, logvar, prior_mu, prior_logvar, direction):
    reverse = _check_direction(direction)
    mq = _as_matrix(mu, "mu")
    n, d = mq.shape
    vq = _variance(logvar, "logvar", n, d)
    mp = np.zeros_like(mq) if prior_mu is None else _as_matrix(prior_mu, "prior-mu", n, d)
    vp = ("diag", np.zeros_like(mq)) if prior_logvar is None else _variance(prior_logvar, "prior-logvar", n, d)
    roles = ("logvar", "prior-logvar")
    if reverse:  # KL(p ‖ q): p is the first distribution
        return (mp, vp, mq, vq, roles[::-1], reverse)
    return (mq, vq, mp, vp, roles, reverse)


@loss(
    name="gaussian-kl",
    family="divergence",
    summary="Closed-form KL divergence between Gaussians (diagonal or full covariance), e.g. the VAE term.",
    inputs=(
        Role("mu", "(N, D)", "Means of q, one row per sample ((N,) is D = 1)."),
        Role(
            "logvar",
            "(N, D) or (N, D, D)",
            "q's log-variances (N, D) (diagonal covariance), or q's full covariance matrices (N, D, D).",
            ndim=(1, 2, 3),
        ),
        Role(
            "prior-mu",
            "(N, D)",
            "Means of the prior p (default 0).",
            optional=True,
        ),
        Role(
            "prior-logvar",
            "(N, D) or (N, D, D)",
            "The prior's log-variances (N, D) or covariance matrices (N, D, D) (default 0: unit "
            "variance). Diagonal and full inputs may be mixed.",
            ndim=(1, 2, 3),
            optional=True,
        ),
    ),
    params=(
        Param(
            "direction",
            "choice",
            "forward",
            "forward = KL(q ‖ p) (the VAE term); reverse = KL(p ‖ q).",
            choices=("forward", "reverse"),
        ),
    ),
    reference=(
        "torch.distributions.kl_divergence(Normal(mu, exp(½logvar)), Normal(prior_mu, exp(½prior_logvar))).sum(-1) "
        "(MultivariateNormal for full covariances)"
    ),
    formula=(
        "KL(N₁ ‖ N₂), forward: 1 = q, 2 = p; reverse: 1 = p, 2 = q\n"
        "diagonal: l_n = ½ Σ_d [log(σ₂²/σ₁²) + (σ₁² + (μ₁ - μ₂)²)/σ₂² - 1]   (σ² = exp(logvar))\n"
        "full:     l_n = ½ [tr(Σ₂⁻¹Σ₁) + (μ₂ - μ₁)ᵀΣ₂⁻¹(μ₂ - μ₁) - D + log det Σ₂ - log det Σ₁]  (Cholesky)\n"
        "default prior N(0, I): l_n = -½ Σ_d (1 + logvar - μ² - exp(logvar))"
    ),
    headline="the mean over rows of the per-row sums over D (the usual per-sample VAE KL term)",
    gradient="∂l/∂mu = Σ₂⁻¹ (μ_q - μ_p); diagonal: (μ_q - μ_p) / σ₂² (σ₂² the prior's variance for forward, q's for reverse)",
    properties=(
        "Non-negative; zero only when the two Gaussians are identical.",
        "Asymmetric: KL(q ‖ p) ≠ KL(p ‖ q) unless the covariances are equal.",
        "Quadratic in the mean difference; grows without bound as a variance goes to 0.",
        "Computed as expm1(t) - t with t the log-variance difference, so nearly equal variances "
        "keep their digits; full covariances go through Cholesky, and a matrix that is not "
        "symmetric positive definite is an error naming its row.",
    ),
    used_for="VAEs (the regulariser of the ELBO), variational inference, Gaussian policies in RL.",
    activation="none: mu is used as is; the variance is exp(logvar) (or a covariance matrix)",
    paper="Kingma & Welling 2014, Auto-Encoding Variational Bayes, appendix B.",
    example=(
        "sample_data/divergence_gaussian.csv:mu_*",
        "sample_data/divergence_gaussian.csv:logvar_*",
    ),
)
def gaussian_kl(
    mu: np.ndarray,
    logvar: np.ndarray,
    prior_mu: np.ndarray | None = None,
    prior_logvar: np.ndarray | None = None,
    *,
    direction: str = "forward",
) -> Result:
    """Closed-form KL between Gaussians, per row.

    Args:
      mu: means of q, shape ``[N, D]`` (``[N]`` is D = 1).
      logvar: log-variances of q ``[N, D]`` (diagonal covariance), or q's full
        covariance matrices ``[N, D, D]``.
      prior_mu: means of the prior p ``[N, D]``; default 0.
      prior_logvar: log-variances ``[N, D]`` or covariances ``[N, D, D]`` of p;
        default 0 (unit variance). Diagonal and full inputs may be mixed.
      direction: ``forward`` = KL(q ‖ p) (the VAE term), ``reverse`` = KL(p ‖ q).

    Diagonal: ``½ Σ_d [expm1(t) - t + (μ₁ - μ₂)² e^{-lv₂}]``, ``t = lv₁ - lv₂``
    (first distribution 1, second 2), which equals
    ``½ Σ_d [log(σ₂²/σ₁²) + (σ₁² + (μ₁-μ₂)²)/σ₂² - 1]`` without cancellation.
    Full: ``½[tr(Σ₂⁻¹Σ₁) + δᵀΣ₂⁻¹δ - D + log det Σ₂ - log det Σ₁]`` via Cholesky.
    """
    m1, v1, m2, v2, roles, _ = _gaussian_inputs(mu, logvar, prior_mu, prior_logvar, direction)
    d = m1.shape[1]
    delta = m1 - m2
    if v1[0] == "diag" and v2[0] == "diag":
        lv1, lv2 = v1[1], v2[1]
        elem = expm1_minus_x(lv1 - lv2) + delta * delta * np.exp(-lv2)
        return Result(loss=0.5 * elem.sum(axis=1))
    s1, s2 = _full(v1), _full(v2)
    l1 = _cholesky(s1, roles[0])
    l2 = _cholesky(s2, roles[1])
    a = np.linalg.solve(l2, l1)  # L₂⁻¹L₁: tr(Σ₂⁻¹Σ₁) = ‖L₂⁻¹L₁‖_F²
    z = np.linalg.solve(l2, delta[:, :, None])[:, :, 0]
    idx = np.arange(d)
    logdet1 = 2.0 * np.log(l1[:, idx, idx]).sum(axis=1)
    logdet2 = 2.0 * np.log(l2[:, idx, idx]).sum(axis=1)
    tr = (a * a).sum(axis=(1, 2))
    quad = (z * z).sum(axis=1)
    return Result(loss=0.5 * (tr + quad - d + (logdet2 - logdet1)))


def gaussian_kl_grad(
    mu: np.ndarray,
    logvar: np.ndarray,
    prior_mu: np.ndarray | None = None,
    prior_logvar: np.ndarray | None = None,
    *,
    direction: str = "forward",
) -> np.ndarray:
    """∂l_n/∂mu_n = Σ₂⁻¹ (μ_q - μ_p), Σ₂ the covariance of the second distribution
    (the prior's for forward, q's for reverse); diagonal: ``(μ_q - μ_p) · e^{-lv₂}``."""
    m1, v1, m2, v2, roles, reverse = _gaussian_inputs(mu, logvar, prior_mu, prior_logvar, direction)
    dq = (m2 - m1) if reverse else (m1 - m2)  # μ_q - μ_p
    for (kind, v), role in zip((v1, v2), roles):
        if kind == "full":
            _cholesky(v, role)  # same validation as the kernel
    if v2[0] == "diag":
        g = dq * np.exp(-v2[1])
    else:
        g = np.linalg.solve(v2[1], dq[:, :, None])[:, :, 0]
    return g.reshape(np.shape(mu))
