"""Self-contained HTML reports (``--html PATH``) for compute, check and compare.

One file that opens offline: inline CSS and inline SVG charts, no script that runs and no
request to anywhere. Every number shown comes from the same report document that ``-f json``
prints; the document itself is embedded (``<script type="application/json">``, data only)
and each displayed number carries its exact value in ``data-value``, so a test can compare
the page with the JSON. Colours are the Okabe-Ito palette (distinguishable with the common
colour-vision deficiencies), and status is never shown by colour alone (✓/✗/! and words).
"""

from __future__ import annotations

import html
import json
import math
from typing import Any, Iterable

BLUE, ORANGE, VERMILLION, GREEN, SKY, GREY = "#0072B2", "#E69F00", "#D55E00", "#009E73", "#56B4E9", "#666"
MAX_GROUPS_CHART = 40

_CSS = """
:root { color-scheme: light; }
body { font: 14px/1.45 system-ui, -apple-system, "Segoe UI", Roboto, sans-serif; color: #1a1a1a;
       max-width: 980px; margin: 24px auto; padding: 0 16px; }
h1 { font-size: 22px; margin: 0 0 4px; } h2 { font-size: 17px; margin: 28px 0 8px; border-bottom: 1px solid #ddd; }
.headline { font-size: 30px; font-weight: 600; font-variant-numeric: tabular-nums; }
.rule, .sig, .note { color: #555; font-size: 12.5px; }
.sig { font-family: ui-monospace, Menlo, Consolas, monospace; word-break: break-all; }
table { border-collapse: collapse; font-variant-numeric: tabular-nums; margin: 6px 0; }
th, td { padding: 3px 10px; border-bottom: 1px solid #eee; text-align: right; vertical-align: top; }
th { background: #f6f6f6; font-weight: 600; }
td.l, th.l { text-align: left; }
.pass { color: #00603f; } .fail { color: #a33a00; font-weight: 600; } .error { color: #7a5600; font-weight: 600; }
.warn { background: #fff6e0; border-left: 4px solid #E69F00; padding: 6px 10px; }
svg { display: block; margin: 6px 0; max-width: 100%; height: auto; }
svg text { font: 11px system-ui, sans-serif; fill: #333; }
@media print { body { margin: 0; max-width: none; } h2 { break-after: avoid; } svg, table { break-inside: avoid; } }
"""


def _e(text: Any) -> str:
    """Text from data, escaped for HTML; control characters made visible (lossctl.literal)."""
    from lossctl.literal import visible

    return html.escape(visible(text), quote=True)


def _num(v: Any, p: int = 6) -> str:
    from lossctl.report import num

    return num(v, p)


def _n(v: Any, key: str = "", p: int = 6) -> str:
    """A number as an element carrying its exact value (``data-value``) and what it is (``data-key``)."""
    exact = "null" if v is None or (isinstance(v, float) and math.isnan(v)) else json.dumps(v if not isinstance(v, float) or math.isfinite(v) else str(v))
    k = f' data-key="{_e(key)}"' if key else ""
    return f'<span class="n"{k} data-value="{_e(exact)}">{_e(_num(v, p))}</span>'


def _table(head: list[str], rows: Iterable[list[str]], left: int = 1) -> str:
    h = "".join(f'<th class="{"l" if i < left else ""}">{_e(c)}</th>' for i, c in enumerate(head))
    body = "".join(
        "<tr>" + "".join(f'<td class="{"l" if i < left else ""}">{c}</td>' for i, c in enumerate(r)) + "</tr>" for r in rows
    )
    return f"<table><thead><tr>{h}</tr></thead><tbody>{body}</tbody></table>"


def page(title: str, body: str, doc: dict) -> str:
    from lossctl.report import jsonable

    data = json.dumps(jsonable(doc), ensure_ascii=True).replace("</", "<\\/")
    return (
        "<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">"
        "<meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">"
        "<meta http-equiv=\"Content-Security-Policy\" content=\"default-src 'none'; style-src 'unsafe-inline'; img-src data:\">"
        f"<title>{_e(title)}</title><style>{_CSS}</style></head><body>\n{body}\n"
        f'<script type="application/json" id="lossctl-report">{data}</script>\n</body></html>\n'
    )


# ---------------------------------------------------------------------------
# Charts (inline SVG)
# ---------------------------------------------------------------------------


class _Scale:
    def __init__(self, lo: float, hi: float, a: float, b: float, log: bool = False):
        self.log = log and lo > 0 and hi > 0
        f = math.log10 if self.log else float
        self.lo, self.hi = f(lo), f(hi)
        if self.hi <= self.lo:
            self.hi = self.lo + 1.0
        self.a, self.b = a, b

    def __call__(self, v: float) -> float:
        v = math.log10(v) if self.log else v
        return self.a + (v - self.lo) / (self.hi - self.lo) * (self.b - self.a)

    def ticks(self, n: int = 5) -> list[float]:
        if self.log:
            lo, hi = math.floor(self.lo), math.ceil(self.hi)
            step = max(1, (hi - lo) // n)
            return [10.0**k for k in range(lo, hi + 1, step) if self.lo <= k <= self.hi] or [10**self.lo, 10**self.hi]
        return [self.lo + (self.hi - self.lo) * i / (n - 1) for i in range(n)]


def svg_histogram(hist: dict, markers: list[tuple[str, float]], title: str, xlabel: str = "loss") -> str:
    """Bars of per-sample counts over the bin edges; quantiles as labelled vertical lines."""
    edges, counts = hist["edges"], hist["counts"]
    if not counts or not edges:
        return ""
    w, h, ml, mr, mt, mb = 720, 240, 48, 16, 22, 36
    log = hist.get("scale") == "log"
    x = _Scale(edges[0], edges[-1], ml, w - mr, log)
    peak = max(counts) or 1
    y = _Scale(0, peak, h - mb, mt)
    parts = [f'<svg class="chart hist" viewBox="0 0 {w} {h}" role="img" aria-label="{_e(title)}"><title>{_e(title)}</title>']
    for i, c in enumerate(counts):
        x0, x1 = x(edges[i]), x(edges[i + 1])
        top = y(c)
        parts.append(
            f'<rect class="mark" x="{x0:.2f}" y="{top:.2f}" width="{max(x1 - x0 - 1, 0.8):.2f}" height="{h - mb - top:.2f}" '
            f'fill="{BLUE}"><title>{_e(_num(edges[i], 4))} – {_e(_num(edges[i + 1], 4))}: {c}</title></rect>'
        )
    parts.append(f'<line x1="{ml}" y1="{h - mb}" x2="{w - mr}" y2="{h - mb}" stroke="#333"/>')
    for t in x.ticks():
        xt = x(t)
        parts.append(f'<line x1="{xt:.2f}" y1="{h - mb}" x2="{xt:.2f}" y2="{h - mb + 4}" stroke="#333"/>')
        parts.append(f'<text x="{xt:.2f}" y="{h - mb + 16}" text-anchor="middle">{_e(_num(t, 3))}</text>')
    parts.append(f'<text x="{ml - 6}" y="{mt + 4}" text-anchor="end">{peak}</text>')
    parts.append(f'<text x="{ml - 6}" y="{h - mb}" text-anchor="end">0</text>')
    scale_note = f"{xlabel} (log scale)" if x.log else xlabel
    parts.append(f'<text x="{(ml + w - mr) / 2}" y="{h - 4}" text-anchor="middle">{scale_note}</text>')
    dashes = ["4 3", "2 2", "6 2 2 2", "1 3"]
    for k, (label, v) in enumerate(markers):
        if v is None or not isinstance(v, (int, float)) or not math.isfinite(v) or (x.log and v <= 0):
            continue
        xv = x(min(max(v, edges[0]), edges[-1]))
        parts.append(
            f'<line class="marker" x1="{xv:.2f}" y1="{mt}" x2="{xv:.2f}" y2="{h - mb}" stroke="{VERMILLION}" '
            f'stroke-width="1.5" stroke-dasharray="{dashes[k % len(dashes)]}"/>'
        )
        parts.append(f'<text x="{xv + 3:.2f}" y="{mt - 6 + 10 * (k % 2)}" fill="{VERMILLION}">{_e(label)}</text>')
    parts.append("</svg>")
    return "".join(parts)


def svg_dots(items: list[tuple[str, float, float | None, float | None]], title: str, zero_line: bool = False) -> str:
    """One row per item: a dot at the value and a whisker over its interval."""
    vals = [v for _, v, lo, hi in items for v in (v, lo, hi) if isinstance(v, (int, float)) and math.isfinite(v)]
    if not vals:
        return ""
    if zero_line:
        vals.append(0.0)
    lo_all, hi_all = min(vals), max(vals)
    pad = (hi_all - lo_all) * 0.05 or abs(hi_all) * 0.05 or 1.0
    row, ml, mr, mt = 20, 180, 24, 14
    w, h = 720, mt + row * len(items) + 30
    x = _Scale(lo_all - pad, hi_all + pad, ml, w - mr)
    parts = [f'<svg class="chart dots" viewBox="0 0 {w} {h}" role="img" aria-label="{_e(title)}"><title>{_e(title)}</title>']
    if zero_line:
        parts.append(f'<line x1="{x(0):.2f}" y1="{mt - 6}" x2="{x(0):.2f}" y2="{h - 26}" stroke="#999" stroke-dasharray="3 3"/>')
    for i, (label, v, lo, hi) in enumerate(items):
        cy = mt + row * i + row / 2
        short = label if len(label) <= 28 else "…" + label[-27:]  # the end tells paths apart
        parts.append(f'<text x="{ml - 8}" y="{cy + 4:.1f}" text-anchor="end">{_e(short)}</text>')
        if lo is not None and hi is not None and math.isfinite(lo) and math.isfinite(hi):
            parts.append(f'<line class="whisker" x1="{x(lo):.2f}" y1="{cy:.1f}" x2="{x(hi):.2f}" y2="{cy:.1f}" stroke="{SKY}" stroke-width="3"/>')
        if isinstance(v, (int, float)) and math.isfinite(v):
            parts.append(f'<circle class="mark" cx="{x(v):.2f}" cy="{cy:.1f}" r="4.5" fill="{BLUE}"><title>{_e(label)}: {_e(_num(v))}</title></circle>')
    for t in x.ticks():
        parts.append(f'<text x="{x(t):.2f}" y="{h - 8}" text-anchor="middle">{_e(_num(t, 3))}</text>')
    parts.append("</svg>")
    return "".join(parts)


def svg_reliability(bins: list[dict], title: str) -> str:
    """Accuracy against mean confidence per bin, with the diagonal of perfect calibration."""
    pts = [b for b in bins if b.get("count")]
    if not pts:
        return ""
    s, m = 320, 40
    xs = _Scale(0, 1, m, s - 12)
    ys = _Scale(0, 1, s - m, 12)
    parts = [f'<svg class="chart reliability" viewBox="0 0 {s} {s}" role="img" aria-label="{_e(title)}"><title>{_e(title)}</title>']
    parts.append(f'<line x1="{xs(0)}" y1="{ys(0)}" x2="{xs(1)}" y2="{ys(1)}" stroke="#999" stroke-dasharray="4 3"/>')
    parts.append(f'<rect x="{xs(0)}" y="{ys(1)}" width="{xs(1) - xs(0)}" height="{ys(0) - ys(1)}" fill="none" stroke="#333"/>')
    for b in pts:
        parts.append(
            f'<circle class="mark" cx="{xs(b["confidence"]):.2f}" cy="{ys(b["accuracy"]):.2f}" r="{2.5 + min(6.0, math.log10(1 + b["count"])):.1f}" '
            f'fill="{ORANGE}" stroke="#333"><title>confidence {_e(_num(b["confidence"], 4))}, accuracy {_e(_num(b["accuracy"], 4))}, {b["count"]} rows</title></circle>'
        )
    for t in (0, 0.5, 1):
        parts.append(f'<text x="{xs(t)}" y="{s - m + 16}" text-anchor="middle">{t:g}</text>')
        parts.append(f'<text x="{m - 6}" y="{ys(t) + 4}" text-anchor="end">{t:g}</text>')
    parts.append(f'<text x="{(m + s) / 2}" y="{s - 4}" text-anchor="middle">mean confidence</text>')
    parts.append(f'<text x="10" y="{s / 2}" transform="rotate(-90 10 {s / 2})" text-anchor="middle">accuracy</text>')
    parts.append("</svg>")
    return "".join(parts)


# ---------------------------------------------------------------------------
# Sections of a compute report
# ---------------------------------------------------------------------------


def _headline(doc: dict) -> str:
    ci = doc.get("ci")
    ci_text = ""
    if ci:
        ci_text = (
            f' <span class="note">{ci["level"] * 100:g}% CI [{_n(ci["low"], "ci.low")}, {_n(ci["high"], "ci.high")}]'
            f" ({_e(ci.get('method', ''))})</span>"
        )
    rows = doc.get("rows", {})
    read = ", ".join(f"{_e(k)} {v}" for k, v in (rows.get("read") or {}).items())
    return (
        f"<h1>{_e(doc['loss'])} <span class=\"note\">({_e(doc.get('reduction', ''))})</span></h1>"
        f'<div class="headline">{_n(doc["value"], "value")}</div>{ci_text}'
        f'<p class="rule">{_e(doc.get("value_rule", ""))}</p>'
        f'<p class="note">rows read {read} · used {_n(rows.get("used"), "rows.used")}'
        + "".join(
            f" · {k.replace('_', ' ')} {_n(rows[k], 'rows.' + k)}" for k in ("ignored", "dropped", "nan_omitted") if rows.get(k)
        )
        + "</p>"
    )


def _warnings(doc: dict) -> str:
    ws = doc.get("warnings") or []
    if not ws:
        return ""
    items = "".join(f"<li>{_e(w if isinstance(w, str) else w.get('message', w))}</li>" for w in ws)
    return f'<div class="warn"><strong>Warnings</strong><ul>{items}</ul></div>'


def _stats(doc: dict) -> str:
    st = doc.get("stats") or {}
    keys = [k for k in ("count", "mean", "std", "min", "p50", "p90", "p99", "max") if k in st]
    if not keys:
        return ""
    note = "" if st.get("quantiles", "exact") == "exact" else f'<p class="note">quantiles: {_e(st["quantiles"])}</p>'
    return "<h2>Per-sample statistics</h2>" + _table(keys, [[_n(st[k], "stats." + k) for k in keys]], left=0) + note


def _hist(doc: dict) -> str:
    hist = doc.get("hist")
    if not hist:
        return ""
    st = doc.get("stats") or {}
    marks = [(q, st.get(q)) for q in ("p50", "p90", "p99") if q in st]
    note = "log-spaced bins" if hist.get("scale") == "log" else "equal-width bins"
    if not hist.get("exact", True):
        note += ", approximate (from the quantile sketch)"
    return (
        "<h2>Distribution of the per-sample loss</h2>"
        + svg_histogram(hist, marks, f"histogram of per-sample {doc['loss']}")
        + f'<p class="note">{note}; dashed lines: {", ".join(q for q, _ in marks)}.</p>'
    )


def _top(doc: dict) -> str:
    top = doc.get("top") or []
    if not top:
        return ""
    has_id = any("id" in t for t in top)
    head = ["row"] + (["id"] if has_id else []) + ["loss"]
    rows = [[_e(t["row"])] + ([_e(t.get("id", ""))] if has_id else []) + [_n(t["loss"], "top.loss")] for t in top]
    return f"<h2>Worst {len(top)} samples</h2>" + _table(head, rows, left=2 if has_id else 1)


def _parts(doc: dict) -> str:
    comps, derived = doc.get("components") or {}, doc.get("derived") or {}
    if not comps and not derived:
        return ""
    rows = [[_e(k), _n(v, "components." + k)] for k, v in comps.items()]
    rows += [[_e(k), _n(v, "derived." + k)] for k, v in derived.items()]
    return "<h2>Components and derived values</h2>" + _table(["", "value"], rows)


def _groups(doc: dict) -> str:
    groups = doc.get("groups") or []
    if not groups:
        return ""
    shown = sorted(groups, key=lambda g: -(g["value"] if isinstance(g.get("value"), (int, float)) and math.isfinite(g["value"]) else -math.inf))
    shown = shown[:MAX_GROUPS_CHART]
    items = [(str(g["group"]), g.get("value"), (g.get("ci") or {}).get("low"), (g.get("ci") or {}).get("high")) for g in shown]
    note = f" (the {len(shown)} highest of {len(groups)})" if len(groups) > len(shown) else ""
    chart = svg_dots(items, f"{doc['loss']} per {doc.get('group_by')}")
    rows = [
        [_e(g["group"]), _n(g.get("value"), "groups.value"), _n(g.get("count"), "groups.count")]
        + ([f"[{_n(g['ci']['low'])}, {_n(g['ci']['high'])}]"] if g.get("ci") else [])
        for g in groups
    ]
    head = [str(doc.get("group_by")), "value", "count"] + (["CI"] if any(g.get("ci") for g in groups) else [])
    return f"<h2>Per {_e(doc.get('group_by'))}{note}</h2>" + chart + _table(head, rows)


def _reliability(doc: dict) -> str:
    rel = doc.get("reliability")
    if not rel:
        return ""
    bins = rel.get("bins") or []
    rows = [
        [_e(f"{_num(b.get('low'), 3)}–{_num(b.get('high'), 3)}"), _n(b.get("count")), _n(b.get("confidence")), _n(b.get("accuracy"))]
        for b in bins
    ]
    return (
        "<h2>Reliability</h2>"
        + svg_reliability(bins, "reliability diagram")
        + _table(["bin", "count", "mean confidence", "accuracy"], rows)
    )


def _inputs(doc: dict) -> str:
    inputs = doc.get("inputs") or []
    if not inputs:
        return ""
    rows = []
    for i in inputs:
        shape = "(" + ", ".join(str(s) for s in i.get("shape", [])) + ")"
        cols = i.get("columns")
        col_text = ", ".join(cols) if isinstance(cols, list) else (i.get("column") or "")
        rows.append([_e(i.get("role")), _e(i.get("source")), _e(col_text), _e(shape), _e(i.get("dtype", ""))])
    return "<h2>Inputs</h2>" + _table(["role", "source", "columns", "shape", "dtype"], rows, left=3)


def compute_body(doc: dict, level: int = 1) -> str:
    return "".join(
        [
            _headline(doc),
            _warnings(doc),
            _stats(doc),
            _hist(doc),
            _top(doc),
            _groups(doc),
            _parts(doc),
            _reliability(doc),
            _inputs(doc),
            f'<h2>Signature</h2><p class="sig">{_e(doc.get("signature", ""))}</p>',
        ]
    )


def compute_page(doc: dict) -> str:
    return page(f"lossctl · {doc['loss']}", compute_body(doc), doc)


# ---------------------------------------------------------------------------
# check and compare
# ---------------------------------------------------------------------------

_MARK = {"pass": "✓ pass", "fail": "✗ fail", "error": "! error"}


def check_page(doc: dict) -> str:
    c = doc["counts"]
    rows = []
    for r in doc["checks"]:
        bounds = "; ".join(o.get("message", "") for o in r.get("outcomes") or [])
        rows.append(
            [
                f'<span class="{r["status"]}">{_MARK[r["status"]]}</span>',
                _e(r["name"]),
                _e(r.get("loss", "")),
                _n(r.get("value"), "checks.value") if r["status"] != "error" else "–",
                _e(bounds if r["status"] != "error" else r.get("error", "")),
            ]
        )
    body = [
        f"<h1>lossctl check <span class=\"note\">{_e(doc.get('config', ''))}</span></h1>",
        f'<p class="headline">{c["pass"]} passed, {c["fail"]} failed, {c["error"]} errors</p>',
        "<h2>Checks</h2>",
        _table(["", "check", "loss", "value", "bounds / error"], rows, left=3),
    ]
    for r in doc["checks"]:
        rep = r.get("report")
        if rep and (rep.get("hist") or rep.get("groups")):
            body.append(f"<h2>{_e(r['name'])}: {_e(rep['loss'])}</h2>" + _hist(rep) + _groups(rep))
    return page("lossctl check", "".join(body), doc)


def compare_page(doc: dict) -> str:
    from lossctl.diff import unique_labels

    names = unique_labels([doc["baseline"]["source"]] + [c["source"] for c in doc["candidates"]])
    doc = {**doc, "baseline": {**doc["baseline"], "label": names[0]}}
    doc["candidates"] = [{**c, "label": n} for c, n in zip(doc["candidates"], names[1:])]
    lvl = f"{doc['candidates'][0]['delta_ci']['level'] * 100:g}%" if doc["candidates"] else "95%"
    rows = [[_e(doc["baseline"].get("label", doc["baseline"]["source"])) + " (baseline)", _n(doc["baseline"]["value"], "baseline.value"), "", "", "", ""]]
    items = []
    for c in doc["candidates"]:
        ci = c["delta_ci"]
        name = c.get("label", c["source"])
        rows.append(
            [
                _e(name),
                _n(c["value"], "candidates.value"),
                _n(c["delta"], "candidates.delta"),
                f"[{_n(ci['low'], 'candidates.ci.low')}, {_n(ci['high'], 'candidates.ci.high')}]",
                _n(c["p_value"], "candidates.p_value", 4),
                f"{c['better_rows']} / {c['worse_rows']}",
            ]
        )
        items.append((name, c["delta"], ci["low"], ci["high"]))
    body = [
        f"<h1>lossctl compare <span class=\"note\">{_e(doc['loss'])} ({_e(doc['reduction'])}), {doc['paired_rows']} rows paired by {_e(doc['paired_by'])}</span></h1>",
        _table(["system", "value", "Δ vs baseline", f"{lvl} CI of Δ", "p", "rows better / worse"], rows),
        "<h2>Differences with their intervals</h2>",
        svg_dots(items, "candidate minus baseline", zero_line=True),
        f'<p class="note">{_e(doc["method"]["interval"])}; {_e(doc["method"]["p_value"])}. Left of the dashed line is better.</p>',
    ]
    for c in doc["candidates"]:
        name = c.get("label", c["source"])
        if c.get("delta_hist"):
            body.append(
                f"<h2>Per-sample differences: {_e(name)}</h2>"
                + svg_histogram(
                    {**c["delta_hist"], "scale": "linear"},
                    [("Δ", c["delta"])],
                    f"per-sample differences, {name}",
                    xlabel="candidate − baseline, per sample",
                )
            )
        if c["most_worse"]:
            has_id = any("id" in w for w in c["most_worse"])
            head = ["row"] + (["id"] if has_id else []) + ["baseline", "candidate", "Δ"]
            wrows = [
                [_e(w["row"])] + ([_e(w.get("id", ""))] if has_id else []) + [_n(w["baseline"]), _n(w["candidate"]), _n(w["delta"])]
                for w in c["most_worse"]
            ]
            body.append(f"<h2>Most worse in {_e(name)}</h2>" + _table(head, wrows, left=2 if has_id else 1))
    body.append(f'<h2>Signature</h2><p class="sig">{_e(doc.get("signature", ""))}</p>')
    return page(f"lossctl compare · {doc['loss']}", "".join(body), doc)


def render(doc: dict) -> str:
    """The page for any report document: compute/merge, check or compare."""
    kind = doc.get("kind")
    if kind == "check":
        return check_page(doc)
    if kind == "compare":
        return compare_page(doc)
    return compute_page(doc)
