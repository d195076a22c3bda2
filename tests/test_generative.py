"""The VAE loss (negative ELBO) against closed forms, published numbers and extremes.

Oracles: the Gaussian KL closed form and its check value from loss-semantics.md §7
(KL(N(1, 0.5²) ‖ N(-0.5, 2²)) = 1.1987944, ✔ against torch.distributions; KL is
invariant under the affine map z -> (z - μ₂)/σ₂, which turns it into the VAE's
KL(N(0.75, 0.25²) ‖ N(0, 1))); numerical integration of ∫ p log(p/q) with SciPy;
the stable BCE-with-logits values of §9 #4/#6; plain-Python loops.
"""

from __future__ import annotations

import math

import numpy as np
import pytest

from conftest import SAMPLE, assert_clean_error
from lossctl import losses  # the library functions: parameters checked as declared
from lossctl.errors import InputError, ParamError
from lossctl.losses.generative import vae, vae_grad
from reference.torch_values import BCE_WITH_LOGITS_EXTREMES, GAUSSIAN_KL


def _zeros(n, d=1):
    return np.zeros((n, d))


def _kl_only(mu, logvar, **kw):
    mu = np.atleast_2d(mu)
    logvar = np.atleast_2d(logvar)
    n = len(mu)
    return vae(_zeros(n), _zeros(n), mu, logvar, **kw)


# ---------------------------------------------------------------------------
# the KL term
# ---------------------------------------------------------------------------


def test_kl_matches_published_gaussian_kl_after_standardising():
    # KL(N(1, .5²) ‖ N(-.5, 2²)) from torch.distributions; standardise by the second Gaussian:
    g = GAUSSIAN_KL["inputs"]
    mu = (g["mu_p"] - g["mu_q"]) / g["sigma_q"]
    logvar = 2 * math.log(g["sigma_p"] / g["sigma_q"])
    res = _kl_only([[mu]], [[logvar]])
    assert res.loss[0] == pytest.approx(GAUSSIAN_KL["values"], rel=1e-14)
    assert res.components["kl"][0] == res.loss[0]
    assert res.components["reconstruction"][0] == 0.0


def test_kl_matches_numerical_integration():
    integrate = pytest.importorskip("scipy.integrate")
    stats = pytest.importorskip("scipy.stats")
    for mu, logvar in [(0.3, -0.7), (-1.2, 0.9), (2.0, -3.0)]:
        s = math.exp(0.5 * logvar)
        p = stats.norm(mu, s)

        def f(z):
            return p.pdf(z) * (p.logpdf(z) - stats.norm.logpdf(z))

        want, _ = integrate.quad(f, mu - 12 * s, mu + 12 * s, epsabs=1e-13, epsrel=1e-12)
        assert _kl_only([[mu]], [[logvar]]).loss[0] == pytest.approx(want, rel=1e-9)


def test_kl_sums_over_latent_dims_and_is_zero_at_prior():
    mu = np.array([[0.0, 0.0, 0.0], [0.5, -1.0, 2.0]])
    lv = np.array([[0.0, 0.0, 0.0], [0.1, -2.0, 1.0]])
    res = _kl_only(mu, lv)
    assert res.loss[0] == 0.0
    want = -0.5 * math.fsum(1 + l - m * m - math.exp(l) for m, l in zip(mu[1], lv[1]))
    assert res.loss[1] == pytest.approx(want, rel=1e-14)
    assert (
        _kl_only(np.random.default_rng(0).normal(size=(50, 4)), np.random.default_rng(1).normal(size=(50, 4))).loss > 0
    ).all()


def test_kl_tiny_logvar_is_exact():
    # e^lv - lv - 1 ≈ lv²/2: the naive form loses every digit at lv = 1e-9, expm1 keeps them
    lv = 1e-9
    res = _kl_only([[0.0]], [[lv]])
    assert res.loss[0] == pytest.approx(0.5 * (lv * lv / 2 + lv**3 / 6), rel=1e-6)  # ulp(1e-9)/5e-19 ≈ 4e-7
    assert res.loss[0] > 0


def test_kl_extreme_logvar():
    res = _kl_only([[0.0], [0.0], [1e6]], [[-700.0], [700.0], [0.0]])
    assert res.loss[0] == pytest.approx(0.5 * (math.exp(-700) + 700 - 1), rel=1e-14)
    assert res.loss[1] == pytest.approx(0.5 * (math.exp(700) - 700 - 1), rel=1e-12)
    assert res.loss[2] == 0.5e12
    # beyond exp's range the KL is +inf (a true overflow), never NaN; β = 0 drops it
    big = _kl_only([[0.0]], [[800.0]])
    assert np.isposinf(big.loss[0])
    assert _kl_only([[0.0]], [[800.0]], beta=0.0).loss[0] == 0.0


def test_beta_scales_only_the_kl():
    rng = np.random.default_rng(4)
    args = [rng.normal(size=(9, 5)), rng.normal(size=(9, 5)), rng.normal(size=(9, 2)), rng.normal(size=(9, 2))]
    r1 = vae(*args)
    r4 = vae(*args, beta=4.0)
    r0 = vae(*args, beta=0.0)
    np.testing.assert_allclose(r4.components["kl"], 4 * r1.components["kl"], rtol=1e-15)
    np.testing.assert_array_equal(r4.components["reconstruction"], r1.components["reconstruction"])
    np.testing.assert_array_equal(r0.loss, r1.components["reconstruction"])
    for r in (r1, r4, r0):
        np.testing.assert_allclose(r.components["reconstruction"] + r.components["kl"], r.loss, rtol=1e-15)


# ---------------------------------------------------------------------------
# reconstruction terms
# ---------------------------------------------------------------------------


def test_mse_reconstruction_is_summed_squared_error():
    xh = np.array([[1.0, 2.0, 3.0], [0.0, 0.0, 0.0]])
    x = np.array([[1.5, 2.0, 1.0], [1e6, 0.0, -1e6]])
    res = vae(xh, x, _zeros(2), _zeros(2))
    np.testing.assert_array_equal(res.loss, [0.25 + 0 + 4.0, 2e12])


def test_bce_reconstruction_matches_torch_with_logits():
    # §9 #4: bce_with_logits(1000, 0) = 1000, (-1000, 1) = 1000, (1000, 1) = 0, (-1000, 0) = 0
    torch = BCE_WITH_LOGITS_EXTREMES
    xh = np.array([[v] for v in [*torch["inputs"]["x"], -20.0]])
    x = np.array([[v] for v in [*torch["inputs"]["y"], 0.0]])
    res = vae(xh, x, _zeros(6), _zeros(6), reconstruction="bce")
    np.testing.assert_allclose(res.loss[:5], torch["values"], rtol=1e-15, atol=0)
    # §9 #6: (-20, 0) exact is 2.0611536e-09 (torch f32 prints 0.0, f64 2.061153026e-09): no cancellation here
    assert res.loss[5] == pytest.approx(math.log1p(math.exp(-20.0)), rel=1e-14)


def test_bce_soft_targets_and_minimum():
    # with soft targets the minimum over logits is at σ(x̂) = x, where the loss is the entropy
    x = np.array([[0.3, 0.5, 0.9]])
    xh = np.log(x / (1 - x))
    res = vae(xh, x, _zeros(1), _zeros(1), reconstruction="bce")
    ent = -sum(p * math.log(p) + (1 - p) * math.log(1 - p) for p in x[0])
    assert res.loss[0] == pytest.approx(ent, rel=1e-13)
    np.testing.assert_allclose(vae_grad(xh, x, _zeros(1), _zeros(1), reconstruction="bce"), 0.0, atol=1e-15)


# ---------------------------------------------------------------------------
# gradients
# ---------------------------------------------------------------------------


@pytest.mark.parametrize("kw", [{}, {"reconstruction": "bce"}, {"beta": 3.0, "reconstruction": "bce"}])
def test_gradient_matches_central_differences(kw):
    rng = np.random.default_rng(8)
    n, d, z = 7, 5, 3
    x = rng.random((n, d))
    xh = rng.normal(size=(n, d)) * 2
    mu, lv = rng.normal(size=(n, z)), rng.normal(size=(n, z))
    g = vae_grad(xh, x, mu, lv, **kw)
    h = 1e-6
    fd = np.zeros_like(xh)
    for j in range(d):
        e = np.zeros_like(xh)
        e[:, j] = h
        fd[:, j] = (vae(xh + e, x, mu, lv, **kw).loss - vae(xh - e, x, mu, lv, **kw).loss) / (2 * h)
    np.testing.assert_allclose(g, fd, rtol=1e-6, atol=1e-8)
    if kw.get("reconstruction") == "bce":
        np.testing.assert_allclose(g, 1 / (1 + np.exp(-xh)) - x, rtol=1e-14)
    else:
        np.testing.assert_allclose(g, 2 * (xh - x), rtol=1e-15)


def test_gradient_saturated_logits():
    g = vae_grad(np.array([[1e4, -1e4, 1e4]]), np.array([[1.0, 0.0, 0.0]]), _zeros(1), _zeros(1), reconstruction="bce")
    np.testing.assert_array_equal(g, [[0.0, 0.0, 1.0]])


def test_one_dimensional_inputs_are_single_features():
    r = vae(np.array([1.0, 2.0]), np.array([0.0, 0.0]), np.array([0.0, 1.0]), np.array([0.0, 0.0]))
    np.testing.assert_allclose(r.loss, [1.0, 4.0 + 0.5])
    assert vae_grad(np.array([1.0, 2.0]), np.zeros(2), np.zeros(2), np.zeros(2)).shape == (2,)


# ---------------------------------------------------------------------------
# errors
# ---------------------------------------------------------------------------


def test_bce_targets_outside_unit_interval():
    x = np.array([[0.5, 0.5], [0.2, 1.2], [0.0, -0.1]])
    with pytest.raises(InputError) as e:
        vae(np.zeros((3, 2)), x, _zeros(3), _zeros(3), reconstruction="bce")
    assert e.value.role == "target" and e.value.rows == [1, 2]
    # mse accepts any real target
    assert np.isfinite(vae(np.zeros((3, 2)), x, _zeros(3), _zeros(3)).loss).all()


def test_shape_mismatches_and_nonfinite():
    with pytest.raises(InputError) as e:
        vae(np.zeros((3, 2)), np.zeros((3, 3)), _zeros(3), _zeros(3))
    assert e.value.role == "target"
    with pytest.raises(InputError) as e:
        vae(np.zeros((3, 2)), np.zeros((3, 2)), np.zeros((3, 2)), np.zeros((3, 4)))
    assert e.value.role == "logvar"
    with pytest.raises(InputError) as e:
        vae(np.zeros((3, 2)), np.zeros((3, 2)), np.zeros((2, 2)), np.zeros((2, 2)))
    assert e.value.role == "mu"
    lv = np.zeros((3, 1))
    lv[2, 0] = np.inf
    with pytest.raises(InputError) as e:
        vae(np.zeros((3, 2)), np.zeros((3, 2)), _zeros(3), lv)
    assert e.value.role == "logvar" and e.value.rows == [2]


def test_bad_params():
    a = np.zeros((2, 2))
    with pytest.raises(ParamError):
        losses.vae(a, a, a, a, beta=-1.0)
    with pytest.raises(ParamError):
        losses.vae(a, a, a, a, reconstruction="l1")


# ---------------------------------------------------------------------------
# command line
# ---------------------------------------------------------------------------


def _sample_args(pq):
    return [f"{pq}:recon", f"{pq}:x", f"{pq}:mu", f"{pq}:logvar"]


def test_cli_components_and_beta(cli):
    pq = f"{SAMPLE}/vae_batch.parquet"
    a = cli(["compute", "vae", *_sample_args(pq), "--reconstruction", "bce", "-f", "json"])
    b = cli(["compute", "vae", *_sample_args(pq), "--reconstruction", "bce", "--beta", "2", "-f", "json"])
    assert a.code == 0 and b.code == 0, (a.err, b.err)
    ca, cb = a.json["components"], b.json["components"]
    assert ca["reconstruction"] + ca["kl"] == pytest.approx(a.json["value"], rel=1e-12)
    assert cb["kl"] == pytest.approx(2 * ca["kl"], rel=1e-12)
    assert cb["reconstruction"] == pytest.approx(ca["reconstruction"], rel=1e-15)
    assert a.json["count"] == 64


def test_cli_bce_target_outside_unit_interval_names_row(cli, tmp_path):
    import pyarrow as pa
    import pyarrow.parquet as pqm

    x = np.full((4, 3), 0.5)
    x[3, 1] = 1.5
    z = np.zeros((4, 2))

    def col(a):
        return pa.FixedSizeListArray.from_arrays(pa.array(a.ravel()), a.shape[1])

    path = str(tmp_path / "v.parquet")
    pqm.write_table(pa.table({"r": col(np.zeros((4, 3))), "x": col(x), "mu": col(z), "lv": col(z)}), path)
    res = cli(["compute", "vae", f"{path}:r", f"{path}:x", f"{path}:mu", f"{path}:lv", "--reconstruction", "bce"])
    assert_clean_error(res, 1, "v.parquet", "row 3", "outside [0, 1]")
    assert cli(["compute", "vae", f"{path}:r", f"{path}:x", f"{path}:mu", f"{path}:lv", "-b"]).code == 0
    assert cli(["compute", "vae", f"{path}:r", f"{path}:x", f"{path}:mu", f"{path}:lv", "--beta", "-1"]).code == 2
