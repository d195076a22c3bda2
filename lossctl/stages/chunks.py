"""Reading helpers of stage 1: read-ahead on a thread, exact-size takes from a stream of
batches, concatenation of blocks (arrays or ragged lists), NaN-row masks."""

from __future__ import annotations

import numpy as np

from lossctl.io.sources import GROUP_KEY, ID_KEY, Reader
from lossctl.ragged import Ragged

NAN_PREFIX = "__nan__:"


class Prefetch:
    """Iterate ``it`` on a background thread, ``depth`` items ahead, so reading overlaps computing.

    pyarrow and NumPy release the GIL while they read and decode, so one reader thread
    keeps the next chunk ready while the main thread computes. Exceptions (a DataError on a
    corrupt row group, say) are re-raised in the main thread, in order; closing the
    iterator stops the thread.
    """

    def __init__(self, it, depth: int = 2):
        import queue
        import threading

        self._q: "queue.Queue" = queue.Queue(maxsize=depth)
        self._stop = threading.Event()
        self._finished = False
        self._it = it
        self._thread = threading.Thread(target=self._run, name="lossctl-reader", daemon=True)
        self._thread.start()

    def _put(self, item) -> bool:
        import queue

        while not self._stop.is_set():
            try:
                self._q.put(item, timeout=0.1)
                return True
            except queue.Full:
                continue
        return False

    def _run(self) -> None:
        try:
            for item in self._it:
                if not self._put(("item", item)):
                    return
            self._put(("done", None))
        except BaseException as exc:  # noqa: BLE001 - handed to the consumer
            self._put(("error", exc))

    def __iter__(self):
        return self

    def __next__(self):
        if self._finished:
            raise StopIteration
        kind, value = self._q.get()
        if kind == "item":
            return value
        self._finished = True
        self._stop.set()
        if kind == "error":
            raise value
        raise StopIteration

    def close(self) -> None:
        self._stop.set()


def with_nan_masks(batch: dict) -> dict:
    """Add each value column's NaN-row mask (computed where the batch is read, off the main thread)."""
    for key, arr in list(batch.items()):
        if key not in (ID_KEY, GROUP_KEY):
            m = nan_rows(arr)
            batch[NAN_PREFIX + key] = np.zeros(len(arr), dtype=bool) if m is None else m
    return batch


class Cursor:
    """Takes exactly k rows at a time from a reader's batches, whatever their sizes."""

    def __init__(self, sources, reader: Reader, rows: int):
        self.reader = reader
        self.it = sources.batches(reader, rows)
        self.buf: dict[str, np.ndarray] | None = None
        self.n = 0
        self.pos = 0
        self.done = False

    def take(self, k: int) -> dict[str, list[np.ndarray]]:
        pieces: dict[str, list[np.ndarray]] = {}
        need = k
        while need > 0 and not self.done:
            if self.buf is None or self.pos >= self.n:
                try:
                    self.buf = next(self.it)
                except StopIteration:
                    self.done = True
                    break
                self.n = len(next(iter(self.buf.values())))
                self.pos = 0
                continue
            step = min(need, self.n - self.pos)
            for key, arr in self.buf.items():
                pieces.setdefault(key, []).append(arr[self.pos : self.pos + step])
            self.pos += step
            need -= step
        return pieces

    def drain(self) -> int:
        rest = self.n - self.pos if self.buf is not None else 0
        for batch in self.it:
            rest += len(next(iter(batch.values())))
        self.done = True
        return rest


def cat(parts: list[np.ndarray]) -> np.ndarray:
    if len(parts) == 1:
        return parts[0]
    if any(getattr(p, "is_ragged", False) for p in parts):  # (blocks of equal lengths may be arrays)
        return Ragged.concatenate(parts)
    return np.concatenate(parts)


def nan_rows(a, counted: Ragged | None = None) -> np.ndarray | None:
    """Rows holding a NaN (None: none); ``counted``: the tokens a mask counts (others may be NaN)."""
    if getattr(a, "is_ragged", False):
        if counted is not None and np.array_equal(a.offsets, counted.offsets) and a.values.dtype.kind == "f":
            return a.with_values(np.isnan(a.values) & counted.values).sum_rows() > 0
        return a.nan_rows()
    if a.dtype.kind != "f" or not len(a):
        return None
    flat = a.reshape(len(a), -1)
    with np.errstate(over="ignore", invalid="ignore"):
        # One pass over the chunk: its sum is NaN if any value is (or if +inf meets -inf);
        # only then look at rows.
        if not np.isnan(np.add.reduce(flat, axis=None)):
            return None
        s = np.einsum("ij->i", flat)
    cand = np.isnan(s)
    if not cand.any():
        return None
    out = np.zeros(len(a), dtype=bool)
    idx = np.flatnonzero(cand)
    out[idx] = np.isnan(flat[idx]).any(axis=1)
    return out


def py(v):
    return v.item() if isinstance(v, np.generic) else v
