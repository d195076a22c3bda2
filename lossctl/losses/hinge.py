"""hinge: the multi-class margin loss of ``torch.nn.functional.multi_margin_loss``.

For class scores ``x_n`` (C columns) and a target class ``y_n``::

    l_n = (1/C) · Σ_{i ≠ y_n} w[y_n] · max(0, margin - x_n[y_n] + x_n[i])^p,   p ∈ {1, 2}

the Weston & Watkins (1999) sum over the wrong classes, divided by C (not C - 1) and scaled by
the weight of the *target* class (w ≡ 1 without weights), exactly as PyTorch. The headline mean
is the plain mean over rows (PyTorch divides the sum by N, never by Σ w[y_n]).

The gradient follows PyTorch's convention at the hinge: a term counts only where
``margin - x_y + x_i > 0`` strictly, so at exactly 0 it contributes neither value nor gradient.
Everything is computed in float64; rows never interact, so chunking cannot change a value.
"""

from __future__ import annotations

import math


from lossctl.errors import InputError, opt
from lossctl.losses import Result
from lossctl.losses._common import check_finite, first_rows, label_text, label_values
from lossctl.losses._lazy import lazy
from lossctl.losses._classes import CLASSES, _class_weight
from lossctl.losses.spec import Param, Role, loss

np = lazy(globals())  # NumPy is imported on first use (lossctl/losses/_lazy.py)


def _power(p) -> int:
    value = int(p)
    assert value in (1, 2), p  # declared as a choice of 1 or 2 and validated before the kernel
    return value


def _targets(target, n_classes: int) -> np.ndarray:
    """Class indices in [0, C) as int64; an error naming the first bad rows otherwise."""
    y = np.asarray(target)
    if y.ndim != 1:
        raise InputError(
            "target",
            f"hinge takes class indices, one per row; got shape {tuple(y.shape)}",
            [],
            expected="class indices (N,)",
        )
    if y.dtype.kind not in "biuf":
        raise InputError("target", f"class indices have type {y.dtype}", [], expected="integer class indices")
    yi, valid, nonint = label_values(y, n_classes, None)
    if nonint.any():
        rows = first_rows(nonint)
        raise InputError(
            "target",
            f"class index {label_text(y[rows[0]])} is not an integer",
            rows,
            expected="integer class indices",
        )
    if not valid.all():
        rows = first_rows(~valid)
        raise InputError(
            "target",
            f"class index {label_text(y[rows[0]])} out of range [0, {n_classes})",
            rows,
            expected=f"class indices in [0, {n_classes}) for {n_classes} prediction columns",
        )
    return yi


def _margins(pred, target, margin, weight):
    """(z, y, w[y] or None): z[n, i] = (margin - x_y) + x_i in float64 (PyTorch's order of
    operations), with z at the target column set to -inf so that it never counts."""
    x = np.asarray(pred)
    if x.ndim != 2:
        raise InputError("pred", f"class scores have {x.ndim} dimensions", [], expected="(N, C) class scores")
    n, n_classes = x.shape
    w = _class_weight(weight, n_classes)
    y = _targets(target, n_classes)
    if len(y) != n:
        raise InputError("target", f"{len(y)} class indices for {n} rows of scores", [], expected=f"{n} rows")
    check_finite(x, "pred", "class scores")
    x = np.asarray(x, dtype=np.float64)
    rows = np.arange(n)
    with np.errstate(over="ignore"):  # a gap beyond float64's range is +inf, as in PyTorch
        z = x + (float(margin) - x[rows, y])[:, None]
    z[rows, y] = -np.inf
    return z, y, (None if w is None else w[y])


@loss(
    name="hinge",
    aliases=("multi-margin",),
    family="classification",
    summary="Multi-class margin (hinge) loss on class scores, as PyTorch's multi_margin_loss.",
    inputs=(
        Role("pred", "(N, C)", "Class scores: one row per sample, one column per class (no softmax).", ndim=(2,)),
        Role("target", "(N,)", "Class indices in [0, C).", ndim=(1,), dtype="label"),
    ),
    params=(
        Param(
            "p",
            "choice",
            "1",
            "Exponent of each hinge term: 1 (hinge) or 2 (squared hinge).",
            choices=("1", "2"),
        ),
        Param(
            "margin",
            "float",
            1.0,
            "Required gap between the target's score and every other class's score.",
            low=-math.inf,
            high=math.inf,
            low_open=True,
            high_open=True,
        ),
        Param(
            "weight",
            "floats",
            None,
            "Class weights: C comma-separated numbers, or a file holding them (.npy, .json, text); "
            "each row's loss is multiplied by the weight of its target class.",
            low=0.0,
        ),
        CLASSES,
    ),
    reference="torch.nn.functional.multi_margin_loss(input, target, p, margin, weight)",
    formula=(
        "l_n = (1/C) · Σ_{i ≠ y_n} w[y_n] · max(0, margin - x_n[y_n] + x_n[i])^p,  p ∈ {1, 2}\n"
        "w ≡ 1 without weights; note the division by C (not C - 1) and the weight of the target class"
    ),
    headline="the mean over rows (PyTorch's reduction='mean': Σ l_n / N, not divided by Σ w[y_n] even with " + opt("weight") + ")",
    gradient=(
        "∂l_n/∂x_n[i] = w[y_n] · (1, or 2 z_i for p = 2) / C for i ≠ y_n with z_i = margin - x_n[y_n] + x_n[i] > 0, "
        "else 0 (0 at z_i = 0 exactly, as PyTorch); ∂l_n/∂x_n[y_n] = -Σ_{i ≠ y_n} ∂l_n/∂x_n[i]"
    ),
    properties=(
        "Non-negative; 0 once the target's score beats every other score by at least margin.",
        "Convex and piecewise linear (p = 1) or piecewise quadratic (p = 2) in the scores; "
        "unchanged when the same number is added to every score of a row.",
        "Scores are used as given: no softmax, so logits and any other real-valued scores work alike.",
        "With C = 1 every value is 0 (no other class).",
    ),
    used_for="Multi-class classification with SVM-style margins; robustness and adversarial-margin training.",
    activation="none: raw class scores (logits or any real-valued scores)",
    paper=(
        "Weston & Watkins 1999, Support vector machines for multi-class pattern recognition "
        "(the sum over wrong classes; Crammer & Singer 2001 take the max instead)."
    ),
    example=(
        "sample_data/classifier.csv:logit_*",
        "sample_data/classifier.csv:label",
        f"{opt('p')}",
        "2",
    ),
)
def hinge(pred: np.ndarray, target: np.ndarray, *, p="1", margin: float = 1.0, weight=None) -> Result:
    """Multi-class margin loss per sample (``torch.nn.functional.multi_margin_loss``, reduction='none').

    ``l_n = (1/C) Σ_{i≠y_n} w[y_n] · max(0, margin - x_n[y_n] + x_n[i])^p``, p = 1 or 2.

    Args:
      pred: class scores ``[N, C]`` (any real numbers; no softmax is applied).
      target: class indices ``[N]`` in ``[0, C)``.
      p: 1 (hinge) or 2 (squared hinge).
      margin: the required gap between the target's score and every other score.
      weight: optional class weights ``[C]``; row n is scaled by ``weight[y_n]``.

    Returns:
      ``Result`` whose ``loss`` has shape ``[N]``; the headline mean is the plain mean over rows.
    """
    power = _power(p)
    z, _, wy = _margins(pred, target, margin, weight)
    n_classes = z.shape[1]
    h = np.maximum(z, 0.0)  # 0 at the target column (z = -inf) and wherever z <= 0
    if power == 2:
        with np.errstate(over="ignore"):
            np.multiply(h, h, out=h)
    total = np.add.reduce(h, axis=1)
    if wy is not None:
        # w[y] multiplies only terms that count (PyTorch): a row with no active term is 0 whatever w[y]
        # (and a weight of 0 gives 0 even where the sum overflowed to inf, where PyTorch gets NaN)
        with np.errstate(invalid="ignore"):
            total = np.where((total > 0) & (wy > 0), wy * total, 0.0)
    return Result(loss=total / n_classes)


def hinge_grad(pred: np.ndarray, target: np.ndarray, *, p="1", margin: float = 1.0, weight=None) -> np.ndarray:
    """∂l_n/∂x_n, shape ``[N, C]``, float64.

    For i ≠ y with z_i = margin - x_y + x_i > 0: ``w[y] · (1 if p = 1 else 2 z_i) / C``; 0 where
    z_i <= 0 (PyTorch's choice at the kink z_i = 0). At the target: minus the sum of the others.
    """
    power = _power(p)
    z, y, wy = _margins(pred, target, margin, weight)
    n, n_classes = z.shape
    active = z > 0
    with np.errstate(over="ignore"):
        g = (2.0 * z if power == 2 else np.ones_like(z)) / n_classes
    if wy is not None:
        active &= (wy > 0)[:, None]  # a weight of 0 gives 0, also where 2z overflowed to inf
        with np.errstate(invalid="ignore"):  # inf · 0 only where the term does not count
            g = g * wy[:, None]
    g = np.where(active, g, 0.0)
    rows = np.arange(n)
    g[rows, y] = 0.0 - np.add.reduce(g, axis=1)  # (+0, not -0, for a row with no active term)
    return g
