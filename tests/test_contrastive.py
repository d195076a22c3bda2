"""Contrastive and ranking losses: PyTorch's published numbers, closed forms,
relationships between losses, extreme values and errors.

Oracles: numbers PyTorch 2.13 printed (from the team's loss-semantics reference,
copied here as literals), the closed forms of Hadsell et al. 2006, and plain
Python float64 loops (tests/cases/contrastive.py).
"""

from __future__ import annotations

import math

import numpy as np
import pytest

from cases.contrastive import ref_info_nce, ref_pairwise_distance, ref_triplet
from lossctl.errors import InputError, ParamError
from lossctl.losses import contrastive as C
from lossctl.losses.classification import cross_entropy
from lossctl.losses.contrastive import (
    contrastive,
    contrastive_grad,
    cosine_embedding,
    cosine_embedding_grad,
    info_nce,
    info_nce_grad,
    margin_ranking,
    margin_ranking_grad,
    triplet_margin,
    triplet_margin_grad,
)

# ---------------------------------------------------------------------------
# triplet-margin
# ---------------------------------------------------------------------------


def test_triplet_distance_of_equal_vectors_is_eps_times_d_root_p():
    a = np.array([[0.3, -1.2]])
    n = np.array([[5.0, 5.0]])
    res = triplet_margin(a, a, n)
    assert res.components["d_pos"][0] == pytest.approx(1.4142136e-06, rel=1e-7)  # torch ✔ (D=2, p=2)
    res1 = triplet_margin(a, a, n, p=1.0)
    assert res1.components["d_pos"][0] == pytest.approx(2e-6, rel=1e-9)  # torch ✔ (p=1)
    # a = p: l = max(D^(1/p)·eps - d(a,n) + margin, 0)
    d_an = ref_pairwise_distance([0.3, -1.2], [5.0, 5.0], 2.0, 1e-6)
    big = triplet_margin(a, a, np.array([[0.3, -1.0]]), margin=1.0)
    d_near = ref_pairwise_distance([0.3, -1.2], [0.3, -1.0], 2.0, 1e-6)
    assert d_near == pytest.approx(0.2 - 1e-6, rel=1e-9)
    assert big.loss[0] == pytest.approx(math.sqrt(2) * 1e-6 - d_near + 1.0, rel=1e-14)
    assert res.loss[0] == max(0.0, math.sqrt(2) * 1e-6 - d_an + 1.0) == 0.0


def test_triplet_distance_is_asymmetric_like_torch():
    zero, e1 = np.array([[0.0, 0.0]]), np.array([[1.0, 0.0]])
    far = np.array([[100.0, 100.0]])
    assert triplet_margin(zero, far, e1).components["d_neg"][0] == pytest.approx(0.999999, abs=1e-12)
    assert triplet_margin(e1, far, zero).components["d_neg"][0] == pytest.approx(1.000001, abs=1e-12)


def test_triplet_swap_uses_the_smaller_negative_distance():
    rng = np.random.default_rng(4)
    a, p, n = (rng.normal(size=(200, 4)) for _ in range(3))
    plain = triplet_margin(a, p, n, margin=2.0)
    swapped = triplet_margin(a, p, n, margin=2.0, swap=True)
    assert (swapped.loss >= plain.loss).all()
    d_pn = np.array([ref_pairwise_distance(u, v, 2.0, 1e-6) for u, v in zip(p.tolist(), n.tolist())])
    closer = d_pn < plain.components["d_neg"]
    assert closer.any() and (~closer).any()
    np.testing.assert_array_equal(swapped.loss[~closer], plain.loss[~closer])
    assert (swapped.loss[closer] > plain.loss[closer]).any()
    np.testing.assert_allclose(swapped.components["d_neg"][closer], d_pn[closer], rtol=1e-12)
    # with swap the anchor gradient loses its negative term where d(p, n) won
    g = triplet_margin_grad(a, p, n, margin=2.0, swap=True)
    z = a - p + 1e-6
    g_pos_only = z / np.linalg.norm(z, axis=1, keepdims=True)  # ∇d(a,p) alone
    rows = closer & (swapped.loss > 0)
    assert rows.sum() > 10
    np.testing.assert_allclose(g[rows], g_pos_only[rows], rtol=1e-12)
    g_plain = triplet_margin_grad(a, p, n, margin=2.0)
    assert not np.allclose(g_plain[rows], g_pos_only[rows])


def test_triplet_zero_loss_when_negative_is_far_and_gradient_vanishes():
    a = np.array([[0.0, 0.0, 0.0]])
    p = np.array([[0.1, 0.0, 0.0]])
    n = np.array([[10.0, 0.0, 0.0]])
    res = triplet_margin(a, p, n)
    assert res.loss[0] == 0.0
    assert res.components["active"][0] == 0.0
    assert (triplet_margin_grad(a, p, n) == 0).all()


def test_triplet_exactly_at_the_hinge_has_zero_gradient():
    # p=1, eps=0: d(a,p) = 1, d(a,n) = 2, margin 1 -> exactly 0
    a = np.array([[0.0, 0.0]])
    p = np.array([[1.0, 0.0]])
    n = np.array([[2.0, 0.0]])
    res = triplet_margin(a, p, n, p=1.0, eps=0.0, margin=1.0)
    assert res.loss[0] == 0.0
    assert (triplet_margin_grad(a, p, n, p=1.0, eps=0.0, margin=1.0) == 0).all()
    res = triplet_margin(a, p, n, p=1.0, eps=0.0, margin=1.5)
    assert res.loss[0] == 0.5
    np.testing.assert_array_equal(triplet_margin_grad(a, p, n, p=1.0, eps=0.0, margin=1.5), [[0.0, 0.0]])  # -1 + 1


def test_triplet_huge_and_tiny_coordinates_stay_finite():
    # p=3 on 1e200-scale differences: the naive Σ|z|^3 overflows, the scaled norm does not.
    a = np.array([[1e200, 0.0], [1e-200, 0.0]])
    p = np.array([[0.0, 0.0], [0.0, 0.0]])
    n = np.array([[-1e200, 0.0], [-3e-200, 0.0]])
    res = triplet_margin(a, p, n, p=3.0, eps=0.0, margin=1.0)
    assert np.isfinite(res.loss).all()
    np.testing.assert_allclose(res.components["d_pos"], [1e200, 1e-200], rtol=1e-13)
    np.testing.assert_allclose(res.components["d_neg"], [2e200, 4e-200], rtol=1e-13)
    assert res.loss[1] == pytest.approx(1.0, abs=1e-15)


def test_triplet_float32_input_is_computed_in_float64():
    rng = np.random.default_rng(9)
    arrays = [rng.normal(size=(30, 6)).astype(np.float32) for _ in range(3)]
    res = triplet_margin(*arrays, p=1.5)
    assert res.loss.dtype == np.float64
    np.testing.assert_allclose(res.loss, ref_triplet(arrays, {"p": 1.5}), rtol=1e-12, atol=1e-15)


def test_triplet_errors():
    a = np.zeros((3, 2))
    with pytest.raises(InputError) as e:
        triplet_margin(a, np.zeros((3, 3)), a)
    assert e.value.role == "positive"
    bad = np.zeros((3, 2))
    bad[2, 1] = np.inf
    with pytest.raises(InputError) as e:
        triplet_margin(a, a, bad)
    assert e.value.role == "negative" and e.value.rows == [2]
    for m in (0.0, -1.0):  # torch raises ValueError for margin <= 0
        with pytest.raises(ParamError):
            triplet_margin(a, a, a, margin=m)
    with pytest.raises(ParamError):
        triplet_margin(a, a, a, p=0.0)


# ---------------------------------------------------------------------------
# contrastive (Hadsell et al. 2006: lossctl flips the label and drops the ½)
# ---------------------------------------------------------------------------


def _pair_at_distance(d, dim=3):
    x1 = np.zeros((1, dim))
    x2 = np.zeros((1, dim))
    x2[0, 0] = d
    return x1, x2


@pytest.mark.parametrize(
    "d, paper_y, margin, paper_value",
    [(5.0, 0, 1.0, 12.5), (0.5, 1, 2.0, 1.125), (5.0, 1, 1.0, 0.0)],  # §7 closed forms ✔
)
def test_contrastive_is_twice_the_paper_with_flipped_label(d, paper_y, margin, paper_value):
    x1, x2 = _pair_at_distance(d)
    ours = contrastive(x1, x2, np.array([1 - paper_y]), margin=margin)
    assert ours.loss[0] == pytest.approx(2 * paper_value, rel=1e-15, abs=0)


def test_contrastive_components_sum_to_loss():
    rng = np.random.default_rng(2)
    x1 = rng.normal(size=(100, 4))
    x2 = x1 + rng.normal(size=(100, 4)) * rng.choice([0.1, 1.0], size=(100, 1))
    y = rng.integers(0, 2, size=100)
    res = contrastive(x1, x2, y, margin=1.5)
    c = res.components
    np.testing.assert_array_equal(c["similar"] + c["dissimilar"], res.loss)
    assert (c["similar"][y == 0] == 0).all() and (c["dissimilar"][y == 1] == 0).all()
    assert (c["dissimilar"] <= 1.5**2).all()  # bounded by margin²
    assert ((c["dissimilar"] > 0) == ((y == 0) & (c["distance"] < 1.5))).all()


def test_contrastive_identical_pairs():
    x = np.array([[1.0, 2.0], [1.0, 2.0]])
    res = contrastive(x, x.copy(), np.array([1, 0]), margin=0.7)
    assert res.loss[0] == 0.0 and res.loss[1] == pytest.approx(0.49, rel=1e-15)
    g = contrastive_grad(x, x.copy(), np.array([1, 0]), margin=0.7)
    np.testing.assert_array_equal(g, np.zeros((2, 2)))  # d = 0: defined as 0 (no direction)


def test_contrastive_gradient_closed_form():
    x1, x2 = _pair_at_distance(0.5, dim=2)
    g = contrastive_grad(x1, x2, np.array([0]), margin=2.0)
    # l = (m - d)², d = |x1 - x2|; ∂l/∂x1_0 = -2(m - d)·(x1_0 - x2_0)/d = -2·1.5·(-1) = 3
    np.testing.assert_allclose(g, [[3.0, 0.0]], rtol=1e-15)
    g = contrastive_grad(x1, x2, np.array([1]), margin=2.0)
    np.testing.assert_allclose(g, [[-1.0, 0.0]], rtol=1e-15)


def test_contrastive_accepts_bool_and_float_labels():
    x1, x2 = _pair_at_distance(0.5)
    a = contrastive(x1, x2, np.array([True]))
    b = contrastive(x1, x2, np.array([1.0]))
    assert a.loss[0] == b.loss[0] == 0.25


@pytest.mark.parametrize("bad", [2, -1, 0.5])
def test_contrastive_rejects_labels_other_than_0_and_1(bad):
    x = np.zeros((4, 2))
    with pytest.raises(InputError) as e:
        contrastive(x, x, np.array([0, 1, bad, 1]))
    assert e.value.role == "label" and e.value.rows == [2]
    assert "0" in e.value.expected and "1" in e.value.expected


def test_contrastive_rejects_nan_label_and_negative_margin():
    x = np.zeros((2, 2))
    with pytest.raises(InputError) as e:
        contrastive(x, x, np.array([np.nan, 1.0]))
    assert e.value.rows == [0]
    with pytest.raises(ParamError):
        contrastive(x, x, np.array([0, 1]), margin=-0.1)


# ---------------------------------------------------------------------------
# cosine-embedding
# ---------------------------------------------------------------------------


def test_cosine_embedding_zero_vector_matches_torch():
    res = cosine_embedding(np.array([[0.0, 0.0]]), np.array([[1.0, 0.0]]), np.array([1]))
    assert res.loss[0] == 1.0  # torch ✔: cos = 0
    res = cosine_embedding(np.array([[0.0, 0.0]]), np.array([[1.0, 0.0]]), np.array([-1]), margin=-0.25)
    assert res.loss[0] == 0.25  # max(0, 0 - (-0.25))
    g = cosine_embedding_grad(np.array([[0.0, 0.0]]), np.array([[1.0, 0.0]]), np.array([1]))
    assert np.isfinite(g).all()


def test_cosine_embedding_rejects_label_zero_where_torch_gives_zero():
    # torch ✔ returns 0.0 for y = 0; lossctl refuses the label instead (documented deviation)
    with pytest.raises(InputError) as e:
        cosine_embedding(np.array([[0.0, 0.0], [1.0, 1.0]]), np.array([[1.0, 0.0], [1.0, 0.0]]), np.array([1, 0]))
    assert e.value.role == "label" and e.value.rows == [1]


def test_cosine_embedding_known_angles_and_scale_invariance():
    x1 = np.array([[1.0, 0.0], [1.0, 1.0], [1.0, 0.0], [2.0, 0.0]])
    x2 = np.array([[0.0, 3.0], [2.0, 2.0], [-1.0, 0.0], [1.0, 1.0]])
    y = np.array([1, 1, 1, -1])
    res = cosine_embedding(x1, x2, y, margin=0.5)
    np.testing.assert_allclose(res.loss, [1.0, 0.0, 2.0, math.sqrt(0.5) - 0.5], atol=1e-11)
    scaled = cosine_embedding(x1 * 1e3, x2 * 7.0, y, margin=0.5)
    np.testing.assert_allclose(scaled.loss, res.loss, atol=1e-12)
    np.testing.assert_allclose(res.components["cos"], [0.0, 1.0, -1.0, math.sqrt(0.5)], atol=1e-11)


def test_cosine_embedding_similar_plus_dissimilar_is_one_when_cos_positive():
    rng = np.random.default_rng(6)
    x1 = np.abs(rng.normal(size=(50, 3)))
    x2 = np.abs(rng.normal(size=(50, 3)))  # positive orthant: cos > 0
    pos = cosine_embedding(x1, x2, np.ones(50))
    neg = cosine_embedding(x1, x2, -np.ones(50))
    np.testing.assert_allclose(pos.loss + neg.loss, 1.0, rtol=1e-14)
    assert (neg.loss <= 1.0).all() and (pos.loss >= 0).all()


def test_cosine_embedding_margin_range_is_guarded():
    x = np.ones((1, 2))
    with pytest.raises(ParamError):
        cosine_embedding(x, x, np.array([1]), margin=1.5)


# ---------------------------------------------------------------------------
# margin-ranking
# ---------------------------------------------------------------------------


def test_margin_ranking_matches_torch_example():
    x1, x2, y = np.array([1.0, 2.0, 3.0]), np.array([2.0, 2.0, 1.0]), np.array([1, -1, 1])
    res = margin_ranking(x1, x2, y, margin=0.5)
    np.testing.assert_array_equal(res.loss, [1.5, 0.5, 0.0])  # torch ✔
    np.testing.assert_array_equal(margin_ranking_grad(x1, x2, y, margin=0.5), [-1.0, 1.0, 0.0])
    np.testing.assert_array_equal(res.components["correct"], [0.0, 0.0, 1.0])


def test_margin_ranking_is_symmetric_under_swapping_items_and_label():
    rng = np.random.default_rng(8)
    x1, x2 = rng.normal(size=60), rng.normal(size=60)
    y = rng.choice([-1, 1], size=60)
    a = margin_ranking(x1, x2, y, margin=0.3)
    b = margin_ranking(x2, x1, -y, margin=0.3)
    np.testing.assert_array_equal(a.loss, b.loss)
    # hinge of the signed gap
    np.testing.assert_allclose(a.loss, np.maximum(0.0, 0.3 - y * (x1 - x2)), rtol=0, atol=0)


def test_margin_ranking_extremes_and_column_vectors():
    x1 = np.array([[1e6], [-1e6], [0.0]])
    x2 = np.array([[0.0], [0.0], [0.0]])
    y = np.array([[1], [1], [1]])
    res = margin_ranking(x1, x2, y, margin=1.0)
    np.testing.assert_array_equal(res.loss, [0.0, 1e6 + 1.0, 1.0])  # a tie costs the margin
    assert margin_ranking_grad(x1, x2, y, margin=1.0).shape == (3, 1)


def test_margin_ranking_errors():
    with pytest.raises(InputError) as e:
        margin_ranking(np.zeros(3), np.zeros(3), np.array([1, 0, -1]))
    assert e.value.role == "label" and e.value.rows == [1]
    with pytest.raises(InputError) as e:
        margin_ranking(np.zeros(3), np.zeros(4), np.array([1, 1, 1]))
    assert e.value.role == "x2"
    with pytest.raises(InputError) as e:
        margin_ranking(np.array([0.0, np.nan]), np.zeros(2), np.array([1, 1]))
    assert e.value.role == "x1" and e.value.rows == [1]


# ---------------------------------------------------------------------------
# info-nce / nt-xent
# ---------------------------------------------------------------------------


def _views(n=24, d=5, seed=0, noise=0.5):
    rng = np.random.default_rng(seed)
    latent = rng.normal(size=(n, d))
    return latent + rng.normal(size=(n, d)) * noise, latent + rng.normal(size=(n, d)) * noise


@pytest.mark.parametrize("symmetric", [False, True])
@pytest.mark.parametrize("b", [1, 4, 5, 24])
def test_info_nce_batches_equal_running_each_batch_alone(b, symmetric):
    q, k = _views(23)
    whole = info_nce(q, k, temperature=0.3, batch_size=b, symmetric=symmetric)
    parts = np.concatenate(
        [info_nce(q[s : s + b], k[s : s + b], temperature=0.3, symmetric=symmetric).loss for s in range(0, 23, b)]
    )
    np.testing.assert_allclose(whole.loss, parts, rtol=1e-13, atol=1e-15)
    gw = info_nce_grad(q, k, temperature=0.3, batch_size=b, symmetric=symmetric)
    gp = np.concatenate(
        [info_nce_grad(q[s : s + b], k[s : s + b], temperature=0.3, symmetric=symmetric) for s in range(0, 23, b)]
    )
    np.testing.assert_allclose(gw, gp, rtol=1e-12, atol=1e-14)


def test_info_nce_depends_on_batch_membership():
    q, k = _views(12)
    a = info_nce(q, k, temperature=0.2, batch_size=12).loss
    b = info_nce(q, k, temperature=0.2, batch_size=6).loss
    assert (b < a).all()  # fewer negatives: every row's denominator loses terms
    assert (info_nce(q, k, temperature=0.2, batch_size=1).loss == 0).all()  # the positive alone


def test_info_nce_is_cross_entropy_over_similarities():
    q, k = _views(10, seed=3)
    qh = q / np.linalg.norm(q, axis=1, keepdims=True)
    kh = k / np.linalg.norm(k, axis=1, keepdims=True)
    s = qh @ kh.T / 0.25
    target = np.arange(10)
    row = cross_entropy(s, target).loss
    col = cross_entropy(s.T.copy(), target).loss
    np.testing.assert_allclose(info_nce(q, k, temperature=0.25).loss, row, rtol=1e-12)
    assert not np.allclose(info_nce(q, k, temperature=0.25, symmetric=True).loss, 0.5 * (row + col))
    # NT-Xent (SimCLR): cross_entropy over the 2N views with the diagonal at -inf, target = the
    # partner view; a pair's value is the mean of its two rows.
    from scipy.special import logsumexp

    z = np.concatenate([qh, kh])
    s2 = z @ z.T / 0.25
    partner = np.concatenate([np.arange(10, 20), np.arange(10)])
    not_self = 1.0 - np.eye(20)  # logsumexp weights: the diagonal is masked out
    ce2 = logsumexp(s2, axis=1, b=not_self) - s2[np.arange(20), partner]
    np.testing.assert_allclose(info_nce(q, k, temperature=0.25, symmetric=True).loss, 0.5 * (ce2[:10] + ce2[10:]), rtol=1e-12)


def test_info_nce_symmetric_is_symmetric_in_query_and_key():
    q, k = _views(15, seed=5)
    a = info_nce(q, k, temperature=0.1, batch_size=5, symmetric=True).loss
    b = info_nce(k, q, temperature=0.1, batch_size=5, symmetric=True).loss
    np.testing.assert_allclose(a, b, rtol=1e-13)
    c = info_nce(k, q, temperature=0.1, batch_size=5).loss
    assert not np.allclose(info_nce(q, k, temperature=0.1, batch_size=5).loss, c)


def test_info_nce_uninformative_embeddings_cost_log_b():
    q = np.ones((10, 3))
    res = info_nce(q, q * 2.0, temperature=0.07, batch_size=4)
    np.testing.assert_allclose(res.loss, [math.log(4)] * 8 + [math.log(2)] * 2, rtol=1e-14)
    assert (res.components["top1"] == 0).all()  # a tie is not a hit


def test_info_nce_is_invariant_to_row_scale():
    q, k = _views(9, seed=2)
    scale = np.linspace(0.01, 100, 9)[:, None]
    a = info_nce(q, k, temperature=0.2, symmetric=True).loss
    b = info_nce(q * scale, k / scale, temperature=0.2, symmetric=True).loss
    np.testing.assert_allclose(a, b, rtol=1e-12)


@pytest.mark.parametrize("tau", [0.5, 1e-3, 1e-6, 1e-9])
@pytest.mark.parametrize("symmetric", [False, True])
def test_info_nce_aligned_embeddings_and_tiny_temperature_stay_finite(tau, symmetric):
    eye = np.eye(4)  # orthonormal rows, query = key: s_ii = 1, s_ij = 0
    res = info_nce(eye, eye.copy(), temperature=tau, symmetric=symmetric)
    assert np.isfinite(res.loss).all()
    # 3 negative keys (and, for NT-Xent, 3 more negative queries) at similarity 0
    expected = math.log1p((6 if symmetric else 3) * math.exp(-1.0 / tau))  # exactly 0 once exp(-1/τ) underflows
    np.testing.assert_allclose(res.loss, expected, rtol=1e-12, atol=0)
    assert (res.components["top1"] == 1).all()
    g = info_nce_grad(eye, eye.copy(), temperature=tau, symmetric=symmetric)
    assert np.isfinite(g).all()
    # one query pointing at the wrong key: l_0 = 1/τ + log(1 + 3·exp(-1/τ)), large but finite and exact
    q = eye.copy()
    q[0] = eye[1]
    res = info_nce(q, eye, temperature=tau)
    assert res.loss[0] == pytest.approx(1.0 / tau + math.log1p(3 * math.exp(-1.0 / tau)), rel=1e-14)
    assert res.components["top1"][0] == 0.0


def test_info_nce_random_against_loop_reference_with_large_batches_sliced(monkeypatch):
    # Force the row-sliced path (b² above the score block) and compare with the loop reference.
    q, k = _views(40, d=3, seed=11)
    params = {"temperature": 0.05, "batch_size": 16, "symmetric": True}
    direct = info_nce(q, k, **params).loss
    g_direct = info_nce_grad(q, k, **params)
    monkeypatch.setattr(C, "_SCORE_BLOCK", 50)
    sliced = info_nce(q, k, **params).loss
    np.testing.assert_allclose(sliced, direct, rtol=1e-13)
    np.testing.assert_allclose(info_nce_grad(q, k, **params), g_direct, rtol=1e-12, atol=1e-14)
    np.testing.assert_allclose(sliced, ref_info_nce([q, k], params), rtol=1e-10)


def test_info_nce_zero_vectors_have_zero_similarity():
    q, k = _views(5, seed=1)
    q[2] = 0.0
    res = info_nce(q, k, temperature=0.5)
    assert res.loss[2] == pytest.approx(math.log(5), rel=1e-14)  # all similarities 0
    k[4] = 0.0
    res = info_nce(q, k, temperature=0.5)
    assert np.isfinite(res.loss).all()
    np.testing.assert_allclose(res.loss, ref_info_nce([q, k], {"temperature": 0.5}), rtol=1e-12)


def test_info_nce_gradient_for_a_single_row_batch_is_zero():
    q, k = _views(4, seed=7)
    np.testing.assert_array_equal(info_nce_grad(q, k, temperature=0.1, batch_size=1), np.zeros((4, 5)))


def test_info_nce_batch_size_default_and_cap():
    q, k = _views(5)
    np.testing.assert_array_equal(info_nce(q, k).loss, info_nce(q, k, batch_size=5).loss)
    big = np.random.default_rng(0).normal(size=(C.INFO_NCE_MAX_AUTO_BATCH + 1, 2))
    with pytest.raises(ParamError) as e:
        info_nce(big, big)
    assert e.value.param == "batch-size"
    assert len(info_nce(big, big, batch_size=8).loss) == len(big)


def test_info_nce_errors():
    q, k = _views(4)
    with pytest.raises(ParamError):
        info_nce(q, k, temperature=0.0)
    with pytest.raises(ParamError):
        info_nce(q, k, batch_size=0)
    with pytest.raises(InputError) as e:
        info_nce(q, k[:, :3])
    assert e.value.role == "key"
    k[1, 2] = np.nan
    with pytest.raises(InputError) as e:
        info_nce(q, k)
    assert e.value.role == "key" and e.value.rows == [1]


# ---------------------------------------------------------------------------
# registry / CLI
# ---------------------------------------------------------------------------


def test_registry_ranges_reject_bad_parameters(cli):
    from conftest import SAMPLE

    views = f"{SAMPLE}/contrastive_views.parquet"
    res = cli(["compute", "info-nce", f"{views}:query", f"{views}:key", "--temperature", "0"])
    assert res.code == 2 and "temperature" in res.err
    trip = f"{SAMPLE}/contrastive_triplets.parquet"
    res = cli(["compute", "triplet", f"{trip}:anchor", f"{trip}:positive", f"{trip}:negative", "--margin", "0"])
    assert res.code == 2 and "margin" in res.err
    pairs = f"{SAMPLE}/contrastive_pairs.parquet"
    res = cli(["compute", "cosine-embedding", f"{pairs}:x1", f"{pairs}:x2", f"{pairs}:sign", "--margin", "1.5"])
    assert res.code == 2 and "margin" in res.err


def test_cli_label_error_names_the_row(cli, tmp_path):
    from conftest import write_csv

    path = write_csv(
        tmp_path / "r.csv", {"a": np.array([1.0, 2.0, 3.0]), "b": np.array([0.0, 0.0, 0.0]), "y": np.array([1, 1, 2])}
    )
    res = cli(["compute", "margin-ranking", f"{path}:a", f"{path}:b", f"{path}:y"])
    assert res.code == 1, res.err
    assert "row 2" in res.err and "label" in res.err.lower()


def test_cli_nt_xent_alias_and_symmetric_flag(cli):
    from conftest import SAMPLE

    views = f"{SAMPLE}/contrastive_views.parquet"
    a = cli(["compute", "nt-xent", f"{views}:query", f"{views}:key", "--batch-size", "32", "--symmetric", "-f", "json"])
    b = cli(["compute", "info-nce", f"{views}:query", f"{views}:key", "--batch-size", "32", "-f", "json"])
    assert a.code == 0 and b.code == 0, (a.err, b.err)
    assert a.json["loss"] == b.json["loss"] == "info-nce"
    assert a.json["value"] != b.json["value"]
