"""JSON Lines / NDJSON input: files, compressed files, stdin, shards, URIs; nested fields;
chunk-size invariance; hostile inputs (one-paragraph errors naming the file and the line)."""

from __future__ import annotations

import csv
import gzip
import json
import math
import os
import random

import pytest

from tests.conftest import assert_clean_error, ref_log_softmax, run_cli


def _records(n=37, seed=0):
    rng = random.Random(seed)
    out = []
    for i in range(n):
        t = rng.randint(1, 9)
        out.append(
            {
                "doc_id": i,
                # a field the run does not use, with a different type on every other line
                "doc": {"text": "w" * i} if i % 2 else {"text": i},
                "out": {"token_logprobs": [-rng.random() * 4 for _ in range(t)]},
                "logits": [rng.uniform(-3, 3) for _ in range(4)],
                "label": rng.randrange(4),
                # whole numbers in the first lines, fractions later: still one float column
                "score": float(i) if i < 20 else i + 0.25,
            }
        )
    return out


def _write(path, records, opener=open, blank_every=0):
    with opener(path, "wt") as fh:
        for i, r in enumerate(records):
            fh.write(json.dumps(r) + "\n")
            if blank_every and i % blank_every == 0:
                fh.write("\n")
    return str(path)


def _ref_token_ce(records):
    """Σ -log p over all tokens / number of tokens, in float64 with fsum."""
    lps = [lp for r in records for lp in r["out"]["token_logprobs"]]
    return math.fsum(-v for v in lps) / len(lps)


def _value(res):
    assert res.code == 0, res.err
    return res.json["value"]


def _per_sample(path):
    with open(path, newline="") as fh:
        return list(csv.DictReader(fh))


def test_nested_ragged_logprobs_match_float64_reference(tmp_path):
    recs = _records()
    f = _write(tmp_path / "log.jsonl", recs, blank_every=5)
    ps = tmp_path / "ps.csv"
    res = run_cli(["compute", "lm", f"{f}:out.token_logprobs", "--format", "json", "--per-sample", ps])
    assert _value(res) == pytest.approx(_ref_token_ce(recs), rel=1e-14)
    assert res.json["rows"]["read"] == {"pred": len(recs)}
    rows = _per_sample(ps)
    assert len(rows) == len(recs)
    for r, row in zip(recs, rows):
        lps = r["out"]["token_logprobs"]
        assert float(row["loss"]) == pytest.approx(math.fsum(-v for v in lps) / len(lps), rel=1e-14)


def test_list_column_logits_and_int_labels(tmp_path):
    recs = _records()
    f = _write(tmp_path / "cls.ndjson", recs)
    res = run_cli(["compute", "cross-entropy", f"{f}:logits", f"{f}:label", "--format", "json"])
    ref = math.fsum(-ref_log_softmax(r["logits"])[r["label"]] for r in recs) / len(recs)
    assert _value(res) == pytest.approx(ref, rel=1e-14)


def test_integers_then_fractions_read_as_one_float_column(tmp_path):
    recs = _records(80)
    f = _write(tmp_path / "s.jsonl", recs)
    res = run_cli(["compute", "mae", f"{f}:score", f"{f}:doc_id", "--format", "json"])
    ref = math.fsum(abs(r["score"] - r["doc_id"]) for r in recs) / len(recs)
    assert _value(res) == pytest.approx(ref, rel=1e-14)
    assert ref > 0


@pytest.mark.parametrize("chunk", ["1", "3", "64"])
def test_chunk_size_invariance(tmp_path, chunk):
    recs = _records(101, seed=3)
    f = _write(tmp_path / "log.jsonl", recs)
    base = tmp_path / "base.csv"
    got = tmp_path / f"c{chunk}.csv"
    r0 = run_cli(["compute", "lm", f"{f}:out.token_logprobs", "--per-sample", base, "--format", "json"])
    r1 = run_cli(
        ["compute", "lm", f"{f}:out.token_logprobs", "--per-sample", got, "--chunk-size", chunk, "--format", "json"]
    )
    assert _value(r0) == _value(r1)
    assert base.read_bytes() == got.read_bytes()


def test_compressed_stdin_uri_and_sniffed(tmp_path):
    import pyarrow as pa

    recs = _records(23, seed=5)
    want = _ref_token_ce(recs)
    plain = _write(tmp_path / "log.jsonl", recs)
    gz = _write(tmp_path / "log.jsonl.gz", recs, opener=gzip.open)
    zst = str(tmp_path / "log.jsonl.zst")
    with pa.CompressedOutputStream(zst, "zstd") as out:
        out.write(open(plain, "rb").read())
    odd = tmp_path / "log.data"
    odd.write_bytes(open(plain, "rb").read())
    for src in (gz, zst, f"file://{plain}", str(odd)):
        res = run_cli(["compute", "lm", f"{src}:out.token_logprobs", "--format", "json"])
        assert _value(res) == pytest.approx(want, rel=1e-14), src
    res = run_cli(
        ["compute", "lm", "-:out.token_logprobs", "--input-format", "jsonl", "--format", "json"],
        stdin=open(plain, "rb").read(),
    )
    assert _value(res) == pytest.approx(want, rel=1e-14)


def test_shards_with_hive_keys_and_compressed_shard(tmp_path):
    recs = _records(40, seed=7)
    d = tmp_path / "ds"
    (d / "split=a").mkdir(parents=True)
    (d / "split=b").mkdir(parents=True)
    _write(d / "split=a" / "part-0.jsonl", recs[:15])
    _write(d / "split=b" / "part-0.jsonl.gz", recs[15:], opener=gzip.open)
    res = run_cli(["compute", "lm", f"{d}:out.token_logprobs", "--group-by", "split", "--format", "json"])
    assert _value(res) == pytest.approx(_ref_token_ce(recs), rel=1e-14)
    groups = {g["group"]: g["value"] for g in res.json["groups"]}
    assert groups["a"] == pytest.approx(_ref_token_ce(recs[:15]), rel=1e-14)
    assert groups["b"] == pytest.approx(_ref_token_ce(recs[15:]), rel=1e-14)


# ---------------------------------------------------------------------------
# Hostile inputs
# ---------------------------------------------------------------------------


def _one_paragraph(res):
    msg = res.err.strip()
    assert "\n\n" not in msg and len(msg.splitlines()) <= 3, msg
    return msg


def test_malformed_line_names_file_and_line(tmp_path):
    f = tmp_path / "bad.jsonl"
    lines = [json.dumps(r) for r in _records(6)]
    lines.insert(2, "")  # a blank line: skipped, but counted as a line
    lines[5] = lines[5][:-7]  # cut: not valid JSON
    f.write_text("\n".join(lines) + "\n")
    res = run_cli(["compute", "lm", f"{f}:out.token_logprobs"])
    assert_clean_error(res, 1, "bad.jsonl", "line 6", "row 4", "not valid JSON")
    _one_paragraph(res)


def test_mixed_types_name_field_and_line(tmp_path):
    recs = _records(90)
    recs[70]["out"]["token_logprobs"] = ["-0.5"]  # a string among numbers, beyond the first block of lines
    f = _write(tmp_path / "mixed.jsonl", recs)
    res = run_cli(["compute", "lm", f"{f}:out.token_logprobs", "--chunk-size", "8"])
    assert_clean_error(res, 1, "mixed.jsonl", "'out.token_logprobs'", "line 71", "not a list of numbers")
    _one_paragraph(res)


def test_missing_field_names_line(tmp_path):
    recs = _records(12)
    del recs[9]["out"]
    f = _write(tmp_path / "miss.jsonl", recs, blank_every=4)
    res = run_cli(["compute", "lm", f"{f}:out.token_logprobs"])
    # lines: record k is on line k + 1 + (number of blank lines before it) = k + 1 + ceil(k / 4)
    assert_clean_error(res, 1, "miss.jsonl", "row 9 (line 13)", "missing value")
    _one_paragraph(res)


def test_unknown_field_lists_the_fields(tmp_path):
    f = _write(tmp_path / "f.jsonl", _records(3))
    res = run_cli(["compute", "lm", f"{f}:out.nope"])
    assert_clean_error(res, 1, "out.nope")


def test_line_that_is_not_an_object(tmp_path):
    f = tmp_path / "arr.jsonl"
    f.write_text(json.dumps(_records(1)[0]) + "\n[1, 2]\n")
    res = run_cli(["compute", "lm", f"{f}:out.token_logprobs"])
    assert_clean_error(res, 1, "arr.jsonl", "line 2", "not an object")


def test_100mb_single_line_is_refused_with_its_line(tmp_path):
    f = tmp_path / "huge.jsonl"
    with open(f, "wb") as fh:
        fh.write((json.dumps(_records(1)[0]) + "\n").encode())
        fh.write(b'{"out": {"token_logprobs": [' + b"-0.5, " * (100 * 1024 * 1024 // 6) + b"-0.5]}}\n")
    assert os.path.getsize(f) > 100 * 1024 * 1024
    res = run_cli(["compute", "lm", f"{f}:out.token_logprobs"])
    assert_clean_error(res, 1, "huge.jsonl", "line 2", "longer than 8 MiB")
    _one_paragraph(res)


def test_line_longer_than_the_read_block_after_short_lines(tmp_path):
    # The read block follows the first lines (2 MiB here): a longer line later is an error naming it.
    f = tmp_path / "late.jsonl"
    with open(f, "wb") as fh:
        for r in _records(80):
            fh.write((json.dumps(r) + "\n").encode())
        fh.write(b'{"out": {"token_logprobs": [' + b"-0.5, " * (5 * 1024 * 1024 // 6) + b"-0.5]}}\n")
    res = run_cli(["compute", "lm", f"{f}:out.token_logprobs"])
    assert_clean_error(res, 1, "late.jsonl", "line 81", "longer than 2 MiB")
    _one_paragraph(res)


def test_empty_and_blank_files(tmp_path):
    f = tmp_path / "blank.jsonl"
    f.write_text("\n\n")
    res = run_cli(["compute", "lm", f"{f}:x"])
    assert_clean_error(res, 1, "blank.jsonl", "no JSON records")
