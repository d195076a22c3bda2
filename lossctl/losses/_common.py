"""Numerics and input checks shared by the kernels.

All checks raise :class:`InputError` with row indices relative to the arrays
given; they never print and never read files.
"""

from __future__ import annotations

import math
import os
import sys
import threading
from collections.abc import Callable
from typing import TYPE_CHECKING, NamedTuple

from lossctl.losses._lazy import lazy

from lossctl.errors import InputError, ParamError, opt

np = lazy(globals())  # NumPy is imported on first use (lossctl/losses/_lazy.py)

if TYPE_CHECKING:
    from concurrent.futures import ThreadPoolExecutor

# Rows per block in row-wise kernels: small enough that a block of float32
# scores (4096 x 100 x 4 bytes = 1.6 MB) stays in a core's L2 cache.
BLOCK_ROWS = 4096

# ---------------------------------------------------------------------------
# Blocks and threads
#
# The fast kernels walk their input in blocks of rows that stay in cache, with
# reused per-thread scratch buffers, and split the rows into contiguous parts
# run on a thread pool (NumPy releases the GIL inside its loops). Every
# per-row value is computed by element-wise operations and by reductions over
# that row alone (NumPy's ``einsum`` / ``add.reduce`` along a contiguous last
# axis), never by BLAS (OpenBLAS gemv rounds a row differently depending on
# where it falls in the matrix), so a row's bits do not depend on the block,
# the part, the thread count or the number of rows passed in.
# ---------------------------------------------------------------------------

# Elements per block of a row-wise (N, C) kernel: 2**18 float32 = 1 MB.
ROW_BLOCK_ELEMS = 1 << 18
# Elements per block of an element-wise kernel ((N,) or (N, D) inputs).
ELEM_BLOCK_ELEMS = 1 << 17
# Below this much work (elements) one thread is faster than dispatching to two.
PARALLEL_MIN_ELEMS = 1 << 18

_tls = threading.local()
_pool: ThreadPoolExecutor | None = None
_pool_size = 0
_pool_lock = threading.Lock()


_CPUS: int | None = None


def num_threads() -> int:
    """Worker threads for the kernels: ``LOSSCTL_THREADS`` if set (>= 1), else ``os.cpu_count()``."""
    global _CPUS
    text = os.environ.get("LOSSCTL_THREADS", "").strip()
    if text:
        try:
            k = int(text)
        except ValueError:
            k = 0
        if k >= 1:
            return k
    if _CPUS is None:  # os.cpu_count() reads /sys each time (~60 µs): once is enough
        _CPUS = os.cpu_count() or 1
    return _CPUS


def _forget_pool_in_child() -> None:
    """A forked child inherits the pool object but not its threads: start afresh."""
    global _pool, _pool_size, _pool_lock, _CPUS
    _CPUS = None
    _pool = None
    _pool_size = 0
    _pool_lock = threading.Lock()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_forget_pool_in_child)


def _executor(k: int) -> ThreadPoolExecutor:
    global _pool, _pool_size
    from concurrent.futures import ThreadPoolExecutor  # imported on first use (start-up time)

    with _pool_lock:
        if _pool is None or _pool_size < k:
            old = _pool
            _pool = ThreadPoolExecutor(max_workers=k, thread_name_prefix="lossctl-kernel")
            _pool_size = k
            if old is not None:
                old.shutdown(wait=False)
        return _pool


def _run_part(fn: Callable[[int, int], object], start: int, stop: int):
    _tls.in_part = True
    try:
        return fn(start, stop)
    finally:
        _tls.in_part = False


def row_parts(n: int, work: int, fn: Callable[[int, int], object]) -> list:
    """Call ``fn(start, stop)`` on contiguous parts covering ``range(n)``; return the results in order.

    The parts run on the thread pool when ``work`` (elements touched) is large
    enough and more than one thread is allowed; otherwise ``fn(0, n)`` runs
    here. ``fn`` must write only the rows it is given. Calls from inside a
    part never nest into the pool.
    """
    k = min(num_threads(), n)
    if k <= 1 or work < PARALLEL_MIN_ELEMS or getattr(_tls, "in_part", False):
        return [fn(0, n)]
    bounds = [n * i // k for i in range(k + 1)]
    pool = _executor(k)
    futures = [pool.submit(_run_part, fn, bounds[i], bounds[i + 1]) for i in range(1, k)]
    results: list = [None] * k
    error: BaseException | None = None
    try:
        results[0] = _run_part(fn, bounds[0], bounds[1])
    except BaseException as exc:  # noqa: BLE001 - wait for the other parts, then re-raise
        error = exc
    for i, fut in enumerate(futures, start=1):
        try:
            results[i] = fut.result()
        except BaseException as exc:  # noqa: BLE001 - re-raised below
            error = error or exc
    if error is not None:
        raise error
    return results


def scratch(slot: str, shape: tuple[int, ...], dtype) -> np.ndarray:
    """A C-contiguous buffer of this thread, reused across calls (contents undefined)."""
    bufs = getattr(_tls, "bufs", None)
    if bufs is None:
        bufs = _tls.bufs = {}
    dtype = np.dtype(dtype)
    size = 1
    for s in shape:
        size *= int(s)
    key = (slot, dtype.str)
    buf = bufs.get(key)
    if buf is None or buf.size < size:
        buf = np.empty(max(size, 1), dtype=dtype)
        bufs[key] = buf
    return buf[:size].reshape(shape)


def constant(slot: str, n: int, value: float, dtype=None) -> np.ndarray:
    """A per-thread length-n array filled with ``value`` (NumPy's array-array
    ``maximum``/``minimum`` loops are several times faster than with a scalar)."""
    dtype = np.float64 if dtype is None else dtype
    bufs = getattr(_tls, "consts", None)
    if bufs is None:
        bufs = _tls.consts = {}
    key = (slot, np.dtype(dtype).str, float(value))
    buf = bufs.get(key)
    if buf is None or len(buf) < n:
        buf = np.full(max(n, 1), value, dtype=dtype)
        bufs[key] = buf
    return buf[:n]


def rows_per_block(width: int, elems: int = ROW_BLOCK_ELEMS) -> int:
    return max(1, elems // max(int(width), 1))


def as_float(x: np.ndarray) -> np.ndarray:
    """float16 and integer inputs are computed in float64; float32/64 stay as they are."""
    if x.dtype == np.float32 or x.dtype == np.float64:
        return x
    return np.asarray(x, dtype=np.float64)


def element_rows(elem: np.ndarray):
    """The :class:`~lossctl.losses.Result` of an element-wise loss on ``(N,)`` or ``(N, D)``.

    The per-sample value is the row mean; the headline parts are ``num`` = the
    row sum and ``den = D`` per row (see :func:`row_sums_result`).
    """
    if elem.ndim == 1:
        from lossctl.losses import Result

        return Result(loss=np.ascontiguousarray(elem, dtype=np.float64))
    return row_sums_result(np.add.reduce(np.asarray(elem, dtype=np.float64), axis=1), elem.shape[1])


def row_sums_result(row_sum: np.ndarray, d: int):
    """Result from the float64 row sums of ``d`` element losses per row.

    Per-sample value ``row_sum / d`` (the row mean, bit for bit NumPy's
    ``mean(axis=1)``); ``num = row_sum``, ``den = d``, so the headline
    ``--reduction sum`` (Σ num) is the sum over all N·D elements, PyTorch's
    ``reduction="sum"``, and ``mean`` (Σ num / Σ den) is the element-wise mean,
    PyTorch's ``reduction="mean"``, whatever the chunking.
    """
    from lossctl.losses import Result

    if d == 1:
        return Result(loss=row_sum)
    return Result(loss=row_sum / d, num=row_sum, den=np.full(len(row_sum), float(d)))


_EXACT_INT = 1 << 53  # every integer of magnitude up to 2**53 is a float64


def inexact_in_float64(a: np.ndarray) -> np.ndarray | None:
    """Mask of the values of an integer array that float64 cannot represent exactly (beyond
    2**53 with low bits set), or None when every value converts exactly.

    Checked in the integer's own dtype: a value of bit length ``53 + k`` is exact iff its
    low ``k`` bits are 0.
    """
    if a.dtype.kind not in "iu" or a.dtype.itemsize < 8 or a.size == 0:
        return None
    if a.dtype.kind == "i":
        with np.errstate(over="ignore"):
            u = np.abs(a).view(np.uint64)  # |-2**63| wraps to 2**63 as uint64: right
    else:
        u = a
    big = u > _EXACT_INT
    if not big.any():
        return None
    ub = u[big]
    bad_b = np.zeros(len(ub), dtype=bool)
    for k in range(1, 12):
        lo = np.uint64(1 << (52 + k))
        in_band = ub >= lo if k == 11 else (ub >= lo) & (ub < np.uint64(1 << (53 + k)))
        bad_b |= in_band & ((ub & np.uint64((1 << k) - 1)) != 0)
    if not bad_b.any():
        return None
    bad = np.zeros(a.shape, dtype=bool)
    bad[big] = bad_b
    return bad


_TINY_NORMAL = sys.float_info.min  # 2.2250738585072014e-308


def check_temperature(value, name: str = "temperature") -> float:
    """A softmax temperature as float64. Its contract (finite, at least the smallest normal
    number: below that ``1/T`` is inf and every score divided by it overflows) is declared on
    the parameter (``Param(normal=True)``) and checked when parsed."""
    return float(value)


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


class SoftmaxRows(NamedTuple):
    """Row-wise pieces of a softmax over the last axis of an (N, C) array.

    m:         (N,) float64 row maxima (the value at ``argmax``).
    log_s:     (N,) float64 ``log Σ_c exp(x_c - m)`` = ``log1p(Σ_{c != argmax} exp(x_c - m))`` >= 0.
    argmax:    (N,) int64 first index of the row maximum.
    x_y:       (N,) float64 ``x[n, ys[n]]`` when ``ys`` was given, else None.
    shift_sum: (N,) float64 ``Σ_c w_c (m - x_c)`` (``w`` = 1 without weights) when asked, else None.
    bad:       True when some row may hold a non-finite value (NaN/±inf; check exactly).
    """

    m: np.ndarray
    log_s: np.ndarray
    argmax: np.ndarray
    x_y: np.ndarray | None
    shift_sum: np.ndarray | None
    bad: bool


def _gather_rows(blk, fb, base, am, ii, mb, want_y) -> None:
    """Each row's maximum ``blk[r, am[r]]`` into ``mb`` and, when ``want_y = (ys, out)``,
    ``blk[r, ys[r]]`` into ``out``: through the flat block ``fb`` (flat indices ``ii``, row
    offsets ``base``) when the input is C-contiguous, else by row and column."""
    c = blk.shape[1]
    if fb is not None:
        np.take(fb, ii, out=mb)
        if want_y is not None:
            want_y[1][...] = np.take(fb, base + want_y[0])
    else:
        rr = base // c
        mb[...] = blk[rr, am]
        if want_y is not None:
            want_y[1][...] = blk[rr, want_y[0]]


def _shift_sum_block(blk, m, d, weights, out) -> None:
    """``Σ_c w_c (m - x_c)`` of each row of a block into ``out``, in float64 (``d`` scratch)."""
    np.copyto(d, blk)
    np.subtract(m[:, None], d, out=d)
    if weights is None:
        np.einsum("ij->i", d, out=out)
    else:
        np.einsum("ij,j->i", d, weights, out=out)


def softmax_rows(
    x: np.ndarray,
    ys: np.ndarray | None = None,
    *,
    shift_sum: bool = False,
    weights: np.ndarray | None = None,
) -> SoftmaxRows:
    """Log-sum-exp pieces of each row of a float32/float64 (N, C) array, C >= 1.

    Blocked and threaded (see above). ``exp`` runs in the input precision
    (float32 stays float32: about 1e-7 relative per term); the sum of the
    exps is accumulated in float64, without the row maximum's exact 1, so
    ``log_s`` keeps full relative precision for confident rows. Each row's
    value depends only on that row. Non-finite input is not an error here: it
    sets ``bad`` (NaN/-inf through the block minimum, +inf through the row
    maximum), and the caller then locates it exactly.
    """
    n, c = x.shape
    dt = x.dtype
    m = np.empty(n, dtype=np.float64)
    log_s = np.empty(n, dtype=np.float64)
    am_all = np.empty(n, dtype=np.int64)
    xy = np.empty(n, dtype=np.float64) if ys is not None else None
    ss = np.empty(n, dtype=np.float64) if shift_sum else None
    step = rows_per_block(c)
    wide = dt != np.float64

    flat = x.reshape(-1) if x.flags.c_contiguous else None
    # Flat offset of each row in a block (shared, read-only; made here, not in the threads,
    # so the parts start without extra allocations).
    base_all = np.arange(min(step, n), dtype=np.int64) * c

    def part(start: int, stop: int) -> bool:
        rows = min(step, stop - start)
        t = scratch("sm_t", (rows, c), dt)
        t64 = scratch("sm_t64", (rows, c), np.float64) if (wide or shift_sum) else t
        base = base_all[:rows]
        idx = scratch("sm_idx", (rows,), np.int64)
        mb_buf = scratch("sm_m", (rows,), dt)
        bad = False
        with np.errstate(all="ignore"):
            for a in range(start, stop, step):
                b = min(a + step, stop)
                k = b - a
                blk = x[a:b]
                # NaN and -inf make the block minimum non-finite, +inf the row maximum.
                if not np.isfinite(blk.min()):
                    bad = True
                am = am_all[a:b]
                blk.argmax(axis=1, out=am)
                ii = idx[:k]
                np.add(base[:k], am, out=ii)  # flat index of each row's maximum
                mb = mb_buf[:k]
                fb = flat[a * c : b * c] if flat is not None else None
                _gather_rows(blk, fb, base[:k], am, ii, mb, None if xy is None else (ys[a:b], xy[a:b]))
                m[a:b] = mb
                tt = t[:k]
                np.subtract(blk, mb[:, None], out=tt)
                np.exp(tt, out=tt)
                tt.reshape(-1)[ii] = 0.0  # the maximum's exp(0) = 1 is added back by log1p
                s64 = tt
                if tt.dtype != np.float64:
                    s64 = t64[:k]
                    np.copyto(s64, tt)
                np.einsum("ij->i", s64, out=log_s[a:b])
                np.log1p(log_s[a:b], out=log_s[a:b])
                if ss is not None:
                    _shift_sum_block(blk, m[a:b], t64[:k], weights, ss[a:b])
        if not np.isfinite(m[start:stop]).all():
            bad = True
        return bad

    bad = any(row_parts(n, n * c, part))
    return SoftmaxRows(m, log_s, am_all, xy, ss, bad)


def logsumexp_parts(x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Row-wise log-sum-exp split as ``lse = m + log_s`` (m: row max, log_s >= 0).

    Keeping the two parts apart lets callers form ``lse - x[y]`` as
    ``log_s + (m - x[y])`` without losing the digits of a small loss under a
    large logit. Works block by block so the exp temporaries stay in cache
    (threaded for large inputs); exp runs in the input precision (float32
    stays float32), sums in float64. Each row's value depends only on that row.
    The input is not validated here (callers check finiteness).
    """
    n = x.shape[0]
    if n == 0 or x.ndim != 2 or x.shape[1] == 0 or x.dtype not in (np.float32, np.float64):
        return _logsumexp_parts_plain(x)
    r = softmax_rows(x)
    return r.m, r.log_s


def _logsumexp_parts_plain(x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """``logsumexp_parts`` along axis 1 of any float array (float16, integers, N-D), in float64."""
    x64 = np.asarray(x, dtype=np.float64)
    n = x64.shape[0]
    if n == 0 or x64.ndim < 2 or x64.shape[1] == 0:
        return np.full(n, -np.inf), np.zeros(n)
    am = np.expand_dims(x64.argmax(axis=1), 1)
    m = np.take_along_axis(x64, am, axis=1)
    with np.errstate(over="ignore", invalid="ignore"):  # finite logits spanning > 1.8e308: -inf, exp 0
        t = np.exp(x64 - m)
    np.put_along_axis(t, am, 0.0, axis=1)  # the maximum's exp(0) = 1 is added back by log1p
    return np.squeeze(m, 1), np.log1p(t.sum(axis=1))


def softmax64(x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Row-wise ``(log softmax, softmax)`` in float64, each to full relative precision.

    The probabilities are ``exp(x - m) · exp(-log_s)`` rather than ``exp(log softmax)``:
    rounding ``(x - m) - log_s`` to a float (e.g. -30 - 9e-14) would move a small
    probability by up to |x - m| ulp.
    """
    x64 = np.asarray(x, dtype=np.float64)
    if x64.ndim != 2 or x64.shape[0] == 0 or x64.shape[1] == 0:
        lp = log_softmax64(x64)
        return lp, np.exp(lp)
    m, log_s = _logsumexp_parts_plain(x64)
    with np.errstate(over="ignore", invalid="ignore"):
        z = x64 - m[:, None]
    p = np.exp(z)
    p *= np.exp(-log_s)[:, None]
    z -= log_s[:, None]
    return z, p


def log_softmax64(x: np.ndarray) -> np.ndarray:
    """Row-wise log-softmax in float64 (materialised; for the less common paths).

    ``(x - m) - log1p(Σ_{c ≠ argmax} exp(x_c - m))``: the row maximum's exact 1
    is left out of the sum, so a near-one-hot row keeps full relative precision
    (``log q`` of the top class is ``-log1p(tiny)`` = ``-tiny``, not 0).
    """
    x64 = np.asarray(x, dtype=np.float64)
    if x64.ndim != 2 or x64.shape[0] == 0 or x64.shape[1] == 0:
        return x64 - np.zeros_like(x64)
    m, log_s = _logsumexp_parts_plain(x64)
    with np.errstate(over="ignore", invalid="ignore"):
        z = x64 - m[:, None]
    z -= log_s[:, None]
    return z


def log_softmax_ratio(xa, xb) -> np.ndarray | None:
    """``log softmax(xa) - log softmax(xb)`` per element for two (N, C) logit arrays, or None.

    Formed as ``((xa - ma) - (xb - mb)) - (log_sa - log_sb)`` (row maxima m, ``log_s`` =
    log1p of the non-max terms): each shift by its own row maximum is exact where the class
    matters (Sterbenz), the shifted rows cancel before the tiny log-sum terms are subtracted,
    so a near-one-hot row (``[41, 0]`` against ``[40, 0]``) keeps the digits that rounding
    ``x - m - log_s`` to a float would lose; and rows of very different scales (teacher
    logits of 1e4, student of 4) do not round ``xa - xb`` at the larger scale's ulp.
    """
    a = np.asarray(xa, dtype=np.float64)
    b = np.asarray(xb, dtype=np.float64)
    if a.ndim != 2 or a.shape != b.shape or a.size == 0:
        return None
    ma, lsa = logsumexp_parts(a)
    mb, lsb = logsumexp_parts(b)
    with np.errstate(over="ignore", invalid="ignore"):
        d = (a - ma[:, None]) - (b - mb[:, None])
        d -= (lsa - lsb)[:, None]
    return d if np.isfinite(d).all() else None


_LOG_HALF = -math.log(2.0)


def exp_diff(la, lb) -> np.ndarray:
    """``exp(la) - exp(lb)`` element-wise with full relative precision.

    Where both values exceed -log 2 (probabilities above ½, the only place the
    difference can cancel) it is ``expm1(la) - expm1(lb)``: two numbers near 1
    differ in digits that ``exp`` rounds away (softmax(x) - onehot for a
    confident row is ``expm1(log q)`` ≈ -1e-18, not 0). ``-inf`` is exp = 0.
    """
    la = np.asarray(la, dtype=np.float64)
    lb = np.asarray(lb, dtype=np.float64)
    with np.errstate(over="ignore", invalid="ignore"):
        out = np.exp(la) - np.exp(lb)
        near = (la > _LOG_HALF) & (lb > _LOG_HALF)
        if near.any():
            out = np.where(near, np.expm1(la) - np.expm1(lb), out)
    return out


def softmax_minus_onehot(lq: np.ndarray, y: np.ndarray) -> np.ndarray:
    """``softmax - onehot(y)`` from row log-probabilities ``lq`` (N, C): ``q_c`` off the label and
    ``expm1(log q_y)`` = ``-(1 - q_y)`` at it, exact for a confident row (where ``q_y - 1`` is 0)."""
    g = np.exp(lq)
    rows = np.arange(len(lq))
    g[rows, y] = np.expm1(lq[rows, y])
    return g


def default_prob_atol(dtype: np.dtype, n_classes: int) -> float:
    """Tolerance on |Σ p - 1|: 1e-4, or more for low precision and many classes."""
    eps = float(np.finfo(dtype).eps) if np.issubdtype(dtype, np.floating) else 0.0
    return max(1e-4, 2.0 * np.sqrt(max(n_classes, 1)) * eps)


def check_finite(x: np.ndarray, role: str, what: str, allow_neg_inf: bool = False) -> None:
    """Every value finite (or -inf where allowed)."""
    kind = x.dtype.kind
    if kind in "biu":
        return
    if kind == "f" and x.size and not allow_neg_inf:
        # One pass, no temporaries: any NaN or ±inf makes the sum non-finite. A finite
        # sum proves every value finite; an overflowing one is checked exactly below.
        with np.errstate(all="ignore"):
            if np.isfinite(np.sum(x)):
                return
    bad = ~np.isfinite(x)
    if allow_neg_inf:
        bad &= ~np.isneginf(x)
    if bad.any():
        rows = bad.reshape(len(x), -1).any(axis=1)
        raise InputError(role, f"non-finite value in {what}", first_rows(rows), expected=f"finite {what}")


def _declared(kind: str):
    """Tag the InputError of a declared-kind check, so the engine can name the option that reads
    the values as what they probably are (lossctl.kinds.error_hint)."""

    def deco(check):
        def wrapper(*args, **kwargs):
            try:
                return check(*args, **kwargs)
            except InputError as err:
                err.declared = kind
                raise

        wrapper.__doc__ = check.__doc__
        wrapper.__name__ = check.__name__
        return wrapper

    return deco


@_declared("probs")
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
            f"lossctl never renormalises; a looser tolerance is {opt('prob-atol')})",
            rows,
            expected="rows summing to 1",
        )


@_declared("log-probs")
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
            f"exp(log-probabilities) sum to {sums[rows[0]]:.9g}, not 1 (tolerance {tol:g})",
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


def label_values(y: np.ndarray, n_classes: int, ignore_index: int | None) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Range-check integer labels in their own dtype, before any conversion.

    Returns ``(labels as int64, valid mask, non-integer mask)``. A label is valid when it
    is in ``[0, n_classes)`` or equals ``ignore_index``, compared in the stored dtype: a
    uint64 ``2**64 - 100`` is never ``-100``, a float ``1e20`` or ``2**63`` is simply out
    of range (no cast, no RuntimeWarning). Invalid and non-integer positions hold 0 in
    the int64 result; callers raise for them with :func:`label_text`.
    """
    kind = y.dtype.kind
    if kind == "b":
        y = y.astype(np.int64)
        kind = "i"
    nonint = np.zeros(y.shape, dtype=bool)
    if kind == "u":
        valid = y < n_classes
        if ignore_index is not None and 0 <= ignore_index <= np.iinfo(y.dtype).max:
            valid |= y == ignore_index
    elif kind == "i":
        valid = (y >= 0) & (y < n_classes)
        info = np.iinfo(y.dtype)
        if ignore_index is not None and info.min <= ignore_index <= info.max:
            valid |= y == ignore_index
    elif kind == "f":
        with np.errstate(invalid="ignore"):
            nonint = ~np.isfinite(y) | (np.floor(y) != y)
            valid = ~nonint & (y >= 0) & (y < n_classes)
            if ignore_index is not None:
                valid |= ~nonint & (y == float(ignore_index)) & (abs(ignore_index) <= 2**53)
    else:
        raise TypeError(y.dtype)
    yi = np.zeros(y.shape, dtype=np.int64)
    np.copyto(yi, y, where=valid, casting="unsafe")  # only values in range or the ignore index
    return yi, valid, nonint


def label_text(v) -> str:
    """A label as stored: an integer exactly (uint64 2**64 - 1 stays 18446744073709551615),
    a float with 9 significant digits."""
    if isinstance(v, (np.integer, int, np.bool_, bool)):
        return str(int(v))
    return _val(v)


def class_indices(y: np.ndarray, role: str, n_classes: int, ignore_index: int | None) -> np.ndarray:
    """Validate class-index targets; returns int64 indices (ignored rows keep their value).

    Labels are range-checked in their own dtype before they are converted (see
    :func:`label_values`)."""
    if y.ndim != 1:
        raise InputError(role, f"class indices must be one value per row; got shape {y.shape}", [])
    if y.dtype.kind not in "biuf":
        raise InputError(role, f"class indices have type {y.dtype}", [], expected="integer class indices")
    yi, valid, nonint = label_values(y, n_classes, ignore_index)
    if nonint.any():
        rows = first_rows(nonint)
        raise InputError(
            role,
            f"class index {_val(y[rows[0]])} is not an integer",
            rows,
            expected="integer class indices (or, for soft targets, one probability column per class)",
        )
    if not valid.all():
        rows = first_rows(~valid)
        raise InputError(
            role,
            f"class index {label_text(y[rows[0]])} out of range [0, {n_classes}) (ignore-index is {ignore_index})",
            rows,
            expected=f"class indices in [0, {n_classes}) for {n_classes} prediction columns",
        )
    return yi


def class_name_indices(values: np.ndarray, classes) -> tuple[np.ndarray, np.ndarray]:
    """Map class names to their positions in ``classes`` (logit order).

    ``values`` is one label per row as read (text, or integers compared by their text).
    Returns ``(int64 indices, unknown mask)``; unknown names hold 0 in the indices and the
    caller raises naming the row. Each distinct name is looked up once.
    """
    lookup = {name: i for i, name in enumerate(classes)}
    v = np.asarray(values)
    if v.ndim != 1:
        raise ValueError("one class name per row")
    if len(v) == 0:
        return np.zeros(0, dtype=np.int64), np.zeros(0, dtype=bool)
    text = np.array([str(x) for x in v.tolist()], dtype=object)
    uniq, inv = np.unique(text.astype(str), return_inverse=True)
    mapped = np.array([lookup.get(u, -1) for u in uniq.tolist()], dtype=np.int64)
    idx = mapped[inv.reshape(-1)]
    unknown = idx < 0
    idx[unknown] = 0
    return idx, unknown


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


def as_rows(x, role: str, what: str) -> np.ndarray:
    """One row per sample as float64 ``(N, K)``; a single column ``(N,)`` is ``K = 1``."""
    a = np.asarray(x, dtype=np.float64)
    if a.ndim == 1:
        a = a[:, None]
    elif a.ndim != 2:
        raise InputError(role, f"{what} has {a.ndim} dimensions", [], expected=f"{what} as (N, K): one row per sample")
    return a


def match_shape(a: np.ndarray, b: np.ndarray, role: str, other: str) -> None:
    """``b`` (the input ``role``) must have ``a``'s (N, K) shape; ``other`` names ``a``."""
    if a.shape != b.shape:
        raise InputError(
            role,
            f"shape (N, {b.shape[1]}) with {len(b)} rows does not match {other}'s (N, {a.shape[1]}) with {len(a)} rows",
            [],
            expected=f"the same shape as {other}",
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
            f"{opt(name)} has {arr.size} values but the prediction has {n_out} column(s)",
        )
    return arr


def _shape(shape: tuple[int, ...]) -> str:
    inner = ", ".join("N" if i == 0 else str(s) for i, s in enumerate(shape))
    return f"({inner},)" if len(shape) == 1 else f"({inner})"


def _val(v) -> str:
    v = float(v)
    return f"{v:.9g}"
