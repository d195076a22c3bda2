"""[[compare]] entries in check configs: `lossctl compare` with its gates, validated by the config
schema, reported like checks (table, JSON, markdown, JUnit, HTML), exit 3 when a gate fails; the
bundled sample config and second classifier run out of the box.

Oracles: cross-entropy per row from SciPy's logsumexp; the delta is the difference of the means."""

from __future__ import annotations

import json
import os
import xml.etree.ElementTree as ET

import numpy as np
import pytest
from scipy.special import logsumexp

from conftest import SAMPLE, run_cli


def _ce_rows(logits, labels):
    return logsumexp(logits, axis=1) - logits[np.arange(len(labels)), labels]


def _write(tmp_path, name, logits):
    path = tmp_path / f"{name}.npy"
    np.save(path, logits)
    return path.name


@pytest.fixture
def models(tmp_path):
    """A baseline, a better candidate, a much worse one, and labels (600 rows, 4 classes)."""
    rng = np.random.default_rng(7)
    n, c = 600, 4
    labels = rng.integers(0, c, size=n)
    base = rng.normal(size=(n, c))
    base[np.arange(n), labels] += 1.0
    better = base.copy()
    better[np.arange(n), labels] += 1.0
    worse = base.copy()
    worse[np.arange(n), (labels + 1) % c] += 2.0
    np.save(tmp_path / "labels.npy", labels)
    arrays = {"base": base, "better": better, "worse": worse}
    for k, v in arrays.items():
        _write(tmp_path, k, v)
    return tmp_path, arrays, labels


def _config(tmp_path, body: str, name="c.toml") -> str:
    path = tmp_path / name
    path.write_text(body)
    return str(path)


def _entry(candidates, extra=""):
    cands = ", ".join(f'"{c}.npy"' for c in candidates)
    return f"""
[[compare]]
name = "gate"
loss = "cross-entropy"
target = "labels.npy"
baseline = "base.npy"
candidates = [{cands}]
permutations = 1000
{extra}
"""


def test_better_candidate_passes_and_reports_the_delta(models):
    d, arrays, labels = models
    cfg = _config(d, _entry(["better"], "max-delta = 0.0\nfail-if-worse = true\nalpha = 0.05"))
    res = run_cli(["check", cfg, "-f", "json"])
    assert res.code == 0, res.err
    (r,) = res.json["checks"]
    want = _ce_rows(arrays["better"], labels).mean() - _ce_rows(arrays["base"], labels).mean()
    assert r["kind"] == "compare" and r["status"] == "pass"
    assert r["value"] == pytest.approx(want, rel=1e-12)
    assert r["baseline"]["value"] == pytest.approx(_ce_rows(arrays["base"], labels).mean(), rel=1e-12)
    assert r["delta_ci"]["high"] < 0 and {o["bound"] for o in r["outcomes"]} == {"max-delta", "fail-if-worse", "alpha"}


def test_worse_candidate_fails_with_exit_3_in_every_format(models):
    d, _, _ = models
    cfg = _config(d, _entry(["worse"], 'max-rel-delta = 0.01\nfail-if-worse = true\nlabels = ["A", "W"]'))
    junit, html = d / "j.xml", d / "r.html"
    res = run_cli(["check", cfg, "--junit", junit, "--html", html])
    assert res.code == 3
    assert "check failed: gate" in res.err and "lies entirely on the worse side" in res.err
    suite = ET.parse(junit).getroot().find("testsuite")
    assert suite.get("failures") == "1" and suite.find("testcase").find("failure") is not None
    page = html.read_text()
    assert "Δ cross-entropy (W - A)" in page and "fail" in page
    res = run_cli(["check", cfg, "-f", "markdown"])
    assert res.code == 3 and "❌ fail" in res.out and "max-rel-delta 0.01" in res.out


def test_several_candidates_give_one_result_each_with_holm_stated(models):
    d, _, _ = models
    cfg = _config(d, _entry(["better", "worse"], 'correction = "holm"\nalpha = 0.05'))
    res = run_cli(["check", cfg, "-f", "json"])
    assert res.code == 3
    by_name = {r["name"]: r for r in res.json["checks"]}
    assert set(by_name) == {"gate [better.npy]", "gate [worse.npy]"}
    assert by_name["gate [better.npy]"]["status"] == "pass" and by_name["gate [worse.npy]"]["status"] == "fail"
    for r in by_name.values():
        assert r["correction"] == "holm" and r["p_adjusted"] >= r["p_value"]
    assert "adjusted p" in " ".join(o["message"] for o in by_name["gate [worse.npy]"]["outcomes"])


def test_checks_and_compares_run_together_and_no_gates_means_pass(models):
    d, _, _ = models
    body = """
[[checks]]
name = "base-ce"
loss = "ce"
inputs = ["base.npy", "labels.npy"]
max = 10
""" + _entry(["worse"])
    res = run_cli(["check", _config(d, body), "-f", "json"])
    assert res.code == 0, res.err
    assert [r["name"] for r in res.json["checks"]] == ["base-ce", "gate"]
    assert res.json["checks"][1]["outcomes"] == [] and res.json["counts"]["pass"] == 2


def test_per_group_gates_apply_to_each_group(models):
    d, arrays, labels = models
    # the candidate is worse only on the rows of group 1
    mixed = arrays["base"].copy()
    g = np.arange(len(labels)) % 2
    sel = g == 1
    mixed[sel, (labels[sel] + 1) % 4] += 3.0
    np.save(d / "mixed.npy", mixed)
    (d / "g.csv").write_text("g\n" + "\n".join(map(str, g)) + "\n")
    extra = 'group-by = "g.csv:g"\nper-group = true\nmax-delta = 0.0'
    res = run_cli(["check", _config(d, _entry(["mixed"], extra)), "-f", "json"])
    assert res.code == 3
    (r,) = res.json["checks"]
    failed = [o for o in r["outcomes"] if not o["passed"]]
    assert failed and not any("g=0]" in o["message"] for o in failed)
    assert any("g=0]" in o["message"] and o["passed"] for o in r["outcomes"])
    assert any("g=1]" in o["message"] and not o["passed"] for o in r["outcomes"])


@pytest.mark.parametrize(
    "extra, key, words",
    [
        ("max-delat = 0.1", "max-delat", ["unknown key", "Did you mean 'max-delta'"]),
        ('max-delta = "big"', "max-delta", ["a number"]),
        ("alpha = 1.5", "alpha", ["alpha"]),
        ('correction = "bonferroni"', "correction", ["holm"]),
        ('labels = ["only-one", "two", "three"]', "labels", ["one name per system"]),
        ("per-group = true", "per-group", ["give group-by too"]),
    ],
)
def test_bad_compare_keys_are_named_and_the_entry_is_an_error(models, extra, key, words):
    d, _, _ = models
    res = run_cli(["check", _config(d, _entry(["better"], extra)), "-f", "json"])
    assert res.code == 1 and "Traceback" not in res.err
    (r,) = res.json["checks"]
    assert r["status"] == "error" and "compare 1 (gate)" in r["error"] and key in r["error"], r["error"]
    for w in words:
        assert w in r["error"], r["error"]


def test_missing_keys_and_wrong_loss_shape_are_errors(models):
    d, _, _ = models
    body = '[[compare]]\nname = "x"\nloss = "ce"\nbaseline = "base.npy"\ncandidates = ["better.npy"]\n'
    res = run_cli(["check", _config(d, body), "-f", "json"])
    assert res.code == 1 and "key 'target': missing" in res.json["checks"][0]["error"]
    body = '[[compare]]\nname = "x"\nloss = "ppo-clip"\ntarget = "a"\nbaseline = "b"\ncandidates = ["c"]\n'
    res = run_cli(["check", _config(d, body), "-f", "json"])
    assert res.code == 1 and "a prediction and a target" in res.json["checks"][0]["error"]


def test_compare_refuses_ece_with_a_clear_message():
    res = run_cli(
        [
            "compare",
            "ece",
            "--target",
            f"{SAMPLE}/classifier.parquet:label",
            f"{SAMPLE}/classifier.parquet:logits",
            f"{SAMPLE}/classifier_b.parquet:logits",
        ]
    )
    assert res.code == 2 and "per-bin sums" in res.err and "Traceback" not in res.err


def test_the_bundled_config_and_second_classifier_run_out_of_the_box(tmp_path):
    html = tmp_path / "report.html"
    res = run_cli(["check", os.path.join(SAMPLE, "checks.toml"), "--html", html, "-f", "json", "--no-step-summary"])
    assert res.code == 0, res.err
    kinds = [r.get("kind", "check") for r in res.json["checks"]]
    assert kinds == ["check", "check", "compare"] and res.json["passed"]
    assert html.stat().st_size > 1000
    res = run_cli(
        [
            "compare",
            "cross-entropy",
            "--target",
            f"{SAMPLE}/classifier.parquet:label",
            f"{SAMPLE}/classifier.parquet:logits",
            f"{SAMPLE}/classifier_b.parquet:logits",
            "-f",
            "json",
        ]
    )
    assert res.code == 0, res.err
    a = json.loads(res.out)
    import pyarrow.parquet as pq

    ta, tb = pq.read_table(f"{SAMPLE}/classifier.parquet"), pq.read_table(f"{SAMPLE}/classifier_b.parquet")
    assert ta.column("id").to_pylist() == tb.column("id").to_pylist()
    assert ta.column("label").to_pylist() == tb.column("label").to_pylist()
    labels = np.array(ta.column("label").to_pylist())
    la = np.array(ta.column("logits").to_pylist(), dtype=np.float64)
    lb = np.array(tb.column("logits").to_pylist(), dtype=np.float64)
    want = _ce_rows(lb, labels).mean() - _ce_rows(la, labels).mean()
    # the sample logits are float32, which the float32 row kernels round in (about 1e-7 relative)
    assert a["candidates"][0]["delta"] == pytest.approx(want, rel=1e-6)


def test_readme_workflow_snippet_runs_and_writes_the_step_summary(tmp_path):
    """Every `lossctl` command of the README's GitHub Actions snippet, run as the job would
    (from a checkout holding sample_data/, GITHUB_STEP_SUMMARY set), exits 0, writes its
    reports and appends its markdown to the summary."""
    import re
    import shlex
    import subprocess
    import sys

    readme = open(os.path.join(os.path.dirname(SAMPLE), "README.md"), encoding="utf-8").read()
    block = readme.split("<!-- workflow-snippet -->", 1)[1].split("```yaml", 1)[1].split("```", 1)[0]
    commands = [m.group(1) for m in re.finditer(r"^\s*(?:- )?run: (lossctl .*)$", block, re.M)]
    assert len(commands) == 3, commands
    os.symlink(SAMPLE, tmp_path / "sample_data")
    summary = tmp_path / "summary.md"
    env = {**os.environ, "GITHUB_STEP_SUMMARY": str(summary)}
    for cmd in commands:
        argv = shlex.split(cmd)
        res = subprocess.run([sys.executable, "-m", "lossctl", *argv[1:]], cwd=tmp_path, env=env,
                             capture_output=True, text=True, timeout=120)
        assert res.returncode == 0, (cmd, res.stderr)
    text = summary.read_text()
    assert "**lossctl check**" in text and "**lossctl compare**" in text and "b-vs-a" in text
    for name in ("lossctl-junit.xml", "lossctl-check.html", "lossctl-compare.html"):
        assert (tmp_path / name).stat().st_size > 500, name
