"""Distillation and reinforcement-learning losses: knowledge distillation, PPO's
clipped surrogate, and the per-sequence KL penalty of RLHF.

Shapes use N for rows (samples / sequences) and C for classes. Every kernel
returns per-sample float64 values of shape ``[N]``.

References:
    Hinton, Vinyals, Dean 2015 (distillation); Schulman et al. 2017 (PPO);
    Ouyang et al. 2022 (KL penalty); the k1/k2/k3 Monte-Carlo KL estimators.
"""

from __future__ import annotations

from lossctl.losses._lazy import lazy

from lossctl.errors import InputError, opt
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
from lossctl.losses.gaussian import expm1_minus_x
from lossctl.losses.spec import loss, Param, Role

np = lazy(globals())  # NumPy is imported on first use (lossctl/losses/_lazy.py)

# Declarations shared by this module's losses ----------------------------------------

TOKEN_MASK = Role(
    "mask",
    "(N, T) or ragged lists",
    f"Given as {opt('mask')} SOURCE: 1 for a token that counts (a response token), 0 for padding or prompt, in "
    "the log-probabilities' layout. Masked positions are neither validated nor counted.",
    ndim=(1, 2),
    optional=True,
    ragged=True,
    option=True,
)

# ---------------------------------------------------------------------------
# distillation
# ---------------------------------------------------------------------------


def _distill_inputs(student, teacher, labels, temperature, alpha):
    t_ = check_temperature(temperature)
    a = float(alpha)  # (declared: [0, 1])
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


@loss(
    name="distillation",
    aliases=("kd",),
    family="distillation-rl",
    summary="Knowledge distillation: temperature-softened KL from teacher to student, plus optional CE on labels.",
    inputs=(
        Role("student", "(N, C)", "Student logits (the model being trained).", ndim=(2,)),
        Role("teacher", "(N, C)", "Teacher logits, the student's shape.", ndim=(2,)),
        Role(
            "labels",
            "(N,)",
            "Optional true class indices for the hard (cross-entropy) term.",
            ndim=(1,),
            dtype="label",
            optional=True,
        ),
    ),
    params=(
        Param(
            "temperature",
            "float",
            2.0,
            "Softmax temperature T applied to both teacher and student logits in the soft term.",
            low=0.0,
            low_open=True,
            high_open=True,
            normal=True,
        ),
        Param(
            "alpha",
            "float",
            0.5,
            "Weight α of the soft (KL) term; 1-α weighs the hard cross-entropy term. "
            "Without labels the loss is the soft term alone (α treated as 1.0).",
            low=0.0,
            high=1.0,
        ),
    ),
    reference=(
        "the usual PyTorch recipe: α·T²·F.kl_div(F.log_softmax(s/T), F.softmax(t/T), "
        'reduction="batchmean") + (1-α)·F.cross_entropy(s, y)'
    ),
    formula=(
        "l_n = α·T²·KL(softmax(t_n/T) ‖ softmax(s_n/T)) + (1-α)·CE(s_n, y_n)\n"
        "components: soft = α·T²·KL(...), hard = (1-α)·CE(s, y) (no labels: α = 1, soft only)"
    ),
    headline="the mean over rows; the report also shows the means of the soft and hard terms",
    gradient="∂l/∂s = α·T·(softmax(s/T) - softmax(t/T)) + (1-α)·(softmax(s) - onehot(y))",
    properties=(
        "Non-negative; the soft term is 0 when student and teacher logits agree up to a constant.",
        "The T² factor keeps the soft term's gradient magnitude roughly independent of T.",
        "A higher temperature exposes the teacher's 'dark knowledge' (relative probabilities of wrong classes).",
        "Computed with log-softmax: logits of ±1e4 give finite, exact results.",
    ),
    used_for="Model compression: training a small student to mimic a large teacher (classification, language models).",
    activation="softmax over classes at temperature T (soft term) and 1 (hard term), applied inside",
    paper="Hinton, Vinyals, Dean 2015, Distilling the Knowledge in a Neural Network.",
    example=(
        "sample_data/rl_distillation.parquet:student",
        "sample_data/rl_distillation.parquet:teacher",
        "sample_data/rl_distillation.parquet:label",
        f"{opt('temperature')}",
        "4",
    ),
)
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


_TOKEN_MEANS = ("sequence", "batch")


def _token_layout(x, role: str) -> tuple[np.ndarray, np.ndarray, bool]:
    """(values float64, offsets, is_tokens) of a Ragged / (N, T) array (tokens) or an (N,) array
    (one action per row)."""
    from lossctl.ragged import Ragged

    if isinstance(x, Ragged):
        return np.asarray(x.values, dtype=np.float64), x.offsets, True
    a = np.asarray(as_float(np.asarray(x)), dtype=np.float64)
    if a.ndim == 2 and a.shape[1] == 1:
        a = a[:, 0]
    if a.ndim == 1:
        return a, np.arange(len(a) + 1, dtype=np.int64), False
    if a.ndim == 2:
        n, t = a.shape
        return a.reshape(-1), np.arange(n + 1, dtype=np.int64) * t, True
    raise InputError(role, f"expected (N,) values or one list per row; got shape {a.shape}", [])


def _same_lengths(offs: np.ndarray, offs_b: np.ndarray, role: str, what: str) -> None:
    n = len(offs) - 1
    if len(offs_b) - 1 != n:
        raise InputError(role, f"{len(offs_b) - 1} rows but the first input has {n}", [], expected=f"{n} rows")
    la, lb = np.diff(offs), np.diff(offs_b)
    bad = la != lb
    if bad.any():
        rows = first_rows(bad)
        i = rows[0]
        raise InputError(
            role,
            f"{int(lb[i])} values for a sequence of {int(la[i])} tokens",
            rows,
            expected=f"{what}: the same list length as the first input in every row",
        )


def token_mask(mask, offs: np.ndarray, role: str = "mask") -> np.ndarray | None:
    """The --mask as a bool per token (None: every token counts). Values must be 0 or 1."""
    if mask is None:
        return None
    m, offs_m, _ = _token_layout(mask, role)
    _same_lengths(offs, offs_m, role, "one 0/1 entry per token")
    bad = (m != 0.0) & (m != 1.0)
    if bad.any():
        n = len(offs) - 1
        rows_of = np.repeat(np.arange(n), np.diff(offs))
        rows = first_rows(np.bincount(rows_of[bad], minlength=n) > 0)
        raise InputError(
            role,
            f"mask value {m[bad][0]:.9g} is neither 0 nor 1",
            rows,
            expected="1 for a token that counts (a response token), 0 for padding or prompt",
        )
    return m == 1.0


def _check_token_mean(token_mean: str, allowed=_TOKEN_MEANS) -> str:
    if token_mean not in allowed:
        raise ValueError(f"token_mean {token_mean!r} is not one of the declared choices {allowed}")
    return token_mean


def _finite_tokens(v: np.ndarray, keep: np.ndarray, rows_of: np.ndarray, n: int, role: str) -> None:
    bad = ~np.isfinite(v) & keep
    if bad.any():
        rows = first_rows(np.bincount(rows_of[bad], minlength=n) > 0)
        raise InputError(
            role, f"non-finite value {v[bad][0]:.9g} at a token that counts", rows, expected="finite values"
        )


def _ppo_parts(new_logp, old_logp, advantages, mask, clip):
    from lossctl.ragged import Ragged

    eps = float(clip)  # (declared: (0, 1))
    new, offs, tokens = _token_layout(new_logp, "new-logp")
    n = len(offs) - 1
    old, offs_o, _ = _token_layout(old_logp, "old-logp")
    _same_lengths(offs, offs_o, "old-logp", "one old log-probability per token")
    adv, offs_a, _ = _token_layout(advantages, "advantages")
    if len(offs_a) - 1 != n:
        raise InputError("advantages", f"{len(offs_a) - 1} rows but the first input has {n}", [], expected=f"{n} rows")
    lengths = np.diff(offs)
    if not np.array_equal(np.diff(offs_a), lengths):
        if tokens and np.array_equal(np.diff(offs_a), np.ones(n, np.int64)):
            adv = np.repeat(adv, lengths)  # one advantage per sequence, broadcast to its tokens
        else:
            _same_lengths(offs, offs_a, "advantages", "one advantage per token, or one per sequence")
    keep = token_mask(mask, offs)
    if keep is None:
        keep = np.ones(len(new), dtype=bool)
    rows_of = np.repeat(np.arange(n), lengths)
    _finite_tokens(new, keep, rows_of, n, "new-logp")
    _finite_tokens(old, keep, rows_of, n, "old-logp")
    _finite_tokens(adv, keep, rows_of, n, "advantages")
    with np.errstate(over="ignore", invalid="ignore"):
        ratio = np.exp(np.where(keep, new - old, 0.0))  # may be inf for a log-ratio above ~709
        adv = np.where(keep, adv, 0.0)
        unclipped = np.where(adv == 0.0, 0.0, ratio * adv)  # inf · 0 is 0 here, not NaN
    clipped_term = np.clip(ratio, 1.0 - eps, 1.0 + eps) * adv
    use_clipped = (clipped_term < unclipped) & keep  # ties: the unclipped branch (it has the gradient)
    outside = (np.abs(ratio - 1.0) > eps) & keep  # Stable-Baselines3's clip_fraction
    rag = Ragged(new, offs)
    count = rag.sum_rows(keep.astype(np.float64))
    return ratio, adv, unclipped, clipped_term, use_clipped, outside, keep, rag, count, tokens


@loss(
    name="ppo-clip",
    family="distillation-rl",
    summary="PPO's clipped surrogate objective (negated), per sampled action.",
    inputs=(
        Role(
            "new-logp",
            "(N,) or (N, T) or ragged lists",
            "Log-probability of each sampled action under the current policy: one per row, or one "
            f"list of per-token log-probabilities per sequence (padded with {opt('mask')}, or ragged).",
            ndim=(1, 2),
            ragged=True,
        ),
        Role(
            "old-logp",
            "(N,) or (N, T) or ragged lists",
            "Log-probability of the same actions under the policy that collected the data (new-logp's layout).",
            ndim=(1, 2),
            ragged=True,
        ),
        Role(
            "advantages",
            "(N,) or (N, T) or ragged lists",
            "Advantage estimate A of each action (e.g. GAE): one per token (new-logp's layout), "
            "or one per sequence, broadcast to its tokens.",
            ndim=(1, 2),
            ragged=True,
        ),
        TOKEN_MASK,
    ),
    params=(
        Param(
            "clip",
            "float",
            0.2,
            "Clip range ε: the probability ratio is clipped to [1-ε, 1+ε].",
            low=0.0,
            high=1.0,
            low_open=True,
            high_open=True,
        ),
        Param(
            "token-mean",
            "choice",
            "batch",
            "How token losses make the headline: batch = Σ over all counted tokens / their number "
            "(TRL's masked_mean(loss, mask)); sequence = mean over sequences of each sequence's token "
            "mean (OpenRLHF's masked_mean(loss, mask, dim=-1).mean()). Equal for one action per row.",
            choices=("batch", "sequence"),
        ),
    ),
    reference="PPO clipped surrogate (Schulman et al. 2017, eq. 7): -torch.min(r·A, torch.clamp(r, 1-ε, 1+ε)·A), r = exp(new - old)",
    formula=(
        "per action t: l_t = -min(r_t·A_t, clip(r_t, 1-ε, 1+ε)·A_t),  r_t = exp(new_t - old_t)\n"
        f"per row n: l_n = the mean of l_t over its counted tokens ({opt('mask')}; all tokens of a ragged row)\n"
        "components per row: clipped = tokens where the clipped term is the minimum (TRL), "
        "clipped_sb3 = tokens with |r_t - 1| > ε (Stable-Baselines3), tokens, ratio = mean r_t"
    ),
    headline=(
        f"{opt('token-mean')} batch (default): Σ over all counted tokens / their number (TRL); {opt('token-mean')} "
        "sequence: the mean over sequences of their token means (OpenRLHF); both are the mean over "
        "samples for one action per row. Derived: clipfrac_trl (tokens where the clipped term is taken) "
        "and clipfrac_sb3 (tokens with |r - 1| > ε), fractions of all counted tokens"
    ),
    derived=("clipfrac",),
    gradient=(
        "∂l_n/∂new_t = -r_t·A_t / T_n where the unclipped term is the minimum (ties included), 0 where "
        "the clipped term is (the sub-gradient at r = 1±ε is the unclipped one) and at masked tokens; "
        "T_n = the row's counted tokens (1 for one action per row)"
    ),
    properties=(
        "A pessimistic (lower) bound on the unclipped surrogate: the objective gains nothing from "
        "moving r beyond 1±ε in the direction the advantage favours.",
        "Piecewise linear in r with kinks at 1±ε; not differentiable there.",
        "The ratio is formed from the log-ratio in float64: a log-ratio above ~709 makes r = inf, "
        "giving -(1+ε)·A for A > 0 (clipped, finite), +inf for A < 0 and 0 for A = 0.",
        "Can be negative: it is a negated objective, not a distance.",
    ),
    used_for="Policy-gradient reinforcement learning (PPO), including RLHF of language models.",
    activation="none: log-probabilities of the sampled actions (log-softmax of the policy's logits)",
    paper="Schulman et al. 2017, Proximal Policy Optimization Algorithms.",
    example=(
        "sample_data/rl_ppo.csv:new_logp",
        "sample_data/rl_ppo.csv:old_logp",
        "sample_data/rl_ppo.csv:advantage",
    ),
)
def ppo_clip(
    new_logp,
    old_logp,
    advantages,
    mask=None,
    *,
    clip: float = 0.2,
    token_mean: str = "batch",
) -> Result:
    """PPO's clipped surrogate objective, negated (a loss), per sample (Schulman et al. 2017).

    Per action (token) ``l = -min(r·A, clip(r, 1-ε, 1+ε)·A)``, ``r = exp(new - old)``.
    The ratio is formed from the log-ratio in float64; a log-ratio above ~709
    overflows r to inf, which gives the exact limits: ``-(1+ε)·A`` for A > 0
    (clipped), ``+inf`` for A < 0 (the unclipped term is unbounded) and 0 for A = 0.

    Inputs are ``(N,)`` (one action per row) or token-level: ``Ragged`` rows or
    ``(N, T)`` arrays, with ``mask`` (1 = the token counts) for padded ones and
    advantages per token or one per sequence (broadcast). A sequence's value is
    the mean over its counted tokens (a sequence with none is ignored). The
    headline follows ``token_mean``: ``batch`` = Σ over all counted tokens /
    their number (TRL's ``masked_mean(loss, mask)``); ``sequence`` = the mean of
    the per-sequence means (OpenRLHF's ``masked_mean(loss, mask, dim=-1).mean()``).

    Components per row: ``clipped`` (tokens where the clipped term is the
    minimum: TRL's ``clipfrac`` definition), ``clipped_sb3`` (tokens with
    ``|r - 1| > ε``: Stable-Baselines3's ``clip_fraction``), ``tokens`` (counted
    tokens) and ``ratio`` (mean ratio over the row's tokens). For one action per
    row ``clipped`` and ``clipped_sb3`` are 0/1, so their means are the fractions.
    """
    tm = _check_token_mean(token_mean)
    ratio, adv, unclipped, clipped_term, use_clipped, outside, keep, rag, count, tokens = _ppo_parts(
        new_logp, old_logp, advantages, mask, clip
    )
    obj = np.where(use_clipped, clipped_term, unclipped)
    tok = np.where(keep, 0.0 - obj, 0.0)  # no -0.0
    total = rag.sum_rows(tok)
    empty = count == 0
    with np.errstate(invalid="ignore", divide="ignore"):
        loss = np.where(empty, 0.0, total / np.where(empty, 1.0, count))
        mean_ratio = np.where(empty, 0.0, rag.sum_rows(np.where(keep, ratio, 0.0)) / np.where(empty, 1.0, count))
    comps = {
        "clipped": rag.sum_rows(use_clipped.astype(np.float64)),
        "clipped_sb3": rag.sum_rows(outside.astype(np.float64)),
        "tokens": count,
        "ratio": mean_ratio,
    }
    num = den = None
    if tm == "batch":
        num, den = total, count
    return Result(loss=loss, num=num, den=den, ignored=empty if empty.any() else None, components=comps)


def ppo_clip_grad(
    new_logp,
    old_logp,
    advantages,
    mask=None,
    *,
    clip: float = 0.2,
    token_mean: str = "batch",
):
    """∂l_n/∂new_t = -r_t·A_t / T_n where the unclipped term is the minimum (ties included),
    else 0 (T_n: the row's counted tokens; 0 at masked tokens). Token-level input gives a
    Ragged in the input's layout."""
    from lossctl.ragged import Ragged

    _check_token_mean(token_mean)
    ratio, adv, unclipped, clipped_term, use_clipped, outside, keep, rag, count, tokens = _ppo_parts(
        new_logp, old_logp, advantages, mask, clip
    )
    per_tok = np.repeat(np.where(count == 0, 1.0, count), rag.lengths)
    with np.errstate(invalid="ignore"):
        g = np.where(use_clipped | (adv == 0.0) | ~keep, 0.0, -unclipped) / per_tok
    if tokens:
        if isinstance(new_logp, Ragged):
            return rag.with_values(g)
        return g.reshape(np.shape(new_logp))
    return g.reshape(np.shape(new_logp))


# ---------------------------------------------------------------------------
# policy-kl
# ---------------------------------------------------------------------------

_ESTIMATORS = ("k1", "k2", "k3")


def _tokens(x, role: str) -> tuple[np.ndarray, np.ndarray]:
    """(values float64, offsets) of a Ragged, an (N,) array (one token per row) or an (N, T) array."""
    from lossctl.ragged import Ragged

    if isinstance(x, Ragged):
        return np.asarray(x.values, dtype=np.float64), x.offsets
    a = np.asarray(as_float(np.asarray(x)), dtype=np.float64)
    if a.ndim == 1:
        return a, np.arange(len(a) + 1, dtype=np.int64)
    if a.ndim == 2:
        n, t = a.shape
        return a.reshape(-1), np.arange(n + 1, dtype=np.int64) * t
    raise InputError(role, f"expected (N,) values or one list per row; got shape {a.shape}", [])


def _policy_parts(policy_logp, ref_logp, estimator, mask=None):
    from lossctl.ragged import Ragged

    if estimator not in _ESTIMATORS:
        raise ValueError(f"estimator {estimator!r} is not one of the declared choices {_ESTIMATORS}")
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
    keep = token_mask(mask, offs)
    if keep is not None:  # padding is not validated and counts for nothing
        lp = np.where(keep, lp, 0.0)
        lr = np.where(keep, lr, 0.0)
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
    if keep is None:
        keep = np.ones(len(lp), dtype=bool)
    return lp, lr, Ragged(lp, offs), keep


_KL_MEANS = ("sum",) + _TOKEN_MEANS


@loss(
    name="policy-kl",
    family="distillation-rl",
    summary="Per-sequence KL penalty between a policy and a reference policy, from sampled-token log-probs.",
    inputs=(
        Role(
            "policy-logp",
            "(N,) or (N, T) or ragged lists",
            "Log-probabilities of the sampled tokens under the policy: one list per sequence "
            "(variable length), or one value per row (one token per sequence).",
            ndim=(1, 2),
            ragged=True,
        ),
        Role(
            "ref-logp",
            "(N,) or (N, T) or ragged lists",
            "Log-probabilities of the same tokens under the reference policy; the same length per row.",
            ndim=(1, 2),
            ragged=True,
        ),
        TOKEN_MASK,
    ),
    params=(
        Param(
            "token-mean",
            "choice",
            "sum",
            "Per sequence: sum = the sum over its tokens (the RLHF reward penalty); sequence = its "
            "token mean, averaged over sequences (OpenRLHF); batch = its token mean, with the headline "
            "Σ over all counted tokens / their number (TRL's masked_mean).",
            choices=("sum", "sequence", "batch"),
        ),
        Param(
            "estimator",
            "choice",
            "k1",
            "Per-token Monte-Carlo estimator of KL(π ‖ π_ref): k1 = log π - log π_ref (unbiased, "
            "can be negative); k2 = ½(log π - log π_ref)² (low variance, biased); "
            "k3 = (ρ - 1) - log ρ, ρ = π_ref/π (unbiased and non-negative).",
            choices=("k1", "k2", "k3"),
        ),
    ),
    reference="the RLHF KL penalty of InstructGPT / TRL: sum over tokens of logp - ref_logp (k1); k1-k3: Schulman 2020, Approximating KL divergence",
    formula=(
        "d_t = log π(a_t) - log π_ref(a_t) per sampled token\n"
        "k1: d_t;  k2: ½ d_t²;  k3: (ρ_t - 1) - log ρ_t = expm1(-d_t) + d_t,  ρ_t = π_ref/π\n"
        f"l_n = Σ_t over the counted tokens of sequence n ({opt('token-mean')} sum; 0 for an empty sequence), "
        f"or their mean ({opt('token-mean')} sequence / batch; an empty sequence is ignored)"
    ),
    headline=(
        f"{opt('token-mean')} sum (default): the mean over sequences of the per-sequence sums (the RLHF KL penalty); "
        "sequence: the mean of the per-sequence token means (OpenRLHF); batch: Σ over all counted tokens / "
        "their number (TRL's masked_mean)"
    ),
    gradient=(
        "∂l/∂log π(a_t): k1 1; k2 d_t; k3 1 - ρ_t = -expm1(-d_t), divided by the row's counted tokens for a "
        "token mean, 0 at masked tokens (per token, in the input's ragged layout)"
    ),
    properties=(
        "All three estimate KL(π ‖ π_ref) when the tokens are sampled from π; k1 and k3 are unbiased, k2 is biased but low-variance.",
        "k1 can be negative for a single sequence; k2 and k3 are never negative.",
        "k3 is computed as expm1(-d) + d, so small log-ratios keep their digits.",
        "A reference log-probability of -inf gives +inf (the reference cannot produce the token).",
    ),
    used_for="RLHF / policy optimisation of language models: keeping the policy close to the reference (SFT) model.",
    activation="none: log-probabilities (log-softmax of each model's logits, gathered at the sampled tokens)",
    paper="Ouyang et al. 2022, Training language models to follow instructions with human feedback; "
    "k1-k3: Schulman 2020, Approximating KL divergence.",
    example=(
        "sample_data/rl_policy_kl.parquet:policy_logp",
        "sample_data/rl_policy_kl.parquet:ref_logp",
        f"{opt('estimator')}",
        "k3",
    ),
)
def policy_kl(
    policy_logp,
    ref_logp,
    mask=None,
    *,
    estimator: str = "k1",
    token_mean: str = "sum",
) -> Result:
    """Monte-Carlo KL(π ‖ π_ref) per sequence from the log-probs of the sampled tokens.

    Per token, with ``d = log π - log π_ref``: k1 ``d``; k2 ``½d²``;
    k3 ``(ρ - 1) - log ρ`` with ``ρ = π_ref/π = e^{-d}``, computed as
    ``expm1(-d) + d`` (series near 0, so tiny d keep their digits).
    Per sequence (``token_mean``): ``sum`` = the sum over its tokens (0 for an
    empty one; the RLHF reward penalty); ``sequence`` / ``batch`` = the mean over
    its counted tokens, the headline being the mean of those means
    (``sequence``, OpenRLHF) or Σ over all counted tokens / their number
    (``batch``, TRL's ``masked_mean``); a sequence with no counted token is then
    ignored. Inputs are ``Ragged`` rows, ``(N, T)`` arrays, or ``(N,)`` (one token
    per row); ``mask`` (1 = the token counts) selects the tokens of padded rows.
    A reference log-probability of -inf gives +inf.
    """
    tm = _check_token_mean(token_mean, _KL_MEANS)
    lp, lr, rag, keep = _policy_parts(policy_logp, ref_logp, estimator, mask)
    with np.errstate(invalid="ignore", over="ignore"):
        d = lp - lr
        if estimator == "k1":
            tok = d
        elif estimator == "k2":
            tok = 0.5 * d * d
        else:
            tok = np.where(np.isposinf(d), np.inf, expm1_minus_x(-d))
    tok = np.where(keep, tok, 0.0)
    total = rag.sum_rows(tok)
    if tm == "sum":
        return Result(loss=total)
    count = rag.sum_rows(keep.astype(np.float64))
    empty = count == 0
    loss = np.where(empty, 0.0, total / np.where(empty, 1.0, count))
    num, den = (total, count) if tm == "batch" else (None, None)
    return Result(loss=loss, num=num, den=den, ignored=empty if empty.any() else None, components={"tokens": count})


def policy_kl_grad(
    policy_logp,
    ref_logp,
    mask=None,
    *,
    estimator: str = "k1",
    token_mean: str = "sum",
) -> np.ndarray | Ragged:
    """∂l_n/∂(log π of each token): k1 ``1``; k2 ``d``; k3 ``1 - ρ = -expm1(-d)``; divided by
    the row's counted tokens for a token mean; 0 at masked tokens.

    Returned with the policy input's layout (a Ragged with its offsets for ragged input).
    """
    from lossctl.ragged import Ragged

    tm = _check_token_mean(token_mean, _KL_MEANS)
    lp, lr, rag, keep = _policy_parts(policy_logp, ref_logp, estimator, mask)
    with np.errstate(invalid="ignore", over="ignore"):
        d = lp - lr
        if estimator == "k1":
            g = np.ones_like(d)
        elif estimator == "k2":
            g = d
        else:
            g = -np.expm1(-d)
    g = np.where(keep, g, 0.0)
    if tm != "sum":
        count = rag.sum_rows(keep.astype(np.float64))
        g = g / np.repeat(np.where(count == 0, 1.0, count), rag.lengths)
    if isinstance(policy_logp, Ragged):
        return rag.with_values(g)
    return g.reshape(np.shape(policy_logp))
