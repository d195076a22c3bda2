"""Ragged rows: one variable-length list of numbers per sample (e.g. per-token log-probabilities).

A ``Ragged`` holds ``values`` (all rows' numbers, concatenated) and ``offsets``
(``n + 1`` positions; row ``i`` is ``values[offsets[i]:offsets[i+1]]``). It
supports what the engine and kernels need: length, row selection, concatenation,
per-row sums/means (``np.add.reduceat`` without empty-row pitfalls) and NaN rows.
"""

from __future__ import annotations

import numpy as np


class Ragged:
    is_ragged = True
    ndim = 2

    def __init__(self, values: np.ndarray, offsets: np.ndarray):
        self.values = np.asarray(values)
        self.offsets = np.asarray(offsets, dtype=np.int64)
        if self.offsets.ndim != 1 or len(self.offsets) == 0 or self.offsets[0] != 0:
            raise ValueError("offsets must start at 0")
        if self.offsets[-1] != len(self.values):
            raise ValueError("offsets must end at len(values)")

    # -- construction -------------------------------------------------------------
    @classmethod
    def from_lists(cls, rows, dtype=np.float64) -> "Ragged":
        lengths = np.array([len(r) for r in rows], dtype=np.int64)
        offsets = np.zeros(len(rows) + 1, dtype=np.int64)
        np.cumsum(lengths, out=offsets[1:])
        values = (
            np.concatenate([np.asarray(r, dtype=dtype) for r in rows])
            if len(rows) and offsets[-1]
            else np.empty(0, dtype)
        )
        return cls(values, offsets)

    @classmethod
    def from_padded(cls, a: np.ndarray) -> "Ragged":
        """An (N, T, ...) array as N rows of T elements each (of shape ``a.shape[2:]``)."""
        a = np.asarray(a)
        n, t = a.shape[:2]
        return cls(a.reshape((n * t,) + a.shape[2:]), np.arange(n + 1, dtype=np.int64) * t)

    @classmethod
    def concatenate(cls, parts: list["Ragged"]) -> "Ragged":
        parts = [p if isinstance(p, Ragged) else cls.from_padded(p) for p in parts]
        values = np.concatenate([p.values for p in parts])
        offs = [np.zeros(1, dtype=np.int64)]
        base = 0
        for p in parts:
            offs.append(p.offsets[1:] + base)
            base += int(p.offsets[-1])
        return cls(values, np.concatenate(offs))

    # -- array-like ------------------------------------------------------------------
    def __len__(self) -> int:
        return len(self.offsets) - 1

    @property
    def shape(self) -> tuple:
        return (len(self), None)

    @property
    def dtype(self):
        return self.values.dtype

    @property
    def lengths(self) -> np.ndarray:
        return np.diff(self.offsets)

    def row(self, i: int) -> np.ndarray:
        return self.values[self.offsets[i] : self.offsets[i + 1]]

    def tolist(self) -> list[list[float]]:
        return [self.row(i).tolist() for i in range(len(self))]

    def __getitem__(self, idx) -> "Ragged":
        if isinstance(idx, slice):
            start, stop, step = idx.indices(len(self))
            if step == 1:
                lo, hi = self.offsets[start], self.offsets[max(stop, start)]
                return Ragged(self.values[lo:hi], self.offsets[start : max(stop, start) + 1] - lo)
            idx = np.arange(start, stop, step)
        idx = np.asarray(idx)
        if idx.dtype == bool:
            idx = np.flatnonzero(idx)
        lengths = self.lengths[idx]
        offsets = np.zeros(len(idx) + 1, dtype=np.int64)
        np.cumsum(lengths, out=offsets[1:])
        take = self.element_index(idx)
        return Ragged(self.values[take], offsets)

    def element_index(self, rows: np.ndarray) -> np.ndarray:
        """Positions in ``values`` of every element of ``rows``, in order."""
        rows = np.asarray(rows, dtype=np.int64)
        lengths = self.lengths[rows]
        total = int(lengths.sum())
        if total == 0:
            return np.empty(0, dtype=np.int64)
        starts = self.offsets[rows]
        # position k of row r -> starts[r] + k, built without a Python loop
        row_of = np.repeat(np.arange(len(rows)), lengths)
        first = np.zeros(len(rows), dtype=np.int64)
        np.cumsum(lengths[:-1], out=first[1:])
        return starts[row_of] + (np.arange(total) - first[row_of])

    def with_values(self, values: np.ndarray) -> "Ragged":
        return Ragged(values, self.offsets)

    def row_ids(self) -> np.ndarray:
        """The row of each element of ``values``."""
        return np.repeat(np.arange(len(self)), self.lengths)

    # -- per-row reductions ---------------------------------------------------------
    def sum_rows(self, values: np.ndarray | None = None) -> np.ndarray:
        """Σ over each row (0 for empty rows), float64."""
        v = np.asarray(self.values if values is None else values, dtype=np.float64)
        out = np.zeros(len(self), dtype=np.float64)
        nonempty = self.lengths > 0
        if nonempty.any():
            # reduceat over the starts of non-empty rows: each segment ends where the next
            # non-empty row starts (empty rows in between have no elements).
            out[nonempty] = np.add.reduceat(v, self.offsets[:-1][nonempty])
        return out

    def nan_rows(self) -> np.ndarray:
        if self.values.dtype.kind != "f" or not len(self.values):
            return np.zeros(len(self), dtype=bool)
        bad = np.isnan(self.values)
        if not bad.any():
            return np.zeros(len(self), dtype=bool)
        if bad.ndim > 1:  # one vector per element (ragged logits): a NaN anywhere in it
            bad = bad.reshape(len(bad), -1).any(axis=1)
        return self.sum_rows(bad.astype(np.float64)) > 0

    def astype(self, dtype) -> "Ragged":
        return Ragged(self.values.astype(dtype), self.offsets)

    def __repr__(self) -> str:
        return f"Ragged({len(self)} rows, {len(self.values)} values)"
