"""The blocked, threaded path of binary cross-entropy with logits (float32/float64 (N,) or
(N, K) inputs): row blocks of ``ELEM_BLOCK_ELEMS`` elements, in scratch buffers, split over
threads by ``row_parts``; per-row values independent of the block size and thread count.
The kernel and its declaration are ``classification.binary_cross_entropy``.
"""

from __future__ import annotations

from lossctl.losses._lazy import lazy

from lossctl.errors import ParamError
from lossctl.losses import Result
from lossctl.losses._common import (
    ELEM_BLOCK_ELEMS,
    as_float,
    check_finite,
    check_unit_interval,
    constant,
    per_output,
    row_parts,
    row_sums_result,
    rows_per_block,
    same_shape,
    scratch,
    sigmoid,
)

np = lazy(globals())  # NumPy is imported on first use (lossctl/losses/_lazy.py)


def _bce_logits_block(xb, yb, pw, tl, e, u, v, z) -> None:
    """One block of BCE with logits into ``e`` (k, K): ``tl``, ``u``, ``v`` are scratch of
    ``e``'s shape (``v`` None when pos_weight is 1) and ``z`` zeros; see ``_bce_logits_fast``."""
    np.abs(xb, out=tl)
    np.negative(tl, out=tl)
    np.exp(tl, out=tl)
    np.log1p(tl, out=tl)  # log1p(exp(-|x|))
    np.copyto(u, xb)
    if v is None:  # pos_weight 1
        np.copyto(e, yb)
        np.multiply(e, u, out=e)  # y·x
        np.maximum(u, z, out=u)  # max(x, 0)
        np.subtract(u, e, out=u)  # max(x, 0) - y·x >= 0
        np.copyto(e, tl)
        np.add(e, u, out=e)
    else:
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
                direct = k_out == 1 and w_one
                e = loss[a:b].reshape(k, 1) if direct else e_buf[:k]
                _bce_logits_block(xb, yb, pw, tl, e, u_buf[:k], None if pw_one else v_buf[:k], zeros[:k])
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
