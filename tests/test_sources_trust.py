"""Reading inputs right: what automatic column selection may take, shards whose schemas
disagree, CSV headers of any size, and reader paths that must end in a clean error
(issues #12 items 1 and 7, #13 items 9 and 10)."""

from __future__ import annotations

import io
import os
import subprocess
import sys

import numpy as np
import pytest

from tests.conftest import ROOT, assert_clean_error, run_cli


def _npy_with_header(path, shape, descr="<f8", payload=b"") -> str:
    """An NPY file whose header claims ``shape``, followed by ``payload`` (no check that they agree)."""
    buf = io.BytesIO()
    np.lib.format.write_array_header_1_0(buf, {"descr": descr, "fortran_order": False, "shape": shape})
    with open(path, "wb") as fh:
        fh.write(buf.getvalue() + payload)
    return str(path)


# ---------------------------------------------------------------------------
# #13.10: reader paths that ended in "internal error"
# ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    "shape",
    [(2, 2**32, 2**32), (2**62, 4), (2**63 - 1,), (0, 2**40, 2**40)],
    ids=["row-size-overflows-int64", "total-overflows", "max-rows", "zero-rows-huge-row"],
)
def test_npy_header_sizes_beyond_int64_are_a_data_error(tmp_path, shape):
    bad = _npy_with_header(tmp_path / "big.npy", shape)
    target = tmp_path / "t.npy"
    np.save(target, np.zeros(2))
    res = run_cli(["compute", "mse", bad, target])
    assert_clean_error(res, 1, "big.npy", "header")
    assert "internal error" not in res.err


def test_npy_row_size_overflow_as_npz_member_is_a_data_error(tmp_path):
    import zipfile

    member = _npy_with_header(tmp_path / "m.npy", (2, 2**32, 2**32))
    arch = tmp_path / "a.npz"
    with zipfile.ZipFile(arch, "w") as zf:
        zf.write(member, "p.npy")
        zf.writestr("t.npy", open(_npy_with_header(tmp_path / "t.npy", (2,), payload=b"\0" * 16), "rb").read())
    res = run_cli(["compute", "mse", f"{arch}:p", f"{arch}:t"])
    assert_clean_error(res, 1, "a.npz", "header")


@pytest.mark.parametrize("offset", [2**70, 2**63, -1])
def test_row_offset_out_of_int64_range_is_a_usage_error(tmp_path, offset):
    np.save(tmp_path / "p.npy", np.arange(3.0))
    np.save(tmp_path / "t.npy", np.zeros(3))
    res = run_cli(
        ["compute", "mse", tmp_path / "p.npy", tmp_path / "t.npy", "--row-offset", str(offset),
         "--per-sample", tmp_path / "ps.csv"]
    )
    assert_clean_error(res, 2, "--row-offset")
    assert not (tmp_path / "ps.csv").exists()


def test_row_offset_at_the_limit_numbers_rows_exactly(tmp_path):
    np.save(tmp_path / "p.npy", np.arange(3.0))
    np.save(tmp_path / "t.npy", np.zeros(3))
    res = run_cli(
        ["compute", "mse", tmp_path / "p.npy", tmp_path / "t.npy", "--row-offset", str(2**62),
         "--per-sample", tmp_path / "ps.csv"]
    )
    assert res.code == 0, res.err
    lines = (tmp_path / "ps.csv").read_text().splitlines()[1:]
    rows = [int(line.split(",")[0]) for line in lines]
    assert rows == [2**62, 2**62 + 1, 2**62 + 2]
