"""Numerics and input checks shared by the kernels.

All checks raise :class:`InputError` with row indices relative to the arrays
given; they never print and never read files.
"""

from __future__ import annotations

import numpy as np

from lossctl.errors import InputError, ParamError

# Rows per block in row-wise kernels: small enough that a block of float32
# scores (4096 x 100 x 4 bytes = 1.6 MB) stays in a core's L2 cache.
BLOCK_ROWS = 4096


def as_float(x: np.ndarray) -> np.ndarray:
    """float16 and integer inputs are computed in float64; float32/64 stay as they are."""
    if x.dtype == np.float32 or x.dtype == np.float64:
        return x
    return np.asarray(x, dtype=np.float64)


def first_rows(mask: np.ndarray, limit: int = 5) -> list[int]:
    """Indices of the first ``limit`` true entries of a 1-D boolean mask."""
    idx = np.flatnonzero(mask)
    return [int(i) for i in idx[:limit]]


def softplus(x: np.ndarray) -> np.ndarray:
    """log(1 + exp(x)) without overflow: max(x, 0) + log1p(exp(-|x|)), float64."""
    x = np.asarray(x, dtype=np.float64)
    out = np.abs(x)
    np.negative(out, out=out)
    np.exp(out, out=out)
    np.log1p(out, out=out)
    out += np.maximum(x, 0.0)
    return out


def sigmoid(x: np.ndarray) -> np.ndarray:
    """σ(x) = 1 / (1 + exp(-x)), stable for large |x|, float64."""
    x = np.asarray(x, dtype=np.float64)
    e = np.exp(-np.abs(x))
    return np.where(x >= 0, 1.0 / (1.0 + e), e / (1.0 + e))


def logsumexp_parts(x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Row-wise log-sum-exp split as ``lse = m + log_s`` (m: row max, log_s >= 0).

    Keeping the two parts apart lets callers form ``lse - x[y]`` as
    ``log_s + (m - x[y])`` without losing the digits of a small loss under a
    large logit. Works block by block so the exp temporaries stay in cache;
    exp runs in the input precision (float32 stays float32), sums in float64.
    Each row's value depends only on that row.
    """
    n = x.shape[0]
    m = np.empty(n, dtype=x.dtype)
    log_s = np.empty(n, dtype=np.float64)
    if n == 0:
        return m.astype(np.float64), log_s
    step = BLOCK_ROWS
    scratch = np.empty((min(step, n), x.shape[1]), dtype=x.dtype)
    for start in range(0, n, step):
        stop = min(start + step, n)
        block = x[start:stop]
        mb = block.max(axis=1)
        m[start:stop] = mb
        t = scratch[: stop - start]
        np.subtract(block, mb[:, None], out=t)
        np.exp(t, out=t)
        log_s[start:stop] = np.log(t.sum(axis=1, dtype=np.float64))
    return m.astype(np.float64), log_s


def log_softmax64(x: np.ndarray) -> np.ndarray:
    """Row-wise log-softmax in float64 (materialised; for the less common paths)."""
    x64 = np.asarray(x, dtype=np.float64)
    m = x64.max(axis=1, keepdims=True)
    z = x64 - m
    return z - np.log(np.exp(z).sum(axis=1, keepdims=True))


def default_prob_atol(dtype: np.dtype, n_classes: int) -> float:
    """Tolerance on |Σ p - 1|: 1e-4, or more for low precision and many classes."""
    eps = float(np.finfo(dtype).eps) if np.issubdtype(dtype, np.floating) else 0.0
    return max(1e-4, 2.0 * np.sqrt(max(n_classes, 1)) * eps)


def check_finite(x: np.ndarray, role: str, what: str, allow_neg_inf: bool = False) -> None:
    """Every value finite (or -inf where allowed)."""
    bad = ~np.isfinite(x)
    if allow_neg_inf:
        bad &= ~np.isneginf(x)
    if bad.any():
        rows = bad.reshape(len(x), -1).any(axis=1)
        raise InputError(role, f"non-finite value in {what}", first_rows(rows), expected=f"finite {what}")


def check_probs(p: np.ndarray, role: str, atol: float | None) -> None:
    """Each row a probability distribution: values in [0, 1] summing to 1 (never renormalised)."""
    if p.ndim == 1:
        bad = (p < 0) | (p > 1) | np.isnan(p)
        if bad.any():
            rows = first_rows(bad)
            raise InputError(
                role,
                f"probability {_val(p[rows[0]])} outside [0, 1]",
                rows,
                expected="probabilities in [0, 1]",
            )
        return
    flat = p.reshape(len(p), -1)
    out_of_range = ((flat < 0) | (flat > 1) | np.isnan(flat)).any(axis=1)
    if out_of_range.any():
        rows = first_rows(out_of_range)
        row = flat[rows[0]]
        bad_vals = row[(row < 0) | (row > 1) | np.isnan(row)]
        raise InputError(
            role,
            f"probability {_val(bad_vals[0])} outside [0, 1]",
            rows,
            expected="probabilities in [0, 1]",
        )
    tol = default_prob_atol(p.dtype, flat.shape[1]) if atol is None else atol
    sums = flat.sum(axis=1, dtype=np.float64)
    off = np.abs(sums - 1.0) > tol
    if off.any():
        rows = first_rows(off)
        raise InputError(
            role,
            f"probabilities sum to {sums[rows[0]]:.9g}, not 1 (tolerance {tol:g}; "
            "lossctl never renormalises. If these are scores, use --pred-kind logits; "
            "a looser tolerance is --prob-atol)",
            rows,
            expected="rows summing to 1",
        )


def check_log_probs(lp: np.ndarray, role: str, atol: float | None) -> None:
    """Each row log-probabilities: values <= 0 (or -inf) whose exps sum to 1."""
    flat = lp.reshape(len(lp), -1)
    pos = (flat > 0) | np.isnan(flat) | np.isposinf(flat)
    if pos.any():
        rows = first_rows(pos.any(axis=1))
        raise InputError(
            role,
            "log-probability above 0 (or NaN/+inf)",
            rows,
            expected="log-probabilities <= 0",
        )
    if flat.shape[1] == 1:
        return
    tol = default_prob_atol(lp.dtype, flat.shape[1]) if atol is None else atol
    sums = np.exp(np.asarray(flat, dtype=np.float64)).sum(axis=1)
    off = np.abs(sums - 1.0) > tol
    if off.any():
        rows = first_rows(off)
        raise InputError(
            role,
            f"exp(log-probabilities) sum to {sums[rows[0]]:.9g}, not 1 (tolerance {tol:g}; "
            "if these are scores, use --pred-kind logits)",
            rows,
            expected="log-probability rows whose exps sum to 1",
        )


def check_unit_interval(y: np.ndarray, role: str, what: str = "targets") -> None:
    bad = (y < 0) | (y > 1) | np.isnan(y)
    if bad.any():
        rows = bad.reshape(len(y), -1).any(axis=1)
        first = first_rows(rows)
        vals = np.asarray(y[first[0]]).ravel()
        v = vals[((vals < 0) | (vals > 1) | np.isnan(vals))][0]
        raise InputError(role, f"value {_val(v)} outside [0, 1]", first, expected=f"{what} in [0, 1]")


def class_indices(y: np.ndarray, role: str, n_classes: int, ignore_index: int | None) -> np.ndarray:
    """Validate class-index targets; returns int64 indices (ignored rows keep their value)."""
    if y.ndim != 1:
        raise InputError(role, f"class indices must be one value per row; got shape {y.shape}", [])
    if np.issubdtype(y.dtype, np.integer):
        yi = y.astype(np.int64, copy=False)
    elif np.issubdtype(y.dtype, np.bool_):
        yi = y.astype(np.int64)
    elif np.issubdtype(y.dtype, np.floating):
        nonint = ~np.isfinite(y) | (np.floor(y) != y)
        if nonint.any():
            rows = first_rows(nonint)
            raise InputError(
                role,
                f"class index {_val(y[rows[0]])} is not an integer",
                rows,
                expected="integer class indices (or, for soft targets, one probability column per class)",
            )
        yi = y.astype(np.int64)
    else:
        raise InputError(role, f"class indices have type {y.dtype}", [], expected="integer class indices")
    valid = (yi >= 0) & (yi < n_classes)
    if ignore_index is not None:
        valid |= yi == ignore_index
    if not valid.all():
        rows = first_rows(~valid)
        raise InputError(
            role,
            f"class index {int(yi[rows[0]])} out of range [0, {n_classes}) (ignore-index is {ignore_index})",
            rows,
            expected=f"class indices in [0, {n_classes}) for {n_classes} prediction columns",
        )
    return yi


def same_shape(pred: np.ndarray, target: np.ndarray, target_role: str = "target") -> tuple[np.ndarray, np.ndarray]:
    """Bring (N,) / (N, 1) pairs together; otherwise shapes must match exactly."""
    if pred.shape == target.shape:
        return pred, target
    if pred.ndim == 2 and pred.shape[1] == 1 and target.ndim == 1:
        return pred[:, 0], target
    if target.ndim == 2 and target.shape[1] == 1 and pred.ndim == 1:
        return pred, target[:, 0]
    raise InputError(
        target_role,
        f"shape {_shape(target.shape)} does not match the prediction's {_shape(pred.shape)}",
        [],
        expected=f"the prediction's shape {_shape(pred.shape)}",
    )


def per_output(value, n_out: int, name: str) -> np.ndarray | float:
    """A scalar, or one number per output column (validated length)."""
    if value is None:
        return 1.0
    if isinstance(value, (int, float)):
        return float(value)
    arr = np.asarray(value, dtype=np.float64)
    if arr.size == 1:
        return float(arr.ravel()[0])
    if arr.shape != (n_out,):
        raise ParamError(
            name,
            f"--{name} has {arr.size} values but the prediction has {n_out} column(s)",
        )
    return arr


def _shape(shape: tuple[int, ...]) -> str:
    inner = ", ".join("N" if i == 0 else str(s) for i, s in enumerate(shape))
    return f"({inner},)" if len(shape) == 1 else f"({inner})"


def _val(v) -> str:
    v = float(v)
    return f"{v:.9g}"
