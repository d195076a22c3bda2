"""Language-model workflows: ragged logits, --shift (Hugging Face causal-LM labels), per-token
output, perplexity per word / byte and bits per byte. References are written here in float64
Python (math.fsum, max-shifted log-softmax), never with lossctl's kernels."""

from __future__ import annotations

import csv
import json
import math
import random

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from tests.conftest import assert_clean_error, ref_log_softmax, run_cli

V = 7


def _sequences(n=24, seed=1, v=V, lo=1, hi=9, ignore=False):
    rng = random.Random(seed)
    out = []
    for _ in range(n):
        t = rng.randint(lo, hi)
        logits = [[rng.uniform(-5, 5) for _ in range(v)] for _ in range(t)]
        ids = [rng.randrange(v) for _ in range(t)]
        if ignore and t > 2 and rng.random() < 0.5:
            ids[rng.randrange(t)] = -100
        out.append((logits, ids))
    return out


def _ref_tokens(seqs, shift, ignore_index=-100):
    """(sequence, position, token, loss) of every scored token: PyTorch's cross_entropy on
    logits[:, :-1] / labels[:, 1:] with shift (as Hugging Face causal LMs), else all positions."""
    out = []
    for n, (logits, ids) in enumerate(seqs):
        pairs = [(t, t + 1) for t in range(len(ids) - 1)] if shift else [(t, t) for t in range(len(ids))]
        for t_logit, t_label in pairs:
            y = ids[t_label]
            if y == ignore_index:
                continue
            out.append((n, t_label, y, -ref_log_softmax(logits[t_logit])[y]))
    return out


def _ref_headline(seqs, shift):
    toks = _ref_tokens(seqs, shift)
    return math.fsum(t[3] for t in toks) / len(toks)


def _ref_per_sequence(seqs, shift):
    by = {}
    for n, _, _, loss in _ref_tokens(seqs, shift):
        by.setdefault(n, []).append(loss)
    return {n: math.fsum(v) / len(v) for n, v in by.items()}


def _parquet(path, seqs):
    pq.write_table(
        pa.table({"logits": [s[0] for s in seqs], "labels": [s[1] for s in seqs]}), path, row_group_size=5
    )
    return str(path)


def _jsonl(path, seqs):
    with open(path, "w") as fh:
        for logits, ids in seqs:
            fh.write(json.dumps({"model": {"logits": logits}, "input_ids": ids}) + "\n")
    return str(path)


def _rows(path):
    with open(path, newline="") as fh:
        return list(csv.DictReader(fh))


@pytest.mark.parametrize("shift", [False, True])
def test_ragged_logits_match_pytorch_formula(tmp_path, shift):
    seqs = _sequences(ignore=True)
    f = _parquet(tmp_path / "lm.parquet", seqs)
    ps = tmp_path / "ps.csv"
    args = ["compute", "lm", f"{f}:logits", f"{f}:labels", "--format", "json", "--per-sample", ps]
    res = run_cli(args + (["--shift"] if shift else []))
    assert res.code == 0, res.err
    assert res.json["value"] == pytest.approx(_ref_headline(seqs, shift), rel=1e-13)
    assert res.json["derived"]["perplexity"] == pytest.approx(math.exp(_ref_headline(seqs, shift)), rel=1e-13)
    ref = _ref_per_sequence(seqs, shift)
    rows = _rows(ps)
    assert len(rows) == len(seqs)
    for i, row in enumerate(rows):
        if i in ref:
            assert float(row["loss"]) == pytest.approx(ref[i], rel=1e-13)
        else:  # a sequence with no scored token (one token, shifted): an ignored row
            assert shift and len(seqs[i][1]) <= 2


def test_ragged_logits_from_jsonl_nested_field(tmp_path):
    seqs = _sequences(seed=4)
    f = _jsonl(tmp_path / "lm.jsonl", seqs)
    res = run_cli(["compute", "lm", f"{f}:model.logits", f"{f}:input_ids", "--shift", "--format", "json"])
    assert res.code == 0, res.err
    assert res.json["value"] == pytest.approx(_ref_headline(seqs, True), rel=1e-13)


def test_padded_logits_with_shift(tmp_path):
    seqs = _sequences(seed=5, lo=6, hi=6)
    x = np.array([s[0] for s in seqs])
    y = np.array([s[1] for s in seqs])
    np.save(tmp_path / "x.npy", x)
    np.save(tmp_path / "y.npy", y)
    res = run_cli(["compute", "lm", tmp_path / "x.npy", tmp_path / "y.npy", "--shift", "--format", "json"])
    assert res.code == 0, res.err
    assert res.json["value"] == pytest.approx(_ref_headline(seqs, True), rel=1e-13)


@pytest.mark.parametrize("chunk", ["1", "2", "7"])
def test_ragged_logits_chunk_size_invariance(tmp_path, chunk):
    # equal lengths inside some chunks, different between chunks: arrays and ragged blocks mix
    seqs = _sequences(n=30, seed=6, lo=2, hi=4)
    f = _parquet(tmp_path / "lm.parquet", seqs)
    base, got = tmp_path / "a.csv", tmp_path / "b.csv"
    common = ["compute", "lm", f"{f}:logits", f"{f}:labels", "--shift", "--format", "json"]
    r0 = run_cli(common + ["--per-sample", base])
    r1 = run_cli(common + ["--per-sample", got, "--chunk-size", chunk])
    assert r0.code == r1.code == 0, r1.err
    assert r0.json["value"] == pytest.approx(r1.json["value"], rel=1e-15)  # (sums of chunks: 1 ulp)
    assert r0.json["signature"] == r1.json["signature"]
    assert base.read_bytes() == got.read_bytes()


def test_ragged_logits_gradient(tmp_path):
    seqs = _sequences(n=6, seed=8)
    f = _parquet(tmp_path / "lm.parquet", seqs)
    g = tmp_path / "g.parquet"
    res = run_cli(["compute", "lm", f"{f}:logits", f"{f}:labels", "--shift", "--grad", g])
    assert res.code == 0, res.err
    got = pq.read_table(g).column("grad").to_pylist()
    for (logits, ids), row in zip(seqs, got):
        want = [[0.0] * V for _ in logits]
        n_tok = len(ids) - 1
        for t in range(n_tok):
            p = [math.exp(v) for v in ref_log_softmax(logits[t])]
            for c in range(V):
                want[t][c] = (p[c] - (c == ids[t + 1])) / n_tok
        np.testing.assert_allclose(row, np.array(want).reshape(-1), rtol=1e-12, atol=1e-15)


def test_label_count_mismatch_speaks_of_sequences_and_tokens(tmp_path):
    seqs = _sequences(n=5, seed=9, lo=3, hi=5)
    seqs[3] = (seqs[3][0], seqs[3][1][:-1])
    f = _parquet(tmp_path / "lm.parquet", seqs)
    res = run_cli(["compute", "lm", f"{f}:logits", f"{f}:labels"])
    assert_clean_error(res, 1, "row 3", "tokens of logits", "labels")
    assert "class" not in res.err


def test_vocabulary_size_varies_between_tokens(tmp_path):
    seqs = _sequences(n=5, seed=10, lo=2, hi=4)
    seqs[2][0][1].append(0.5)
    f = _parquet(tmp_path / "lm.parquet", seqs)
    res = run_cli(["compute", "lm", f"{f}:logits", f"{f}:labels"])
    assert_clean_error(res, 1, "sequence (row) 2", "token 1", "vocabulary size")
    assert "class" not in res.err


def test_shift_with_log_probs_is_a_usage_error(tmp_path):
    f = tmp_path / "lp.jsonl"
    f.write_text('{"lp": [-0.5, -1.0]}\n{"lp": [-2.0]}\n')
    res = run_cli(["compute", "lm", f"{f}:lp", "--shift"])
    assert_clean_error(res, 2, "--shift")


def test_ragged_logits_without_labels(tmp_path):
    f = _parquet(tmp_path / "lm.parquet", _sequences(n=4, seed=11))
    res = run_cli(["compute", "lm", f"{f}:logits"])
    assert_clean_error(res, 1, "labels")
