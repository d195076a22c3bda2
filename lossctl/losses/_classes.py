"""Declarations and helpers shared by the classification-family modules (classification,
calibration, softmax): the class-score inputs and options, validated log-probabilities and soft
targets, class-index targets, and the reliability bins behind the reliability table.

Private: the registry collects no loss from here; the declarations stay importable from
``lossctl.losses.classification``.
"""

from __future__ import annotations

from lossctl.losses._lazy import lazy

from lossctl.errors import InputError, ParamError, opt
from lossctl.losses._common import (
    as_float,
    check_finite,
    check_log_probs,
    check_probs,
    check_unit_interval,
    class_indices,
    log_softmax64,
    sigmoid,
    softmax_rows,
)
from lossctl.losses.spec import loss, Param, Role

np = lazy(globals())  # NumPy is imported on first use (lossctl/losses/_lazy.py)

# Declarations shared by the classification-family losses ----------------------------------------

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


def _index_target(target, n_classes: int, ignore_index, loss: str) -> np.ndarray:
    if getattr(target, "ndim", 1) != 1:
        raise InputError(
            "target",
            f"{loss} takes class indices, one per row; got shape {tuple(np.shape(target))}",
            [],
            expected="class indices (N,)",
        )
    return class_indices(np.asarray(target), "target", n_classes, ignore_index)



def _log_sigmoid(x: np.ndarray) -> np.ndarray:
    """log σ(x) = -softplus(-x), stable for any finite x."""
    return -(np.maximum(-x, 0.0) + np.log1p(np.exp(-np.abs(x))))


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


def _top_label(pred, target, pred_kind: str, prob_atol, fast: bool = False):
    """Top-label confidence max_c q_c and correctness argmax_c q_c == y of index targets.
    ``fast``: logits through the blocked row pieces (the reliability table of a default report;
    equal to the materialised log-softmax up to the last bit of a sum's order)."""
    x = as_float(pred)
    y = np.asarray(target).astype(np.int64, copy=False)
    if fast and pred_kind == "logits" and x.ndim == 2 and x.shape[0] and x.shape[1]:
        # max_c softmax = exp(-log_s) (the top class's x - m is exactly 0): the row pieces in
        # float64, blocked and threaded, without materialising the (N, C) log-softmax
        check_finite(x, "pred", "logits")
        r = softmax_rows(np.asarray(x, dtype=np.float64))
        return np.exp(-r.log_s), r.argmax == y
    logq = _log_probs(x, pred_kind, prob_atol)
    top = np.argmax(logq, axis=1)
    conf = np.exp(logq[np.arange(len(top)), top])
    return conf, top == y


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
    conf, hit = _top_label(pred, target, pred_kind, prob_atol, fast=True)
    return _rel_components(conf, hit, RELIABILITY_BINS)


def reliability_log_probs(pred, target, *, prob_atol=None, **_) -> dict[str, np.ndarray]:
    return reliability_multiclass(pred, target, pred_kind="log-probs", prob_atol=prob_atol)


def reliability_binary(pred, target, *, pred_kind: str = "logits", **_) -> dict[str, np.ndarray]:
    """Reliability components of a binary classifier (N,): confidence P(y = 1), 'accuracy' the
    fraction of positives (as calibration_curve); none for multi-label (N, K) predictions."""
    if np.ndim(pred) != 1:
        return {}
    return _rel_components(_positive_prob(pred, pred_kind), np.asarray(target, dtype=np.float64), RELIABILITY_BINS)
