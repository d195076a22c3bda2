"""Reliability (issue #6): hostile inputs, the NaN policy, numerical extremes, interruptions.

Every bad input goes through the real CLI (``run_cli``) and must give the documented exit
code and one short message that names the file, the column and the row (where there is
one) and says what was expected - never a traceback or an "internal error".
"""

from __future__ import annotations

import csv
import json
import math
import os
import signal
import subprocess
import sys
import time
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np
import pytest

from conftest import ROOT, run_cli, write_arrow, write_csv, write_parquet

# ---------------------------------------------------------------------------
# Shared inputs
# ---------------------------------------------------------------------------

N, C = 300, 4
_rng = np.random.default_rng(6)
LOGITS = (_rng.normal(size=(N, C)) * 2).astype(np.float32)
LABEL = _rng.integers(0, C, size=N)
REG_P = _rng.normal(size=N)
REG_T = _rng.normal(size=N)


def _probs(n: int, c: int) -> np.ndarray:
    p = _rng.random((n, c)) + 0.05
    return p / p.sum(axis=1, keepdims=True)


def _boxes(n: int) -> np.ndarray:
    xy = _rng.random((n, 2)) * 10
    wh = _rng.random((n, 2)) * 5 + 0.5
    return np.hstack([xy, xy + wh])


def npy(d: Path, name: str, a) -> str:
    np.save(d / name, np.asarray(a))
    return str(d / name)


def text(d: Path, name: str, body: str | bytes) -> str:
    p = d / name
    if isinstance(body, bytes):
        p.write_bytes(body)
    else:
        p.write_text(body)
    return str(p)


def ce_files(d: Path) -> tuple[str, str]:
    return npy(d, "x.npy", LOGITS), npy(d, "y.npy", LABEL)


def truncated(d: Path, name: str, path: str, keep: float | int) -> str:
    raw = Path(path).read_bytes()
    cut = int(len(raw) * keep) if isinstance(keep, float) else keep
    return text(d, name, raw[:cut])


def parquet_with_bad_footer(d: Path) -> str:
    path = write_parquet(d / "good.parquet", {"logits": LOGITS, "label": LABEL})
    raw = bytearray(Path(path).read_bytes())
    raw[-8:-4] = (2**31 - 1).to_bytes(4, "little")  # footer length far beyond the file
    return text(d, "badfooter.parquet", bytes(raw))


def arrow_with_bad_batch(d: Path) -> str:
    """A Feather v2 file whose record batch metadata says a different length than its arrays."""
    import pyarrow as pa

    path = write_arrow(d / "good.feather", {"p": REG_P, "t": REG_T})
    raw = bytearray(Path(path).read_bytes())
    # The record batch message stores its length (N) as an int64; make it N + 7.
    needle = int(N).to_bytes(8, "little")
    first = raw.find(needle, 8)
    assert first > 0
    raw[first : first + 8] = int(N + 7).to_bytes(8, "little")
    out = text(d, "bad.feather", bytes(raw))
    with pytest.raises(Exception):  # the corruption is real: pyarrow's validation notices it
        t = pa.ipc.open_file(out).read_all()
        t.validate(full=True)
    return out


def bad_npy_header(d: Path) -> str:
    path = npy(d, "good.npy", REG_P)
    raw = bytearray(Path(path).read_bytes())
    start = raw.find(b"{")
    raw[start : start + 10] = b"{'dscr':!!"
    return text(d, "badheader.npy", bytes(raw))


def pickled_npy(d: Path) -> str:
    np.save(d / "obj.npy", np.array([{"a": 1}, None, 3], dtype=object), allow_pickle=True)
    return str(d / "obj.npy")


def npz_with(d: Path, name: str, **arrays) -> str:
    np.savez(d / name, **arrays)
    return str(d / name)


# ---------------------------------------------------------------------------
# The table of bad inputs
# ---------------------------------------------------------------------------


@dataclass
class Bad:
    id: str
    build: Callable[[Path], list[str]]  # the command line, with files written into the directory
    code: int
    needles: tuple[str, ...]  # the file, the column, the row and what was expected
    tty_stdin: bool = False
    stdin: bytes | Callable[[Path], bytes] | None = None
    click_usage: bool = False  # click's own multi-line usage message (unknown option)


def _mse(p: str, t: str, *extra: str) -> list[str]:
    return ["compute", "mse", p, t, *extra]


def _reg_csv(d: Path, p=REG_P, t=REG_T, name="r.csv") -> str:
    return write_csv(d / name, {"p": p, "t": t})


def _with(a: np.ndarray, idx, value) -> np.ndarray:
    a = np.array(a, dtype=np.float64, copy=True)
    a[idx] = value
    return a


BAD: list[Bad] = [
    # --- missing, empty, truncated, corrupt: every format --------------------------------
    Bad(
        "missing-csv",
        lambda d: _mse(str(d / "nope.csv"), str(d / "t.csv")),
        1,
        ("PRED", "nope.csv", "file not found", "a source is PATH or PATH:COLUMN"),
    ),
    Bad(
        "missing-target-parquet",
        lambda d: ["compute", "ce", ce_files(d)[0], str(d / "labels.parquet") + ":label"],
        1,
        ("TARGET", "labels.parquet", "file not found", "column 'label'"),
    ),
    Bad(
        "empty-csv",
        lambda d: _mse(text(d, "e.csv", "") + ":p", str(d / "e.csv") + ":t"),
        1,
        ("e.csv", "is empty", "Expected CSV"),
    ),
    Bad(
        "empty-tsv",
        lambda d: _mse(text(d, "e.tsv", "") + ":p", str(d / "e.tsv") + ":t"),
        1,
        ("e.tsv", "is empty", "Expected TSV"),
    ),
    Bad(
        "empty-parquet",
        lambda d: _mse(text(d, "e.parquet", "") + ":p", npy(d, "t.npy", REG_T)),
        1,
        ("e.parquet", "is empty", "Expected PARQUET"),
    ),
    Bad(
        "empty-feather",
        lambda d: _mse(text(d, "e.feather", "") + ":p", npy(d, "t.npy", REG_T)),
        1,
        ("e.feather", "is empty", "Expected ARROW"),
    ),
    Bad(
        "empty-npy",
        lambda d: _mse(text(d, "e.npy", ""), npy(d, "t.npy", REG_T)),
        1,
        ("e.npy", "is empty", "Expected NPY"),
    ),
    Bad(
        "empty-npz",
        lambda d: _mse(text(d, "e.npz", "") + ":p", npy(d, "t.npy", REG_T)),
        1,
        ("e.npz", "is empty", "Expected NPZ"),
    ),
    Bad(
        "truncated-parquet",
        lambda d: [
            "compute",
            "ce",
            truncated(d, "cut.parquet", write_parquet(d / "f.parquet", {"logits": LOGITS, "label": LABEL}), 0.6)
            + ":logits",
            ce_files(d)[1],
        ],
        1,
        ("cut.parquet", "not a readable Parquet file", "truncated or corrupt"),
    ),
    Bad(
        "truncated-feather",
        lambda d: _mse(
            truncated(d, "cut.feather", write_arrow(d / "f.feather", {"p": REG_P}), 0.7) + ":p", npy(d, "t.npy", REG_T)
        ),
        1,
        ("cut.feather", "not a readable Arrow IPC / Feather file", "truncated or corrupt"),
    ),
    Bad(
        "truncated-npy-data",
        lambda d: ["compute", "ce", truncated(d, "cut.npy", npy(d, "x.npy", LOGITS), 0.5), npy(d, "y.npy", LABEL)],
        1,
        ("cut.npy", "truncated", "promises 300 rows"),
    ),
    Bad(
        "truncated-npy-header",
        lambda d: _mse(truncated(d, "cut.npy", npy(d, "p.npy", REG_P), 20), npy(d, "t.npy", REG_T)),
        1,
        ("cut.npy", "not a valid NPY array"),
    ),
    Bad(
        "truncated-npz",
        lambda d: _mse(
            truncated(d, "cut.npz", npz_with(d, "f.npz", p=REG_P, t=REG_T), 0.8) + ":p", str(d / "cut.npz") + ":t"
        ),
        1,
        ("cut.npz", "not a readable NPZ archive", "truncated or corrupt"),
    ),
    Bad(
        "truncated-csv-mid-row",
        lambda d: _mse(text(d, "cut.csv", "p,t\n1,2\n3,4\n5") + ":p", str(d / "cut.csv") + ":t"),
        1,
        ("cut.csv", "row 2 (line 4)", "1 fields", "header has 2", "Expected the same number of fields"),
    ),
    Bad(
        "corrupt-parquet-footer",
        lambda d: ["compute", "ce", parquet_with_bad_footer(d) + ":logits", ce_files(d)[1]],
        1,
        ("badfooter.parquet", "Parquet", "truncated or corrupt"),
    ),
    Bad(
        "corrupt-feather-batch",
        lambda d: _mse(arrow_with_bad_batch(d) + ":p", str(d / "bad.feather") + ":t"),
        1,
        ("bad.feather", "could not read Arrow record batches", "truncated or corrupt"),
    ),
    Bad(
        "corrupt-npy-header",
        lambda d: _mse(bad_npy_header(d), npy(d, "t.npy", REG_T)),
        1,
        ("badheader.npy", "not a valid NPY array"),
    ),
    Bad(
        "corrupt-npz-not-a-zip",
        lambda d: _mse(text(d, "junk.npz", b"PK\x03\x04 not really a zip archive") + ":p", npy(d, "t.npy", REG_T)),
        1,
        ("junk.npz", "not a readable NPZ archive"),
    ),
    Bad(
        "parquet-that-is-text",
        lambda d: _mse(text(d, "fake.parquet", "p,t\n1,2\n") + ":p", npy(d, "t.npy", REG_T)),
        1,
        ("fake.parquet", "not a readable Parquet file", "Expected a complete Parquet file"),
    ),
    Bad(
        "csv-binary-garbage",
        lambda d: _mse(text(d, "bin.csv", b"p,t\n\x00\x01\x02,\xff\xfe\n") + ":p", str(d / "bin.csv") + ":t"),
        1,
        ("bin.csv", "column 'p', row 0", "is not a number", "Expected a number"),
    ),
    Bad(
        "empty-directory-as-input",
        lambda d: _mse(_mkdir(d / "shards"), npy(d, "t.npy", REG_T)),
        1,
        ("shards", "no Parquet, Arrow or CSV files found"),
    ),
    Bad(
        "unknown-format",
        lambda d: _mse(text(d, "data.bin", b"\x00\x01junk"), npy(d, "t.npy", REG_T)),
        2,
        ("data.bin", "cannot tell the format", "--input-format"),
    ),
    # --- CSV ---------------------------------------------------------------------------
    Bad(
        "csv-ragged-row",
        lambda d: _mse(text(d, "rag.csv", "p,t\n1,2\n3,4\n5\n6,7\n") + ":p", str(d / "rag.csv") + ":t"),
        1,
        ("rag.csv", "row 2 (line 4)", "1 fields", "header has 2", "Expected the same number of fields"),
    ),
    Bad(
        "csv-extra-field",
        lambda d: _mse(text(d, "rag2.csv", "p,t\n1,2\n3,4,5\n") + ":p", str(d / "rag2.csv") + ":t"),
        1,
        ("rag2.csv", "row 1 (line 3)", "3 fields", "Expected the same number of fields"),
    ),
    Bad(
        "csv-non-numeric-cell",
        lambda d: _mse(text(d, "txt.csv", "p,t\n1,2\n3,x\n") + ":p", str(d / "txt.csv") + ":t"),
        1,
        ("txt.csv", "column 't', row 1 (line 3)", "'x' is not a number", "Expected a number"),
    ),
    Bad(
        "csv-non-numeric-late-chunk",
        lambda d: _mse(
            text(d, "late.csv", "p,t\n" + "".join(f"{i},{i}\n" for i in range(5000)) + "1,abc\n") + ":p",
            str(d / "late.csv") + ":t",
            "--chunk-size",
            "64",
        ),
        1,
        ("late.csv", "column 't', row 5000", "'abc' is not a number"),
    ),
    Bad(
        "tsv-non-numeric-in-glob",
        lambda d: [
            "compute",
            "ce",
            text(d, "g.tsv", "x_0\tx_1\ty\n1\t2\t0\n1\tnope\t1\n") + ":x_*",
            str(d / "g.tsv") + ":y",
        ],
        1,
        ("g.tsv", "column 'x_1', row 1", "'nope' is not a number"),
    ),
    Bad(
        "csv-header-only",
        lambda d: _mse(text(d, "head.csv", "p,t\n") + ":p", str(d / "head.csv") + ":t"),
        1,
        ("head.csv", "has no data rows", "Expected one row per sample"),
    ),
    Bad(
        "csv-header-only-glob",
        lambda d: ["compute", "ce", text(d, "head2.csv", "x_0,x_1,y\n") + ":x_*", str(d / "head2.csv") + ":y"],
        1,
        ("head2.csv", "has no data rows", "Expected one row per sample"),
    ),
    Bad(
        "parquet-zero-rows",
        lambda d: _mse(
            write_parquet(d / "z.parquet", {"p": np.zeros(0), "t": np.zeros(0)}) + ":p", str(d / "z.parquet") + ":t"
        ),
        1,
        ("z.parquet", "has no data rows"),
    ),
    Bad(
        "npy-zero-rows",
        lambda d: _mse(npy(d, "z.npy", np.zeros(0)), npy(d, "z2.npy", np.zeros(0))),
        1,
        ("z.npy", "has no data rows"),
    ),
    # --- NPY / NPZ -----------------------------------------------------------------------
    Bad(
        "npz-wrong-key",
        lambda d: [
            "compute",
            "ce",
            npz_with(d, "d.npz", logits=LOGITS, label=LABEL) + ":logit",
            str(d / "d.npz") + ":label",
        ],
        1,
        ("d.npz", "no array named 'logit'", "Did you mean 'logits'", "Available arrays"),
    ),
    Bad(
        "npy-pickled-objects",
        lambda d: _mse(pickled_npy(d), npy(d, "t.npy", np.zeros(3))),
        1,
        ("obj.npy", "pickles", "Save a numeric array"),
    ),
    Bad(
        "npz-object-member",
        lambda d: _mse(
            npz_with(d, "o.npz", p=np.array([{"a": 1}, 2], dtype=object)) + ":p", npy(d, "t.npy", np.zeros(2))
        ),
        1,
        ("o.npz", "pickles"),
    ),
    Bad(
        "npy-string-field",
        lambda d: _mse(
            npy(d, "rec.npy", np.zeros(3, dtype=[("a", "U3"), ("b", "f8")])) + ":a", str(d / "rec.npy") + ":b"
        ),
        1,
        ("rec.npy", "field 'a'", "expected numbers"),
    ),
    Bad(
        "npy-header-shape-edited",
        lambda d: _mse(_edited_npy(d, b"(300,)", b"(100,)"), npy(d, "t.npy", REG_T[:100])),
        1,
        ("edited.npy", "header promises 100 rows", "2400 bytes follow", "may be corrupt"),
    ),
    Bad(
        "npy-trailing-bytes",
        lambda d: _mse(_edited_npy(d, b"", b"", tail=b"junk"), npy(d, "t.npy", REG_T)),
        1,
        ("edited.npy", "header promises 300 rows", "2404 bytes follow"),
    ),
    Bad(
        "arrow-stream-name-not-utf8",
        lambda d: _mse(_arrow_stream_bad_name(d) + ":p", npy(d, "t.npy", REG_T)),
        1,
        ("bad.arrows", "not a readable Arrow IPC", "truncated or corrupt"),
    ),
    Bad(
        "list-widths-differ-between-record-batches",
        lambda d: _feather_lists_by_batch(d),
        1,
        ("lists.feather", "column 'x', row 1", "list of 3 values", "row 0 has 2"),
    ),
    Bad(
        "npz-arrays-of-different-lengths",
        lambda d: _mse(npz_with(d, "uneq.npz", p=REG_P, t=REG_T[:-3]) + ":p", str(d / "uneq.npz") + ":t"),
        1,
        ("uneq.npz", "different numbers of rows", "'p': 300", "'t': 297"),
    ),
    # --- shapes and row counts ---------------------------------------------------------------
    Bad(
        "row-counts-differ-npy",
        lambda d: ["compute", "ce", npy(d, "x.npy", LOGITS), npy(d, "y.npy", LABEL[:-2])],
        1,
        ("Row counts differ", "x.npy has 300 rows", "y.npy has 298 rows", "--id-col"),
    ),
    Bad(
        "row-counts-differ-csv-stream",
        lambda d: _mse(
            write_csv(d / "a.csv", {"p": REG_P}), write_csv(d / "b.csv", {"t": REG_T[:-5]}), "--chunk-size", "64"
        ),
        1,
        ("Row counts differ", "a.csv has 300 rows", "b.csv has 295 rows"),
    ),
    Bad(
        "ce-pred-3d",
        lambda d: [
            "compute",
            "ce",
            npy(d, "x3.npy", np.zeros((5, 2, 3), np.float32)),
            npy(d, "y.npy", np.zeros(5, int)),
        ],
        1,
        ("x3.npy", "shape (5, 2, 3)", "(N, C)"),
    ),
    Bad(
        "ce-pred-one-column",
        lambda d: [
            "compute",
            "ce",
            write_csv(d / "one.csv", {"s": REG_P, "y": LABEL}) + ":s",
            str(d / "one.csv") + ":y",
        ],
        1,
        ("one.csv", "column 's'", "a single column", "(N, C)", "NAME_*"),
    ),
    Bad(
        "giou-three-coordinates",
        lambda d: ["compute", "giou", npy(d, "b3.npy", np.ones((4, 3))), npy(d, "b4.npy", np.ones((4, 3)))],
        1,
        ("b3.npy", "4"),
    ),
    Bad(
        "mse-shapes-differ",
        lambda d: _mse(npy(d, "p2.npy", np.zeros((6, 2))), npy(d, "t3.npy", np.zeros((6, 3)))),
        1,
        ("t3.npy", "(N, 3)", "(N, 2)"),
    ),
    Bad(
        "list-column-uneven",
        lambda d: _uneven_lists(d),
        1,
        ("u.parquet", "column 'logits', row 1", "list of 3 values", "row 0 has 2", "Expected lists of equal length"),
    ),
    Bad(
        "list-column-with-null-element",
        lambda d: _null_in_list(d),
        1,
        ("nl.parquet", "column 'logits', row 1", "missing value (null)", "Expected numbers"),
    ),
    # --- values --------------------------------------------------------------------------
    Bad(
        "ce-label-out-of-range",
        lambda d: [
            "compute",
            "ce",
            f"{_ce_csv(d, label=_with(LABEL, 17, 12).astype(int))}:x_*",
            f"{d / 'ce.csv'}:label",
            "--chunk-size",
            "5",
        ],
        1,
        ("ce.csv, column 'label', row 17", "class index 12 out of range [0, 4)", "Expected class indices in [0, 4)"),
    ),
    Bad(
        "ce-label-not-integer",
        lambda d: ["compute", "ce", f"{_ce_csv(d, label=_with(LABEL, 42, 1.5))}:x_*", f"{d / 'ce.csv'}:label"],
        1,
        ("ce.csv, column 'label', row 42", "1.5 is not an integer", "Expected integer class indices"),
    ),
    Bad(
        "nll-label-negative",
        lambda d: [
            "compute",
            "nll",
            npy(d, "lp.npy", np.log(_probs(N, C))),
            npy(d, "y.npy", _with(LABEL, 250, -3).astype(int)),
        ],
        1,
        ("y.npy, row 250", "class index -3 out of range"),
    ),
    Bad(
        "softmax-focal-label-too-big",
        lambda d: [
            "compute",
            "softmax-focal",
            npy(d, "x.npy", LOGITS),
            npy(d, "y.npy", _with(LABEL, 3, 4).astype(int)),
        ],
        1,
        ("y.npy, row 3", "class index 4 out of range [0, 4)"),
    ),
    Bad(
        "ce-probs-negative",
        lambda d: [
            "compute",
            "ce",
            npy(d, "p.npy", _with(_probs(N, C), (9, 0), -0.25)),
            npy(d, "y.npy", LABEL),
            "--pred-kind",
            "probs",
        ],
        1,
        ("p.npy, row 9", "outside [0, 1]", "Expected probabilities in [0, 1]"),
    ),
    Bad(
        "ce-probs-not-summing-to-one",
        lambda d: [
            "compute",
            "ce",
            write_csv(d / "pr.csv", {"p": _with(_probs(N, C), (77, 1), 0.9), "y": LABEL}) + ":p_*",
            str(d / "pr.csv") + ":y",
            "--pred-kind",
            "probs",
        ],
        1,
        ("pr.csv, column 'p_*', row 77", "sum to", "never renormalises", "Expected rows summing to 1"),
    ),
    Bad(
        "kl-target-not-summing-to-one",
        lambda d: [
            "compute",
            "kl",
            npy(d, "q.npy", LOGITS[:, :3]),
            npy(d, "t.npy", _with(_probs(N, 3), (123, 2), 0.0)),
        ],
        1,
        ("t.npy, row 123", "sum to", "Expected rows summing to 1"),
    ),
    Bad(
        "js-target-negative",
        lambda d: ["compute", "js", npy(d, "q.npy", LOGITS[:, :3]), npy(d, "t.npy", _with(_probs(N, 3), (5, 0), -0.1))],
        1,
        ("t.npy, row 5", "outside [0, 1]"),
    ),
    Bad(
        "bce-target-above-one",
        lambda d: ["compute", "bce", *_bt(d, t=_with(np.ones(N) * 0.5, 11, 1.5))],
        1,
        ("b.csv, column 't', row 11", "1.5 outside [0, 1]", "Expected binary targets in [0, 1]"),
    ),
    Bad(
        "focal-target-negative",
        lambda d: ["compute", "focal", *_bt(d, t=_with(np.zeros(N), 200, -0.5))],
        1,
        ("b.csv, column 't', row 200", "outside [0, 1]"),
    ),
    Bad(
        "bce-probs-above-one",
        lambda d: ["compute", "bce", *_bt(d, p=_with(np.full(N, 0.3), 8, 1.2)), "--pred-kind", "probs"],
        1,
        ("b.csv, column 'p', row 8", "outside [0, 1]"),
    ),
    Bad(
        "mse-nan-pred",
        lambda d: _mse(_reg_csv(d, p=_with(REG_P, [30, 31], np.nan)) + ":p", str(d / "r.csv") + ":t"),
        1,
        ("r.csv, column 'p', row 30", "NaN", "the first such row", "--nan omit", "Expected numbers"),
    ),
    Bad(
        "ce-nan-target-label",
        lambda d: ["compute", "ce", f"{_ce_csv(d, label=_with(LABEL, 99, np.nan))}:x_*", f"{d / 'ce.csv'}:label"],
        1,
        ("ce.csv, column 'label', row 99", "NaN", "--nan omit"),
    ),
    Bad(
        "ce-nan-in-one-logit-column",
        lambda d: [
            "compute",
            "ce",
            f"{_ce_csv(d, x=_with(LOGITS, (150, 2), np.nan))}:x_*",
            f"{d / 'ce.csv'}:label",
            "--chunk-size",
            "64",
        ],
        1,
        ("ce.csv, column 'x_2', row 150", "NaN"),
    ),
    Bad(
        "mse-inf-pred",
        lambda d: _mse(_reg_csv(d, p=_with(REG_P, 4, np.inf)) + ":p", str(d / "r.csv") + ":t"),
        1,
        ("r.csv, column 'p', row 4", "non-finite", "Expected finite predictions"),
    ),
    Bad(
        "huber-neg-inf-target",
        lambda d: ["compute", "huber", _reg_csv(d, t=_with(REG_T, 290, -np.inf)) + ":p", str(d / "r.csv") + ":t"],
        1,
        ("r.csv, column 't', row 290", "non-finite", "Expected finite targets"),
    ),
    Bad(
        "ce-inf-logit",
        lambda d: ["compute", "ce", npy(d, "x.npy", _with(LOGITS, (61, 0), np.inf)), npy(d, "y.npy", LABEL)],
        1,
        ("x.npy, row 61", "Expected finite"),
    ),
    Bad(
        "giou-inf-box",
        lambda d: ["compute", "giou", npy(d, "p.npy", _with(_boxes(N), (12, 3), np.inf)), npy(d, "t.npy", _boxes(N))],
        1,
        ("p.npy, row 12", "finite"),
    ),
    Bad(
        "gaussian-nll-negative-var",
        lambda d: [
            "compute",
            "gaussian-nll",
            npy(d, "p.npy", REG_P),
            npy(d, "t.npy", REG_T),
            npy(d, "v.npy", _with(np.ones(N), 7, -1.0)),
        ],
        1,
        ("v.npy, row 7", "Expected"),
    ),
    Bad(
        "cosine-embedding-label-zero",
        lambda d: [
            "compute",
            "cosine-embedding",
            npy(d, "a.npy", _rng.normal(size=(N, 3))),
            npy(d, "b.npy", _rng.normal(size=(N, 3))),
            npy(d, "l.npy", _with(np.ones(N), 40, 0.0)),
        ],
        1,
        ("l.npy, row 40", "Expected"),
    ),
    Bad(
        "ppo-clip-nan-advantage",
        lambda d: [
            "compute",
            "ppo-clip",
            npy(d, "new.npy", -(REG_P**2)),
            npy(d, "old.npy", -(REG_T**2)),
            npy(d, "adv.npy", _with(REG_P, 201, np.nan)),
        ],
        1,
        ("adv.npy, row 201", "NaN", "--nan omit"),
    ),
    # --- ids -----------------------------------------------------------------------------
    Bad(
        "duplicate-ids-in-target",
        lambda d: _ids(d, target_ids=np.array([f"k{i}" if i != 5 else "k4" for i in range(N)])),
        1,
        ("t.csv", "id column 'id'", "'k4'", "more than once", "rows 4, 5", "Expected each id once"),
    ),
    Bad(
        "missing-ids",
        lambda d: _ids(d, target_keep=np.arange(N) % 50 != 7),
        1,
        ("p.parquet", "'k7' (row 7)", "have no row in", "t.csv", "--on-missing drop"),
    ),
    Bad(
        "id-column-absent",
        lambda d: _ids(d, id_col="key"),
        1,
        ("no column 'key'", "--id-col", "Available columns"),
    ),
    # --- the command line ------------------------------------------------------------------
    Bad(
        "unknown-loss",
        lambda d: ["compute", "hubber", "a.npy", "b.npy"],
        2,
        ("Unknown loss 'hubber'", "Did you mean 'huber'", "lossctl list"),
    ),
    Bad(
        "unknown-parameter",
        lambda d: ["compute", "mse", *ce_files(d), "--delta", "1"],
        2,
        ("No such option: --delta",),
        click_usage=True,
    ),
    Bad(
        "huber-negative-delta",
        lambda d: ["compute", "huber", *ce_files(d), "--delta", "-1"],
        2,
        ("--delta of huber must be in (0, inf]", "got -1"),
    ),
    Bad(
        "smooth-l1-negative-beta",
        lambda d: ["compute", "smooth-l1", *ce_files(d), "--beta", "-0.5"],
        2,
        ("--beta of smooth-l1", "got -0.5"),
    ),
    Bad(
        "label-smoothing-above-one",
        lambda d: ["compute", "ce", *ce_files(d), "--label-smoothing", "1.5"],
        2,
        ("--label-smoothing of cross-entropy must be in [0, 1]", "got 1.5"),
    ),
    Bad(
        "label-smoothing-negative",
        lambda d: ["compute", "ce", *ce_files(d), "--label-smoothing", "-0.1"],
        2,
        ("--label-smoothing of cross-entropy must be in [0, 1]",),
    ),
    Bad(
        "distillation-temperature-zero",
        lambda d: ["compute", "distillation", npy(d, "s.npy", LOGITS), npy(d, "t.npy", LOGITS), "--temperature", "0"],
        2,
        ("--temperature of distillation must be in (0, inf)", "got 0"),
    ),
    Bad(
        "info-nce-temperature-zero",
        lambda d: ["compute", "info-nce", npy(d, "q.npy", LOGITS), npy(d, "k.npy", LOGITS), "--temperature", "0"],
        2,
        ("--temperature of info-nce must be in (0, inf)",),
    ),
    Bad(
        "focal-gamma-negative",
        lambda d: ["compute", "focal", *_bt(d), "--gamma", "-1"],
        2,
        ("--gamma of focal must be in [0, inf]", "got -1"),
    ),
    Bad(
        "softmax-focal-gamma-negative",
        lambda d: ["compute", "softmax-focal", *ce_files(d), "--gamma", "-0.5"],
        2,
        ("--gamma of softmax-focal must be in [0, inf]",),
    ),
    Bad(
        "quantile-above-one",
        lambda d: ["compute", "quantile", *ce_files(d), "--quantile", "1.5"],
        2,
        ("--quantile of quantile must be in [0, 1]",),
    ),
    Bad(
        "delta-not-a-number",
        lambda d: ["compute", "huber", *ce_files(d), "--delta", "big"],
        2,
        ("--delta of huber", "expects a number", "'big'"),
    ),
    Bad(
        "stdin-is-a-terminal",
        lambda d: ["compute", "mse", "-", npy(d, "t.npy", REG_T), "--input-format", "csv"],
        2,
        ("stdin", "terminal", "pipe data in"),
        tty_stdin=True,
    ),
    Bad(
        "stdin-without-format",
        lambda d: ["compute", "mse", "-", npy(d, "t.npy", REG_T)],
        2,
        ("stdin", "--input-format"),
        stdin=b"p\n1\n",
    ),
    Bad(
        "stdin-truncated-parquet",
        lambda d: ["compute", "mse", "-:p", "-:t", "--input-format", "parquet"],
        1,
        ("<stdin>", "not a readable Parquet file"),
        stdin=lambda d: Path(write_parquet(d / "s.parquet", {"p": REG_P, "t": REG_T})).read_bytes()[:500],
    ),
    Bad(
        "stdin-csv-non-numeric",
        lambda d: ["compute", "mse", "-:p", "-:t", "--input-format", "csv"],
        1,
        ("<stdin>, column 't'", "'oops' is not a number", "Expected a number"),
        stdin=b"p,t\n1,2\n3,oops\n",
    ),
    Bad(
        "bad-input-format",
        lambda d: ["compute", "mse", *ce_files(d), "--input-format", "xlsx"],
        2,
        ("--input-format must be one of", "'xlsx'"),
    ),
    # --- outputs that cannot be written -----------------------------------------------------
    Bad(
        "per-sample-dir-missing",
        lambda d: ["compute", "ce", *ce_files(d), "--per-sample", str(d / "no" / "such" / "out.csv")],
        1,
        ("--per-sample", "out.csv", "does not exist"),
    ),
    Bad(
        "grad-dir-missing",
        lambda d: ["compute", "ce", *ce_files(d), "--grad", str(d / "no" / "g.npy")],
        1,
        ("--grad", "g.npy", "does not exist"),
    ),
    Bad(
        "per-sample-is-a-directory",
        lambda d: ["compute", "ce", *ce_files(d), "--per-sample", _mkdir(d / "out.csv")],
        1,
        ("--per-sample", "out.csv", "is a directory"),
    ),
    Bad(
        "grad-is-a-directory",
        lambda d: ["compute", "mse", npy(d, "p.npy", REG_P), npy(d, "t.npy", REG_T), "--grad", _mkdir(d / "g.parquet")],
        1,
        ("--grad", "g.parquet", "is a directory"),
    ),
    Bad(
        "grad-parent-is-a-file",
        lambda d: [
            "compute",
            "mse",
            npy(d, "p.npy", REG_P),
            npy(d, "t.npy", REG_T),
            "--grad",
            str(d / "p.npy" / "g.npy"),
        ],
        1,
        ("--grad", "g.npy", "not a directory"),
    ),
    Bad(
        "per-sample-unknown-extension",
        lambda d: ["compute", "ce", *ce_files(d), "--per-sample", str(d / "out.xlsx")],
        2,
        ("--per-sample", "out.xlsx", "extension"),
    ),
]


def _edited_npy(d: Path, old: bytes, new: bytes, tail: bytes = b"") -> str:
    raw = Path(npy(d, "orig.npy", REG_P)).read_bytes()
    if old:
        assert raw.count(old) == 1
        raw = raw.replace(old, new)
    return text(d, "edited.npy", raw + tail)


def _arrow_stream_bad_name(d: Path) -> str:
    import pyarrow as pa

    table = pa.table({"p": REG_P, "zqzq": REG_T})
    with pa.OSFile(str(d / "good.arrows"), "wb") as sink, pa.ipc.new_stream(sink, table.schema) as w:
        w.write_table(table)
    raw = (d / "good.arrows").read_bytes()
    assert raw.count(b"zqzq") == 1
    return text(d, "bad.arrows", raw.replace(b"zqzq", b"\x84qzq"))  # a column name that is not UTF-8


def _feather_lists_by_batch(d: Path) -> list[str]:
    import pyarrow as pa
    import pyarrow.feather as feather

    t = pa.table({"x": pa.array([[1.0, 2.0], [1.0, 2.0, 3.0]]), "y": pa.array([0, 1])})
    feather.write_feather(t, d / "lists.feather", chunksize=1)  # one row per record batch
    return ["compute", "ce", f"{d / 'lists.feather'}:x", f"{d / 'lists.feather'}:y"]


def _mkdir(p: Path) -> str:
    p.mkdir()
    return str(p)


def _ce_csv(d: Path, x=LOGITS, label=LABEL) -> str:
    return write_csv(d / "ce.csv", {"x": x, "label": label})


def _bt(d: Path, p=None, t=None) -> list[str]:
    p = _rng.normal(size=N) if p is None else p
    t = (_rng.random(N) < 0.5).astype(float) if t is None else t
    path = write_csv(d / "b.csv", {"p": p, "t": t})
    return [f"{path}:p", f"{path}:t"]


def _uneven_lists(d: Path) -> list[str]:
    import pyarrow as pa
    import pyarrow.parquet as pq

    t = pa.table({"logits": pa.array([[1.0, 2.0], [1.0, 2.0, 3.0]]), "label": pa.array([0, 1])})
    pq.write_table(t, d / "u.parquet")
    return ["compute", "ce", f"{d / 'u.parquet'}:logits", f"{d / 'u.parquet'}:label"]


def _null_in_list(d: Path) -> list[str]:
    import pyarrow as pa
    import pyarrow.parquet as pq

    t = pa.table({"logits": pa.array([[1.0, 2.0], [1.0, None]]), "label": pa.array([0, 1])})
    pq.write_table(t, d / "nl.parquet")
    return ["compute", "ce", f"{d / 'nl.parquet'}:logits", f"{d / 'nl.parquet'}:label"]


def _ids(d: Path, target_ids=None, target_keep=None, id_col: str = "id") -> list[str]:
    ids = np.array([f"k{i}" for i in range(N)])
    pred = write_parquet(d / "p.parquet", {"id": ids, "logits": LOGITS})
    tids = ids if target_ids is None else target_ids
    keep = np.ones(N, bool) if target_keep is None else target_keep
    tgt = write_csv(d / "t.csv", {"id": tids[keep], "label": LABEL[keep]})
    return ["compute", "ce", f"{pred}:logits", f"{tgt}:label", "--id-col", id_col]


def assert_one_clean_message(res, code: int, needles, click_usage: bool = False) -> None:
    assert res.code == code, (res.code, res.err)
    assert res.out == "", res.out
    assert "Traceback" not in res.err and "internal error" not in res.err, res.err
    if click_usage:
        assert "Error:" in res.err and len(res.err) < 600, res.err
    else:
        lines = res.err.strip("\n").splitlines()
        assert len(lines) == 1, res.err  # one paragraph
        assert lines[0].startswith("lossctl: error: "), res.err
        assert len(lines[0]) < 700, f"message too long ({len(lines[0])} characters): {res.err}"
    for n in needles:
        assert n in res.err, (n, res.err)


def test_the_table_is_large_and_spans_many_losses(tmp_path):
    assert len(BAD) >= 40
    assert len({b.id for b in BAD}) == len(BAD)
    losses = set()
    for i, case in enumerate(BAD):
        d = tmp_path / str(i)
        d.mkdir()
        losses.add(case.build(d)[1])
    assert len(losses) >= 15, sorted(losses)


@pytest.mark.parametrize("case", BAD, ids=[b.id for b in BAD])
def test_bad_input_gives_one_clean_message(case: Bad, tmp_path):
    args = case.build(tmp_path)
    stdin = case.stdin(tmp_path) if callable(case.stdin) else case.stdin
    res = run_cli(args, stdin=stdin, tty_stdin=case.tty_stdin)
    assert_one_clean_message(res, case.code, case.needles, case.click_usage)
    leftovers = [p for p in os.listdir(tmp_path) if p.endswith(".tmp")]
    assert leftovers == []


# ---------------------------------------------------------------------------
# Outputs that cannot be written, beyond the table
# ---------------------------------------------------------------------------


@pytest.mark.parametrize("option, name", [("--per-sample", "p.csv"), ("--grad", "g.npy")])
def test_output_in_a_directory_that_refuses_files(tmp_path, option, name):
    # /proc refuses new files even for root (a read-only directory would not stop root).
    target = f"/proc/{name}"
    res = run_cli(["compute", "ce", *ce_files(tmp_path), option, target])
    assert_one_clean_message(res, 1, (option, name, "cannot write there"))
    assert not os.path.exists(target)


def _env(**extra) -> dict:
    env = dict(os.environ)
    env.pop("LOSSCTL_FORMAT", None)
    env.pop("LOSSCTL_DEBUG", None)
    env.update(extra)
    return env


@pytest.mark.parametrize(
    "option, name",
    [
        ("--per-sample", "p.csv"),
        ("--per-sample", "p.parquet"),
        ("--per-sample", "p.npy"),
        ("--per-sample", "p.jsonl"),
        ("--grad", "g.npy"),
        ("--grad", "g.csv"),
        ("--grad", "g.parquet"),
    ],
)
def test_output_that_fills_up_mid_run_is_a_clean_error_and_leaves_nothing(tmp_path, option, name):
    """A write that fails half-way (here: RLIMIT_FSIZE, as a full disk would) names the
    option and the path, exits 1, and removes the partial file."""
    import resource

    n = 200_000
    np.save(tmp_path / "p.npy", np.random.default_rng(0).normal(size=n))
    np.save(tmp_path / "t.npy", np.zeros(n))
    out_dir = tmp_path / "out"
    out_dir.mkdir()

    def limit():
        resource.setrlimit(resource.RLIMIT_FSIZE, (1 << 20, 1 << 20))  # 1 MiB per file

    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "lossctl",
            "compute",
            "mse",
            str(tmp_path / "p.npy"),
            str(tmp_path / "t.npy"),
            option,
            str(out_dir / name),
            "--chunk-size",
            "20000",
        ],
        capture_output=True,
        text=True,
        env=_env(),
        preexec_fn=limit,
        timeout=120,
    )
    assert proc.returncode == 1, (proc.returncode, proc.stderr)
    assert proc.stdout == ""
    assert "Traceback" not in proc.stderr and "internal error" not in proc.stderr, proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("lossctl: error: "), proc.stderr
    assert f"{option} {out_dir / name}" in proc.stderr and "writing failed" in proc.stderr
    assert os.listdir(out_dir) == []


# ---------------------------------------------------------------------------
# NaN policy: error names the first offending rows; omit and propagate are counted
# ---------------------------------------------------------------------------


def _nan_regression(tmp_path, fmt: str = "parquet"):
    p = REG_P.copy()
    t = REG_T.copy()
    p[[120, 250]] = np.nan
    t[[250, 251]] = np.nan  # row 250 has NaN on both sides: counted once
    if fmt == "parquet":
        path = write_parquet(tmp_path / "n.parquet", {"p": p, "t": t})
        return [f"{path}:p", f"{path}:t"], p, t
    a, b = npy(tmp_path, "p.npy", p), npy(tmp_path, "t.npy", t)
    return [a, b], p, t


@pytest.mark.parametrize("chunk", ["7", "64", "1000"])
def test_nan_error_names_the_first_offending_row_and_column(tmp_path, chunk):
    srcs, _, _ = _nan_regression(tmp_path)
    res = run_cli(["compute", "huber", *srcs, "--chunk-size", chunk])
    assert_one_clean_message(res, 1, ("n.parquet, column 'p', row 120", "NaN", "--nan omit", "--nan propagate"))


def test_nan_error_names_the_earliest_row_whichever_input_holds_it(tmp_path):
    p, t = REG_P.copy(), REG_T.copy()
    p[200] = np.nan
    t[90] = np.nan
    a, b = npy(tmp_path, "p.npy", p), npy(tmp_path, "t.npy", t)
    # different chunks: the target's row 90 comes first
    res = run_cli(["compute", "mse", a, b, "--chunk-size", "100"])
    assert_one_clean_message(res, 1, ("t.npy, row 90", "TARGET"))


def test_nan_error_names_the_earliest_row_within_one_chunk(tmp_path):
    p, t = REG_P.copy(), REG_T.copy()
    p[200] = np.nan
    t[90] = np.nan
    a, b = npy(tmp_path, "p.npy", p), npy(tmp_path, "t.npy", t)
    res = run_cli(["compute", "mse", a, b])  # one chunk holds both rows
    assert_one_clean_message(res, 1, ("t.npy, row 90",))


def test_nan_error_message_does_not_depend_on_chunk_size(tmp_path):
    srcs, _, _ = _nan_regression(tmp_path)
    a = run_cli(["compute", "mse", *srcs, "--chunk-size", "7"])
    b = run_cli(["compute", "mse", *srcs, "--chunk-size", "1000"])
    assert a.code == b.code == 1
    assert a.err == b.err


@pytest.mark.parametrize("fmt", ["parquet", "npy"])
def test_nan_omit_counts_rows_in_report_json_and_per_sample(tmp_path, fmt):
    srcs, p, t = _nan_regression(tmp_path, fmt)
    keep = ~(np.isnan(p) | np.isnan(t))
    expected = float(np.mean((p[keep] - t[keep]) ** 2))
    ps = tmp_path / "ps.csv"
    res = run_cli(
        ["compute", "mse", *srcs, "--nan", "omit", "-f", "json", "--per-sample", str(ps), "--chunk-size", "50"]
    )
    assert res.code == 0, res.err
    out = res.json
    assert out["rows"]["nan_omitted"] == 3
    assert out["rows"]["used"] == out["count"] == N - 3
    assert out["rows"]["read"] == {"pred": N, "target": N}
    assert out["nan_policy"] == "omit"
    assert "nan:3" in out["signature"]
    assert out["value"] == pytest.approx(expected, rel=1e-12)
    rows = list(csv.DictReader(open(ps)))
    assert len(rows) == N
    nan_rows = [int(r["row"]) for r in rows if r["status"] == "nan"]
    assert nan_rows == [120, 250, 251]
    assert all(r["loss"] == "" for r in rows if r["status"] == "nan")
    # the table says it too, never silently
    table = run_cli(["compute", "mse", *srcs, "--nan", "omit"])
    assert table.code == 0 and "NaN omitted 3" in table.out
    flat = run_cli(["compute", "mse", *srcs, "--nan", "omit", "-f", "csv"])
    assert next(csv.DictReader(flat.out.splitlines()))["nan_omitted"] == "3"


def test_nan_omit_in_labels_and_missing_cells(tmp_path):
    label = LABEL.astype(np.float64)
    label[[3, 4]] = np.nan
    path = _ce_csv(tmp_path, label=label)
    text_path = tmp_path / "cells.csv"
    body = open(path).read().splitlines()
    body[1 + 10] = ",".join(body[1 + 10].split(",")[:-1] + [""])  # an empty label cell at row 10
    text_path.write_text("\n".join(body) + "\n")
    out = run_cli(["compute", "ce", f"{text_path}:x_*", f"{text_path}:label", "--nan", "omit", "-f", "json"]).json
    assert out["rows"]["nan_omitted"] == 3 and out["count"] == N - 3


def test_nan_propagate_gives_nan_and_counts(tmp_path):
    srcs, _, _ = _nan_regression(tmp_path)
    res = run_cli(["compute", "mse", *srcs, "--nan", "propagate", "-f", "json"])
    assert res.code == 0, res.err
    out = res.json
    assert out["value"] is None  # NaN in JSON
    assert out["rows"]["nan_propagated"] == 3 and out["rows"]["nan_omitted"] == 0
    assert run_cli(["compute", "mse", *srcs, "--nan", "propagate", "-b"]).out.strip() == "nan"
    gated = run_cli(["compute", "mse", *srcs, "--nan", "propagate", "--max", "1e9", "-b"])
    assert gated.code == 3, gated.err


def test_infinite_values_are_an_error_even_with_nan_omit(tmp_path):
    p = _with(REG_P, 33, np.inf)
    path = _reg_csv(tmp_path, p=p)
    res = run_cli(["compute", "mse", f"{path}:p", f"{path}:t", "--nan", "omit"])
    assert_one_clean_message(res, 1, ("r.csv, column 'p', row 33", "non-finite"))


def test_nan_omit_every_row_is_reported_not_a_crash(tmp_path):
    path = _reg_csv(tmp_path, p=np.full(N, np.nan))
    res = run_cli(["compute", "mse", f"{path}:p", f"{path}:t", "--nan", "omit", "-f", "json"])
    assert res.code == 0 and res.err == "", res.err
    assert res.json["count"] == 0 and res.json["rows"]["nan_omitted"] == N
    assert res.json["value"] is None  # no rows left: NaN, said so, never 0


# ---------------------------------------------------------------------------
# Numerical robustness: dtypes, extreme logits, exact 0/1, 50k classes, long sequences
# ---------------------------------------------------------------------------


def per_sample_values(args: list[str], d: Path, name: str = "ps") -> tuple[np.ndarray, dict]:
    out = d / f"{name}.npy"
    res = run_cli([*args, "--per-sample", str(out), "-f", "json", "-q"])
    assert res.code == 0, res.err
    assert "Traceback" not in res.err
    return np.load(out), res.json


def _f64(a) -> np.ndarray:
    return np.asarray(a).astype(np.float64)


def ref_ce(x, y, smoothing: float = 0.0):
    from scipy.special import logsumexp

    x = _f64(x)
    lse = logsumexp(x, axis=1)
    nll = lse - x[np.arange(len(x)), y]
    return (1 - smoothing) * nll + smoothing * (lse - x.mean(axis=1))


def ref_bce(x, y):
    x, y = _f64(x), _f64(y)
    return np.maximum(x, 0) - x * y + np.log1p(np.exp(-np.abs(x)))


def ref_focal(x, y, alpha=0.25, gamma=2.0):
    from scipy.special import expit

    x, y = _f64(x), _f64(y)
    p = expit(x)
    p_t = p * y + (1 - p) * (1 - y)
    a_t = alpha * y + (1 - alpha) * (1 - y)
    return a_t * ref_bce(x, y) * (1 - p_t) ** gamma


def ref_softmax_focal(x, y, gamma=2.0):
    from scipy.special import log_softmax

    lp = log_softmax(_f64(x), axis=1)[np.arange(len(x)), y]
    return -((1 - np.exp(lp)) ** gamma) * lp


def ref_entropy(x):
    from scipy.special import log_softmax

    lp = log_softmax(_f64(x), axis=1)
    return -(np.exp(lp) * lp).sum(axis=1)


def ref_kl(t, q_logits):
    from scipy.special import log_softmax, xlogy

    t = _f64(t)
    return (xlogy(t, t) - t * log_softmax(_f64(q_logits), axis=1)).sum(axis=1)


def ref_distill(s, t, temp=2.0, alpha=1.0):  # without labels the soft term has weight 1
    from scipy.special import log_softmax

    lp = log_softmax(_f64(t) / temp, axis=1)
    lq = log_softmax(_f64(s) / temp, axis=1)
    return alpha * temp * temp * (np.exp(lp) * (lp - lq)).sum(axis=1)


def ref_mse(p, t):
    return (_f64(p) - _f64(t)) ** 2


def ref_huber(p, t, delta=1.0):
    a = np.abs(_f64(p) - _f64(t))
    return np.where(a < delta, 0.5 * a * a, delta * (a - 0.5 * delta))


def _tol(dtype) -> dict:
    # float64 inputs: float64 arithmetic throughout. float32: exp may run in float32 (then
    # summed in float64), a few float32 ulps. float16 is widened before any arithmetic.
    return dict(rtol=1e-12, atol=1e-12) if np.dtype(dtype) != np.float32 else dict(rtol=2e-6, atol=2e-6)


def _case_data(loss: str, dtype, extreme: bool, n: int = 200, c: int = 5):
    # crc32, not hash(): str hashes are randomised per process, and a failing case must reproduce
    rng = np.random.default_rng(zlib.crc32(f"{loss}|{np.dtype(dtype)}|{extreme}".encode()))
    x = rng.normal(size=(n, c)) * 4
    if extreme:
        mask = rng.random((n, c)) < 0.3
        x[mask] = rng.choice([-1e4, 1e4], size=int(mask.sum()))
    x = x.astype(dtype)
    y = rng.integers(0, c, size=n)
    if loss in ("ce", "softmax-focal"):
        return [x, y], (ref_ce if loss == "ce" else ref_softmax_focal)(x, y)
    if loss == "entropy":
        return [x], ref_entropy(x)
    if loss in ("bce", "focal"):
        xb = x[:, 0]
        yb = (rng.random(n) < 0.5).astype(np.float64)
        return [xb, yb], (ref_bce if loss == "bce" else ref_focal)(xb, yb)
    if loss == "kl":
        t = rng.random((n, c))
        t[rng.random((n, c)) < 0.2] = 0.0  # exact zeros in the target
        t[:, 0] += 1e-3
        t = t / t.sum(axis=1, keepdims=True)
        if dtype != np.float16:  # float16 probabilities: see test_float16_probabilities_get_the_float16_tolerance
            t = t.astype(dtype)
        return [x, t], ref_kl(t, x)
    if loss == "distillation":
        teacher = (rng.normal(size=(n, c)) * (1e4 if extreme else 3)).astype(dtype)
        return [x, teacher], ref_distill(x, teacher)
    if loss in ("mse", "huber"):
        p = (rng.normal(size=n) * (1e4 if extreme else 3)).astype(dtype)
        t = rng.normal(size=n).astype(dtype)
        return [p, t], (ref_mse if loss == "mse" else ref_huber)(p, t)
    raise AssertionError(loss)


NUMERIC_LOSSES = ["ce", "softmax-focal", "entropy", "bce", "focal", "kl", "distillation", "mse", "huber"]


@pytest.mark.parametrize("dtype", [np.float16, np.float32, np.float64], ids=["f16", "f32", "f64"])
@pytest.mark.parametrize("loss", NUMERIC_LOSSES)
def test_every_float_dtype_equals_a_float64_reference(tmp_path, loss, dtype):
    arrays, ref = _case_data(loss, dtype, extreme=False)
    paths = [npy(tmp_path, f"in{i}.npy", a) for i, a in enumerate(arrays)]
    got, out = per_sample_values(["compute", loss, *paths, "--chunk-size", "37"], tmp_path)
    assert got.dtype == np.float64 and got.shape == (200,)
    assert np.isfinite(got).all()
    np.testing.assert_allclose(got, ref, **_tol(dtype))
    assert out["value"] == pytest.approx(float(np.mean(ref)), rel=_tol(dtype)["rtol"] * 10)
    assert np.dtype(dtype).name in {i["dtype"] for i in out["inputs"]}


@pytest.mark.parametrize("dtype", [np.float32, np.float64], ids=["f32", "f64"])
@pytest.mark.parametrize(
    "loss", ["ce", "softmax-focal", "entropy", "bce", "focal", "kl", "distillation", "mse", "huber"]
)
def test_logits_of_plus_minus_1e4_give_finite_exact_results(tmp_path, loss, dtype):
    arrays, ref = _case_data(loss, dtype, extreme=True)
    assert np.isfinite(ref).all()
    paths = [npy(tmp_path, f"in{i}.npy", a) for i, a in enumerate(arrays)]
    got, out = per_sample_values(["compute", loss, *paths], tmp_path)
    assert np.isfinite(got).all(), got[~np.isfinite(got)]
    np.testing.assert_allclose(got, ref, **_tol(dtype))
    assert math.isfinite(out["value"])


def test_probabilities_exactly_zero_and_one(tmp_path):
    # cross-entropy on probabilities: one-hot rows cost 0, a half row log 2
    p = np.array([[1.0, 0, 0], [0, 1.0, 0], [0.5, 0.5, 0], [0, 0, 1.0], [0.25, 0.25, 0.5]])
    y = np.array([0, 1, 0, 2, 2])
    got, _ = per_sample_values(
        ["compute", "ce", npy(tmp_path, "p.npy", p), npy(tmp_path, "y.npy", y), "--pred-kind", "probs"], tmp_path, "ce"
    )
    np.testing.assert_allclose(got, [0, 0, math.log(2), 0, math.log(2)], rtol=1e-15, atol=0)
    # BCE on probabilities 0 and 1, as PyTorch: log clamped at -100
    pb = np.array([0.0, 1.0, 0.0, 1.0, 0.5])
    yb = np.array([0.0, 1.0, 1.0, 0.0, 1.0])
    got, out = per_sample_values(
        ["compute", "bce", npy(tmp_path, "pb.npy", pb), npy(tmp_path, "yb.npy", yb), "--pred-kind", "probs"],
        tmp_path,
        "bce",
    )
    np.testing.assert_allclose(got, [0, 0, 100, 100, math.log(2)], rtol=1e-15, atol=0)
    # KL / JS with exact zeros on both sides where the target is 0; entropy of one-hot rows
    t = np.array([[1.0, 0, 0], [0.5, 0.5, 0], [0, 0, 1.0]])
    q = np.array([[1.0, 0, 0], [0.25, 0.75, 0], [0.5, 0, 0.5]])
    from scipy.special import rel_entr

    got, _ = per_sample_values(
        ["compute", "kl", npy(tmp_path, "q.npy", q), npy(tmp_path, "t.npy", t), "--pred-kind", "probs"], tmp_path, "kl"
    )
    np.testing.assert_allclose(got, rel_entr(t, q).sum(axis=1), rtol=1e-14, atol=1e-16)
    from scipy.spatial.distance import jensenshannon

    got, _ = per_sample_values(
        ["compute", "js", str(tmp_path / "q.npy"), str(tmp_path / "t.npy"), "--pred-kind", "probs"], tmp_path, "js"
    )
    np.testing.assert_allclose(got, jensenshannon(t, q, axis=1) ** 2, rtol=1e-12, atol=1e-15)
    got, _ = per_sample_values(["compute", "entropy", str(tmp_path / "t.npy"), "--pred-kind", "probs"], tmp_path, "h")
    np.testing.assert_allclose(got, [0, math.log(2), 0], rtol=1e-15, atol=0)
    # NLL with log-probabilities of -inf (probability 0) off the target class
    with np.errstate(divide="ignore"):
        lp = np.log(np.array([[1.0, 0, 0], [0.5, 0.5, 0]]))
    with np.errstate(divide="ignore"):
        got, _ = per_sample_values(
            ["compute", "nll", npy(tmp_path, "lp.npy", lp), npy(tmp_path, "y2.npy", np.array([0, 1]))], tmp_path, "nll"
        )
    np.testing.assert_allclose(got, [0, math.log(2)], rtol=1e-15, atol=0)


@pytest.mark.parametrize("loss", ["ce", "kl", "js"])
def test_float16_probabilities_get_the_float16_tolerance(tmp_path, loss):
    rng = np.random.default_rng(16)
    p = rng.random((50, 5))
    p16 = (p / p.sum(axis=1, keepdims=True)).astype(np.float16)
    assert np.abs(p16.astype(np.float64).sum(axis=1) - 1).max() > 1e-4  # float16 rounding alone
    pp = npy(tmp_path, "p16.npy", p16)
    if loss == "ce":
        args = ["compute", "ce", pp, npy(tmp_path, "y.npy", rng.integers(0, 5, 50)), "--pred-kind", "probs"]
    else:
        args = ["compute", loss, npy(tmp_path, "q.npy", rng.normal(size=(50, 5)).astype(np.float16)), pp]
    res = run_cli([*args, "-b"])
    assert res.code == 0, res.err
    assert math.isfinite(float(res.out))


def test_zero_probability_of_the_true_class_is_inf_not_a_crash(tmp_path):
    p = np.array([[1.0, 0, 0], [0, 1.0, 0]])
    got, out = per_sample_values(
        ["compute", "ce", npy(tmp_path, "p.npy", p), npy(tmp_path, "y.npy", np.array([0, 2])), "--pred-kind", "probs"],
        tmp_path,
    )
    assert got[0] == 0 and got[1] == math.inf
    assert out["value"] == "inf" and out["stats"]["max"] == "inf"


def test_infinite_loss_prints_no_numpy_warnings_and_has_sane_quantiles(tmp_path):
    p = np.array([[1.0, 0, 0], [0, 1.0, 0], [0, 1.0, 0], [0, 1.0, 0]])
    np.save(tmp_path / "p.npy", p)
    np.save(tmp_path / "y.npy", np.array([0, 2, 2, 2]))
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "lossctl",
            "compute",
            "ce",
            str(tmp_path / "p.npy"),
            str(tmp_path / "y.npy"),
            "--pred-kind",
            "probs",
            "-f",
            "json",
        ],
        capture_output=True,
        text=True,
        env=_env(),
        timeout=60,
    )
    assert proc.returncode == 0
    out = json.loads(proc.stdout)
    assert out["stats"]["p90"] == "inf" and out["stats"]["max"] == "inf"
    assert proc.stderr == "", proc.stderr


def test_fifty_thousand_classes(tmp_path):
    rng = np.random.default_rng(50_000)
    n, c = 24, 50_000
    x = (rng.normal(size=(n, c)) * 4).astype(np.float32)
    y = rng.integers(0, c, size=n)
    x[0] = 0.0  # uniform: exactly log(50000)
    x[1, y[1]] = 1e4  # certain and right
    x[2, (y[2] + 1) % c] = 1e4  # certain and wrong
    xp, yp = npy(tmp_path, "x.npy", x), npy(tmp_path, "y.npy", y)
    for smoothing in (0.0, 0.1):
        got, out = per_sample_values(
            ["compute", "ce", xp, yp, "--chunk-size", "7", "--label-smoothing", str(smoothing)], tmp_path
        )
        ref = ref_ce(x, y, smoothing)
        assert np.isfinite(got).all()
        np.testing.assert_allclose(got, ref, rtol=2e-6, atol=2e-6)
        assert out["inputs"][0]["shape"] == ["N", c]
    got, _ = per_sample_values(["compute", "ce", xp, yp], tmp_path)
    assert got[0] == pytest.approx(math.log(c), rel=1e-7)
    assert got[1] == pytest.approx(0.0, abs=1e-12)
    assert got[2] == pytest.approx(1e4 - float(x[2, y[2]]), rel=1e-12)
    # the same through float64 is exact to float64 rounding
    x64p = npy(tmp_path, "x64.npy", x.astype(np.float64))
    got64, _ = per_sample_values(["compute", "ce", x64p, yp], tmp_path)
    np.testing.assert_allclose(got64, ref_ce(x, y), rtol=1e-12, atol=1e-12)


def test_token_cross_entropy_over_4096_token_sequences(tmp_path):
    from scipy.special import log_softmax

    rng = np.random.default_rng(4096)
    n, t, v = 3, 4096, 48
    x = (rng.normal(size=(n, t, v)) * 3).astype(np.float32)
    spikes = rng.random((n, t, v)) < 0.001
    x[spikes] = rng.choice([-1e4, 1e4], size=int(spikes.sum())).astype(np.float32)
    y = rng.integers(0, v, size=(n, t))
    y[rng.random((n, t)) < 0.1] = -100
    keep = y != -100
    lp = log_softmax(x.astype(np.float64), axis=2)
    tok = -np.take_along_axis(lp, np.where(keep, y, 0)[..., None], axis=2)[..., 0] * keep
    ref_rows = tok.sum(axis=1) / keep.sum(axis=1)
    ref_value = tok.sum() / keep.sum()
    got, out = per_sample_values(
        ["compute", "token-cross-entropy", npy(tmp_path, "x.npy", x), npy(tmp_path, "y.npy", y), "--chunk-size", "1"],
        tmp_path,
    )
    assert np.isfinite(got).all()
    np.testing.assert_allclose(got, ref_rows, rtol=2e-6)
    assert out["value"] == pytest.approx(ref_value, rel=2e-6)
    assert out["derived"]["perplexity"] == pytest.approx(math.exp(ref_value), rel=1e-5)
    # per-token log-probabilities as ragged lists, the longest 4096 tokens
    import pyarrow as pa
    import pyarrow.parquet as pq

    lengths = [4096, 1, 2000, 4095]
    rows = [np.minimum(rng.normal(size=k) - 2.0, 0.0) for k in lengths]
    rows[2][5] = -np.inf  # probability 0: an infinite loss for that sequence, as the reference
    pq.write_table(
        pa.table({"lp": pa.array([r.tolist() for r in rows], type=pa.list_(pa.float64()))}), tmp_path / "lp.parquet"
    )
    got, out = per_sample_values(["compute", "lm", f"{tmp_path / 'lp.parquet'}:lp", "--chunk-size", "3"], tmp_path, "r")
    ref = np.array([-r.mean() for r in rows])
    finite = np.isfinite(ref)
    np.testing.assert_allclose(got[finite], ref[finite], rtol=1e-12)
    assert got[2] == math.inf
    assert out["rows"]["read"] == {"pred": 4}


# ---------------------------------------------------------------------------
# Accumulation: float64, compensated, no drift over 1e8 rows
# ---------------------------------------------------------------------------


def test_compensated_sum_of_1e8_values_does_not_drift():
    from fractions import Fraction

    from lossctl.stats import CompensatedSum

    chunk = np.full(1_000_000, 0.1)
    s = CompensatedSum()
    naive32 = np.float32(0.0)
    for _ in range(100):
        s.update(chunk)
        naive32 = np.float32(naive32 + np.sum(chunk, dtype=np.float32))
    exact = Fraction(0.1) * 10**8
    mean = s.value / 1e8
    assert abs(Fraction(mean) - exact / 10**8) / (exact / 10**8) < 1e-15
    # the check is sharp: float32 accumulation (what a naive tool would do) drifts
    assert abs(float(naive32) / 1e8 - 0.1) / 0.1 > 1e-8
    # compensation across chunks: a tiny total between two huge ones survives
    t = CompensatedSum()
    t.update(np.array([1e16]))
    for _ in range(1000):
        t.update(np.array([1.0]))
    t.update(np.array([-1e16]))
    assert t.value == 1000.0


def test_running_stats_mean_and_std_over_1e8_rows_with_a_large_offset():
    from fractions import Fraction

    from lossctl.stats import RunningStats

    pattern = 1e9 + np.arange(8) * 0.125  # exactly representable; exact mean and variance known
    chunk = np.tile(pattern, 125_000)  # 1e6 rows
    base = RunningStats()
    for _ in range(4):
        base.update(chunk)  # the streaming update path, 4e6 rows
    total = RunningStats()
    for _ in range(25):  # 25 shards of 4e6 rows each: 1e8 rows
        total.merge(base)
    assert total.count == 100_000_000
    exact_mean = Fraction(10**9) + Fraction(sum(range(8)), 8 * 8)
    summary = total.summary()
    assert abs(Fraction(summary["mean"]) - exact_mean) / exact_mean < 4e-16
    offsets = [Fraction(k, 8) for k in range(8)]
    mu = sum(offsets) / 8
    var = sum((o - mu) ** 2 for o in offsets) / 8 * Fraction(10**8, 10**8 - 1)
    assert summary["std"] == pytest.approx(math.sqrt(var), rel=1e-9)
    assert summary["min"] == pattern[0] and summary["max"] == pattern[-1]


def test_weighted_headline_over_many_chunks_is_the_exact_ratio():
    from lossctl.aggregate import Aggregate

    agg = Aggregate()
    rng = np.random.default_rng(3)
    nums, dens = [], []
    for _ in range(200):
        num = rng.random(50_000) * 1e6
        den = rng.integers(1, 4, 50_000).astype(np.float64)
        agg.add(num / den, num, den, {})
        nums.append(num)
        dens.append(den)
    ref = math.fsum(np.concatenate(nums).tolist()) / math.fsum(np.concatenate(dens).tolist())
    assert agg.value("mean") == pytest.approx(ref, rel=4e-16)


# ---------------------------------------------------------------------------
# Interruptions (Ctrl-C) and closed pipes, in real processes
# ---------------------------------------------------------------------------

BIG_N, BIG_C = 4_000_000, 16  # 256 MB of float32 logits: long enough to interrupt mid-run


@pytest.fixture(scope="module")
def big_ce(tmp_path_factory):
    d = tmp_path_factory.mktemp("big")
    rng = np.random.default_rng(130)
    x = np.lib.format.open_memmap(d / "x.npy", mode="w+", dtype=np.float32, shape=(BIG_N, BIG_C))
    step = 500_000
    for start in range(0, BIG_N, step):
        x[start : start + step] = rng.standard_normal((min(step, BIG_N - start), BIG_C), dtype=np.float32)
    x.flush()
    del x
    np.save(d / "y.npy", rng.integers(0, BIG_C, size=BIG_N))
    return d


def _wait_for(predicate, proc, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert proc.poll() is None, ("finished before it could be interrupted", proc.returncode)
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.01)


def _interrupt(proc) -> tuple[str, str]:
    assert proc.poll() is None, "the run had already finished: the input is too small to interrupt"
    proc.send_signal(signal.SIGINT)
    out, err = proc.communicate(timeout=60)
    return out.decode(), err.decode()


@pytest.mark.parametrize(
    "outputs",
    [
        ["--per-sample", "ps.csv"],
        ["--per-sample", "ps.parquet"],
        ["--grad", "g.npy"],
        ["--per-sample", "ps.npy", "--grad", "g.parquet"],
    ],
    ids=["per-sample-csv", "per-sample-parquet", "grad-npy", "both"],
)
def test_ctrl_c_exits_130_and_leaves_no_half_written_output(big_ce, tmp_path, outputs):
    out_dir = tmp_path / "out"
    out_dir.mkdir()
    args = [a if a.startswith("--") else str(out_dir / a) for a in outputs]
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "lossctl",
            "compute",
            "ce",
            str(big_ce / "x.npy"),
            str(big_ce / "y.npy"),
            *args,
            "--chunk-size",
            "65536",
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env=_env(),
    )
    try:
        # mid-run: every temporary output exists (created when the first chunk is processed)
        _wait_for(lambda: len([p for p in out_dir.iterdir() if p.name.endswith(".tmp")]) == len(outputs) // 2, proc)
        time.sleep(0.3)
        out, err = _interrupt(proc)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == 130, (proc.returncode, err)
    assert err == "lossctl: interrupted\n"
    assert out == ""
    assert sorted(os.listdir(out_dir)) == []  # neither the final files nor *.tmp leftovers


def test_ctrl_c_while_reading_stdin_removes_the_spooled_copy(big_ce, tmp_path):
    spool = tmp_path / "tmpdir"
    spool.mkdir()
    out_dir = tmp_path / "out"
    out_dir.mkdir()
    with open(big_ce / "x.npy", "rb") as stdin:
        proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "lossctl",
                "compute",
                "ce",
                "-",
                str(big_ce / "y.npy"),
                "--input-format",
                "npy",
                "--per-sample",
                str(out_dir / "ps.csv"),
            ],
            stdin=stdin,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            env=_env(TMPDIR=str(spool)),
        )
        try:
            _wait_for(lambda: any(p.name.startswith("lossctl-stdin-") for p in spool.iterdir()), proc)
            time.sleep(0.3)
            out, err = _interrupt(proc)
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
    assert proc.returncode == 130, (proc.returncode, err)
    assert err == "lossctl: interrupted\n"
    assert os.listdir(spool) == [] and os.listdir(out_dir) == []


def test_closed_pipe_on_per_sample_rows_ends_quietly(tmp_path):
    n = 300_000
    np.save(tmp_path / "p.npy", np.random.default_rng(1).normal(size=n))
    np.save(tmp_path / "t.npy", np.zeros(n))
    for fmt in ("jsonl", "tsv"):
        proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "lossctl",
                "compute",
                "huber",
                str(tmp_path / "p.npy"),
                str(tmp_path / "t.npy"),
                "--reduction",
                "none",
                "-f",
                fmt,
            ],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            env=_env(),
        )
        first = proc.stdout.readline()
        proc.stdout.close()
        err = proc.stderr.read().decode()
        proc.wait(timeout=60)
        assert first.startswith(b'{"row":0' if fmt == "jsonl" else b"row\tloss"), first
        assert err == "", err
        assert proc.returncode == 0


CLASSIFIER = os.path.join(ROOT, "sample_data", "classifier.parquet")
_CE = ["compute", "ce", CLASSIFIER + ":logits", CLASSIFIER + ":label"]


@pytest.mark.parametrize(
    "args,code,err",
    [
        (_CE, 0, ""),  # the Rich table: Rich's own broken-pipe handler exited 1 without a word
        (_CE + ["-f", "json"], 0, ""),
        (["explain", "ce"], 0, ""),
        (["list"], 0, ""),
        (["compute", "ce", "--help"], 0, ""),  # typer's and Rich's own handlers exited 1
        # the reader going away does not hide a failed bound: still exit 3, said on stderr
        (_CE + ["--max", "0.5"], 3, "lossctl: check failed: cross-entropy"),
    ],
    ids=["table", "json", "explain", "list", "help", "table-check-failed"],
)
def test_pipe_closed_before_the_report_is_written_ends_quietly(args, code, err):
    """`lossctl ... | head -1` when head has gone before lossctl writes (the case that decides the
    exit code under `set -o pipefail`): nobody reads, the first write gets EPIPE."""
    r, w = os.pipe()
    os.close(r)
    try:
        proc = subprocess.run(
            [sys.executable, "-m", "lossctl", *args], stdout=w, stderr=subprocess.PIPE, env=_env(), timeout=60
        )
    finally:
        os.close(w)
    assert proc.returncode == code, proc.stderr.decode()
    assert proc.stderr.decode().startswith(err) and (err or proc.stderr == b""), proc.stderr.decode()
    assert "Traceback" not in proc.stderr.decode()


def test_head_1_on_the_table_keeps_the_first_line_and_exit_0():
    """The reproducer as a user types it, under pipefail."""
    cmd = " ".join(f"'{a}'" for a in [sys.executable, "-m", "lossctl", *_CE])
    proc = subprocess.run(
        ["bash", "-o", "pipefail", "-c", f"{cmd} | head -1"], capture_output=True, text=True, env=_env(), timeout=60
    )
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.startswith("cross-entropy = ") and proc.stdout.count("\n") == 1
    assert proc.stderr == ""


def test_a_failed_column_lookup_closes_the_files(tmp_path):
    import gc
    import warnings

    x = npy(tmp_path, "x.npy", LOGITS)
    z = npz_with(tmp_path, "d.npz", label=LABEL)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        res = run_cli(["compute", "ce", x, f"{z}:labels"])  # no array 'labels': resolve() fails
        assert res.code == 1 and "no array named 'labels'" in res.err
        gc.collect()
    leaks = [str(w.message) for w in caught if issubclass(w.category, ResourceWarning)]
    assert leaks == []


# ---------------------------------------------------------------------------
# Readers: the same rows whatever the CSV dialect; an array used twice
# ---------------------------------------------------------------------------

CSV_DIALECTS = {
    "plain": b"a,b\n1,2\n3,5\n-1,0.5\n",
    "crlf": b"a,b\r\n1,2\r\n3,5\r\n-1,0.5\r\n",
    "lone-cr": b"a,b\r1,2\r3,5\r-1,0.5",
    "bom": b"\xef\xbb\xbfa,b\n1,2\n3,5\n-1,0.5\n",
    "blank-lines-before-header": b"\n\r\na,b\n1,2\n3,5\n-1,0.5\n",
    "bom-then-blank-line": b"\xef\xbb\xbf\na,b\n1,2\n3,5\n-1,0.5\n",
    "blank-lines-between-rows": b"a,b\n1,2\n\n3,5\n\n\n-1,0.5",
    "spaces-around-names": b" a , b \n1,2\n3,5\n-1,0.5\n",
    "spaces-around-numbers": b"a,b\n 1 ,\t2\n3,5\n-1 , 0.5\n",
    "quoted": b'"a","b"\n"1","2"\n3,"5"\n-1,0.5\n',
}


@pytest.mark.parametrize("name", list(CSV_DIALECTS))
def test_csv_dialects_read_the_same_rows_from_a_file_and_from_stdin(tmp_path, name):
    expected = ((1 - 2) ** 2 + (3 - 5) ** 2 + (-1 - 0.5) ** 2) / 3
    raw = CSV_DIALECTS[name]
    path = text(tmp_path, "d.csv", raw)
    for res in (
        run_cli(["compute", "mse", f"{path}:a", f"{path}:b", "-f", "json"]),
        run_cli(
            ["compute", "mse", "-:a", "-:b", "--input-format", "csv", "-f", "json", "--chunk-size", "1"], stdin=raw
        ),
    ):
        assert res.code == 0, res.err
        assert res.json["rows"]["read"] == {"pred": 3, "target": 3}
        assert res.json["value"] == expected


def test_csv_error_rows_count_data_rows_not_lines(tmp_path):
    path = text(tmp_path, "d.csv", b"\n\na,b\n1,2\n\n\n3,NA\n4,oops\n")
    res = run_cli(["compute", "mse", f"{path}:a", f"{path}:b", "--nan", "omit"])
    # the NA on row 1 is a missing value (omitted), the first cell that is not a number is on row 2
    assert_one_clean_message(res, 1, ("d.csv, column 'b', row 2 (line 8)", "'oops' is not a number"))


def test_one_npz_array_for_two_inputs(tmp_path):
    p = REG_P.copy()
    path = npz_with(tmp_path, "d.npz", p=p, t=REG_T)
    res = run_cli(["compute", "mse", f"{path}:p", f"{path}:p", "-f", "json", "--chunk-size", "7"])
    assert res.code == 0, res.err
    assert res.json["value"] == 0.0 and res.json["rows"]["read"] == {"pred": N, "target": N}


def test_shard_with_a_non_utf8_csv_header_is_a_clean_error(tmp_path):
    shards = tmp_path / "data"
    shards.mkdir()
    (shards / "part-0.csv").write_bytes(b"\x80,t\n3,4\n")  # the first shard's header is not UTF-8
    res = run_cli(["compute", "mse", f"{shards}:p", f"{shards}:t"])
    assert_one_clean_message(res, 1, ("data",))


@pytest.mark.parametrize(
    "args",
    [
        ["ce", "sample_data/classifier.parquet:logits", "sample_data/classifier.parquet:label"],
        ["ce", "sample_data/classifier.csv:logit_*", "sample_data/classifier.csv:label", "--id-col", "id"],
        ["lm", "sample_data/classification_tokens.parquet:logprobs"],
    ],
    ids=["parquet-lists", "csv-ids", "ragged"],
)
def test_a_run_never_imports_pandas(tmp_path, args):
    """pyarrow's to_numpy / pa.array import pandas when it is installed: 0.3 s on every run, and
    a Ctrl-C that lands during that import is swallowed (the run finishes and exits 0)."""
    code = (
        "import sys\n"
        "from lossctl.cli import main\n"
        "try:\n"
        "    main(sys.argv[1:])\n"
        "except SystemExit as exc:\n"
        "    rc = exc.code\n"
        "sys.stderr.write('PANDAS-IMPORTED' if 'pandas' in sys.modules else 'NO-PANDAS')\n"
        "sys.exit(rc)\n"
    )
    # A stand-in `pandas` first on the path records any attempt to import it, installed or not.
    fake = tmp_path / "fakepkgs" / "pandas"
    fake.mkdir(parents=True)
    marker = tmp_path / "pandas-was-imported"
    (fake / "__init__.py").write_text(
        f"open({str(marker)!r}, 'w').close()\nraise ImportError('stand-in pandas for a lossctl test')\n"
    )
    env = _env(PYTHONPATH=os.pathsep.join(filter(None, [str(fake.parent), os.environ.get("PYTHONPATH")])))
    outputs = ["--per-sample", str(tmp_path / "ps.parquet"), "--grad", str(tmp_path / "g.parquet")]
    for extra in (["-b"], [*outputs, "-b"], ["--per-sample", str(tmp_path / "ps.csv"), "-q"]):
        proc = subprocess.run(
            [sys.executable, "-c", code, "compute", *args, *extra],
            capture_output=True,
            text=True,
            env=env,
            cwd=ROOT,
            timeout=60,
        )
        assert proc.returncode == 0, proc.stderr
        assert proc.stderr.endswith("NO-PANDAS"), (extra, proc.stderr)
        assert not marker.exists(), f"a run tried to import pandas: {extra}"
