"""`lossctl diff`: saved reports and states compared value by value, with gates and paired intervals."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest

from conftest import run_cli


def _ce_files(tmp_path, seed: int, n: int = 400, c: int = 4):
    """Labels and two models' logits (the second noisier), as NPY files."""
    rng = np.random.default_rng(seed)
    y = rng.integers(0, c, n)
    base = rng.normal(size=(n, c))
    base[np.arange(n), y] += 1.5
    cand = base + rng.normal(scale=0.8, size=(n, c))
    paths = {}
    for name, arr in (("y", y), ("base", base), ("cand", cand)):
        paths[name] = tmp_path / f"{name}.npy"
        np.save(paths[name], arr)
    return paths, y, base, cand


def _ce_rows(logits: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Per-sample cross-entropy in float64 (log-sum-exp written out here, not lossctl's)."""
    m = logits.max(axis=1, keepdims=True)
    lse = m[:, 0] + np.log(np.exp(logits - m).sum(axis=1))
    return lse - logits[np.arange(len(y)), y]


def _save(tmp_path, name, args):
    out = tmp_path / name
    r = run_cli(["compute", *args, "-f", "json"])
    assert r.code == 0, r.err
    out.write_text(r.out)
    return out


def test_report_diff_values_deltas_and_groups(tmp_path):
    paths, y, base, cand = _ce_files(tmp_path, 1)
    np.save(tmp_path / "g.npy", (y % 2).astype(np.int64))
    a = _save(tmp_path, "a.json", ["ce", paths["base"], paths["y"]])
    b = _save(tmp_path, "b.json", ["ce", paths["cand"], paths["y"]])
    r = run_cli(["diff", a, b, "-f", "json"])
    assert r.code == 0, r.err
    doc = r.json
    row = doc["candidates"][0]["rows"][0]
    want_a, want_b = _ce_rows(base, y).mean(), _ce_rows(cand, y).mean()
    assert row["base"] == pytest.approx(want_a, rel=1e-12)
    assert row["value"] == pytest.approx(want_b, rel=1e-12)
    assert row["delta"] == pytest.approx(want_b - want_a, rel=1e-9)
    assert row["rel_delta"] == pytest.approx((want_b - want_a) / want_a, rel=1e-9)
    assert doc["passed"] is True and row["status"] == "ok" and "ci" not in row


def test_diff_of_groups_and_missing_entries(tmp_path):
    c = tmp_path / "d.csv"
    c.write_text("p,t,g\n1,0,a\n2,0,a\n3,0,b\n")
    c2 = tmp_path / "e.csv"
    c2.write_text("p,t,g\n1,0,a\n1,0,a\n1,0,c\n")
    a = _save(tmp_path, "a.json", ["mse", f"{c}:p", f"{c}:t", "--group-by", "g"])
    b = _save(tmp_path, "b.json", ["mse", f"{c2}:p", f"{c2}:t", "--group-by", "g"])
    r = run_cli(["diff", a, b, "-f", "json"])
    assert r.code == 0, r.err
    rows = {(x["group"]): x for x in r.json["candidates"][0]["rows"]}
    assert rows[None]["base"] == pytest.approx(14 / 3) and rows[None]["value"] == pytest.approx(1.0)
    assert rows["a"]["delta"] == pytest.approx(1.0 - 2.5)
    assert rows["b"]["status"] == "missing" and rows["b"]["value"] is None
    assert rows["c"]["status"] == "new" and rows["c"]["base"] is None
    # a gate: a group missing on one side cannot pass
    g = run_cli(["diff", a, b, "--max-delta", "100"])
    assert g.code == 3
    assert "group b" in g.err and "missing" in g.err


@pytest.mark.parametrize(
    "gate, limit, code",
    [("--max-delta", "0", 3), ("--max-delta", "10", 0), ("--max-rel-delta", "0.0001", 3), ("--max-rel-delta", "10", 0)],
)
def test_gates_exit_codes(tmp_path, gate, limit, code):
    paths, *_ = _ce_files(tmp_path, 2)
    a = _save(tmp_path, "a.json", ["ce", paths["base"], paths["y"]])
    b = _save(tmp_path, "b.json", ["ce", paths["cand"], paths["y"]])
    r = run_cli(["diff", a, b, gate, limit])
    assert r.code == code, r.err
    if code == 3:
        assert "check failed" in r.err and "b.json" in r.err
    # the same run the other way round improves: no gate of >= 0 fails
    assert run_cli(["diff", b, a, gate, limit]).code == 0


def test_zero_baseline_relative_delta(tmp_path):
    c = tmp_path / "z.csv"
    c.write_text("p,t\n0,0\n0,0\n")
    d = tmp_path / "nz.csv"
    d.write_text("p,t\n1,0\n0,0\n")
    a = _save(tmp_path, "a.json", ["mse", f"{c}:p", f"{c}:t"])
    b = _save(tmp_path, "b.json", ["mse", f"{d}:p", f"{d}:t"])
    doc = run_cli(["diff", a, b, "-f", "json"]).json
    assert doc["candidates"][0]["rows"][0]["rel_delta"] == "inf"  # JSON's +inf spelling
    assert run_cli(["diff", a, a, "-f", "json"]).json["candidates"][0]["rows"][0]["rel_delta"] == 0.0
    assert run_cli(["diff", a, b, "--max-rel-delta", "1e9"]).code == 3


def test_check_and_compare_documents(tmp_path):
    paths, *_ = _ce_files(tmp_path, 3)
    cfg = tmp_path / "c.toml"
    cfg.write_text(
        f'[[checks]]\nname = "val"\nloss = "ce"\ninputs = ["{paths["base"]}", "{paths["y"]}"]\n'
        f'[[checks]]\nname = "other"\nloss = "ce"\ninputs = ["{paths["cand"]}", "{paths["y"]}"]\n'
    )
    r = run_cli(["check", cfg, "-f", "json"])
    assert r.code == 0, r.err
    (tmp_path / "chk.json").write_text(r.out)
    single = _save(tmp_path, "one.json", ["ce", paths["base"], paths["y"]])
    doc = run_cli(["diff", tmp_path / "chk.json", single, "-f", "json"]).json
    rows = {x["name"]: x for x in doc["candidates"][0]["rows"]}
    assert rows["val"]["status"] == "missing"
    assert rows["cross-entropy"]["status"] == "new"
    same = run_cli(["diff", tmp_path / "chk.json", tmp_path / "chk.json", "-f", "json"]).json
    assert [x["delta"] for x in same["candidates"][0]["rows"]] == [0.0, 0.0]

    cmp = run_cli(["compare", "ce", "--target", paths["y"], paths["base"], paths["cand"], "-f", "json"])
    assert cmp.code == 0, cmp.err
    (tmp_path / "cmp.json").write_text(cmp.out)
    doc = run_cli(["diff", tmp_path / "cmp.json", tmp_path / "cmp.json", "-f", "json"]).json
    assert len(doc["candidates"][0]["rows"]) == 2


def test_paired_interval_from_states(tmp_path):
    """Two states over the same rows: the interval of the difference is a paired one.

    Independent check: a paired bootstrap's spread is that of the per-sample differences,
    sd(d) / sqrt(n); the interval must contain the observed delta, have about the width
    2 * 1.96 * sd(d) / sqrt(n), and be far narrower than the unpaired one would be."""
    paths, y, base, cand = _ce_files(tmp_path, 4, n=3000)
    sa, sb = tmp_path / "sa.json", tmp_path / "sb.json"
    for p, s in ((paths["base"], sa), (paths["cand"], sb)):
        r = run_cli(["compute", "ce", p, paths["y"], "--ci", "0.95", "--save-state", s, "-b"])
        assert r.code == 0, r.err
    r = run_cli(["diff", sa, sb, "-f", "json"])
    assert r.code == 0, r.err
    row = r.json["candidates"][0]["rows"][0]
    d = _ce_rows(cand, y) - _ce_rows(base, y)
    assert row["delta"] == pytest.approx(d.mean(), rel=1e-9)
    ci = row["ci"]
    assert ci["low"] < d.mean() < ci["high"]
    width = 2 * 1.96 * d.std(ddof=1) / math.sqrt(len(d))
    assert ci["high"] - ci["low"] == pytest.approx(width, rel=0.2)
    unpaired = 2 * 1.96 * math.sqrt(_ce_rows(cand, y).var() + _ce_rows(base, y).var()) / math.sqrt(len(d))
    assert ci["high"] - ci["low"] < 0.8 * unpaired
    assert "paired" in ci["method"]
    # the same state against itself: a zero-width interval at zero
    same = run_cli(["diff", sa, sa, "-f", "json"]).json["candidates"][0]["rows"][0]["ci"]
    assert same["low"] == 0.0 and same["high"] == 0.0
    text = run_cli(["diff", sa, sb, "-f", "markdown"]).out
    assert "CI of Δ" in text and "paired percentile bootstrap" in text


def test_paired_interval_refused_for_different_rows_or_seeds(tmp_path):
    paths, y, base, cand = _ce_files(tmp_path, 5)
    np.save(tmp_path / "base_short.npy", base[:300])
    np.save(tmp_path / "y_short.npy", y[:300])
    sa, sb, sc = tmp_path / "sa.json", tmp_path / "sb.json", tmp_path / "sc.json"
    assert run_cli(["compute", "ce", paths["base"], paths["y"], "--ci", "0.9", "--save-state", sa, "-b"]).code == 0
    short = ["compute", "ce", tmp_path / "base_short.npy", tmp_path / "y_short.npy", "--ci", "0.9"]
    assert run_cli([*short, "--save-state", sb, "-b"]).code == 0
    r = run_cli(["diff", sa, sb])
    assert r.code == 1 and "different rows" in r.err and "Traceback" not in r.err
    seeded = ["compute", "ce", paths["cand"], paths["y"], "--ci", "0.9", "--seed", "7", "--save-state", sc, "-b"]
    assert run_cli(seeded).code == 0
    r = run_cli(["diff", sa, sc])
    assert r.code == 1 and "--seed" in r.err
    # --ci on report documents: a usage error
    a = _save(tmp_path, "a.json", ["ce", paths["base"], paths["y"]])
    r = run_cli(["diff", a, a, "--ci", "0.9"])
    assert r.code == 2 and "state files" in r.err


@pytest.mark.parametrize(
    "content, words",
    [
        (None, "file not found"),
        ("{not json", "not readable as JSON"),
        ("[1, 2]", "expected a JSON object"),
        ('{"foo": 1}', "not a lossctl report"),
        ('{"loss": "mse", "value": "abc"}', "expected a number"),
        ("[" * 100000 + "]" * 100000, "JSON"),
    ],
)
def test_bad_documents_are_one_paragraph_errors(tmp_path, content, words):
    good = tmp_path / "good.json"
    good.write_text(json.dumps({"loss": "mse", "value": 1.0}))
    bad = tmp_path / "bad.json"
    if content is not None:
        bad.write_text(content)
    r = run_cli(["diff", good, bad])
    assert r.code == 1, (r.code, r.err)
    assert words in r.err and "Traceback" not in r.err and "internal error" not in r.err
    assert len(r.err.strip().splitlines()) == 1


def test_usage_errors(tmp_path):
    good = tmp_path / "good.json"
    good.write_text(json.dumps({"loss": "mse", "value": 1.0}))
    assert run_cli(["diff", good]).code == 2
    assert run_cli(["diff", good, good, "-f", "csv"]).code == 2
    assert run_cli(["diff", good, good, "--ci", "1.5"]).code == 2


def test_labels_are_shortest_unique_suffixes():
    from lossctl.diff import unique_labels

    assert unique_labels(["runs/a/last.json", "runs/b/last.json"]) == ["a/last.json", "b/last.json"]
    assert unique_labels(["x/base.json", "y/cand.json"]) == ["base.json", "cand.json"]
    assert unique_labels(["r/a/l.json", "r/a/l.json"]) == ["l.json", "l.json"]
    assert unique_labels(["m/runs/a/l.json", "n/runs/a/l.json", "runs/b/l.json"]) == [
        "m/runs/a/l.json",
        "n/runs/a/l.json",
        "b/l.json",
    ]
