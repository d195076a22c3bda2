"""Classification losses: cross-entropy, binary cross-entropy, nll, focal,
softmax-focal, entropy, token-cross-entropy.

Shapes use N for rows (samples) and C for classes. All values returned are
per-sample float64 arrays of shape ``[N]``.

References:
    PyTorch ``torch.nn.functional.cross_entropy`` and
    ``binary_cross_entropy(_with_logits)`` (2.x): parameter names, defaults and
    the weighted-mean rule are theirs.
"""

from __future__ import annotations

import math

from lossctl.losses._lazy import lazy

from lossctl.errors import InputError, ParamError, opt
from lossctl.losses import Result
from lossctl.losses._common import (
    ELEM_BLOCK_ELEMS,
    as_float,
    check_finite,
    check_log_probs,
    check_probs,
    check_unit_interval,
    class_indices,
    constant,
    element_rows,
    exp_diff,
    first_rows,
    label_text,
    label_values,
    log_softmax64,
    logsumexp_parts,
    per_output,
    row_parts,
    row_sums_result,
    rows_per_block,
    same_shape,
    scratch,
    sigmoid,
    softmax64,
    softmax_minus_onehot,
    softmax_rows,
)
from lossctl.losses.spec import HEADLINE_ELEM_SUM, HEADLINE_MEAN, loss, Param, Role

np = lazy(globals())  # NumPy is imported on first use (lossctl/losses/_lazy.py)

# Declarations shared by this module's losses ----------------------------------------

PRED_KIND = Param(
    "pred-kind",
    "choice",
    "logits",
    "What the prediction columns hold: raw logits, probabilities, or log-probabilities. Never guessed from the values.",
    choices=("logits", "probs", "log-probs"),
)

TARGET_KIND = Param(
    "target-kind",
    "choice",
    "probs",
    "For soft (N, C) targets: probabilities or log-probabilities.",
    choices=("probs", "log-probs"),
)

CLASS_WEIGHT = Param(
    "weight",
    "floats",
    None,
    "Class weights: C comma-separated numbers, or a file holding them (.npy, .json, text).",
    low=0.0,
)

IGNORE_INDEX = Param(
    "ignore-index",
    "int",
    -100,
    "Target value whose rows are ignored: excluded from every statistic and counted.",
)

CLASSES = Param(
    "classes",
    "names",
    None,
    "Class names in logit order, for targets stored as names (cat, dog): a comma list (cat,dog,bird) or a "
    "file with one name per line. Name k is class index k; a name not in the list is an error naming the row.",
)


PRED_CN = Role("pred", "(N, C)", "Class scores: one row per sample, one column per class.", ndim=(2,))

TARGET_CE = Role(
    "target",
    "(N,) or (N, C)",
    "Class indices (N,), or a probability row per sample (N, C) (soft targets).",
    dtype="label",
)

# ---------------------------------------------------------------------------
# cross-entropy
# ---------------------------------------------------------------------------


def _fast_rows(x: np.ndarray) -> bool:
    """(N, C) float32/float64 input with rows and classes: the blocked row kernels apply."""
    return x.ndim == 2 and x.shape[0] > 0 and x.shape[1] > 0 and x.dtype in (np.float32, np.float64)


def _class_weight(weight, n_classes: int) -> np.ndarray | None:
    if weight is None:
        return None
    w = np.asarray(weight, dtype=np.float64).ravel()
    if w.shape != (n_classes,):
        raise ParamError(
            "weight",
            f"{opt('weight')} has {w.size} value(s) but the predictions have {n_classes} classes (columns)",
        )
    return w


def _log_probs(x: np.ndarray, pred_kind: str, prob_atol) -> np.ndarray:
    """Validated (N, C) log-probabilities in float64 from any prediction kind."""
    if pred_kind == "logits":
        check_finite(x, "pred", "logits")
        return log_softmax64(x)
    if pred_kind == "probs":
        check_probs(x, "pred", prob_atol)
        with np.errstate(divide="ignore"):
            return np.log(np.asarray(x, dtype=np.float64))
    check_log_probs(x, "pred", prob_atol)
    return np.asarray(x, dtype=np.float64)


def _soft_target(target: np.ndarray, pred_shape, target_kind: str, prob_atol) -> np.ndarray:
    if target.shape != pred_shape:
        raise InputError(
            "target",
            f"soft targets have {target.shape[1]} columns but the predictions have {pred_shape[1]} classes",
            [],
            expected=f"one probability per class ({pred_shape[1]} columns), or class indices (N,)",
        )
    t = as_float(target)
    if target_kind == "log-probs":
        check_log_probs(t, "target", prob_atol)
        return np.exp(np.asarray(t, dtype=np.float64))
    check_probs(t, "target", prob_atol)
    return np.asarray(t, dtype=np.float64)


def _xlogy_rows(t: np.ndarray, logq: np.ndarray) -> np.ndarray:
    """Σ_c t_c · logq_c per row, with 0 · log 0 = 0."""
    prod = np.zeros_like(t)
    np.multiply(t, logq, out=prod, where=t != 0)
    return prod.sum(axis=1)


@loss(
    name="cross-entropy",
    aliases=("ce",),
    family="classification",
    summary="Softmax cross-entropy between class scores and class indices or soft targets.",
    inputs=(PRED_CN, TARGET_CE),
    params=(
        PRED_KIND,
        CLASS_WEIGHT,
        IGNORE_INDEX,
        CLASSES,
        Param(
            "label-smoothing",
            "float",
            0.0,
            "Mix (1-ε) of the target with ε of the uniform distribution over C classes.",
            low=0.0,
            high=1.0,
        ),
        TARGET_KIND,
    ),
    kernel_options=("extras", "prob_atol"),
    reference="torch.nn.functional.cross_entropy(input, target, weight, ignore_index, reduction, label_smoothing)",
    formula=(
        "indices: l_n = -w[y_n] · log softmax(x_n)[y_n]\n"
        "soft:    l_n = -Σ_c w_c · y_nc · log softmax(x_n)_c\n"
        "smoothing ε: (1-ε) · l_n + ε/C · (-Σ_c w_c · log softmax(x_n)_c)"
    ),
    headline=(
        "index targets: Σ_n l_n / Σ_n w[y_n] over rows not equal to ignore-index "
        "(PyTorch's weighted mean; the plain mean when unweighted); soft targets: Σ_n l_n / N"
    ),
    gradient="∂l_n/∂x_n = softmax(x_n) · Σ_c t_c - t, with t the weighted (smoothed) target row",
    properties=(
        "Non-negative for probability targets; zero only when the prediction puts all mass on the target.",
        "Equals H(p) + KL(p ‖ q) for a soft target p and prediction q: only the KL part depends on the model.",
        "Unbounded: a confident wrong prediction costs arbitrarily much (log of a tiny probability).",
        "Computed in log space with log-sum-exp: logits of ±1e4 give finite, exact results.",
    ),
    used_for="Multi-class classification; language modelling (per token).",
    activation="softmax over the class axis (applied inside the loss to logits)",
    paper="Standard maximum-likelihood loss; label smoothing: Szegedy et al. 2016.",
    example=("sample_data/classifier.parquet:logits", "sample_data/classifier.parquet:label"),
    reliability="reliability_multiclass",
)
def cross_entropy(
    pred: np.ndarray,
    target: np.ndarray,
    *,
    pred_kind: str = "logits",
    weight=None,
    ignore_index: int = -100,
    label_smoothing: float = 0.0,
    target_kind: str = "probs",
    prob_atol: float | None = None,
    extras: bool = False,
) -> Result:
    """Softmax cross-entropy, per sample.

    Args:
      pred: class scores with shape ``[N, C]``: logits, probabilities or
        log-probabilities according to ``pred_kind``.
      target: class indices ``[N]`` (integers; ``ignore_index`` rows are
        ignored) or soft targets ``[N, C]`` (probability rows).
      weight: optional class weights ``[C]``.
      label_smoothing: ε in [0, 1]; the target becomes ``(1-ε)·y + ε/C``.

    Returns:
      ``Result`` whose ``loss`` has shape ``[N]``. For index targets the
      headline mean is ``Σ l_n / Σ w[y_n]`` over non-ignored rows (PyTorch);
      for soft targets it is ``Σ l_n / N``. Soft targets also give the
      components ``entropy`` H(p) and ``kl`` KL(p ‖ q), which sum to the loss
      when there are no class weights.
    """
    x = as_float(pred)
    n, n_classes = x.shape
    w = _class_weight(weight, n_classes)
    eps = float(label_smoothing)

    if target.ndim == 2:
        if ignore_index is not None and ignore_index >= 0:
            raise ParamError(
                "ignore-index",
                f"{opt('ignore-index')} is not supported with soft (probability) targets",
            )
        t = _soft_target(target, x.shape, target_kind, prob_atol)
        logq = _log_probs(x, pred_kind, prob_atol)
        if eps > 0:
            t = t * (1.0 - eps) + eps / n_classes
        tw = t if w is None else t * w
        loss = -_xlogy_rows(tw, logq)
        components = {}
        if w is None:
            # CE(p, q) = H(p) + KL(p || q) for the effective (smoothed) target p;
            # only the KL part depends on the model.
            with np.errstate(divide="ignore"):
                log_t = np.log(t)
            components = {"entropy": -_xlogy_rows(t, log_t), "kl": _xlogy_rows(t, log_t - logq)}
        result = Result(loss=loss, components=components)
        if extras:
            result.columns = {
                "p_true": np.exp(logq[np.arange(n), np.argmax(t, axis=1)]),
                "pred_class": np.argmax(x, axis=1),
            }
        return result

    y = class_indices(target, "target", n_classes, ignore_index)
    ignored = y == ignore_index if ignore_index is not None else np.zeros(n, dtype=bool)
    ys = np.where(ignored, 0, y)
    rows = np.arange(n)

    argmax = None
    if pred_kind == "logits" and _fast_rows(x):
        # Blocked, threaded log-sum-exp; non-finite logits are located only when present.
        sm = softmax_rows(x, ys, shift_sum=eps > 0, weights=w)
        if sm.bad:
            check_finite(x, "pred", "logits")
        argmax = sm.argmax
        # -log softmax(x)[y] = log Σ exp(x - m) + (m - x_y): no cancellation of a large m.
        nll = sm.log_s + (sm.m - sm.x_y)
        if eps > 0:
            wsum = float(n_classes) if w is None else float(w.sum())
            smooth = wsum * sm.log_s + sm.shift_sum  # Σ_c w_c (lse - x_c), lse - x_c = log_s + (m - x_c)
    elif pred_kind == "logits":
        check_finite(x, "pred", "logits")
        m, log_s = logsumexp_parts(x)
        nll = log_s + (m - x[rows, ys].astype(np.float64))
        if eps > 0:
            xs = x.astype(np.float64)
            wsum = float(n_classes) if w is None else float(w.sum())
            xw = xs.sum(axis=1) if w is None else np.einsum("ij,j->i", xs, w)
            smooth = wsum * log_s + (wsum * m - xw)  # Σ_c w_c (lse - x_c)
    else:
        logq = _log_probs(x, pred_kind, prob_atol)
        nll = -logq[rows, ys]
        if eps > 0:
            if w is None:
                smooth = -logq.sum(axis=1)
            else:
                smooth = -_xlogy_rows(np.broadcast_to(w, logq.shape), logq)

    if w is None:
        loss = nll
        den = (~ignored).astype(np.float64)
    else:
        wy = w[ys]
        loss = wy * nll
        den = np.where(ignored, 0.0, wy)
    if eps > 0:
        loss = (1.0 - eps) * loss + (eps / n_classes) * smooth
    any_ignored = bool(ignored.any())
    if any_ignored:
        loss[ignored] = 0.0  # (when loss is nll, p_true below is NaN at these rows anyway)
    result = Result(loss=loss, den=den, ignored=ignored if any_ignored else None)
    if extras:
        p_true = np.exp(-nll)
        p_true[ignored] = np.nan
        result.columns = {"p_true": p_true, "pred_class": np.argmax(x, axis=1) if argmax is None else argmax}
    return result


def _stable_q_sum_minus_t(logq: np.ndarray, t: np.ndarray, g: np.ndarray) -> np.ndarray:
    """``q·Σt - t`` recomputed as ``exp(log q + log Σt) - exp(log t)`` (see ``exp_diff``) where
    ``t > 0`` and ``Σt > 0``, so a confident correct row keeps its tiny gradient."""
    tot = t.sum(axis=1, keepdims=True)
    pos = (t > 0) & (tot > 0)
    if not pos.any():
        return g
    with np.errstate(divide="ignore", invalid="ignore"):
        d = exp_diff(logq + np.log(np.where(tot > 0, tot, 1.0)), np.log(np.where(pos, t, 1.0)))
    return np.where(pos, d, g)


def cross_entropy_grad(
    pred: np.ndarray,
    target: np.ndarray,
    *,
    pred_kind: str = "logits",
    weight=None,
    ignore_index: int = -100,
    label_smoothing: float = 0.0,
    target_kind: str = "probs",
    prob_atol: float | None = None,
) -> np.ndarray:
    """∂l_n/∂pred_n, shape ``[N, C]``.

    Writing the loss as ``l = -Σ_c t_c log q_c`` with ``t`` the weighted,
    smoothed target row: logits give ``softmax(x)·Σ_c t_c - t``, probabilities
    ``-t / p``, log-probabilities ``-t``. Ignored rows get 0.
    """
    x = as_float(pred)
    n, n_classes = x.shape
    w = _class_weight(weight, n_classes)
    eps = float(label_smoothing)
    if target.ndim == 2:
        t = _soft_target(target, x.shape, target_kind, prob_atol)
        if eps > 0:
            t = t * (1.0 - eps) + eps / n_classes
        if w is not None:
            t = t * w
        ignored = np.zeros(n, dtype=bool)
    else:
        y = class_indices(target, "target", n_classes, ignore_index)
        ignored = y == ignore_index if ignore_index is not None else np.zeros(n, dtype=bool)
        ys = np.where(ignored, 0, y)
        wy = np.ones(n) if w is None else w[ys]
        t = np.zeros((n, n_classes))
        t[np.arange(n), ys] = wy * (1.0 - eps)
        if eps > 0:
            t += (eps / n_classes) * (np.ones(n_classes) if w is None else w)
    logq = _log_probs(x, pred_kind, prob_atol)
    if pred_kind == "logits":
        g = np.exp(logq) * t.sum(axis=1, keepdims=True) - t
        g = _stable_q_sum_minus_t(logq, t, g)
    elif pred_kind == "probs":
        with np.errstate(divide="ignore", invalid="ignore"):
            g = np.where(t != 0, -t / np.asarray(x, dtype=np.float64), 0.0)
    else:
        g = -t
    g[ignored] = 0.0
    return g


# ---------------------------------------------------------------------------
# binary cross-entropy
# ---------------------------------------------------------------------------

_LOG_CLAMP = -100.0  # PyTorch's binary_cross_entropy clamps each log at -100


def _bce_prepare(pred, target, pos_weight, weight):
    x, y = same_shape(as_float(pred), as_float(target))
    n_out = 1 if x.ndim == 1 else x.shape[1]
    check_unit_interval(y, "target", "binary targets")
    pw = per_output(pos_weight, n_out, "pos-weight")
    w = per_output(weight, n_out, "weight")
    return x, np.asarray(y, dtype=np.float64), pw, w


def _bce_logits_fast(pred, target, pos_weight, weight, extras: bool) -> Result | None:
    """BCE with logits over row blocks in threads; None when the plain path must handle the input.

    Per element ``pw·y·softplus(-x) + (1-y)·softplus(x)``, written (pw = 1) as
    ``log1p(exp(-|x|)) + (max(x, 0) - y·x)``, two parts >= 0 for y in [0, 1], so
    nothing cancels. Targets are range-checked by block minimum/maximum and
    logits by the finiteness of the results; the exact checks (same errors,
    same rows) run only when something is off.
    """
    x, y = same_shape(as_float(pred), as_float(target))
    if x.ndim not in (1, 2) or x.size == 0 or len(x) == 0:
        return None
    n = len(x)
    k_out = 1 if x.ndim == 1 else x.shape[1]
    try:
        pw = per_output(pos_weight, k_out, "pos-weight")
        w = per_output(weight, k_out, "weight")
    except ParamError:
        check_unit_interval(y, "target", "binary targets")
        raise
    x2 = x.reshape(n, k_out)
    y2 = y.reshape(n, k_out)
    loss = np.empty(n, dtype=np.float64)
    pw_one = isinstance(pw, float) and pw == 1.0
    w_one = isinstance(w, float) and w == 1.0
    # float32 logits: the softplus tail log1p(exp(-|x|)) in float32 (about 1e-7 relative);
    # everything else, and float64 logits, in float64.
    tail_dt = x.dtype
    step = rows_per_block(k_out, ELEM_BLOCK_ELEMS)

    def part(start: int, stop: int) -> tuple[bool, bool]:
        rows = min(step, stop - start)
        tail = scratch("bce_tail", (rows, k_out), tail_dt)
        e_buf = scratch("bce_e", (rows, k_out), np.float64)
        u_buf = scratch("bce_u", (rows, k_out), np.float64)
        v_buf = scratch("bce_v", (rows, k_out), np.float64) if not pw_one else None
        zeros = constant("zero", rows * k_out, 0.0).reshape(rows, k_out)
        x_bad = y_bad = False
        with np.errstate(all="ignore"):
            for a in range(start, stop, step):
                b = min(a + step, stop)
                k = b - a
                xb = x2[a:b]
                yb = y2[a:b]
                if not (yb.min() >= 0 and yb.max() <= 1):  # NaN fails both
                    y_bad = True
                tl = tail[:k]
                np.abs(xb, out=tl)
                np.negative(tl, out=tl)
                np.exp(tl, out=tl)
                np.log1p(tl, out=tl)  # log1p(exp(-|x|))
                direct = k_out == 1 and w_one
                e = loss[a:b].reshape(k, 1) if direct else e_buf[:k]
                u = u_buf[:k]
                z = zeros[:k]
                np.copyto(u, xb)
                if pw_one:
                    np.copyto(e, yb)
                    np.multiply(e, u, out=e)  # y·x
                    np.maximum(u, z, out=u)  # max(x, 0)
                    np.subtract(u, e, out=u)  # max(x, 0) - y·x >= 0
                    np.copyto(e, tl)
                    np.add(e, u, out=e)
                else:
                    v = v_buf[:k]
                    np.negative(u, out=v)
                    np.maximum(v, z, out=v)  # max(-x, 0)
                    np.maximum(u, z, out=u)  # max(x, 0)
                    np.copyto(e, tl)
                    np.add(v, e, out=v)  # softplus(-x)
                    np.add(u, e, out=u)  # softplus(x)
                    np.copyto(e, yb)
                    np.multiply(v, e, out=v)
                    np.multiply(v, pw, out=v)  # pw·y·softplus(-x)
                    np.subtract(1.0, e, out=e)
                    np.multiply(e, u, out=e)  # (1-y)·softplus(x)
                    np.add(e, v, out=e)
                if not w_one:
                    np.multiply(e, w, out=e)
                if not direct:
                    if k_out == 1:
                        loss[a:b] = e[:, 0]
                    else:
                        np.add.reduce(e, axis=1, out=loss[a:b])  # row sums, divided by k_out below
                if not np.isfinite(np.sum(loss[a:b])):
                    x_bad = True
        return x_bad, y_bad

    flags = row_parts(n, n * k_out * 4, part)
    if any(f[1] for f in flags):
        check_unit_interval(y, "target", "binary targets")
    if any(f[0] for f in flags):
        check_finite(x, "pred", "logits")
    result = row_sums_result(loss, k_out)
    if extras and x.ndim == 1:
        p = sigmoid(x)
        yy = np.asarray(y, dtype=np.float64)
        result.columns = {
            "p_true": yy * p + (1.0 - yy) * (1.0 - p),
            "pred_class": (p >= 0.5).astype(np.int64),
        }
    return result


@loss(
    name="binary-cross-entropy",
    aliases=("bce",),
    family="classification",
    summary="Binary (or multi-label) cross-entropy from logits or probabilities.",
    inputs=(
        Role("pred", "(N,) or (N, K)", "One score per sample, or K independent labels per sample."),
        Role("target", "(N,) or (N, K)", "Targets in [0, 1], the prediction's shape."),
    ),
    params=(
        Param(
            "pred-kind",
            "choice",
            "logits",
            "What the prediction holds: logits (sigmoid applied inside) or probabilities.",
            choices=("logits", "probs"),
        ),
        Param(
            "pos-weight",
            "float-or-floats",
            1.0,
            "Weight of the positive term: one number, or K numbers (one per label).",
            low=0.0,
        ),
        Param(
            "weight",
            "float-or-floats",
            None,
            "Weight of each element: one number, or K numbers (one per label).",
            low=0.0,
        ),
    ),
    kernel_options=("extras",),
    reference=(
        "torch.nn.functional.binary_cross_entropy_with_logits(input, target, weight, pos_weight) "
        "(logits); torch.nn.functional.binary_cross_entropy(input, target, weight) (probs)"
    ),
    formula=(
        "logits: l = w · (pw · y · softplus(-x) + (1-y) · softplus(x))\n"
        "probs:  l = -w · (pw · y · max(log p, -100) + (1-y) · max(log(1-p), -100))\n"
        "(N, K): the per-sample value is the mean over the K labels"
    ),
    headline=HEADLINE_MEAN,
    gradient="logits: ∂l/∂x = w · ((1-y) · σ(x) - pw · y · σ(-x)); probs: w · ((1-y)/(1-p) - pw · y/p)",
    properties=(
        "From logits it is computed with softplus, so it is finite and exact for any finite logit.",
        "From probabilities each log is clamped at -100, as PyTorch does: one element costs at most 100 · w.",
    ),
    used_for="Binary and multi-label classification.",
    activation="sigmoid per output (applied inside the loss to logits)",
    paper="Standard Bernoulli log-likelihood.",
    example=("sample_data/binary.csv:logit", "sample_data/binary.csv:label"),
    reliability="reliability_binary",
)
def binary_cross_entropy(
    pred: np.ndarray,
    target: np.ndarray,
    *,
    pred_kind: str = "logits",
    pos_weight=1.0,
    weight=None,
    extras: bool = False,
) -> Result:
    """Binary cross-entropy per sample; ``[N]`` or ``[N, K]`` (mean over K).

    From logits: ``w·(pw·y·softplus(-x) + (1-y)·softplus(x))``, with both
    softplus terms formed from ``log1p(exp(-|x|))`` so neither cancels (exact
    where PyTorch's ``(1-y)x - logσ(x)`` loses digits, e.g. x=-20, y=0).
    From probabilities: ``-w·(pw·y·max(log p, -100) + (1-y)·max(log(1-p), -100))``.
    """
    if pred_kind == "logits":
        fast = _bce_logits_fast(pred, target, pos_weight, weight, extras)
        if fast is not None:
            return fast
    x, y, pw, w = _bce_prepare(pred, target, pos_weight, weight)
    if pred_kind == "logits":
        check_finite(x, "pred", "logits")
        x64 = np.asarray(x, dtype=np.float64)
        tail = np.log1p(np.exp(-np.abs(x64)))
        sp_pos = np.maximum(x64, 0.0) + tail  # softplus(x)  = -log(1 - σ(x))
        sp_neg = np.maximum(-x64, 0.0) + tail  # softplus(-x) = -log σ(x)
        elem = pw * y * sp_neg + (1.0 - y) * sp_pos
        p = None
    else:
        check_unit_interval(x, "pred", "probabilities")
        p = np.asarray(x, dtype=np.float64)
        with np.errstate(divide="ignore"):
            log_p = np.maximum(np.log(p), _LOG_CLAMP)
            log_1mp = np.maximum(np.log1p(-p), _LOG_CLAMP)
        elem = -(pw * y * log_p + (1.0 - y) * log_1mp)
    elem = w * elem if not (isinstance(w, float) and w == 1.0) else elem
    result = element_rows(elem)
    if extras and x.ndim == 1:
        if p is None:
            p = sigmoid(x)
        result.columns = _binary_columns(y, p)
    return result


def _binary_columns(y: np.ndarray, p: np.ndarray) -> dict[str, np.ndarray]:
    """Per-sample output columns of a binary classifier: the probability given to the true
    label and the predicted class (p >= 0.5)."""
    return {"p_true": y * p + (1.0 - y) * (1.0 - p), "pred_class": (p >= 0.5).astype(np.int64)}


def binary_cross_entropy_grad(
    pred: np.ndarray,
    target: np.ndarray,
    *,
    pred_kind: str = "logits",
    pos_weight=1.0,
    weight=None,
) -> np.ndarray:
    """∂l_n/∂pred_n with the prediction's shape.

    Logits: ``w·((1-y)·σ(x) - pw·y·σ(-x))`` (= σ(x) - y when pw = w = 1).
    Probabilities: ``w·((1-y)/(1-p) - pw·y/p)``, 0 where a log is clamped.
    Divided by K for ``[N, K]`` inputs (the per-sample value is a mean).
    """
    x, y, pw, w = _bce_prepare(pred, target, pos_weight, weight)
    x64 = np.asarray(x, dtype=np.float64)
    if pred_kind == "logits":
        g = (1.0 - y) * sigmoid(x64) - pw * y * sigmoid(-x64)
    else:
        with np.errstate(divide="ignore", invalid="ignore"):
            d_pos = np.where(np.log(x64) > _LOG_CLAMP, -1.0 / x64, 0.0)
            d_neg = np.where(np.log1p(-x64) > _LOG_CLAMP, 1.0 / (1.0 - x64), 0.0)
        g = pw * y * d_pos + (1.0 - y) * d_neg
    g = w * g
    if g.ndim == 2:
        g = g / g.shape[1]
    return g.reshape(np.shape(pred))


# ---------------------------------------------------------------------------
# nll
# ---------------------------------------------------------------------------


def _index_target(target, n_classes: int, ignore_index, loss: str) -> np.ndarray:
    if getattr(target, "ndim", 1) != 1:
        raise InputError(
            "target",
            f"{loss} takes class indices, one per row; got shape {tuple(np.shape(target))}",
            [],
            expected="class indices (N,)",
        )
    return class_indices(np.asarray(target), "target", n_classes, ignore_index)


@loss(
    name="nll",
    family="classification",
    summary="Negative log-likelihood of class indices under given log-probabilities.",
    inputs=(
        Role(
            "pred",
            "(N, C)",
            "Log-probabilities: one row per sample, one column per class (e.g. a log_softmax output).",
            ndim=(2,),
        ),
        Role(
            "target", "(N,)", f"Class indices; rows equal to {opt('ignore-index')} are ignored.", ndim=(1,), dtype="label"
        ),
    ),
    params=(CLASS_WEIGHT, IGNORE_INDEX, CLASSES),
    kernel_options=("extras", "prob_atol"),
    reference="torch.nn.functional.nll_loss(input, target, weight, ignore_index)",
    formula=f"l_n = -w[y_n] · logp_n[y_n]   (w ≡ 1 without {opt('weight')}; 0 at ignored rows)",
    headline=(
        "Σ_n l_n / Σ_n w[y_n] over rows not equal to ignore-index "
        "(PyTorch's weighted mean; the plain mean when unweighted)"
    ),
    gradient="∂l_n/∂logp_n = -w[y_n] · onehot(y_n); 0 on ignored rows",
    properties=(
        "Non-negative and unbounded: a log-probability of -inf on the true class gives inf.",
        "Equals cross-entropy when the input is log_softmax of the logits.",
        "Unlike PyTorch, the input is validated: values must be <= 0 and their exps sum to 1 per row "
        f"(within {opt('prob-atol')}); PyTorch accepts any numbers (nll_loss([[1,2,3]],[2]) = -3).",
    ),
    used_for="Multi-class classification when the model already outputs log-probabilities.",
    activation="log_softmax over the class axis (applied by the model, not by the loss)",
    paper="Standard maximum-likelihood loss (negative log-likelihood).",
    example=(
        "sample_data/classification_logprobs.parquet:logprobs",
        "sample_data/classification_logprobs.parquet:label",
    ),
    reliability="reliability_log_probs",
)
def nll(
    pred: np.ndarray,
    target: np.ndarray,
    *,
    weight=None,
    ignore_index: int = -100,
    prob_atol: float | None = None,
    extras: bool = False,
) -> Result:
    """Negative log-likelihood of class indices under log-probabilities, per sample.

    ``l_n = -w[y_n] · logp_n[y_n]`` (0 at ``ignore_index`` rows, which are
    ignored); the headline mean is ``Σ l_n / Σ w[y_n]`` (PyTorch's ``nll_loss``).
    Unlike PyTorch, the prediction is validated to be log-probabilities (values
    <= 0 whose exps sum to 1 within ``prob_atol``); -inf (probability 0) is allowed.
    """
    x = as_float(pred)
    n, n_classes = x.shape
    w = _class_weight(weight, n_classes)
    y = _index_target(target, n_classes, ignore_index, "nll")
    check_log_probs(x, "pred", prob_atol)
    ignored = y == ignore_index if ignore_index is not None else np.zeros(n, dtype=bool)
    ys = np.where(ignored, 0, y)
    lp_true = np.asarray(x[np.arange(n), ys], dtype=np.float64)
    wy = np.ones(n) if w is None else w[ys]
    loss = wy * -lp_true
    loss[ignored] = 0.0
    den = np.where(ignored, 0.0, wy)
    result = Result(loss=loss, den=den, ignored=ignored if ignored.any() else None)
    if extras:
        p_true = np.exp(lp_true)
        p_true[ignored] = np.nan
        result.columns = {"p_true": p_true, "pred_class": np.argmax(x, axis=1)}
    return result


def nll_grad(
    pred: np.ndarray,
    target: np.ndarray,
    *,
    weight=None,
    ignore_index: int = -100,
    prob_atol: float | None = None,
) -> np.ndarray:
    """∂l_n/∂logp_n = -w[y_n] · onehot(y_n), shape ``[N, C]``; 0 on ignored rows."""
    x = as_float(pred)
    n, n_classes = x.shape
    w = _class_weight(weight, n_classes)
    y = _index_target(target, n_classes, ignore_index, "nll")
    ignored = y == ignore_index if ignore_index is not None else np.zeros(n, dtype=bool)
    ys = np.where(ignored, 0, y)
    g = np.zeros((n, n_classes))
    g[np.arange(n), ys] = -(np.ones(n) if w is None else w[ys])
    g[ignored] = 0.0
    return g


# ---------------------------------------------------------------------------
# focal (sigmoid, torchvision.ops.sigmoid_focal_loss)
# ---------------------------------------------------------------------------


def _log_sigmoid(x: np.ndarray) -> np.ndarray:
    """log σ(x) = -softplus(-x), stable for any finite x."""
    return -(np.maximum(-x, 0.0) + np.log1p(np.exp(-np.abs(x))))


def _focal_parts(pred, target, alpha, gamma):
    """Shared pieces: x, y, ce, log(1-p_t), focal weight (1-p_t)^γ, α_t (or None)."""
    x, y = same_shape(as_float(pred), as_float(target))
    check_unit_interval(y, "target", "binary targets")
    check_finite(x, "pred", "logits")
    x = np.asarray(x, dtype=np.float64)
    y = np.asarray(y, dtype=np.float64)
    ls_pos = _log_sigmoid(x)  # log σ(x)  = log p
    ls_neg = _log_sigmoid(-x)  # log σ(-x) = log(1-p)
    ce = -(y * ls_pos + (1.0 - y) * ls_neg)
    # 1 - p_t = y·σ(-x) + (1-y)·σ(x), in log space (a term with weight 0 drops out).
    with np.errstate(divide="ignore"):
        a = np.where(y > 0, np.log(np.where(y > 0, y, 1.0)) + ls_neg, -np.inf)
        b = np.where(y < 1, np.log1p(-np.where(y < 1, y, 0.0)) + ls_pos, -np.inf)
    log_1mpt = np.logaddexp(a, b)
    fw = np.ones_like(x) if gamma == 0 else np.exp(gamma * log_1mpt)
    alpha_t = None if alpha < 0 else alpha * y + (1.0 - alpha) * (1.0 - y)
    return x, y, ce, log_1mpt, fw, alpha_t, ls_pos, ls_neg


@loss(
    name="focal",
    family="classification",
    summary="Sigmoid focal loss: binary cross-entropy down-weighted on easy examples.",
    inputs=(
        Role("pred", "(N,) or (N, K)", "Logits: one per sample, or K independent labels per sample."),
        Role(
            "target", "(N,) or (N, K)", "Binary targets in [0, 1] (soft targets allowed), the prediction's shape."
        ),
    ),
    params=(
        Param(
            "alpha",
            "float",
            0.25,
            "Weight of the positive class (α_t = α·y + (1-α)(1-y)); -1 disables the weighting.",
            low=0.0,
            high=1.0,
            allow=(-1.0,),
        ),
        Param(
            "gamma",
            "float",
            2.0,
            "Focusing exponent γ on (1 - p_t); 0 gives (α-weighted) binary cross-entropy.",
            low=0.0,
        ),
    ),
    kernel_options=("extras",),
    reference="torchvision.ops.sigmoid_focal_loss(inputs, targets, alpha, gamma, reduction='none')",
    formula=(
        "p = σ(x), ce = BCEWithLogits(x, y) = -(y·log σ(x) + (1-y)·log σ(-x))\n"
        "p_t = p·y + (1-p)(1-y),  α_t = α·y + (1-α)(1-y)\n"
        "l = α_t · (1 - p_t)^γ · ce   (α_t omitted when alpha = -1)\n"
        "(N, K): the per-sample value is the mean over the K labels"
    ),
    headline="the mean over samples (= the element-wise mean of torchvision's reduction='mean'); " + HEADLINE_ELEM_SUM,
    gradient=(
        "∂l/∂x = α_t · [(σ(x) - y)·(1-p_t)^γ + γ·ce·(1-2y)·σ(x)σ(-x)·(1-p_t)^(γ-1)] (divided by K for (N, K))"
    ),
    properties=(
        "Non-negative; with gamma = 0 and alpha = -1 it is exactly binary cross-entropy with logits.",
        "Down-weights well-classified examples ((1-p_t)^γ → 0 as p_t → 1), so rare hard examples dominate.",
        "(1 - p_t)^γ is computed in log space from log σ(±x): exact for extreme logits "
        "(x = 20, y = 1 gives 2.19e-27 in float64 where torchvision in float32 prints 0).",
        "Smooth for gamma >= 1; unbounded above (linear in |x| for confident mistakes).",
    ),
    used_for="Dense object detection (classification head), imbalanced binary and multi-label classification.",
    activation="sigmoid per output (applied inside the loss to logits)",
    paper="Lin, Goyal, Girshick, He, Dollár 2017, Focal Loss for Dense Object Detection (RetinaNet).",
    example=(
        "sample_data/classification_multilabel.csv:logit_*",
        "sample_data/classification_multilabel.csv:label_*",
    ),
    reliability="reliability_binary",
)
def focal(
    pred: np.ndarray,
    target: np.ndarray,
    *,
    alpha: float = 0.25,
    gamma: float = 2.0,
    extras: bool = False,
) -> Result:
    """Sigmoid focal loss (Lin et al. 2017) as ``torchvision.ops.sigmoid_focal_loss``.

    Per element: ``α_t · (1-p_t)^γ · BCE(x, y)`` with ``p = σ(x)``,
    ``p_t = p·y + (1-p)(1-y)`` and ``α_t = α·y + (1-α)(1-y)`` (``alpha = -1``
    disables it). Targets may be soft, in [0, 1]. ``(1-p_t)^γ`` is formed in
    log space from log σ(±x) (as optax does), so it neither cancels nor turns
    0·inf into NaN. ``[N, K]``: the per-sample value is the mean over K.
    With ``gamma = 0, alpha = -1`` this is exactly binary cross-entropy with logits.
    """
    x, y, ce, _, fw, alpha_t, _, _ = _focal_parts(pred, target, alpha, gamma)
    elem = ce * fw
    if alpha_t is not None:
        elem = alpha_t * elem
    result = element_rows(elem)
    if extras and x.ndim == 1:
        result.columns = _binary_columns(y, sigmoid(x))
    return result


def focal_grad(
    pred: np.ndarray,
    target: np.ndarray,
    *,
    alpha: float = 0.25,
    gamma: float = 2.0,
) -> np.ndarray:
    """∂l/∂x = α_t · [(σ(x) - y)·(1-p_t)^γ + γ·BCE·(1-2y)·σ(x)σ(-x)·(1-p_t)^(γ-1)],
    with ``σ(x) - y`` formed as ``(1-y)·σ(x) - y·σ(-x)`` (exact for confident correct logits).

    The second term is formed in log space; divided by K for ``[N, K]``.
    """
    x, y, ce, log_1mpt, fw, alpha_t, ls_pos, ls_neg = _focal_parts(pred, target, alpha, gamma)
    # σ(x) - y as (1-y)·σ(x) - y·σ(-x): no cancellation when σ(x) rounds to y (x = 40, y = 1)
    g = ((1.0 - y) * sigmoid(x) - y * sigmoid(-x)) * fw
    if gamma != 0:
        with np.errstate(invalid="ignore"):
            dfw = gamma * (1.0 - 2.0 * y) * np.exp((gamma - 1.0) * log_1mpt + ls_pos + ls_neg)
        dfw = np.where(np.isfinite(dfw), dfw, 0.0)
        g = g + ce * dfw
    if alpha_t is not None:
        g = alpha_t * g
    if g.ndim == 2:
        g = g / g.shape[1]
    return g.reshape(np.shape(pred))


# ---------------------------------------------------------------------------
# calibration: reliability bins, expected calibration error, Brier score
# ---------------------------------------------------------------------------
#
# A reliability table is a function of per-bin sums (rows, Σ confidence, Σ correct), not
# a mean of per-sample values. Kernels hand the engine three per-row components under
# the ``rel/`` prefix: the row's bin index, its confidence and whether it was right; the
# aggregates (lossctl.aggregate) turn them into per-bin compensated sums, which merge,
# group and save like every other sum. Bins are sklearn's ``calibration_curve``'s:
# edges linspace(0, 1, n + 1), each bin (low, high], the first one also holds 0.

RELIABILITY_BINS = 10  # the reliability table of cross-entropy, nll, bce and focal
QUANTILE_FINE_BINS = 1000  # quantile binning: a fine uniform grid, grouped into equal-count bins at the end


def _bin_index(conf: np.ndarray, n_bins: int) -> np.ndarray:
    edges = np.linspace(0.0, 1.0, n_bins + 1)
    return np.searchsorted(edges[1:-1], conf, side="left").astype(np.float64)


def _rel_components(conf: np.ndarray, hit: np.ndarray, n_bins: int) -> dict[str, np.ndarray]:
    conf = np.asarray(conf, dtype=np.float64)
    return {"rel/bin": _bin_index(conf, n_bins), "rel/conf": conf, "rel/hit": np.asarray(hit, dtype=np.float64)}


def _top_label(pred, target, pred_kind: str, prob_atol):
    """Top-label confidence max_c q_c and correctness argmax_c q_c == y of index targets."""
    x = as_float(pred)
    logq = _log_probs(x, pred_kind, prob_atol)
    top = np.argmax(logq, axis=1)
    conf = np.exp(logq[np.arange(len(top)), top])
    return conf, top == np.asarray(target).astype(np.int64, copy=False)


def _positive_prob(pred, pred_kind: str) -> np.ndarray:
    x = as_float(pred)
    if pred_kind == "logits":
        check_finite(x, "pred", "logits")
        return np.asarray(sigmoid(np.asarray(x, dtype=np.float64)), dtype=np.float64)
    check_unit_interval(x, "pred", "probabilities")
    return np.asarray(x, dtype=np.float64)


def reliability_multiclass(pred, target, *, pred_kind: str = "logits", prob_atol=None, **_) -> dict[str, np.ndarray]:
    """Reliability components of a softmax classifier with index targets (top-label); none for
    soft targets (there is no single right class)."""
    if np.ndim(target) != 1:
        return {}
    conf, hit = _top_label(pred, target, pred_kind, prob_atol)
    return _rel_components(conf, hit, RELIABILITY_BINS)


def reliability_log_probs(pred, target, *, prob_atol=None, **_) -> dict[str, np.ndarray]:
    return reliability_multiclass(pred, target, pred_kind="log-probs", prob_atol=prob_atol)


def reliability_binary(pred, target, *, pred_kind: str = "logits", **_) -> dict[str, np.ndarray]:
    """Reliability components of a binary classifier (N,): confidence P(y = 1), 'accuracy' the
    fraction of positives (as calibration_curve); none for multi-label (N, K) predictions."""
    if np.ndim(pred) != 1:
        return {}
    return _rel_components(_positive_prob(pred, pred_kind), np.asarray(target, dtype=np.float64), RELIABILITY_BINS)


def _calibration_inputs(pred, target, pred_kind: str, prob_atol):
    x = as_float(pred)
    if x.ndim == 1:
        p = _positive_prob(x, pred_kind)
        y = np.asarray(target, dtype=np.float64)
        if y.ndim != 1 or len(y) != len(p):
            raise InputError("target", "binary (N,) predictions need one 0/1 label per row")
        bad = (y != 0) & (y != 1)
        if bad.any():
            raise InputError("target", "binary labels must be 0 or 1", rows=first_rows(bad))
        return p, y
    if np.ndim(target) != 1:
        raise InputError("target", "class indices (N,) are needed (soft targets have no right class)")
    y = class_indices(np.asarray(target), "target", x.shape[1], None)
    return _top_label(x, y, pred_kind, prob_atol)


@loss(
    name="ece",
    aliases=("calibration-error",),
    family="classification",
    summary="Expected calibration error (top-label, binned): ECE, RMS calibration error or MCE.",
    inputs=(
        Role("pred", "(N, C) or (N,)", "Class scores (N, C), or the positive class's score (N,) of a binary classifier."),
        Role("target", "(N,)", "Class indices (N, C scores), or 0/1 labels (N,) scores).", dtype="label"),
    ),
    params=(
        PRED_KIND,
        Param("bins", "int", 15, "Number of confidence bins.", low=1, high=1000),
        Param(
            "binning",
            "choice",
            "uniform",
            "uniform: equal-width bins over [0, 1]; quantile: bins of about equal counts (approximate in "
            "one streaming pass: edges on a 1000-bin grid; the report says so).",
            choices=("uniform", "quantile"),
        ),
        Param(
            "norm",
            "choice",
            "l1",
            "l1: expected calibration error; l2: RMS calibration error; max: maximum calibration error.",
            choices=("l1", "l2", "max"),
        ),
    ),
    kernel_options=("prob_atol",),
    reference="torchmetrics.functional.classification.multiclass_calibration_error / binary_calibration_error",
    formula=(
        "conf_n = max_c q_nc, correct_n = [argmax_c q_nc = y_n]  ((N,) scores: conf_n = p_n, correct_n = y_n)\n"
        "bin b: n_b rows, conf_b = mean conf, acc_b = mean correct (bins (low, high] as sklearn's calibration_curve)\n"
        "l1 = Σ_b n_b/N |acc_b - conf_b|;  l2 = sqrt(Σ_b n_b/N (acc_b - conf_b)²);  max = max_b |acc_b - conf_b|\n"
        "per-sample value: |conf_n - correct_n| (the headline is not its mean)"
    ),
    headline=f"a function of the per-bin sums (rows, Σ confidence, Σ correct) by {opt('norm')}, not a mean of per-sample values",
    gradient=(
        "of the per-sample value |conf - correct| (not of the binned headline): "
        "sign(conf - correct) · conf · (e_top - q) for logits"
    ),
    properties=(
        "In [0, 1]; 0 when, in every bin, the accuracy equals the mean confidence.",
        f"Depends on the binning: report {opt('bins')} and {opt('binning')} with the number.",
        f"{opt('ci')} is refused: the streaming bootstrap resamples Σ num / Σ den, which this value is not.",
    ),
    used_for="Checking that a classifier's confidence matches its accuracy.",
    activation="softmax over classes (logits), sigmoid for (N,) logits; probabilities are validated",
    paper="Naeini, Cooper, Hauskrecht 2015; Guo et al. 2017 (On Calibration of Modern Neural Networks).",
    example=("sample_data/classifier.parquet:logits", "sample_data/classifier.parquet:label"),
    headline_from="ece_headline",
)
def ece(
    pred: np.ndarray,
    target: np.ndarray,
    *,
    pred_kind: str = "logits",
    bins: int = 15,
    binning: str = "uniform",
    norm: str = "l1",
    prob_atol: float | None = None,
) -> Result:
    """Calibration error components, per sample.

    ``(N, C)`` scores with class indices: top-label confidence ``max_c q_c`` and correctness
    ``argmax q == y`` (torchmetrics' multiclass form); ``(N,)`` scores: ``P(y = 1)`` against the
    0/1 label (torchmetrics' binary form). The per-sample value is ``|confidence - correct|``;
    the headline is :func:`ece_headline` of the per-bin sums, not a mean.
    """
    conf, hit = _calibration_inputs(pred, target, pred_kind, prob_atol)
    conf = np.asarray(conf, dtype=np.float64)
    hit = np.asarray(hit, dtype=np.float64)
    grid = QUANTILE_FINE_BINS if binning == "quantile" else int(bins)
    return Result(loss=np.abs(conf - hit), components=_rel_components(conf, hit, grid))


def ece_grad(pred, target, *, pred_kind: str = "logits", prob_atol=None, **_) -> np.ndarray:
    """∂|conf_n - correct_n|/∂pred_n (of the per-sample value, not of the binned headline):
    sign(conf - correct) · ∂conf/∂pred, with ∂ max_c softmax(x)_c/∂x = conf · (e_top - q)."""
    x = as_float(pred)
    conf, hit = _calibration_inputs(x, target, pred_kind, prob_atol)
    s = np.sign(np.asarray(conf, dtype=np.float64) - np.asarray(hit, dtype=np.float64))
    if x.ndim == 1:
        return s * conf * (1.0 - conf) if pred_kind == "logits" else s
    logq = _log_probs(x, pred_kind, prob_atol)
    top = np.argmax(logq, axis=1)
    onehot = np.zeros(x.shape)
    onehot[np.arange(len(top)), top] = 1.0
    if pred_kind == "probs":
        return s[:, None] * onehot
    if pred_kind == "log-probs":
        return (s * conf)[:, None] * onehot
    return (s * conf)[:, None] * (onehot - np.exp(logq))


def ece_headline(bins: list[dict], total: int, params: dict) -> float:
    """ECE (l1), RMS calibration error (l2) or MCE (max) from the reliability bins, as
    torchmetrics' CalibrationError: with n_b, conf_b, acc_b the bin's rows, mean
    confidence and accuracy, l1 = Σ_b n_b/N |acc_b - conf_b|, l2 = sqrt(Σ_b n_b/N (acc_b - conf_b)²),
    max = max_b |acc_b - conf_b|."""
    full = [b for b in bins if b["count"]]
    if not total or not full:
        return float("nan")
    norm = params.get("norm") or "l1"
    if norm == "max":
        return max(abs(b["accuracy"] - b["confidence"]) for b in full)
    if norm == "l2":
        import math

        return math.sqrt(sum(b["count"] * (b["accuracy"] - b["confidence"]) ** 2 for b in full) / total)
    return sum(b["count"] * abs(b["accuracy"] - b["confidence"]) for b in full) / total


@loss(
    name="brier",
    aliases=("brier-score",),
    family="classification",
    summary="Brier score: squared error between predicted probabilities and the one-hot (or soft) target.",
    inputs=(
        Role("pred", "(N, C) or (N,)", "Class scores (N, C), or the positive class's score (N,) of a binary classifier."),
        Role(
            "target",
            "(N,) or (N, C)",
            "Class indices (N,) or probability rows (N, C) for (N, C) scores; labels in [0, 1] for (N,) scores.",
            dtype="label",
        ),
    ),
    params=(PRED_KIND, TARGET_KIND),
    kernel_options=("prob_atol",),
    reference="sklearn.metrics.brier_score_loss (binary); multi-class: Brier 1950, Σ_c (q_c - y_c)²",
    formula=(
        "(N, C): l_n = Σ_c (q_nc - y_nc)², q = softmax(x) (or the given probabilities), y one-hot or soft\n"
        "(N,):   l_n = (p_n - y_n)², p = σ(x) (or the given probability)"
    ),
    headline="the mean over rows",
    gradient="probs: 2(q - y); logits: 2 q ⊙ (d - Σ_c q_c d_c) with d = q - y",
    properties=(
        "In [0, 2] for (N, C) scores, [0, 1] for (N,); a strictly proper scoring rule.",
        "For (N,) binary scores it is scikit-learn's brier_score_loss; the two-column (N, 2) form is twice that.",
    ),
    used_for="Scoring probabilistic classifiers (accuracy and calibration together).",
    activation="softmax over classes (logits), sigmoid for (N,) logits; probabilities are validated",
    paper="Brier 1950, Verification of forecasts expressed in terms of probability.",
    example=("sample_data/classifier.parquet:logits", "sample_data/classifier.parquet:label"),
)
def brier(
    pred: np.ndarray,
    target: np.ndarray,
    *,
    pred_kind: str = "logits",
    target_kind: str = "probs",
    prob_atol: float | None = None,
) -> Result:
    """Brier score per sample: ``Σ_c (q_c - y_c)²`` (Brier 1950) for ``(N, C)`` scores with class
    indices or probability rows; ``(q - y)²`` for ``(N,)`` scores of the positive class
    (scikit-learn's ``brier_score_loss``)."""
    x = as_float(pred)
    if x.ndim == 1:
        p = _positive_prob(x, pred_kind)
        y = np.asarray(target, dtype=np.float64)
        check_unit_interval(y, "target", "binary targets")
        return Result(loss=(p - y) ** 2)
    q, t = _brier_rows(x, target, pred_kind, target_kind, prob_atol)
    d = q - t
    return Result(loss=np.einsum("ij,ij->i", d, d))


def _brier_rows(x, target, pred_kind: str, target_kind: str, prob_atol):
    """(q, t): the (N, C) probability rows and the target rows (one-hot for class indices)."""
    q = np.exp(_log_probs(x, pred_kind, prob_atol))
    if np.ndim(target) == 2:
        return q, _soft_target(target, x.shape, target_kind, prob_atol)
    y = class_indices(np.asarray(target), "target", x.shape[1], None)
    t = np.zeros_like(q)
    t[np.arange(len(y)), y] = 1.0
    return q, t


def brier_grad(pred, target, *, pred_kind: str = "logits", target_kind: str = "probs", prob_atol=None):
    """∂l/∂pred: probabilities 2(q - y); logits through the softmax Jacobian
    (2 q ⊙ (d - Σ_c q_c d_c)); binary logits 2(p - y)·p(1 - p)."""
    x = as_float(pred)
    if x.ndim == 1:
        p = _positive_prob(x, pred_kind)
        g = 2.0 * (p - np.asarray(target, dtype=np.float64))
        return g * p * (1.0 - p) if pred_kind == "logits" else g
    if pred_kind == "log-probs":
        raise ParamError("grad", f"brier with {opt('pred-kind')} log-probs: use logits or probs for {opt('grad')}")
    q, t = _brier_rows(x, target, pred_kind, target_kind, prob_atol)
    d = 2.0 * (q - t)
    if pred_kind == "probs":
        return d
    return q * (d - np.einsum("ij,ij->i", q, d)[:, None])


# ---------------------------------------------------------------------------
# softmax-focal (multi-class focal loss, Lin et al. 2017)
# ---------------------------------------------------------------------------


def _softmax_focal_parts(pred, target, alpha, gamma):
    x = as_float(pred)
    n, n_classes = x.shape
    a = None
    if alpha is not None:
        a = np.asarray(alpha, dtype=np.float64).ravel()
        if a.shape != (n_classes,):
            raise ParamError(
                "alpha",
                f"{opt('alpha')} has {a.size} value(s) but the predictions have {n_classes} classes (columns)",
            )
        if (a < 0).any() or not np.isfinite(a).all():
            raise ParamError("alpha", f"{opt('alpha')} values must be finite and >= 0")
    y = _index_target(target, n_classes, None, "softmax-focal")
    check_finite(x, "pred", "logits")
    m, log_s = logsumexp_parts(x)
    nll_y = log_s + (m - x[np.arange(n), y].astype(np.float64))  # -log p_y >= 0
    nll_y = np.maximum(nll_y, 0.0)
    one_minus_p = -np.expm1(-nll_y)  # 1 - p_y, exact for p_y near 1
    fw = np.power(one_minus_p, float(gamma))  # 0^0 = 1
    ay = np.ones(n) if a is None else a[y]
    return x, y, nll_y, one_minus_p, fw, ay


@loss(
    name="softmax-focal",
    family="classification",
    summary="Multi-class focal loss: softmax cross-entropy scaled by (1 - p_y)^γ.",
    inputs=(
        Role("pred", "(N, C)", "Logits: one row per sample, one column per class.", ndim=(2,)),
        Role("target", "(N,)", "Class indices in [0, C).", ndim=(1,), dtype="label"),
    ),
    params=(
        Param(
            "alpha",
            "floats",
            None,
            "Optional class weights α: C comma-separated numbers (or a file); l is multiplied by α[y].",
            low=0.0,
        ),
        Param(
            "gamma",
            "float",
            2.0,
            "Focusing exponent γ on (1 - p_y); 0 gives (α-weighted) cross-entropy.",
            low=0.0,
        ),
        CLASSES,
    ),
    kernel_options=("extras",),
    reference=(
        "Lin et al. 2017 multi-class form; per sample equals "
        "alpha[y] * (1 - exp(-ce))**gamma * ce with ce = F.cross_entropy(x, y, reduction='none')"
    ),
    formula="p = softmax(x),  l_n = -α[y_n] · (1 - p_y)^γ · log p_y   (α ≡ 1 when not given)",
    headline="the mean over samples (α weights the samples but does not change the denominator)",
    gradient="∂l/∂x = A · (softmax(x) - onehot(y)),  A = α_y · (1-p_y)^γ · (1 + γ · p_y · (-log p_y) / (1 - p_y))",
    properties=(
        "Non-negative; with gamma = 0 (and no alpha) it equals cross-entropy.",
        "Down-weights well-classified samples, focusing training on hard ones.",
        "Computed with log-sum-exp and 1 - p_y = -expm1(log p_y): finite for logits of ±1e4, "
        "and a confident correct row keeps its tiny value instead of rounding to 0.",
        "No ignore-index: every row must have a valid class index.",
    ),
    used_for="Imbalanced multi-class classification; detection classification heads with a softmax.",
    activation="softmax over the class axis (applied inside the loss to logits)",
    paper="Lin, Goyal, Girshick, He, Dollár 2017, Focal Loss for Dense Object Detection.",
    example=("sample_data/classifier.parquet:logits", "sample_data/classifier.parquet:label"),
)
def softmax_focal(
    pred: np.ndarray,
    target: np.ndarray,
    *,
    alpha=None,
    gamma: float = 2.0,
    extras: bool = False,
) -> Result:
    """Multi-class focal loss: ``l_n = -α[y_n] · (1 - p_y)^γ · log p_y``, ``p = softmax(x)``.

    ``-log p_y`` comes from log-sum-exp and ``1 - p_y = -expm1(log p_y)``, so a
    confident correct row keeps its small loss and extreme logits stay finite.
    ``alpha`` (optional) is one weight per class; the headline is the plain mean.
    """
    x, y, nll_y, _, fw, ay = _softmax_focal_parts(pred, target, alpha, gamma)
    loss = ay * fw * nll_y
    result = Result(loss=np.ascontiguousarray(loss, dtype=np.float64))
    if extras:
        result.columns = {"p_true": np.exp(-nll_y), "pred_class": np.argmax(x, axis=1)}
    return result


def softmax_focal_grad(
    pred: np.ndarray,
    target: np.ndarray,
    *,
    alpha=None,
    gamma: float = 2.0,
) -> np.ndarray:
    """∂l/∂x = A · (softmax(x) - onehot(y)), ``A = α_y·(1-p)^γ·(1 + γ·p·(-log p)/(1-p))``.

    ``-log p / (1-p) → 1`` as ``p → 1``; with ``γ = 0`` this is the cross-entropy gradient.
    """
    x, y, nll_y, one_minus_p, fw, ay = _softmax_focal_parts(pred, target, alpha, gamma)
    p = np.exp(-nll_y)
    with np.errstate(divide="ignore", invalid="ignore"):
        ratio = np.where(one_minus_p > 0, nll_y / one_minus_p, 1.0)
    # p·(-log p)/(1-p) → 0 as p → 0 (an overflowed -log p of inf times p = 0 is 0, not NaN)
    coef = ay * fw * (1.0 + np.where(p > 0, gamma * p * ratio, 0.0))
    return coef[:, None] * softmax_minus_onehot(log_softmax64(x), y)


# ---------------------------------------------------------------------------
# entropy
# ---------------------------------------------------------------------------


def _log_base(base) -> float:
    return math.log(float(base))  # (declared: (0, inf) other than 1, checked when parsed)


def _entropy_logp(pred, pred_kind: str, prob_atol):
    """(p, log p) in float64 from the prediction kind, validated."""
    x = as_float(pred)
    if x.ndim != 2:
        raise InputError("pred", f"expected one distribution per row, shape (N, C); got {x.shape}", [])
    if pred_kind == "logits":
        check_finite(x, "pred", "logits")
        lp, p = softmax64(x)
        return p, lp
    if pred_kind == "probs":
        check_probs(x, "pred", prob_atol)
        with np.errstate(divide="ignore"):
            lp = np.log(np.asarray(x, dtype=np.float64))
    elif pred_kind == "log-probs":
        check_log_probs(x, "pred", prob_atol)
        lp = np.asarray(x, dtype=np.float64)
    else:
        raise ParamError("pred-kind", f"unknown {opt('pred-kind')} {pred_kind!r}")
    return np.exp(lp), lp


@loss(
    name="entropy",
    family="classification",
    summary="Shannon entropy of each predicted distribution (prediction uncertainty; no target).",
    inputs=(
        Role(
            "pred",
            "(N, C)",
            f"A distribution per row: logits, probabilities or log-probabilities ({opt('pred-kind')}).",
            ndim=(2,),
        ),
    ),
    params=(
        Param(
            "base",
            "float",
            math.e,
            "Logarithm base: e gives nats, 2 gives bits. Must be > 0 and not 1.",
            low=0.0,
            low_open=True,
            high_open=True,
            exclude=(1.0,),
        ),
        Param(
            "pred-kind",
            "choice",
            "logits",
            "What the prediction columns hold: raw logits (softmax applied inside), probabilities, "
            "or log-probabilities. Never guessed from the values.",
            choices=("logits", "probs", "log-probs"),
        ),
    ),
    kernel_options=("prob_atol",),
    reference=(
        "scipy.stats.entropy(p, base=base, axis=1) on probability rows "
        "(SciPy renormalises rows; lossctl validates that they sum to 1 instead)"
    ),
    formula="H(p_n) = -Σ_c p_nc · log p_nc / log(base),  0 · log 0 = 0,  p = softmax(x) for logits",
    headline="the mean entropy over samples",
    gradient=(
        "logits: ∂H/∂x_c = -p_c (log p_c + H); probs: -(log p_c + 1); "
        "log-probs: -p_c (log p_c + 1); all divided by log(base)"
    ),
    properties=(
        "Bounded: 0 <= H <= log(C) / log(base); 0 for a one-hot prediction, maximal for the uniform one.",
        "Needs no target: measures how uncertain the model is, not whether it is right.",
        "Concave in p; from logits it is computed with log-softmax, finite for any finite logits.",
        "Equals cross-entropy of the prediction with itself, CE(p, p).",
    ),
    used_for="Uncertainty estimation, entropy regularisation / minimisation, active learning, calibration checks.",
    activation="softmax over the class axis for logits; none for probabilities",
    paper="Shannon 1948, A Mathematical Theory of Communication.",
    example=("sample_data/classification_probs.csv:p_*", f"{opt('pred-kind')}", "probs", f"{opt('base')}", "2"),
)
def entropy(
    pred: np.ndarray,
    *,
    base: float = math.e,
    pred_kind: str = "logits",
    prob_atol: float | None = None,
) -> Result:
    """Shannon entropy of each predicted distribution: ``H(p) = -Σ_c p_c log p_c / log(base)``.

    ``0 · log 0 = 0``. From logits, ``log p`` is the log-softmax (finite for any
    finite logits). Probability rows are validated, never renormalised
    (``scipy.stats.entropy`` renormalises).
    """
    lb = _log_base(base)
    p, lp = _entropy_logp(pred, pred_kind, prob_atol)
    h = -_xlogy_rows(p, lp)
    if lb != 1.0:
        h = h / lb
    return Result(loss=h + 0.0)  # + 0.0 turns -0.0 into 0.0


def entropy_grad(
    pred: np.ndarray,
    *,
    base: float = math.e,
    pred_kind: str = "logits",
    prob_atol: float | None = None,
) -> np.ndarray:
    """Gradient of H w.r.t. the prediction, divided by log(base).

    logits: ``-p_c (log p_c + H)``; probs: ``-(log p_c + 1)`` (+inf at p_c = 0;
    the derivative of the formula, not projected onto the simplex);
    log-probs: ``-p_c (log p_c + 1)`` (0 at log p_c = -inf).
    """
    lb = _log_base(base)
    p, lp = _entropy_logp(pred, pred_kind, prob_atol)
    if pred_kind == "logits":
        h = -_xlogy_rows(p, lp)
        g = np.zeros_like(p)  # p log p → 0: a class of probability 0 (log p = -inf) has gradient 0
        np.multiply(-p, lp + h[:, None], out=g, where=p > 0)
    elif pred_kind == "probs":
        g = -(lp + 1.0)
    else:
        g = np.zeros_like(lp)
        np.multiply(-p, lp + 1.0, out=g, where=p > 0)
    return g / lb


# ---------------------------------------------------------------------------
# token-cross-entropy (language modelling)
# ---------------------------------------------------------------------------


def _token_log_probs(pred):
    """Per-token log-probabilities as a Ragged, validated (values <= 0, -inf allowed)."""
    from lossctl.ragged import Ragged

    r = (
        pred
        if isinstance(pred, Ragged)
        else Ragged(
            np.asarray(pred).reshape(-1), np.arange(len(pred) + 1, dtype=np.int64) * (pred.shape[1] if len(pred) else 0)
        )
    )
    v = np.asarray(r.values, dtype=np.float64)
    bad = np.isnan(v) | (v > 0)
    if bad.any():
        rows = first_rows(r.sum_rows(bad.astype(np.float64)) > 0)
        first = v[np.flatnonzero(bad)[0]]
        raise InputError(
            "pred",
            f"per-token log-probability {float(first):.9g} above 0 (or NaN)",
            rows,
            expected="per-token log-probabilities log p(token) <= 0",
        )
    return r, v


def _token_mode(pred, target):
    if getattr(pred, "is_ragged", False) and np.ndim(pred.values) == 2:
        if target is None:
            raise InputError(
                "pred",
                "ragged logits (one (T_n, V) list of logit vectors per sequence) need labels as the second input",
                [],
                expected="labels after the logits: one list of T_n token ids per sequence",
            )
        return "ragged-logits"
    if getattr(pred, "is_ragged", False) or np.ndim(pred) == 2:
        if target is not None:
            raise InputError(
                "target",
                "labels are given, but the prediction holds per-token log-probabilities (N, T), "
                "which already score the observed tokens",
                [],
                expected="no labels with per-token log-probabilities, or (N, T, V) logits with labels",
            )
        return "logprobs"
    if np.ndim(pred) == 3:
        if target is None:
            raise InputError(
                "pred",
                "(N, T, V) logits need labels (N, T) as the second input",
                [],
                expected="labels (N, T) after the logits",
            )
        return "logits"
    raise InputError(
        "pred",
        f"shape {np.shape(pred)} is neither (N, T, V) logits nor (N, T) per-token log-probabilities",
        [],
        expected="logits (N, T, V) with labels (N, T), or per-token log-probabilities (N, T)",
    )


class _Tokens:
    """The scored tokens of a batch of sequences, flat: which logit row scores which label.

    ``x`` (M, V) logits of every position; ``pick`` the positions scored (all of them, or with
    --shift every position but each sequence's last); ``y`` the label each scored position
    predicts (the next token's with --shift); ``offsets`` the scored tokens of each sequence;
    ``keep`` False at labels equal to --ignore-index; ``pos`` the index of the predicted token
    in its sequence."""

    def __init__(self, pred, target, ignore_index, shift: bool):
        from lossctl.ragged import Ragged

        if isinstance(pred, Ragged):
            x = as_float(np.asarray(pred.values))
            lengths = pred.lengths
            n = len(pred)
        else:
            a = as_float(np.asarray(pred))
            n, t, v = a.shape
            x = a.reshape(n * t, v)
            lengths = np.full(n, t, dtype=np.int64)
        v = x.shape[1] if x.ndim == 2 else 0
        if isinstance(target, Ragged):
            if len(target) != n:
                raise InputError("target", f"{len(target)} label sequences for {n} sequences of logits", [])
            tl = target.lengths
            y_all = np.asarray(target.values)
        else:
            yt = np.asarray(target)
            if yt.ndim != 2 or len(yt) != n:
                raise InputError(
                    "target",
                    f"labels have shape {yt.shape}, not one list of token ids per sequence",
                    [],
                    expected="labels (N, T): one token id per token of each sequence",
                )
            tl = np.full(n, yt.shape[1], dtype=np.int64)
            y_all = yt.reshape(-1)
        if (tl != lengths).any():
            bad = first_rows(tl != lengths)
            i = bad[0]
            raise InputError(
                "target",
                f"sequence of {int(lengths[i])} tokens of logits but {int(tl[i])} labels",
                bad,
                expected="one label per token: as many labels as logit vectors in each sequence"
                + (f" (with {opt('shift')}, the input ids themselves)" if shift else ""),
            )
        if y_all.dtype.kind not in "biuf":
            raise InputError("target", f"labels have type {y_all.dtype}", [], expected="integer token ids")
        row_of = np.repeat(np.arange(n), lengths)
        starts = np.zeros(n + 1, dtype=np.int64)
        np.cumsum(lengths, out=starts[1:])
        pos_all = np.arange(len(row_of)) - starts[row_of]
        yi, valid, nonint = label_values(y_all, v, ignore_index)
        if nonint.any():
            j = int(np.flatnonzero(nonint)[0])
            raise InputError(
                "target",
                f"label {float(y_all[j]):.9g} at token {int(pos_all[j])} is not an integer",
                first_rows(np.bincount(row_of[nonint], minlength=n) > 0),
                expected="integer token ids",
            )
        if not valid.all():
            j = int(np.flatnonzero(~valid)[0])
            raise InputError(
                "target",
                f"label {label_text(y_all[j])} at token {int(pos_all[j])} out of range [0, {v}) "
                f"(ignore-index is {ignore_index})",
                first_rows(np.bincount(row_of[~valid], minlength=n) > 0),
                expected=f"token ids in [0, {v}) for a vocabulary of {v} logits",
            )
        if shift:  # position t predicts token t + 1: logits[:, :-1] against labels[:, 1:]
            scored = pos_all < (lengths[row_of] - 1)
            self.pick = np.flatnonzero(scored)
            y = yi[self.pick + 1]
            keep = valid[self.pick + 1] & (y_all[self.pick + 1] != ignore_index if ignore_index is not None else True)
            self.pos = pos_all[self.pick] + 1
            counts = np.maximum(lengths - 1, 0)
        else:
            self.pick = np.arange(len(row_of))
            y = yi
            keep = (y_all != ignore_index) if ignore_index is not None else np.ones(len(yi), dtype=bool)
            self.pos = pos_all
            counts = lengths
        self.keep = np.asarray(keep, dtype=bool)
        self.y = np.where(self.keep, y, 0)
        self.offsets = np.zeros(n + 1, dtype=np.int64)
        np.cumsum(counts, out=self.offsets[1:])
        self.n, self.v, self.x, self.lengths = n, v, x, lengths
        self.padded = not isinstance(pred, Ragged)
        self.pred = pred
        xs = x[self.pick]
        if not np.isfinite(xs).all():
            bad = ~np.isfinite(xs).all(axis=1)
            rows = np.repeat(np.arange(n), counts)
            raise InputError(
                "pred",
                "non-finite value in logits",
                first_rows(np.bincount(rows[bad], minlength=n) > 0),
                expected="finite logits",
            )
        self.xs = xs

    def losses(self) -> np.ndarray:
        """-log softmax(x_t)[y_t] per scored token, 0 at ignored ones (float64)."""
        if not len(self.xs):
            return np.zeros(0, dtype=np.float64)
        m, log_s = logsumexp_parts(self.xs)
        tok = log_s + (m - self.xs[np.arange(len(self.xs)), self.y].astype(np.float64))
        return np.where(self.keep, tok, 0.0)

    def per_sequence(self, values: np.ndarray) -> np.ndarray:
        from lossctl.ragged import Ragged

        return Ragged(values, self.offsets).sum_rows()

    def grad(self) -> np.ndarray:
        """∂l_n/∂x: (softmax(x_t) - onehot(y_t)) / n_tokens(n) at kept scored tokens, 0 elsewhere."""
        from lossctl.ragged import Ragged

        g = np.zeros(self.x.shape, dtype=np.float64)
        count = self.per_sequence(self.keep.astype(np.float64))
        if len(self.xs):
            gs = softmax_minus_onehot(log_softmax64(self.xs), self.y)
            rows = np.repeat(np.arange(self.n), np.diff(self.offsets))
            scale = np.where(self.keep, 1.0 / np.maximum(count, 1)[rows], 0.0)
            g[self.pick] = gs * scale[:, None]
        if self.padded:
            return g.reshape(np.shape(self.pred))
        return Ragged(g, self.pred.offsets)


@loss(
    name="token-cross-entropy",
    aliases=("lm",),
    tokens="token_cross_entropy_tokens",
    family="classification",
    summary="Language-model token cross-entropy per sequence, with the token-weighted mean and perplexity.",
    inputs=(
        Role(
            "pred",
            "(N, T, V) or (N, T) ragged",
            "Logits (N, T, V) with labels, ragged logits (one list of T_n logit vectors of length V per "
            "sequence) with ragged labels, or per-token log-probabilities log p(token) "
            "(N, T): one list per sequence, lengths may differ.",
            ndim=(2, 3),
            ragged=True,
        ),
        Role(
            "target",
            "(N, T) or (N, T) ragged",
            "Token ids (N, T), or one list of T_n ids per sequence with ragged logits; required with "
            "logits, absent with per-token log-probabilities. "
            f"Tokens equal to {opt('ignore-index')} (padding) are skipped.",
            ndim=(2,),
            dtype="label",
            optional=True,
            ragged=True,
        ),
    ),
    params=(
        Param(
            "ignore-index",
            "int",
            -100,
            "Label of tokens to skip (padding, prompt tokens); they count neither in the loss nor in the token count.",
        ),
        Param(
            "shift",
            "bool",
            False,
            "Labels are the input ids: position t predicts token t+1 (logits[:, :-1] against labels[:, 1:], "
            "as Hugging Face causal LMs compute their loss); each sequence's last position is not scored.",
        ),
    ),
    kernel_options=("extras",),
    reference=(
        "torch.nn.functional.cross_entropy(logits.view(-1, V), labels.view(-1), ignore_index=-100) "
        "(the headline); perplexity = exp of it"
    ),
    formula=(
        "per token:    l_t = -log softmax(x_t)[y_t]   (logits), or -log p(token_t) (per-token log-probs)\n"
        f"{opt('shift')}:      l_t = -log softmax(x_t)[y_{{t+1}}], t < T_n - 1   (labels = input ids)\n"
        "per sequence: l_n = Σ_{t kept} l_t / n_tokens(n)\n"
        "headline:     Σ_n Σ_t l_t / Σ_n n_tokens(n);  perplexity = exp(headline)"
    ),
    headline=(
        "the token-weighted mean: total token loss / total non-ignored tokens "
        "(= F.cross_entropy over all tokens); sequences without tokens are ignored rows"
    ),
    gradient=(
        "logits: ∂l_n/∂x_t = (softmax(x_t) - onehot(y_t)) / n_tokens(n) at kept tokens, 0 elsewhere; "
        "per-token log-probs: ∂l_n/∂log p_t = -1 / T_n"
    ),
    properties=(
        "Non-negative and unbounded; exp(headline) is the perplexity (1 = perfect, V = uniform guessing).",
        "The headline weights sequences by their token counts; the per-sequence mean weights each sequence equally.",
        "Computed with log-sum-exp over the vocabulary: finite and exact for logits of ±1e4.",
        "Per-token log-probabilities must be <= 0 (log p of the observed token).",
    ),
    used_for="Language modelling (next-token prediction), sequence-to-sequence models, LM evaluation (perplexity).",
    activation="softmax over the vocabulary (applied inside the loss to logits)",
    paper="Standard maximum-likelihood language modelling; perplexity: Jelinek et al. 1977.",
    example=("sample_data/classification_tokens.parquet:logprobs",),
    derived=("perplexity",),
)
def token_cross_entropy(
    pred,
    target=None,
    *,
    ignore_index: int = -100,
    shift: bool = False,
    extras: bool = False,
) -> Result:
    """Token-level cross-entropy of a language model, one value per sequence.

    Input forms:
      * ``pred`` logits ``[N, T, V]`` and ``target`` labels ``[N, T]``: per-token
        ``-log softmax(x_t)[y_t]``; tokens labelled ``ignore_index`` are skipped.
      * ``pred`` ragged logits (a Ragged of ``(T_n, V)`` rows) and ragged labels (``T_n``
        per sequence).
      * ``pred`` per-token log-probabilities ``log p(token)`` as a Ragged (or
        ``[N, T]``), no target: per-token ``-log p``.

    ``shift`` (logits only): labels are the input ids, and position t predicts token t + 1
    (Hugging Face causal LMs: ``logits[:, :-1]`` against ``labels[:, 1:]``).

    Per sequence: the mean over its scored, non-ignored tokens. Headline: the
    token-weighted mean (``num`` = Σ token losses, ``den`` = token count), which
    equals ``F.cross_entropy(logits.view(-1, V), labels.view(-1))``; a sequence
    without tokens is an ignored row. ``extras`` adds the per-sequence ``tokens``.
    """
    mode = _token_mode(pred, target)
    if mode == "logits" or mode == "ragged-logits":
        toks = _Tokens(pred, target, ignore_index, shift)
        num = toks.per_sequence(toks.losses())
        den = toks.per_sequence(toks.keep.astype(np.float64))
    else:
        _no_shift(shift)
        r, v = _token_log_probs(pred)
        num = -r.sum_rows(v) + 0.0
        den = r.lengths.astype(np.float64)
    empty = den == 0
    with np.errstate(invalid="ignore", divide="ignore"):
        loss = np.where(empty, 0.0, num / np.where(empty, 1.0, den))
    result = Result(loss=loss, num=num, den=den, ignored=empty if empty.any() else None)
    if extras:
        result.columns = {"tokens": den.astype(np.int64)}
    return result


def token_cross_entropy_tokens(pred, target=None, *, ignore_index: int = -100, shift: bool = False) -> dict:
    """One entry per scored token (ignored tokens left out): ``row`` (the sequence's index in
    the batch), ``position`` (the token's index in its sequence; with ``shift`` the predicted
    token t + 1), ``token`` (its id; -1 for per-token log-probabilities, which carry none) and
    ``loss`` (-log p of the token, float64)."""
    mode = _token_mode(pred, target)
    if mode == "logits" or mode == "ragged-logits":
        toks = _Tokens(pred, target, ignore_index, shift)
        rows = np.repeat(np.arange(toks.n), np.diff(toks.offsets))
        k = toks.keep
        return {"row": rows[k], "position": toks.pos[k], "token": toks.y[k], "loss": toks.losses()[k]}
    _no_shift(shift)
    r, v = _token_log_probs(pred)
    rows = r.row_ids()
    return {
        "row": rows,
        "position": np.arange(len(rows)) - r.offsets[rows],
        "token": np.full(len(rows), -1, dtype=np.int64),
        "loss": -v + 0.0,
    }


def _no_shift(shift: bool) -> None:
    if shift:
        raise ParamError(
            "shift",
            f"{opt('shift')} applies to logits with labels (the input ids); per-token log-probabilities already "
            "score each observed token, so there is nothing to shift"
        )


def token_cross_entropy_grad(pred, target=None, *, ignore_index: int = -100, shift: bool = False):
    """∂l_n/∂pred_n.

    logits ``[N, T, V]`` (or ragged): ``(softmax(x_t) - onehot(y_t)) / n_tokens(n)`` at
    scored, non-ignored tokens, 0 elsewhere (with ``shift``, each sequence's last position is
    not scored). Per-token log-probabilities: ``-1/T_n`` for each token (a Ragged with the
    input's offsets; an array for a 2-D input).
    """
    from lossctl.ragged import Ragged

    mode = _token_mode(pred, target)
    if mode == "logits" or mode == "ragged-logits":
        return _Tokens(pred, target, ignore_index, shift).grad()
    _no_shift(shift)
    r, _ = _token_log_probs(pred)
    lengths = r.lengths
    per_row = -1.0 / np.maximum(lengths, 1)
    values = per_row[r.row_ids()].astype(np.float64)
    if isinstance(pred, Ragged):
        return r.with_values(values)
    return values.reshape(np.shape(pred))

