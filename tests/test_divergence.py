"""kl-divergence, js-divergence and gaussian-kl against independent references.

Oracles: numbers PyTorch 2.13 printed (F.kl_div, recorded in the team's
loss-semantics reference), scipy.special.rel_entr and
scipy.spatial.distance.jensenshannon, closed forms evaluated by hand or in
50-digit decimal arithmetic, and numpy.linalg.inv / slogdet for full covariances.
"""

from __future__ import annotations

import math
from decimal import Decimal, getcontext

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy.spatial.distance import jensenshannon
from scipy.special import rel_entr

from lossctl.errors import InputError, ParamError
from lossctl.losses.divergence import (
    expm1_minus_x,
    gaussian_kl,
    gaussian_kl_grad,
    js_divergence,
    js_divergence_grad,
    kl_divergence,
    kl_divergence_grad,
)

LN2 = math.log(2.0)

# PyTorch 2.13: F.kl_div(input=log Q, target=P): sum 0.7851800, batchmean 0.3925900.
Q_T = np.array([[0.25, 0.25, 0.5], [0.1, 0.2, 0.7]])
P_T = np.array([[0.5, 0.5, 0.0], [0.2, 0.3, 0.5]])


# ---------------------------------------------------------------------------
# kl-divergence: PyTorch's and SciPy's numbers
# ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    "pred, kind",
    [(np.log(Q_T), "log-probs"), (Q_T, "probs"), (np.log(Q_T) + 7.0, "logits")],
)
def test_kl_matches_pytorch_batchmean(pred, kind):
    res = kl_divergence(pred, P_T, pred_kind=kind)
    assert res.loss.sum() == pytest.approx(0.7851800, rel=1e-6)
    assert res.loss.mean() == pytest.approx(0.3925900, rel=1e-6)  # reduction="batchmean"
    # Row 0 is ln 2 exactly (the P = 0 class contributes 0); row 1 is the 1-D batchmean x 3.
    assert res.loss[0] == pytest.approx(LN2, rel=1e-15)
    assert res.loss[1] / 3 == pytest.approx(0.0306776, rel=1e-5)
    assert res.num is None and res.den is None  # the plain mean of rows is the headline


def test_kl_matches_rel_entr_row_sums():
    rng = np.random.default_rng(0)
    P = rng.dirichlet(np.ones(8) * 0.5, size=40)
    Q = rng.dirichlet(np.ones(8) * 0.5, size=40)
    res = kl_divergence(Q, P, pred_kind="probs")
    ref = [math.fsum(rel_entr(p, q)) for p, q in zip(P.tolist(), Q.tolist())]
    np.testing.assert_allclose(res.loss, ref, rtol=1e-12, atol=1e-15)


def test_kl_zero_target_contributes_zero_and_missing_mass_is_inf():
    P = np.array([[0.0, 1.0, 0.0], [0.5, 0.5, 0.0], [0.5, 0.5, 0.0]])
    Q = np.array([[0.0, 1.0, 0.0], [1.0, 0.0, 0.0], [0.5, 0.25, 0.25]])
    res = kl_divergence(Q, P, pred_kind="probs")
    # rel_entr(0, 0) = 0 (row 0); rel_entr(0.5, 0) = inf (row 1). PyTorch 2.13 would give nan
    # for the P = 0, log Q = -inf elements of row 0; lossctl follows scipy's rule, as specified.
    assert res.loss[0] == 0.0
    assert res.loss[1] == math.inf
    assert res.loss[2] == pytest.approx(0.5 * math.log(2.0), rel=1e-15)
    ref = [math.fsum(rel_entr(p, q)) for p, q in zip(P.tolist(), Q.tolist())]
    np.testing.assert_array_equal(res.loss, ref)


def test_kl_log_prob_inputs_with_minus_inf():
    with np.errstate(divide="ignore"):
        lp = np.log(np.array([[0.0, 0.25, 0.75]]))
        lq = np.log(np.array([[0.0, 0.5, 0.5]]))
    res = kl_divergence(lq, lp, pred_kind="log-probs", target_kind="log-probs")
    expected = 0.25 * math.log(0.5) + 0.75 * math.log(1.5)
    assert res.loss[0] == pytest.approx(expected, rel=1e-14)


# ---------------------------------------------------------------------------
# kl-divergence: relationships and properties
# ---------------------------------------------------------------------------


@pytest.mark.parametrize("p_kind, q_kind", [("probs", "logits"), ("logits", "probs"), ("log-probs", "log-probs")])
def test_forward_equals_reverse_with_inputs_swapped(p_kind, q_kind):
    rng = np.random.default_rng(1)
    P = rng.dirichlet(np.ones(5), size=25)
    Q = rng.dirichlet(np.ones(5), size=25)
    enc = {"probs": lambda a: a, "log-probs": np.log, "logits": lambda a: np.log(a) + 3.0}
    a, b = enc[p_kind](P), enc[q_kind](Q)
    fwd = kl_divergence(b, a, target_kind=p_kind, pred_kind=q_kind)
    rev = kl_divergence(a, b, target_kind=q_kind, pred_kind=p_kind, direction="reverse")
    np.testing.assert_allclose(fwd.loss, rev.loss, rtol=1e-13)
    ref = [math.fsum(rel_entr(p, q)) for p, q in zip(P.tolist(), Q.tolist())]
    np.testing.assert_allclose(fwd.loss, ref, rtol=1e-12)


def test_kl_is_asymmetric_and_zero_only_at_equality():
    P = np.array([[0.5, 0.5], [0.9, 0.1]])
    Q = np.array([[0.9, 0.1], [0.9, 0.1]])
    fwd = kl_divergence(Q, P, pred_kind="probs").loss
    rev = kl_divergence(Q, P, pred_kind="probs", direction="reverse").loss
    assert fwd[0] == pytest.approx(0.5 * math.log(0.5 / 0.9) + 0.5 * math.log(0.5 / 0.1), rel=1e-14)
    assert rev[0] == pytest.approx(0.9 * math.log(0.9 / 0.5) + 0.1 * math.log(0.1 / 0.5), rel=1e-14)
    assert fwd[0] != pytest.approx(rev[0], rel=1e-3)
    assert fwd[1] == 0.0 and rev[1] == 0.0


def test_kl_base_two_gives_bits():
    res = kl_divergence(np.array([[0.5, 0.5]]), np.array([[1.0, 0.0]]), pred_kind="probs", base=2)
    assert res.loss[0] == pytest.approx(1.0, rel=1e-15)
    nats = kl_divergence(Q_T, P_T, pred_kind="probs").loss
    bits = kl_divergence(Q_T, P_T, pred_kind="probs", base=2.0).loss
    np.testing.assert_allclose(bits, nats / LN2, rtol=1e-15)


def test_kl_gradient_forward_logits_is_softmax_minus_target():
    rng = np.random.default_rng(2)
    x = rng.normal(size=(6, 4))
    P = rng.dirichlet(np.ones(4), size=6)
    g = kl_divergence_grad(x, P)
    sm = np.exp(x) / np.exp(x).sum(axis=1, keepdims=True)
    np.testing.assert_allclose(g, sm - P, rtol=1e-12, atol=1e-15)  # like cross-entropy with soft targets


@settings(max_examples=60, deadline=None)
@given(
    st.lists(st.floats(0.0, 1.0), min_size=2, max_size=6).filter(lambda v: sum(v) > 1e-3),
    st.lists(st.floats(-30.0, 30.0), min_size=6, max_size=6),
)
def test_kl_is_non_negative(p, logits):
    P = np.array([p]) / sum(p)
    x = np.array([logits[: len(p)]])
    res = kl_divergence(x, P)
    assert res.loss[0] >= -1e-12
    rev = kl_divergence(x, P, direction="reverse")
    assert rev.loss[0] >= -1e-12


# ---------------------------------------------------------------------------
# kl-divergence: extremes
# ---------------------------------------------------------------------------


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_kl_extreme_logits_are_finite_and_exact(dtype):
    P = np.array([[0.5, 0.5], [1.0, 0.0]])
    x = np.array([[1e4, -1e4], [1e4, -1e4]], dtype=dtype)
    res = kl_divergence(x, P)
    # row 0: ½(ln ½ - 0) + ½(ln ½ + 2e4) = 1e4 - ln 2; row 1: -log softmax(x)_0 = 0
    np.testing.assert_allclose(res.loss, [1e4 - LN2, 0.0], rtol=1e-15, atol=0)
    rev = kl_divergence(x, P, direction="reverse")
    # Q = [1, e^-2e4]: 1·(0 - ln ½) = ln 2; against P = [1, 0] the Q mass on class 1 underflows
    # to exactly 0 in float64 but is positive, so the reverse KL is inf.
    assert rev.loss[0] == pytest.approx(LN2, rel=1e-15)
    assert rev.loss[1] == math.inf
    both = kl_divergence(np.array([[1e4, -1e4, 0.0]]), np.array([[-1e4, 1e4, 0.0]]), target_kind="logits")
    assert both.loss[0] == pytest.approx(2e4, rel=1e-15)
    assert np.isfinite(kl_divergence_grad(x, P)).all()


def test_kl_probabilities_exactly_zero_and_one():
    P = np.array([[0.0, 1.0, 0.0], [0.0, 1.0, 0.0], [1.0, 0.0, 0.0]])
    Q = np.array([[0.0, 1.0, 0.0], [1 / 3, 1 / 3, 1 / 3], [0.0, 1.0, 0.0]])
    res = kl_divergence(Q, P, pred_kind="probs")
    assert res.loss[0] == 0.0
    assert res.loss[1] == pytest.approx(math.log(3.0), rel=1e-15)
    assert res.loss[2] == math.inf
    rev = kl_divergence(Q, P, pred_kind="probs", direction="reverse")
    assert rev.loss[0] == 0.0 and rev.loss[1] == math.inf and rev.loss[2] == math.inf


# ---------------------------------------------------------------------------
# kl-divergence: errors
# ---------------------------------------------------------------------------


def test_kl_target_not_summing_to_one_names_the_row():
    P = np.array([[0.5, 0.5], [0.5, 0.4], [0.2, 0.8]])
    with pytest.raises(InputError) as err:
        kl_divergence(np.zeros((3, 2)), P)
    assert err.value.role == "target"
    assert err.value.rows == [1]
    assert "sum to 0.9" in err.value.message
    res = kl_divergence(np.zeros((3, 2)), P, prob_atol=0.2)  # a looser tolerance accepts it as is
    assert res.loss[1] == pytest.approx(0.5 * math.log(1.0) + 0.4 * math.log(0.8), rel=1e-14)


def test_kl_bad_prediction_values_name_role_and_row():
    with pytest.raises(InputError) as err:
        kl_divergence(np.array([[0.5, 0.5, 0.0], [1.2, -0.2, 0.0]]), P_T, pred_kind="probs")
    assert (err.value.role, err.value.rows) == ("pred", [1])
    assert "outside [0, 1]" in err.value.message
    with pytest.raises(InputError) as err:
        kl_divergence(np.array([[-1.0, -1.0, -1.0], [0.5, -1.0, -2.0]]), P_T, pred_kind="log-probs")
    assert (err.value.role, err.value.rows) == ("pred", [1])  # a log-probability above 0
    with pytest.raises(InputError) as err:
        kl_divergence(np.log(np.array([[0.2, 0.3, 0.5], [0.2, 0.3, 0.4]])), P_T, pred_kind="log-probs")
    assert (err.value.role, err.value.rows) == ("pred", [1])  # exps sum to 0.9
    with pytest.raises(InputError) as err:
        kl_divergence(np.array([[0.0, 1.0, np.inf], [0.0, 0.0, 0.0]]), P_T)
    assert (err.value.role, err.value.rows) == ("pred", [0])


def test_kl_shape_mismatch():
    with pytest.raises(InputError) as err:
        kl_divergence(np.zeros((2, 4)), P_T)
    assert "4 columns" in err.value.message and err.value.role == "pred"
    with pytest.raises(InputError):
        kl_divergence(np.array([0.5, 0.5]), np.array([0.5, 0.5]))


@pytest.mark.parametrize("base", [1.0, 0.0, -2.0, math.inf])
def test_kl_bad_base_is_a_param_error(base):
    with pytest.raises(ParamError) as err:
        kl_divergence(Q_T, P_T, pred_kind="probs", base=base)
    assert err.value.param == "base"


def test_bad_direction_is_a_param_error():
    with pytest.raises(ParamError):
        kl_divergence(Q_T, P_T, direction="sideways")


# ---------------------------------------------------------------------------
# js-divergence
# ---------------------------------------------------------------------------


def test_js_equals_scipy_jensenshannon_squared():
    rng = np.random.default_rng(3)
    P = rng.dirichlet(np.ones(7) * 0.4, size=30)
    Q = rng.dirichlet(np.ones(7) * 0.4, size=30)
    P[0] = np.eye(7)[0]
    Q[0] = np.eye(7)[1]
    for base in (None, 2.0):
        res = js_divergence(Q, P, pred_kind="probs", base=base or math.e)
        ref = jensenshannon(P, Q, base=base, axis=1) ** 2
        np.testing.assert_allclose(res.loss, ref, rtol=1e-10)
    # From logits: the same as from the probabilities they encode (rows without zeros).
    a = js_divergence(np.log(Q[1:]) + 2.0, P[1:]).loss
    b = js_divergence(Q[1:], P[1:], pred_kind="probs").loss
    np.testing.assert_allclose(a, b, rtol=1e-12)


def test_js_disjoint_supports_reach_exactly_ln2():
    P = np.array([[1.0, 0.0], [0.5, 0.5]])
    Q = np.array([[0.0, 1.0], [0.5, 0.5]])
    res = js_divergence(Q, P, pred_kind="probs")
    assert res.loss[0] == pytest.approx(LN2, rel=1e-15)
    assert res.loss[1] == 0.0
    bits = js_divergence(Q, P, pred_kind="probs", base=2)
    assert bits.loss[0] == pytest.approx(1.0, rel=1e-15)
    # Extreme logits: essentially disjoint, still finite and ln 2.
    ext = js_divergence(np.array([[-1e4, 1e4]]), np.array([[1e4, -1e4]]), target_kind="logits")
    assert ext.loss[0] == pytest.approx(LN2, rel=1e-15)


@settings(max_examples=80, deadline=None)
@given(
    st.lists(st.floats(0.0, 1.0), min_size=5, max_size=5).filter(lambda v: sum(v) > 1e-3),
    st.lists(st.floats(0.0, 1.0), min_size=5, max_size=5).filter(lambda v: sum(v) > 1e-3),
)
def test_js_is_bounded_by_ln2_and_symmetric(p, q):
    P = np.array([p]) / sum(p)
    Q = np.array([q]) / sum(q)
    a = js_divergence(Q, P, pred_kind="probs").loss[0]
    b = js_divergence(P, Q, pred_kind="probs").loss[0]
    assert -1e-15 <= a <= LN2 * (1 + 1e-14)
    assert a == pytest.approx(b, rel=1e-12, abs=1e-15)
    assert js_divergence(Q, P, pred_kind="probs", base=2).loss[0] <= 1.0 + 1e-14


def test_js_gradient_is_half_log_ratio_to_mixture():
    P = np.array([[0.2, 0.8, 0.0]])
    Q = np.array([[0.5, 0.25, 0.25]])
    g = js_divergence_grad(Q, P, pred_kind="probs")
    M = 0.5 * (P + Q)
    np.testing.assert_allclose(g, 0.5 * np.log(Q / M), rtol=1e-14)
    assert g[0, 2] == pytest.approx(0.5 * LN2, rel=1e-15)  # P = 0: Q/M = 2


# ---------------------------------------------------------------------------
# gaussian-kl
# ---------------------------------------------------------------------------


def test_gaussian_kl_closed_form_check_value():
    # KL(N(1, 0.5²) ‖ N(-0.5, 2²)) = 1.1987944 (loss-semantics §7; σ, not σ²)
    res = gaussian_kl(np.array([1.0]), np.array([math.log(0.25)]), np.array([-0.5]), np.array([math.log(4.0)]))
    assert res.loss[0] == pytest.approx(1.1987944, rel=1e-7)
    exact = math.log(2.0 / 0.5) + (0.25 + 1.5**2) / (2 * 4.0) - 0.5
    assert res.loss[0] == pytest.approx(exact, rel=1e-15)
    # (N, 1) columns give the same
    res2 = gaussian_kl(np.array([[1.0]]), np.array([[math.log(0.25)]]), np.array([[-0.5]]), np.array([[math.log(4.0)]]))
    assert res2.loss[0] == res.loss[0]


def test_gaussian_kl_default_prior_is_the_vae_term():
    rng = np.random.default_rng(4)
    mu = rng.normal(size=(12, 5))
    lv = rng.normal(size=(12, 5))
    res = gaussian_kl(mu, lv)
    ref = [
        -0.5 * math.fsum(1 + l - m * m - math.exp(l) for m, l in zip(mr, lr))
        for mr, lr in zip(mu.tolist(), lv.tolist())
    ]
    np.testing.assert_allclose(res.loss, ref, rtol=1e-12)
    explicit = gaussian_kl(mu, lv, np.zeros_like(mu), np.zeros_like(lv))
    np.testing.assert_array_equal(res.loss, explicit.loss)


def test_gaussian_kl_reverse_swaps_the_distributions():
    rng = np.random.default_rng(5)
    mu, lv, pm, plv = (rng.normal(size=(9, 3)) for _ in range(4))
    fwd = gaussian_kl(pm, plv, mu, lv)
    rev = gaussian_kl(mu, lv, pm, plv, direction="reverse")
    np.testing.assert_allclose(fwd.loss, rev.loss, rtol=1e-13)
    assert not np.allclose(gaussian_kl(mu, lv, pm, plv).loss, rev.loss)


def test_full_covariance_with_diagonal_matrices_equals_diagonal_form():
    rng = np.random.default_rng(6)
    mu, lv, pm, plv = (rng.normal(size=(8, 4)) for _ in range(4))
    diag = gaussian_kl(mu, lv, pm, plv).loss
    cov = np.zeros((8, 4, 4))
    pcov = np.zeros((8, 4, 4))
    idx = np.arange(4)
    cov[:, idx, idx] = np.exp(lv)
    pcov[:, idx, idx] = np.exp(plv)
    np.testing.assert_allclose(gaussian_kl(mu, cov, pm, pcov).loss, diag, rtol=1e-12)
    np.testing.assert_allclose(gaussian_kl(mu, cov, pm, plv).loss, diag, rtol=1e-12)  # mixed
    np.testing.assert_allclose(gaussian_kl(mu, lv, pm, pcov).loss, diag, rtol=1e-12)


def test_full_covariance_against_inverse_and_slogdet():
    cq = np.array([[[2.0, 0.3], [0.3, 0.5]]])
    cp = np.array([[[1.0, -0.4], [-0.4, 3.0]]])
    mq = np.array([[0.5, -1.0]])
    mp = np.array([[-0.2, 0.7]])
    res = gaussian_kl(mq, cq, mp, cp)
    inv = np.linalg.inv(cp[0])
    d = (mp - mq)[0]
    ref = 0.5 * (np.trace(inv @ cq[0]) + d @ inv @ d - 2 + np.linalg.slogdet(cp[0])[1] - np.linalg.slogdet(cq[0])[1])
    assert res.loss[0] == pytest.approx(ref, rel=1e-13)
    g = gaussian_kl_grad(mq, cq, mp, cp)
    np.testing.assert_allclose(g[0], inv @ (mq - mp)[0], rtol=1e-13)


def test_nearly_equal_variances_keep_their_digits():
    getcontext().prec = 60
    t = 1e-9
    res = gaussian_kl(np.zeros((1, 1)), np.array([[t]]))
    # ½(e^t - 1 - t), exactly
    exact = float((Decimal(t).exp() - 1 - Decimal(t)) / 2)
    assert res.loss[0] == pytest.approx(exact, rel=1e-13)
    # the naive formula ½(e^t - 1 - t) in float64 loses every digit here
    assert abs(0.5 * (math.exp(t) - 1 - t) - exact) > 1e-3 * exact
    for v in (-0.3, -5e-3, 1e-5, 9e-3, 0.011, 2.0):
        ref = float(Decimal(v).exp() - 1 - Decimal(v))
        assert expm1_minus_x(np.array([v]))[0] == pytest.approx(ref, rel=1e-14)


def test_gaussian_kl_extremes():
    res = gaussian_kl(np.array([[1e6, 0.0]]), np.array([[0.0, 30.0]]))
    exact = 0.5 * (1e12 + (math.exp(30.0) - 1 - 30.0))
    assert res.loss[0] == pytest.approx(exact, rel=1e-14)
    tiny = gaussian_kl(np.array([[0.0]]), np.array([[-700.0]]))
    assert tiny.loss[0] == pytest.approx(0.5 * (700.0 - 1.0), rel=1e-14)


def test_non_spd_covariance_names_the_row():
    rng = np.random.default_rng(7)
    a = rng.normal(size=(5, 3, 3))
    cov = a @ np.swapaxes(a, 1, 2) + 0.1 * np.eye(3)
    cov[2] = np.array([[1.0, 2.0, 0.0], [2.0, 1.0, 0.0], [0.0, 0.0, 1.0]])  # eigenvalue -1
    cov[4] = np.diag([1.0, 0.0, 1.0])  # singular
    with pytest.raises(InputError) as err:
        gaussian_kl(np.zeros((5, 3)), cov)
    assert err.value.role == "logvar"
    assert err.value.rows == [2, 4]
    assert "not positive definite" in err.value.message
    with pytest.raises(InputError) as err:
        gaussian_kl(np.zeros((5, 3)), np.zeros((5, 3)), None, cov)
    assert err.value.role == "prior-logvar" and err.value.rows[0] == 2
    with pytest.raises(InputError) as err:
        gaussian_kl_grad(np.zeros((5, 3)), cov)
    assert err.value.rows == [2, 4]


def test_non_symmetric_covariance_is_rejected():
    cov = np.stack([np.eye(2), np.array([[1.0, 0.5], [0.0, 1.0]])])
    with pytest.raises(InputError) as err:
        gaussian_kl(np.zeros((2, 2)), cov)
    assert err.value.rows == [1]
    assert "not symmetric" in err.value.message


def test_gaussian_kl_shape_errors():
    with pytest.raises(InputError) as err:
        gaussian_kl(np.zeros((3, 2)), np.zeros((3, 4)))
    assert err.value.role == "logvar" and "4 columns" in err.value.message
    with pytest.raises(InputError) as err:
        gaussian_kl(np.zeros((3, 2)), np.zeros((3, 3, 3)))
    assert err.value.role == "logvar"
    with pytest.raises(InputError) as err:
        gaussian_kl(np.zeros((3, 2)), np.zeros((3, 2)), np.zeros((3, 1)))
    assert err.value.role == "prior-mu"
    with pytest.raises(InputError) as err:
        gaussian_kl(np.zeros((3, 2)), np.array([[0.0, 0.0], [np.inf, 0.0], [0.0, 0.0]]))
    assert err.value.rows == [1]


def test_gaussian_kl_gradient_direction():
    mu = np.array([[1.0, -2.0]])
    lv = np.array([[0.5, -0.5]])
    pm = np.array([[0.5, 0.0]])
    plv = np.array([[1.0, 2.0]])
    np.testing.assert_allclose(gaussian_kl_grad(mu, lv, pm, plv), (mu - pm) * np.exp(-plv), rtol=1e-15)
    np.testing.assert_allclose(
        gaussian_kl_grad(mu, lv, pm, plv, direction="reverse"), (mu - pm) * np.exp(-lv), rtol=1e-15
    )


# ---------------------------------------------------------------------------
# through the CLI (the engine's view of these losses)
# ---------------------------------------------------------------------------


def test_cli_kl_headline_is_batchmean(cli, tmp_path):
    from conftest import write_csv

    path = write_csv(tmp_path / "kl.csv", {"p": P_T, "q": Q_T})
    res = cli(["compute", "kl", f"{path}:q_*", f"{path}:p_*", "--pred-kind", "probs", "-f", "json"])
    assert res.code == 0, res.err
    assert res.json["value"] == pytest.approx(0.3925900, rel=1e-6)
    res = cli(["compute", "kl", f"{path}:q_*", f"{path}:p_*", "--pred-kind", "probs", "--base", "1"])
    assert res.code == 2 and "base" in res.err


def test_cli_non_spd_covariance_error_names_file_and_row(cli, tmp_path):
    import pyarrow as pa
    import pyarrow.parquet as pq

    cov = np.stack([np.eye(2), np.eye(2), np.array([[1.0, 3.0], [3.0, 1.0]])])
    arr = pa.FixedSizeListArray.from_arrays(pa.FixedSizeListArray.from_arrays(pa.array(cov.ravel()), 2), 2)
    path = str(tmp_path / "g.parquet")
    pq.write_table(pa.table({"mu": pa.FixedSizeListArray.from_arrays(pa.array(np.zeros(6)), 2), "cov": arr}), path)
    res = cli(["compute", "gaussian-kl", f"{path}:mu", f"{path}:cov"])
    assert res.code == 1, (res.out, res.err)
    assert "row 2" in res.err and "positive definite" in res.err
    assert "Traceback" not in res.err


def test_cli_gaussian_kl_full_covariance_sample_matches_closed_form(cli):
    """The bundled full-covariance example against ½[tr(Σp⁻¹Σq) + Δᵀ Σp⁻¹ Δ - D + log det Σp - log det Σq]
    computed here with inverses and slogdet (the kernel uses Cholesky factors)."""
    import os

    import pyarrow.parquet as pq

    path = os.path.join(
        os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "sample_data", "divergence_gaussian_full.parquet"
    )
    t = pq.read_table(path)

    def arr(name):
        return np.array(t.column(name).to_pylist(), dtype=np.float64)

    mu, cov, pmu, pcov = arr("mu"), arr("cov"), arr("prior_mu"), arr("prior_cov")
    ref = []
    for q_mu, q_cov, p_mu, p_cov in zip(mu, cov, pmu, pcov):
        inv = np.linalg.inv(p_cov)
        delta = p_mu - q_mu
        ref.append(
            0.5
            * (
                np.trace(inv @ q_cov)
                + delta @ inv @ delta
                - len(q_mu)
                + np.linalg.slogdet(p_cov)[1]
                - np.linalg.slogdet(q_cov)[1]
            )
        )
    res = cli(
        ["compute", "gaussian-kl", f"{path}:mu", f"{path}:cov", f"{path}:prior_mu", f"{path}:prior_cov", "-f", "json"]
    )
    assert res.code == 0, res.err
    assert res.json["value"] == pytest.approx(float(np.mean(ref)), rel=1e-10)
