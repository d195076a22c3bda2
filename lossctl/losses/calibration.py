"""Calibration measures: ece (expected calibration error: ECE, RMS, MCE) and brier.

A reliability table is a function of per-bin sums (rows, Σ confidence, Σ correct); the bins
and the per-row components kernels hand the engine are in ``_classes`` (shared with the
reliability table of cross-entropy, nll, binary cross-entropy and focal).
"""

from __future__ import annotations

import math

from lossctl.losses._lazy import lazy

from lossctl.errors import InputError, ParamError, opt
from lossctl.losses import Result
from lossctl.losses._common import as_float, check_unit_interval, class_indices, first_rows
from lossctl.losses.spec import loss, Param, Role
from lossctl.losses._classes import (
    PRED_KIND,
    TARGET_KIND,
    _log_probs,
    _soft_target,
    QUANTILE_FINE_BINS,
    _rel_components,
    _top_label,
    _positive_prob,
    reliability_multiclass,
    reliability_log_probs,
    reliability_binary,
)

np = lazy(globals())  # NumPy is imported on first use (lossctl/losses/_lazy.py)

# ---------------------------------------------------------------------------
# calibration: reliability bins, expected calibration error, Brier score
# ---------------------------------------------------------------------------



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
