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


# ---------------------------------------------------------------------------
# #12.1: automatic column selection never takes index, id or integer columns
# ---------------------------------------------------------------------------

K = 10


def _ce_oracle(logits: np.ndarray, labels: np.ndarray) -> float:
    """Mean cross-entropy in float64: log-sum-exp minus the true class's logit (closed form)."""
    m = logits.max(axis=1)
    lse = m + np.log(np.exp(logits - m[:, None]).sum(axis=1))
    return float(np.mean(lse - logits[np.arange(len(labels)), labels]))


def _classifier(seed: int = 7, n: int = 40):
    rng = np.random.default_rng(seed)
    logits = rng.normal(scale=3.0, size=(n, K))
    labels = rng.integers(0, K, n)
    # what df.sample(...) leaves as index: large, shuffled integers
    index = rng.permutation(10_000)[:n] + 100
    return logits, labels, index


def _pandas_parquet(path, columns: dict, index_columns: list):
    """A Parquet file as pandas' to_parquet writes it: index columns plus 'pandas' metadata."""
    import json

    import pyarrow as pa
    import pyarrow.parquet as pq

    table = pa.table(columns)
    meta = {"index_columns": index_columns, "column_indexes": [], "columns": [], "pandas_version": "2.2.0"}
    pq.write_table(table.replace_schema_metadata({b"pandas": json.dumps(meta).encode()}), str(path))
    return str(path)


def _class_columns(logits):
    return {f"class_{j}": logits[:, j] for j in range(logits.shape[1])}


def test_pandas_index_level_column_is_not_stacked_as_a_class(tmp_path):
    logits, labels, index = _classifier()
    x = _pandas_parquet(
        tmp_path / "x.parquet",
        {**_class_columns(logits), "label": labels, "__index_level_0__": index},
        ["__index_level_0__"],
    )
    res = run_cli(["compute", "ce", x, f"{x}:label", "-b"])
    assert res.code == 0, res.err
    assert float(res.out) == pytest.approx(_ce_oracle(logits, labels), rel=1e-12)


def test_named_pandas_index_is_not_stacked_even_when_it_is_float(tmp_path):
    logits, labels, index = _classifier(seed=8)
    # a named float index, listed first: neither its name nor its type gives it away
    x = _pandas_parquet(
        tmp_path / "x.parquet",
        {"when": index.astype(float), **_class_columns(logits), "label": labels},
        ["when"],
    )
    res = run_cli(["compute", "ce", x, f"{x}:label", "--format", "json"])
    assert res.code == 0, res.err
    doc = res.json
    assert doc["value"] == pytest.approx(_ce_oracle(logits, labels), rel=1e-12)
    assert doc["inputs"][0]["columns"] == [f"class_{j}" for j in range(K)]


def test_index_column_without_metadata_is_recognised_by_its_pandas_name(tmp_path):
    from tests.conftest import write_parquet

    logits, labels, index = _classifier(seed=9)
    x = write_parquet(tmp_path / "x.parquet", {"__index_level_0__": index, **_class_columns(logits), "label": labels})
    res = run_cli(["compute", "ce", x, f"{x}:label", "-b"])
    assert res.code == 0, res.err
    assert float(res.out) == pytest.approx(_ce_oracle(logits, labels), rel=1e-12)


@pytest.mark.parametrize("index_name", ["", "Unnamed: 0"], ids=["blank", "unnamed-0"])
def test_csv_written_with_pandas_default_index_is_read_right(tmp_path, index_name):
    logits, labels, index = _classifier(seed=10)
    path = tmp_path / "x.csv"
    with open(path, "w") as fh:
        fh.write(",".join([index_name, *_class_columns(logits), "label"]) + "\n")
        for i in range(len(labels)):
            fh.write(",".join([str(index[i]), *(repr(float(v)) for v in logits[i]), str(labels[i])]) + "\n")
    res = run_cli(["compute", "ce", path, f"{path}:label", "-b"])
    assert res.code == 0, res.err
    assert float(res.out) == pytest.approx(_ce_oracle(logits, labels), rel=1e-12)
    # the index stays reachable by the name pandas reads it back with
    res = run_cli(["compute", "mse", f"{path}:Unnamed: 0", f"{path}:Unnamed: 0", "-b"])
    assert res.code == 0, res.err
    assert float(res.out) == 0.0


def test_integer_label_column_is_not_stacked_as_an_11th_logit(tmp_path):
    from tests.conftest import write_parquet

    logits, labels, _ = _classifier(seed=11)
    wide = write_parquet(tmp_path / "wide.parquet", {**_class_columns(logits), "label": labels})
    lab = tmp_path / "labels.csv"
    lab.write_text("label\n" + "".join(f"{v}\n" for v in labels))
    res = run_cli(["compute", "ce", wide, f"{lab}:label", "--format", "json"])
    assert res.code == 0, res.err
    doc = res.json
    assert doc["value"] == pytest.approx(_ce_oracle(logits, labels), rel=1e-12)
    assert doc["inputs"][0]["columns"] == [f"class_{j}" for j in range(K)]
    assert doc["inputs"][1]["columns"] == ["label"]


def test_integer_fields_of_a_structured_npy_are_not_stacked(tmp_path):
    logits, labels, _ = _classifier(seed=12)
    rec = np.zeros(len(labels), dtype=[(f"class_{j}", "f8") for j in range(K)] + [("label", "i8")])
    for j in range(K):
        rec[f"class_{j}"] = logits[:, j]
    rec["label"] = labels
    np.save(tmp_path / "x.npy", rec)
    np.save(tmp_path / "y.npy", labels)
    res = run_cli(["compute", "ce", tmp_path / "x.npy", tmp_path / "y.npy", "-b"])
    assert res.code == 0, res.err
    assert float(res.out) == pytest.approx(_ce_oracle(logits, labels), rel=1e-12)


def test_float_label_among_logits_is_an_error_listing_the_candidates(tmp_path):
    logits, labels, _ = _classifier(seed=13)
    path = tmp_path / "x.csv"  # CSV: every column reads as float, so 'label' looks like a logit
    with open(path, "w") as fh:
        fh.write(",".join([*_class_columns(logits), "label"]) + "\n")
        for i in range(len(labels)):
            fh.write(",".join([*(repr(float(v)) for v in logits[i]), str(labels[i])]) + "\n")
    lab = tmp_path / "labels.csv"
    lab.write_text("label\n" + "".join(f"{v}\n" for v in labels))
    res = run_cli(["compute", "ce", path, f"{lab}:label"])
    assert_clean_error(res, 1, "x.csv", "'class_0'", "'label'", "PRED", "x.csv:'class_*'", "x.csv:class_0,class_1")
    # naming them as the message says works, and gives the right number
    res = run_cli(["compute", "ce", f"{path}:class_*", f"{lab}:label", "-b"])
    assert res.code == 0, res.err
    assert float(res.out) == pytest.approx(_ce_oracle(logits, labels), rel=1e-12)


def test_out_of_order_class_columns_are_not_stacked_silently(tmp_path):
    from tests.conftest import write_parquet

    logits, labels, _ = _classifier(seed=14)
    cols = _class_columns(logits)
    rest = {k: v for k, v in cols.items() if k not in ("class_0", "class_1")}
    swapped = {"class_1": cols["class_1"], "class_0": cols["class_0"], **rest}
    x = write_parquet(tmp_path / "x.parquet", swapped)
    y = tmp_path / "y.npy"
    np.save(y, labels)
    res = run_cli(["compute", "ce", x, y])
    assert_clean_error(res, 1, "x.parquet", "'class_1'", "PRED")


@pytest.mark.parametrize("name", ["id", "sample_id", "row-idx", "sampleId", "uuid", "key"])
def test_id_like_columns_are_not_taken_automatically(tmp_path, name):
    from tests.conftest import write_parquet

    rng = np.random.default_rng(15)
    p, t = rng.normal(size=30), rng.normal(size=30)
    x = write_parquet(tmp_path / "x.parquet", {name: np.arange(30.0) * 1e3, "pred": p})
    y = tmp_path / "t.npy"
    np.save(y, t)
    res = run_cli(["compute", "mse", x, y, "-b"])
    assert res.code == 0, res.err
    assert float(res.out) == pytest.approx(float(np.mean((p - t) ** 2)), rel=1e-12)


def test_id_col_and_index_are_never_stacked(tmp_path):
    logits, labels, index = _classifier(seed=16)
    rid = np.arange(len(labels), dtype=float) * 7.0
    x = _pandas_parquet(
        tmp_path / "x.parquet",
        {"__index_level_0__": index, "ref": rid, **_class_columns(logits)},
        ["__index_level_0__"],
    )
    from tests.conftest import write_parquet

    y = write_parquet(tmp_path / "y.parquet", {"ref": rid[::-1].copy(), "label": labels[::-1].copy()})
    res = run_cli(["compute", "ce", x, f"{y}:label", "--id-col", "ref", "--format", "json"])
    assert res.code == 0, res.err
    assert res.json["value"] == pytest.approx(_ce_oracle(logits, labels), rel=1e-12)
    assert res.json["inputs"][0]["columns"] == [f"class_{j}" for j in range(K)]


def test_only_index_and_id_columns_left_is_an_error_saying_why(tmp_path):
    from tests.conftest import write_parquet

    x = write_parquet(tmp_path / "x.parquet", {"__index_level_0__": np.arange(5), "p": np.zeros(5)})
    res = run_cli(["compute", "mse", f"{x}:p", x])
    assert_clean_error(res, 1, "x.parquet", "__index_level_0__", "index", "TARGET")


def test_reports_name_the_columns_each_role_used(tmp_path):
    logits, labels, index = _classifier(seed=17)
    x = _pandas_parquet(
        tmp_path / "x.parquet",
        {**_class_columns(logits), "label": labels, "__index_level_0__": index},
        ["__index_level_0__"],
    )
    table = run_cli(["compute", "ce", x, f"{x}:label"])
    assert table.code == 0, table.err
    assert "columns  pred: class_0..class_9 (10); target: label" in table.out
    md = run_cli(["compute", "ce", x, f"{x}:label", "--format", "markdown"])
    assert "Columns: pred: class_0..class_9 (10); target: label." in md.out
    doc = run_cli(["compute", "ce", x, f"{x}:label", "--format", "json"]).json
    assert {i["role"]: i["columns"] for i in doc["inputs"]} == {
        "pred": [f"class_{j}" for j in range(K)],
        "target": ["label"],
    }
    # a plain array has no columns to name: no line
    np.save(tmp_path / "p.npy", np.zeros(3))
    np.save(tmp_path / "t.npy", np.ones(3))
    plain = run_cli(["compute", "mse", tmp_path / "p.npy", tmp_path / "t.npy"])
    assert plain.code == 0 and "columns" not in plain.out


# ---------------------------------------------------------------------------
# #12.7: Parquet shards that disagree on a used column
# ---------------------------------------------------------------------------


def _shards(tmp_path, tables: dict) -> str:
    import pyarrow as pa
    import pyarrow.parquet as pq

    d = tmp_path / "shards"
    d.mkdir()
    for name, cols in tables.items():
        pq.write_table(pa.table(cols), str(d / name))
    return str(d)


@pytest.mark.parametrize("form", ["dir", "glob"])
def test_shard_missing_a_used_column_is_an_error_naming_it(tmp_path, form):
    d = _shards(
        tmp_path,
        {"a.parquet": {"p": [1.0, 2.0], "t": [1.5, 2.5]}, "b.parquet": {"p": [3.0, 4.0], "x": [0.0, 0.0]},
         "c.parquet": {"p": [5.0, 6.0], "zz": [0.0, 0.0]}},
    )
    src = d if form == "dir" else os.path.join(d, "*.parquet")
    res = run_cli(["compute", "mse", f"{src}:p", f"{src}:t", "--per-sample", "-"])
    assert_clean_error(res, 1, os.path.join(d, "b.parquet"), "'t'")


@pytest.mark.parametrize(
    "other", [["a", "b"], [1, 2]], ids=["string", "int64"]
)
def test_shard_with_another_type_for_a_used_column_is_an_error_naming_it(tmp_path, other):
    d = _shards(tmp_path, {"a.parquet": {"p": [1.0, 2.0], "t": [1.5, 2.5]}, "b.parquet": {"p": [3.0, 4.0], "t": other}})
    res = run_cli(["compute", "mse", f"{d}:p", f"{d}:t"])
    assert_clean_error(res, 1, os.path.join(d, "b.parquet"), "'t'", "double")


def test_first_shard_missing_the_column_says_the_schema_comes_from_it(tmp_path):
    d = _shards(
        tmp_path, {"a.parquet": {"p": [1.0, 2.0], "x": [0.0, 0.0]}, "b.parquet": {"p": [3.0, 4.0], "t": [1.0, 1.0]}}
    )
    res = run_cli(["compute", "mse", f"{d}:p", f"{d}:t"])
    assert_clean_error(res, 1, "'t'", os.path.join(d, "a.parquet"))


def test_shards_agreeing_on_used_columns_still_read_with_other_columns_differing(tmp_path):
    d = _shards(
        tmp_path,
        {"a.parquet": {"p": [1.0, 2.0], "t": [1.5, 2.5], "extra": ["u", "v"]},
         "b.parquet": {"p": [3.0, 4.0], "t": [3.0, 5.0]}},
    )
    res = run_cli(["compute", "mse", f"{d}:p", f"{d}:t", "-b"])
    assert res.code == 0, res.err
    assert float(res.out) == pytest.approx((0.25 + 0.25 + 0.0 + 1.0) / 4, rel=1e-15)


# ---------------------------------------------------------------------------
# #13.9: CSV headers of any size, duplicate names found in linear time
# ---------------------------------------------------------------------------


def _wide_csv(path, n: int, width: int, rows: int = 3, duplicate: bool = False) -> list[str]:
    names = [f"c{i:0{width}d}" for i in range(n)]
    if duplicate:
        names[-1] = names[1]
    with open(path, "w") as fh:
        fh.write(",".join(names) + "\n")
        for r in range(rows):
            fh.write(",".join(str(r + i % 7) for i in range(n)) + "\n")
    return names


@pytest.mark.slow
@pytest.mark.parametrize("width", [13, 45], ids=["2MB-header", "7MB-header"])
def test_csv_with_a_multi_megabyte_header_reads_right_and_fast(tmp_path, width):
    import time

    path = tmp_path / "wide.csv"
    names = _wide_csv(path, 150_000, width)
    assert os.path.getsize(path) > (2 << 20) * (1 if width == 13 else 3)
    first, last = names[0], names[-1]
    t0 = time.perf_counter()
    res = run_cli(["compute", "mse", f"{path}:{first}", f"{path}:{last}", "-b"])
    elapsed = time.perf_counter() - t0
    assert res.code == 0, res.err[:500]
    # rows r: pred r + 0, target r + (149999 % 7) = r + 3, so every squared error is 9
    assert float(res.out) == 9.0
    assert elapsed < 20, elapsed  # was: rejected (header cut at 1 MiB), and quadratic


def test_csv_header_duplicate_is_found_and_only_a_real_one(tmp_path):
    import time

    path = tmp_path / "dup.csv"
    names = _wide_csv(path, 150_000, 13, rows=1, duplicate=True)
    t0 = time.perf_counter()
    res = run_cli(["compute", "mse", f"{path}:{names[0]}", f"{path}:{names[2]}"])
    assert time.perf_counter() - t0 < 20
    assert_clean_error(res, 1, "dup.csv", repr(names[1]), "more than once", "2", "150000")


@pytest.mark.slow
def test_csv_big_header_from_stdin(tmp_path):
    path = tmp_path / "wide.csv"
    names = _wide_csv(path, 150_000, 13)
    res = run_cli(
        ["compute", "mse", f"-:{names[0]}", f"-:{names[-1]}", "--input-format", "csv", "-b"],
        stdin=path.read_bytes(),
    )
    assert res.code == 0, res.err[:500]
    assert float(res.out) == 9.0


def test_csv_header_without_end_beyond_the_limit_is_a_clean_error(tmp_path, monkeypatch):
    from lossctl.io import fmt_csv

    monkeypatch.setattr(fmt_csv, "HEAD_LIMIT", 1 << 16)  # (the CSV reader lives in lossctl.io.fmt_csv)
    path = tmp_path / "long.csv"
    path.write_text(",".join(f"n{i}" for i in range(40_000)))  # ~300 kB, no newline
    res = run_cli(["compute", "mse", f"{path}:n0", f"{path}:n1"])
    assert_clean_error(res, 1, "long.csv", "header", "longer than")


# ---------------------------------------------------------------------------
# #13.10: a little fuzzing of every reader: truncated files, 0 rows, 0 columns, odd dtypes
# ---------------------------------------------------------------------------


def _every_format(tmp_path) -> dict[str, tuple[str, str]]:
    import pyarrow as pa
    import pyarrow.feather as feather
    import pyarrow.parquet as pq

    rng = np.random.default_rng(21)
    p, t = rng.random(64), rng.random(64)
    pq.write_table(pa.table({"p": p, "t": t}), str(tmp_path / "a.parquet"))
    feather.write_feather(pa.table({"p": p, "t": t}), str(tmp_path / "a.arrow"))
    (tmp_path / "a.csv").write_text("p,t\n" + "".join(f"{a!r},{b!r}\n" for a, b in zip(p.tolist(), t.tolist())))
    np.savez(tmp_path / "a.npz", p=p, t=t)
    rec = np.zeros(64, dtype=[("p", "f8"), ("t", "f8")])
    rec["p"], rec["t"] = p, t
    np.save(tmp_path / "a.npy", rec)
    return {ext: (f"{tmp_path}/cut.{ext}:p", f"{tmp_path}/cut.{ext}:t") for ext in ("parquet", "arrow", "csv", "npz", "npy")}


def _assert_no_internal_error(res) -> None:
    assert res.code in (0, 1), (res.code, res.err)
    assert "internal error" not in res.err and "Traceback" not in res.err, res.err
    if res.code:
        assert res.out == "" and res.err.count("\n") == 1, res.err  # one paragraph


def test_truncated_files_of_every_format_end_in_a_clean_error(tmp_path):
    for ext, (a, b) in _every_format(tmp_path).items():
        data = (tmp_path / f"a.{ext}").read_bytes()
        for cut in sorted({1, 6, 9, 64, 129, len(data) // 3, len(data) // 2, len(data) - 9, len(data) - 1}):
            (tmp_path / f"cut.{ext}").write_bytes(data[:cut])
            res = run_cli(["compute", "mse", a, b])
            _assert_no_internal_error(res)
            if ext != "csv":  # a CSV cut at a line end is a shorter valid file
                assert res.code == 1, (ext, cut, res.out)


@pytest.mark.parametrize(
    "shape,descr",
    [((0,), "<f8"), ((4, 0), "<f8"), ((3,), "<c16"), ((3,), "|V8"), ((3,), "<U2"), ((3,), "<M8[s]")],
    ids=["0-rows", "0-columns", "complex", "void", "unicode", "datetime"],
)
def test_npy_edge_shapes_and_dtypes_are_clean_errors(tmp_path, shape, descr):
    itemsize = np.dtype(descr).itemsize
    n = int(np.prod(shape))
    f = _npy_with_header(tmp_path / "odd.npy", shape, descr, b"\0" * (n * itemsize))
    np.save(tmp_path / "t.npy", np.zeros(shape[0]))
    res = run_cli(["compute", "mse", f, tmp_path / "t.npy"])
    _assert_no_internal_error(res)
    assert res.code == 1 and "odd.npy" in res.err


def test_arrow_stream_cut_at_a_batch_boundary_is_refused_not_shortened(tmp_path):
    """A stream file cut right after a complete record batch parses as a shorter stream; only the
    missing end-of-stream marker shows it. 25 of 33 rows must not be reported as the whole file."""
    import pyarrow as pa

    t = pa.table({"p": np.arange(33, dtype=np.uint8), "t": np.zeros(33, dtype=np.uint8)})
    whole, cut = tmp_path / "whole.arrows", tmp_path / "cut.arrows"
    with pa.OSFile(str(whole), "wb") as f, pa.ipc.new_stream(f, t.schema) as w:
        for b in t.to_batches(max_chunksize=25):
            w.write_batch(b)
    with pa.OSFile(str(cut), "wb") as f:
        w = pa.ipc.new_stream(f, t.schema)
        w.write_batch(t.to_batches(max_chunksize=25)[0])  # no close: no end-of-stream marker
    ok = run_cli(["compute", "mse", f"{whole}:p", f"{whole}:t", "-b"])
    assert ok.code == 0 and float(ok.out) == pytest.approx(np.mean(np.arange(33.0) ** 2))
    bad = run_cli(["compute", "mse", f"{cut}:p", f"{cut}:t", "-b"])
    assert bad.code == 1 and "end-of-stream marker" in bad.err and "cut.arrows" in bad.err
