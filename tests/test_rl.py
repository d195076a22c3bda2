"""distillation, ppo-clip and policy-kl against independent references.

Oracles: hand-computed values, plain-Python float64 loops, 50-digit decimal
arithmetic, and relationships to other losses (kl-divergence, cross-entropy):
the soft distillation term is T²·KL, alpha = 0 is cross-entropy, and the
π-weighted average of the k1 / k3 estimators over every token is exactly KL(π ‖ π_ref).
"""

from __future__ import annotations

import math
from decimal import Decimal, localcontext

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from conftest import finite_difference
from lossctl import losses  # the library functions: parameters checked as declared
from lossctl.errors import InputError, ParamError
from lossctl.losses.classification import cross_entropy
from lossctl.losses.divergence import kl_divergence
from lossctl.losses.rl import (
    distillation,
    distillation_grad,
    policy_kl,
    policy_kl_grad,
    ppo_clip,
    ppo_clip_grad,
)
from lossctl.ragged import Ragged


# ---------------------------------------------------------------------------
# distillation
# ---------------------------------------------------------------------------

RNG = np.random.default_rng(0)
S = RNG.normal(size=(12, 5)) * 2
T = RNG.normal(size=(12, 5)) * 2
Y = RNG.integers(0, 5, size=12)


def test_distillation_components_sum_to_the_loss():
    res = distillation(S, T, Y, temperature=3.0, alpha=0.7)
    assert set(res.components) == {"soft", "hard"}
    np.testing.assert_allclose(res.components["soft"] + res.components["hard"], res.loss, rtol=1e-15)
    assert (res.components["soft"] >= 0).all() and (res.components["hard"] > 0).all()


def test_soft_term_is_t_squared_kl_from_teacher_to_student():
    for temp in (0.5, 1.0, 4.0):
        res = distillation(S, T, Y, temperature=temp, alpha=0.7)
        kl = kl_divergence(S / temp, T / temp, target_kind="logits", pred_kind="logits").loss
        np.testing.assert_allclose(res.components["soft"], 0.7 * temp**2 * kl, rtol=1e-12)


def test_hard_term_is_cross_entropy_at_temperature_one():
    ce = cross_entropy(S, Y).loss
    res = distillation(S, T, Y, temperature=5.0, alpha=0.0)
    np.testing.assert_allclose(res.loss, ce, rtol=1e-13)
    np.testing.assert_array_equal(res.components["soft"], 0.0)
    res = distillation(S, T, Y, temperature=5.0, alpha=0.25)
    np.testing.assert_allclose(res.components["hard"], 0.75 * ce, rtol=1e-13)


def test_without_labels_the_loss_is_the_soft_term_alone():
    res = distillation(S, T, None, temperature=2.0, alpha=0.3)  # alpha treated as 1.0
    kl = kl_divergence(S / 2.0, T / 2.0, target_kind="logits").loss
    np.testing.assert_allclose(res.loss, 4.0 * kl, rtol=1e-12)
    assert set(res.components) == {"soft"}
    g = distillation_grad(S, T, None, temperature=2.0, alpha=0.3)
    fd = finite_difference(lambda z: distillation(z, T, None, temperature=2.0, alpha=0.3).loss, S)
    np.testing.assert_allclose(g, fd, rtol=1e-6, atol=1e-8)


def test_student_equal_to_teacher_up_to_a_shift_has_zero_soft_term():
    res = distillation(T + 3.0, T, None, temperature=2.0)
    np.testing.assert_allclose(res.loss, 0.0, atol=1e-14)


def test_hand_computed_value():
    s = np.array([[0.0, math.log(3.0)]])  # softmax = [1/4, 3/4]
    t = np.array([[math.log(3.0), 0.0]])  # softmax = [3/4, 1/4]
    res = distillation(s, t, np.array([1]), temperature=1.0, alpha=0.5)
    kl = 0.75 * math.log(3.0) + 0.25 * math.log(1 / 3)  # KL([¾,¼] ‖ [¼,¾]) = ½ ln 3
    ce = -math.log(0.75)
    assert res.loss[0] == pytest.approx(0.5 * kl + 0.5 * ce, rel=1e-15)


def test_high_temperature_gradient_matches_hinton_limit():
    # Hinton et al. 2015, sec. 2.1: for zero-mean logits and large T, ∂(T²·KL)/∂z ≈ (z - v)/C,
    # which is why the soft term is multiplied by T².
    s = S - S.mean(axis=1, keepdims=True)
    t = T - T.mean(axis=1, keepdims=True)
    g = distillation_grad(s, t, None, temperature=1000.0)
    np.testing.assert_allclose(g, (s - t) / 5, rtol=1e-2, atol=1e-5)


def test_distillation_extreme_logits_are_finite_and_exact():
    s = np.array([[1e4, -1e4]])
    t = np.array([[-1e4, 1e4]])
    res = distillation(s, t, None, temperature=2.0)
    # teacher/T = [-5e3, 5e3]: p = [0, 1]; log softmax(s/T)_1 = -1e4; T²·1e4
    assert res.loss[0] == pytest.approx(4e4, rel=1e-15)
    res = distillation(s.astype(np.float32), t.astype(np.float32), np.array([1]), temperature=1.0, alpha=0.5)
    assert res.loss[0] == pytest.approx(0.5 * 2e4 + 0.5 * 2e4, rel=1e-15)
    assert np.isfinite(distillation_grad(s, t, np.array([1]))).all()


def test_distillation_errors():
    with pytest.raises(InputError) as err:
        distillation(S, T, np.array([0, 1, 5] + [0] * 9))
    assert err.value.role == "labels" and err.value.rows == [2]
    with pytest.raises(InputError) as err:
        distillation(S, T[:, :4])
    assert err.value.role == "teacher"
    bad = T.copy()
    bad[3, 1] = np.nan
    with pytest.raises(InputError) as err:
        distillation(S, bad)
    assert (err.value.role, err.value.rows) == ("teacher", [3])
    with pytest.raises(ParamError):
        losses.distillation(S, T, temperature=0.0)
    with pytest.raises(ParamError):
        losses.distillation(S, T, Y, alpha=1.5)


# ---------------------------------------------------------------------------
# ppo-clip
# ---------------------------------------------------------------------------


def test_ppo_hand_computed_branches():
    r = np.array([1.5, 1.5, 0.5, 0.5, 1.0, 1.1])
    adv = np.array([2.0, -2.0, 2.0, -2.0, 1.0, 3.0])
    old = np.full(6, -1.0)
    new = old + np.log(r)
    res = ppo_clip(new, old, adv, clip=0.2)
    # r·A vs clip(r)·A: (3, 2.4) (-3, -2.4) (1, 1.6) (-1, -1.6) (1, 1) (3.3, 3.3)
    np.testing.assert_allclose(res.loss, [-2.4, 3.0, -1.0, 1.6, -1.0, -3.3], rtol=1e-14)
    assert res.components["clipped"].tolist() == [1.0, 0.0, 0.0, 1.0, 0.0, 0.0]
    np.testing.assert_allclose(res.components["ratio"], r, rtol=1e-15)
    g = ppo_clip_grad(new, old, adv, clip=0.2)
    np.testing.assert_allclose(g, [0.0, 3.0, -1.0, 0.0, -1.0, -3.3], rtol=1e-14)


def test_ppo_clipped_fraction_and_mean_ratio():
    rng = np.random.default_rng(1)
    old = -rng.exponential(size=500)
    new = old + rng.normal(0, 0.3, size=500)
    adv = rng.normal(size=500)
    res = ppo_clip(new, old, adv, clip=0.2)
    r = np.exp(new - old)
    expected = ((r > 1.2) & (adv > 0)) | ((r < 0.8) & (adv < 0))
    assert res.components["clipped"].mean() == expected.mean()
    assert 0.05 < expected.mean() < 0.5
    assert res.components["ratio"].mean() == pytest.approx(r.mean(), rel=1e-14)


def test_ppo_exactly_at_the_clip_boundary():
    lr = 0.25
    r = math.exp(lr)
    eps = r - 1.0  # exact: 1 + eps == r in float64
    assert 1.0 + eps == r
    res = ppo_clip(np.array([lr, lr]), np.array([0.0, 0.0]), np.array([2.0, -2.0]), clip=eps)
    np.testing.assert_allclose(res.loss, [-2.0 * r, 2.0 * r], rtol=1e-15)
    assert res.components["clipped"].tolist() == [0.0, 0.0]  # a tie is the unclipped branch
    g = ppo_clip_grad(np.array([lr, lr]), np.array([0.0, 0.0]), np.array([2.0, -2.0]), clip=eps)
    np.testing.assert_allclose(g, [-2.0 * r, 2.0 * r], rtol=1e-15)


def test_ppo_huge_log_ratios():
    new = np.array([1000.0, 1000.0, 1000.0, -1000.0, -1000.0])
    old = np.zeros(5)
    adv = np.array([1.0, -1.0, 0.0, 1.0, -1.0])
    res = ppo_clip(new, old, adv, clip=0.2)
    assert res.loss[0] == pytest.approx(-1.2, rel=1e-15)  # clipped: finite
    assert res.loss[1] == math.inf  # unclipped r·A = -inf: the objective is unbounded
    assert res.loss[2] == 0.0 and not np.signbit(res.loss[2])  # 0 · inf is 0 here, not NaN
    assert res.loss[3] == 0.0  # r = 0: min(0, 0.8) = 0
    assert res.loss[4] == pytest.approx(0.8, rel=1e-15)
    assert res.components["clipped"].tolist() == [1.0, 0.0, 0.0, 0.0, 1.0]
    g = ppo_clip_grad(new, old, adv)
    assert g[0] == 0.0 and g[2] == 0.0 and g[4] == 0.0 and g[1] == math.inf


def test_ppo_zero_advantage_gives_zero_not_negative_zero():
    res = ppo_clip(np.array([-1.0, -0.5]), np.array([-1.2, -0.5]), np.array([0.0, 0.0]))
    assert res.loss.tolist() == [0.0, 0.0]
    assert not np.signbit(res.loss).any()


def test_ppo_errors():
    with pytest.raises(InputError) as err:
        ppo_clip(np.zeros(3), np.zeros(3), np.array([0.0, np.nan, 1.0]))
    assert (err.value.role, err.value.rows) == ("advantages", [1])
    with pytest.raises(InputError) as err:
        ppo_clip(np.zeros(3), np.zeros(2), np.zeros(3))
    assert err.value.role == "old-logp"
    for bad in (0.0, 1.0, -0.1):
        with pytest.raises(ParamError):
            losses.ppo_clip(np.zeros(3), np.zeros(3), np.zeros(3), clip=bad)


# ---------------------------------------------------------------------------
# policy-kl
# ---------------------------------------------------------------------------

LP = Ragged.from_lists([[-1.0, -2.0], [], [-0.5, -0.1, -3.0]])
LR = Ragged.from_lists([[-1.5, -1.0], [], [-0.5, -0.2, -1.0]])


def _k3(d):
    return math.exp(-d) - 1 + d


def test_policy_kl_estimators_by_hand():
    d = [[0.5, -1.0], [], [0.0, 0.1, -2.0]]
    k1 = policy_kl(LP, LR).loss
    np.testing.assert_allclose(k1, [-0.5, 0.0, -1.9], rtol=1e-14, atol=1e-15)
    k2 = policy_kl(LP, LR, estimator="k2").loss
    np.testing.assert_allclose(k2, [0.625, 0.0, 0.5 * (0.01 + 4.0)], rtol=1e-14)
    k3 = policy_kl(LP, LR, estimator="k3").loss
    np.testing.assert_allclose(k3, [math.fsum(_k3(v) for v in row) for row in d], rtol=1e-12)
    assert k1[1] == 0.0 and k3[1] == 0.0  # an empty sequence


def test_exact_expectation_of_k1_and_k3_is_the_kl_divergence():
    # Every token of a 7-word vocabulary as its own "sequence", weighted by π: E_π[k] = Σ_a π(a) k(a).
    rng = np.random.default_rng(3)
    x, xr = rng.normal(size=7) * 1.5, rng.normal(size=7) * 1.5
    lp = x - np.log(np.exp(x).sum())
    lr = xr - np.log(np.exp(xr).sum())
    kl = kl_divergence(lr[None], np.exp(lp)[None], pred_kind="log-probs").loss[0]
    pi = np.exp(lp)
    for est in ("k1", "k3"):
        per = policy_kl(lp, lr, estimator=est).loss  # (N,) input: one token per row
        assert math.fsum(pi * per) == pytest.approx(kl, rel=1e-12)
    k2 = math.fsum(pi * policy_kl(lp, lr, estimator="k2").loss)
    assert k2 != pytest.approx(kl, rel=1e-3)  # k2 is biased


def test_dense_matrix_equals_equal_length_ragged():
    rng = np.random.default_rng(4)
    a = -rng.exponential(size=(6, 5))
    b = -rng.exponential(size=(6, 5))
    for est in ("k1", "k2", "k3"):
        dense = policy_kl(a, b, estimator=est).loss
        rag = policy_kl(Ragged.from_lists(list(a)), Ragged.from_lists(list(b)), estimator=est).loss
        np.testing.assert_array_equal(dense, rag)
    g = policy_kl_grad(a, b, estimator="k3")
    assert isinstance(g, np.ndarray) and g.shape == (6, 5)


def test_k3_keeps_digits_for_tiny_log_ratios():
    for d in (1e-10, -3e-7, 2e-3):
        lp = np.array([-1.0])
        lr = lp - d
        res = policy_kl(lp, lr, estimator="k3").loss[0]
        with localcontext() as ctx:
            ctx.prec = 60
            dd = Decimal(float(lp[0])) - Decimal(float(lr[0]))
            exact = float((-dd).exp() - 1 + dd)
        assert res == pytest.approx(exact, rel=1e-12)


@settings(max_examples=60, deadline=None)
@given(st.lists(st.tuples(st.floats(-50.0, 0.0), st.floats(-50.0, 0.0)), min_size=1, max_size=20))
def test_k2_and_k3_are_non_negative(pairs):
    lp = np.array([p for p, _ in pairs])
    lr = np.array([r for _, r in pairs])
    rag_p, rag_r = Ragged.from_lists([lp]), Ragged.from_lists([lr])
    assert policy_kl(rag_p, rag_r, estimator="k2").loss[0] >= 0.0
    assert policy_kl(rag_p, rag_r, estimator="k3").loss[0] >= 0.0


def test_policy_kl_extremes():
    lp = Ragged.from_lists([[-800.0], [-1e-300], [-5.0]])
    lr = Ragged.from_lists([[0.0], [-800.0], [-np.inf]])
    k1 = policy_kl(lp, lr).loss
    np.testing.assert_array_equal(k1, [-800.0, 800.0, np.inf])
    k3 = policy_kl(lp, lr, estimator="k3").loss
    # ρ = e^800 overflows: k3 is +inf (its true value exceeds the float64 range), never NaN
    assert k3[0] == math.inf
    assert k3[1] == pytest.approx(math.exp(-800.0) - 1 + 800.0, rel=1e-15)
    assert k3[2] == math.inf
    assert not np.isnan(policy_kl_grad(lp, lr, estimator="k3").values).any()


def test_policy_kl_gradient_is_ragged_with_the_same_offsets():
    for est, expected in (
        ("k1", [1.0, 1.0, 1.0, 1.0, 1.0]),
        ("k2", [0.5, -1.0, 0.0, 0.1, -2.0]),
        ("k3", [1 - math.exp(-0.5), 1 - math.exp(1.0), 0.0, 1 - math.exp(-0.1), 1 - math.exp(2.0)]),
    ):
        g = policy_kl_grad(LP, LR, estimator=est)
        assert isinstance(g, Ragged)
        np.testing.assert_array_equal(g.offsets, LP.offsets)
        np.testing.assert_allclose(g.values, expected, rtol=1e-9, atol=1e-15)


def test_policy_kl_mismatched_lengths_name_the_row():
    lr = Ragged.from_lists([[-1.5, -1.0], [-0.3], [-0.5, -0.2, -1.0]])
    with pytest.raises(InputError) as err:
        policy_kl(LP, lr)
    assert (err.value.role, err.value.rows) == ("ref-logp", [1])
    assert "1 reference log-probabilities for 0 policy tokens" in err.value.message
    with pytest.raises(InputError) as err:
        policy_kl(np.zeros(3) - 1, np.zeros(4) - 1)
    assert err.value.role == "ref-logp"


def test_policy_kl_rejects_values_that_are_not_log_probabilities():
    with pytest.raises(InputError) as err:
        policy_kl(Ragged.from_lists([[-1.0], [-0.5, 0.3]]), Ragged.from_lists([[-1.0], [-0.5, -0.1]]))
    assert (err.value.role, err.value.rows) == ("policy-logp", [1])
    with pytest.raises(InputError) as err:
        policy_kl(np.array([-1.0, -2.0]), np.array([-1.0, 0.5]))
    assert (err.value.role, err.value.rows) == ("ref-logp", [1])
    with pytest.raises(InputError) as err:
        policy_kl(np.array([-np.inf, -2.0]), np.array([-1.0, -1.0]))
    assert (err.value.role, err.value.rows) == ("policy-logp", [0])
    with pytest.raises(ParamError):
        losses.policy_kl(LP, LR, estimator="k4")


# ---------------------------------------------------------------------------
# through the CLI
# ---------------------------------------------------------------------------


def test_cli_policy_kl_on_ragged_parquet(cli, tmp_path):
    import pyarrow as pa
    import pyarrow.parquet as pq

    path = str(tmp_path / "pk.parquet")
    pq.write_table(pa.table({"p": pa.array(LP.tolist()), "r": pa.array(LR.tolist())}), path)
    res = cli(["compute", "policy-kl", f"{path}:p", f"{path}:r", "-f", "json"])
    assert res.code == 0, res.err
    assert res.json["value"] == pytest.approx((-0.5 + 0.0 - 1.9) / 3, rel=1e-12)
    assert res.json["count"] == 3


def test_cli_ppo_reports_clipped_fraction_and_ratio(cli, tmp_path):
    from conftest import write_csv

    r = np.array([1.5, 1.5, 0.5, 0.5])
    path = write_csv(
        tmp_path / "ppo.csv", {"new": np.log(r), "old": np.zeros(4), "adv": np.array([2.0, -2.0, 2.0, -2.0])}
    )
    res = cli(["compute", "ppo-clip", f"{path}:new", f"{path}:old", f"{path}:adv", "-f", "json"])
    assert res.code == 0, res.err
    assert res.json["components"]["clipped"] == pytest.approx(0.5)
    assert res.json["components"]["ratio"] == pytest.approx(1.0, rel=1e-15)
    assert res.json["value"] == pytest.approx((-2.4 + 3.0 - 1.0 + 1.6) / 4, rel=1e-14)
