"""``lossctl diff``: compare saved reports, value by value, without the raw predictions.

A saved document is read into *entries*: one headline value per loss (or per check), and
one per ``--group-by`` group. The documents understood are the JSON of ``compute``,
``merge``, ``check`` and ``compare`` (``-f json``) and state files (``--save-state``). Each
candidate's entries are matched by name and group to the baseline's; a delta is
``candidate - baseline`` (losses: lower is better, so a positive delta is worse).

Two state files written with the same ``--ci``/``--ci-n``/``--seed`` over the same rows give a
paired bootstrap interval of the headline difference: the streaming bootstrap's weights
depend only on the seed and the row number, so resample ``b`` of both runs weighted the same
rows alike and ``estimate_b(cand) - estimate_b(base)`` is a paired resample of the difference.
"""

from __future__ import annotations

import json
import math
import os
from dataclasses import dataclass, field
from typing import Any

from lossctl.errors import DataError, UsageError

SCHEMA_VERSION = 1
MAX_JSON_BYTES = 512 * 1024 * 1024


@dataclass
class Entry:
    name: str  # the loss, the check's name, or "loss [system]" for a compare document
    group: Any = None  # None for the headline value
    value: float | None = None


@dataclass
class Document:
    path: str
    kind: str  # compute | check | compare | state
    entries: list[Entry] = field(default_factory=list)
    state: Any = None  # (spec, meta, RunState) of a state file, for the paired interval
    reduction: str | None = None


def unique_labels(paths: list[str]) -> list[str]:
    """The shortest path suffixes (whole components) that tell the paths apart.

    ``runs/a/last.json`` and ``runs/b/last.json`` become ``a/last.json`` and
    ``b/last.json``; identical paths keep their full text.
    """
    parts = [os.path.normpath(p).split(os.sep) for p in paths]
    labels = []
    for i, comps in enumerate(parts):
        for k in range(1, len(comps) + 1):
            suffix = comps[-k:]
            if all(other[-k:] != suffix for j, other in enumerate(parts) if j != i and paths[j] != paths[i]):
                break
        labels.append(os.sep.join(suffix))
    return labels


def _number(v: Any, where: str) -> float | None:
    if v is None:
        return None  # NaN is written as null
    if v == "inf":
        return math.inf
    if v == "-inf":
        return -math.inf
    if isinstance(v, bool) or not isinstance(v, (int, float)):
        raise DataError(f"{where}: expected a number, found {json.dumps(v)[:60]}.")
    return float(v)


def _from_report(doc: dict, path: str, name: str | None = None) -> list[Entry]:
    name = name or str(doc.get("loss", "?"))
    entries = [Entry(name, None, _number(doc.get("value"), f"{path}: value of {name}"))]
    for g in doc.get("groups") or []:
        if not isinstance(g, dict) or "group" not in g:
            raise DataError(f"{path}: a group of {name} has no 'group' key; expected the groups of a lossctl report.")
        entries.append(Entry(name, g["group"], _number(g.get("value"), f"{path}: value of {name} group {g['group']}")))
    return entries


def _read_json(path: str) -> Any:
    try:
        size = os.path.getsize(path)
        if size > MAX_JSON_BYTES:
            raise DataError(f"{path}: {size} bytes is larger than a saved lossctl report can be.")
        with open(path, "rb") as fh:
            return json.loads(fh.read())
    except FileNotFoundError:
        raise DataError(f"{path}: file not found; expected a JSON report or state written by lossctl.") from None
    except IsADirectoryError:
        raise DataError(f"{path}: is a directory; expected a JSON report or state written by lossctl.") from None
    except RecursionError:
        raise DataError(f"{path}: JSON nested too deeply to be a lossctl report.") from None
    except (OSError, ValueError) as exc:
        reason = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise DataError(f"{path}: not readable as JSON ({reason}); expected a report (-f json) or a state (--save-state).") from None


def load(path: str) -> Document:
    """Read one saved document into its entries."""
    doc = _read_json(path)
    if not isinstance(doc, dict):
        raise DataError(f"{path}: expected a JSON object written by lossctl (-f json or --save-state).")
    if "lossctl_state" in doc:
        return _load_state(path)
    kind = doc.get("kind")
    try:
        if kind == "check":
            entries = []
            for c in doc.get("checks") or []:
                if c.get("report"):
                    entries += _from_report(c["report"], path, str(c.get("name")))
                else:
                    value = None if c.get("status") == "error" else _number(c.get("value"), f"{path}: check {c.get('name')}")
                    entries.append(Entry(str(c.get("name")), None, value))
            return Document(path, "check", entries)
        if kind == "compare":
            loss = str(doc.get("loss"))
            systems = [doc.get("baseline") or {}] + list(doc.get("candidates") or [])
            entries = [Entry(f"{loss} [{s.get('source')}]", None, _number(s.get("value"), path)) for s in systems]
            return Document(path, "compare", entries, reduction=doc.get("reduction"))
        if "loss" in doc and "value" in doc:
            return Document(path, "compute", _from_report(doc, path), reduction=doc.get("reduction"))
    except (AttributeError, TypeError):
        pass
    raise DataError(
        f"{path}: not a lossctl report; expected the JSON of compute, merge, check or compare (-f json), "
        "or a state written by --save-state."
    )


def _load_state(path: str) -> Document:
    from lossctl import engine

    spec, meta, state, _level = engine.merge_states([path])
    report = engine.report_from_state(spec, meta, state, ci_level=None, hist=False)
    return Document(path, "state", _from_report(report, path), (spec, meta, state), meta.get("reduction"))


def _rows_key(meta: dict) -> tuple:
    return (meta.get("row_offset", 0), json.dumps(meta.get("rows_read"), sort_keys=True))


def paired_interval(base: Document, cand: Document, level: float) -> dict:
    """Paired percentile bootstrap interval of (cand - base) on the headline, from two states."""
    import numpy as np

    (bspec, bmeta, bstate), (cspec, cmeta, cstate) = base.state, cand.state
    if bspec.name != cspec.name:
        raise DataError(f"{cand.path} is a {cspec.name} state but {base.path} is {bspec.name}; a paired interval needs the same loss.")
    if bstate.bootstrap is None or cstate.bootstrap is None:
        missing = base.path if bstate.bootstrap is None else cand.path
        raise UsageError(f"{missing} holds no bootstrap resamples: write both states with compute --ci ... --save-state.")
    if (bstate.bootstrap.n, bstate.bootstrap.seed) != (cstate.bootstrap.n, cstate.bootstrap.seed):
        raise DataError(
            f"{cand.path} was resampled with {cstate.bootstrap.n} resamples and seed {cstate.bootstrap.seed}, "
            f"{base.path} with {bstate.bootstrap.n} and seed {bstate.bootstrap.seed}; a paired interval needs the same --ci-n and --seed."
        )
    if _rows_key(bmeta) != _rows_key(cmeta) or bstate.all.stats.count != cstate.all.stats.count:
        raise DataError(
            f"{cand.path} and {base.path} cover different rows (rows read {cmeta.get('rows_read')} from row "
            f"{cmeta.get('row_offset', 0)} vs {bmeta.get('rows_read')} from row {bmeta.get('row_offset', 0)}); "
            "a paired interval needs both runs over the same rows in the same order."
        )
    reduction = bmeta.get("reduction", "mean")
    d = cstate.bootstrap.estimates(reduction) - bstate.bootstrap.estimates(reduction)
    d = d[np.isfinite(d)]
    lo, hi = (float("nan"), float("nan")) if not len(d) else map(float, np.quantile(d, [(1 - level) / 2, (1 + level) / 2]))
    return {
        "level": level,
        "low": lo,
        "high": hi,
        "method": f"paired percentile bootstrap from the states' {bstate.bootstrap.n} Poisson resamples (seed {bstate.bootstrap.seed})",
    }


def _delta(base: float | None, cand: float | None) -> tuple[float | None, float | None]:
    if base is None or cand is None:
        return None, None
    if math.isinf(base) or math.isinf(cand):
        d = cand - base if not (math.isinf(base) and base == cand) else 0.0
    else:
        d = cand - base
    if math.isnan(d):
        return None, None
    if base == 0:
        rel = 0.0 if d == 0 else math.copysign(math.inf, d)
    else:
        rel = d / abs(base)
    return d, rel


def diff(
    paths: list[str],
    max_delta: float | None = None,
    max_rel_delta: float | None = None,
    ci: float | None = None,
) -> dict:
    """The diff document of a baseline (``paths[0]``) and candidates."""
    if len(paths) < 2:
        raise UsageError("diff needs a baseline and at least one candidate.")
    for name, v in (("max_delta", max_delta), ("max_rel_delta", max_rel_delta)):
        if v is not None and math.isnan(v):
            raise UsageError(f"{name} must be a number, not NaN.")
    if ci is not None and not 0 < ci < 1:
        raise UsageError(f"the interval level must lie in (0, 1); got {ci!r}.")
    docs = [load(p) for p in paths]
    base = docs[0]
    labels = unique_labels(paths)
    gated = max_delta is not None or max_rel_delta is not None
    pair_states = base.kind == "state" and all(d.kind == "state" for d in docs[1:])
    level = ci if ci is not None else 0.95
    if ci is not None and not pair_states:
        raise UsageError("a paired interval needs state files (compute --ci ... --save-state) on both sides.")
    out_cands = []
    passed = True
    for doc, label in zip(docs[1:], labels[1:]):
        interval = None
        if pair_states and (ci is not None or (base.state[2].bootstrap and doc.state[2].bootstrap)):
            interval = paired_interval(base, doc, level)
        cand_by_key = {(e.name, _key(e.group)): e for e in doc.entries}
        base_keys = {(e.name, _key(e.group)) for e in base.entries}
        rows = []
        for e in base.entries + [e for e in doc.entries if (e.name, _key(e.group)) not in base_keys]:
            k = (e.name, _key(e.group))
            b = next((x.value for x in base.entries if (x.name, _key(x.group)) == k), None) if k in base_keys else None
            c_entry = cand_by_key.get(k)
            c = c_entry.value if c_entry is not None else None
            d, rel = _delta(b, c)
            row: dict[str, Any] = {"name": e.name, "group": e.group, "base": b, "value": c, "delta": d, "rel_delta": rel}
            if k not in base_keys:
                row["status"] = "new"
            elif c_entry is None:
                row["status"] = "missing"
            else:
                row["status"] = "ok"
            if e.group is None and interval is not None and row["status"] == "ok":
                row["ci"] = interval
            failures = []
            if gated:
                if d is None:
                    failures.append("no value to compare" if row["status"] == "ok" else f"{row['status']} in one document")
                else:
                    if max_delta is not None and d > max_delta:
                        failures.append(f"delta {d!r} > max-delta {max_delta!r}")
                    if max_rel_delta is not None and rel > max_rel_delta:
                        failures.append(f"relative delta {rel!r} > max-rel-delta {max_rel_delta!r}")
                if failures:
                    row["status"] = "fail"
                    row["failures"] = failures
                    passed = False
            rows.append(row)
        out_cands.append({"path": doc.path, "label": label, "kind": doc.kind, "rows": rows})
    return {
        "schema_version": SCHEMA_VERSION,
        "kind": "diff",
        "base": {"path": base.path, "label": labels[0], "kind": base.kind},
        "candidates": out_cands,
        "gates": {"max_delta": max_delta, "max_rel_delta": max_rel_delta},
        "passed": passed,
    }


def _key(group: Any) -> str:
    return json.dumps(group, sort_keys=True)


# ---------------------------------------------------------------------------
# Rendering
# ---------------------------------------------------------------------------


def _pct(rel: float | None, p: int) -> str:
    if rel is None:
        return "–"
    if math.isinf(rel):
        return "+inf%" if rel > 0 else "-inf%"
    return f"{rel * 100:+.{max(1, p - 3)}g}%"


def _signed(v: float | None, p: int) -> str:
    from lossctl.report import num

    if v is None:
        return "–"
    text = num(v, p)
    return text if text.startswith("-") else "+" + text


def _cells(row: dict, p: int) -> list[str]:
    from lossctl.report import num

    ci = row.get("ci")
    ci_text = f"[{_signed(ci['low'], p)}, {_signed(ci['high'], p)}]" if ci else ""
    group = "" if row["group"] is None else str(row["group"])
    return [row["name"], group, num(row["base"], p), num(row["value"], p), _signed(row["delta"], p), _pct(row["rel_delta"], p), ci_text, row["status"]]


_HEAD = ["loss / check", "group", "base", "value", "Δ", "Δ rel", "CI of Δ", "status"]


def _keep(doc: dict) -> tuple[list[str], list[int]]:
    has_group = any(r["group"] is not None for c in doc["candidates"] for r in c["rows"])
    has_ci = any("ci" in r for c in doc["candidates"] for r in c["rows"])
    keep = [i for i, h in enumerate(_HEAD) if (h != "group" or has_group) and (h != "CI of Δ" or has_ci)]
    return [_HEAD[i] for i in keep], keep


def to_markdown(doc: dict, precision: int | None) -> str:
    from lossctl.report import md_code, md_text

    p = 6 if precision is None else precision
    head, keep = _keep(doc)
    lines = []
    for c in doc["candidates"]:
        lines += [f"**lossctl diff** {md_code(c['label'])} vs {md_code(doc['base']['label'])}", ""]
        lines += ["| " + " | ".join(head) + " |", "|" + "|".join("---" if h in ("loss / check", "group", "status") else "---:" for h in head) + "|"]
        for r in c["rows"]:
            cells = _cells(r, p)
            lines.append("| " + " | ".join(md_text(cells[i]) for i in keep) + " |")
        lines.append("")
    lines += _notes(doc)
    return "\n".join(lines) + "\n"


def _notes(doc: dict) -> list[str]:
    notes = []
    g = doc["gates"]
    if g["max_delta"] is not None or g["max_rel_delta"] is not None:
        parts = [f"max-delta {g['max_delta']!r}" if g["max_delta"] is not None else "", f"max-rel-delta {g['max_rel_delta']!r}" if g["max_rel_delta"] is not None else ""]
        notes.append(f"Gates: {', '.join(x for x in parts if x)} (delta = candidate - base; positive is worse): {'passed' if doc['passed'] else 'FAILED'}.")
    methods = {r["ci"]["method"] for c in doc["candidates"] for r in c["rows"] if "ci" in r}
    for m in sorted(methods):
        notes.append(f"CI of Δ: {m}, the same rows resampled alike in both runs.")
    return notes


def render_table(doc: dict, console, precision: int | None) -> None:
    from rich.table import Table
    from rich.text import Text

    from lossctl.literal import literal

    p = 6 if precision is None else precision
    doc = literal(doc)  # names, groups and paths from the documents are shown as data
    head, keep = _keep(doc)
    for c in doc["candidates"]:
        console.print(Text(f"{c['label']} vs {doc['base']['label']}", style="bold"))
        t = Table(box=None, header_style="bold", pad_edge=False)
        for h in head:
            t.add_column(h, justify="left" if h in ("loss / check", "group", "status") else "right", overflow="fold")
        for r in c["rows"]:
            cells = _cells(r, p)
            style = {"fail": "bold red", "missing": "yellow", "new": "yellow"}.get(r["status"], "")
            t.add_row(*[Text(cells[i], style=style if _HEAD[i] == "status" else "") for i in keep])
        console.print(t)
        console.print()
    for n in _notes(doc):
        console.print(Text(n, style="dim"))
