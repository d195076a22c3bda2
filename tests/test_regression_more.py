"""Huber, smooth L1, log-cosh, quantile (pinball), Gaussian NLL and Poisson NLL.

Oracles: numbers PyTorch 2.13 printed (copied as literals from the team's
loss-semantics reference), closed forms evaluated in plain Python (math, and
``decimal`` at 50 digits for log-cosh), relationships between the losses, and
extreme / exactly-at-threshold inputs.
"""

from __future__ import annotations

import math
import os
import warnings
from decimal import Decimal, localcontext

import numpy as np
import pytest

from conftest import SAMPLE, assert_clean_error, finite_difference, write_csv
from lossctl import registry
from lossctl.errors import InputError, ParamError
from lossctl.losses.regression import (
    gaussian_nll,
    gaussian_nll_grad,
    huber,
    huber_grad,
    log_cosh,
    log_cosh_grad,
    mae,
    poisson_nll,
    poisson_nll_grad,
    quantile,
    quantile_grad,
    smooth_l1,
    smooth_l1_grad,
)

# e = x - y = [-0.5, 0, -2, 6] (PyTorch's convention); here pred = e, target = 0.
E = np.array([-0.5, 0.0, -2.0, 6.0])
Z = np.zeros(4)


# ---------------------------------------------------------------------------
# Huber and smooth L1
# ---------------------------------------------------------------------------

TORCH_HUBER = {
    0.5: [0.125, 0.0, 0.875, 2.875],
    1.0: [0.125, 0.0, 1.5, 5.5],
    2.0: [0.125, 0.0, 2.0, 10.0],
}
TORCH_SMOOTH_L1 = {
    0.5: [0.25, 0.0, 1.75, 5.75],
    1.0: [0.125, 0.0, 1.5, 5.5],
    2.0: [0.0625, 0.0, 1.0, 5.0],
}


@pytest.mark.parametrize("d", [0.5, 1.0, 2.0])
def test_huber_and_smooth_l1_match_torch_table(d):
    assert huber(E, Z, delta=d).loss.tolist() == TORCH_HUBER[d]
    assert smooth_l1(E, Z, beta=d).loss.tolist() == TORCH_SMOOTH_L1[d]
    # The order of inputs matters only through the sign of r; both losses are symmetric.
    assert huber(Z, E, delta=d).loss.tolist() == TORCH_HUBER[d]


@pytest.mark.parametrize("beta", [0.1, 0.5, 1.0, 2.0, 7.5])
def test_beta_times_smooth_l1_equals_huber(beta):
    rng = np.random.default_rng(3)
    pred = rng.normal(size=200) * 3 * beta
    target = rng.normal(size=200)
    np.testing.assert_allclose(
        beta * smooth_l1(pred, target, beta=beta).loss, huber(pred, target, delta=beta).loss, rtol=1e-15, atol=0
    )


def test_huber_equals_smooth_l1_at_one():
    rng = np.random.default_rng(4)
    pred, target = rng.normal(size=100) * 3, rng.normal(size=100)
    assert huber(pred, target).loss.tolist() == smooth_l1(pred, target).loss.tolist()


def test_exactly_at_threshold_both_branches_agree():
    # PyTorch: huber(2, 0) δ=2 -> 2.0; huber(1, 0) δ=1 -> 0.5; smooth_l1(2, 0) β=2 -> 1.0.
    assert huber(np.array([2.0, -2.0]), np.zeros(2), delta=2.0).loss.tolist() == [2.0, 2.0]
    assert huber(np.array([1.0]), np.zeros(1)).loss.tolist() == [0.5]
    assert smooth_l1(np.array([2.0, -2.0]), np.zeros(2), beta=2.0).loss.tolist() == [1.0, 1.0]
    # Continuous across the threshold (one ulp either side).
    for d in (0.5, 1.0, 2.0):
        below, above = np.nextafter(d, 0.0), np.nextafter(d, 10.0)
        h = huber(np.array([below, d, above]), np.zeros(3), delta=d).loss
        s = smooth_l1(np.array([below, d, above]), np.zeros(3), beta=d).loss
        np.testing.assert_allclose(h, 0.5 * d * d, rtol=1e-14)
        np.testing.assert_allclose(s, 0.5 * d, rtol=1e-14)
    # Gradient at the threshold is ∓δ (clip), for smooth-l1 ∓1.
    assert huber_grad(np.array([-2.0, 2.0]), np.zeros(2), delta=2.0).tolist() == [-2.0, 2.0]
    assert smooth_l1_grad(np.array([-2.0, 2.0]), np.zeros(2), beta=2.0).tolist() == [-1.0, 1.0]


def test_smooth_l1_beta_zero_is_exactly_l1():
    rng = np.random.default_rng(5)
    pred, target = rng.normal(size=(50, 3)), rng.normal(size=(50, 3))
    assert smooth_l1(pred, target, beta=0.0).loss.tolist() == mae(pred, target).loss.tolist()
    assert smooth_l1_grad(np.array([1.0, -1.0, 0.0]), np.zeros(3), beta=0.0).tolist() == [1.0, -1.0, 0.0]


def test_huber_tiny_delta_tends_to_zero_smooth_l1_tends_to_l1():
    pred, target = np.array([3.0]), np.array([0.0])
    assert huber(pred, target, delta=1e-9).loss[0] == pytest.approx(3e-9, rel=1e-9)
    assert smooth_l1(pred, target, beta=1e-9).loss[0] == pytest.approx(3.0, rel=1e-9)


def test_huber_and_smooth_l1_bad_parameters():
    with pytest.raises(ParamError) as err:
        huber(E, Z, delta=0.0)
    assert err.value.param == "delta"
    with pytest.raises(ParamError):
        huber(E, Z, delta=-1.0)
    with pytest.raises(ParamError) as err:
        smooth_l1(E, Z, beta=-1.0)
    assert err.value.param == "beta"


# ---------------------------------------------------------------------------
# Extreme residuals
# ---------------------------------------------------------------------------


def test_residuals_of_1e6_are_finite_and_exact():
    pred = np.array([1e6, -1e6])
    target = np.zeros(2)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no overflow / invalid-value warnings
        assert huber(pred, target).loss.tolist() == [999999.5, 999999.5]
        assert huber(pred, target, delta=2.0).loss.tolist() == [1999998.0, 1999998.0]
        assert smooth_l1(pred, target).loss.tolist() == [999999.5, 999999.5]
        assert smooth_l1(pred, target, beta=0.5).loss.tolist() == [999999.75, 999999.75]
        assert log_cosh(pred, target).loss.tolist() == [1e6 - math.log(2.0)] * 2
        # r = y - ŷ: r = -1e6 for pred 1e6 (over-prediction), +1e6 for pred -1e6.
        np.testing.assert_allclose(quantile(pred, target, quantile=0.9).loss, [1e5, 9e5], rtol=1e-15)
        assert quantile(pred, target, quantile=0.25).loss.tolist() == [750000.0, 250000.0]
        assert np.abs(huber_grad(pred, target)).tolist() == [1.0, 1.0]
        assert log_cosh_grad(pred, target).tolist() == [1.0, -1.0]


def test_residuals_near_float_max_stay_finite():
    # r² would overflow; Huber, smooth L1, log-cosh and pinball are linear in the tails.
    pred, target = np.array([1e300, -1e300]), np.zeros(2)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        for res in (huber(pred, target), smooth_l1(pred, target), log_cosh(pred, target), quantile(pred, target)):
            assert np.isfinite(res.loss).all()
        assert log_cosh(pred, target).loss.tolist() == [1e300, 1e300]
        assert huber(pred, target, delta=3.0).loss.tolist() == [3e300, 3e300]


# ---------------------------------------------------------------------------
# log-cosh
# ---------------------------------------------------------------------------


def _log_cosh_decimal(r: float) -> float:
    with localcontext() as ctx:
        ctx.prec = 60
        d = Decimal(r)
        return float(((d.exp() + (-d).exp()) / 2).ln())


def test_log_cosh_no_overflow_at_1000():
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        v = log_cosh(np.array([1000.0, -1000.0, 710.0, 800.0]), np.zeros(4)).loss
    np.testing.assert_allclose(v[:2], 999.3068528, rtol=0, atol=1e-7)
    assert v[2] == 710.0 - math.log(2.0)
    with pytest.raises(OverflowError):
        math.cosh(800.0)  # the naive form overflows here
    assert v[3] == pytest.approx(800.0 - math.log(2.0), rel=1e-16)


@pytest.mark.parametrize("r", [1e-300, 1e-12, 1e-8, 1e-4, 0.1, 0.5, 0.999, 1.0, 1.001, 3.0, 10.0, 19.0, 25.0, 300.0])
def test_log_cosh_full_relative_precision(r):
    want = _log_cosh_decimal(r)
    got = log_cosh(np.array([r, -r]), np.zeros(2)).loss
    np.testing.assert_allclose(got, want, rtol=4e-16, atol=0)


def test_log_cosh_quadratic_near_zero_linear_in_tails_symmetric():
    small = np.array([1e-6, -1e-5, 1e-3])
    np.testing.assert_allclose(log_cosh(small, np.zeros(3)).loss, 0.5 * small**2, rtol=1e-6)
    big = np.array([40.0, -60.0])
    np.testing.assert_allclose(log_cosh(big, np.zeros(2)).loss, np.abs(big) - math.log(2.0), rtol=1e-16)
    rng = np.random.default_rng(6)
    r = rng.normal(size=100) * 5
    assert log_cosh(r, np.zeros(100)).loss.tolist() == log_cosh(-r, np.zeros(100)).loss.tolist()
    # Between MSE/2 and MAE: log cosh r ≤ min(r²/2, |r|).
    v = log_cosh(r, np.zeros(100)).loss
    assert (v <= 0.5 * r * r + 1e-15).all() and (v <= np.abs(r)).all() and (v >= 0).all()


def test_log_cosh_twice_differentiable():
    # The gradient -tanh(r) (here w.r.t. ŷ: r = -ŷ, so +tanh(ŷ)) and its derivative sech² are continuous,
    # including across the switch between the two evaluation forms at |r| = 1.
    x = np.array([-3.0, -1.0, -1e-3, 0.0, 0.5, 1.0, 1.0 + 1e-9, 4.0])
    g = log_cosh_grad(x, np.zeros(len(x)))
    np.testing.assert_allclose(g, np.tanh(x), rtol=1e-15)
    np.testing.assert_allclose(
        g, finite_difference(lambda z: log_cosh(z, np.zeros(len(x))).loss, x), rtol=1e-7, atol=1e-9
    )
    h = 1e-5
    second = (log_cosh_grad(x + h, np.zeros(len(x))) - log_cosh_grad(x - h, np.zeros(len(x)))) / (2 * h)
    np.testing.assert_allclose(second, 1.0 / np.cosh(x) ** 2, rtol=1e-8)
    edge = log_cosh(np.array([np.nextafter(1.0, 0.0), 1.0]), np.zeros(2)).loss
    assert abs(edge[1] - edge[0]) < 1e-15


# ---------------------------------------------------------------------------
# quantile / pinball
# ---------------------------------------------------------------------------


def _pinball_sklearn_formula(y_true, y_pred, alpha):
    # sklearn.metrics.mean_pinball_loss: alpha * max(e, 0) + (1 - alpha) * max(-e, 0), e = y - ŷ.
    return [alpha * max(t - p, 0.0) + (1 - alpha) * max(p - t, 0.0) for t, p in zip(y_true, y_pred)]


@pytest.mark.parametrize("q", [0.0, 0.1, 0.5, 0.9, 1.0])
def test_quantile_matches_sklearn_definition(q):
    rng = np.random.default_rng(7)
    y_true, y_pred = rng.normal(size=60) * 3, rng.normal(size=60) * 3
    want = _pinball_sklearn_formula(y_true.tolist(), y_pred.tolist(), q)
    np.testing.assert_allclose(quantile(y_pred, y_true, quantile=q).loss, want, rtol=1e-15, atol=0)
    assert quantile(y_pred, y_true, quantile=q).loss.mean() == pytest.approx(math.fsum(want) / 60, rel=1e-14)


def test_quantile_half_is_half_mae_and_asymmetric():
    rng = np.random.default_rng(9)
    pred, target = rng.normal(size=(40, 3)), rng.normal(size=(40, 3))
    np.testing.assert_allclose(quantile(pred, target).loss, 0.5 * mae(pred, target).loss, rtol=1e-15)
    # Under-prediction (r > 0) costs q·r, over-prediction (1-q)·|r|.
    assert quantile(np.array([0.0, 2.0]), np.array([2.0, 0.0]), quantile=0.9).loss.tolist() == [
        1.8,
        pytest.approx(0.2, rel=1e-15),
    ]
    assert registry.get("pinball").name == "quantile"


def test_quantile_gradient_convention():
    pred = np.array([0.0, 2.0, 1.0])
    target = np.array([2.0, 0.0, 1.0])  # r > 0, r < 0, r = 0
    g = quantile_grad(pred, target, quantile=0.8)
    assert g[0] == -0.8 and g[1] == pytest.approx(0.2, rel=1e-15) and g[2] == 0.0


def test_quantile_bad_parameter():
    with pytest.raises(ParamError) as err:
        quantile(E, Z, quantile=1.5)
    assert err.value.param == "quantile"
    with pytest.raises(ParamError):
        quantile(E, Z, quantile=-0.1)


# ---------------------------------------------------------------------------
# Gaussian NLL
# ---------------------------------------------------------------------------


def test_gaussian_nll_torch_numbers():
    # var = 0 clamped to eps = 1e-6: ½ log 1e-6 = -6.9077554; var = 1e-12, e = 1e-3: + ½ (1e-6 / 1e-6).
    v = gaussian_nll(np.array([1.0, 1e-3]), np.array([1.0, 0.0]), np.array([0.0, 1e-12])).loss
    # PyTorch printed float32 results: agree to float32 precision, exact in float64 below.
    np.testing.assert_allclose(v, [-6.9077554, -6.4077554], rtol=1e-7, atol=0)
    assert v[0] == 0.5 * math.log(1e-6)
    full = gaussian_nll(np.array([1.0]), np.array([1.0]), np.array([0.0]), full=True).loss
    assert full[0] == pytest.approx(0.5 * math.log(1e-6) + 0.5 * math.log(2 * math.pi), rel=1e-15)


def test_gaussian_nll_closed_form_and_constant_variance_is_scaled_mse():
    x, y, var = np.array([0.0, 2.0]), np.array([1.0, -1.0]), np.array([4.0, 0.25])
    want = [0.5 * (math.log(4.0) + 1.0 / 4.0), 0.5 * (math.log(0.25) + 9.0 / 0.25)]
    np.testing.assert_allclose(gaussian_nll(x, y, var).loss, want, rtol=1e-15)
    rng = np.random.default_rng(10)
    x, y = rng.normal(size=50), rng.normal(size=50)
    v = gaussian_nll(x, y, np.full(50, 2.0)).loss
    np.testing.assert_allclose(v, (y - x) ** 2 / 4.0 + 0.5 * math.log(2.0), rtol=1e-14)


def test_gaussian_nll_variance_shapes():
    rng = np.random.default_rng(11)
    x, y = rng.normal(size=(20, 3)), rng.normal(size=(20, 3))
    v_row = rng.uniform(0.5, 2.0, size=20)
    full = gaussian_nll(x, y, np.repeat(v_row[:, None], 3, axis=1)).loss
    assert gaussian_nll(x, y, v_row).loss.tolist() == full.tolist()
    assert gaussian_nll(x, y, v_row[:, None]).loss.tolist() == full.tolist()
    # The per-sample mean over D makes the overall mean PyTorch's element-wise mean.
    elems = 0.5 * (np.log(v_row)[:, None] + (y - x) ** 2 / v_row[:, None])
    assert full.mean() == pytest.approx(float(elems.mean()), rel=1e-14)
    # A (N, 1) variance for an (N,) prediction.
    one = gaussian_nll(x[:, 0], y[:, 0], v_row[:, None]).loss
    np.testing.assert_allclose(one, elems[:, 0], rtol=1e-14)
    with pytest.raises(InputError) as err:
        gaussian_nll(x, y, np.ones((20, 2)))
    assert err.value.role == "var"


def test_gaussian_nll_negative_variance_names_the_row():
    var = np.array([1.0, 0.5, -0.2, 1.0, -3.0])
    with pytest.raises(InputError) as err:
        gaussian_nll(np.zeros(5), np.ones(5), var)
    assert err.value.role == "var"
    assert err.value.rows == [2, 4]
    assert "-0.2" in err.value.message
    with pytest.raises(InputError) as err:
        gaussian_nll(np.zeros((3, 2)), np.ones((3, 2)), np.array([[1.0, 1.0], [1.0, -1.0], [1.0, 1.0]]))
    assert err.value.rows == [1]


def test_gaussian_nll_gradient_and_clamp():
    x, y = np.array([0.0, 1.0, 2.0]), np.array([1.0, 1.0, -1.0])
    var = np.array([2.0, 5.0, 0.0])  # the last one is clamped to eps
    g = gaussian_nll_grad(x, y, var, eps=1e-3)
    assert g.tolist() == [-0.5, 0.0, 3.0 / 1e-3]
    np.testing.assert_allclose(
        g, finite_difference(lambda z: gaussian_nll(z, y, var, eps=1e-3).loss, x, h=1e-7), rtol=1e-6
    )
    with pytest.raises(ParamError):
        gaussian_nll(x, y, var, eps=0.0)


# ---------------------------------------------------------------------------
# Poisson NLL
# ---------------------------------------------------------------------------


def test_poisson_nll_torch_numbers():
    # PyTorch printed float32 results: agree to float32 precision (rel 1e-7), exact in float64.
    v = poisson_nll(np.array([0.0]), np.array([1.0]), log_input=False).loss[0]
    assert v == pytest.approx(18.4206810, rel=1e-7)
    assert v == -math.log(1e-8)
    full = poisson_nll(np.array([1.0]), np.array([3.0]), full=True).loss[0]
    plain = poisson_nll(np.array([1.0]), np.array([3.0])).loss[0]
    assert full == pytest.approx(1.4823633, rel=1e-7)
    assert full - plain == pytest.approx(1.7640815, rel=1e-7)
    assert plain == pytest.approx(math.e - 3.0, rel=1e-15)


def test_poisson_stirling_term_only_where_target_above_one():
    x = np.array([0.3, -0.2, 1.0, 0.5, 2.0])
    y = np.array([0.0, 1.0, 1.5, 2.0, 7.0])
    diff = poisson_nll(x, y, full=True).loss - poisson_nll(x, y).loss
    assert diff[:2].tolist() == [0.0, 0.0]
    want = [t * math.log(t) - t + 0.5 * math.log(2 * math.pi * t) for t in (1.5, 2.0, 7.0)]
    np.testing.assert_allclose(diff[2:], want, rtol=1e-14)
    # Stirling approximates log(y!): within 1/(12y) + O(y^-3) for integer y.
    assert abs(diff[4] - math.lgamma(8.0)) < 1 / (12 * 7)


def test_poisson_rate_input_and_gradients():
    rate, y = np.array([0.5, 2.0, 4.0]), np.array([1.0, 0.0, 3.0])
    want = [r - t * math.log(r + 1e-8) for r, t in zip(rate.tolist(), y.tolist())]
    np.testing.assert_allclose(poisson_nll(rate, y, log_input=False).loss, want, rtol=1e-15)
    # The log-input and rate forms agree up to the eps inside the log.
    np.testing.assert_allclose(poisson_nll(np.log(rate), y).loss, poisson_nll(rate, y, log_input=False).loss, rtol=1e-7)
    g = poisson_nll_grad(np.log(rate), y)
    np.testing.assert_allclose(g, rate - y, rtol=1e-15)
    g2 = poisson_nll_grad(rate, y, log_input=False, eps=1e-4)
    np.testing.assert_allclose(g2, 1 - y / (rate + 1e-4), rtol=1e-15)
    # Minimised at rate = y (gradient zero).
    assert poisson_nll_grad(np.array([math.log(3.0)]), np.array([3.0]))[0] == pytest.approx(0.0, abs=1e-15)


def test_poisson_errors():
    with pytest.raises(InputError) as err:
        poisson_nll(np.zeros(4), np.array([1.0, -1.0, 2.0, -0.5]))
    assert err.value.role == "target" and err.value.rows == [1, 3]
    with pytest.raises(InputError) as err:
        poisson_nll(np.array([1.0, 2.0, -0.1]), np.ones(3), log_input=False)
    assert err.value.role == "pred" and err.value.rows == [2]
    # Negative log-rates are fine.
    assert np.isfinite(poisson_nll(np.array([-5.0]), np.array([2.0])).loss).all()
    with pytest.raises(ParamError):
        poisson_nll(np.zeros(2), np.ones(2), eps=-1.0)


# ---------------------------------------------------------------------------
# Multi-output means and the command line
# ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    "fn, kw, elem",
    [
        (huber, {"delta": 0.7}, lambda r: np.where(np.abs(r) <= 0.7, 0.5 * r * r, 0.7 * (np.abs(r) - 0.35))),
        (smooth_l1, {"beta": 0.7}, lambda r: np.where(np.abs(r) < 0.7, 0.5 * r * r / 0.7, np.abs(r) - 0.35)),
        (log_cosh, {}, lambda r: np.log(np.cosh(r))),
        (quantile, {"quantile": 0.3}, lambda r: np.maximum(0.3 * r, -0.7 * r)),
        (poisson_nll, {}, None),
    ],
)
def test_multi_output_mean_is_elementwise_mean(fn, kw, elem):
    rng = np.random.default_rng(12)
    pred = rng.normal(size=(30, 4))
    target = rng.poisson(2.0, size=(30, 4)).astype(float) if fn is poisson_nll else rng.normal(size=(30, 4)) * 2
    r = target - pred
    elems = np.exp(pred) - target * pred if fn is poisson_nll else elem(r)
    per = fn(pred, target, **kw).loss
    assert per.shape == (30,)
    np.testing.assert_allclose(per, elems.mean(axis=1), rtol=1e-13)
    assert per.mean() == pytest.approx(float(elems.mean()), rel=1e-13)


def test_cli_bool_flags_and_values(cli, tmp_path):
    path = write_csv(
        tmp_path / "c.csv", {"x": np.array([1.0, 0.0]), "rate": np.array([2.0, 0.5]), "y": np.array([3.0, 1.0])}
    )
    res = cli(["compute", "poisson-nll", f"{path}:x", f"{path}:y", "--full", "-f", "json"])
    assert res.code == 0, res.err
    want = (1.4823633 + (1.0 - 0.0)) / 2
    assert res.json["value"] == pytest.approx(want, rel=1e-7)
    res = cli(["compute", "poisson-nll", f"{path}:rate", f"{path}:y", "--no-log-input", "-f", "json"])
    assert res.code == 0, res.err
    want = ((2.0 - 3.0 * math.log(2.0 + 1e-8)) + (0.5 - math.log(0.5 + 1e-8))) / 2
    assert res.json["value"] == pytest.approx(want, rel=1e-12)
    res = cli(["compute", "pinball", f"{path}:x", f"{path}:y", "--quantile", "0.9", "-f", "json"])
    assert res.code == 0, res.err
    assert res.json["loss"] == "quantile"
    assert res.json["value"] == pytest.approx((0.9 * 2.0 + 0.9 * 1.0) / 2, rel=1e-15)


def test_cli_gaussian_nll_negative_variance_names_file_and_row(cli, tmp_path):
    path = write_csv(
        tmp_path / "g.csv",
        {"mu": np.zeros(4), "y": np.ones(4), "var": np.array([1.0, 2.0, -0.5, 1.0])},
    )
    res = cli(["compute", "gaussian-nll", f"{path}:mu", f"{path}:y", f"{path}:var"])
    assert_clean_error(res, 1, "g.csv", "var", "row 2", "negative")
    res = cli(["compute", "gaussian-nll", f"{path}:mu", f"{path}:y", f"{path}:var", "--eps", "0"])
    assert_clean_error(res, 2, "--eps")


def test_cli_rejects_bad_ranges(cli):
    data = os.path.join(SAMPLE, "regression.csv")
    res = cli(["compute", "huber", f"{data}:pred", f"{data}:target", "--delta", "0"])
    assert_clean_error(res, 2, "--delta")
    res = cli(["compute", "smooth-l1", f"{data}:pred", f"{data}:target", "--beta", "-1"])
    assert_clean_error(res, 2, "--beta")
