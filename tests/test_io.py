"""Inputs: every format, column selection, id joins, stdin, and their errors - through the CLI."""

from __future__ import annotations

import math
import os

import numpy as np
import pytest

from conftest import SAMPLE, assert_clean_error, write_arrow, write_csv, write_parquet
from test_classification import ref_ce_index


@pytest.fixture(scope="module")
def data():
    rng = np.random.default_rng(42)
    n, c = 300, 4
    logits = (rng.normal(size=(n, c)) * 2).astype(np.float32)
    label = rng.integers(0, c, size=n)
    ref, mean = ref_ce_index(logits.astype(np.float64).tolist(), label.tolist())
    return logits, label, ref, mean


def ce_value(cli, *sources, extra=()):
    res = cli(["compute", "cross-entropy", *sources, "-f", "json", *extra])
    assert res.code == 0, res.err
    return res.json


def test_every_format_gives_the_same_value(cli, tmp_path, data):
    logits, label, _, mean = data
    cols = {"logit": logits, "label": label}
    csv_path = write_csv(tmp_path / "d.csv", cols)
    tsv_path = write_csv(tmp_path / "d.tsv", cols, delimiter="\t")
    pq_fixed = write_parquet(tmp_path / "fixed.parquet", {"logits": logits, "label": label}, row_group_size=64)
    pq_list = write_parquet(tmp_path / "list.parquet", {"logits": logits, "label": label}, fixed=False)
    arrow = write_arrow(tmp_path / "d.feather", {"logits": logits, "label": label})
    np.save(tmp_path / "x.npy", logits)
    np.save(tmp_path / "y.npy", label)
    np.savez(tmp_path / "d.npz", logits=logits, label=label)
    np.savez_compressed(tmp_path / "c.npz", logits=logits, label=label)
    rec = np.zeros(len(label), dtype=[("logits", np.float32, (4,)), ("label", np.int64)])
    rec["logits"], rec["label"] = logits, label
    np.save(tmp_path / "rec.npy", rec)
    variants = [
        (f"{csv_path}:logit_*", f"{csv_path}:label"),
        (f"{csv_path}:logit_0,logit_1,logit_2,logit_3", f"{csv_path}:label"),
        (csv_path, f"{csv_path}:label"),
        (f"{tsv_path}:logit_*", f"{tsv_path}:label"),
        (f"{pq_fixed}:logits", f"{pq_fixed}:label"),
        (f"{pq_list}:logits", f"{pq_list}:label"),
        (pq_fixed, f"{pq_fixed}:label"),
        (f"{arrow}:logits", f"{arrow}:label"),
        (str(tmp_path / "x.npy"), str(tmp_path / "y.npy")),
        (f"{tmp_path / 'd.npz'}:logits", f"{tmp_path / 'd.npz'}:label"),
        (f"{tmp_path / 'c.npz'}:logits", f"{tmp_path / 'c.npz'}:label"),
        (f"{tmp_path / 'rec.npy'}:logits", f"{tmp_path / 'rec.npy'}:label"),
    ]
    for pred, target in variants:
        out = ce_value(cli, pred, target)
        assert out["value"] == pytest.approx(mean, rel=2e-6), (pred, out["value"])
        assert out["rows"]["read"] == {"pred": 300, "target": 300}
        assert out["count"] == 300


def test_compressed_csv(cli, tmp_path, data):
    import gzip

    logits, label, _, mean = data
    path = write_csv(tmp_path / "d.csv", {"logit": logits, "label": label})
    with open(path, "rb") as src, gzip.open(tmp_path / "d.csv.gz", "wb") as dst:
        dst.write(src.read())
    gz = str(tmp_path / "d.csv.gz")
    assert ce_value(cli, f"{gz}:logit_*", f"{gz}:label")["value"] == pytest.approx(mean, rel=1e-9)


def test_unknown_extension_sniffed_by_magic_bytes(cli, tmp_path, data):
    logits, label, _, mean = data
    np.save(tmp_path / "x.npy", logits)
    os.rename(tmp_path / "x.npy", tmp_path / "x.bin")
    np.save(tmp_path / "y.npy", label)
    out = ce_value(cli, str(tmp_path / "x.bin"), str(tmp_path / "y.npy"))
    assert out["value"] == pytest.approx(mean, rel=2e-6)
    assert out["inputs"][0]["format"] == "npy"


def test_stdin_csv_and_parquet(cli, tmp_path, data):
    logits, label, _, mean = data
    csv_path = write_csv(tmp_path / "d.csv", {"logit": logits, "label": label})
    raw = open(csv_path, "rb").read()
    res = cli(["compute", "ce", "-:logit_*", "-:label", "--input-format", "csv", "-b"], stdin=raw)
    assert res.code == 0, res.err
    assert float(res.out) == pytest.approx(mean, rel=1e-9)
    pq = write_parquet(tmp_path / "d.parquet", {"logits": logits, "label": label})
    res = cli(["compute", "ce", "-:logits", "-:label", "--input-format", "parquet", "-b"], stdin=open(pq, "rb").read())
    assert res.code == 0, res.err
    assert float(res.out) == pytest.approx(mean, rel=2e-6)
    # stdin for one role, a file for the other
    np.save(tmp_path / "y.npy", label)
    res = cli(["compute", "ce", "-:logit_*", str(tmp_path / "y.npy"), "--input-format", "csv", "-b"], stdin=raw)
    assert float(res.out) == pytest.approx(mean, rel=1e-9)


def test_stdin_without_format_is_a_usage_error(cli):
    res = cli(["compute", "ce", "-", "x.csv"], stdin=b"a\n1\n")
    assert_clean_error(res, 2, "--input-format")


def test_stdin_on_a_terminal_is_a_usage_error_not_a_wait(cli, tmp_path):
    np.save(tmp_path / "y.npy", np.zeros(3, dtype=np.int64))
    res = cli(["compute", "ce", "-", str(tmp_path / "y.npy"), "--input-format", "csv"], tty_stdin=True)
    assert_clean_error(res, 2, "terminal")


# ---------------------------------------------------------------------------
# --id-col joins
# ---------------------------------------------------------------------------


def test_id_join_equals_positional(cli, tmp_path, data):
    logits, label, _, mean = data
    ids = np.array([f"k{i}" for i in range(len(label))])
    pred = write_parquet(tmp_path / "p.parquet", {"id": ids, "logits": logits})
    perm = np.random.default_rng(0).permutation(len(label))
    tgt = write_csv(tmp_path / "t.csv", {"id": ids[perm], "label": label[perm]})
    out = ce_value(cli, f"{pred}:logits", f"{tgt}:label", extra=["--id-col", "id", "--chunk-size", "37"])
    assert out["value"] == pytest.approx(mean, rel=2e-6)
    assert out["rows"]["dropped"] == 0


def test_id_join_integer_ids_across_formats(cli, tmp_path, data):
    logits, label, _, mean = data
    ids = np.arange(1000, 1000 + len(label))
    pred = write_parquet(tmp_path / "p.parquet", {"id": ids, "logits": logits})
    perm = np.random.default_rng(1).permutation(len(label))
    tgt = write_csv(tmp_path / "t.csv", {"id": ids[perm], "label": label[perm]})
    out = ce_value(cli, f"{pred}:logits", f"{tgt}:label", extra=["--id-col", "id"])
    assert out["value"] == pytest.approx(mean, rel=2e-6)


def test_missing_ids_are_an_error_by_default_and_dropped_on_request(cli, tmp_path, data):
    logits, label, ref, _ = data
    n = len(label)
    ids = np.array([f"k{i}" for i in range(n)])
    pred = write_parquet(tmp_path / "p.parquet", {"id": ids, "logits": logits})
    keep = np.arange(n) % 10 != 3  # 30 targets missing
    tgt = write_csv(tmp_path / "t.csv", {"id": ids[keep], "label": label[keep]})
    res = cli(["compute", "ce", f"{pred}:logits", f"{tgt}:label", "--id-col", "id"])
    assert_clean_error(res, 1, "p.parquet", "'k3'", "have no row in", "--on-missing drop")
    res = cli(
        ["compute", "ce", f"{pred}:logits", f"{tgt}:label", "--id-col", "id", "--on-missing", "drop", "-f", "json"]
    )
    assert res.code == 0, res.err
    out = res.json
    assert out["rows"]["dropped"] == 30
    assert out["rows"]["used"] == n - 30
    assert out["value"] == pytest.approx(float(np.mean(np.array(ref)[keep])), rel=2e-6)
    # and targets without a prediction
    tgt2 = write_csv(
        tmp_path / "t2.csv",
        {"id": np.concatenate([ids, ["extra1", "extra2"]]), "label": np.concatenate([label, [0, 1]])},
    )
    res = cli(["compute", "ce", f"{pred}:logits", f"{tgt2}:label", "--id-col", "id"])
    assert_clean_error(res, 1, "t2.csv", "'extra1'", "no row in")
    res = cli(
        ["compute", "ce", f"{pred}:logits", f"{tgt2}:label", "--id-col", "id", "--on-missing", "drop", "-f", "json"]
    )
    assert res.json["rows"]["dropped_detail"] == {"no_target": 0, "no_prediction": 2}


def test_duplicate_ids_are_an_error(cli, tmp_path, data):
    logits, label, _, _ = data
    ids = np.array([f"k{i}" for i in range(len(label))])
    dup = ids.copy()
    dup[5] = "k4"
    pred = write_parquet(tmp_path / "p.parquet", {"id": ids, "logits": logits})
    tgt = write_csv(tmp_path / "t.csv", {"id": dup, "label": label})
    res = cli(["compute", "ce", f"{pred}:logits", f"{tgt}:label", "--id-col", "id"])
    assert_clean_error(res, 1, "t.csv", "'k4'", "more than once", "rows 4, 5")
    pred2 = write_parquet(tmp_path / "p2.parquet", {"id": dup, "logits": logits})
    tgt2 = write_csv(tmp_path / "t2.csv", {"id": ids, "label": label})
    res = cli(["compute", "ce", f"{pred2}:logits", f"{tgt2}:label", "--id-col", "id", "--on-missing", "drop"])
    assert_clean_error(res, 1, "p2.parquet", "'k4'", "more than once")


def test_id_column_missing(cli, tmp_path, data):
    logits, label, _, _ = data
    pred = write_parquet(tmp_path / "p.parquet", {"logits": logits})
    tgt = write_csv(tmp_path / "t.csv", {"label": label})
    res = cli(["compute", "ce", f"{pred}:logits", f"{tgt}:label", "--id-col", "key"])
    assert_clean_error(res, 1, "no column 'key'", "--id-col")


# ---------------------------------------------------------------------------
# errors: files, columns, shapes, values
# ---------------------------------------------------------------------------


def test_missing_file(cli, tmp_path):
    res = cli(["compute", "ce", str(tmp_path / "nope.parquet"), str(tmp_path / "y.npy")])
    assert_clean_error(res, 1, "file not found", "nope.parquet")


def test_unknown_column_lists_available(cli):
    res = cli(["compute", "ce", f"{SAMPLE}/classifier.parquet:logitz", f"{SAMPLE}/classifier.parquet:label"])
    assert_clean_error(
        res, 1, "no column 'logitz'", "Did you mean 'logits'", "Available columns: 'id', 'logits', 'label'"
    )


def test_mismatched_row_counts(cli, tmp_path, data):
    logits, label, _, _ = data
    np.save(tmp_path / "x.npy", logits)
    np.save(tmp_path / "y.npy", label[:-2])
    res = cli(["compute", "ce", str(tmp_path / "x.npy"), str(tmp_path / "y.npy")])
    assert_clean_error(res, 1, "Row counts differ", "x.npy has 300 rows", "y.npy has 298 rows", "--id-col")
    # CSV: counts only known at the end of the stream
    a = write_csv(tmp_path / "a.csv", {"logit": logits})
    b = write_csv(tmp_path / "b.csv", {"label": label[:-2]})
    res = cli(["compute", "ce", a, b, "--chunk-size", "64"])
    assert_clean_error(res, 1, "Row counts differ", "a.csv has 300 rows", "b.csv has 298 rows")


def test_wrong_shape(cli, tmp_path):
    np.save(tmp_path / "x.npy", np.zeros((5, 2, 3), dtype=np.float32))
    np.save(tmp_path / "y.npy", np.zeros(5, dtype=np.int64))
    res = cli(["compute", "ce", str(tmp_path / "x.npy"), str(tmp_path / "y.npy")])
    assert_clean_error(res, 1, "x.npy", "shape (5, 2, 3)", "(N, C)")


def test_label_out_of_range_names_file_column_row(cli, tmp_path, data):
    logits, label, _, _ = data
    bad = label.copy()
    bad[17] = 12
    path = write_csv(tmp_path / "d.csv", {"logit": logits, "label": bad})
    res = cli(["compute", "ce", f"{path}:logit_*", f"{path}:label", "--chunk-size", "5"])
    assert_clean_error(res, 1, "d.csv, column 'label', row 17", "class index 12 out of range [0, 4)")


def test_probabilities_not_summing_to_one(cli, tmp_path):
    p = np.array([[0.5, 0.5], [0.3, 0.3], [0.1, 0.9]])
    path = write_csv(tmp_path / "p.csv", {"p": p, "label": np.array([0, 1, 1])})
    res = cli(["compute", "ce", f"{path}:p_*", f"{path}:label", "--pred-kind", "probs"])
    assert_clean_error(res, 1, "p.csv, column 'p_*', row 1", "sum to 0.6", "never renormalises")


def test_nan_in_input_error_omit_propagate(cli, tmp_path, data):
    logits, label, ref, _ = data
    x = logits.copy()
    x[[3, 40], 1] = np.nan
    path = write_csv(tmp_path / "d.csv", {"logit": x, "label": label})
    res = cli(["compute", "ce", f"{path}:logit_*", f"{path}:label"])
    assert_clean_error(res, 1, "d.csv, column 'logit_1', row 3", "NaN", "--nan omit")
    res = cli(
        ["compute", "ce", f"{path}:logit_*", f"{path}:label", "--nan", "omit", "-f", "json", "--chunk-size", "16"]
    )
    out = res.json
    assert out["rows"]["nan_omitted"] == 2 and out["count"] == 298
    keep = np.ones(len(label), bool)
    keep[[3, 40]] = False
    assert out["value"] == pytest.approx(float(np.mean(np.array(ref)[keep])), rel=1e-6)
    res = cli(["compute", "ce", f"{path}:logit_*", f"{path}:label", "--nan", "propagate", "-f", "json"])
    out = res.json
    assert out["value"] is None and out["rows"]["nan_propagated"] == 2


def test_csv_errors_name_the_row(cli, tmp_path):
    ragged = tmp_path / "r.csv"
    ragged.write_text("a,b\n1,2\n3,4\n5\n6,7\n")
    res = cli(["compute", "mse", f"{ragged}:a", f"{ragged}:b"])
    assert_clean_error(res, 1, "r.csv, row 2 (line 4)", "1 fields", "header has 2")
    text = tmp_path / "t.csv"
    text.write_text("a,b\n1,2\n3,x\n")
    res = cli(["compute", "mse", f"{text}:a", f"{text}:b"])
    assert_clean_error(res, 1, "t.csv, column 'b', row 1 (line 3)", "'x' is not a number")
    empty_cell = tmp_path / "e.csv"
    empty_cell.write_text("a,b\n1,2\n3,\n")
    res = cli(["compute", "mse", f"{empty_cell}:a", f"{empty_cell}:b"])
    assert_clean_error(res, 1, "e.csv, column 'b', row 1", "missing value", "--nan omit")


def test_empty_and_header_only_files(cli, tmp_path):
    (tmp_path / "empty.csv").write_text("")
    (tmp_path / "head.csv").write_text("a,b\n")
    res = cli(["compute", "mse", f"{tmp_path / 'empty.csv'}:a", f"{tmp_path / 'empty.csv'}:b"])
    assert_clean_error(res, 1, "empty.csv is empty")
    res = cli(["compute", "mse", f"{tmp_path / 'head.csv'}:a", f"{tmp_path / 'head.csv'}:b"])
    assert_clean_error(res, 1, "head.csv has no data rows")


def test_npy_never_loads_pickles(cli, tmp_path):
    np.save(tmp_path / "obj.npy", np.array([{"a": 1}, None], dtype=object), allow_pickle=True)
    np.save(tmp_path / "y.npy", np.zeros(2))
    res = cli(["compute", "mse", str(tmp_path / "obj.npy"), str(tmp_path / "y.npy")])
    assert_clean_error(res, 1, "obj.npy", "pickles")
    np.savez(tmp_path / "o.npz", a=np.array([{"a": 1}], dtype=object))
    res = cli(["compute", "mse", f"{tmp_path / 'o.npz'}:a", str(tmp_path / "y.npy")])
    assert_clean_error(res, 1, "o.npz", "pickles")


def test_npz_wrong_key_lists_keys(cli, tmp_path):
    np.savez(tmp_path / "d.npz", logits=np.zeros((2, 2)), label=np.zeros(2, dtype=int))
    res = cli(["compute", "ce", f"{tmp_path / 'd.npz'}:logit", f"{tmp_path / 'd.npz'}:label"])
    assert_clean_error(res, 1, "no array named 'logit'", "'logits'")


def test_truncated_and_corrupt_files(cli, tmp_path, data):
    logits, label, _, _ = data
    np.save(tmp_path / "x.npy", logits)
    raw = open(tmp_path / "x.npy", "rb").read()
    (tmp_path / "trunc.npy").write_bytes(raw[: len(raw) // 2])
    np.save(tmp_path / "y.npy", label)
    res = cli(["compute", "ce", str(tmp_path / "trunc.npy"), str(tmp_path / "y.npy")])
    assert_clean_error(res, 1, "trunc.npy", "truncated")
    pq = write_parquet(tmp_path / "d.parquet", {"logits": logits, "label": label})
    raw = open(pq, "rb").read()
    (tmp_path / "bad.parquet").write_bytes(raw[: len(raw) - 100])
    res = cli(["compute", "ce", f"{tmp_path / 'bad.parquet'}:logits", str(tmp_path / "y.npy")])
    assert_clean_error(res, 1, "bad.parquet", "Parquet")
    (tmp_path / "junk.npz").write_bytes(b"PK\x03\x04 not really a zip")
    res = cli(["compute", "ce", f"{tmp_path / 'junk.npz'}:logits", str(tmp_path / "y.npy")])
    assert_clean_error(res, 1, "junk.npz", "NPZ")


def test_uneven_list_column(cli, tmp_path):
    import pyarrow as pa
    import pyarrow.parquet as pq

    t = pa.table({"logits": pa.array([[1.0, 2.0], [1.0, 2.0, 3.0]]), "label": pa.array([0, 1])})
    pq.write_table(t, tmp_path / "u.parquet")
    res = cli(["compute", "ce", f"{tmp_path / 'u.parquet'}:logits", f"{tmp_path / 'u.parquet'}:label"])
    assert_clean_error(res, 1, "column 'logits', row 1", "list of 3 values", "row 0 has 2")


def test_ambiguous_default_column(cli, tmp_path):
    z = np.zeros((3, 2), dtype=np.float32)
    path = write_parquet(tmp_path / "d.parquet", {"logits": z, "embedding": z, "label": np.zeros(3, dtype=int)})
    res = cli(["compute", "ce", path, f"{path}:label"])
    assert_clean_error(res, 1, "d.parquet has 2 columns", "'logits', 'embedding'", "say which one is PRED")


def test_default_selection_stacks_numeric_columns_and_skips_text(cli, tmp_path):
    path = write_csv(
        tmp_path / "d.csv",
        {"id": np.array(["a", "b"]), "x": np.array([[1.0, 2.0], [3.0, 1.0]]), "label": np.array([1, 0])},
    )
    res = cli(["compute", "ce", path, f"{path}:label", "-f", "json"])
    assert res.code == 0, res.err
    assert res.json["inputs"][0]["column"] == "x_0..x_1"
    expected = (math.log1p(math.exp(-1.0)) + math.log1p(math.exp(-2.0))) / 2
    assert res.json["value"] == pytest.approx(expected, rel=1e-12)


def test_plain_npy_has_no_columns(cli, tmp_path):
    np.save(tmp_path / "x.npy", np.zeros((3, 2)))
    res = cli(["compute", "ce", f"{tmp_path / 'x.npy'}:logits", f"{tmp_path / 'x.npy'}:label"])
    assert_clean_error(res, 1, "plain array", "no named columns")
