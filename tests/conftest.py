"""Shared test helpers: run the real CLI in-process, and write inputs in every format."""

from __future__ import annotations

import io
import math
import os
import sys
from dataclasses import dataclass

import numpy as np
import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SAMPLE = os.path.join(ROOT, "sample_data")


@dataclass
class Result:
    code: int
    out: str
    err: str

    @property
    def json(self):
        import json

        return json.loads(self.out)


class _Stdin(io.TextIOWrapper):
    def isatty(self) -> bool:  # pipes are not terminals
        return False


def run_cli(args: list[str], stdin: bytes | None = None, tty_stdin: bool = False) -> Result:
    """Run `lossctl ARGS` through the real entry point, capturing stdout/stderr/exit code."""
    from lossctl.cli import main

    out_b, err_b = io.BytesIO(), io.BytesIO()
    out = io.TextIOWrapper(out_b, encoding="utf-8", write_through=True)
    err = io.TextIOWrapper(err_b, encoding="utf-8", write_through=True)
    old = sys.stdout, sys.stderr, sys.stdin
    sys.stdout, sys.stderr = out, err
    if tty_stdin:

        class _Tty(io.TextIOWrapper):
            def isatty(self) -> bool:
                return True

        sys.stdin = _Tty(io.BytesIO(b""))
    elif stdin is not None:
        sys.stdin = _Stdin(io.BytesIO(stdin))
    try:
        try:
            main([str(a) for a in args])
            code = 0
        except SystemExit as exc:
            code = exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
    finally:
        out.flush()
        err.flush()
        sys.stdout, sys.stderr, sys.stdin = old
    return Result(code, out_b.getvalue().decode(), err_b.getvalue().decode())


@pytest.fixture
def cli():
    return run_cli


def assert_clean_error(res: Result, code: int, *needles: str) -> None:
    """An error: the expected exit code, one short message naming things, no traceback."""
    assert res.code == code, (res.code, res.out, res.err)
    assert "Traceback" not in res.err, res.err
    assert res.out == "", res.out
    for n in needles:
        assert n in res.err, (n, res.err)


# ---------------------------------------------------------------------------
# Writing the same arrays in every format
# ---------------------------------------------------------------------------


def ref_log_softmax(row):
    """log-softmax of one row of logits in float64 Python: max-shifted, math.fsum, no NumPy."""
    m = max(row)
    lse = m + math.log(math.fsum(math.exp(v - m) for v in row))
    return [v - lse for v in row]


def finite_difference(f, x, h=1e-6, *, side=0, relative=False, batched=False):
    """d f(x)[n] / d x[n] by differences in float64, the shape of x (flat values for a Ragged).

    f maps an input like x (an array whose first axis is rows, or a Ragged) to per-row values.
    Rows are independent, so one position of every row moves at once; with batched=True (rows
    share terms) one element at a time. side=0: central differences; +1/-1: one-sided. The step
    is h, or h * max(1, |x|) with relative=True."""
    from lossctl.ragged import Ragged

    ragged = isinstance(x, Ragged)
    values = np.asarray(x.values if ragged else x, dtype=np.float64)
    flat = values.reshape(-1)
    step = h * np.maximum(1.0, np.abs(flat)) if relative else np.full(flat.shape, float(h))
    if ragged:
        rows = x.row_ids()
        pos = np.arange(len(flat)) - x.offsets[rows]
    else:
        per_row = flat.size // max(len(values), 1)
        rows = np.repeat(np.arange(len(values)), per_row)
        pos = np.tile(np.arange(per_row), len(values))
    if batched:
        groups = [np.array([j]) for j in range(flat.size)]
    else:
        groups = [np.flatnonzero(pos == k) for k in range(int(pos.max()) + 1)] if flat.size else []

    def moved(where, sign):
        v = flat.copy()
        v[where] += sign * step[where]
        return x.with_values(v) if ragged else v.reshape(values.shape)

    g = np.zeros_like(flat)
    for where in groups:
        hi = f(moved(where, 1.0 if side >= 0 else 0.0))
        lo = f(moved(where, -1.0 if side <= 0 else 0.0))
        g[where] = (hi[rows[where]] - lo[rows[where]]) / ((2.0 if side == 0 else 1.0) * step[where])
    return g if ragged else g.reshape(values.shape)


def write_csv(path, columns: dict[str, np.ndarray], delimiter: str = ",") -> str:
    names = []
    cols = []
    for name, a in columns.items():
        a = np.asarray(a)
        if a.ndim == 1:
            names.append(name)
            cols.append(a)
        else:
            for k in range(a.shape[1]):
                names.append(f"{name}_{k}")
                cols.append(a[:, k])
    with open(path, "w") as fh:
        fh.write(delimiter.join(names) + "\n")
        for i in range(len(cols[0])):
            fh.write(delimiter.join(_cell(c[i]) for c in cols) + "\n")
    return str(path)


def _cell(v) -> str:
    if isinstance(v, (np.floating, float)):
        return repr(float(v))
    return str(v.item() if hasattr(v, "item") else v)


def arrow_table(columns: dict[str, np.ndarray], fixed: bool = True):
    import pyarrow as pa

    arrays = {}
    for name, a in columns.items():
        a = np.asarray(a)
        if a.ndim == 1:
            arrays[name] = pa.array(a)
        elif fixed:
            arrays[name] = pa.FixedSizeListArray.from_arrays(pa.array(a.ravel()), a.shape[1])
        else:
            arrays[name] = pa.array(list(a))
    return pa.table(arrays)


def write_parquet(path, columns, fixed: bool = True, row_group_size: int | None = None) -> str:
    import pyarrow.parquet as pq

    pq.write_table(arrow_table(columns, fixed), str(path), row_group_size=row_group_size)
    return str(path)


def write_arrow(path, columns) -> str:
    import pyarrow.feather as feather

    feather.write_feather(arrow_table(columns), str(path))
    return str(path)
