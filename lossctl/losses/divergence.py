"""Divergences between distributions: KL, Jensen-Shannon, Gaussian KL (closed form).

Shapes use N for rows (samples), C for classes and D for dimensions. Every
kernel returns per-sample float64 values of shape ``[N]``.

Discrete distributions arrive as logits, probabilities or log-probabilities
(``pred_kind`` for the prediction Q, ``target_kind`` for the target P); they are
brought to float64 log-probabilities first (log-softmax for logits, never
``log(softmax)``) so logits of ±1e4 give finite, exact values.

References:
    ``torch.nn.functional.kl_div(log Q, P, reduction="batchmean")``;
    ``scipy.special.rel_entr`` (the 0 / inf conventions);
    ``scipy.spatial.distance.jensenshannon`` (squared);
    Kingma & Welling 2014, appendix B (Gaussian KL).
"""

from __future__ import annotations

import math
import sys

from lossctl.losses._lazy import lazy

from lossctl.errors import InputError, ParamError, opt
from lossctl.losses import Result
from lossctl.losses._common import (
    as_float,
    check_finite,
    check_log_probs,
    check_probs,
    check_temperature,
    constant,
    default_prob_atol,
    exp_diff,
    first_rows,
    log_softmax64,
    log_softmax_ratio,
    row_parts,
    rows_per_block,
    scratch,
    softmax64,
)
from lossctl.losses.spec import loss, Param, Role

np = lazy(globals())  # NumPy is imported on first use (lossctl/losses/_lazy.py)

# Declarations shared by this module's losses ----------------------------------------

_Q_KIND = Param(
    "pred-kind",
    "choice",
    "logits",
    "What the prediction Q holds: raw logits (log-softmax applied inside), probabilities, "
    "or log-probabilities. Never guessed from the values.",
    choices=("logits", "probs", "log-probs"),
)

_P_KIND = Param(
    "target-kind",
    "choice",
    "probs",
    "What the target P holds: probabilities (default), log-probabilities, or raw logits (log-softmax applied inside).",
    choices=("probs", "log-probs", "logits"),
)

_BASE = Param(
    "base",
    "float",
    math.e,
    "Logarithm base: e gives nats (default), 2 gives bits; 1 is not allowed.",
    low=0.0,
    low_open=True,
    high_open=True,
    exclude=(1.0,),
)

_DIRECTION_KL = Param(
    "direction",
    "choice",
    "forward",
    "forward = KL(P ‖ Q) (P the target, Q the prediction; mean-seeking; what F.kl_div computes); reverse = KL(Q ‖ P) (mode-seeking).",
    choices=("forward", "reverse"),
)

_P = Role(
    "target",
    "(N, C)",
    f"P, the target (reference) distribution: one row per sample, one column per class (kind: {opt('target-kind')}).",
    ndim=(2,),
)

_Q = Role(
    "pred",
    "(N, C)",
    f"Q, the model's predicted distribution, P's shape (kind: {opt('pred-kind')}).",
    ndim=(2,),
)

_DIV_TEMPERATURE = Param(
    "temperature",
    "float",
    1.0,
    "Softmax temperature T: logits (only logits; probabilities and log-probabilities are used as given) "
    f"are divided by T before the softmax. The value is not multiplied by T² unless {opt('scale-t2')} is given.",
    low=0.0,
    low_open=True,
    high_open=True,
    normal=True,
)

_DIV_SCALE_T2 = Param(
    "scale-t2",
    "bool",
    False,
    "Multiply the divergence by T² (Hinton et al. 2015: keeps gradient magnitudes independent of T, as in "
    "distillation). Off by default: the plain divergence between the softened distributions.",
)

_LOG2 = math.log(2.0)

# ---------------------------------------------------------------------------
# shared helpers
# ---------------------------------------------------------------------------


def _log_base(base) -> float:
    """ln(base) (declared: (0, inf) other than 1, checked when parsed)."""
    return math.log(float(base))


def _check_direction(direction: str) -> bool:
    if direction not in ("forward", "reverse"):
        raise ValueError(f"direction {direction!r} is not one of the declared choices")
    return direction == "reverse"


def _distribution(x, kind: str, role: str, prob_atol) -> tuple[np.ndarray, np.ndarray]:
    """Validated (N, C) rows as (log-probabilities, probabilities), both float64.

    Zero probabilities have log-probability -inf.
    """
    a = as_float(np.asarray(x))
    if a.ndim != 2:
        raise InputError(
            role,
            f"a distribution needs one column per class; got shape {a.shape}",
            [],
            expected="an (N, C) array: one row per sample, one column per class",
        )
    if kind == "logits":
        check_finite(a, role, "logits")
        return softmax64(a)
    if kind == "probs":
        check_probs(a, role, prob_atol)
        p = np.asarray(a, dtype=np.float64)
        with np.errstate(divide="ignore"):
            return np.log(p), p
    if kind == "log-probs":
        check_log_probs(a, role, prob_atol)
        lp = np.asarray(a, dtype=np.float64)
        return lp, np.exp(lp)
    raise ParamError(
        "pred-kind" if role == "pred" else "target-kind",
        f"unknown input kind {kind!r} (logits, probs or log-probs)",
    )


def _pair(target, pred, target_kind, pred_kind, prob_atol):
    tq = np.shape(target)
    pq = np.shape(pred)
    if len(tq) == 2 and len(pq) == 2 and tq[1] != pq[1]:
        raise InputError(
            "pred",
            f"the prediction has {pq[1]} columns but the target has {tq[1]}",
            [],
            expected=f"the same number of classes (columns) in both: {tq[1]}",
        )
    lp, p = _distribution(target, target_kind, "target", prob_atol)
    lq, q = _distribution(pred, pred_kind, "pred", prob_atol)
    return lp, p, lq, q


def _rel_entr_rows(la: np.ndarray, a: np.ndarray, lb: np.ndarray, diff: np.ndarray | None = None) -> np.ndarray:
    """Σ_c a_c (log a_c - log b_c) per row with scipy.special.rel_entr's rules.

    a_c = 0 (log a_c = -inf) contributes 0; a_c > 0 with b_c = 0 gives +inf. A
    softmax output that underflowed to 0 still has a finite log, so it counts as
    positive mass (it is: softmax is never exactly 0).
    """
    support = la > -np.inf
    term = np.zeros_like(a)
    with np.errstate(invalid="ignore"):
        if diff is None:
            diff = la - lb
        np.multiply(a, diff, out=term, where=support)  # an underflowed 0 · inf is fixed below
    term[support & (lb == -np.inf)] = np.inf
    return term.sum(axis=1)


def _temper(pred, target, pred_kind: str, target_kind: str, temperature, scale_t2: bool):
    """--temperature T: logits (and only logits) divided by T in float64 before the softmax.

    Returns ``(pred, target, loss factor, gradient factor)``: the loss factor is T² with
    ``scale_t2`` (Hinton et al.'s rescaling, so gradients keep their size), else 1; the
    gradient w.r.t. the given logits picks up a further 1/T (chain rule through x/T).
    """
    t = check_temperature(temperature)
    if t == 1.0:
        return pred, target, 1.0, 1.0
    if pred_kind != "logits" and target_kind != "logits":
        raise ParamError(
            "temperature",
            f"{opt('temperature')} {t!r} softens logits, but neither input holds logits ({opt('pred-kind')} {pred_kind}, "
            f"{opt('target-kind')} {target_kind}); probabilities and log-probabilities are used as given",
        )
    if pred_kind == "logits":
        pred = _soften(pred, t, "pred")
    if target_kind == "logits":
        target = _soften(target, t, "target")
    scale = t * t if scale_t2 else 1.0
    return pred, target, scale, scale / t if pred_kind == "logits" else scale


def _soften(x, t: float, role: str) -> np.ndarray:
    a = np.asarray(as_float(np.asarray(x)), dtype=np.float64)
    with np.errstate(over="ignore", invalid="ignore"):
        out = a / t
    bad = np.isfinite(a) & ~np.isfinite(out)
    if bad.any():
        raise InputError(
            role,
            f"logit {a[bad][0]:.9g} divided by {opt('temperature')} {t!r} overflows float64",
            first_rows(bad.reshape(len(a), -1).any(axis=1)),
            expected=f"logits / T within ±1.8e308 (a larger {opt('temperature')}, or smaller logits)",
        )
    return out


# ---------------------------------------------------------------------------
# kl-divergence
# ---------------------------------------------------------------------------


@loss(
    name="kl-divergence",
    aliases=("kl",),
    family="divergence",
    summary="Kullback-Leibler divergence between a predicted distribution Q and a target P, per row.",
    inputs=(_Q, _P),
    params=(_DIRECTION_KL, _BASE, _Q_KIND, _P_KIND, _DIV_TEMPERATURE, _DIV_SCALE_T2),
    kernel_options=("prob_atol",),
    reference=(
        'torch.nn.functional.kl_div(log Q, P, reduction="batchmean") (forward, nats); '
        "scipy.special.rel_entr(P, Q).sum(axis=1) per row"
    ),
    formula=(
        "forward: l_n = Σ_c P_nc (log P_nc - log Q_nc) / ln(base)\n"
        "reverse: l_n = Σ_c Q_nc (log Q_nc - log P_nc) / ln(base)\n"
        "a 0 in the first distribution contributes 0; mass where the second is 0 gives inf\n"
        f"{opt('temperature')} T: logits x become softmax(x / T); {opt('scale-t2')} multiplies l_n by T²"
    ),
    headline=(
        'the mean over rows of the per-row sums (= PyTorch\'s reduction="batchmean", not its element-wise "mean")'
    ),
    gradient=(
        "forward, w.r.t. Q: logits softmax(x)·Σ_c P_c - P; probs -P/Q; log-probs -P. "
        "reverse, with a = log Q - log P: logits Q·(a - KL); probs a + 1; log-probs Q·(a + 1). "
        "All divided by ln(base)"
    ),
    properties=(
        "Non-negative; zero only when P = Q (Gibbs' inequality).",
        "Asymmetric: KL(P ‖ Q) ≠ KL(Q ‖ P) in general; forward KL is mean-seeking (Q must cover "
        "all of P's mass), reverse KL is mode-seeking.",
        "Unbounded: infinite where P has mass and Q has none.",
        "Convex in the pair (P, Q); forward KL = cross-entropy H(P, Q) minus the entropy H(P), "
        "so minimising it over Q minimises cross-entropy.",
        "Computed in log space: logits of ±1e4 give finite, exact results.",
    ),
    used_for="Distillation and soft-target classification, VAEs, variational inference, "
    "policy regularisation (RLHF), comparing predicted and reference distributions.",
    activation="softmax over the class axis (applied inside to logits; probabilities are validated)",
    paper="Kullback & Leibler 1951; distillation use: Hinton, Vinyals, Dean 2015.",
    example=(
        "sample_data/divergence_soft.csv:logit_*",
        "sample_data/divergence_soft.csv:target_*",
    ),
)
def kl_divergence(
    pred: np.ndarray,
    target: np.ndarray,
    *,
    direction: str = "forward",
    base: float = math.e,
    pred_kind: str = "logits",
    target_kind: str = "probs",
    prob_atol: float | None = None,
    temperature: float = 1.0,
    scale_t2: bool = False,
) -> Result:
    """Kullback-Leibler divergence per row.

    Args:
      pred: Q with shape ``[N, C]`` (``pred_kind``: logits, probs or log-probs).
      target: P with shape ``[N, C]`` (``target_kind``: probs, log-probs or logits).
      direction: ``forward`` = KL(P ‖ Q) (mean-seeking; what
        ``F.kl_div(log Q, P)`` computes), ``reverse`` = KL(Q ‖ P) (mode-seeking).
      base: logarithm base (e: nats, 2: bits).

    Returns:
      ``Result`` with ``loss[n] = Σ_c P_nc (log P_nc - log Q_nc) / ln(base)``
      (forward). A zero in the first distribution contributes 0; mass where the
      second is 0 gives ``inf``. The plain mean over rows is PyTorch's
      ``reduction="batchmean"``.
    """
    pred, target, t_scale, g_scale = _temper(pred, target, pred_kind, target_kind, temperature, scale_t2)
    lb = _log_base(base)
    reverse = _check_direction(direction)
    loss = None
    if not reverse and pred_kind == "logits" and target_kind == "probs":
        loss = _kl_probs_logits(target, pred, prob_atol)
    if loss is None:
        lp, p, lq, q = _pair(target, pred, target_kind, pred_kind, prob_atol)
        d = log_softmax_ratio(target, pred) if target_kind == pred_kind == "logits" else None
        if reverse:
            loss = _rel_entr_rows(lq, q, lp, None if d is None else -d)
        else:
            loss = _rel_entr_rows(lp, p, lq, d)
    if lb != 1.0:
        loss = loss / lb
    return Result(loss=loss * t_scale if t_scale != 1.0 else loss)


_TINY = sys.float_info.min  # = np.finfo(np.float64).tiny


def _kl_probs_logits(target, pred, prob_atol) -> np.ndarray | None:
    """Forward KL(P ‖ softmax(x)) per row over row blocks in threads, all in float64.

    ``Σ_c P_c log P_c - Σ_c P_c (x_c - m) + (Σ_c P_c)·log_s`` with ``m`` the row
    maximum and ``log_s = log Σ_c exp(x_c - m)`` (the log-softmax is never
    materialised; ``0·log 0 = 0``). Float32 inputs are cast per block, so the
    value is that of the given numbers. None when the plain path must run
    (other shapes or types). P's range and row sums and x's finiteness are
    checked cheaply per block; the exact checks (same errors and rows) run only
    when something is off.
    """
    t = as_float(np.asarray(target))
    x = as_float(np.asarray(pred))
    if (
        t.ndim != 2
        or x.ndim != 2
        or t.shape != x.shape
        or t.shape[0] == 0
        or t.shape[1] == 0
        or t.dtype not in (np.float32, np.float64)
        or x.dtype not in (np.float32, np.float64)
    ):
        return None
    n, c = x.shape
    tol = default_prob_atol(t.dtype, c) if prob_atol is None else prob_atol
    # Rows this close to the tolerance are re-checked exactly (check_probs sums differently).
    tol_flag = tol * (1.0 - 1e-9)
    loss = np.empty(n, dtype=np.float64)
    step = rows_per_block(c)
    base_all = np.arange(min(step, n), dtype=np.int64) * c  # flat offset of each row in a block

    def part(start: int, stop: int) -> tuple[bool, bool]:
        rows = min(step, stop - start)
        d_buf = scratch("kl_d", (rows, c), np.float64)
        e_buf = scratch("kl_e", (rows, c), np.float64)
        p_buf = scratch("kl_p", (rows, c), np.float64)
        m = scratch("kl_m", (rows,), np.float64)
        sp = scratch("kl_sp", (rows,), np.float64)
        ls = scratch("kl_ls", (rows,), np.float64)
        base = base_all[:rows]
        tiny = constant("tiny", rows * c, _TINY).reshape(rows, c)
        x_bad = p_bad = False
        with np.errstate(all="ignore"):
            for a in range(start, stop, step):
                b = min(a + step, stop)
                k = b - a
                xb = x[a:b]
                pb = t[a:b]
                if not np.isfinite(xb.min()):  # NaN, -inf (+inf shows in the maximum)
                    x_bad = True
                if not (pb.min() >= 0 and pb.max() <= 1):  # NaN fails both
                    p_bad = True
                am = xb.argmax(axis=1)
                ii = base[:k] + am
                d = d_buf[:k]
                np.copyto(d, xb)
                mk = m[:k]
                np.take(d.reshape(-1), ii, out=mk)
                if not np.isfinite(mk).all():
                    x_bad = True
                np.subtract(d, mk[:, None], out=d)  # x - m <= 0, float64
                e = e_buf[:k]
                np.exp(d, out=e)
                e.reshape(-1)[ii] = 0.0
                lsk = ls[:k]
                np.einsum("ij->i", e, out=lsk)
                np.log1p(lsk, out=lsk)  # log Σ exp(x - m)
                pp = p_buf[:k]
                np.copyto(pp, pb)
                spk = sp[:k]
                np.einsum("ij->i", pp, out=spk)
                if not (np.abs(spk - 1.0) <= tol_flag).all():  # NaN fails too
                    p_bad = True
                np.maximum(pp, tiny[:k], out=e)  # log(max(P, tiny)): 0·log 0 -> 0·(finite) = 0
                np.log(e, out=e)
                np.subtract(e, d, out=e)  # log P - (x - m)
                out = loss[a:b]
                np.einsum("ij,ij->i", pp, e, out=out)
                out += spk * lsk
        return x_bad, p_bad

    flags = row_parts(n, n * c * 3, part)
    if any(f[1] for f in flags):
        check_probs(t, "target", prob_atol)
    if any(f[0] for f in flags):
        check_finite(x, "pred", "logits")
    if np.isnan(loss).any():  # only for float64 logits spanning more than the float range
        return None
    return loss


def kl_divergence_grad(
    pred: np.ndarray,
    target: np.ndarray,
    *,
    direction: str = "forward",
    base: float = math.e,
    pred_kind: str = "logits",
    target_kind: str = "probs",
    prob_atol: float | None = None,
    temperature: float = 1.0,
    scale_t2: bool = False,
) -> np.ndarray:
    """∂l_n/∂pred_n, shape ``[N, C]`` (the prediction Q is the first input).

    forward KL(P‖Q): logits ``softmax(x)·Σ_c P_c - P``; probs ``-P/Q`` (0 where
    P = 0); log-probs ``-P``.
    reverse KL(Q‖P), with ``a = log Q - log P``: logits ``Q·(a - KL)``; probs
    ``a + 1`` (-inf at Q = 0); log-probs ``Q·(a + 1)`` (0 where Q = 0).
    Everything divided by ln(base).
    """
    pred, target, t_scale, g_scale = _temper(pred, target, pred_kind, target_kind, temperature, scale_t2)
    lb = _log_base(base)
    reverse = _check_direction(direction)
    lp, p, lq, q = _pair(target, pred, target_kind, pred_kind, prob_atol)
    if not reverse:
        if pred_kind == "logits":
            with np.errstate(divide="ignore"):
                # Q·Σ P - P without cancellation on confident rows (see exp_diff); Σ P > 0 here
                g = exp_diff(lq + np.log(p.sum(axis=1, keepdims=True)), lp)
        elif pred_kind == "probs":
            qa = np.asarray(pred, dtype=np.float64)
            g = np.zeros_like(p)
            with np.errstate(divide="ignore"):
                np.divide(-p, qa, out=g, where=p > 0)
            g[(p > 0) & (qa == 0)] = -np.inf
        else:
            g = -p
    else:
        support = lq > -np.inf
        a = np.zeros_like(q)
        d = log_softmax_ratio(pred, target) if target_kind == pred_kind == "logits" else None
        with np.errstate(invalid="ignore"):
            np.subtract(lq, lp, out=a, where=support)
        if d is not None:
            np.copyto(a, d, where=support)
        if pred_kind == "logits":
            kl = np.where(support, q * a, 0.0).sum(axis=1, keepdims=True)
            g = q * (a - kl)
        elif pred_kind == "probs":
            g = np.where(support, a + 1.0, -np.inf)
        else:
            g = np.where(support, q * (a + 1.0), 0.0)
    g = g / lb if lb != 1.0 else g
    return g * g_scale if g_scale != 1.0 else g


# ---------------------------------------------------------------------------
# js-divergence
# ---------------------------------------------------------------------------


def _log_mixture(lp: np.ndarray, lq: np.ndarray) -> np.ndarray:
    """log M, M = ½(P + Q), from the two log-probabilities (-inf only where both are 0)."""
    return np.logaddexp(lp, lq) - _LOG2


@loss(
    name="js-divergence",
    aliases=("js",),
    family="divergence",
    summary="Jensen-Shannon divergence: symmetric, bounded KL to the average distribution.",
    inputs=(_Q, _P),
    params=(_BASE, _Q_KIND, _P_KIND, _DIV_TEMPERATURE, _DIV_SCALE_T2),
    kernel_options=("prob_atol",),
    reference="scipy.spatial.distance.jensenshannon(P, Q, base, axis=1) ** 2",
    formula=(
        f"l_n = ½ KL(P_n ‖ M_n) + ½ KL(Q_n ‖ M_n),  M_n = ½ (P_n + Q_n)\n(logarithms in {opt('base')}; 0 · log 0 = 0)\n"
        f"{opt('temperature')} T: logits x become softmax(x / T); {opt('scale-t2')} multiplies l_n by T²"
    ),
    headline="the mean over rows",
    gradient=(
        "w.r.t. Q, with a = ½ log(Q/M): probs a; log-probs Q·a; logits Q·(a - Σ_c Q_c a_c); divided by ln(base)"
    ),
    properties=(
        "Symmetric: JS(P, Q) = JS(Q, P).",
        f"Bounded: 0 ≤ JS ≤ ln 2 (1 bit with {opt('base')} 2); ln 2 exactly for disjoint supports.",
        "Always finite, even where one distribution has zeros the other does not.",
        "Its square root is a metric (the Jensen-Shannon distance).",
    ),
    used_for="Comparing distributions (drift, calibration between models); the original GAN objective.",
    activation="softmax over the class axis (applied inside to logits; probabilities are validated)",
    paper="Lin 1991, Divergence measures based on the Shannon entropy; Goodfellow et al. 2014 (GAN).",
    example=(
        "sample_data/divergence_soft.csv:logit_*",
        "sample_data/divergence_soft.csv:target_*",
        f"{opt('base')}",
        "2",
    ),
)
def js_divergence(
    pred: np.ndarray,
    target: np.ndarray,
    *,
    base: float = math.e,
    pred_kind: str = "logits",
    target_kind: str = "probs",
    prob_atol: float | None = None,
    temperature: float = 1.0,
    scale_t2: bool = False,
) -> Result:
    """Jensen-Shannon divergence per row: ½KL(P‖M) + ½KL(Q‖M), M = ½(P + Q).

    Symmetric, always finite, in [0, ln 2] (in [0, 1] bits with ``base=2``);
    equals ``scipy.spatial.distance.jensenshannon(p, q, base) ** 2``.
    """
    pred, target, t_scale, g_scale = _temper(pred, target, pred_kind, target_kind, temperature, scale_t2)
    lb = _log_base(base)
    lp, p, lq, q = _pair(target, pred, target_kind, pred_kind, prob_atol)
    lm = _log_mixture(lp, lq)
    loss = 0.5 * (_rel_entr_rows(lp, p, lm) + _rel_entr_rows(lq, q, lm))
    if lb != 1.0:
        loss = loss / lb
    return Result(loss=loss * t_scale if t_scale != 1.0 else loss)


def js_divergence_grad(
    pred: np.ndarray,
    target: np.ndarray,
    *,
    base: float = math.e,
    pred_kind: str = "logits",
    target_kind: str = "probs",
    prob_atol: float | None = None,
    temperature: float = 1.0,
    scale_t2: bool = False,
) -> np.ndarray:
    """∂l_n/∂pred_n, shape ``[N, C]``.

    With ``a = ½ log(Q/M)`` (= ½ ln 2 where P = 0): probs ``a`` (-inf at Q = 0,
    P > 0); log-probs ``Q·a``; logits ``Q·(a - Σ_c Q_c a_c)``. Divided by ln(base).
    """
    pred, target, t_scale, g_scale = _temper(pred, target, pred_kind, target_kind, temperature, scale_t2)
    lb = _log_base(base)
    lp, p, lq, q = _pair(target, pred, target_kind, pred_kind, prob_atol)
    lm = _log_mixture(lp, lq)
    with np.errstate(invalid="ignore"):
        d = np.where(lp == -np.inf, _LOG2, lq - lm)
    a = 0.5 * d
    if pred_kind == "probs":
        g = a
    else:
        qa = np.where(q > 0, q * a, 0.0)
        if pred_kind == "logits":
            g = qa - q * qa.sum(axis=1, keepdims=True)
        else:
            g = qa
    g = g / lb if lb != 1.0 else g
    return g * g_scale if g_scale != 1.0 else g


# ---------------------------------------------------------------------------
# gaussian-kl
# ---------------------------------------------------------------------------


def expm1_minus_x(t: np.ndarray) -> np.ndarray:
    """exp(t) - 1 - t, accurate near 0 (Taylor series for |t| < 0.01, expm1 elsewhere)."""
    t = np.asarray(t, dtype=np.float64)
    with np.errstate(over="ignore", invalid="ignore"):
        out = np.expm1(t) - t
    small = np.abs(t) < 1e-2
    if small.any():
        ts = t[small]
        # t²/2 + t³/6 + ... + t⁸/8!: truncation error below 1e-20 relative to t²/2.
        acc = np.full_like(ts, 1.0 / 40320.0)
        for k in (5040.0, 720.0, 120.0, 24.0, 6.0, 2.0):
            acc = acc * ts + 1.0 / k
        out[small] = acc * ts * ts
    return out


def _as_matrix(x, role: str, n: int | None = None, d: int | None = None) -> np.ndarray:
    """(N,) or (N, D) values as a float64 (N, D) array; finite."""
    a = np.asarray(as_float(np.asarray(x)), dtype=np.float64)
    if a.ndim == 1:
        a = a[:, None]
    if a.ndim != 2:
        raise InputError(role, f"expected (N, D) values; got shape {a.shape}", [], expected="an (N, D) array")
    if n is not None and len(a) != n:
        raise InputError(role, f"{len(a)} rows but mu has {n}", [], expected=f"{n} rows, one per sample")
    if d is not None and a.shape[1] != d:
        raise InputError(
            role,
            f"{a.shape[1]} columns but mu has {d} dimensions",
            [],
            expected=f"{d} columns (one per dimension of mu)",
        )
    check_finite(a, role, "values")
    return a


def _variance(x, role: str, n: int, d: int) -> tuple[str, np.ndarray]:
    """("diag", log-variances (N, D)) or ("full", covariance matrices (N, D, D))."""
    a = np.asarray(x)
    if a.ndim == 3:
        if a.shape[1:] != (d, d):
            raise InputError(
                role,
                f"covariance matrices of shape {a.shape[1:]} but mu has {d} dimensions",
                [],
                expected=f"(N, {d}, {d}) covariance matrices",
            )
        if len(a) != n:
            raise InputError(role, f"{len(a)} rows but mu has {n}", [], expected=f"{n} rows, one per sample")
        s = np.asarray(as_float(a), dtype=np.float64)
        check_finite(s, role, "covariance entries")
        _check_symmetric(s, a.dtype, role)
        return "full", 0.5 * (s + np.swapaxes(s, 1, 2))
    return "diag", _as_matrix(a, role, n, d)


def _check_symmetric(s: np.ndarray, dtype, role: str) -> None:
    eps = float(np.finfo(dtype).eps) if np.issubdtype(dtype, np.floating) else float(np.finfo(np.float64).eps)
    scale = np.abs(s).reshape(len(s), -1).max(axis=1, initial=0.0)
    gap = np.abs(s - np.swapaxes(s, 1, 2)).reshape(len(s), -1).max(axis=1, initial=0.0)
    bad = gap > math.sqrt(eps) * np.maximum(scale, np.finfo(np.float64).tiny)
    if bad.any():
        rows = first_rows(bad)
        m = s[rows[0]]
        i, j = np.unravel_index(int(np.argmax(np.abs(m - m.T))), m.shape)
        raise InputError(
            role,
            f"covariance matrix is not symmetric (entry [{i}, {j}] = {m[i, j]:.9g}, entry [{j}, {i}] = {m[j, i]:.9g})",
            rows,
            expected="symmetric positive-definite (N, D, D) covariance matrices",
        )


def _first_failing(s: np.ndarray) -> int:
    """Index of the first matrix on which Cholesky fails (bisection; s fails as a whole)."""
    lo, hi = 0, len(s)
    while hi - lo > 1:
        mid = (lo + hi) // 2
        try:
            np.linalg.cholesky(s[lo:mid])
        except np.linalg.LinAlgError:
            hi = mid
        else:
            lo = mid
    return lo


def _cholesky(s: np.ndarray, role: str) -> np.ndarray:
    try:
        return np.linalg.cholesky(s)
    except np.linalg.LinAlgError:
        pass
    ev = np.linalg.eigvalsh(s)
    bad = ev.min(axis=1) <= 0 if ev.size else np.zeros(len(s), bool)
    rows = first_rows(bad) if bad.any() else [_first_failing(s)]
    lo = float(np.linalg.eigvalsh(s[rows[0]]).min()) if s.shape[1] else 0.0
    raise InputError(
        role,
        f"covariance matrix is not positive definite (smallest eigenvalue {lo:.9g}; Cholesky failed)",
        rows,
        expected="symmetric positive-definite (N, D, D) covariance matrices",
    )


def _full(kind_v: tuple[str, np.ndarray]) -> np.ndarray:
    kind, v = kind_v
    if kind == "full":
        return v
    n, d = v.shape
    out = np.zeros((n, d, d))
    idx = np.arange(d)
    out[:, idx, idx] = np.exp(v)
    return out


def _gaussian_inputs(mu, logvar, prior_mu, prior_logvar, direction):
    reverse = _check_direction(direction)
    mq = _as_matrix(mu, "mu")
    n, d = mq.shape
    vq = _variance(logvar, "logvar", n, d)
    mp = np.zeros_like(mq) if prior_mu is None else _as_matrix(prior_mu, "prior-mu", n, d)
    vp = ("diag", np.zeros_like(mq)) if prior_logvar is None else _variance(prior_logvar, "prior-logvar", n, d)
    roles = ("logvar", "prior-logvar")
    if reverse:  # KL(p ‖ q): p is the first distribution
        return (mp, vp, mq, vq, roles[::-1], reverse)
    return (mq, vq, mp, vp, roles, reverse)


@loss(
    name="gaussian-kl",
    family="divergence",
    summary="Closed-form KL divergence between Gaussians (diagonal or full covariance), e.g. the VAE term.",
    inputs=(
        Role("mu", "(N, D)", "Means of q, one row per sample ((N,) is D = 1)."),
        Role(
            "logvar",
            "(N, D) or (N, D, D)",
            "q's log-variances (N, D) (diagonal covariance), or q's full covariance matrices (N, D, D).",
            ndim=(1, 2, 3),
        ),
        Role(
            "prior-mu",
            "(N, D)",
            "Means of the prior p (default 0).",
            optional=True,
        ),
        Role(
            "prior-logvar",
            "(N, D) or (N, D, D)",
            "The prior's log-variances (N, D) or covariance matrices (N, D, D) (default 0: unit "
            "variance). Diagonal and full inputs may be mixed.",
            ndim=(1, 2, 3),
            optional=True,
        ),
    ),
    params=(
        Param(
            "direction",
            "choice",
            "forward",
            "forward = KL(q ‖ p) (the VAE term); reverse = KL(p ‖ q).",
            choices=("forward", "reverse"),
        ),
    ),
    reference=(
        "torch.distributions.kl_divergence(Normal(mu, exp(½logvar)), Normal(prior_mu, exp(½prior_logvar))).sum(-1) "
        "(MultivariateNormal for full covariances)"
    ),
    formula=(
        "KL(N₁ ‖ N₂), forward: 1 = q, 2 = p; reverse: 1 = p, 2 = q\n"
        "diagonal: l_n = ½ Σ_d [log(σ₂²/σ₁²) + (σ₁² + (μ₁ - μ₂)²)/σ₂² - 1]   (σ² = exp(logvar))\n"
        "full:     l_n = ½ [tr(Σ₂⁻¹Σ₁) + (μ₂ - μ₁)ᵀΣ₂⁻¹(μ₂ - μ₁) - D + log det Σ₂ - log det Σ₁]  (Cholesky)\n"
        "default prior N(0, I): l_n = -½ Σ_d (1 + logvar - μ² - exp(logvar))"
    ),
    headline="the mean over rows of the per-row sums over D (the usual per-sample VAE KL term)",
    gradient="∂l/∂mu = Σ₂⁻¹ (μ_q - μ_p); diagonal: (μ_q - μ_p) / σ₂² (σ₂² the prior's variance for forward, q's for reverse)",
    properties=(
        "Non-negative; zero only when the two Gaussians are identical.",
        "Asymmetric: KL(q ‖ p) ≠ KL(p ‖ q) unless the covariances are equal.",
        "Quadratic in the mean difference; grows without bound as a variance goes to 0.",
        "Computed as expm1(t) - t with t the log-variance difference, so nearly equal variances "
        "keep their digits; full covariances go through Cholesky, and a matrix that is not "
        "symmetric positive definite is an error naming its row.",
    ),
    used_for="VAEs (the regulariser of the ELBO), variational inference, Gaussian policies in RL.",
    activation="none: mu is used as is; the variance is exp(logvar) (or a covariance matrix)",
    paper="Kingma & Welling 2014, Auto-Encoding Variational Bayes, appendix B.",
    example=(
        "sample_data/divergence_gaussian.csv:mu_*",
        "sample_data/divergence_gaussian.csv:logvar_*",
    ),
)
def gaussian_kl(
    mu: np.ndarray,
    logvar: np.ndarray,
    prior_mu: np.ndarray | None = None,
    prior_logvar: np.ndarray | None = None,
    *,
    direction: str = "forward",
) -> Result:
    """Closed-form KL between Gaussians, per row.

    Args:
      mu: means of q, shape ``[N, D]`` (``[N]`` is D = 1).
      logvar: log-variances of q ``[N, D]`` (diagonal covariance), or q's full
        covariance matrices ``[N, D, D]``.
      prior_mu: means of the prior p ``[N, D]``; default 0.
      prior_logvar: log-variances ``[N, D]`` or covariances ``[N, D, D]`` of p;
        default 0 (unit variance). Diagonal and full inputs may be mixed.
      direction: ``forward`` = KL(q ‖ p) (the VAE term), ``reverse`` = KL(p ‖ q).

    Diagonal: ``½ Σ_d [expm1(t) - t + (μ₁ - μ₂)² e^{-lv₂}]``, ``t = lv₁ - lv₂``
    (first distribution 1, second 2), which equals
    ``½ Σ_d [log(σ₂²/σ₁²) + (σ₁² + (μ₁-μ₂)²)/σ₂² - 1]`` without cancellation.
    Full: ``½[tr(Σ₂⁻¹Σ₁) + δᵀΣ₂⁻¹δ - D + log det Σ₂ - log det Σ₁]`` via Cholesky.
    """
    m1, v1, m2, v2, roles, _ = _gaussian_inputs(mu, logvar, prior_mu, prior_logvar, direction)
    d = m1.shape[1]
    delta = m1 - m2
    if v1[0] == "diag" and v2[0] == "diag":
        lv1, lv2 = v1[1], v2[1]
        elem = expm1_minus_x(lv1 - lv2) + delta * delta * np.exp(-lv2)
        return Result(loss=0.5 * elem.sum(axis=1))
    s1, s2 = _full(v1), _full(v2)
    l1 = _cholesky(s1, roles[0])
    l2 = _cholesky(s2, roles[1])
    a = np.linalg.solve(l2, l1)  # L₂⁻¹L₁: tr(Σ₂⁻¹Σ₁) = ‖L₂⁻¹L₁‖_F²
    z = np.linalg.solve(l2, delta[:, :, None])[:, :, 0]
    idx = np.arange(d)
    logdet1 = 2.0 * np.log(l1[:, idx, idx]).sum(axis=1)
    logdet2 = 2.0 * np.log(l2[:, idx, idx]).sum(axis=1)
    tr = (a * a).sum(axis=(1, 2))
    quad = (z * z).sum(axis=1)
    return Result(loss=0.5 * (tr + quad - d + (logdet2 - logdet1)))


def gaussian_kl_grad(
    mu: np.ndarray,
    logvar: np.ndarray,
    prior_mu: np.ndarray | None = None,
    prior_logvar: np.ndarray | None = None,
    *,
    direction: str = "forward",
) -> np.ndarray:
    """∂l_n/∂mu_n = Σ₂⁻¹ (μ_q - μ_p), Σ₂ the covariance of the second distribution
    (the prior's for forward, q's for reverse); diagonal: ``(μ_q - μ_p) · e^{-lv₂}``."""
    m1, v1, m2, v2, roles, reverse = _gaussian_inputs(mu, logvar, prior_mu, prior_logvar, direction)
    dq = (m2 - m1) if reverse else (m1 - m2)  # μ_q - μ_p
    for (kind, v), role in zip((v1, v2), roles):
        if kind == "full":
            _cholesky(v, role)  # same validation as the kernel
    if v2[0] == "diag":
        g = dq * np.exp(-v2[1])
    else:
        g = np.linalg.solve(v2[1], dq[:, :, None])[:, :, 0]
    return g.reshape(np.shape(mu))
