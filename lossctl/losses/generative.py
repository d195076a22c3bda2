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


from lossctl.losses._lazy import lazy

from lossctl.errors import InputError, opt
from lossctl.losses import Result
from lossctl.losses._common import as_rows, check_finite, check_unit_interval, match_shape, sigmoid, softplus
from lossctl.losses.spec import loss, Param, Role

np = lazy(globals())  # NumPy is imported on first use (lossctl/losses/_lazy.py)

RECONSTRUCTIONS = ("mse", "bce")


def _inputs(recon, target, mu, logvar, reconstruction: str, beta: float):
    if reconstruction not in RECONSTRUCTIONS:
        raise ValueError(f"reconstruction {reconstruction!r} is not one of the declared choices {RECONSTRUCTIONS}")
    beta = float(beta)  # (declared: [0, inf))
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
        check_unit_interval(x, "target", f"targets (with {opt('reconstruction')} bce)")
    return xh, x, m, lv, beta


@loss(
    name="vae",
    aliases=(),
    family="generative",
    summary="VAE negative ELBO: reconstruction error plus β times the KL divergence of the latent Gaussian from N(0, I).",
    inputs=(
        Role(
            "recon",
            "(N, D)",
            f"The decoder's reconstruction x̂: values ({opt('reconstruction')} mse) or logits ({opt('reconstruction')} bce).",
        ),
        Role("target", "(N, D)", f"The input x being reconstructed; in [0, 1] with {opt('reconstruction')} bce."),
        Role("mu", "(N, Z)", "The encoder's latent means μ."),
        Role("logvar", "(N, Z)", "The encoder's latent log-variances log σ², the shape of mu."),
    ),
    params=(
        Param(
            "reconstruction",
            "choice",
            "mse",
            "Reconstruction term: mse (squared error of values) or bce (binary cross-entropy of logits "
            "against targets in [0, 1]).",
            choices=("mse", "bce"),
        ),
        Param("beta", "float", 1.0, "Weight β of the KL term (β-VAE; 1 is the plain ELBO).", low=0.0, high_open=True),
    ),
    reference=(
        "F.mse_loss(recon, x, reduction='sum') or F.binary_cross_entropy_with_logits(recon, x, reduction='sum'), "
        "plus beta * -0.5 * torch.sum(1 + logvar - mu**2 - logvar.exp()) (per sample; "
        "= torch.distributions.kl_divergence(Normal(mu, exp(logvar/2)), Normal(0, 1)).sum(-1))"
    ),
    formula=(
        "l = Σ_d recon(x_d, x̂_d) + β · ½ Σ_z (μ_z² + σ_z² - log σ_z² - 1),  σ² = exp(logvar)\n"
        "mse: recon = (x - x̂)²\n"
        "bce: recon = x · softplus(-x̂) + (1 - x) · softplus(x̂)   (x̂ are logits)"
    ),
    headline="the mean over samples of the per-sample sum (the usual batch-averaged VAE loss)",
    gradient="∂l/∂x̂ = 2(x̂ - x) (mse) or σ(x̂) - x (bce, logits); the KL term does not depend on x̂",
    properties=(
        "The negative evidence lower bound (ELBO) for β = 1 (up to constants of the Gaussian/Bernoulli decoder).",
        "The KL term is non-negative and zero only when μ = 0 and logvar = 0; it is computed as "
        "½(μ² + expm1(logvar) - logvar), exact for small logvar.",
        "Report components: reconstruction and kl (β-weighted); they sum to the loss.",
        "Sums (not means) over D and Z: the reconstruction term grows with the data dimension.",
    ),
    used_for="Variational autoencoders (VAE, β-VAE).",
    activation="identity (mse) or sigmoid per pixel (bce, applied inside the loss to logits)",
    paper="Kingma & Welling 2014, Auto-Encoding Variational Bayes; β-VAE: Higgins et al. 2017.",
    example=(
        "sample_data/vae_batch.parquet:recon",
        "sample_data/vae_batch.parquet:x",
        "sample_data/vae_batch.parquet:mu",
        "sample_data/vae_batch.parquet:logvar",
        f"{opt('reconstruction')}",
        "bce",
    ),
)
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
