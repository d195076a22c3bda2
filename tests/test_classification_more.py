"""nll, focal, softmax-focal, entropy and token-cross-entropy against independent references.

Oracles: numbers PyTorch 2.13 / torchvision 0.28 / SciPy 1.17 printed (from the team's
loss-semantics reference, copied here as literals), closed forms evaluated with the
``math`` module, plain-Python float64 loops, and relationships between losses
(focal with gamma=0, alpha=-1 is BCE; nll of log_softmax is cross-entropy; ...).
"""

from __future__ import annotations

import math

import numpy as np
import pytest

from conftest import finite_difference, ref_log_softmax
from lossctl import registry
from lossctl.errors import InputError, ParamError, UsageError
from lossctl.losses.classification import (
    binary_cross_entropy,
    binary_cross_entropy_grad,
    cross_entropy,
    cross_entropy_grad,
    entropy,
    entropy_grad,
    focal,
    focal_grad,
    nll,
    nll_grad,
    softmax_focal,
    softmax_focal_grad,
    token_cross_entropy,
    token_cross_entropy_grad,
)
from lossctl.ragged import Ragged

X = np.array([[1.0, 2.0, 3.0], [1.0, 0.0, -1.0]])
Y = np.array([0, 1])
W = [1.0, 2.0, 3.0]


def lsm(x):
    return np.array([ref_log_softmax(r) for r in np.asarray(x, dtype=float).tolist()])


def headline(res):
    den = res.den if res.den is not None else np.ones_like(res.loss)
    num = res.num if res.num is not None else res.loss
    keep = ~res.ignored if res.ignored is not None else np.ones(len(res.loss), bool)
    return num[keep].sum() / den[keep].sum()


# ===========================================================================
# nll
# ===========================================================================


def test_nll_of_log_softmax_matches_pytorch_numbers():
    res = nll(lsm(X), Y)
    np.testing.assert_allclose(res.loss, [2.4076059, 1.4076059], rtol=1e-6)
    assert headline(res) == pytest.approx(1.9076059, rel=1e-6)
    res = nll(lsm(X), Y, weight=W)
    np.testing.assert_allclose(res.loss, [2.4076059, 2.8152118], rtol=1e-6)
    assert headline(res) == pytest.approx(1.7409391, rel=1e-6)  # Σ w[y] l / Σ w[y]


@pytest.mark.parametrize("weight", [None, [0.5, 2.0, 1.0, 3.0, 0.1]])
@pytest.mark.parametrize("ignore_index", [-100, 3])
def test_nll_equals_cross_entropy_on_log_softmax(weight, ignore_index):
    rng = np.random.default_rng(21)
    x = rng.normal(size=(60, 5)) * 3
    y = rng.integers(0, 5, size=60)
    y[::7] = ignore_index
    a = cross_entropy(x, y, weight=weight, ignore_index=ignore_index)
    b = nll(lsm(x), y, weight=weight, ignore_index=ignore_index)
    np.testing.assert_allclose(b.loss, a.loss, rtol=1e-12, atol=1e-14)
    np.testing.assert_array_equal(b.den, a.den)
    np.testing.assert_array_equal(b.ignored, a.ignored)
    assert b.ignored.sum() == (y == ignore_index).sum() > 0
    g = nll_grad(lsm(x), y, weight=weight, ignore_index=ignore_index)
    assert (g[y == ignore_index] == 0).all()
    keep = y != ignore_index
    expected = -(np.ones(5) if weight is None else np.asarray(weight))[y[keep]]
    np.testing.assert_array_equal(g[keep, y[keep]], expected)
    assert (g != 0).sum() == keep.sum()


def test_nll_rejects_values_pytorch_would_accept():
    # torch: nll_loss([[1, 2, 3]], [2]) = -3.0; lossctl validates log-probabilities.
    with pytest.raises(InputError) as err:
        nll(np.array([[-1.1, -1.1, -1.1], [1.0, 2.0, 3.0], [-0.5, 0.5, -1.0]]), np.array([0, 2, 0]))
    assert err.value.role == "pred"
    assert err.value.rows == [1, 2]  # values above 0
    assert "above 0" in err.value.message
    with pytest.raises(InputError) as err:
        nll(np.array([[-math.log(3)] * 3, [-1.0, -0.5, -0.2]]), np.array([0, 2]))
    assert err.value.rows == [1]  # exps sum to 1.58
    with pytest.raises(InputError) as err:
        nll(np.log(np.array([[0.2, 0.3, 0.5], [0.5, 0.4, 0.05]])), np.array([0, 1]))
    assert err.value.rows == [1]
    assert "sum to 0.95" in err.value.message
    res = nll(np.log(np.array([[0.2, 0.3, 0.5], [0.5, 0.4, 0.05]])), np.array([0, 1]), prob_atol=0.1)
    np.testing.assert_allclose(res.loss, [-math.log(0.2), -math.log(0.4)], rtol=1e-14)


def test_nll_minus_inf_log_probability():
    lp = np.array([[-np.inf, 0.0], [-np.inf, 0.0]])
    res = nll(lp, np.array([1, 0]))
    assert res.loss[0] == 0.0
    assert res.loss[1] == math.inf


def test_nll_errors():
    lp = lsm(X)
    with pytest.raises(InputError) as err:
        nll(lp, np.array([0, 3]))
    assert err.value.rows == [1] and err.value.role == "target"
    with pytest.raises(InputError):
        nll(lp, np.exp(lp))  # soft targets are a cross-entropy feature
    with pytest.raises(ParamError) as perr:
        nll(lp, Y, weight=[1.0, 2.0])
    assert perr.value.param == "weight"


def test_nll_all_ignored_and_extras():
    res = nll(lsm(X), np.array([-100, -100]))
    assert res.ignored.all() and res.den.sum() == 0 and (res.loss == 0).all()
    res = nll(lsm(X), np.array([2, -100]), extras=True)
    assert res.columns["p_true"][0] == pytest.approx(math.exp(ref_log_softmax([1.0, 2.0, 3.0])[2]), rel=1e-14)
    assert math.isnan(res.columns["p_true"][1])
    assert res.columns["pred_class"].tolist() == [2, 0]


# ===========================================================================
# focal (sigmoid)
# ===========================================================================


def test_focal_matches_torchvision_numbers():
    x = np.array([0.5, -1.0, 2.0, -3.0])
    y = np.array([1.0, 0.0, 0.0, 1.0])
    # torchvision ran in float32 and printed 7 significant digits
    np.testing.assert_allclose(focal(x, y).loss, [0.0168934, 0.0169935, 1.2375586, 0.6915702], rtol=2e-7, atol=5e-8)
    assert focal(np.array([1000.0]), np.array([0.0])).loss[0] == 750.0


def test_focal_confident_correct_is_tiny_and_exact():
    # torchvision (float32) prints 0.0 for x=20, y=1: 1-p_t rounds to 0 in float32.
    # In float64: 0.25 · (1-σ(20))² · softplus(-20), with 1-σ(20) = 1/(1+e^20).
    v = focal(np.array([20.0, 1e4]), np.array([1.0, 1.0])).loss
    q = 1.0 / (1.0 + math.exp(20.0))
    assert v[0] == pytest.approx(0.25 * q * q * math.log1p(math.exp(-20.0)), rel=1e-12)
    assert 0 < v[0] < 1e-26
    assert v[1] == 0.0


def test_focal_extreme_logits_finite():
    x = np.array([1e4, -1e4, 1e4, -1e4])
    y = np.array([0.0, 1.0, 1.0, 0.0])
    res = focal(x, y)
    np.testing.assert_array_equal(res.loss, [0.75 * 1e4, 0.25 * 1e4, 0.0, 0.0])
    g = focal_grad(x, y)
    assert np.isfinite(g).all()
    np.testing.assert_allclose(g, [0.75, -0.25, 0.0, 0.0], atol=1e-300)


@pytest.mark.parametrize("shape", [(50,), (50, 3)])
def test_focal_gamma_0_alpha_off_is_bce(shape):
    rng = np.random.default_rng(8)
    x = rng.normal(size=shape) * 6
    y = rng.random(shape)
    a = focal(x, y, gamma=0.0, alpha=-1.0)
    b = binary_cross_entropy(x, y)
    np.testing.assert_allclose(a.loss, b.loss, rtol=1e-14, atol=0)
    np.testing.assert_allclose(
        focal_grad(x, y, gamma=0.0, alpha=-1.0), binary_cross_entropy_grad(x, y), rtol=1e-14, atol=1e-300
    )
    # alpha alone weights the two terms: α·y·softplus(-x) + (1-α)(1-y)·softplus(x) for hard labels
    yh = (y > 0.5).astype(float)
    c = focal(x, yh, gamma=0.0, alpha=0.3)
    elem = np.where(yh == 1, 0.3, 0.7) * binary_cross_entropy(x.reshape(-1), yh.reshape(-1)).loss.reshape(shape)
    np.testing.assert_allclose(c.loss, elem if elem.ndim == 1 else elem.mean(axis=1), rtol=1e-14)


def test_focal_soft_target_closed_form():
    # x = 0, y = 0.5: p = 1/2, ce = log 2, 1-p_t = 1/2, α_t = 1/2 for every α
    res = focal(np.array([0.0, 0.0]), np.array([0.5, 0.5]), alpha=0.25, gamma=2.0)
    np.testing.assert_allclose(res.loss, [0.5 * 0.25 * math.log(2.0)] * 2, rtol=1e-15)


def test_focal_is_at_most_weighted_bce_and_multilabel_is_mean():
    rng = np.random.default_rng(3)
    x = rng.normal(size=(40, 4)) * 3
    y = (rng.random((40, 4)) < 0.3).astype(float)
    f = focal(x, y, gamma=2.0, alpha=-1.0).loss
    b = binary_cross_entropy(x, y).loss
    assert (f <= b).all() and (f < b).any()
    cols = np.stack([focal(x[:, k], y[:, k]).loss for k in range(4)], axis=1)
    np.testing.assert_allclose(focal(x, y).loss, cols.mean(axis=1), rtol=1e-14)


def test_focal_gradient_small_gamma_and_confident():
    # gamma < 1: (1-p_t)^(γ-1) is singular as p_t -> 1; the log-space form stays finite.
    x = np.array([-3.0, 0.2, 4.0, 15.0, -15.0])
    y = np.array([0.0, 1.0, 1.0, 1.0, 0.7])
    for gamma in (0.5, 1.0, 2.0, 3.5):
        g = focal_grad(x, y, alpha=0.4, gamma=gamma)
        fd = finite_difference(lambda z: focal(z, y, alpha=0.4, gamma=gamma).loss, x)
        np.testing.assert_allclose(g, fd, rtol=1e-6, atol=1e-9)


@pytest.mark.parametrize(
    "kwargs, param", [({"alpha": 1.5}, "alpha"), ({"alpha": -0.5}, "alpha"), ({"gamma": -1.0}, "gamma")]
)
def test_focal_bad_parameters(kwargs, param):
    with pytest.raises(ParamError) as err:
        focal(np.zeros(3), np.zeros(3), **kwargs)
    assert err.value.param == param


def test_focal_bad_inputs_name_rows():
    with pytest.raises(InputError) as err:
        focal(np.zeros(4), np.array([0.0, 1.0, 1.2, -0.1]))
    assert err.value.role == "target" and err.value.rows == [2, 3]
    with pytest.raises(InputError) as err:
        focal(np.array([0.0, np.inf, 1.0]), np.zeros(3))
    assert err.value.role == "pred" and err.value.rows == [1]
    with pytest.raises(InputError):
        focal(np.zeros((4, 2)), np.zeros((4, 3)))


def test_focal_registry_alpha_range():
    spec = registry.get("focal")
    p = spec.param("alpha")
    assert p.parse("-1", "focal") == -1.0 and p.parse("0.25", "focal") == 0.25
    for bad in ("1.5", "-0.5"):
        with pytest.raises(UsageError):
            p.parse(bad, "focal")
    with pytest.raises(UsageError):
        spec.param("gamma").parse("-0.1", "focal")
    assert spec.defaults() == {"alpha": 0.25, "gamma": 2.0}


def test_focal_extras():
    res = focal(np.array([2.0, -1.0]), np.array([1.0, 1.0]), extras=True)
    np.testing.assert_allclose(res.columns["p_true"], 1 / (1 + np.exp(-np.array([2.0, -1.0]))), rtol=1e-14)
    assert res.columns["pred_class"].tolist() == [1, 0]


# ===========================================================================
# softmax-focal
# ===========================================================================


def test_softmax_focal_from_pytorch_cross_entropy_numbers():
    ce = np.array([2.4076059, 1.4076059])  # F.cross_entropy(X, Y, reduction='none')
    for gamma in (0.0, 0.5, 2.0):
        expected = (1 - np.exp(-ce)) ** gamma * ce
        np.testing.assert_allclose(softmax_focal(X, Y, gamma=gamma).loss, expected, rtol=1e-6)
    expected = np.array([W[0], W[1]]) * (1 - np.exp(-ce)) ** 2 * ce
    np.testing.assert_allclose(softmax_focal(X, Y, alpha=W).loss, expected, rtol=1e-6)


def test_softmax_focal_gamma_0_is_cross_entropy():
    rng = np.random.default_rng(4)
    x = rng.normal(size=(40, 6)) * 4
    y = rng.integers(0, 6, size=40)
    np.testing.assert_allclose(softmax_focal(x, y, gamma=0.0).loss, cross_entropy(x, y).loss, rtol=1e-14)
    np.testing.assert_allclose(softmax_focal_grad(x, y, gamma=0.0), cross_entropy_grad(x, y), rtol=1e-13, atol=1e-16)
    w = [0.5, 1, 2, 1, 1, 3]
    np.testing.assert_allclose(
        softmax_focal(x, y, gamma=0.0, alpha=w).loss, cross_entropy(x, y, weight=w).loss, rtol=1e-14
    )


def test_softmax_focal_binary_logits_equal_sigmoid_focal_without_alpha():
    # Two classes with logits [0, z]: softmax = sigmoid(z), so it is sigmoid focal (alpha off).
    rng = np.random.default_rng(12)
    z = rng.normal(size=30) * 4
    y = rng.integers(0, 2, size=30)
    x = np.stack([np.zeros(30), z], axis=1)
    np.testing.assert_allclose(
        softmax_focal(x, y, gamma=2.0).loss, focal(z, y.astype(float), alpha=-1.0).loss, rtol=1e-12
    )


def test_softmax_focal_extremes_keep_digits():
    x = np.array([[30.0, 0.0], [1e4, 0.0], [1e4, 0.0], [-1e4, 1e4]], dtype=np.float64)
    y = np.array([0, 0, 1, 0])
    res = softmax_focal(x, y)
    q = 1.0 / (1.0 + math.exp(30.0))  # 1 - p_y, exactly
    assert res.loss[0] == pytest.approx(q * q * math.log1p(math.exp(-30.0)), rel=1e-12)
    assert res.loss[0] > 0
    np.testing.assert_array_equal(res.loss[1:], [0.0, 1e4, 2e4])
    g = softmax_focal_grad(x, y)
    assert np.isfinite(g).all()
    np.testing.assert_allclose(g[2], [1.0, -1.0])


def test_softmax_focal_gradient_small_gamma_near_certain():
    x = np.array([[12.0, 0.0, -1.0], [0.3, 0.1, -0.2], [-2.0, 5.0, 1.0]])
    y = np.array([0, 2, 1])
    for gamma in (0.3, 1.0, 2.5):
        g = softmax_focal_grad(x, y, gamma=gamma, alpha=[1.0, 0.5, 2.0])
        fd = finite_difference(lambda z: softmax_focal(z, y, gamma=gamma, alpha=[1.0, 0.5, 2.0]).loss, x)
        np.testing.assert_allclose(g, fd, rtol=1e-6, atol=1e-10)


def test_softmax_focal_errors():
    with pytest.raises(ParamError) as err:
        softmax_focal(X, Y, alpha=[1.0, 2.0])
    assert err.value.param == "alpha" and "3 classes" in err.value.message
    with pytest.raises(ParamError):
        softmax_focal(X, Y, gamma=-1.0)
    with pytest.raises(InputError) as ierr:  # no ignore-index: -100 is just out of range
        softmax_focal(X, np.array([1, -100]))
    assert ierr.value.rows == [1]
    with pytest.raises(InputError) as ierr:
        softmax_focal(np.array([[0.0, np.nan], [1.0, 2.0]]), np.array([0, 1]))
    assert ierr.value.rows == [0] and ierr.value.role == "pred"


def test_softmax_focal_float32_and_extras():
    x32 = X.astype(np.float32)
    np.testing.assert_allclose(softmax_focal(x32, Y).loss, softmax_focal(X, Y).loss, rtol=1e-6)
    res = softmax_focal(X, Y, extras=True)
    np.testing.assert_allclose(res.columns["p_true"], np.exp(-np.array([2.4076059, 1.4076059])), rtol=1e-6)


# ===========================================================================
# entropy
# ===========================================================================


def test_entropy_matches_scipy_numbers():
    # scipy.stats.entropy([2, 1, 1]) = 1.0397208 nats, 1.5 bits (SciPy normalises; we pass probabilities)
    p = np.array([[0.5, 0.25, 0.25]])
    assert entropy(p, pred_kind="probs").loss[0] == pytest.approx(1.0397208, rel=1e-7)
    assert entropy(p, pred_kind="probs", base=2.0).loss[0] == pytest.approx(1.5, rel=1e-15)


def test_entropy_against_scipy_random_rows():
    from scipy.stats import entropy as sp_entropy

    rng = np.random.default_rng(5)
    p = rng.dirichlet(np.full(7, 0.3), size=100)
    p[::10, :3] = 0.0
    p /= p.sum(axis=1, keepdims=True)
    for base in (math.e, 2.0, 10.0, 0.5):
        ref = sp_entropy(p, base=base, axis=1)
        np.testing.assert_allclose(entropy(p, pred_kind="probs", base=base).loss, ref, rtol=1e-12, atol=1e-15)


def test_entropy_kinds_agree_and_bounds():
    rng = np.random.default_rng(6)
    x = rng.normal(size=(50, 8)) * 3
    lp = lsm(x)
    a = entropy(x).loss
    b = entropy(np.exp(lp), pred_kind="probs").loss
    c = entropy(lp, pred_kind="log-probs").loss
    np.testing.assert_allclose(a, b, rtol=1e-12)
    np.testing.assert_allclose(a, c, rtol=1e-12)
    assert (a > 0).all() and (a < math.log(8)).all()
    # entropy = cross-entropy of the prediction with itself
    np.testing.assert_allclose(a, cross_entropy(x, np.exp(lp)).loss, rtol=1e-12)


def test_entropy_uniform_and_one_hot():
    res = entropy(np.zeros((2, 4)), base=2.0).loss
    np.testing.assert_allclose(res, [2.0, 2.0], rtol=1e-15)
    one_hot = entropy(np.array([[0.0, 1.0, 0.0]]), pred_kind="probs").loss
    assert one_hot[0] == 0.0 and not math.copysign(1.0, one_hot[0]) < 0  # +0.0, not -0.0
    logits = entropy(np.array([[1e4, -1e4, 0.0], [1e4, 1e4, -1e4]])).loss
    np.testing.assert_allclose(logits, [0.0, math.log(2.0)], rtol=1e-15, atol=0)
    lp = entropy(np.array([[0.0, -np.inf]]), pred_kind="log-probs").loss
    assert lp[0] == 0.0


def test_entropy_validates_instead_of_normalising():
    with pytest.raises(InputError) as err:
        entropy(np.array([[0.5, 0.5], [2.0, 1.0]]), pred_kind="probs")  # scipy would normalise [2, 1]
    assert err.value.rows == [1] and err.value.role == "pred"
    with pytest.raises(InputError) as err:
        entropy(np.array([[0.5, 0.5], [0.6, 0.3]]), pred_kind="probs")
    assert err.value.rows == [1] and "sum to 0.9" in err.value.message
    with pytest.raises(InputError):
        entropy(np.array([[0.1, 0.2]]), pred_kind="log-probs")
    with pytest.raises(InputError):
        entropy(np.array([[0.0, np.inf]]))


@pytest.mark.parametrize("base", [1.0, 0.0, -2.0])
def test_entropy_bad_base(base):
    with pytest.raises(ParamError) as err:
        entropy(np.zeros((1, 3)), base=base)
    assert err.value.param == "base"


def test_entropy_gradients():
    rng = np.random.default_rng(9)
    x = rng.normal(size=(5, 4))
    g = entropy_grad(x, base=2.0)
    fd = finite_difference(lambda z: entropy(z, base=2.0).loss, x)
    np.testing.assert_allclose(g, fd, rtol=1e-6, atol=1e-9)
    np.testing.assert_allclose(g.sum(axis=1), 0.0, atol=1e-15)  # shift invariance of softmax
    p = np.array([[0.0, 0.25, 0.75]])
    gp = entropy_grad(p, pred_kind="probs")
    assert gp[0, 0] == math.inf
    np.testing.assert_allclose(gp[0, 1:], [-(math.log(0.25) + 1), -(math.log(0.75) + 1)], rtol=1e-15)
    gl = entropy_grad(np.array([[-np.inf, 0.0]]), pred_kind="log-probs")
    np.testing.assert_array_equal(gl, [[0.0, -1.0]])


# ===========================================================================
# token-cross-entropy
# ===========================================================================


def _tokens(seed=0, n=6, t=7, v=9, frac_ignored=0.3):
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, t, v)) * 3
    y = rng.integers(0, v, size=(n, t))
    y[rng.random((n, t)) < frac_ignored] = -100
    y[3] = -100  # a sequence with no tokens left
    return x, y


def test_token_ce_headline_equals_flat_cross_entropy():
    x, y = _tokens()
    n, t, v = x.shape
    res = token_cross_entropy(x, y)
    flat = cross_entropy(x.reshape(-1, v), y.reshape(-1))  # F.cross_entropy(logits.view(-1,V), labels.view(-1))
    assert headline(res) == pytest.approx(headline(flat), rel=1e-13)
    np.testing.assert_allclose(res.num, flat.loss.reshape(n, t).sum(axis=1), rtol=1e-13)
    np.testing.assert_array_equal(res.den, (y != -100).sum(axis=1))
    assert res.ignored.tolist() == [False, False, False, True, False, False]
    assert res.loss[3] == 0.0
    keep = ~res.ignored
    np.testing.assert_allclose(res.loss[keep], res.num[keep] / res.den[keep], rtol=1e-15)
    # the token-weighted headline differs from the mean of per-sequence means
    assert headline(res) != pytest.approx(res.loss[keep].mean(), rel=1e-6)


def test_token_ce_per_sequence_reference_loop():
    x, y = _tokens(seed=1)
    res = token_cross_entropy(x, y, extras=True)
    for i in range(len(x)):
        terms = [-ref_log_softmax(x[i, k].tolist())[y[i, k]] for k in range(x.shape[1]) if y[i, k] != -100]
        if terms:
            assert res.loss[i] == pytest.approx(math.fsum(terms) / len(terms), rel=1e-13)
        assert res.columns["tokens"][i] == len(terms)


def test_token_ce_logits_equal_ragged_log_probs_of_kept_tokens():
    x, y = _tokens(seed=2)
    rows = []
    for i in range(len(x)):
        rows.append([ref_log_softmax(x[i, k].tolist())[y[i, k]] for k in range(x.shape[1]) if y[i, k] != -100])
    a = token_cross_entropy(x, y)
    b = token_cross_entropy(Ragged.from_lists(rows))
    np.testing.assert_allclose(b.loss, a.loss, rtol=1e-13)
    np.testing.assert_array_equal(b.den, a.den)
    np.testing.assert_array_equal(b.ignored, a.ignored)
    assert headline(b) == pytest.approx(headline(a), rel=1e-13)


def test_token_ce_ragged_values_and_perplexity():
    r = Ragged.from_lists([[-1.0, -2.0, -3.0], [], [-0.5], [0.0, -np.log(4.0)]])
    res = token_cross_entropy(r, extras=True)
    np.testing.assert_allclose(res.loss, [2.0, 0.0, 0.5, math.log(4.0) / 2], rtol=1e-15)
    assert res.ignored.tolist() == [False, True, False, False]
    assert res.columns["tokens"].tolist() == [3, 0, 1, 2]
    assert headline(res) == pytest.approx((6.0 + 0.5 + math.log(4.0)) / 6, rel=1e-15)
    spec = registry.get("lm")
    assert spec.name == "token-cross-entropy" and spec.derived == ("perplexity",)
    # equal-length 2-D input behaves like the Ragged form
    two_d = np.array([[-1.0, -2.0], [-0.25, -0.75]])
    np.testing.assert_allclose(token_cross_entropy(two_d).loss, [1.5, 0.5], rtol=1e-15)
    g = token_cross_entropy_grad(two_d)
    np.testing.assert_array_equal(g, np.full((2, 2), -0.5))


def test_token_ce_minus_inf_log_prob_is_inf():
    res = token_cross_entropy(Ragged.from_lists([[-1.0, -np.inf], [-1.0]]))
    assert res.loss[0] == math.inf and res.loss[1] == 1.0


def test_token_ce_extreme_logits_exact():
    x = np.zeros((1, 3, 3))
    x[0, 0] = [1e4, 0.0, -1e4]
    x[0, 1] = [1e4, 1e4, -1e4]
    x[0, 2] = [-1e4, 1e4, 0.0]
    y = np.array([[0, 0, 0]])
    res = token_cross_entropy(x.astype(np.float32), y)
    assert res.loss[0] == pytest.approx((0.0 + math.log(2.0) + 2e4) / 3, rel=1e-12)
    g = token_cross_entropy_grad(x, y)
    assert np.isfinite(g).all()


def test_token_ce_gradient_shapes():
    x, y = _tokens(seed=3, n=4, t=5, v=6)
    g = token_cross_entropy_grad(x, y)
    assert g.shape == x.shape
    ignored_tok = y == -100
    assert (g[ignored_tok] == 0).all()
    np.testing.assert_allclose(g.sum(axis=2), 0.0, atol=1e-15)  # softmax - onehot sums to 0
    fd = finite_difference(lambda z: token_cross_entropy(z, y).loss, x)
    np.testing.assert_allclose(g, fd, rtol=1e-6, atol=1e-9)
    r = Ragged.from_lists([[-1.0, -2.0, -3.0], [], [-0.5]])
    gr = token_cross_entropy_grad(r)
    assert isinstance(gr, Ragged)
    np.testing.assert_array_equal(gr.offsets, r.offsets)
    np.testing.assert_allclose(gr.values, [-1 / 3, -1 / 3, -1 / 3, -1.0], rtol=1e-15)


def test_token_ce_custom_ignore_index():
    x, _ = _tokens(seed=4)
    rng = np.random.default_rng(4)
    y = rng.integers(0, x.shape[2], size=x.shape[:2])
    a = token_cross_entropy(x, y, ignore_index=0)
    yy = np.where(y == 0, -100, y)
    b = token_cross_entropy(x, yy)
    np.testing.assert_allclose(a.loss, b.loss, rtol=1e-15)
    assert (y == 0).any()


def test_token_ce_errors():
    x, y = _tokens(seed=5)
    bad = y.copy()
    bad[2, 1] = x.shape[2]  # out of range
    with pytest.raises(InputError) as err:
        token_cross_entropy(x, bad)
    assert err.value.role == "target" and err.value.rows == [2]
    assert "at token 1" in err.value.message
    with pytest.raises(InputError) as err:
        token_cross_entropy(x, y[:, :-1])
    assert err.value.role == "target"
    with pytest.raises(InputError) as err:
        token_cross_entropy(x)  # logits need labels
    assert err.value.role == "pred"
    r = Ragged.from_lists([[-1.0], [-0.5, 0.2], [0.3]])
    with pytest.raises(InputError) as err:
        token_cross_entropy(r)
    assert err.value.role == "pred" and err.value.rows == [1, 2]
    with pytest.raises(InputError) as err:
        token_cross_entropy(Ragged.from_lists([[-1.0]]), np.array([[0]]))  # labels with log-probs
    assert err.value.role == "target"
    xn = x.copy()
    xn[4, 2, 1] = np.nan
    with pytest.raises(InputError) as err:
        token_cross_entropy(xn, y)
    assert err.value.rows == [4]


# ===========================================================================
# through the CLI (engine: ragged list columns, (N, T, V) arrays, optional target)
# ===========================================================================


def test_cli_token_ce_logits_npy_reports_perplexity(cli):
    from conftest import SAMPLE

    logits = np.load(f"{SAMPLE}/classification_token_logits.npy")
    labels = np.load(f"{SAMPLE}/classification_token_labels.npy")
    res = cli(
        [
            "compute",
            "lm",
            f"{SAMPLE}/classification_token_logits.npy",
            f"{SAMPLE}/classification_token_labels.npy",
            "-f",
            "json",
        ]
    )
    assert res.code == 0, res.err
    v = logits.shape[2]
    flat = cross_entropy(logits.reshape(-1, v), labels.reshape(-1))
    assert res.json["value"] == pytest.approx(headline(flat), rel=1e-12)
    assert res.json["derived"]["perplexity"] == pytest.approx(math.exp(res.json["value"]), rel=1e-12)
    assert res.json["count"] == len(logits)


def test_cli_token_ce_ragged_parquet(cli, tmp_path):
    import pyarrow as pa
    import pyarrow.parquet as pq

    path = tmp_path / "lp.parquet"
    pq.write_table(pa.table({"lp": pa.array([[-1.0, -2.0, -3.0], [-0.5], [-0.25, -0.75]])}), path)
    res = cli(["compute", "token-cross-entropy", f"{path}:lp", "-f", "json"])
    assert res.code == 0, res.err
    assert res.json["value"] == pytest.approx(7.5 / 6, rel=1e-15)
    assert res.json["stats"]["mean"] == pytest.approx((2.0 + 0.5 + 0.5) / 3, rel=1e-15)
    pq.write_table(pa.table({"lp": pa.array([[-1.0], [-0.5, 0.5]])}), path)
    res = cli(["compute", "lm", f"{path}:lp"])
    assert res.code == 1
    assert "row 1" in res.err and "above 0" in res.err


def test_cli_entropy_and_focal_params(cli):
    from conftest import SAMPLE

    res = cli(["compute", "entropy", f"{SAMPLE}/classification_probs.csv:p_*", "--pred-kind", "probs", "--base", "1"])
    assert res.code == 2 and "base" in res.err
    res = cli(
        [
            "compute",
            "focal",
            f"{SAMPLE}/binary.csv:logit",
            f"{SAMPLE}/binary.csv:label",
            "--alpha",
            "-1",
            "--gamma",
            "0",
            "-f",
            "json",
        ]
    )
    assert res.code == 0, res.err
    bce = cli(["compute", "bce", f"{SAMPLE}/binary.csv:logit", f"{SAMPLE}/binary.csv:label", "-f", "json"])
    assert res.json["value"] == pytest.approx(bce.json["value"], rel=1e-14)


def test_explain_mentions_references():
    assert "torchvision.ops.sigmoid_focal_loss" in registry.get("focal").reference
    assert "nll_loss" in registry.get("nll").reference
    assert any("validated" in p for p in registry.get("nll").properties)
    assert "scipy.stats.entropy" in registry.get("entropy").reference
