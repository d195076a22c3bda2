"""Per-sample values do not depend on the chunk size or the input format; aggregates are
invariant to row order; split runs merge into one; memory is bounded by the chunk size."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from conftest import write_csv, write_parquet


def per_sample(cli, args, tmp_path, name):
    out = tmp_path / f"{name}.npy"
    res = cli([*args, "--per-sample", str(out), "-f", "json", "-q"])
    assert res.code == 0, res.err
    return np.load(out), res.json


@st.composite
def classification(draw):
    n = draw(st.integers(1, 120))
    c = draw(st.integers(1, 6))
    seed = draw(st.integers(0, 2**32 - 1))
    rng = np.random.default_rng(seed)
    scale = draw(st.sampled_from([1.0, 30.0, 1e4]))
    x = rng.normal(size=(n, c)) * scale
    y = rng.integers(0, c, size=n)
    y[rng.random(n) < 0.1] = -100
    return x, y


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=classification(), chunk=st.integers(1, 50), smoothing=st.sampled_from([0.0, 0.1]))
def test_cross_entropy_same_per_sample_whatever_chunk_size_and_format(cli, tmp_path_factory, data, chunk, smoothing):
    tmp = tmp_path_factory.mktemp("chunk")
    x, y = data
    np.save(tmp / "x.npy", x)
    np.save(tmp / "y.npy", y)
    pq = write_parquet(tmp / "d.parquet", {"x": x, "y": y}, row_group_size=7)
    csv = write_csv(tmp / "d.csv", {"x": x, "y": y})
    params = ["--label-smoothing", str(smoothing)]
    base, ref = per_sample(cli, ["compute", "ce", str(tmp / "x.npy"), str(tmp / "y.npy"), *params], tmp, "a")
    variants = [
        (["compute", "ce", str(tmp / "x.npy"), str(tmp / "y.npy"), *params, "--chunk-size", str(chunk)], "b"),
        (["compute", "ce", f"{pq}:x", f"{pq}:y", *params, "--chunk-size", str(chunk)], "c"),
        (["compute", "ce", f"{csv}:x_*", f"{csv}:y", *params, "--chunk-size", "1"], "d"),
    ]
    for args, name in variants:
        got, out = per_sample(cli, args, tmp, name)
        np.testing.assert_array_equal(got, base)  # bit for bit, NaN where ignored
        assert out["count"] == ref["count"] and out["rows"]["ignored"] == ref["rows"]["ignored"]
        if ref["value"] is None:
            assert out["value"] is None
        else:
            assert out["value"] == pytest.approx(ref["value"], rel=1e-12)
            if ref["stats"]["std"] is not None:
                assert out["stats"]["std"] == pytest.approx(ref["stats"]["std"], rel=1e-9)
            assert out["stats"]["p50"] == ref["stats"]["p50"]


def _peak_rss_mb(args) -> float:
    """Peak RSS of `python -m lossctl ARGS` in a fresh process, in MB."""
    code = (
        "import resource, subprocess, sys;"
        "r = subprocess.run(sys.argv[1:], capture_output=True);"
        "assert r.returncode == 0, r.stderr.decode();"
        "print(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss)"
    )
    out = subprocess.run(
        [sys.executable, "-c", code, sys.executable, "-m", "lossctl", *args], capture_output=True, text=True
    )
    assert out.returncode == 0, out.stderr
    return int(out.stdout.strip()) / 1024


@pytest.mark.parametrize("fmt", ["npy", "parquet"])
def test_aggregate_only_memory_bounded_by_chunk_not_file(tmp_path, fmt):
    rng = np.random.default_rng(0)
    c = 32
    sizes = {"small": 150_000, "large": 1_200_000}  # 19 MB and 154 MB of float32 logits
    rss = {}
    for name, n in sizes.items():
        x = rng.normal(size=(n, c)).astype(np.float32)
        y = rng.integers(0, c, size=n)
        if fmt == "npy":
            np.save(tmp_path / f"{name}_x.npy", x)
            np.save(tmp_path / f"{name}_y.npy", y)
            args = [str(tmp_path / f"{name}_x.npy"), str(tmp_path / f"{name}_y.npy")]
        else:
            path = write_parquet(tmp_path / f"{name}.parquet", {"x": x, "y": y}, row_group_size=65536)
            args = [f"{path}:x", f"{path}:y"]
        del x, y
        rss[name] = _peak_rss_mb(["compute", "ce", *args, "-b", "--chunk-size", "16384"])
    grown = rss["large"] - rss["small"]
    print(fmt, rss)
    # 135 MB more input may not cost more than a fraction of that in memory.
    assert grown < 45, rss
