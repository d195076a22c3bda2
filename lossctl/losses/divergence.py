"""Divergences between discrete distributions: KL, Jensen-Shannon. The Gaussian KL
(closed form) is in ``gaussian``.

Shapes use N for rows (samples) and C for classes. Every
kernel returns per-sample float64 values of shape ``[N]``.

Discrete distributions arrive as logits, probabilities or log-probabilities
(``pred_kind`` for the prediction Q, ``target_kind`` for the target P); they are
brought to float64 log-probabilities first (log-softmax for logits, never
``log(softmax)``) so logits of ±1e4 give finite, exact values.

References:
    ``torch.nn.functional.kl_div(log Q, P, reduction="batchmean")``;
    ``scipy.special.rel_entr`` (the 0 / inf conventions);
    ``scipy.spatial.distance.jensenshannon`` (squared).
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


def _kl_block(xb, pb, base, d, e, pp, mk, lsk, spk, tiny, out, tol_flag: float) -> tuple[bool, bool]:
    """One block of ``_kl_probs_logits`` into ``out`` (k,): ``d``, ``e``, ``pp`` (k, C) and ``mk``,
    ``lsk``, ``spk`` (k,) scratch, ``base`` each row's flat offset, ``tiny`` (k, C) float tiny.
    Returns (logits off, P off): the exact checks must run."""
    x_bad = p_bad = False
    am = xb.argmax(axis=1)
    ii = base + am
    np.copyto(d, xb)
    np.take(d.reshape(-1), ii, out=mk)
    if not np.isfinite(mk).all():
        x_bad = True
    np.subtract(d, mk[:, None], out=d)  # x - m <= 0, float64
    np.exp(d, out=e)
    e.reshape(-1)[ii] = 0.0
    np.einsum("ij->i", e, out=lsk)
    np.log1p(lsk, out=lsk)  # log Σ exp(x - m)
    np.copyto(pp, pb)
    np.einsum("ij->i", pp, out=spk)
    if not (np.abs(spk - 1.0) <= tol_flag).all():  # NaN fails too
        p_bad = True
    np.maximum(pp, tiny, out=e)  # log(max(P, tiny)): 0·log 0 -> 0·(finite) = 0
    np.log(e, out=e)
    np.subtract(e, d, out=e)  # log P - (x - m)
    np.einsum("ij,ij->i", pp, e, out=out)
    out += spk * lsk
    return x_bad, p_bad


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
                scratch_k = (d_buf[:k], e_buf[:k], p_buf[:k], m[:k], ls[:k], sp[:k], tiny[:k])
                xk, pk = _kl_block(xb, pb, base[:k], *scratch_k, loss[a:b], tol_flag)
                x_bad, p_bad = x_bad or xk, p_bad or pk
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
