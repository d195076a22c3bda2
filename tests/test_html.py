"""`--html PATH`: self-contained reports whose numbers are the JSON report's, checked statically
and in headless Chromium (no console errors, no requests, charts with marks, a screenshot)."""

from __future__ import annotations

import html.parser
import json
import os

import numpy as np
import pytest

import _browser
from conftest import SAMPLE, run_cli

CLF = os.path.join(SAMPLE, "classifier.parquet")
BASE = [f"{CLF}:logits", f"{CLF}:label"]


class _Numbers(html.parser.HTMLParser):
    """Every element carrying data-key/data-value, every script, and every URL-valued attribute."""

    def __init__(self):
        super().__init__()
        self.numbers: list[tuple[str, object]] = []
        self.scripts: list[dict] = []
        self.urls: list[str] = []
        self.tags: list[str] = []

    def handle_starttag(self, tag, attrs):
        a = dict(attrs)
        self.tags.append(tag)
        if "data-key" in a:
            self.numbers.append((a["data-key"], json.loads(a["data-value"])))
        if tag == "script":
            self.scripts.append(a)
        for k in ("src", "href", "xlink:href", "action", "data"):
            if k in a:
                self.urls.append(a[k])


def _parse(path) -> _Numbers:
    p = _Numbers()
    p.feed(open(path, encoding="utf-8").read())
    return p


def _expected(doc: dict) -> dict[str, list]:
    """What the page must show, taken from the JSON report."""
    want: dict[str, list] = {"value": [doc["value"]], "rows.used": [doc["rows"]["used"]]}
    for k in ("count", "mean", "std", "min", "p50", "p90", "p99", "max"):
        want[f"stats.{k}"] = [doc["stats"][k]]
    if doc.get("ci"):
        want["ci.low"], want["ci.high"] = [doc["ci"]["low"]], [doc["ci"]["high"]]
    want["top.loss"] = [t["loss"] for t in doc["top"]]
    if doc.get("groups"):
        want["groups.value"] = [g["value"] for g in doc["groups"]]
        want["groups.count"] = [g["count"] for g in doc["groups"]]
    return want


def _shown(numbers) -> dict[str, list]:
    got: dict[str, list] = {}
    for k, v in numbers:
        got.setdefault(k, []).append(v)
    return got


@pytest.fixture(scope="module")
def pages(tmp_path_factory):
    d = tmp_path_factory.mktemp("html")
    args = [*BASE, "--group-by", "label", "--ci", "0.9"]
    r = run_cli(["compute", "ce", *args, "--html", d / "compute.html", "-f", "json"])
    assert r.code == 0, r.err
    compute_json = r.json
    assert "hist" not in compute_json  # computed for the page only
    cfg = d / "checks.toml"
    cfg.write_text(
        f'[[checks]]\nname = "val-ce"\nloss = "ce"\ninputs = ["{BASE[0]}", "{BASE[1]}"]\nmax = 0.5\n'
        f'[[checks]]\nname = "val-ls"\nloss = "ce"\ninputs = ["{BASE[0]}", "{BASE[1]}"]\nmax = 5\n'
        'params = { label-smoothing = 0.1 }\n'
    )
    r = run_cli(["check", cfg, "--html", d / "check.html", "-f", "json"])
    assert r.code == 3, r.err  # the first check fails its bound: the page still gets written
    check_json = r.json
    rng = np.random.default_rng(0)
    logits = np.load(os.path.join(SAMPLE, "classifier_logits.npy")).astype(np.float64)
    np.save(d / "noisy.npy", logits + rng.normal(scale=1.0, size=logits.shape))
    r = run_cli(
        ["compare", "ce", "--target", BASE[1], os.path.join(SAMPLE, "classifier_logits.npy"), d / "noisy.npy", "--html", d / "compare.html", "-f", "json"]
    )
    assert r.code == 0, r.err
    compare_json = r.json
    assert all("delta_hist" not in c for c in compare_json["candidates"])
    return d, compute_json, check_json, compare_json


def test_compute_page_numbers_equal_the_json_report(pages):
    d, doc, _, _ = pages
    p = _parse(d / "compute.html")
    got = _shown(p.numbers)
    for key, values in _expected(doc).items():
        assert got.get(key) == values, key
    # the embedded document is the report (plus the histogram the page draws)
    assert p.scripts == [{"type": "application/json", "id": "lossctl-report"}]


def test_pages_are_self_contained_and_small(pages):
    d = pages[0]
    for name in ("compute.html", "check.html", "compare.html"):
        p = _parse(d / name)
        assert p.urls == [], (name, p.urls)
        assert "link" not in p.tags and "img" not in p.tags and "iframe" not in p.tags
        assert all(s.get("type") == "application/json" for s in p.scripts)
        assert os.path.getsize(d / name) < 300_000
        text = open(d / name, encoding="utf-8").read()
        assert "http://" not in text.replace('xmlns="http://www.w3.org/2000/svg"', "") and "https://" not in text


def test_data_is_escaped(tmp_path):
    hostile = "<script>alert(1)</script>"
    c = tmp_path / "h.csv"
    c.write_text(f"p,t,g,id\n1,0,{hostile},x1\n2,0,[/],<b>x2</b>\n3,1,\x1b[31mred,x3\n")
    out = tmp_path / "h.html"
    r = run_cli(["compute", "mse", f"{c}:p", f"{c}:t", "--group-by", "g", "--id-col", "id", "--html", out, "-b"])
    assert r.code == 0, r.err
    text = out.read_text(encoding="utf-8")
    assert hostile not in text and "<b>x2</b>" not in text and "\x1b" not in text
    p = _parse(out)
    assert p.tags.count("script") == 1 and "b" not in p.tags


def test_check_and_compare_pages(pages):
    d, _, check_json, compare_json = pages
    got = _shown(_parse(d / "check.html").numbers)
    assert got["checks.value"] == [c["value"] for c in check_json["checks"]]
    text = (d / "check.html").read_text(encoding="utf-8")
    assert "✗ fail" in text and "✓ pass" in text and "1 passed, 1 failed, 0 errors" in text
    got = _shown(_parse(d / "compare.html").numbers)
    cand = compare_json["candidates"][0]
    assert got["baseline.value"] == [compare_json["baseline"]["value"]]
    assert got["candidates.delta"] == [cand["delta"]]
    assert got["candidates.ci.low"] == [cand["delta_ci"]["low"]] and got["candidates.ci.high"] == [cand["delta_ci"]["high"]]
    assert got["candidates.p_value"] == [cand["p_value"]]


def test_merge_writes_html(tmp_path):
    s = tmp_path / "s.json"
    assert run_cli(["compute", "ce", *BASE, "--save-state", s, "-b"]).code == 0
    r = run_cli(["merge", s, "--html", tmp_path / "m.html", "-f", "json"])
    assert r.code == 0, r.err
    assert _shown(_parse(tmp_path / "m.html").numbers)["value"] == [r.json["value"]]


# ---------------------------------------------------------------------------
# In a real browser
# ---------------------------------------------------------------------------

_PROBE = """(() => {
  const charts = [...document.querySelectorAll('svg.chart')].map(s => ({
    cls: s.getAttribute('class'), marks: s.querySelectorAll('.mark').length,
    w: s.getBoundingClientRect().width, h: s.getBoundingClientRect().height}));
  const numbers = [...document.querySelectorAll('[data-key]')].map(e => [e.dataset.key, JSON.parse(e.dataset.value), e.textContent]);
  return {charts, numbers, title: document.title};
})()"""


@pytest.mark.slow
@pytest.mark.skipif(_browser.chromium() is None, reason="headless Chromium is not installed (apt-get install chromium)")
@pytest.mark.parametrize("name, charts", [("compute.html", {"hist", "dots", "reliability"}), ("check.html", set()), ("compare.html", {"dots", "hist"})])
def test_in_headless_chromium(pages, tmp_path, name, charts):
    d, compute_json, check_json, compare_json = pages
    shot = tmp_path / (name + ".png")
    seen = _browser.load(str(d / name), _PROBE, str(shot), str(tmp_path / "profile"))
    # nothing but the page itself was requested, and nothing went wrong
    assert [u for u in seen.requests if not u.startswith("file://")] == []
    assert seen.errors == [] and [c for c in seen.console if c.startswith("error")] == []
    kinds = {c["cls"].split()[1] for c in seen.value["charts"]}
    assert kinds == charts
    for c in seen.value["charts"]:
        assert c["marks"] > 0 and c["w"] > 100 and c["h"] > 50, c
    # the numbers a person sees are the JSON report's
    doc = {"compute.html": compute_json, "check.html": check_json, "compare.html": compare_json}[name]
    shown = _shown([(k, v) for k, v, _ in seen.value["numbers"]])
    if name == "compute.html":
        for key, values in _expected(doc).items():
            assert shown.get(key) == values, key
    elif name == "check.html":
        assert shown["checks.value"] == [c["value"] for c in doc["checks"]]
    else:
        assert shown["candidates.delta"] == [doc["candidates"][0]["delta"]]
    for _, v, text in seen.value["numbers"]:
        if isinstance(v, float):
            assert float(text) == pytest.approx(v, rel=1e-5)
    png = shot.read_bytes()
    assert png[:8] == b"\x89PNG\r\n\x1a\n" and len(png) > 10_000
