"""Properties over random shapes and values (issue #6), through the real CLI.

- per-sample values are identical (bit for bit) whatever the chunk size and whatever the
  input format (CSV, Parquet, NPY of the same numbers), for many losses;
- aggregates do not depend on the order of the rows;
- the per-sample output has one row per input row, whatever was ignored, omitted or dropped.

(Merged split runs equal to one run is issue #5's ``--save-state``/``lossctl merge``.)
"""

from __future__ import annotations

import csv
import math

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from conftest import run_cli, write_csv, write_parquet

SETTINGS = dict(deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])


# ---------------------------------------------------------------------------
# Random inputs for several losses
# ---------------------------------------------------------------------------


def _inputs(loss: str, rng: np.random.Generator, n: int, d: int, scale: float) -> tuple[list[np.ndarray], list[str]]:
    """Arrays for ``loss`` (one per input role, rows first) and extra parameters."""
    if loss in ("mse", "huber", "smooth-l1", "log-cosh", "quantile"):
        shape = (n,) if d == 1 else (n, d)
        params = {"huber": ["--delta", "0.5"], "quantile": ["--quantile", "0.9"]}.get(loss, [])
        return [rng.normal(size=shape) * scale, rng.normal(size=shape) * scale], params
    if loss in ("bce", "focal"):
        shape = (n,) if d == 1 else (n, d)
        x = rng.normal(size=shape) * scale
        y = rng.random(shape) if loss == "bce" else (rng.random(shape) < 0.5).astype(np.float64)
        return [x, y], (["--pos-weight", "2"] if loss == "bce" else [])
    if loss in ("kl-divergence", "js-divergence"):
        c = d + 1
        t = rng.random((n, c))
        t[rng.random((n, c)) < 0.3] = 0.0
        t[:, 0] += 0.1
        t /= t.sum(axis=1, keepdims=True)
        return [rng.normal(size=(n, c)) * scale, t], []
    if loss == "cross-entropy":
        c = d + 1
        y = rng.integers(0, c, size=n)
        y[rng.random(n) < 0.15] = -100
        weight = ["--weight", ",".join(str(1 + k / 2) for k in range(c))]
        params = [["--label-smoothing", "0.1"], weight, ["--label-smoothing", "0.1", *weight], []]
        return [rng.normal(size=(n, c)) * scale, y], params[int(rng.integers(4))]
    if loss in ("giou", "ciou"):

        def boxes():
            xy = rng.normal(size=(n, 2)) * scale
            return np.hstack([xy, xy + rng.random((n, 2)) * scale + 0.01])

        return [boxes(), boxes()], []
    if loss == "cosine-embedding":
        return [rng.normal(size=(n, d)), rng.normal(size=(n, d)), rng.choice([-1, 1], size=n)], ["--margin", "0.2"]
    if loss == "gaussian-nll":
        shape = (n,) if d == 1 else (n, d)
        return [rng.normal(size=shape), rng.normal(size=shape), rng.random(shape) + 0.01], []
    if loss == "ppo-clip":
        return [rng.normal(size=n) - 1, rng.normal(size=n) - 1, rng.normal(size=n) * scale], []
    raise AssertionError(loss)


LOSSES = [
    "mse",
    "huber",
    "smooth-l1",
    "quantile",
    "bce",
    "focal",
    "kl-divergence",
    "js-divergence",
    "cross-entropy",
    "giou",
    "ciou",
    "cosine-embedding",
    "gaussian-nll",
    "ppo-clip",
]


@st.composite
def loss_case(draw):
    loss = draw(st.sampled_from(LOSSES))
    n = draw(st.integers(1, 90))
    d = draw(st.integers(1, 4))
    scale = draw(st.sampled_from([1.0, 10.0, 1e3]))
    seed = draw(st.integers(0, 2**32 - 1))
    arrays, params = _inputs(loss, np.random.default_rng(seed), n, d, scale)
    return loss, arrays, params


def _write_everywhere(tmp, arrays: list[np.ndarray]) -> dict[str, list[str]]:
    """The same numbers as NPY (a file per input), Parquet and CSV (one file, a column per input)."""
    names = [f"in{i}" for i in range(len(arrays))]
    npys = []
    for name, a in zip(names, arrays):
        np.save(tmp / f"{name}.npy", a)
        npys.append(str(tmp / f"{name}.npy"))
    cols = dict(zip(names, arrays))
    pq = write_parquet(tmp / "d.parquet", cols, row_group_size=13)
    cs = write_csv(tmp / "d.csv", cols)
    return {
        "npy": npys,
        "parquet": [f"{pq}:{name}" for name in names],
        "csv": [f"{cs}:{name}_*" if a.ndim == 2 else f"{cs}:{name}" for name, a in zip(names, arrays)],
    }


def _run(loss: str, sources: list[str], params: list[str], tmp, tag: str, *extra: str):
    out = tmp / f"ps_{tag}.npy"
    res = run_cli(["compute", loss, *sources, *params, *extra, "--per-sample", str(out), "-f", "json", "-q"])
    assert res.code == 0, (loss, tag, res.err)
    return np.load(out), res.json


# ---------------------------------------------------------------------------
# 1. chunk size and input format do not change a single per-sample bit
# ---------------------------------------------------------------------------


@settings(max_examples=120, **SETTINGS)
@given(case=loss_case(), chunk=st.integers(1, 40))
def test_per_sample_values_identical_whatever_chunk_size_and_format(tmp_path_factory, case, chunk):
    loss, arrays, params = case
    tmp = tmp_path_factory.mktemp("fmt")
    n = len(arrays[0])
    srcs = _write_everywhere(tmp, arrays)
    base, ref = _run(loss, srcs["npy"], params, tmp, "base")
    assert base.shape == (n,)
    for fmt, chunk_arg in (("npy", chunk), ("parquet", chunk), ("csv", max(1, chunk // 3))):
        got, out = _run(loss, srcs[fmt], params, tmp, fmt, "--chunk-size", str(chunk_arg))
        np.testing.assert_array_equal(got, base, err_msg=f"{loss} {fmt} chunk {chunk_arg}")
        assert out["count"] == ref["count"]
        assert out["rows"]["read"] == ref["rows"]["read"]
        if ref["value"] is None or isinstance(ref["value"], str):
            assert out["value"] == ref["value"]
        else:
            assert out["value"] == pytest.approx(ref["value"], rel=1e-12, abs=1e-300)
        for key in ("min", "max", "p50", "p90", "p99"):
            assert out["stats"][key] == ref["stats"][key], key


# ---------------------------------------------------------------------------
# 2. aggregates do not depend on row order
# ---------------------------------------------------------------------------


@settings(max_examples=80, **SETTINGS)
@given(case=loss_case(), chunk=st.integers(1, 30), perm_seed=st.integers(0, 2**32 - 1))
def test_aggregates_invariant_to_row_order(tmp_path_factory, case, chunk, perm_seed):
    loss, arrays, params = case
    tmp = tmp_path_factory.mktemp("order")
    n = len(arrays[0])
    perm = np.random.default_rng(perm_seed).permutation(n)
    a_paths, b_paths = [], []
    for i, arr in enumerate(arrays):
        np.save(tmp / f"a{i}.npy", arr)
        np.save(tmp / f"b{i}.npy", arr[perm])
        a_paths.append(str(tmp / f"a{i}.npy"))
        b_paths.append(str(tmp / f"b{i}.npy"))
    va, a = _run(loss, a_paths, params, tmp, "a", "--chunk-size", str(chunk))
    vb, b = _run(loss, b_paths, params, tmp, "b", "--chunk-size", "7", "--hist")
    np.testing.assert_array_equal(vb, va[perm])  # each row keeps its own value
    assert b["count"] == a["count"] and b["rows"] == a["rows"]
    if isinstance(a["value"], float):
        assert b["value"] == pytest.approx(a["value"], rel=1e-12, abs=1e-300)
    else:
        assert b["value"] == a["value"]
    for key in ("min", "max", "p50", "p90", "p99"):
        assert b["stats"][key] == a["stats"][key], key
    if isinstance(a["stats"]["std"], float) and math.isfinite(a["stats"]["std"]):
        assert b["stats"]["std"] == pytest.approx(a["stats"]["std"], rel=1e-9, abs=1e-12)
    for key, value in a["components"].items():
        # a component may be a mean of terms of both signs (cosine-embedding's mean cos): summing
        # in another order moves it by a few ulps of its terms, not of the (cancelled) mean
        assert b["components"][key] == pytest.approx(value, rel=1e-12, abs=1e-13)
    # the worst samples are the same rows (renumbered), with the same values
    worst_a = sorted((t["loss"], int(perm.argsort()[t["row"]])) for t in a["top"])
    worst_b = sorted((t["loss"], t["row"]) for t in b["top"])
    assert [w[0] for w in worst_a] == [w[0] for w in worst_b]


# ---------------------------------------------------------------------------
# 3. one per-sample row per input row: ignored, NaN-omitted and dropped rows included
# ---------------------------------------------------------------------------


@st.composite
def messy_classification(draw):
    n = draw(st.integers(1, 80))
    c = draw(st.integers(2, 6))
    seed = draw(st.integers(0, 2**32 - 1))
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, c)) * 3
    y = rng.integers(0, c, size=n).astype(np.float64)
    ignore = rng.random(n) < draw(st.sampled_from([0.0, 0.2]))
    y[ignore] = -100
    nan_x = rng.random(n) < draw(st.sampled_from([0.0, 0.1]))
    x[nan_x, rng.integers(0, c)] = np.nan
    nan_y = (rng.random(n) < draw(st.sampled_from([0.0, 0.1]))) & ~ignore
    y[nan_y] = np.nan
    missing = rng.random(n) < draw(st.sampled_from([0.0, 0.15]))  # targets absent (with --id-col)
    return x, y, ignore & ~nan_x, nan_x | nan_y, missing


@settings(max_examples=80, **SETTINGS)
@given(
    data=messy_classification(),
    chunk=st.integers(1, 25),
    ext=st.sampled_from(["csv", "parquet", "jsonl", "npy", "tsv"]),
    join=st.booleans(),
)
def test_per_sample_has_one_row_per_input_row(tmp_path_factory, data, chunk, ext, join):
    x, y, ignored, nan, missing = data
    n = len(x)
    tmp = tmp_path_factory.mktemp("rows")
    ids = np.array([f"id{i:04d}" for i in range(n)])
    pred = write_parquet(tmp / "p.parquet", {"id": ids, "x": x}, row_group_size=11)
    if join:
        keep = ~missing
        order = np.random.default_rng(n).permutation(int(keep.sum()))
        tgt = write_csv(tmp / "t.csv", {"id": ids[keep][order], "y": y[keep][order]})
        extra = ["--id-col", "id", "--on-missing", "drop"]
    else:
        missing = np.zeros(n, dtype=bool)
        tgt = write_csv(tmp / "t.csv", {"y": y})
        extra = []
    out = tmp / f"ps.{ext}"
    res = run_cli(
        [
            "compute",
            "ce",
            f"{pred}:x",
            f"{tgt}:y",
            "--nan",
            "omit",
            "--chunk-size",
            str(chunk),
            "--per-sample",
            str(out),
            "-f",
            "json",
            "-q",
            *extra,
        ]
    )
    if join and missing.all():  # the target file has no rows at all: that is an error of its own
        assert res.code == 1 and "t.csv has no data rows" in res.err, res.err
        return
    assert res.code == 0, res.err  # even when no row is left: a report whose value is NaN
    report = res.json
    if (missing | nan | ignored).all():
        assert report["value"] is None
    statuses = _statuses(out, ext)
    assert report["per_sample"]["rows"] == n
    if statuses is None:  # NPY holds the loss only
        values = np.load(out)
        assert values.shape == (n,)
        assert int(np.isfinite(values).sum()) == report["rows"]["used"]
        return
    assert len(statuses) == n
    expect = np.where(missing, "dropped", np.where(nan, "nan", np.where(ignored, "ignored", "ok")))
    assert statuses == expect.tolist()
    assert report["rows"]["used"] == statuses.count("ok") == report["count"]
    assert report["rows"]["ignored"] == statuses.count("ignored")
    assert report["rows"]["nan_omitted"] == statuses.count("nan")
    assert report["rows"]["dropped"] == statuses.count("dropped")
    assert report["rows"]["read"]["pred"] == n


def _statuses(path, ext: str) -> list[str] | None:
    if ext in ("csv", "tsv"):
        with open(path, newline="") as fh:
            rows = list(csv.DictReader(fh, delimiter="," if ext == "csv" else "\t"))
        assert [int(r["row"]) for r in rows] == list(range(len(rows)))
        return [r["status"] for r in rows]
    if ext == "parquet":
        import pyarrow.parquet as pq

        t = pq.read_table(path)
        assert t.column("row").to_pylist() == list(range(t.num_rows))
        return t.column("status").to_pylist()
    if ext == "jsonl":
        import json

        rows = [json.loads(line) for line in open(path)]
        assert [r["row"] for r in rows] == list(range(len(rows)))
        return [r["status"] for r in rows]
    return None


def test_ce_smoothing_with_weights_is_chunk_independent(tmp_path):
    """Regression: the weighted smoothing term once used BLAS (`xs @ w`), whose rounding
    depends on the number of rows in the chunk; per-sample values changed in the last bits."""
    rng = np.random.default_rng(0)
    n, c = 64, 5
    x = rng.normal(size=(n, c)) * 10
    y = rng.integers(0, c, size=n)
    np.save(tmp_path / "x.npy", x)
    np.save(tmp_path / "y.npy", y)
    params = ["--label-smoothing", "0.1", "--weight", "1,2,3,4,5"]
    srcs = [str(tmp_path / "x.npy"), str(tmp_path / "y.npy")]
    whole, _ = _run("ce", srcs, params, tmp_path, "whole")
    for chunk in ("1", "3", "17"):
        got, _ = _run("ce", srcs, params, tmp_path, chunk, "--chunk-size", chunk)
        np.testing.assert_array_equal(got, whole, err_msg=f"chunk {chunk}")
