"""Mergeable running statistics over per-sample values.

Every object here has ``update`` (add a chunk of values), ``merge`` (combine
with another object of the same kind, as if one had seen all the data) and
``to_dict``/``from_dict`` (a JSON-safe state), so chunks, files and machines
combine the same way.

- ``CompensatedSum``: Neumaier-compensated float64 sum of chunk sums (each chunk
  summed pairwise by NumPy), so a mean over 1e8 rows does not drift.
- ``RunningStats``: count, sum, mean, variance (Chan et al.'s parallel update),
  min, max, and quantiles: exact while the values are kept (up to
  ``exact_limit`` values, 8 MiB), from a relative-error sketch beyond that.
- ``QuantileSketch``: logarithmic buckets with relative accuracy ``alpha``
  (the DDSketch construction), mergeable by adding bucket counts.
- ``TopK``: the K largest values with their row numbers (ties: lower row first).
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

EXACT_LIMIT = 1 << 20  # values kept for exact quantiles: 1,048,576 float64 = 8 MiB


def _f(x: float) -> float | str:
    """float → JSON-safe (inf/nan as strings)."""
    x = float(x)
    if math.isfinite(x):
        return x
    return "nan" if math.isnan(x) else ("inf" if x > 0 else "-inf")


def _u(x: Any) -> float:
    return float(x)


class CompensatedSum:
    """Σ of float64 values with Neumaier compensation across chunks."""

    __slots__ = ("s", "c")

    def __init__(self, s: float = 0.0, c: float = 0.0):
        self.s = s
        self.c = c

    def add(self, x: float) -> None:
        x = float(x)
        t = self.s + x
        if math.isfinite(t):
            if abs(self.s) >= abs(x):
                self.c += (self.s - t) + x
            else:
                self.c += (x - t) + self.s
        self.s = t

    def update(self, values: np.ndarray) -> float:
        """Add a chunk: pairwise sums of blocks of 1024 values, then their exactly rounded sum
        (math.fsum), so a chunk's sum is as good as float64 allows on any NumPy version.
        Returns the chunk's sum."""
        if not len(values):
            return 0.0
        v = np.asarray(values, dtype=np.float64).ravel()
        with np.errstate(over="ignore", invalid="ignore"):  # a sum beyond 1.8e308 is inf, not a warning
            blocks = np.add.reduceat(v, np.arange(0, len(v), 1024)) if len(v) > 1024 else v
            try:
                s = math.fsum(blocks.tolist())
            except (ValueError, OverflowError):  # inf - inf, or an intermediate overflow: NumPy's answer
                s = float(np.sum(v))
        self.add(s)
        return s

    def merge(self, other: "CompensatedSum") -> None:
        self.add(other.s)
        self.add(other.c)

    @property
    def value(self) -> float:
        return self.s + self.c if math.isfinite(self.s) else self.s

    def to_dict(self) -> dict:
        return {"s": _f(self.s), "c": _f(self.c)}

    @classmethod
    def from_dict(cls, d: dict) -> "CompensatedSum":
        return cls(_u(d["s"]), _u(d["c"]))


class _Store:
    """Bucket counts of one sign: a dense window of int64 counts (keys ``lo .. lo+len-1``) plus a
    small dict for keys far outside it (±1,000,000: infinities; keys of tiny ``alpha``), so
    updating and merging are array additions and the window stays small (|key| <= 74,500 for any
    finite float64 at the default ``alpha``)."""

    __slots__ = ("lo", "counts", "far")

    def __init__(self):
        self.lo = 0
        self.counts = np.zeros(0, dtype=np.int64)
        self.far: dict[int, int] = {}

    def add_counts(self, lo: int, counts: np.ndarray) -> None:
        """Add ``counts[i]`` to key ``lo + i``."""
        if not len(self.counts):
            self.lo, self.counts = lo, counts.astype(np.int64, copy=True)
            return
        a = min(self.lo, lo)
        b = max(self.lo + len(self.counts), lo + len(counts))
        if a != self.lo or b != self.lo + len(self.counts):
            grown = np.zeros(b - a, dtype=np.int64)
            grown[self.lo - a : self.lo - a + len(self.counts)] = self.counts
            self.lo, self.counts = a, grown
        self.counts[lo - a : lo - a + len(counts)] += counts

    def add_keys(self, keys: np.ndarray) -> None:
        """Count integer keys (int64 array)."""
        far = np.abs(keys) > _DENSE_KEYS
        if far.any():
            fk = np.sort(keys[far])
            starts = np.flatnonzero(np.concatenate(([True], fk[1:] != fk[:-1])))
            ns = np.diff(np.concatenate((starts, [len(fk)])))
            for k, c in zip(fk[starts].tolist(), ns.tolist()):
                self.far[k] = self.far.get(k, 0) + c
            keys = keys[~far]
            if not len(keys):
                return
        lo = int(keys.min())
        self.add_counts(lo, np.bincount(keys - lo))

    def merge(self, other: "_Store") -> None:
        if len(other.counts):
            self.add_counts(other.lo, other.counts)
        for k, c in other.far.items():
            self.far[k] = self.far.get(k, 0) + c

    def total(self) -> int:
        return int(self.counts.sum()) + sum(self.far.values())

    def keys_counts(self) -> tuple[np.ndarray, np.ndarray]:
        """Occupied keys in increasing order, with their counts."""
        nz = np.flatnonzero(self.counts)
        keys = nz + self.lo
        counts = self.counts[nz]
        if self.far:
            fk = np.array(list(self.far), dtype=np.int64)
            keys = np.concatenate((keys, fk))
            counts = np.concatenate((counts, np.array([self.far[k] for k in fk.tolist()], dtype=np.int64)))
            order = np.argsort(keys, kind="stable")
            keys, counts = keys[order], counts[order]
        return keys, counts

    def as_dict(self) -> dict[int, int]:
        keys, counts = self.keys_counts()
        return dict(zip(keys.tolist(), counts.tolist()))

    @classmethod
    def from_mapping(cls, m: dict[int, int]) -> "_Store":
        s = cls()
        if m:
            keys = np.array(list(m), dtype=np.int64)
            counts = np.array(list(m.values()), dtype=np.int64)
            far = np.abs(keys) > _DENSE_KEYS
            for k, c in zip(keys[far].tolist(), counts[far].tolist()):
                s.far[k] = c
            keys, counts = keys[~far], counts[~far]
            if len(keys):
                lo = int(keys.min())
                dense = np.zeros(int(keys.max()) - lo + 1, dtype=np.int64)
                np.add.at(dense, keys - lo, counts)
                s.lo, s.counts = lo, dense
        return s


_SKETCH_BLOCK = 1 << 16  # values per block of a sketch update (512 KiB of float64: stays in cache)
_DENSE_KEYS = 1 << 17  # keys beyond ±131,072 are kept in a dict (see _Store)
_MAX_KEY = 1_000_000  # the bucket of +inf (bucket numbers never exceed this magnitude)
_MIN_NORMAL = 2.2250738585072014e-308  # below: subnormal floats, keyed as v·2^64 (exact) shifted back
MAPPING = "linear"  # the bucket mapping's name in saved states (earlier lossctl: logarithmic, refused)


def mapping_bits(alpha: float) -> int:
    """Mantissa bits of the bucket mapping for relative accuracy ``alpha``: the fewest ``b`` with
    1/(2^(b+1)+1) <= alpha (7 for the default 0.005, so the true bound is 1/257 = 0.00389)."""
    if not 0.001 <= alpha < 1:
        raise ValueError(f"quantile sketch accuracy {alpha!r} outside [0.001, 1)")
    b = 0
    while 1.0 / (2 ** (b + 1) + 1) > alpha:
        b += 1
    return b


class QuantileSketch:
    """Quantiles with relative error at most ``alpha`` from buckets of the float's own bits.

    The mapping is DDSketch's linearly interpolated one with a power-of-two multiplier: write a
    positive value as ``v = m·2^e`` (1 <= m < 2) and let ``L(v) = e + (m - 1)``, a monotone,
    piecewise linear stand-in for log2 v; v falls in bucket ``k = ceil(L(v)·2^b)``. For a normal
    float64 that is exactly ``((bits(v) - 1) >> (52 - b)) + 1 - 1023·2^b`` on its IEEE bits: two
    integer operations per value, no logarithm and no rounding. A bucket holds the values in
    ``(lo, hi]`` with ``hi/lo <= 1 + 2^-b``; its representative ``2·lo·hi/(lo+hi)`` is within
    ``1/(2^(b+1)+1) <= alpha`` of every value in it (``mapping_bits``). Subnormal values are
    keyed as ``v·2^64`` (exact) with the key shifted back by 64·2^b, so their buckets obey the same
    definition (a representative there is a float too: within alpha plus half a subnormal
    step, 2^-1075, of the value); +inf gets bucket 1,000,000. Negative values use a mirrored store; exact zeros are counted apart.
    Bucket counts add, so sketches merge exactly; the keys do not depend on how the values were
    chunked or split across threads.
    """

    def __init__(self, alpha: float = 0.005):
        self.alpha = alpha
        self.bits = mapping_bits(alpha)
        self._shift = 52 - self.bits
        self._base = (1023 << self.bits) - 1  # key = ((bits - 1) >> shift) - base
        self._pos = _Store()
        self._neg = _Store()
        self.zero = 0
        self.nan = 0

    @property
    def pos(self) -> dict[int, int]:
        """Bucket number → count of the positive values."""
        return self._pos.as_dict()

    @property
    def neg(self) -> dict[int, int]:
        """Bucket number → count of the negative values (bucket of -v)."""
        return self._neg.as_dict()

    def _add_store(self, store: _Store, v: np.ndarray) -> None:
        """Count positive values ``v`` (float64) in their buckets.

        Large chunks are split into contiguous parts counted on the kernels' thread pool
        (``LOSSCTL_THREADS``), each walked in cache-sized blocks with reused buffers; counts are
        integers, so the result does not depend on the split."""
        if not len(v):
            return
        from lossctl.losses._common import row_parts  # the kernels' pool (imported on first use)

        for part in row_parts(len(v), len(v), lambda a, b: self._bucket_counts(v[a:b])):
            store.merge(part)

    def _raw_keys(self, vb: np.ndarray, out: np.ndarray) -> np.ndarray:
        """``(bits(v) - 1) >> shift`` for positive normal float64 ``vb``, into ``out`` (int64)."""
        np.subtract(vb.view(np.int64), 1, out=out)
        np.right_shift(out, self._shift, out=out)
        return out

    def _bucket_counts(self, v: np.ndarray) -> _Store:
        """The buckets of positive values ``v``, as a new store."""
        out = _Store()
        v = np.ascontiguousarray(v)
        for a in range(0, len(v), _SKETCH_BLOCK):
            vb = v[a : a + _SKETCH_BLOCK]
            self._count_block(out, vb, float(vb.min()), float(vb.max()))
        return out

    def _count_block(self, out: _Store, vb: np.ndarray, lo: float, hi: float) -> None:
        """Add the buckets of one block ``vb`` of positive values (min ``lo``, max ``hi``) to ``out``.

        The keys are monotone in the value, so the block's key range is that of ``lo`` and ``hi``,
        and ``(bits - 1 - (rmin << shift)) >> shift`` is each value's offset in it: two integer
        passes, then one bincount."""
        from lossctl.losses._common import scratch

        base, shift = self._base, self._shift
        if lo < _MIN_NORMAL or hi == math.inf:  # subnormal values or +inf: the general path
            raw = self._raw_keys(vb, np.empty(len(vb), np.int64))
            sub = vb < _MIN_NORMAL
            if sub.any():
                scaled = vb[sub] * 2.0**64
                raw[sub] = self._raw_keys(scaled, np.empty(len(scaled), np.int64)) - (64 << self.bits)
            keys = raw - base
            keys[np.isinf(vb)] = _MAX_KEY
            out.add_keys(keys)
            return
        rmin = (int(np.float64(lo).view(np.int64)) - 1) >> shift
        rmax = (int(np.float64(hi).view(np.int64)) - 1) >> shift
        if max(base - rmin, rmax - base) > _DENSE_KEYS:
            out.add_keys(self._raw_keys(vb, np.empty(len(vb), np.int64)) - base)
            return
        raw = scratch("sketch-key", (len(vb),), np.int64)
        np.subtract(vb.view(np.int64), 1 + (rmin << shift), out=raw)
        np.right_shift(raw, shift, out=raw)
        out.add_counts(rmin - base, np.bincount(raw, minlength=rmax - rmin + 1))

    def update(self, values: np.ndarray) -> None:
        v = np.asarray(values, dtype=np.float64).ravel()
        if not len(v):
            return
        lo = v.min()
        if math.isnan(lo):
            nan = np.isnan(v)
            self.nan += int(nan.sum())
            v = v[~nan]
            if not len(v):
                return
            lo = v.min()
        if lo > 0:  # the common case for losses: one store, no selections
            self._add_store(self._pos, v)
            return
        self.zero += int(np.count_nonzero(v == 0))
        self._add_store(self._pos, v[v > 0])
        self._add_store(self._neg, -v[v < 0])

    def merge(self, other: "QuantileSketch") -> None:
        if other.alpha != self.alpha:
            raise ValueError("cannot merge quantile sketches with different accuracy")
        self._pos.merge(other._pos)
        self._neg.merge(other._neg)
        self.zero += other.zero
        self.nan += other.nan

    def _value(self, key: int) -> float:
        """The representative of bucket ``key``: the value within the same relative distance of
        both ends of ``(lo, hi]`` (their harmonic mean)."""
        if key >= _MAX_KEY:  # the bucket of +inf
            return math.inf
        r = int(key) - 1
        e = r >> self.bits
        step = 2.0**-self.bits
        lo = 1.0 + (r - (e << self.bits)) * step
        hi = lo + step
        return math.ldexp(2.0 * lo * hi / (lo + hi), e)

    @property
    def count(self) -> int:
        return self._pos.total() + self._neg.total() + self.zero

    def quantile(self, q: float) -> float:
        n = self.count
        if n == 0:
            return float("nan")
        rank = q * (n - 1)
        nk, nc = self._neg.keys_counts()
        pk, pc = self._pos.keys_counts()
        # Values in increasing order: negative buckets from the largest key, zeros, positive buckets.
        counts = np.concatenate((nc[::-1], [self.zero], pc))
        i = int(np.searchsorted(np.cumsum(counts), rank, side="right"))  # first with (count seen) > rank
        if i < len(nc):
            return -self._value(int(nk[::-1][i]))
        if i == len(nc):
            return 0.0
        if i - len(nc) - 1 < len(pk):
            return self._value(int(pk[i - len(nc) - 1]))
        return self._value(int(pk[-1])) if len(pk) else 0.0

    def to_dict(self) -> dict:
        return {
            "alpha": self.alpha,
            "mapping": MAPPING,
            "pos": {str(k): v for k, v in self.pos.items()},
            "neg": {str(k): v for k, v in self.neg.items()},
            "zero": self.zero,
            "nan": self.nan,
        }

    @classmethod
    def from_dict(cls, d: dict) -> "QuantileSketch":
        if d.get("mapping") != MAPPING:
            raise ValueError(
                "a quantile sketch with logarithmic buckets, saved by an earlier lossctl, does not merge with "
                "this lossctl's sketches (their bucket boundaries differ); recompute it with this lossctl"
            )
        s = cls(d["alpha"])
        s._pos = _Store.from_mapping({int(k): int(v) for k, v in d["pos"].items()})
        s._neg = _Store.from_mapping({int(k): int(v) for k, v in d["neg"].items()})
        s.zero = int(d["zero"])
        s.nan = int(d["nan"])
        return s


def _quantiles(vals: np.ndarray, qs) -> np.ndarray:
    """np.quantile's default (linear) quantiles, from one partial sort, without np.quantile.

    The arithmetic is numpy's own (virtual index (n-1)·q, then its two-sided lerp), so the
    numbers are identical; np.quantile itself would import numpy.ma (10-15 ms of start-up).
    Between two infinite neighbours the result is that infinity, not NaN.
    """
    n = len(vals)
    q = np.asarray(qs, dtype=np.float64)
    virtual = (n - 1) * q
    lo = np.floor(virtual).astype(np.int64)
    hi = np.minimum(lo + 1, n - 1)
    part = np.partition(vals, sorted(set(lo.tolist()) | set(hi.tolist())))  # not np.unique: it imports numpy.ma
    a, b = part[lo], part[hi]
    t = virtual - lo
    with np.errstate(invalid="ignore"):
        diff = b - a
        out = np.where(t >= 0.5, b - diff * (1 - t), a + diff * t)
    return np.where(a == b, a, out)


def _m2(v: np.ndarray, mean: float) -> float:
    """Σ (v - mean)² in cache-sized blocks through a reused buffer (no chunk-sized temporary),
    the blocks' sums added in order."""
    total = 0.0
    for x in _m2_blocks(v, mean, 0, -(-len(v) // _SKETCH_BLOCK)):
        total += x
    return total


def _m2_blocks(v: np.ndarray, mean: float, first: int, stop: int) -> list[float]:
    """Σ (v - mean)² of each block ``first .. stop-1`` of ``_SKETCH_BLOCK`` values.

    einsum, not np.dot: a BLAS call here leaves OpenBLAS threads spinning on the second core
    for ~0.1 s after every chunk, slowing the threaded kernels."""
    if len(v) <= _SKETCH_BLOCK:
        d = v - mean
        return [float(np.einsum("i,i->", d, d))]
    from lossctl.losses._common import scratch

    out = []
    for a in range(first * _SKETCH_BLOCK, min(stop * _SKETCH_BLOCK, len(v)), _SKETCH_BLOCK):
        vb = v[a : a + _SKETCH_BLOCK]
        d = scratch("stats-dev", (len(vb),), np.float64)
        np.subtract(vb, mean, out=d)
        out.append(float(np.einsum("i,i->", d, d)))
    return out


def _first_pass(v: np.ndarray, first: int, stop: int, sk: "QuantileSketch | None"):
    """Blocks ``first .. stop-1`` of ``_SKETCH_BLOCK`` values: (pairwise sums of each 1024 values,
    min, max, a sketch of the values or None). NaN min/max when a value is NaN."""
    sums, lo, hi = [], math.inf, -math.inf
    part = None if sk is None else QuantileSketch(sk.alpha)
    with np.errstate(over="ignore", invalid="ignore"):
        for a in range(first * _SKETCH_BLOCK, min(stop * _SKETCH_BLOCK, len(v)), _SKETCH_BLOCK):
            vb = v[a : a + _SKETCH_BLOCK]
            # as CompensatedSum.update: 1024-value pairwise sums when the chunk has more than 1024 values
            sums.append(np.add.reduceat(vb, np.arange(0, len(vb), 1024)) if len(v) > 1024 else vb)
            bl, bh = float(vb.min()), float(vb.max())
            if math.isnan(bl) or math.isnan(bh):
                lo = hi = math.nan
            elif not math.isnan(lo):
                lo, hi = min(lo, bl), max(hi, bh)
            if part is not None:
                if bl > 0:  # the common case for losses: positive values, one store
                    part._count_block(part._pos, vb, bl, bh)
                else:
                    part.update(vb)
    return (np.concatenate(sums) if len(sums) > 1 else sums[0]), lo, hi, part


class RunningStats:
    """count, compensated sum, mean, variance, min, max and quantiles of a stream."""

    def __init__(self, exact_limit: int = EXACT_LIMIT, alpha: float = 0.005):
        self.count = 0
        self.sum = CompensatedSum()
        self.mean = 0.0
        self.m2 = 0.0  # Σ (x - mean)²
        self.min = math.inf
        self.max = -math.inf
        self.exact_limit = exact_limit
        self.alpha = alpha
        # Exact while the values are kept; the sketch exists only once they are not.
        self._kept: list[np.ndarray] | None = []
        self.sketch: QuantileSketch | None = None
        self.nan_count = 0

    # -- updating -----------------------------------------------------------
    def update(self, values: np.ndarray) -> float:
        """Add a chunk; returns its exactly rounded sum (as ``CompensatedSum.update``).

        Two passes over the chunk in cache-sized blocks, the blocks shared out to the kernels'
        thread pool: the first takes, while a block is in cache, its pairwise sums of 1024 values,
        its min and max and (past the exact limit) its sketch buckets; the second Σ (v - mean)²
        about the chunk's exact mean. Per-block results are combined in block order (sums exactly
        rounded by fsum, bucket counts as integers), so nothing depends on the thread count."""
        v = np.ascontiguousarray(values, dtype=np.float64).ravel()
        n = len(v)
        if not n:
            return 0.0
        keep = self._kept is not None and self.count + n <= self.exact_limit
        sk = None if keep else self._to_sketch()
        from lossctl.losses._common import row_parts

        nblocks = -(-n // _SKETCH_BLOCK)
        parts = row_parts(nblocks, n, lambda a, b: _first_pass(v, a, b, sk))
        with np.errstate(over="ignore", invalid="ignore"):  # inf losses: mean inf, variance nan
            blocks = np.concatenate([p[0] for p in parts]) if len(parts) > 1 else parts[0][0]
            try:
                s_b = math.fsum(blocks.tolist())
            except (ValueError, OverflowError):  # inf - inf, or an intermediate overflow: NumPy's answer
                s_b = float(np.sum(v))
            self.sum.add(s_b)
            mean_b = s_b / n if math.isfinite(s_b) else float(np.mean(v))
            m2s = row_parts(nblocks, n, lambda a, b: _m2_blocks(v, mean_b, a, b))
            m2_b = 0.0
            for part in m2s:
                for x in part:
                    m2_b += x
            self._combine(n, mean_b, m2_b)
        los = [p[1] for p in parts]
        his = [p[2] for p in parts]
        if any(math.isnan(x) for x in los + his):
            self.nan_count += int(np.isnan(v).sum())
            self.min = float("nan")
            self.max = float("nan")
        elif not math.isnan(self.min):
            self.min = min(self.min, *los)
            self.max = max(self.max, *his)
        if keep:
            self._kept.append(v.copy())
        else:
            for p in parts:
                sk.merge(p[3])
        return s_b

    def to_sketch(self) -> None:
        """Keep only the quantile sketch (as once more than ``exact_limit`` values were seen)."""
        self._to_sketch()

    def _to_sketch(self) -> QuantileSketch:
        """Switch from kept values to the bounded-memory sketch (idempotent)."""
        if self.sketch is None:
            self.sketch = QuantileSketch(self.alpha)
            for chunk in self._kept or ():
                self.sketch.update(chunk)
        self._kept = None
        return self.sketch

    def _combine(self, n_b: int, mean_b: float, m2_b: float) -> None:
        n_a = self.count
        n = n_a + n_b
        if n_a == 0:
            self.mean, self.m2 = mean_b, m2_b
        else:
            delta = mean_b - self.mean
            self.mean = self.mean + delta * n_b / n
            self.m2 = self.m2 + m2_b + delta * delta * n_a * n_b / n
        self.count = n

    def merge(self, other: "RunningStats") -> None:
        if other.count == 0:
            return
        self._combine(other.count, other.mean, other.m2)
        self.sum.merge(other.sum)
        self.nan_count += other.nan_count
        if math.isnan(self.min) or math.isnan(other.min):
            self.min = self.max = float("nan")
        else:
            self.min = min(self.min, other.min)
            self.max = max(self.max, other.max)
        if self._kept is not None and other._kept is not None and self.count <= self.exact_limit:
            self._kept.extend(other._kept)
        else:
            theirs = other.sketch if other._kept is None else _sketch_of(other)
            self._to_sketch().merge(theirs)

    # -- results --------------------------------------------------------------
    @property
    def quantiles_exact(self) -> bool:
        return self._kept is not None

    def values(self) -> np.ndarray | None:
        """All values seen, in order, while they are kept; otherwise None."""
        if self._kept is None:
            return None
        return np.concatenate(self._kept) if self._kept else np.empty(0)

    def std(self) -> float:
        """Sample standard deviation (ddof=1), NaN for fewer than two values."""
        if self.count < 2:
            return float("nan")
        return math.sqrt(max(self.m2, 0.0) / (self.count - 1))

    def quantile(self, q: float) -> float:
        return self.quantiles((q,))[0]

    def quantiles(self, qs: tuple[float, ...]) -> list[float]:
        """Several quantiles at once (one partial sort of the kept values)."""
        if self.count == 0:
            return [float("nan")] * len(qs)
        vals = self.values()
        if vals is not None:
            if np.isnan(vals).any():
                return [float("nan")] * len(qs)
            return [float(v) for v in _quantiles(vals, qs)]
        return [self._to_sketch().quantile(q) for q in qs]

    def summary(self) -> dict[str, Any]:
        n = self.count
        nan = float("nan")
        p50, p90, p99 = self.quantiles((0.5, 0.9, 0.99))
        return {
            "count": n,
            "sum": self.sum.value if n else 0.0,
            "mean": (self.sum.value / n) if n else nan,
            "std": self.std(),
            "min": self.min if n else nan,
            "p50": p50,
            "p90": p90,
            "p99": p99,
            "max": self.max if n else nan,
            "quantiles": "exact" if self.quantiles_exact else f"approximate (relative error {self.alpha:g})",
        }

    def to_dict(self, keep_values: bool = True) -> dict:
        d = {
            "count": self.count,
            "sum": self.sum.to_dict(),
            "mean": _f(self.mean),
            "m2": _f(self.m2),
            "min": _f(self.min),
            "max": _f(self.max),
            "nan_count": self.nan_count,
            "exact_limit": self.exact_limit,
            "alpha": self.alpha,
        }
        vals = self.values() if keep_values else None
        d["values"] = None if vals is None else [_f(v) for v in vals.tolist()]
        d["sketch"] = None if vals is not None else _sketch_of(self).to_dict()
        return d

    @classmethod
    def from_dict(cls, d: dict) -> "RunningStats":
        s = cls(exact_limit=int(d["exact_limit"]), alpha=float(d["alpha"]))
        s.count = int(d["count"])
        s.sum = CompensatedSum.from_dict(d["sum"])
        s.mean = _u(d["mean"])
        s.m2 = _u(d["m2"])
        s.min = _u(d["min"])
        s.max = _u(d["max"])
        s.nan_count = int(d["nan_count"])
        vals = d.get("values")
        if vals is None:
            s._kept = None
            s.sketch = QuantileSketch.from_dict(d["sketch"])
        else:
            s._kept = [np.array([_u(v) for v in vals], dtype=np.float64)]
        return s


def _sketch_of(stats: RunningStats) -> QuantileSketch:
    """The sketch of a RunningStats without changing it."""
    if stats.sketch is not None and stats._kept is None:
        return stats.sketch
    sk = QuantileSketch(stats.alpha)
    for chunk in stats._kept or ():
        sk.update(chunk)
    return sk


class TopK:
    """The K largest per-sample values, with their row numbers (ties: lower row first)."""

    def __init__(self, k: int):
        self.k = k
        self.values = np.empty(0, dtype=np.float64)
        self.rows = np.empty(0, dtype=np.int64)

    def update(self, values: np.ndarray, rows: np.ndarray) -> None:
        if self.k <= 0 or not len(values):
            return
        v = np.asarray(values, dtype=np.float64)
        r = np.asarray(rows, dtype=np.int64)
        if len(self.values) == self.k:
            # Only values at least the current K-th largest can enter (NaN compares false).
            keep = v >= self.values[-1]
        else:
            keep = ~np.isnan(v)
        if not keep.all():
            v, r = v[keep], r[keep]
        if not len(v):
            return
        if len(v) > self.k:
            part = np.argpartition(-v, self.k - 1)[: self.k]
            # argpartition may cut ties arbitrarily; take every value >= the cut.
            cut = v[part].min()
            sel = np.flatnonzero(v >= cut)
            v, r = v[sel], r[sel]
        self._set(np.concatenate([self.values, v]), np.concatenate([self.rows, r]))

    def _set(self, v: np.ndarray, r: np.ndarray) -> None:
        order = np.lexsort((r, -v))[: self.k]
        self.values, self.rows = v[order], r[order]

    def merge(self, other: "TopK") -> None:
        self._set(np.concatenate([self.values, other.values]), np.concatenate([self.rows, other.rows]))

    def to_dict(self) -> dict:
        return {"k": self.k, "values": [_f(v) for v in self.values.tolist()], "rows": self.rows.tolist()}

    @classmethod
    def from_dict(cls, d: dict) -> "TopK":
        t = cls(int(d["k"]))
        t.values = np.array([_u(v) for v in d["values"]], dtype=np.float64)
        t.rows = np.array(d["rows"], dtype=np.int64)
        return t


def _poisson_table() -> np.ndarray:
    """Map a uniform 16-bit integer to a Poisson(1) draw (inversion; exact to 2**-16 per value)."""
    cdf, p, k = [], math.exp(-1.0), 0
    acc = 0.0
    while acc < 1.0 - 2.0**-17 and k < 16:
        acc += p
        cdf.append(acc)
        k += 1
        p /= k
    thresholds = np.round(np.array(cdf) * 65536).astype(np.int64)
    return np.searchsorted(thresholds, np.arange(65536), side="right").astype(np.uint8)


_POISSON = None
BOOT_BLOCK = 1024  # rows per block of bootstrap weights


class PoissonBootstrap:
    """Streaming bootstrap of a ratio estimate Σnum / Σden (the headline value).

    Every row gets an independent Poisson(1) weight in each of ``n`` resamples, so a
    resample's sums are ``Σ w·num`` and ``Σ w·den``: one pass, memory O(n), and states
    merge by adding sums. The weights are a pure function of (seed, absolute row number)
    (blocks of BOOT_BLOCK rows drawn from PCG64 seeded with [seed, block]), so the
    interval does not depend on how the input was chunked.
    """

    def __init__(self, n: int, seed: int):
        self.n = int(n)
        self.seed = int(seed)
        self.num = np.zeros(self.n)
        self.den = np.zeros(self.n)
        # Losses whose headline is a function of per-bin sums (ece): per resample and bin, the
        # resampled row count, Σ confidence and Σ correct (shape (n, bins)); None otherwise.
        self.bins: dict[str, np.ndarray] | None = None

    @staticmethod
    def weights(seed: int, n: int, block: int) -> np.ndarray:
        global _POISSON
        if _POISSON is None:
            _POISSON = _poisson_table()
        rng = np.random.Generator(np.random.PCG64([seed, block]))
        u = np.frombuffer(rng.bytes(n * BOOT_BLOCK * 2), dtype=np.uint16).reshape(n, BOOT_BLOCK)
        return _POISSON[u]

    def update(self, num: np.ndarray, den: np.ndarray | None, rows: np.ndarray) -> None:
        """Add rows (absolute row numbers ``rows``) with their headline numerators/denominators."""
        if not len(rows):
            return
        num = np.asarray(num, dtype=np.float64)
        den = np.ones(len(rows)) if den is None else np.asarray(den, dtype=np.float64)
        blocks = rows // BOOT_BLOCK
        for b in np.unique(blocks).tolist():
            sel = blocks == b
            cols = rows[sel] % BOOT_BLOCK
            w = self.weights(self.seed, self.n, b)[:, cols].astype(np.float64)
            self.num += np.einsum("ij,j->i", w, num[sel])  # not BLAS: see RunningStats.update
            self.den += np.einsum("ij,j->i", w, den[sel])

    def update_bins(self, bin_index: np.ndarray, conf: np.ndarray, hit: np.ndarray, rows: np.ndarray, k: int) -> None:
        """Add rows to the per-resample bin sums (count, Σ conf, Σ hit) of ``k`` bins; rows whose
        bin index is not finite (NaN rows under nan propagate) are left out, as in the table."""
        bin_index = np.asarray(bin_index, dtype=np.float64)
        ok = np.isfinite(bin_index)
        if self.bins is None:
            self.bins = {key: np.zeros((self.n, k)) for key in ("n", "conf", "hit")}
        if not ok.all():
            bin_index, conf, hit, rows = bin_index[ok], np.asarray(conf)[ok], np.asarray(hit)[ok], rows[ok]
        if not len(rows):
            return
        kb = bin_index.astype(np.int64)
        conf = np.asarray(conf, dtype=np.float64)
        hit = np.asarray(hit, dtype=np.float64)
        blocks = rows // BOOT_BLOCK
        for b in np.unique(blocks).tolist():
            sel = np.flatnonzero(blocks == b)
            sel = sel[np.argsort(kb[sel], kind="stable")]  # rows of one bin next to each other
            keys = kb[sel]
            starts = np.flatnonzero(np.r_[True, keys[1:] != keys[:-1]])
            w = self.weights(self.seed, self.n, b)[:, rows[sel] % BOOT_BLOCK].astype(np.float64)
            where = keys[starts]
            self.bins["n"][:, where] += np.add.reduceat(w, starts, axis=1)
            self.bins["conf"][:, where] += np.add.reduceat(w * conf[sel], starts, axis=1)
            self.bins["hit"][:, where] += np.add.reduceat(w * hit[sel], starts, axis=1)

    def bin_estimates(self, headline) -> np.ndarray:
        """Each resample's headline from its bin sums: ``headline(bins, total)`` with bins as the
        reliability table's dicts (count, confidence, accuracy)."""
        out = np.full(self.n, np.nan)
        if self.bins is None:
            return out
        n, c, h = self.bins["n"], self.bins["conf"], self.bins["hit"]
        for r in range(self.n):
            full = n[r] > 0
            bins = [
                {"count": float(n[r, j]), "confidence": float(c[r, j] / n[r, j]), "accuracy": float(h[r, j] / n[r, j])}
                for j in np.flatnonzero(full).tolist()
            ]
            out[r] = headline(bins, float(n[r].sum()))
        return out

    def merge(self, other: "PoissonBootstrap") -> None:
        if (other.n, other.seed) != (self.n, self.seed):
            raise ValueError("cannot merge bootstrap states with different resamples or seeds")
        self.num += other.num
        self.den += other.den
        if other.bins is not None:
            if self.bins is None:
                self.bins = {key: v.copy() for key, v in other.bins.items()}
            elif self.bins["n"].shape != other.bins["n"].shape:
                raise ValueError("cannot merge bootstrap bin sums with different numbers of bins")
            else:
                for key in self.bins:
                    self.bins[key] += other.bins[key]

    def estimates(self, reduction: str = "mean") -> np.ndarray:
        if reduction == "sum":
            return self.num.copy()
        with np.errstate(invalid="ignore", divide="ignore"):
            return self.num / self.den

    def interval(self, level: float, reduction: str = "mean") -> tuple[float, float]:
        """Percentile interval of the resampled headline values."""
        est = self.estimates(reduction)
        est = est[np.isfinite(est)]
        if not len(est):
            return float("nan"), float("nan")
        lo, hi = np.quantile(est, [(1 - level) / 2, (1 + level) / 2])
        return float(lo), float(hi)

    def to_dict(self) -> dict:
        d = {"n": self.n, "seed": self.seed, "num": [_f(v) for v in self.num], "den": [_f(v) for v in self.den]}
        if self.bins is not None:
            d["bins"] = {key: [[_f(v) for v in row] for row in arr.tolist()] for key, arr in self.bins.items()}
        return d

    @classmethod
    def from_dict(cls, d: dict) -> "PoissonBootstrap":
        b = cls(int(d["n"]), int(d["seed"]))
        b.num = np.array([_u(v) for v in d["num"]], dtype=np.float64)
        b.den = np.array([_u(v) for v in d["den"]], dtype=np.float64)
        if d.get("bins") is not None:
            b.bins = {key: np.array([[_u(v) for v in row] for row in d["bins"][key]], dtype=np.float64) for key in ("n", "conf", "hit")}
        return b
