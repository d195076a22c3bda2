"""Distillation and reinforcement-learning losses: knowledge distillation, PPO's
clipped surrogate, and the per-sequence KL penalty of RLHF.

Shapes use N for rows (samples / sequences) and C for classes. Every kernel
returns per-sample float64 values of shape ``[N]``.

References:
    Hinton, Vinyals, Dean 2015 (distillation); Schulman et al. 2017 (PPO);
    Ouyang et al. 2022 (KL penalty); the k1/k2/k3 Monte-Carlo KL estimators.
"""

from __future__ import annotations

import numpy as np

from lossctl.errors import InputError, ParamError
from lossctl.losses import Result
from lossctl.losses._common import (
    as_float,
    check_finite,
    check_temperature,
    class_indices,
    exp_diff,
    first_rows,
    log_softmax64,
    log_softmax_ratio,
    logsumexp_parts,
    softmax64,
    softmax_minus_onehot,
)
from lossctl.losses.divergence import expm1_minus_x
from lossctl.ragged import Ragged

# ---------------------------------------------------------------------------
# distillation
# ---------------------------------------------------------------------------


def _distill_inputs(student, teacher, labels, temperature, alpha):
    t_ = check_temperature(temperature)
    a = float(alpha)
    if not 0.0 <= a <= 1.0:
        raise ParamError("alpha", f"--alpha must be in [0, 1]; got {alpha!r}")
    s = np.asarray(as_float(np.asarray(student)), dtype=np.float64)
    t = np.asarray(as_float(np.asarray(teacher)), dtype=np.float64)
    if s.ndim != 2:
        raise InputError("student", f"expected (N, C) logits; got shape {s.shape}", [], expected="(N, C) logits")
    if t.shape != s.shape:
        raise InputError(
            "teacher",
            f"shape {t.shape} does not match the student's {s.shape}",
            [],
            expected=f"teacher logits with the student's {s.shape[1]} columns",
        )
    check_finite(s, "student", "logits")
    check_finite(t, "teacher", "logits")
    y = None
    if labels is not None:
        y = class_indices(np.asarray(labels), "labels", s.shape[1], None)
        if len(y) != len(s):
            raise InputError("labels", f"{len(y)} labels for {len(s)} rows", [], expected="one label per row")
    else:
        a = 1.0  # no labels: the soft term alone
    return s, t, y, t_, a


def distillation(
    student: np.ndarray,
    teacher: np.ndarray,
    labels: np.ndarray | None = None,
    *,
    temperature: float = 2.0,
    alpha: float = 0.5,
) -> Result:
    """Knowledge-distillation loss per sample (Hinton, Vinyals, Dean 2015).

    Args:
      student: student logits ``[N, C]`` (the model being trained).
      teacher: teacher logits ``[N, C]``.
      labels: optional class indices ``[N]``.
      temperature: T > 0, softens both distributions.
      alpha: weight of the soft term in [0, 1]; 1.0 when no labels are given.

    ``l = α·T²·KL(softmax(t/T) ‖ softmax(s/T)) + (1-α)·CE(s, y)``. The
    components ``soft`` and ``hard`` (only ``soft`` without labels) sum to it.
    The T² keeps the soft term's gradient scale independent of T.
    """
    s, t, y, temp, a = _distill_inputs(student, teacher, labels, temperature, alpha)
    lp, p = softmax64(t / temp)
    d = log_softmax_ratio(t / temp, s / temp)  # log p - log q without rounding either first
    if d is None:
        d = lp - log_softmax64(s / temp)
    soft = a * temp * temp * (p * d).sum(axis=1)
    if y is None:
        return Result(loss=soft, components={"soft": soft})
    m, log_s = logsumexp_parts(s)
    ce = log_s + (m - s[np.arange(len(s)), y])
    hard = (1.0 - a) * ce
    return Result(loss=soft + hard, components={"soft": soft, "hard": hard})


def distillation_grad(
    student: np.ndarray,
    teacher: np.ndarray,
    labels: np.ndarray | None = None,
    *,
    temperature: float = 2.0,
    alpha: float = 0.5,
) -> np.ndarray:
    """∂l_n/∂student_n = α·T·(softmax(s/T) - softmax(t/T)) + (1-α)·(softmax(s) - onehot(y))."""
    s, t, y, temp, a = _distill_inputs(student, teacher, labels, temperature, alpha)
    g = a * temp * exp_diff(log_softmax64(s / temp), log_softmax64(t / temp))
    if y is not None:
        g += (1.0 - a) * softmax_minus_onehot(log_softmax64(s), y)
    return g


# ---------------------------------------------------------------------------
# ppo-clip
# ---------------------------------------------------------------------------


def _vector(x, role: str, n: int | None = None) -> np.ndarray:
    a = np.asarray(as_float(np.asarray(x)), dtype=np.float64)
    if a.ndim == 2 and a.shape[1] == 1:
        a = a[:, 0]
    if a.ndim != 1:
        raise InputError(role, f"expected one value per row; got shape {a.shape}", [], expected="(N,) values")
    if n is not None and len(a) != n:
        raise InputError(role, f"{len(a)} rows but the first input has {n}", [], expected=f"{n} rows")
    check_finite(a, role, "values")
    return a


def _ppo_parts(new_logp, old_logp, advantages, clip):
    eps = float(clip)
    if not 0.0 < eps < 1.0:
        raise ParamError("clip", f"--clip must be in (0, 1); got {clip!r}")
    new = _vector(new_logp, "new-logp")
    old = _vector(old_logp, "old-logp", len(new))
    adv = _vector(advantages, "advantages", len(new))
    with np.errstate(over="ignore"):
        ratio = np.exp(new - old)  # may be inf for a log-ratio above ~709
    with np.errstate(invalid="ignore"):
        unclipped = np.where(adv == 0.0, 0.0, ratio * adv)  # inf · 0 is 0 here, not NaN
    clipped_term = np.clip(ratio, 1.0 - eps, 1.0 + eps) * adv
    use_clipped = clipped_term < unclipped  # ties: the unclipped branch (it has the gradient)
    return ratio, adv, unclipped, clipped_term, use_clipped


def ppo_clip(
    new_logp: np.ndarray,
    old_logp: np.ndarray,
    advantages: np.ndarray,
    *,
    clip: float = 0.2,
) -> Result:
    """PPO's clipped surrogate objective, negated (a loss), per sample (Schulman et al. 2017).

    ``l = -min(r·A, clip(r, 1-ε, 1+ε)·A)``, ``r = exp(new - old)``. The ratio is
    formed from the log-ratio in float64; a log-ratio above ~709 overflows r to
    inf, which gives the exact limits: ``-(1+ε)·A`` for A > 0 (clipped), ``+inf``
    for A < 0 (the unclipped term is unbounded) and 0 for A = 0.
    Components: ``clipped`` (1 where the clipped term is the minimum) and
    ``ratio`` r, whose means are the clipped fraction and the mean ratio.
    """
    ratio, adv, unclipped, clipped_term, use_clipped = _ppo_parts(new_logp, old_logp, advantages, clip)
    obj = np.where(use_clipped, clipped_term, unclipped)
    loss = 0.0 - obj  # no -0.0
    return Result(loss=loss, components={"clipped": use_clipped.astype(np.float64), "ratio": ratio})


def ppo_clip_grad(
    new_logp: np.ndarray,
    old_logp: np.ndarray,
    advantages: np.ndarray,
    *,
    clip: float = 0.2,
) -> np.ndarray:
    """∂l_n/∂new_n = -r·A where the unclipped term is the minimum (ties included), else 0."""
    ratio, adv, unclipped, clipped_term, use_clipped = _ppo_parts(new_logp, old_logp, advantages, clip)
    with np.errstate(invalid="ignore"):
        g = np.where(use_clipped | (adv == 0.0), 0.0, -unclipped)
    return g.reshape(np.shape(new_logp))


# ---------------------------------------------------------------------------
# policy-kl
# ---------------------------------------------------------------------------

_ESTIMATORS = ("k1", "k2", "k3")


def _tokens(x, role: str) -> tuple[np.ndarray, np.ndarray]:
    """(values float64, offsets) of a Ragged, an (N,) array (one token per row) or an (N, T) array."""
    if isinstance(x, Ragged):
        return np.asarray(x.values, dtype=np.float64), x.offsets
    a = np.asarray(as_float(np.asarray(x)), dtype=np.float64)
    if a.ndim == 1:
        return a, np.arange(len(a) + 1, dtype=np.int64)
    if a.ndim == 2:
        n, t = a.shape
        return a.reshape(-1), np.arange(n + 1, dtype=np.int64) * t
    raise InputError(role, f"expected (N,) values or one list per row; got shape {a.shape}", [])


def _policy_parts(policy_logp, ref_logp, estimator):
    if estimator not in _ESTIMATORS:
        raise ParamError("estimator", f"--estimator must be one of k1, k2, k3; got {estimator!r}")
    lp, offs = _tokens(policy_logp, "policy-logp")
    lr, offs_r = _tokens(ref_logp, "ref-logp")
    n = len(offs) - 1
    if len(offs_r) - 1 != n:
        raise InputError("ref-logp", f"{len(offs_r) - 1} rows but the policy has {n}", [], expected=f"{n} rows")
    len_p, len_r = np.diff(offs), np.diff(offs_r)
    bad = len_p != len_r
    if bad.any():
        rows = first_rows(bad)
        i = rows[0]
        raise InputError(
            "ref-logp",
            f"{int(len_r[i])} reference log-probabilities for {int(len_p[i])} policy tokens",
            rows,
            expected="one reference log-probability per policy token (the same list lengths)",
        )
    rows_of = np.repeat(np.arange(n), len_p)
    bad_p = ~np.isfinite(lp) | (lp > 0)
    if bad_p.any():
        rows = first_rows(np.bincount(rows_of[bad_p], minlength=n) > 0)
        raise InputError(
            "policy-logp",
            f"policy log-probability {lp[bad_p][0]:.9g} is not a finite value <= 0",
            rows,
            expected="log-probabilities of the sampled tokens (finite, <= 0)",
        )
    bad_r = np.isnan(lr) | (lr > 0)
    if bad_r.any():
        rows = first_rows(np.bincount(rows_of[bad_r], minlength=n) > 0)
        raise InputError(
            "ref-logp",
            f"reference log-probability {lr[bad_r][0]:.9g} is above 0 (or NaN)",
            rows,
            expected="log-probabilities <= 0 (-inf allowed: the KL is then infinite)",
        )
    return lp, lr, Ragged(lp, offs)


def policy_kl(
    policy_logp,
    ref_logp,
    *,
    estimator: str = "k1",
) -> Result:
    """Monte-Carlo KL(π ‖ π_ref) per sequence from the log-probs of the sampled tokens.

    Per token, with ``d = log π - log π_ref``: k1 ``d``; k2 ``½d²``;
    k3 ``(ρ - 1) - log ρ`` with ``ρ = π_ref/π = e^{-d}``, computed as
    ``expm1(-d) + d`` (series near 0, so tiny d keep their digits).
    Per sequence: the sum over its tokens (0 for an empty one). Inputs are
    ``Ragged`` rows, ``(N, T)`` arrays, or ``(N,)`` (one token per row).
    A reference log-probability of -inf gives +inf.
    """
    lp, lr, rag = _policy_parts(policy_logp, ref_logp, estimator)
    with np.errstate(invalid="ignore", over="ignore"):
        d = lp - lr
        if estimator == "k1":
            tok = d
        elif estimator == "k2":
            tok = 0.5 * d * d
        else:
            tok = np.where(np.isposinf(d), np.inf, expm1_minus_x(-d))
    return Result(loss=rag.sum_rows(tok))


def policy_kl_grad(
    policy_logp,
    ref_logp,
    *,
    estimator: str = "k1",
) -> np.ndarray | Ragged:
    """∂l_n/∂(log π of each token): k1 ``1``; k2 ``d``; k3 ``1 - ρ = -expm1(-d)``.

    Returned with the policy input's layout (a Ragged with its offsets for ragged input).
    """
    lp, lr, rag = _policy_parts(policy_logp, ref_logp, estimator)
    with np.errstate(invalid="ignore", over="ignore"):
        d = lp - lr
        if estimator == "k1":
            g = np.ones_like(d)
        elif estimator == "k2":
            g = d
        else:
            g = -np.expm1(-d)
    if isinstance(policy_logp, Ragged):
        return rag.with_values(g)
    return g.reshape(np.shape(policy_logp))
