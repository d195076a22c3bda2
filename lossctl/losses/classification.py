"""Classification losses: cross-entropy, binary cross-entropy, nll, focal.

The calibration measures (ece, brier) are in ``calibration``, softmax-focal, entropy and
token-cross-entropy in ``softmax``; the declarations they share (class scores, class weights,
ignore-index, class names) and the reliability bins in ``_classes``, importable from here.

Shapes use N for rows (samples) and C for classes. All values returned are
per-sample float64 arrays of shape ``[N]``.

References:
    PyTorch ``torch.nn.functional.cross_entropy`` and
    ``binary_cross_entropy(_with_logits)`` (2.x): parameter names, defaults and
    the weighted-mean rule are theirs.
"""

from __future__ import annotations

from lossctl.losses._lazy import lazy

from lossctl.errors import ParamError, opt
from lossctl.losses import Result
from lossctl.losses._common import (
    as_float,
    check_finite,
    check_log_probs,
    check_unit_interval,
    class_indices,
    element_rows,
    exp_diff,
    logsumexp_parts,
    per_output,
    same_shape,
    sigmoid,
    softmax_rows,
)
from lossctl.losses.spec import HEADLINE_ELEM_SUM, HEADLINE_MEAN, loss, Param, Role
from lossctl.losses._bce_blocked import _bce_logits_fast
from lossctl.losses._classes import (  # noqa: F401 - shared; the reliability hooks are named below
    PRED_KIND,
    TARGET_KIND,
    CLASS_WEIGHT,
    IGNORE_INDEX,
    CLASSES,
    PRED_CN,
    TARGET_CE,
    _fast_rows,
    _class_weight,
    _log_probs,
    _soft_target,
    _xlogy_rows,
    _index_target,
    _log_sigmoid,
    RELIABILITY_BINS,
    QUANTILE_FINE_BINS,
    reliability_multiclass,
    reliability_log_probs,
    reliability_binary,
)

np = lazy(globals())  # NumPy is imported on first use (lossctl/losses/_lazy.py)

# ---------------------------------------------------------------------------
# cross-entropy
# ---------------------------------------------------------------------------


def _cross_entropy_soft(
    x, target, w, eps: float, ignore_index, pred_kind: str, target_kind: str, prob_atol, extras: bool
) -> Result:
    """Cross-entropy against soft (N, C) targets, with its entropy / KL components."""
    n, n_classes = x.shape
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


def _cross_entropy_nll(x, ys, w, eps: float, pred_kind: str, prob_atol):
    """(-log q_y per row, the label-smoothing sum Σ_c w_c (-log q_c) or None, the row argmax
    when the blocked kernel found it) for index targets ``ys`` (ignored rows mapped to 0)."""
    n, n_classes = x.shape
    rows = np.arange(n)
    smooth = None
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
    return nll, smooth, argmax


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
        return _cross_entropy_soft(x, target, w, eps, ignore_index, pred_kind, target_kind, prob_atol, extras)

    y = class_indices(target, "target", n_classes, ignore_index)
    ignored = y == ignore_index if ignore_index is not None else np.zeros(n, dtype=bool)
    ys = np.where(ignored, 0, y)
    nll, smooth, argmax = _cross_entropy_nll(x, ys, w, eps, pred_kind, prob_atol)

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
