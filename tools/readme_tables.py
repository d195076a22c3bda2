"""Generate the README's loss tables from the catalogue (lossctl.registry).

    python tools/readme_tables.py          # rewrite the tables in README.md
    python tools/readme_tables.py --check  # exit 1 when README.md differs (tests do this too)

Each family's table sits between ``<!-- loss-table FAMILY -->`` and ``<!-- /loss-table -->``
in README.md; everything else in the README is left as it is.
"""

from __future__ import annotations

import math
import re
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
README = ROOT / "README.md"
START = re.compile(r"<!-- loss-table ([a-z-]+) -->\n")
END = "<!-- /loss-table -->"
HEADER = "| loss (aliases) | inputs, in order | parameters (defaults) | reference |\n|---|---|---|---|\n"


def _default(p) -> str:
    v = p.default
    if v is None:
        return "none"
    if isinstance(v, bool):
        return "on" if v else "off"
    if isinstance(v, float) and v == math.e:
        return "e"
    return str(v)


def _reference(text: str) -> str:
    return text.replace("|", "\\|")


def _inputs(spec) -> str:
    out = []
    for r in spec.inputs:
        mark = "?" if r.optional else ""
        name = f"`--{r.name}`" if r.option else r.name
        out.append(f"{name}{mark} `{r.shape}`")
    return ", ".join(out)


def row(spec) -> str:
    aliases = f" ({', '.join(f'`{a}`' for a in spec.aliases)})" if spec.aliases else ""
    params = ", ".join(f"`--{p.name}` ({_default(p)})" for p in spec.params) or "–"
    cells = (f"`{spec.name}`{aliases}", _inputs(spec), params, _reference(spec.reference))
    return "| " + " | ".join(c.replace("\n", " ") for c in cells) + " |\n"


def table(family: str) -> str:
    from lossctl import registry

    specs = [s for s in registry.LOSSES if s.family == family and s.plugin is None]
    if not specs:
        raise SystemExit(f"README.md has a loss table for {family!r}, a family with no loss")
    return HEADER + "".join(row(s) for s in specs)


def render(text: str) -> str:
    """README text with every marked loss table regenerated (options spelled as flags)."""
    from lossctl.errors import spelling

    with spelling(lambda name: "--" + name.replace("_", "-")):
        return _render(text)


def _render(text: str) -> str:
    out, pos = [], 0
    for m in START.finditer(text):
        end = text.find(END, m.end())
        if end < 0:
            raise SystemExit(f"README.md: {m.group(0).strip()} has no {END}")
        out += [text[pos : m.end()], table(m.group(1))]
        pos = end
    return "".join(out) + text[pos:]


def main(argv: list[str]) -> int:
    sys.path.insert(0, str(ROOT))
    text = README.read_text(encoding="utf-8")
    new = render(text)
    if "--check" in argv:
        if new != text:
            print("README.md's loss tables differ from the catalogue: run python tools/readme_tables.py")
            return 1
        return 0
    if new != text:
        README.write_text(new, encoding="utf-8")
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
