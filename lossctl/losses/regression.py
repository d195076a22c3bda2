"""Regression losses on residuals ``r = y - ŷ``.

Inputs are ``[N]`` or ``[N, D]``; for ``[N, D]`` the per-sample value is the
mean over D, and the headline parts are the row sum over D and the count D,
so ``mean`` is PyTorch's element-wise mean and ``sum`` PyTorch's element sum
(D times the sum of the per-sample values). Computed in float64.
"""

from __future__ import annotations

import math

from lossctl.losses._lazy import lazy

from lossctl.errors import InputError, opt
from lossctl.losses import Result
from lossctl.losses._common import (
    ELEM_BLOCK_ELEMS,
    _shape,
    _val,
    check_finite,
    constant,
    element_rows,
    first_rows,
    row_parts,
    row_sums_result,
    rows_per_block,
    same_shape,
    scratch,
)
from lossctl.losses.spec import HEADLINE_MEAN, loss, Param, Role

np = lazy(globals())  # NumPy is imported on first use (lossctl/losses/_lazy.py)

# Declarations shared by this module's losses ----------------------------------------

REGRESSION_PRED = Role("pred", "(N,) or (N, D)", "Predicted values ŷ.")

REGRESSION_TARGET = Role("target", "(N,) or (N, D)", "True values y, the prediction's shape.")

REGRESSION_PROPS_COMMON = "Multi-output (N, D): the per-sample value is the mean over D, so the overall mean equals PyTorch's element-wise mean."


def residual(pred: np.ndarray, target: np.ndarray) -> np.ndarray:
    """``y - ŷ`` in float64 after shape checks; both inputs must be finite."""
    x, y = same_shape(pred, target)
    check_finite(x, "pred", "predictions")
    check_finite(y, "target", "targets")
    return np.subtract(y, x, dtype=np.float64)


def _per_sample(elem: np.ndarray) -> Result:
    """Per-sample row means with the element sums as the headline parts (see ``element_rows``)."""
    return element_rows(elem)


def _per_sample_grad(g: np.ndarray, pred: np.ndarray) -> np.ndarray:
    if g.ndim == 2:
        g = g / g.shape[1]
    return g.reshape(np.shape(pred))


def _blocked(pred: np.ndarray, target: np.ndarray, op) -> Result | None:
    """Per-sample ``mean_d op(r)`` over row blocks in threads; None when the plain path must run.

    ``op(r, u)`` turns the float64 residuals ``r = y - ŷ`` of a block into the
    element losses in place (``u`` is a scratch of the same shape). The residual
    is formed exactly as ``residual`` does (both inputs cast to float64, then
    subtracted); for ``(N, D)`` the per-sample value is the row mean
    (``add.reduce`` along the row, then ``/ D``), computed from that row alone.
    ``op`` must give values >= 0 (or NaN). Finiteness is checked through the
    results; the exact checks (same errors, same rows) run only when a block's
    maximum is not finite.
    """
    x, y = same_shape(pred, target)
    if x.ndim not in (1, 2) or len(x) == 0 or x.size == 0 or x.dtype.kind not in "biuf" or y.dtype.kind not in "biuf":
        return None
    n = len(x)
    d = 1 if x.ndim == 1 else x.shape[1]
    x2 = x.reshape(n, d)
    y2 = y.reshape(n, d)
    loss = np.empty(n, dtype=np.float64)
    step = rows_per_block(d, ELEM_BLOCK_ELEMS)

    def part(start: int, stop: int) -> bool:
        rows = min(step, stop - start)
        r_buf = scratch("reg_r", (rows, d), np.float64)
        u_buf = scratch("reg_u", (rows, d), np.float64)
        bad = False
        with np.errstate(all="ignore"):
            for a in range(start, stop, step):
                b = min(a + step, stop)
                k = b - a
                r = loss[a:b].reshape(k, 1) if d == 1 else r_buf[:k]
                u = u_buf[:k]
                np.copyto(r, y2[a:b])
                np.copyto(u, x2[a:b])
                np.subtract(r, u, out=r)
                op(r, u)
                if d > 1:
                    np.add.reduce(r, axis=1, out=loss[a:b])  # the row sums (divided by d below)
                # Every op gives values >= 0, so the block maximum is finite unless a value is
                # NaN or inf (NaN propagates through maximum); cheaper than a sum.
                if not np.isfinite(np.maximum.reduce(loss[a:b])):
                    bad = True
        return bad

    if any(row_parts(n, n * d * 4, part)):
        check_finite(x, "pred", "predictions")
        check_finite(y, "target", "targets")
    return row_sums_result(loss, d)


def _op_square(r: np.ndarray, u: np.ndarray) -> None:
    np.multiply(r, r, out=r)


def _op_abs(r: np.ndarray, u: np.ndarray) -> None:
    np.abs(r, out=r)


def _op_huber(delta: float):
    """Huber ``s·(r - ½s)`` with ``s = clip(r, -δ, δ)``: ``½r²`` up to δ (``r - ½r`` is
    exact), ``δ·(|r| - ½δ)`` beyond. Bit for bit the plain path's ``q·(a - ½q)``
    (``a = |r|``, ``q = min(a, δ)``: the signs cancel exactly) in one pass fewer. The
    square never sees more than δ, so nothing overflows."""

    def op(r: np.ndarray, u: np.ndarray) -> None:
        v = scratch("reg_v", r.shape, np.float64)
        np.clip(r, -delta, delta, out=u)  # s
        np.multiply(u, 0.5, out=v)
        np.subtract(r, v, out=r)  # r - s/2, the sign of s
        np.multiply(r, u, out=r)

    return op


def _op_smooth_l1(beta: float):
    """Smooth L1 ``½q²/β + (a - q)``, ``q = min(a, β)``: ``½a²/β`` below β, ``a - ½β`` above
    (the linear part is exactly 0 below β)."""

    def op(r: np.ndarray, u: np.ndarray) -> None:
        np.abs(r, out=r)
        lim = constant("beta", r.size, beta).reshape(r.shape)
        np.minimum(r, lim, out=u)  # q
        np.subtract(r, u, out=r)  # a - q >= 0
        np.multiply(u, u, out=u)
        np.multiply(u, 0.5 / beta, out=u)
        np.add(r, u, out=r)

    return op


# Beyond this |r|, log cosh r = log cosh(T) + (|r| - T) to far below one ulp (e^{-2T}).
_LOG_COSH_LINEAR = 40.0


def _op_log_cosh(r: np.ndarray, u: np.ndarray) -> None:
    """``log1p(2 sinh²(a'/2)) + (a - a')``, ``a = |r|``, ``a' = min(a, 40)``: one formula
    with full relative precision from 0 up (within 2 ulp of the exact value) and no overflow."""
    np.abs(r, out=r)
    lim = constant("logcosh", r.size, _LOG_COSH_LINEAR).reshape(r.shape)
    np.minimum(r, lim, out=u)  # a'
    np.subtract(r, u, out=r)  # a - a'
    np.multiply(u, 0.5, out=u)
    np.sinh(u, out=u)
    np.multiply(u, u, out=u)
    np.multiply(u, 2.0, out=u)
    np.log1p(u, out=u)
    np.add(r, u, out=r)


@loss(
    name="mse",
    aliases=("l2",),
    family="regression",
    summary="Mean squared error.",
    inputs=(REGRESSION_PRED, REGRESSION_TARGET),
    params=(),
    reference="torch.nn.functional.mse_loss(input, target)",
    formula="l = r², r = y - ŷ (mean over D for (N, D))",
    headline=HEADLINE_MEAN,
    gradient="∂l/∂ŷ = -2r (divided by D for (N, D))",
    properties=(
        "Sensitive to outliers: the penalty grows with the square of the residual.",
        "Minimised by the conditional mean.",
        REGRESSION_PROPS_COMMON,
    ),
    used_for="Regression.",
    activation="none (identity output)",
    paper="Gauss / Legendre, least squares.",
    example=("sample_data/regression.csv:pred", "sample_data/regression.csv:target"),
)
def mse(pred: np.ndarray, target: np.ndarray) -> Result:
    """Squared error ``r²`` per sample (``torch.nn.functional.mse_loss``)."""
    fast = _blocked(pred, target, _op_square)
    if fast is not None:
        return fast
    r = residual(pred, target)
    np.multiply(r, r, out=r)
    return _per_sample(r)


def mse_grad(pred: np.ndarray, target: np.ndarray) -> np.ndarray:
    """``∂r²/∂ŷ = -2r``."""
    return _per_sample_grad(-2.0 * residual(pred, target), pred)


@loss(
    name="mae",
    aliases=("l1",),
    family="regression",
    summary="Mean absolute error.",
    inputs=(REGRESSION_PRED, REGRESSION_TARGET),
    params=(),
    reference="torch.nn.functional.l1_loss(input, target)",
    formula="l = |r|, r = y - ŷ (mean over D for (N, D))",
    headline=HEADLINE_MEAN,
    gradient="∂l/∂ŷ = -sign(r) (0 at r = 0; divided by D for (N, D))",
    properties=(
        "Robust to outliers: the penalty grows linearly with the residual.",
        "Minimised by the conditional median; not differentiable at r = 0.",
        REGRESSION_PROPS_COMMON,
    ),
    used_for="Regression, box coordinates in detection (L1 term).",
    activation="none (identity output)",
    paper="Laplace; least absolute deviations.",
    example=("sample_data/regression.csv:pred", "sample_data/regression.csv:target"),
)
def mae(pred: np.ndarray, target: np.ndarray) -> Result:
    """Absolute error ``|r|`` per sample (``torch.nn.functional.l1_loss``)."""
    fast = _blocked(pred, target, _op_abs)
    if fast is not None:
        return fast
    r = residual(pred, target)
    np.abs(r, out=r)
    return _per_sample(r)


def mae_grad(pred: np.ndarray, target: np.ndarray) -> np.ndarray:
    """``∂|r|/∂ŷ = -sign(r)`` (0 at r = 0)."""
    return _per_sample_grad(-np.sign(residual(pred, target)), pred)


# ---------------------------------------------------------------------------
# Robust losses with a threshold: Huber, smooth L1, log-cosh, quantile (pinball)
# ---------------------------------------------------------------------------


def _check_delta(delta: float) -> float:
    return float(delta)  # (its range, (0, inf], is declared and checked when parsed)


def _check_beta(beta: float) -> float:
    return float(beta)  # (declared: [0, inf]; 0 is exactly L1)


@loss(
    name="huber",
    family="regression",
    summary="Huber loss: quadratic for small residuals, linear beyond delta.",
    inputs=(REGRESSION_PRED, REGRESSION_TARGET),
    params=(
        Param(
            "delta",
            "float",
            1.0,
            "Threshold between the quadratic and the linear part (> 0).",
            low=0.0,
            low_open=True,
        ),
    ),
    reference="torch.nn.functional.huber_loss(input, target, delta=delta)",
    formula=(
        "l = ½r²             if |r| ≤ δ\nl = δ · (|r| - ½δ)   otherwise,   r = y - ŷ (mean over D for (N, D))"
    ),
    headline=HEADLINE_MEAN,
    gradient="∂l/∂ŷ = -clip(r, -δ, δ) (divided by D for (N, D))",
    properties=(
        "Between MSE and MAE: quadratic (MSE-like) near 0, linear (MAE-like, robust to outliers) beyond δ.",
        "Convex and once continuously differentiable; the second derivative jumps at |r| = δ.",
        "Symmetric in r; both branches give ½δ² at |r| = δ, so the loss is continuous there.",
        "Equals δ · smooth-l1(β = δ); identical to smooth-l1 at δ = β = 1.",
        "The gradient is bounded by δ, so single outliers cannot dominate training.",
        REGRESSION_PROPS_COMMON,
    ),
    used_for="Robust regression; value-function (TD) errors in reinforcement learning (DQN).",
    activation="none (identity output)",
    paper="Huber 1964, Robust Estimation of a Location Parameter.",
    example=("sample_data/regression.csv:pred", "sample_data/regression.csv:target", f"{opt('delta')}", "2"),
)
def huber(pred: np.ndarray, target: np.ndarray, *, delta: float = 1.0) -> Result:
    """``½r²`` if ``|r| ≤ δ`` else ``δ(|r| - ½δ)`` (``torch.nn.functional.huber_loss``).

    The quadratic branch squares ``min(|r|, δ)``, so a huge residual never overflows.
    """
    d = _check_delta(delta)
    fast = _blocked(pred, target, _op_huber(d))
    if fast is not None:
        return fast
    a = np.abs(residual(pred, target))
    q = np.minimum(a, d)
    quad = 0.5 * q * q
    lin = d * (a - 0.5 * d)
    return _per_sample(np.where(a <= d, quad, lin))


def huber_grad(pred: np.ndarray, target: np.ndarray, *, delta: float = 1.0) -> np.ndarray:
    """``∂l/∂ŷ = -clip(r, -δ, δ)``."""
    d = _check_delta(delta)
    return _per_sample_grad(-np.clip(residual(pred, target), -d, d), pred)


@loss(
    name="smooth-l1",
    family="regression",
    summary="Smooth L1 loss: Huber divided by beta; exactly L1 at beta = 0.",
    inputs=(REGRESSION_PRED, REGRESSION_TARGET),
    params=(
        Param(
            "beta",
            "float",
            1.0,
            "Width of the quadratic zone around 0 (>= 0; 0 is exactly L1).",
            low=0.0,
        ),
    ),
    reference="torch.nn.functional.smooth_l1_loss(input, target, beta=beta)",
    formula=(
        "l = ½r²/β          if |r| < β\n"
        "l = |r| - ½β       otherwise   (β = 0: l = |r|),   r = y - ŷ (mean over D for (N, D))"
    ),
    headline=HEADLINE_MEAN,
    gradient="∂l/∂ŷ = -clip(r/β, -1, 1); -sign(r) when β = 0 (0 at r = 0); divided by D for (N, D)",
    properties=(
        "Robust to outliers: linear in |r| beyond β with slope 1 whatever β is.",
        "β · smooth-l1(β) = huber(δ = β); as β → 0 it becomes L1 (β = 0 is exactly L1, as in PyTorch).",
        "Convex and symmetric; differentiable everywhere for β > 0.",
        REGRESSION_PROPS_COMMON,
    ),
    used_for="Bounding-box regression in detection (Fast/Faster R-CNN); robust regression.",
    activation="none (identity output)",
    paper="Girshick 2015, Fast R-CNN.",
    example=("sample_data/regression_multi.csv:pred_*", "sample_data/regression_multi.csv:target_*"),
)
def smooth_l1(pred: np.ndarray, target: np.ndarray, *, beta: float = 1.0) -> Result:
    """``½r²/β`` if ``|r| < β`` else ``|r| - ½β`` (``torch.nn.functional.smooth_l1_loss``);
    ``β = 0`` is exactly L1."""
    b = _check_beta(beta)
    fast = _blocked(pred, target, _op_abs if b == 0.0 else _op_smooth_l1(b))
    if fast is not None:
        return fast
    a = np.abs(residual(pred, target))
    if b == 0.0:
        return _per_sample(a)
    q = np.minimum(a, b)
    quad = 0.5 * q * q / b
    lin = a - 0.5 * b
    return _per_sample(np.where(a < b, quad, lin))


def smooth_l1_grad(pred: np.ndarray, target: np.ndarray, *, beta: float = 1.0) -> np.ndarray:
    """``∂l/∂ŷ = -clip(r/β, -1, 1)`` (``-sign(r)`` when β = 0, 0 at r = 0)."""
    b = _check_beta(beta)
    r = residual(pred, target)
    if b == 0.0:
        return _per_sample_grad(-np.sign(r), pred)
    return _per_sample_grad(-np.clip(r / b, -1.0, 1.0), pred)


_LOG2 = math.log(2.0)


@loss(
    name="log-cosh",
    family="regression",
    summary="Logarithm of the hyperbolic cosine of the residual.",
    inputs=(REGRESSION_PRED, REGRESSION_TARGET),
    params=(),
    reference="keras.losses.LogCosh(); optax.log_cosh(predictions, targets)",
    formula=(
        "l = log cosh(r), r = y - ŷ (mean over D for (N, D)),\n"
        "computed as |r| + log1p(exp(-2|r|)) - log 2 (no overflow; naive log(cosh r) overflows at |r| ≈ 710),\n"
        "and as log1p(2 sinh²(r/2)) for |r| < 1 (same function, full precision for tiny r)"
    ),
    headline=HEADLINE_MEAN,
    gradient="∂l/∂ŷ = -tanh(r) (divided by D for (N, D))",
    properties=(
        "Twice differentiable everywhere (unlike Huber), convex and symmetric.",
        "Quadratic near 0 (≈ ½r²) and linear in the tails (≈ |r| - log 2): behaves like Huber with δ ≈ 1.",
        "Robust to outliers: the gradient is bounded by 1 in magnitude.",
        REGRESSION_PROPS_COMMON,
    ),
    used_for="Regression where a smooth (twice-differentiable) robust loss is wanted.",
    activation="none (identity output)",
    paper="No single source: a standard smooth robust loss (as in Keras LogCosh and optax.log_cosh).",
    example=("sample_data/regression.csv:pred", "sample_data/regression.csv:target"),
)
def log_cosh(pred: np.ndarray, target: np.ndarray) -> Result:
    """``log cosh(r)`` without overflow (Keras ``LogCosh``, ``optax.log_cosh``).

    ``|r| + log1p(exp(-2|r|)) - log 2`` for ``|r| ≥ 1`` (finite for any finite r);
    ``log1p(2 sinh²(r/2))`` (the same function, = log1p(cosh r - 1)) below 1,
    which keeps full relative precision for tiny residuals where the first form
    cancels. The blocked path uses the second form for all ``|r| <= 40`` (it is
    within 2 ulp everywhere there) and continues linearly beyond.
    """
    fast = _blocked(pred, target, _op_log_cosh)
    if fast is not None:
        return fast
    a = np.abs(residual(pred, target))
    small = np.minimum(a, 1.0)  # sinh only sees |r| <= 1: no overflow
    s = np.sinh(0.5 * small)
    near = np.log1p(2.0 * s * s)
    far = a + np.log1p(np.exp(-2.0 * a)) - _LOG2
    return _per_sample(np.where(a < 1.0, near, far))


def log_cosh_grad(pred: np.ndarray, target: np.ndarray) -> np.ndarray:
    """``∂l/∂ŷ = -tanh(r)``."""
    return _per_sample_grad(-np.tanh(residual(pred, target)), pred)


def _check_quantile(q: float) -> float:
    return float(q)  # (declared: [0, 1])


@loss(
    name="quantile",
    aliases=("pinball",),
    family="regression",
    summary="Quantile (pinball) loss: asymmetric absolute error, minimised by the q-th quantile.",
    inputs=(REGRESSION_PRED, REGRESSION_TARGET),
    params=(
        Param(
            "quantile",
            "float",
            0.5,
            "Target quantile q in [0, 1]: under-prediction costs q·|r|, over-prediction (1-q)·|r|.",
            low=0.0,
            high=1.0,
        ),
    ),
    reference="sklearn.metrics.mean_pinball_loss(y_true, y_pred, alpha=quantile)",
    formula="l = max(q · r, (q - 1) · r), r = y - ŷ (mean over D for (N, D))",
    headline=HEADLINE_MEAN,
    gradient="∂l/∂ŷ = -q where r > 0, 1 - q where r < 0, 0 at r = 0 (sub-gradient; divided by D for (N, D))",
    properties=(
        "Minimised by the conditional q-th quantile; q = 0.5 gives half the absolute error (MAE/2).",
        "Asymmetric for q ≠ 0.5: under- and over-prediction cost differently.",
        "Convex, piecewise linear, robust to outliers; not differentiable at r = 0.",
        REGRESSION_PROPS_COMMON,
    ),
    used_for="Quantile regression, prediction intervals, probabilistic forecasting.",
    activation="none (identity output)",
    paper="Koenker & Bassett 1978, Regression Quantiles.",
    example=(
        "sample_data/regression.csv:pred",
        "sample_data/regression.csv:target",
        f"{opt('quantile')}",
        "0.9",
    ),
)
def quantile(pred: np.ndarray, target: np.ndarray, *, quantile: float = 0.5) -> Result:  # noqa: A002
    """Pinball loss ``max(q·r, (q-1)·r)`` (``sklearn.metrics.mean_pinball_loss(alpha=q)``)."""
    q = _check_quantile(quantile)
    r = residual(pred, target)
    return _per_sample(np.where(r >= 0, q * r, (q - 1.0) * r))


def quantile_grad(pred: np.ndarray, target: np.ndarray, *, quantile: float = 0.5) -> np.ndarray:  # noqa: A002
    """``∂l/∂ŷ = -q`` where r > 0, ``1 - q`` where r < 0, 0 at r = 0."""
    q = _check_quantile(quantile)
    r = residual(pred, target)
    g = np.where(r > 0, -q, np.where(r < 0, 1.0 - q, 0.0))
    return _per_sample_grad(g, pred)


# ---------------------------------------------------------------------------
# Likelihood losses: Gaussian NLL (with a variance input), Poisson NLL
# ---------------------------------------------------------------------------

_HALF_LOG_2PI = 0.5 * math.log(2.0 * math.pi)


def _variance(var: np.ndarray, pred_shape: tuple[int, ...]) -> np.ndarray:
    """The variance in float64, broadcastable against the prediction (PyTorch's shape rules).

    Accepted: the prediction's shape; for an (N, D) prediction also (N,) or (N, 1)
    (one variance per sample, shared by the D outputs); (N, 1) for an (N,) prediction.
    Values must be finite and >= 0 (negative variance is an error, as in PyTorch).
    """
    v = np.asarray(var)
    if v.ndim == 0:
        v = np.broadcast_to(v, pred_shape[:1])
    if v.shape != pred_shape:
        if len(pred_shape) == 2 and v.shape in ((pred_shape[0],), (pred_shape[0], 1)):
            v = v.reshape(pred_shape[0], 1)
        elif len(pred_shape) == 1 and v.shape == (pred_shape[0], 1):
            v = v[:, 0]
        else:
            shp = _shape(pred_shape)
            raise InputError(
                "var",
                f"shape {_shape(v.shape)} does not fit the prediction's {shp}",
                [],
                expected=f"the prediction's shape {shp}"
                + (" or one variance per row (N,) / (N, 1)" if len(pred_shape) == 2 else ""),
            )
    check_finite(v, "var", "variances")
    neg = v < 0
    if neg.any():
        rows = neg.reshape(len(v), -1).any(axis=1)
        first = first_rows(rows)
        bad = np.asarray(v[first[0]]).ravel()
        raise InputError(
            "var",
            f"variance {_val(bad[bad < 0][0])} is negative",
            first,
            expected=f"variances >= 0 (values below {opt('eps')} are clamped to eps)",
        )
    return np.asarray(v, dtype=np.float64)


def _check_eps(eps: float) -> float:
    return float(eps)  # (declared: (0, inf])


@loss(
    name="gaussian-nll",
    family="regression",
    summary="Gaussian negative log-likelihood of the target under N(pred, var).",
    inputs=(
        Role("pred", "(N,) or (N, D)", "Predicted means ŷ."),
        Role("target", "(N,) or (N, D)", "True values y, the prediction's shape."),
        Role(
            "var",
            "(N,) or (N, D)",
            "Predicted variances (>= 0): the prediction's shape, or one per row (N,) / (N, 1) "
            "shared by the D outputs.",
        ),
    ),
    params=(
        Param(
            "eps",
            "float",
            1e-6,
            "Variances below eps are clamped to eps (for stability), as PyTorch does.",
            low=0.0,
            low_open=True,
        ),
        Param("full", "bool", False, "Add the constant ½ log 2π (the full negative log-likelihood)."),
    ),
    reference="torch.nn.functional.gaussian_nll_loss(input, target, var, full=full, eps=eps)",
    formula=("l = ½ (log v + r²/v)  (+ ½ log 2π if full),  v = max(var, eps), r = y - ŷ\n(mean over D for (N, D))"),
    headline=HEADLINE_MEAN,
    gradient="∂l/∂ŷ = -r / max(var, eps) (divided by D for (N, D)); taken w.r.t. the mean prediction",
    properties=(
        "Can be negative: it is a negative log-density, not a probability.",
        "With a constant variance it is MSE scaled by 1/(2·var) plus a constant.",
        "Learned variances let the model down-weight noisy samples, at a log-variance cost.",
        "Negative variances are an error (PyTorch raises); variances below eps are clamped.",
        REGRESSION_PROPS_COMMON,
    ),
    used_for="Heteroscedastic regression, uncertainty estimation, probabilistic forecasting.",
    activation="identity for the mean; a positive map (softplus or exp) for the variance",
    paper="Nix & Weigend 1994, Estimating the mean and variance of the target probability distribution.",
    example=(
        "sample_data/regression_var.csv:mean",
        "sample_data/regression_var.csv:target",
        "sample_data/regression_var.csv:var",
    ),
)
def gaussian_nll(
    pred: np.ndarray, target: np.ndarray, var: np.ndarray, *, eps: float = 1e-6, full: bool = False
) -> Result:
    """``½(log max(var, eps) + r²/max(var, eps))`` (+ ``½ log 2π`` if full)
    (``torch.nn.functional.gaussian_nll_loss``)."""
    e = _check_eps(eps)
    r = residual(pred, target)
    v = np.maximum(_variance(var, r.shape), e)
    elem = 0.5 * (np.log(v) + r * r / v)
    if full:
        elem = elem + _HALF_LOG_2PI
    return _per_sample(elem)


def gaussian_nll_grad(
    pred: np.ndarray, target: np.ndarray, var: np.ndarray, *, eps: float = 1e-6, full: bool = False
) -> np.ndarray:
    """``∂l/∂ŷ = -r / max(var, eps)`` (the clamp of var does not involve ŷ)."""
    e = _check_eps(eps)
    r = residual(pred, target)
    v = np.maximum(_variance(var, r.shape), e)
    return _per_sample_grad(-r / v, pred)


def _no_negatives(a: np.ndarray, role: str, what: str, expected: str, note: str = "") -> None:
    """Raise for the first row of ``a`` holding a negative value (``what`` names it)."""
    neg = a < 0
    if neg.any():
        first = first_rows(neg.reshape(len(a), -1).any(axis=1))
        bad = np.asarray(a[first[0]]).ravel()
        raise InputError(role, f"{what} {_val(bad[bad < 0][0])} is negative{note}", first, expected=expected)


def _counts(target: np.ndarray) -> None:
    _no_negatives(target, "target", "count", "non-negative targets (counts or rates)")


def _rates(pred: np.ndarray) -> None:
    note = f" (with {opt('no-log-input')} the prediction is a rate)"
    _no_negatives(pred, "pred", "rate", f"non-negative rates, or log-rates with {opt('log-input')}", note)


def _poisson_inputs(pred, target):
    x, y = same_shape(pred, target)
    check_finite(x, "pred", "predictions")
    check_finite(y, "target", "targets")
    _counts(y)
    return np.asarray(x, dtype=np.float64), np.asarray(y, dtype=np.float64)


@loss(
    name="poisson-nll",
    family="regression",
    summary="Poisson negative log-likelihood of count targets given a (log-)rate.",
    inputs=(
        Role("pred", "(N,) or (N, D)", f"Predicted log-rates (default) or rates ({opt('no-log-input')})."),
        Role("target", "(N,) or (N, D)", "Observed counts (non-negative), the prediction's shape."),
    ),
    params=(
        Param(
            "log-input",
            "bool",
            True,
            f"The prediction is a log-rate (exp applied inside); {opt('no-log-input')} for rates.",
        ),
        Param(
            "full",
            "bool",
            False,
            "Add the Stirling approximation of log(y!): y log y - y + ½ log(2πy), where y > 1.",
        ),
        Param(
            "eps",
            "float",
            1e-8,
            f"Added to the rate inside the log when {opt('no-log-input')} (avoids log 0).",
            low=0.0,
            low_open=True,
        ),
    ),
    reference="torch.nn.functional.poisson_nll_loss(input, target, log_input=log_input, full=full, eps=eps)",
    formula=(
        "log-input: l = exp(ŷ) - y·ŷ\n"
        "rate:      l = ŷ - y·log(ŷ + eps)\n"
        "full:      + (y log y - y + ½ log(2πy)) where y > 1\n"
        "(mean over D for (N, D))"
    ),
    headline=HEADLINE_MEAN,
    gradient="log-input: ∂l/∂ŷ = exp(ŷ) - y; rate: 1 - y/(ŷ + eps) (divided by D for (N, D))",
    properties=(
        f"Negative log-likelihood of a Poisson count up to log(y!) (approximated with {opt('full')}); can be negative.",
        "Convex in the log-rate; minimised at rate = y.",
        f"Targets must be non-negative; with {opt('no-log-input')} rates must be non-negative too "
        "(PyTorch returns NaN there; lossctl reports the row).",
        "From log-rates, exp(ŷ) overflows to inf for ŷ above ≈ 709.",
        REGRESSION_PROPS_COMMON,
    ),
    used_for="Count regression (events, visits, photon counts); Poisson GLMs.",
    activation="none for log-rates (exp applied inside); softplus or exp for rates",
    paper="Nelder & Wedderburn 1972, Generalized Linear Models (Poisson regression).",
    example=(
        "sample_data/regression_counts.csv:log_rate",
        "sample_data/regression_counts.csv:count",
        f"{opt('full')}",
    ),
)
def poisson_nll(
    pred: np.ndarray, target: np.ndarray, *, log_input: bool = True, full: bool = False, eps: float = 1e-8
) -> Result:
    """Poisson negative log-likelihood (``torch.nn.functional.poisson_nll_loss``).

    log_input: ``exp(ŷ) - y·ŷ``; otherwise ``ŷ - y·log(ŷ + eps)``. ``full`` adds the
    Stirling term ``y log y - y + ½ log(2πy)`` where ``y > 1`` (0 elsewhere).
    """
    e = _check_eps(eps)
    x, y = _poisson_inputs(pred, target)
    if log_input:
        with np.errstate(over="ignore"):
            elem = np.exp(x) - y * x
    else:
        _rates(x)
        elem = x - y * np.log(x + e)
    if full:
        big = y > 1
        ys = np.where(big, y, 1.0)
        elem = elem + np.where(big, ys * np.log(ys) - ys + 0.5 * np.log(2.0 * np.pi * ys), 0.0)
    return _per_sample(elem)


def poisson_nll_grad(
    pred: np.ndarray, target: np.ndarray, *, log_input: bool = True, full: bool = False, eps: float = 1e-8
) -> np.ndarray:
    """log_input: ``∂l/∂ŷ = exp(ŷ) - y``; otherwise ``1 - y/(ŷ + eps)`` (the Stirling term is constant)."""
    e = _check_eps(eps)
    x, y = _poisson_inputs(pred, target)
    if log_input:
        with np.errstate(over="ignore"):
            g = np.exp(x) - y
    else:
        _rates(x)
        g = 1.0 - y / (x + e)
    return _per_sample_grad(g, pred)
