"""Classification losses: cross-entropy, binary cross-entropy.

Shapes use N for rows (samples) and C for classes. All values returned are
per-sample float64 arrays of shape ``[N]``.

References:
    PyTorch ``torch.nn.functional.cross_entropy`` and
    ``binary_cross_entropy(_with_logits)`` (2.x): parameter names, defaults and
    the weighted-mean rule are theirs.
"""

from __future__ import annotations

import numpy as np

from lossctl.errors import InputError, ParamError
from lossctl.losses import Result
from lossctl.losses._common import (
    as_float,
    check_finite,
    check_log_probs,
    check_probs,
    check_unit_interval,
    class_indices,
    log_softmax64,
    logsumexp_parts,
    per_output,
    same_shape,
    sigmoid,
)

# ---------------------------------------------------------------------------
# cross-entropy
# ---------------------------------------------------------------------------


def _class_weight(weight, n_classes: int) -> np.ndarray | None:
    if weight is None:
        return None
    w = np.asarray(weight, dtype=np.float64).ravel()
    if w.shape != (n_classes,):
        raise ParamError(
            "weight",
            f"--weight has {w.size} value(s) but the predictions have {n_classes} classes (columns)",
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
                "--ignore-index is not supported with soft (probability) targets",
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

    if pred_kind == "logits":
        check_finite(x, "pred", "logits")
        m, log_s = logsumexp_parts(x)
        # -log softmax(x)[y] = log Σ exp(x - m) + (m - x_y): no cancellation of a large m.
        nll = log_s + (m - x[rows, ys].astype(np.float64))
        if eps > 0:
            xs = x.astype(np.float64)
            wsum = float(n_classes) if w is None else float(w.sum())
            xw = xs.sum(axis=1) if w is None else xs @ w
            smooth = wsum * log_s + (wsum * m - xw)  # Σ_c w_c (lse - x_c)
    else:
        logq = _log_probs(x, pred_kind, prob_atol)
        nll = -logq[rows, ys]
        if eps > 0:
            if w is None:
                smooth = -logq.sum(axis=1)
            else:
                smooth = -_xlogy_rows(np.broadcast_to(w, logq.shape), logq)

    wy = np.ones(n) if w is None else w[ys]
    loss = wy * nll
    if eps > 0:
        loss = (1.0 - eps) * loss + (eps / n_classes) * smooth
    loss[ignored] = 0.0
    den = np.where(ignored, 0.0, wy)
    result = Result(loss=loss, den=den, ignored=ignored if ignored.any() else None)
    if extras:
        p_true = np.exp(-nll)
        p_true[ignored] = np.nan
        result.columns = {"p_true": p_true, "pred_class": np.argmax(x, axis=1)}
    return result


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
    loss = elem if elem.ndim == 1 else elem.mean(axis=1)
    result = Result(loss=np.ascontiguousarray(loss, dtype=np.float64))
    if extras and x.ndim == 1:
        if p is None:
            p = sigmoid(x)
        result.columns = {
            "p_true": y * p + (1.0 - y) * (1.0 - p),
            "pred_class": (p >= 0.5).astype(np.int64),
        }
    return result


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
