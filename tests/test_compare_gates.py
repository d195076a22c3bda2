"""`lossctl compare` gates (exit 3), per-group deltas, labels, Holm correction, JUnit and the
GitHub step summary."""

from __future__ import annotations

import xml.etree.ElementTree as ET

import numpy as np
import pytest

from conftest import run_cli


@pytest.fixture(scope="module")
def systems(tmp_path_factory):
    """A regression target, a baseline, and three candidates: better, same quality, clearly worse."""
    d = tmp_path_factory.mktemp("cmp")
    rng = np.random.default_rng(20261129)
    n = 600
    y = rng.normal(size=n)
    e = rng.normal(size=n)
    files = {
        "y": y,
        "base": y + e,
        "better": y + 0.5 * e,
        "same": y + rng.normal(size=n),  # independent noise of the same scale
        "worse": y + 1.6 * e,
        "g": (np.arange(n) % 3).astype(np.int64),
    }
    for k, v in files.items():
        np.save(d / f"{k}.npy", v)
    return d, files


def _cmp(d, *cands, extra=()):
    return run_cli(["compare", "mse", "--target", d / "y.npy", d / "base.npy", *[d / f"{c}.npy" for c in cands], *extra])


@pytest.mark.parametrize("cand, code", [("better", 0), ("same", 0), ("worse", 3)])
def test_fail_if_worse_and_alpha(systems, cand, code):
    d, _ = systems
    r = _cmp(d, cand, extra=["--fail-if-worse", "--alpha", "0.05", "-f", "json"])
    assert r.code == code, r.err
    doc = r.json
    c = doc["candidates"][0]
    assert c["status"] == ("fail" if code else "pass")
    assert doc["passed"] is (code == 0)
    bounds = {o["bound"] for o in c["outcomes"]}
    assert bounds == {"fail-if-worse", "alpha"}
    if code:
        assert c["delta_ci"]["low"] > 0 and "worse side" in r.err


def test_delta_gates_against_independent_values(systems):
    d, f = systems
    want = np.mean((f["worse"] - f["y"]) ** 2) - np.mean((f["base"] - f["y"]) ** 2)
    base = np.mean((f["base"] - f["y"]) ** 2)
    r = _cmp(d, "worse", extra=["--max-delta", str(want * 1.01), "-f", "json"])
    assert r.code == 0, r.err
    assert r.json["candidates"][0]["delta"] == pytest.approx(want, rel=1e-12)
    assert _cmp(d, "worse", extra=["--max-delta", str(want * 0.99)]).code == 3
    assert _cmp(d, "worse", extra=["--max-rel-delta", str(want / base * 1.01)]).code == 0
    assert _cmp(d, "worse", extra=["--max-rel-delta", str(want / base * 0.99)]).code == 3
    # no gate: exit 0 whatever the result
    assert _cmp(d, "worse").code == 0


def test_per_group_deltas_and_group_gates(systems):
    d, f = systems
    gsrc = d / "g.csv"
    gsrc.write_text("g\n" + "\n".join(str(v) for v in f["g"]) + "\n")
    r = _cmp(d, "worse", extra=["--group-by", f"{gsrc}:g", "-f", "json"])
    assert r.code == 0, r.err
    groups = r.json["candidates"][0]["groups"]
    assert [g["group"] for g in groups] == ["0", "1", "2"]  # keys of a CSV side file are text, as in compute
    for g in groups:
        sel = f["g"] == int(g["group"])
        b = np.mean((f["base"][sel] - f["y"][sel]) ** 2)
        c = np.mean((f["worse"][sel] - f["y"][sel]) ** 2)
        assert g["rows"] == sel.sum()
        assert g["baseline"] == pytest.approx(b, rel=1e-12) and g["value"] == pytest.approx(c, rel=1e-12)
        assert g["delta"] == pytest.approx(c - b, rel=1e-9)
        assert g["delta_ci"]["low"] < g["delta"] < g["delta_ci"]["high"]
    # a group gate: one group's delta decides
    smallest = min(g["delta"] for g in groups)
    limit = str((smallest + max(g["delta"] for g in groups)) / 2)
    overall = r.json["candidates"][0]["delta"]
    assert _cmp(d, "worse", extra=["--group-by", f"{gsrc}:g", "--max-delta", str(max(overall, float(limit)) + 1)]).code == 0
    gated = _cmp(d, "worse", extra=["--group-by", f"{gsrc}:g", "--per-group", "--max-delta", limit])
    assert gated.code == 3 and "=" in gated.err
    assert _cmp(d, "worse", extra=["--per-group", "--max-delta", "1"]).code == 2  # --per-group needs --group-by


def _holm_rejections(p, alpha):
    """Holm's sequential procedure as published: reject the smallest p-values while p_(k) <= alpha / (m - k)."""
    order = np.argsort(p)
    rejected = set()
    for k, i in enumerate(order):
        if p[i] <= alpha / (len(p) - k):
            rejected.add(int(i))
        else:
            break
    return rejected


def test_holm_adjusted_p_values_reject_what_holms_procedure_rejects():
    from lossctl.compare import adjust

    rng = np.random.default_rng(7)
    for _ in range(300):
        m = int(rng.integers(1, 12))
        p = rng.uniform(0, 0.2, size=m) ** rng.uniform(0.5, 3)
        adj = adjust(p.tolist(), "holm")
        assert all(a >= q for a, q in zip(adj, p)) and all(a <= 1 for a in adj)
        for alpha in (0.01, 0.05, 0.1):
            assert {i for i, a in enumerate(adj) if a <= alpha} == _holm_rejections(p, alpha)
    assert adjust([0.01, 0.04, 0.03], "none") == [0.01, 0.04, 0.03]


def test_correction_is_stated_and_applied(systems):
    d, _ = systems
    r = _cmp(d, "better", "same", "worse", extra=["--correction", "holm", "-f", "json"])
    assert r.code == 0, r.err
    doc = r.json
    assert doc["method"]["correction"] == "holm"
    raw = [c["p_value"] for c in doc["candidates"]]
    adj = [c["p_adjusted"] for c in doc["candidates"]]
    assert all(a >= p for a, p in zip(adj, raw))
    md = _cmp(d, "better", "same", extra=["--correction", "holm", "-f", "markdown"]).out
    assert "Holm" in md
    assert _cmp(d, "better", extra=["--correction", "bonferroni"]).code == 2


def test_labels(tmp_path, systems):
    d, f = systems
    for sub in ("a", "b"):
        (tmp_path / "runs" / sub).mkdir(parents=True)
        np.save(tmp_path / "runs" / sub / "last.npy", f["base"] if sub == "a" else f["worse"])
    r = run_cli(["compare", "mse", "--target", d / "y.npy", tmp_path / "runs/a/last.npy", tmp_path / "runs/b/last.npy", "-f", "json"])
    assert r.code == 0, r.err
    assert r.json["baseline"]["label"] == "a/last.npy" and r.json["candidates"][0]["label"] == "b/last.npy"
    table = run_cli(["compare", "mse", "--target", d / "y.npy", tmp_path / "runs/a/last.npy", tmp_path / "runs/b/last.npy"]).out
    assert "a/last.npy" in table and "b/last.npy" in table
    named = _cmp(d, "worse", extra=["--label", "prod", "--label", "new", "-f", "json"]).json
    assert named["baseline"]["label"] == "prod" and named["candidates"][0]["label"] == "new"
    assert _cmp(d, "worse", extra=["--label", "only-one"]).code == 2
    assert _cmp(d, "worse", extra=["--label", "x", "--label", "x"]).code == 2


def test_junit(systems, tmp_path):
    d, _ = systems
    out = tmp_path / "cmp.xml"
    r = _cmp(d, "better", "worse", extra=["--fail-if-worse", "--junit", out])
    assert r.code == 3
    root = ET.parse(out).getroot()
    cases = root.findall(".//testcase")
    assert [c.get("name") for c in cases] == ["better.npy", "worse.npy"]
    assert cases[0].find("failure") is None and cases[1].find("failure") is not None


def test_github_step_summary(systems, tmp_path, monkeypatch):
    d, _ = systems
    summary = tmp_path / "summary.md"
    summary.write_text("earlier step\n")
    monkeypatch.setenv("GITHUB_STEP_SUMMARY", str(summary))
    assert _cmp(d, "worse", extra=["--max-delta", "0"]).code == 3
    text = summary.read_text()
    assert text.startswith("earlier step\n") and "**lossctl compare**" in text and "FAILED" in text
    cfg = tmp_path / "c.toml"
    cfg.write_text(f'[[checks]]\nname = "m"\nloss = "mse"\ninputs = ["{d / "base.npy"}", "{d / "y.npy"}"]\nmax = 100\n')
    assert run_cli(["check", cfg]).code == 0
    assert "**lossctl check**" in summary.read_text() and "| `m` |" in summary.read_text()
    before = summary.read_text()
    assert _cmp(d, "worse", extra=["--no-step-summary"]).code == 0
    assert run_cli(["check", cfg, "--no-step-summary"]).code == 0
    assert summary.read_text() == before


def test_bad_gate_values_are_usage_errors(systems):
    d, _ = systems
    assert _cmp(d, "worse", extra=["--alpha", "1.5"]).code == 2
    assert _cmp(d, "worse", extra=["--max-delta", "nan"]).code == 2
