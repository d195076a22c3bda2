"""Rendering of a run's report dict: Rich table, JSON, JSONL, CSV/TSV, Markdown.

Nothing here computes; every number comes from the report dict built by
``lossctl.engine``.
"""

from __future__ import annotations

import io
import json
import math
import re
from typing import Any

from lossctl.literal import literal, spreadsheet_safe, visible

OUTPUT_FORMATS = ("table", "json", "jsonl", "csv", "tsv", "markdown")
STAT_KEYS = ("mean", "std", "min", "p50", "p90", "p99", "max")


def jsonable(obj: Any) -> Any:
    """Replace non-finite floats: NaN → null, ±inf → "inf"/"-inf" (documented in the README)."""
    if isinstance(obj, float):
        if math.isfinite(obj):
            return obj
        return None if math.isnan(obj) else ("inf" if obj > 0 else "-inf")
    if isinstance(obj, dict):
        return {k: jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [jsonable(v) for v in obj]
    if hasattr(obj, "item"):
        return jsonable(obj.item())
    return obj


def num(v: Any, precision: int | None) -> str:
    """A number for humans: ``precision`` significant digits, or the shortest exact repr."""
    if v is None:
        return "–"
    if isinstance(v, str):
        return v
    v = float(v)
    if math.isnan(v):
        return "nan"
    if math.isinf(v):
        return "inf" if v > 0 else "-inf"
    if precision is None or precision < 0:
        return repr(v)
    return f"{v:.{precision}g}"


def score_only(report: dict, precision: int | None) -> str:
    return num(report["value"], precision if precision is not None else -1)


def to_json(report: dict, indent: int | None = 2) -> str:
    text = json.dumps(jsonable(report), indent=indent, ensure_ascii=False)
    if _LONE_SURROGATE.search(text):  # a file name with undecodable bytes: \udcff escapes, not an encode error
        text = json.dumps(jsonable(report), indent=indent, ensure_ascii=True)
    return text


_LONE_SURROGATE = re.compile("[\ud800-\udfff]")


def _flat_rows(report: dict) -> list[dict[str, Any]]:
    """One row for all rows, then one per group (CSV/TSV)."""
    grouped = report.get("groups") is not None

    def row_of(item: dict, group) -> dict[str, Any]:
        rows = item["rows"]
        row: dict[str, Any] = {}
        if grouped:
            row["group"] = group
        row.update(
            loss=report["loss"],
            reduction=report["reduction"],
            value=item["value"],
            count=item["count"],
            ignored=rows.get("ignored", 0),
            dropped=rows.get("dropped", ""),
            nan_omitted=rows.get("nan_omitted", 0),
        )
        for key in STAT_KEYS:
            row[key] = item["stats"][key]
        if report.get("ci"):
            ci = report["ci"]
            row["ci_low"], row["ci_high"] = (ci["low"], ci["high"]) if group == "all" else ("", "")
        for key, value in report.get("components", {}).items():
            row[key] = (item.get("components") or {}).get(key, "")
        for key in report.get("derived") or {}:
            row[key] = (item.get("derived") or {}).get(key, "")
        if report.get("batch_size"):
            row["batch_size"] = report["batch_size"]
        row["signature"] = report["signature"]
        return row

    out = [row_of(report, "all")]
    for g in report.get("groups") or []:
        out.append(row_of(g, g["group"]))
    return out


def to_delimited(report: dict, delimiter: str = ",", csv_safe: bool = False) -> str:
    """The report as CSV/TSV; with ``csv_safe`` text cells are :func:`spreadsheet_safe`."""
    rows = _flat_rows(report)
    buf = io.StringIO()
    buf.write(delimiter.join(_quoted(str(k), delimiter) for k in rows[0]) + "\n")
    for row in rows:
        buf.write(delimiter.join(_quoted(_cell(v, csv_safe), delimiter) for v in row.values()) + "\n")
    return buf.getvalue()


def _cell(v: Any, csv_safe: bool) -> str:
    if isinstance(v, float):
        return num(v, -1)
    if csv_safe and isinstance(v, str):
        return spreadsheet_safe(v)
    return "" if v is None else str(v)


def _quoted(cell: str, delimiter: str) -> str:
    """RFC 4180 quoting when needed. (The csv module leaves a lone carriage return unquoted with
    a "\n" line terminator, and readers then end the row there: a group value lost.)"""
    if delimiter in cell or any(c in cell for c in '"\n\r'):
        return '"' + cell.replace('"', '""') + '"'
    return cell


_MD_SPECIAL = re.compile(r"([\\`*_\[\]|~]|<(?=[A-Za-z/!?]))")  # '<' only where it could open HTML


def md_text(text: Any) -> str:
    """Text from data inside markdown: visible, one line, markup characters and ``|`` escaped."""
    return _MD_SPECIAL.sub(r"\\\1", visible(text))


def md_code(text: Any) -> str:
    """Text from data as a markdown code span that stays one table cell: visible, ``|`` escaped
    (GitHub's tables split on it even inside code), fenced by more backticks than it holds."""
    s = visible(text).replace("|", "\\|")
    run = max((len(m) for m in re.findall(r"`+", s)), default=0)
    fence = "`" * (run + 1)
    if not s.strip(" "):
        return f"{fence} {s} {fence}"  # all spaces (or empty) is shown as it is
    pad = " " if s[0] in "` " or s[-1] in "` " else ""  # one space each side is stripped again
    return f"{fence}{pad}{s}{pad}{fence}"


def to_markdown(report: dict, precision: int | None) -> str:
    p = 6 if precision is None else precision
    rows = report["rows"]
    grouped = report.get("groups") is not None
    head = (["group"] if grouped else []) + ["loss", "value", "count", *STAT_KEYS]

    def cells(item, group, bold):
        value = num(item["value"], p)
        return ([md_code(group)] if grouped else []) + [
            md_code(report["loss"]),
            f"**{value}**" if bold else value,
            str(item["count"]),
            *(num(item["stats"][k], p) for k in STAT_KEYS),
        ]

    lines = [
        "| " + " | ".join(head) + " |",
        "|" + "|".join("---" if h in ("group", "loss") else "---:" for h in head) + "|",
        "| " + " | ".join(cells(report, "all", True)) + " |",
    ]
    for g in report.get("groups") or []:
        lines.append("| " + " | ".join(cells(g, g["group"], False)) + " |")
    lines += [
        "",
        f"Rows read: {md_text(_read_text(rows))}; used {rows['used']}, ignored {rows['ignored']}, "
        f"dropped {rows['dropped']}, NaN omitted {rows['nan_omitted']}.",
    ]
    if columns_text(report):
        lines.append(f"Columns: {columns_text(report)}.")
    if report.get("ci"):
        ci = report["ci"]
        lines.append(
            f"{ci['level'] * 100:g}% CI [{num(ci['low'], p)}, {num(ci['high'], p)}] "
            f"({ci['resamples']} bootstrap resamples, seed {ci['seed']})."
        )
    if report.get("components"):
        comp = ", ".join(f"{md_text(k)} {num(v, p)}" for k, v in report["components"].items())
        lines.append(f"Components (means): {comp}.")
    if report.get("derived"):
        lines.append("Derived: " + ", ".join(f"{md_text(k)} {num(v, p)}" for k, v in report["derived"].items()) + ".")
    for o in report.get("checks") or []:
        lines.append(f"- {'✅' if o['passed'] else '❌'} {md_text(o['message'])}")
    for w in report.get("warnings") or []:
        lines.append(f"- ⚠️ warning: {md_text(w)}")
    lines += ["", md_code(report["signature"]), ""]
    return "\n".join(lines)


def _read_text(rows: dict) -> str:
    return ", ".join(f"{role} {n}" for role, n in rows["read"].items())


def columns_text(report: dict) -> str | None:
    """Which columns each role read (``pred: class_0..class_9 (10), target: label``); None when
    every input is a plain array."""
    parts = []
    for inp in report.get("inputs") or []:
        names = inp.get("columns")
        if not names:
            continue
        if len(names) == 1:
            shown = names[0]
        elif len(names) <= 3:
            shown = f"{', '.join(names)} ({len(names)})"
        else:
            shown = f"{names[0]}..{names[-1]} ({len(names)})"
        parts.append(f"{inp['role']}: {shown}")
    return "; ".join(parts) or None


def render_table(report: dict, console, precision: int | None, show_top: bool = True) -> None:
    """The terminal report (Rich): headline, rows, statistics, then the sections the report has."""
    from rich.text import Text

    p = 6 if precision is None else precision
    report = literal(report)  # data (ids, groups, names) is shown as typed, never as control
    _table_head(report, console, p)
    _table_rows(report, console)
    _table_stats(report, console, p)
    if report.get("components"):
        _table_components(report, console, p)
    if report.get("groups") is not None:
        _table_groups(report, console, p)
    if report.get("hist"):
        console.print()
        render_hist(report["hist"], console, p)
    if report.get("reliability") and (report.get("hist") or report.get("loss") == "ece"):
        console.print()
        render_reliability(report["reliability"], console, p)
    top = report.get("top") or []
    if show_top and top:
        _table_top(top, console, p)
    if report.get("checks"):
        console.print()
        for o in report["checks"]:
            mark = Text("  ✓ " if o["passed"] else "  ✗ ", style="green" if o["passed"] else "bold red")
            mark.append(o["message"])
            console.print(mark)
    console.print()
    console.print(Text(report["signature"], style="dim"))


def _table_head(report: dict, console, p: int) -> None:
    """The headline value, its CI, derived values and the rule when it is not the plain mean."""
    from rich.text import Text

    red = report["reduction"]
    head = Text()
    head.append(report["loss"], style="bold cyan")
    head.append(" = " if red == "mean" else f" ({red}) = ")
    head.append(num(report["value"], p), style="bold")
    console.print(head)
    if report.get("ci"):
        ci = report["ci"]
        console.print(
            Text(
                f"  {ci['level'] * 100:g}% CI [{num(ci['low'], p)}, {num(ci['high'], p)}]  "
                f"({ci['resamples']} bootstrap resamples, seed {ci['seed']})"
            )
        )
    for key, value in (report.get("derived") or {}).items():
        console.print(Text(f"  {key} = {num(value, p)}", style="bold"))
    rule = report.get("value_rule")
    if rule and (report.get("headline_differs_from_mean") or red != "mean"):
        console.print(Text(f"  {rule}", style="dim"))


def _table_rows(report: dict, console) -> None:
    """Rows read, used, ignored and dropped; the columns each role used; the Dask engine."""
    from rich.text import Text

    rows = report["rows"]
    counts = Text("  rows  read ")
    counts.append(_read_text(rows))
    counts.append(f"  ·  used {rows['used']}")
    if report.get("batch_size"):
        counts.append(f"  ·  batch size {report['batch_size']}")
    for key, label in (
        ("ignored", "ignored"),
        ("dropped", "dropped"),
        ("nan_omitted", "NaN omitted"),
        ("nan_propagated", "NaN propagated"),
    ):
        if rows.get(key):
            counts.append(f"  ·  {label} {rows[key]}", style="yellow")
    console.print(counts)
    if columns_text(report):
        console.print(Text(f"  columns  {columns_text(report)}"))
    eng = report.get("engine")
    if eng:
        where = eng["scheduler"] or "a local cluster"
        console.print(Text(f"  dask: {eng['tasks']} tasks on {eng['workers']} workers ({where})", style="dim"))


def _table_stats(report: dict, console, p: int) -> None:
    from rich.table import Table
    from rich.text import Text

    stats = report["stats"]
    t = Table(show_edge=False, pad_edge=False, box=None, header_style="bold")
    t.add_column("count", justify="right")
    for key in STAT_KEYS:
        t.add_column(key, justify="right")
    t.add_row(str(stats["count"]), *(num(stats[k], p) for k in STAT_KEYS))
    console.print()
    console.print(t)
    if stats.get("quantiles") and stats["quantiles"] != "exact":
        console.print(Text(f"  quantiles {stats['quantiles']}", style="dim"))


def _table_components(report: dict, console, p: int) -> None:
    from rich.table import Table
    from rich.text import Text

    comp = Table(show_edge=False, box=None, header_style="bold", title=None)
    for k in report["components"]:
        comp.add_column(Text(k), justify="right")
    comp.add_row(*(num(v, p) for v in report["components"].values()))
    console.print()
    console.print(Text("  components (means over used rows)", style="bold"))
    console.print(comp)


def _table_groups(report: dict, console, p: int) -> None:
    from rich.table import Table
    from rich.text import Text

    stats = report["stats"]
    gt = Table(show_edge=False, box=None, header_style="bold")
    for col in ("group", "count", "value", "mean", "p50", "p90", "max"):
        gt.add_column(col, justify="left" if col == "group" else "right")
    for g in report["groups"]:
        gt.add_row(
            Text(str(g["group"])),
            str(g["count"]),
            num(g["value"], p),
            *(num(g["stats"][k], p) for k in ("mean", "p50", "p90", "max")),
        )
    gt.add_row(
        "all",
        str(report["count"]),
        num(report["value"], p),
        *(num(stats[k], p) for k in ("mean", "p50", "p90", "max")),
        style="bold",
    )
    console.print()
    console.print(Text(f"  by {report['group_by']}", style="bold"))
    console.print(gt)


def _table_top(top: list, console, p: int) -> None:
    from rich.table import Table
    from rich.text import Text

    with_id = any("id" in item for item in top)
    tt = Table(show_edge=False, box=None, header_style="bold")
    tt.add_column("row", justify="right")
    if with_id:
        tt.add_column("id")
    tt.add_column("loss", justify="right")
    for item in top:
        cells = [str(item["row"])]
        if with_id:
            cells.append(Text(str(item.get("id", ""))))
        cells.append(num(item["loss"], p))
        tt.add_row(*cells)
    console.print()
    console.print(Text(f"  worst {len(top)}", style="bold"))
    console.print(tt)


def render_reliability(rel: dict, console, precision: int) -> None:
    """The reliability table's bins that hold rows: confidence against accuracy."""
    from rich.table import Table
    from rich.text import Text

    label = f"  reliability ({rel['n_bins']} {rel['binning']} bins"
    label += ", approximate edges)" if rel.get("approximate") else ")"
    t = Table(show_edge=False, box=None, header_style="bold")
    for col in ("bin", "count", "confidence", "accuracy", "gap"):
        t.add_column(col, justify="left" if col == "bin" else "right")
    for b in rel["bins"]:
        if b["count"]:
            gap = b["accuracy"] - b["confidence"]
            t.add_row(
                f"{num(b['low'], 3)} – {num(b['high'], 3)}",
                str(b["count"]),
                num(b["confidence"], precision),
                num(b["accuracy"], precision),
                num(gap, precision),
            )
    console.print(Text(label, style="bold"))
    console.print(t)


def render_hist(hist: dict, console, precision: int) -> None:
    """A horizontal bar per bin, scaled to the fullest bin."""
    from rich.text import Text

    counts = hist["counts"]
    edges = hist["edges"]
    peak = max(counts) or 1
    width = 40
    label = "per-sample loss" + (" (log-spaced bins)" if hist["scale"] == "log" else "")
    if not hist.get("exact", True):
        label += ", approximate"
    console.print(Text(f"  {label}", style="bold"))
    lo_w = max(len(num(e, 3)) for e in edges)
    for i, c in enumerate(counts):
        bar = "█" * int(round(width * c / peak)) if c else ""
        if c and not bar:
            bar = "▏"
        line = Text(f"  {num(edges[i], 3):>{lo_w}} – {num(edges[i + 1], 3):<{lo_w}} ")
        line.append(bar, style="cyan")
        line.append(f" {c}")
        console.print(line)


def machine_text(report: dict, fmt: str, precision: int | None, csv_safe: bool = False) -> str:
    """The report as text for machines: json, jsonl, csv, tsv or markdown (the table is
    ``render_table``'s, on a Rich console)."""
    if fmt == "json":
        return to_json(report) + "\n"
    if fmt == "jsonl":
        return to_json(report, indent=None) + "\n"
    if fmt in ("csv", "tsv"):
        return to_delimited(report, "," if fmt == "csv" else "\t", csv_safe)
    if fmt == "markdown":
        return to_markdown(report, precision)
    raise ValueError(fmt)


# ---------------------------------------------------------------------------
# lossctl check
# ---------------------------------------------------------------------------


def check_document(config: str, results: list[dict]) -> dict:
    """The JSON object of `lossctl check` (schema version 1)."""
    return {
        "schema_version": 1,
        "kind": "check",
        "config": config,
        "passed": all(r["status"] == "pass" for r in results),
        "counts": {s: sum(1 for r in results if r["status"] == s) for s in ("pass", "fail", "error")},
        "checks": results,
    }


_STATUS_MARK = {"pass": "✅ pass", "fail": "❌ fail", "error": "⚠️ error"}


def _bounds_text(r: dict, p: int) -> str:
    failed = [o["message"] for o in r.get("outcomes", []) if not o["passed"]]
    if r["status"] == "error":
        return r.get("error", "")
    if failed:
        return "; ".join(failed)
    return "; ".join(o["message"] for o in r.get("outcomes", [])) or "no bounds"


def checks_markdown(doc: dict, precision: int | None) -> str:
    p = 6 if precision is None else precision
    c = doc["counts"]
    lines = [
        f"**lossctl check** {md_code(doc['config'])}: {c['pass']} passed, {c['fail']} failed, {c['error']} errors",
        "",
        "| check | status | loss | value | bounds |",
        "|---|---|---|---:|---|",
    ]
    for r in doc["checks"]:
        value = num(r.get("value"), p) if r["status"] != "error" else "–"
        bounds = md_text(_bounds_text(r, p))
        name, loss = md_code(r["name"]), md_code(r.get("loss", ""))
        lines.append(f"| {name} | {_STATUS_MARK[r['status']]} | {loss} | {value} | {bounds} |")
        for t in r.get("terms") or []:
            term = f"{num(t['weight'], p)} × {md_code(t['loss'])}"
            lines.append(f"| ↳ | | {term} | {num(t['value'], p)} | = {num(t['weighted'], p)} |")
    lines.append("")
    return "\n".join(lines)


def render_checks(doc: dict, console, precision: int | None) -> None:
    from rich.table import Table
    from rich.text import Text

    p = 6 if precision is None else precision
    doc = literal(doc)
    t = Table(box=None, header_style="bold", pad_edge=False)
    for col in ("", "check", "loss", "value", "bounds"):
        t.add_column(col, justify="right" if col == "value" else "left", overflow="fold")
    style = {"pass": "green", "fail": "bold red", "error": "bold yellow"}
    for r in doc["checks"]:
        mark = Text({"pass": "✓", "fail": "✗", "error": "!"}[r["status"]], style=style[r["status"]])
        value = num(r.get("value"), p) if r["status"] != "error" else "–"
        t.add_row(mark, Text(r["name"]), Text(r.get("loss", "")), value, Text(_bounds_text(r, p)))
        for term in r.get("terms") or []:
            t.add_row(
                "",
                "",
                Text(f"  {num(term['weight'], p)} × {term['loss']}"),
                num(term["value"], p),
                f"= {num(term['weighted'], p)}",
            )
    console.print(t)
    c = doc["counts"]
    console.print()
    console.print(Text(f"{c['pass']} passed, {c['fail']} failed, {c['error']} errors", style="bold"))


# ---------------------------------------------------------------------------
# lossctl compare
# ---------------------------------------------------------------------------


def _p(v) -> str:
    if v is None or (isinstance(v, float) and math.isnan(v)):
        return "nan"
    return f"{v:.4f}" if v >= 1e-4 else f"{v:.1e}"


def _gate_text(doc: dict) -> str:
    g = doc.get("gates")
    if not g:
        return ""
    parts = [f"max-delta {g['max_delta']:g}" if g["max_delta"] is not None else "",
             f"max-rel-delta {g['max_rel_delta']:g}" if g["max_rel_delta"] is not None else "",
             "fail-if-worse" if g["fail_if_worse"] else "",
             f"alpha {g['alpha']:g}" if g["alpha"] is not None else ""]
    scope = " (each group too)" if g.get("per_group") and doc.get("group_by") else ""
    return f"gates: {', '.join(x for x in parts if x)}{scope}: {'passed' if doc['passed'] else 'FAILED'}"


def _method_text(doc: dict) -> str:
    corr = doc["method"].get("correction", "none")
    adj = "; p-values adjusted by Holm's step-down over every candidate and group" if corr == "holm" else ""
    return f"{doc['method']['interval']}; {doc['method']['p_value']}{adj}."


def _label(system: dict) -> str:
    return system.get("label", system["source"])


def compare_markdown(doc: dict, precision: int | None) -> str:
    p = 6 if precision is None else precision
    lvl = f"{doc['candidates'][0]['delta_ci']['level'] * 100:g}%" if doc["candidates"] else "95%"
    gated = bool(doc.get("gates"))
    lines = [
        f"**lossctl compare** {md_code(doc['loss'])} ({doc['reduction']}), {doc['paired_rows']} paired rows",
        "",
        f"| system | value | Δ vs baseline | {lvl} CI of Δ | p | rows better / worse |" + (" gates |" if gated else ""),
        "|---|---:|---:|---|---:|---:|" + ("---|" if gated else ""),
        f"| {md_code(_label(doc['baseline']))} (baseline) | {num(doc['baseline']['value'], p)} | | | | |" + (" |" if gated else ""),
    ]
    for c in doc["candidates"]:
        ci = c["delta_ci"]
        lines.append(
            f"| {md_code(_label(c))} | {num(c['value'], p)} | {num(c['delta'], p)} | [{num(ci['low'], p)}, {num(ci['high'], p)}] "
            f"| {_p(c.get('p_adjusted', c['p_value']))} | {c['better_rows']} / {c['worse_rows']} |"
            + (f" {'✓ pass' if c.get('status') == 'pass' else '✗ fail'} |" if gated else "")
        )
    for c in doc["candidates"]:
        if not c.get("groups"):
            continue
        lines += ["", f"Per {md_text(str(doc.get('group_by')))} for {md_code(_label(c))}:", "",
                  f"| {md_text(str(doc.get('group_by')))} | rows | baseline | candidate | Δ | {lvl} CI of Δ | p |", "|---|---:|---:|---:|---:|---|---:|"]
        for g in c["groups"]:
            ci = g["delta_ci"]
            lines.append(
                f"| {md_code(str(g['group']))} | {g['rows']} | {num(g['baseline'], p)} | {num(g['value'], p)} | {num(g['delta'], p)} "
                f"| [{num(ci['low'], p)}, {num(ci['high'], p)}] | {_p(g.get('p_adjusted', g['p_value']))} |"
            )
    lines += ["", _method_text(doc)]
    if gated:
        lines += ["", _gate_text(doc)]
    lines += ["", md_code(doc["signature"]), ""]
    return "\n".join(lines)


def render_compare(doc: dict, console, precision: int | None) -> None:
    from rich.table import Table
    from rich.text import Text

    p = 6 if precision is None else precision
    doc = literal(doc)
    console.print(
        Text(
            f"{doc['loss']} ({doc['reduction']}), {doc['paired_rows']} rows paired by {doc['paired_by']}", style="bold"
        )
    )
    if doc["excluded_rows"]:
        console.print(Text(f"  {doc['excluded_rows']} rows not scored in every run were left out", style="yellow"))
    t = Table(box=None, header_style="bold", pad_edge=False)
    lvl = f"{doc['candidates'][0]['delta_ci']['level'] * 100:g}% CI" if doc["candidates"] else "CI"
    for col in ("system", "value", "Δ", lvl, "p", "better/worse"):
        # numbers never wrap; a long system name folds rather than losing the end that tells systems apart
        t.add_column(col, justify="left" if col == "system" else "right", no_wrap=col != "system", overflow="fold")
    t.add_row(Text(f"{_label(doc['baseline'])} (baseline)"), num(doc["baseline"]["value"], p), "", "", "", "")
    for c in doc["candidates"]:
        ci = c["delta_ci"]
        style = "green" if c["delta"] < 0 and ci["high"] < 0 else ("red" if c["delta"] > 0 and ci["low"] > 0 else "")
        t.add_row(
            Text(_label(c)),
            num(c["value"], p),
            Text(num(c["delta"], p), style=style),
            f"[{num(ci['low'], p)}, {num(ci['high'], p)}]",
            _p(c.get("p_adjusted", c["p_value"])),
            f"{c['better_rows']}/{c['worse_rows']}",
        )
    console.print(t)
    for c in doc["candidates"]:
        if not c.get("groups"):
            continue
        console.print()
        console.print(Text(f"  per {doc.get('group_by')}: {_label(c)}", style="bold"))
        gt = Table(box=None, header_style="bold")
        for i, col in enumerate((str(doc.get("group_by")), "rows", "baseline", "candidate", "Δ", lvl, "p")):
            gt.add_column(col, justify="right", no_wrap=i > 0, overflow="fold")
        for g in c["groups"]:
            gci = g["delta_ci"]
            gt.add_row(
                Text(str(g["group"])),
                str(g["rows"]),
                num(g["baseline"], p),
                num(g["value"], p),
                num(g["delta"], p),
                f"[{num(gci['low'], p)}, {num(gci['high'], p)}]",
                _p(g.get("p_adjusted", g["p_value"])),
            )
        console.print(gt)
    for c in doc["candidates"]:
        if not c["most_worse"]:
            continue
        console.print()
        console.print(Text(f"  most worse in {_label(c)}", style="bold"))
        wt = Table(box=None, header_style="bold")
        has_id = any("id" in w for w in c["most_worse"])
        cols = ["row"] + (["id"] if has_id else []) + ["baseline", "candidate", "Δ"]
        for col in cols:
            wt.add_column(col, justify="right")
        for w in c["most_worse"]:
            cells = [str(w["row"])] + ([Text(str(w.get("id", "")))] if has_id else [])
            cells += [num(w["baseline"], p), num(w["candidate"], p), num(w["delta"], p)]
            wt.add_row(*cells)
        console.print(wt)
    console.print()
    console.print(Text(_method_text(doc), style="dim"))
    if doc.get("gates"):
        console.print(Text(_gate_text(doc), style="bold" if doc["passed"] else "bold red"))
    console.print(Text(doc["signature"], style="dim"))
