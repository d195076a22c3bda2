"""Regression losses on residuals ``r = y - ŷ``.

Inputs are ``[N]`` or ``[N, D]``; for ``[N, D]`` the per-sample value is the
mean over D, so the mean over samples equals PyTorch's element-wise mean.
Computed in float64.
"""

from __future__ import annotations

import numpy as np

from lossctl.losses import Result
from lossctl.losses._common import check_finite, same_shape


def residual(pred: np.ndarray, target: np.ndarray) -> np.ndarray:
    """``y - ŷ`` in float64 after shape checks; both inputs must be finite."""
    x, y = same_shape(pred, target)
    check_finite(x, "pred", "predictions")
    check_finite(y, "target", "targets")
    return np.subtract(y, x, dtype=np.float64)


def _per_sample(elem: np.ndarray) -> np.ndarray:
    return elem if elem.ndim == 1 else elem.mean(axis=1)


def _per_sample_grad(g: np.ndarray, pred: np.ndarray) -> np.ndarray:
    if g.ndim == 2:
        g = g / g.shape[1]
    return g.reshape(np.shape(pred))


def mse(pred: np.ndarray, target: np.ndarray) -> Result:
    """Squared error ``r²`` per sample (``torch.nn.functional.mse_loss``)."""
    r = residual(pred, target)
    np.multiply(r, r, out=r)
    return Result(loss=_per_sample(r))


def mse_grad(pred: np.ndarray, target: np.ndarray) -> np.ndarray:
    """``∂r²/∂ŷ = -2r``."""
    return _per_sample_grad(-2.0 * residual(pred, target), pred)


def mae(pred: np.ndarray, target: np.ndarray) -> Result:
    """Absolute error ``|r|`` per sample (``torch.nn.functional.l1_loss``)."""
    r = residual(pred, target)
    np.abs(r, out=r)
    return Result(loss=_per_sample(r))


def mae_grad(pred: np.ndarray, target: np.ndarray) -> np.ndarray:
    """``∂|r|/∂ŷ = -sign(r)`` (0 at r = 0)."""
    return _per_sample_grad(-np.sign(residual(pred, target)), pred)
