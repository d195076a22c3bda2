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


# ---------------------------------------------------------------------------
# --per-token
# ---------------------------------------------------------------------------


@pytest.mark.parametrize("chunk", [None, "1", "4"])
def test_per_token_rows_match_reference(tmp_path, chunk):
    seqs = _sequences(n=15, seed=12, ignore=True)
    f = _parquet(tmp_path / "lm.parquet", seqs)
    out = tmp_path / "tok.csv"
    args = ["compute", "lm", f"{f}:logits", f"{f}:labels", "--shift", "--per-token", out, "--format", "json"]
    res = run_cli(args + (["--chunk-size", chunk] if chunk else []))
    assert res.code == 0, res.err
    rows = _rows(out)
    ref = _ref_tokens(seqs, shift=True)
    assert res.json["per_token"] == {"path": str(out), "rows": len(ref)}
    assert [(int(r["row"]), int(r["position"]), int(r["token"])) for r in rows] == [t[:3] for t in ref]
    for r, t in zip(rows, ref):
        assert float(r["loss"]) == pytest.approx(t[3], rel=1e-13)


def test_per_token_of_log_probs_parquet(tmp_path):
    lps = [[-0.5, -1.25], [], [-2.0, -0.125, -3.5]]
    pq.write_table(pa.table({"lp": pa.array(lps, pa.list_(pa.float64()))}), tmp_path / "lp.parquet")
    out = tmp_path / "tok.parquet"
    res = run_cli(["compute", "lm", tmp_path / "lp.parquet", "--per-token", out])
    assert res.code == 0, res.err
    t = pq.read_table(out).to_pydict()
    assert t["row"] == [0, 0, 2, 2, 2]
    assert t["position"] == [0, 1, 0, 1, 2]
    assert t["token"] == [-1] * 5
    assert t["loss"] == [0.5, 1.25, 2.0, 0.125, 3.5]


def test_per_token_needs_a_token_level_loss(tmp_path):
    f = tmp_path / "r.csv"
    f.write_text("p,t\n1,2\n")
    res = run_cli(["compute", "mse", f"{f}:p", f"{f}:t", "--per-token", tmp_path / "x.csv"])
    assert_clean_error(res, 2, "--per-token", "mse")
    assert not (tmp_path / "x.csv").exists()


def test_per_token_never_overwrites_an_input(tmp_path):
    f = _parquet(tmp_path / "lm.parquet", _sequences(n=3, seed=13))
    before = open(f, "rb").read()
    res = run_cli(["compute", "lm", f"{f}:logits", f"{f}:labels", "--per-token", f])
    assert res.code == 2, res.err
    assert open(f, "rb").read() == before


# ---------------------------------------------------------------------------
# --normalize-by / --counts (lm-evaluation-harness definitions)
# ---------------------------------------------------------------------------


def _docs(n=9, seed=14):
    rng = random.Random(seed)
    out = []
    for _ in range(n):
        lps = [-rng.random() * 5 for _ in range(rng.randint(1, 12))]
        words = rng.randint(1, 10)
        out.append((lps, words, words * rng.randint(3, 9)))
    return out


def test_normalize_by_words_and_bytes_are_corpus_totals(tmp_path):
    docs = _docs()
    pq.write_table(
        pa.table(
            {
                "lp": pa.array([d[0] for d in docs], pa.list_(pa.float64())),
                "words": [d[1] for d in docs],
            }
        ),
        tmp_path / "lm.parquet",
    )
    (tmp_path / "bytes.csv").write_text("n_bytes\n" + "".join(f"{d[2]}\n" for d in docs))
    nll = math.fsum(-v for d in docs for v in d[0])
    words = sum(d[1] for d in docs)
    n_bytes = sum(d[2] for d in docs)
    f = tmp_path / "lm.parquet"
    res = run_cli(["compute", "lm", f"{f}:lp", "--counts", "words", "--normalize-by", "words", "-f", "json"])
    assert res.code == 0, res.err
    assert res.json["derived"] == {"word_perplexity": pytest.approx(math.exp(nll / words), rel=1e-13)}
    # not the mean of per-sequence perplexities
    per_seq = math.fsum(math.exp(math.fsum(-v for v in d[0]) / d[1]) for d in docs) / len(docs)
    assert abs(res.json["derived"]["word_perplexity"] - per_seq) > 1e-3
    for chunk in ("1", "4"):
        res = run_cli(
            ["compute", "lm", f"{f}:lp", "--counts", f"{tmp_path / 'bytes.csv'}:n_bytes", "--normalize-by", "bytes",
             "-f", "json", "--chunk-size", chunk]
        )
        assert res.code == 0, res.err
        d = res.json["derived"]
        assert d["byte_perplexity"] == pytest.approx(math.exp(nll / n_bytes), rel=1e-13)
        assert d["bits_per_byte"] == pytest.approx(nll / n_bytes / math.log(2), rel=1e-13)
        assert "perplexity" not in d
        assert res.json["normalize"]["units"] == n_bytes


def test_normalize_by_tokens_without_counts_is_the_token_perplexity(tmp_path):
    docs = _docs(seed=15)
    pq.write_table(pa.table({"lp": pa.array([d[0] for d in docs], pa.list_(pa.float64()))}), tmp_path / "a.parquet")
    res = run_cli(["compute", "lm", tmp_path / "a.parquet", "--normalize-by", "tokens", "-f", "json"])
    assert res.code == 0, res.err
    lps = [v for d in docs for v in d[0]]
    assert res.json["derived"]["perplexity"] == pytest.approx(math.exp(math.fsum(-v for v in lps) / len(lps)), rel=1e-13)


@pytest.mark.parametrize(
    "extra, code, needle",
    [
        (["--normalize-by", "bytes"], 2, "--counts"),
        (["--counts", "n"], 2, "--normalize-by"),
        (["--normalize-by", "lines", "--counts", "n"], 2, "tokens, bytes, words"),
        (["--normalize-by", "words", "--counts", "bad"], 1, "row 1: -1.0 is not a count"),
        (["--normalize-by", "bytes", "--counts", "zero"], 1, "add up to 0.0"),
    ],
)
def test_normalize_errors(tmp_path, extra, code, needle):
    pq.write_table(
        pa.table({"lp": pa.array([[-1.0], [-2.0]], pa.list_(pa.float64())), "n": [3, 4], "bad": [2.0, -1.0], "zero": [0, 0]}),
        tmp_path / "a.parquet",
    )
    res = run_cli(["compute", "lm", f"{tmp_path / 'a.parquet'}:lp", *extra])
    assert_clean_error(res, code, needle)


def test_normalize_on_a_loss_without_perplexity(tmp_path):
    f = tmp_path / "r.csv"
    f.write_text("p,t,n\n1,2,3\n")
    res = run_cli(["compute", "mse", f"{f}:p", f"{f}:t", "--normalize-by", "words", "--counts", "n"])
    assert_clean_error(res, 2, "mse")


# ---------------------------------------------------------------------------
# The README's recipes, on the bundled samples
# ---------------------------------------------------------------------------


def _readme_commands():
    import os
    import shlex

    from tests.conftest import ROOT

    text = open(os.path.join(ROOT, "README.md")).read()
    section = text.split("### Rescoring language-model logs", 1)[1].split("\n### ", 1)[0]
    cmds = []
    for block in section.split("```sh\n")[1:]:
        for line in block.split("```", 1)[0].splitlines():
            if line.startswith("lossctl "):
                cmds.append([a.replace("sample_data/", os.path.join(ROOT, "sample_data") + "/") for a in shlex.split(line)[1:]])
    return cmds


def test_readme_recipes_run_and_match_the_published_definitions(tmp_path, monkeypatch):
    import os
    import re

    from tests.conftest import SAMPLE

    monkeypatch.chdir(tmp_path)
    cmds = _readme_commands()
    assert len(cmds) == 4
    got = []
    for args in cmds:
        res = run_cli(args + ["--format", "json"])
        assert res.code == 0, (args, res.err)
        got.append(res.json)

    # lm-evaluation-harness: weighted_perplexity / bits_per_byte over (loglikelihood, count) pairs,
    # with the counts recomputed here from the documents' text as the harness counts them.
    docs = [json.loads(line) for line in open(os.path.join(SAMPLE, "lm_harness_wikitext.jsonl"))]
    ll = math.fsum(d["filtered_resps"][0] for d in docs)
    words = sum(len(re.split(r"\s+", d["doc"]["page"])) for d in docs)
    n_bytes = sum(len(d["doc"]["page"].encode("utf-8")) for d in docs)
    assert got[0]["derived"]["word_perplexity"] == pytest.approx(math.exp(-ll / words), rel=1e-13)
    assert got[1]["derived"]["byte_perplexity"] == pytest.approx(math.exp(-ll / n_bytes), rel=1e-13)
    assert got[1]["derived"]["bits_per_byte"] == pytest.approx(-ll / n_bytes / math.log(2), rel=1e-13)

    chat = [json.loads(line) for line in open(os.path.join(SAMPLE, "lm_openai_chat.jsonl"))]
    lps = [t["logprob"] for r in chat for t in r["choices"][0]["logprobs"]["content"]]
    assert got[2]["value"] == pytest.approx(math.fsum(-v for v in lps) / len(lps), rel=1e-13)
    tokens = _rows(tmp_path / "chat_tokens.csv")
    assert [float(r["loss"]) for r in tokens] == pytest.approx([-v for v in lps], rel=1e-15)

    comp = [json.loads(line) for line in open(os.path.join(SAMPLE, "lm_openai_completions.jsonl"))]
    lps = [v for r in comp for v in r["choices"][0]["logprobs"]["token_logprobs"]]
    assert got[3]["derived"]["perplexity"] == pytest.approx(math.exp(math.fsum(-v for v in lps) / len(lps)), rel=1e-13)
