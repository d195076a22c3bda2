"""Rendering the loss catalogue for a terminal, a pipe or JSON: ``lossctl list`` and ``lossctl explain``.

Every text comes from the registry (a plugin's texts too) and is printed literally.
"""

from __future__ import annotations

import sys

from lossctl import registry
from lossctl.cli.console import _say, _stdout_console
from lossctl.errors import UsageError


def explain(name: str, fmt: str) -> None:
    spec = registry.get(name)
    if fmt == "json":
        import json

        sys.stdout.write(json.dumps(registry.describe(spec), indent=2, ensure_ascii=False) + "\n")
        return
    if fmt != "text":
        raise UsageError(f"--format must be text or json; got {fmt!r}.")
    from rich.table import Table
    from rich.text import Text

    from lossctl.literal import visible as v  # a plugin's texts are shown as typed

    con = _stdout_console(False)
    title = Text(v(spec.name), style="bold cyan")
    if spec.aliases:
        title.append(v(f" ({', '.join(spec.aliases)})"), style="cyan")
    title.append(v(f"  ·  {spec.family}"), style="dim")
    con.print(title)
    con.print(Text(v(spec.summary)))

    def section(head: str, body: str | None = None) -> None:
        con.print()
        con.print(Text(head, style="bold"))
        if body is not None:
            for line in body.splitlines():
                con.print(Text("  " + v(line)))

    section("Formula (per sample)", spec.formula)
    section("Inputs (positional, in this order)")
    t = Table(box=None, show_header=False, pad_edge=False)
    for _ in range(3):
        t.add_column()
    for r in spec.inputs:
        t.add_row(v("  " + r.metavar + (" (optional)" if r.optional else "")), v(r.shape), v(r.help))
    con.print(t)
    if spec.params:
        section("Parameters")
        t = Table(box=None, show_header=False, pad_edge=False)
        for _ in range(3):
            t.add_column()
        for p in spec.params:
            default = "none" if p.default is None else str(p.default)
            rng = p.describe_range()
            t.add_row(v("  --" + p.name), v(f"default {default}"), v(p.help + (f" ({rng})" if rng else "")))
        con.print(t)
    section("Headline value", spec.headline)
    section("Gradient", spec.gradient + f"  (w.r.t. {spec.inputs[spec.pred_index].metavar})")
    section("Properties")
    for prop in spec.properties:
        con.print(Text("  • " + v(prop)))
    section("Used for", spec.used_for)
    section("Output activation it assumes", spec.activation)
    section("Reference equivalent", spec.reference)
    section("Paper", spec.paper)
    section("Example", "lossctl compute " + " ".join((spec.name, *spec.example)))


def list_losses(fmt: str, family: str | None) -> None:
    from lossctl import plugins

    for problem in plugins.load_installed():
        _say(f"lossctl: warning: {problem}; its losses are not listed.")
    specs = [s for s in registry.LOSSES if family is None or s.family == family]
    if family is not None and not specs:
        raise UsageError(
            f"--family must be one of {', '.join(sorted({s.family for s in registry.LOSSES}))}; got {family!r}."
        )
    if fmt == "json":
        import json

        sys.stdout.write(json.dumps([registry.describe(s) for s in specs], indent=2, ensure_ascii=False) + "\n")
        return
    if fmt != "table":
        raise UsageError(f"--format must be table or json; got {fmt!r}.")
    from rich.table import Table
    from rich.text import Text

    from lossctl.literal import visible as v  # a plugin's names are shown as typed

    head = ("loss", "aliases", "inputs", "what it is")
    rows: list[tuple[str, ...]] = []  # a 1-tuple is a family heading
    for fam in registry.FAMILIES:
        group = [s for s in specs if s.family == fam]
        if not group:
            continue
        rows.append((v(fam),))
        for s in group:
            inputs = " ".join(r.metavar + ("?" if r.optional else "") for r in s.inputs)
            rows.append(("  " + v(s.name), v(", ".join(s.aliases)), v(inputs), v(s.summary)))
    if not sys.stdout.isatty():
        _list_plain(head, rows)
        sys.stdout.write("\n" + registry.INPUT_ORDER_RULE + "\n")
        return
    table = Table(box=None, header_style="bold", pad_edge=False)
    table.add_column("loss", style="cyan", no_wrap=True)
    table.add_column("aliases", no_wrap=True)
    table.add_column("inputs")
    table.add_column("what it is")
    for row in rows:
        if len(row) == 1:
            table.add_row(Text(row[0], style="bold"), "", "", "")
        else:
            table.add_row(*row)
    _stdout_console(False).print(table)
    sys.stdout.write("\n" + registry.INPUT_ORDER_RULE + "\n")


def _list_plain(head: tuple[str, ...], rows: list[tuple[str, ...]]) -> None:
    """`lossctl list` into a pipe or file: one line per loss, columns aligned, never wrapped
    (a terminal's 80 columns do not apply; grep, cut and less -S see whole lines)."""
    from rich.cells import cell_len

    body = [r for r in rows if len(r) > 1]
    widths = [max(cell_len(r[i]) for r in [head, *body]) for i in range(len(head) - 1)]

    def line(cells: tuple[str, ...]) -> str:
        text = "".join(c + " " * (w - cell_len(c) + 2) for c, w in zip(cells, widths)) + cells[-1]
        return text.rstrip() + "\n"

    sys.stdout.write("".join(line(r) if len(r) > 1 else r[0] + "\n" for r in [head, *rows]))
