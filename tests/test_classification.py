"""Cross-entropy and binary cross-entropy against independent float64 references.

Oracles: (a) plain-Python float64 loops written here (math.fsum, no NumPy
vectorisation), and (b) numbers PyTorch 2.13 printed for the same inputs
(recorded in the team's loss-semantics reference, copied here as literals).
"""

from __future__ import annotations

import math

import numpy as np
import pytest

from conftest import finite_difference, ref_log_softmax
from lossctl.errors import InputError, ParamError
from lossctl.losses.classification import (
    binary_cross_entropy,
    binary_cross_entropy_grad,
    cross_entropy,
    cross_entropy_grad,
)

# ---------------------------------------------------------------------------
# float64 references, one row at a time
# ---------------------------------------------------------------------------


def ref_ce_index(x, y, w=None, ignore_index=-100, eps=0.0):
    """Per-sample values and the PyTorch mean, as PyTorch defines them."""
    losses, den = [], 0.0
    for row, t in zip(x, y):
        c = len(row)
        if t == ignore_index:
            losses.append(0.0)
            continue
        lsm = ref_log_softmax([float(v) for v in row])
        wt = 1.0 if w is None else w[t]
        nll = -wt * lsm[t]
        smooth = -math.fsum((1.0 if w is None else w[k]) * lsm[k] for k in range(c))
        losses.append((1 - eps) * nll + eps / c * smooth)
        den += wt
    mean = math.fsum(losses) / den if den else float("nan")
    return losses, mean


def ref_ce_soft(x, t, w=None, eps=0.0):
    out = []
    for row, trow in zip(x, t):
        c = len(row)
        lsm = ref_log_softmax([float(v) for v in row])
        tt = [(1 - eps) * p + eps / c for p in trow]
        out.append(-math.fsum((1.0 if w is None else w[k]) * tt[k] * lsm[k] for k in range(c) if tt[k] != 0))
    return out


X = np.array([[1.0, 2.0, 3.0], [1.0, 0.0, -1.0]])
Y = np.array([0, 1])
W = [1.0, 2.0, 3.0]


def headline(res):
    den = res.den if res.den is not None else np.ones_like(res.loss)
    keep = ~res.ignored if res.ignored is not None else np.ones(len(res.loss), bool)
    return res.loss[keep].sum() / den[keep].sum()


# ---------------------------------------------------------------------------
# cross-entropy: PyTorch's published numbers
# ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    "kwargs, per_sample, mean",
    [
        ({}, [2.4076059, 1.4076059], 1.9076059),
        ({"weight": W}, [2.4076059, 2.8152118], 1.7409391),
        ({"label_smoothing": 0.1}, [2.3076060, 1.4076058], None),
        ({"label_smoothing": 0.1, "weight": W}, [2.3816998, 2.8818784], 1.7545259),
    ],
)
def test_cross_entropy_matches_pytorch_numbers(kwargs, per_sample, mean):
    res = cross_entropy(X, Y, **kwargs)
    np.testing.assert_allclose(res.loss, per_sample, rtol=1e-6)
    if mean is not None:
        assert headline(res) == pytest.approx(mean, rel=1e-6)


@pytest.mark.parametrize(
    "kwargs, per_sample, mean",
    [
        ({}, [1.1076059, 0.5076059], 0.8076059),
        ({"weight": W}, [1.9374937, 0.6483665], 1.2929301),
        ({"label_smoothing": 0.2}, [1.1676059, 0.6876060], None),
    ],
)
def test_soft_targets_match_pytorch_numbers(kwargs, per_sample, mean):
    t = np.array([[0.2, 0.3, 0.5], [0.9, 0.1, 0.0]])
    res = cross_entropy(X, t, **kwargs)
    np.testing.assert_allclose(res.loss, per_sample, rtol=1e-6)
    if mean is not None:  # soft targets: divided by N even with weights
        assert res.loss.mean() == pytest.approx(mean, rel=1e-6)
        assert res.den is None


# ---------------------------------------------------------------------------
# cross-entropy: float64 brute force on random data
# ---------------------------------------------------------------------------


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
@pytest.mark.parametrize("eps", [0.0, 0.1, 1.0])
@pytest.mark.parametrize("weighted", [False, True])
def test_cross_entropy_random_against_reference(dtype, eps, weighted):
    rng = np.random.default_rng(7)
    n, c = 257, 11
    x = (rng.normal(size=(n, c)) * 4).astype(dtype)
    y = rng.integers(0, c, size=n)
    y[::13] = -100
    w = list(rng.uniform(0.1, 3, size=c)) if weighted else None
    res = cross_entropy(x, y, weight=w, label_smoothing=eps)
    ref, ref_mean = ref_ce_index(x.astype(np.float64).tolist(), y.tolist(), w, -100, eps)
    rtol = 1e-12 if dtype == np.float64 else 2e-6
    np.testing.assert_allclose(res.loss, ref, rtol=rtol, atol=1e-12)
    assert headline(res) == pytest.approx(ref_mean, rel=rtol)
    assert res.ignored.sum() == len(y[::13])


@pytest.mark.parametrize("kind", ["probs", "log-probs"])
def test_probability_kinds_equal_logits(kind):
    rng = np.random.default_rng(3)
    x = rng.normal(size=(50, 6)) * 3
    y = rng.integers(0, 6, size=50)
    lsm = np.array([ref_log_softmax(r) for r in x.tolist()])
    pred = np.exp(lsm) if kind == "probs" else lsm
    for eps in (0.0, 0.3):
        a = cross_entropy(x, y, label_smoothing=eps, weight=[1, 2, 3, 1, 1, 0.5])
        b = cross_entropy(pred, y, pred_kind=kind, label_smoothing=eps, weight=[1, 2, 3, 1, 1, 0.5])
        np.testing.assert_allclose(a.loss, b.loss, rtol=1e-12)


def test_integer_labels_equal_one_hot_soft_targets():
    rng = np.random.default_rng(11)
    x = rng.normal(size=(40, 7)) * 2
    y = rng.integers(0, 7, size=40)
    onehot = np.eye(7)[y]
    for eps in (0.0, 0.25):
        a = cross_entropy(x, y, label_smoothing=eps)
        b = cross_entropy(x, onehot, label_smoothing=eps)
        np.testing.assert_allclose(a.loss, b.loss, rtol=1e-12, atol=1e-15)


def test_soft_target_decomposition_sums_to_ce():
    rng = np.random.default_rng(5)
    x = rng.normal(size=(30, 4))
    t = rng.dirichlet(np.ones(4), size=30)
    t[0] = [1, 0, 0, 0]  # 0 log 0 = 0
    res = cross_entropy(x, t)
    h = res.components["entropy"]
    kl = res.components["kl"]
    np.testing.assert_allclose(h + kl, res.loss, rtol=1e-12)
    ref_h = [-math.fsum(p * math.log(p) for p in row if p > 0) for row in t.tolist()]
    np.testing.assert_allclose(h, ref_h, rtol=1e-12, atol=1e-15)
    assert (kl >= -1e-15).all()
    assert h[0] == 0.0


def test_extreme_logits_are_finite_and_exact():
    x = np.array([[1e4, 0.0], [1e4, -1e4], [1e4, 1e4], [1e4, 1e4 - 1.0], [-1e4, 1e4]], dtype=np.float32)
    y = np.array([1, 1, 0, 1, 0])
    res = cross_entropy(x, y)
    expected = [1e4, 2e4, math.log(2.0), 1.0 + math.log1p(math.exp(-1.0)), 2e4]
    np.testing.assert_allclose(res.loss, expected, rtol=1e-7)
    assert np.isfinite(res.loss).all()


def test_ignore_index_all_ignored_gives_nan_mean():
    res = cross_entropy(X, np.array([-100, -100]))
    assert res.ignored.all()
    assert (res.loss == 0).all()
    assert res.den.sum() == 0


def test_custom_ignore_index():
    res = cross_entropy(X, np.array([0, 1]), ignore_index=0)
    assert res.ignored.tolist() == [True, False]
    assert headline(res) == pytest.approx(1.4076059, rel=1e-6)


def test_float_labels_that_are_integers_are_accepted():
    a = cross_entropy(X, np.array([0.0, 1.0]))
    np.testing.assert_allclose(a.loss, [2.4076059, 1.4076059], rtol=1e-6)


@pytest.mark.parametrize(
    "target, message",
    [
        (np.array([0, 3]), "out of range [0, 3)"),
        (np.array([0, -1]), "out of range"),
        (np.array([0.0, 1.5]), "not an integer"),
    ],
)
def test_bad_labels_name_the_row(target, message):
    with pytest.raises(InputError) as err:
        cross_entropy(X, target)
    assert message in err.value.message
    assert err.value.rows == [1]
    assert err.value.role == "target"


def test_probabilities_not_summing_to_one_are_rejected_not_renormalised():
    p = np.array([[0.2, 0.3, 0.5], [0.5, 0.4, 0.05]])
    with pytest.raises(InputError) as err:
        cross_entropy(p, np.array([0, 1]), pred_kind="probs")
    assert err.value.rows == [1]
    assert "sum to 0.95" in err.value.message
    res = cross_entropy(p, np.array([0, 1]), pred_kind="probs", prob_atol=0.1)
    np.testing.assert_allclose(res.loss, [-math.log(0.2), -math.log(0.4)], rtol=1e-12)


def test_negative_probability_rejected():
    with pytest.raises(InputError) as err:
        cross_entropy(np.array([[1.2, -0.2]]), np.array([0]), pred_kind="probs")
    assert "outside [0, 1]" in err.value.message


def test_probability_zero_on_true_class_is_inf():
    res = cross_entropy(np.array([[0.0, 1.0]]), np.array([0]), pred_kind="probs")
    assert res.loss[0] == math.inf


def test_weight_length_must_match_classes():
    with pytest.raises(ParamError) as err:
        cross_entropy(X, Y, weight=[1.0, 2.0])
    assert "3 classes" in err.value.message


def test_extras_give_true_class_probability_and_prediction():
    res = cross_entropy(X, Y, extras=True)
    np.testing.assert_allclose(res.columns["p_true"], np.exp(-np.array([2.4076059, 1.4076059])), rtol=1e-6)
    assert res.columns["pred_class"].tolist() == [2, 0]


# ---------------------------------------------------------------------------
# gradients: central finite differences in float64
# ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    "kwargs",
    [
        {},
        {"weight": [0.5, 2.0, 1.0, 3.0]},
        {"label_smoothing": 0.2},
        {"label_smoothing": 0.2, "weight": [0.5, 2.0, 1.0, 3.0]},
    ],
)
@pytest.mark.parametrize("soft", [False, True])
def test_cross_entropy_gradient_logits(kwargs, soft):
    rng = np.random.default_rng(2)
    x = rng.normal(size=(9, 4))
    y = rng.dirichlet(np.ones(4), size=9) if soft else rng.integers(0, 4, size=9)
    g = cross_entropy_grad(x, y, **kwargs)
    fd = finite_difference(lambda z: cross_entropy(z, y, **kwargs).loss, x)
    np.testing.assert_allclose(g, fd, rtol=1e-6, atol=1e-8)


@pytest.mark.parametrize("kind", ["probs", "log-probs"])
def test_cross_entropy_gradient_other_kinds(kind):
    rng = np.random.default_rng(4)
    x = rng.normal(size=(6, 3))
    lsm = np.array([ref_log_softmax(r) for r in x.tolist()])
    pred = np.exp(lsm) if kind == "probs" else lsm
    y = rng.integers(0, 3, size=6)
    g = cross_entropy_grad(pred, y, pred_kind=kind, label_smoothing=0.1)
    # Perturbing one entry breaks Σp = 1; the analytic gradient is of the formula itself.
    fd = finite_difference(lambda z: cross_entropy(z, y, pred_kind=kind, label_smoothing=0.1, prob_atol=1.0).loss, pred)
    np.testing.assert_allclose(g, fd, rtol=1e-5, atol=1e-7)


def test_gradient_zero_on_ignored_rows():
    g = cross_entropy_grad(X, np.array([-100, 1]))
    assert (g[0] == 0).all() and (g[1] != 0).any()


# ---------------------------------------------------------------------------
# binary cross-entropy
# ---------------------------------------------------------------------------


def ref_bce_logits(x, y, pw=1.0, w=1.0):
    # -(pw·y·log σ(x) + (1-y)·log(1-σ(x))) with log σ(x) = -log1p(exp(-x)) written per sign.
    def log_sigmoid(v):
        return -math.log1p(math.exp(-v)) if v >= 0 else v - math.log1p(math.exp(v))

    return w * -(pw * y * log_sigmoid(x) + (1 - y) * log_sigmoid(-x))


def test_bce_with_logits_matches_pytorch_numbers():
    x = np.array([0.5, -1.0, 2.0])
    y = np.array([1.0, 0.0, 0.3])
    pw = 3.0
    w = np.array([1.0, 2.0, 0.5])
    # elementwise weights are per sample here: (N,) pred with per-row weight via the reference
    elem = np.array([ref_bce_logits(a, b, pw, c) for a, b, c in zip(x, y, w)])
    np.testing.assert_allclose(elem, [1.4222310, 0.6265235, 0.8015424], rtol=1e-6)
    res = binary_cross_entropy(x, y, pos_weight=pw)
    np.testing.assert_allclose(res.loss * w, elem, rtol=1e-12)


def test_bce_logits_extremes_exact_where_pytorch_cancels():
    x = np.array([1000.0, -1000.0, 1000.0, -1000.0, -20.0, -10.0, 20.0])
    y = np.array([0.0, 1.0, 1.0, 0.0, 0.0, 0.0, 1.0])
    res = binary_cross_entropy(x, y)
    expected = [
        1000.0,
        1000.0,
        0.0,
        0.0,
        math.log1p(math.exp(-20)),
        math.log1p(math.exp(-10)),
        math.log1p(math.exp(-20)),
    ]
    np.testing.assert_allclose(res.loss, expected, rtol=1e-14, atol=0)


def test_bce_random_against_reference():
    rng = np.random.default_rng(9)
    x = rng.normal(size=200) * 8
    y = rng.random(200)
    res = binary_cross_entropy(x, y, pos_weight=1.7)
    ref = [ref_bce_logits(a, b, 1.7) for a, b in zip(x.tolist(), y.tolist())]
    np.testing.assert_allclose(res.loss, ref, rtol=1e-13)


def test_bce_multilabel_is_mean_over_labels_with_per_label_weights():
    rng = np.random.default_rng(1)
    x = rng.normal(size=(20, 3))
    y = (rng.random((20, 3)) < 0.5).astype(float)
    pw = [1.0, 2.0, 0.5]
    w = [1.0, 0.5, 2.0]
    res = binary_cross_entropy(x, y, pos_weight=pw, weight=w)
    ref = [math.fsum(ref_bce_logits(x[i, k], y[i, k], pw[k], w[k]) for k in range(3)) / 3 for i in range(20)]
    np.testing.assert_allclose(res.loss, ref, rtol=1e-13)


def test_bce_probabilities_clamp_log_at_minus_100():
    p = np.array([0.0, 1.0, 0.0, 1e-30, 0.7])
    y = np.array([1.0, 0.0, 0.5, 1.0, 1.0])
    res = binary_cross_entropy(p, y, pred_kind="probs")
    np.testing.assert_allclose(res.loss, [100.0, 100.0, 50.0, 69.0775527898214, -math.log(0.7)], rtol=1e-12)


@pytest.mark.parametrize("bad", [np.array([0.5, 1.5]), np.array([-0.1, 0.5])])
def test_bce_targets_outside_unit_interval_rejected(bad):
    with pytest.raises(InputError) as err:
        binary_cross_entropy(np.array([0.0, 1.0]), bad)
    assert err.value.role == "target"
    assert "outside [0, 1]" in err.value.message


def test_bce_shape_mismatch_rejected():
    with pytest.raises(InputError) as err:
        binary_cross_entropy(np.zeros((4, 2)), np.zeros((4, 3)))
    assert "does not match" in err.value.message


def test_bce_extras_for_single_output():
    res = binary_cross_entropy(np.array([2.0, -1.0]), np.array([1.0, 1.0]), extras=True)
    s = 1 / (1 + np.exp(-np.array([2.0, -1.0])))
    np.testing.assert_allclose(res.columns["p_true"], s, rtol=1e-14)
    assert res.columns["pred_class"].tolist() == [1, 0]


@pytest.mark.parametrize("kind", ["logits", "probs"])
@pytest.mark.parametrize("shape", [(12,), (12, 3)])
def test_bce_gradient(kind, shape):
    rng = np.random.default_rng(6)
    x = rng.normal(size=shape) if kind == "logits" else rng.uniform(0.05, 0.95, size=shape)
    y = rng.random(shape)
    kw = {"pred_kind": kind, "pos_weight": 1.5 if len(shape) == 1 else [1.0, 2.0, 0.5]}
    g = binary_cross_entropy_grad(x, y, **kw)
    fd = finite_difference(lambda z: binary_cross_entropy(z, y, **kw).loss, x)
    np.testing.assert_allclose(g, fd, rtol=1e-6, atol=1e-8)
