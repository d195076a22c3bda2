"""The layers of ARCHITECTURE.md, checked from the source: dependencies point down only.

Every ``import lossctl...`` in every module (at module level and inside functions) is an edge;
an edge to a higher layer fails unless it is one of the few deliberate exceptions below, each
with its reason.
"""

from __future__ import annotations

import ast
import os

import pytest

from conftest import ROOT

PKG = os.path.join(ROOT, "lossctl")

# lowest first; a module's layer is the first prefix that matches (longest prefixes first)
LAYERS = {
    0: ("lossctl.errors", "lossctl.literal", "lossctl.untrusted", "lossctl.limits", "lossctl.ragged"),
    1: ("lossctl.losses", "lossctl.registry", "lossctl.plugins"),  # the catalogue (plugins: user losses)
    2: ("lossctl.io", "lossctl.stages", "lossctl.engine", "lossctl.cluster", "lossctl.stats",
        "lossctl.aggregate", "lossctl.kinds", "lossctl.options"),  # the core
    3: ("lossctl.report", "lossctl.html", "lossctl.checks", "lossctl.compare", "lossctl.diff"),  # reports, gates
    4: ("lossctl.api", "lossctl.library"),  # the Python API
    5: ("lossctl.cli", "lossctl.completion", "lossctl.__main__"),  # the command line
}  # fmt: skip

# Deliberate upward edges (importer, imported): each is a lazy import inside a function.
EXCEPTIONS = {
    ("lossctl", "lossctl.cli"): "the package's console entry point hands over to the CLI",
    ("lossctl.losses", "lossctl.library"): "lossctl.losses.focal etc. are the documented library functions",
    ("lossctl.compare", "lossctl.api"): "the module shadows the API function lossctl.compare(...) and forwards to it",
}


def layer(mod: str) -> int | None:
    best = None
    for level, prefixes in LAYERS.items():
        for p in prefixes:
            if (mod == p or mod.startswith(p + ".")) and (best is None or len(p) > len(best[1])):
                best = (level, p)
    return None if best is None else best[0]


def _modules() -> dict[str, str]:
    out = {}
    for dp, _, files in os.walk(PKG):
        for f in files:
            if f.endswith(".py"):
                path = os.path.join(dp, f)
                mod = os.path.relpath(path, ROOT)[:-3].replace(os.sep, ".")
                out[mod[: -len(".__init__")] if mod.endswith(".__init__") else mod] = path
    return out


MODULES = _modules()


def imports(mod: str, path: str) -> set[str]:
    tree = ast.parse(open(path, encoding="utf-8").read())
    is_pkg = path.endswith("__init__.py")
    found = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                parts = mod.split(".")
                base = parts if is_pkg else parts[:-1]
                base = base[: len(base) - (node.level - 1)]
                prefix = ".".join(base + ([node.module] if node.module else []))
            else:
                prefix = node.module or ""
            names = [prefix] + [f"{prefix}.{a.name}" for a in node.names]
        else:
            continue
        for n in names:
            while n and n not in MODULES:
                n = n.rpartition(".")[0]
            if n and n != mod:
                found.add(n)
    return found


def test_every_module_has_a_layer():
    assert [m for m in MODULES if m != "lossctl" and layer(m) is None] == []


def test_dependencies_point_down():
    up = []
    for mod, path in sorted(MODULES.items()):
        for dep in sorted(imports(mod, path)):
            if mod == "lossctl" or dep == "lossctl" or (mod, dep) in EXCEPTIONS:
                continue
            if layer(dep) > layer(mod):
                up.append(f"{mod} (layer {layer(mod)}) imports {dep} (layer {layer(dep)})")
    assert up == [], "\n".join(up)


def test_the_check_sees_an_upward_import(tmp_path):
    p = tmp_path / "m.py"
    p.write_text("def f():\n    from lossctl.cli import app\n")
    assert "lossctl.cli" in imports("lossctl.stats", str(p))


@pytest.mark.parametrize("mod", ["lossctl.losses.regression", "lossctl.registry", "lossctl.io.formats"])
def test_declarations_import_no_numpy_at_module_level(mod):
    tree = ast.parse(open(MODULES[mod], encoding="utf-8").read())
    top = [n for n in tree.body if isinstance(n, (ast.Import, ast.ImportFrom))]
    names = {a.name for n in top for a in n.names} | {getattr(n, "module", None) for n in top}
    assert "numpy" not in names and "pyarrow" not in names
