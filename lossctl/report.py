"""Rendering of a run's report dict: Rich table, JSON, JSONL, CSV/TSV, Markdown.

Nothing here computes; every number comes from the report dict built by
``lossctl.engine``.
"""

from __future__ import annotations

import io
import json
import math
from typing import Any

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
    return json.dumps(jsonable(report), indent=indent, ensure_ascii=False)


def _flat_row(report: dict) -> dict[str, Any]:
    rows = report["rows"]
    row = {
        "loss": report["loss"],
        "reduction": report["reduction"],
        "value": report["value"],
        "count": report["count"],
        "ignored": rows["ignored"],
        "dropped": rows["dropped"],
        "nan_omitted": rows["nan_omitted"],
    }
    for key in STAT_KEYS:
        row[key] = report["stats"][key]
    for key, value in report.get("components", {}).items():
        row[key] = value
    for key, value in (report.get("derived") or {}).items():
        row[key] = value
    if report.get("batch_size"):
        row["batch_size"] = report["batch_size"]
    row["signature"] = report["signature"]
    return row


def to_delimited(report: dict, delimiter: str = ",") -> str:
    import csv

    row = _flat_row(report)
    buf = io.StringIO()
    w = csv.writer(buf, delimiter=delimiter, lineterminator="\n")
    w.writerow(list(row))
    w.writerow([num(v, -1) if isinstance(v, float) else v for v in row.values()])
    return buf.getvalue()


def to_markdown(report: dict, precision: int | None) -> str:
    p = 6 if precision is None else precision
    rows = report["rows"]
    head = ["loss", "value", "count", *STAT_KEYS]
    vals = [
        f"`{report['loss']}`",
        f"**{num(report['value'], p)}**",
        str(report["count"]),
        *(num(report["stats"][k], p) for k in STAT_KEYS),
    ]
    lines = [
        "| " + " | ".join(head) + " |",
        "|" + "|".join("---" if i == 0 else "---:" for i in range(len(head))) + "|",
        "| " + " | ".join(vals) + " |",
        "",
        f"Rows read: {_read_text(rows)}; used {rows['used']}, ignored {rows['ignored']}, "
        f"dropped {rows['dropped']}, NaN omitted {rows['nan_omitted']}.",
    ]
    if report.get("components"):
        comp = ", ".join(f"{k} {num(v, p)}" for k, v in report["components"].items())
        lines.append(f"Components (means): {comp}.")
    if report.get("derived"):
        lines.append("Derived: " + ", ".join(f"{k} {num(v, p)}" for k, v in report["derived"].items()) + ".")
    lines += ["", f"`{report['signature']}`", ""]
    return "\n".join(lines)


def _read_text(rows: dict) -> str:
    return ", ".join(f"{role} {n}" for role, n in rows["read"].items())


def render_table(report: dict, console, precision: int | None, show_top: bool = True) -> None:
    """The terminal report (Rich)."""
    from rich.table import Table
    from rich.text import Text

    p = 6 if precision is None else precision
    rows = report["rows"]
    red = report["reduction"]
    head = Text()
    head.append(report["loss"], style="bold cyan")
    head.append(" = " if red == "mean" else f" ({red}) = ")
    head.append(num(report["value"], p), style="bold")
    console.print(head)
    for key, value in (report.get("derived") or {}).items():
        console.print(Text(f"  {key} = {num(value, p)}", style="bold"))
    rule = report.get("value_rule")
    if rule and (report.get("headline_differs_from_mean") or red != "mean"):
        console.print(Text(f"  {rule}", style="dim"))

    counts = Text("  rows  read ")
    counts.append(_read_text(rows))
    counts.append(f"  ·  used {rows['used']}")
    if report.get("batch_size"):
        counts.append(f"  ·  batch size {report['batch_size']}")
    for key, label in (("ignored", "ignored"), ("dropped", "dropped"), ("nan_omitted", "NaN omitted"), ("nan_propagated", "NaN propagated")):
        if rows.get(key):
            counts.append(f"  ·  {label} {rows[key]}", style="yellow")
    console.print(counts)

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

    if report.get("components"):
        comp = Table(show_edge=False, box=None, header_style="bold", title=None)
        for k in report["components"]:
            comp.add_column(k, justify="right")
        comp.add_row(*(num(v, p) for v in report["components"].values()))
        console.print()
        console.print(Text("  components (means over used rows)", style="bold"))
        console.print(comp)

    top = report.get("top") or []
    if show_top and top:
        tt = Table(show_edge=False, box=None, header_style="bold")
        tt.add_column("row", justify="right")
        if any("id" in item for item in top):
            tt.add_column("id")
        tt.add_column("loss", justify="right")
        for item in top:
            cells = [str(item["row"])]
            if any("id" in i for i in top):
                cells.append(str(item.get("id", "")))
            cells.append(num(item["loss"], p))
            tt.add_row(*cells)
        console.print()
        console.print(Text(f"  worst {len(top)}", style="bold"))
        console.print(tt)
    console.print()
    console.print(Text(report["signature"], style="dim"))


def render(report: dict, fmt: str, console, precision: int | None) -> None:
    """Write the report to ``console`` (stdout) in ``fmt``."""
    if fmt == "table":
        render_table(report, console, precision)
        return
    out = console.file
    if fmt == "json":
        out.write(to_json(report) + "\n")
    elif fmt == "jsonl":
        out.write(to_json(report, indent=None) + "\n")
    elif fmt in ("csv", "tsv"):
        out.write(to_delimited(report, "," if fmt == "csv" else "\t"))
    elif fmt == "markdown":
        out.write(to_markdown(report, precision))
    out.flush()
