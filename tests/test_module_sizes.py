"""Size limits of the package (issue #14, item 7): no module over about 800 lines, and no
function anywhere in the package over about 80 lines. The limits carry a little slack (850, 80) so an ordinary fix does not
trip them; a module or function that grows past them is split by concern."""

from __future__ import annotations

import ast
import importlib
import pkgutil
from pathlib import Path

import pytest

import lossctl
import lossctl.losses

PACKAGE = Path(lossctl.__file__).parent
MODULE_LINES = 850
FUNCTION_LINES = 80
# Where the function limit holds (paths relative to the package).
FUNCTION_SCOPE = ("losses", "stages", "io", "engine.py", "cluster.py")


def _modules() -> list[Path]:
    return sorted(PACKAGE.rglob("*.py"))


def _lines(path: Path) -> int:
    return len(path.read_text(encoding="utf-8").splitlines())


def _functions(path: Path) -> list[tuple[str, int]]:
    """(qualified name, lines from ``def`` to its last line) of every function and method,
    nested ones included."""
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    found: list[tuple[str, int]] = []

    def walk(node: ast.AST, prefix: str) -> None:
        for child in ast.iter_child_nodes(node):
            if isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef)):
                name = prefix + child.name
                found.append((name, child.end_lineno - child.lineno + 1))
                walk(child, name + ".")
            elif isinstance(child, ast.ClassDef):
                walk(child, prefix + child.name + ".")
            else:
                walk(child, prefix)

    walk(tree, "")
    return found


def _in_function_scope(path: Path) -> bool:
    return True  # the whole package (FUNCTION_SCOPE: where it held first)


def test_the_walk_sees_the_package():
    """The limits below are checked on real files: the package and its sub-packages are found,
    and the AST walk measures functions, methods and nested functions."""
    rels = {p.relative_to(PACKAGE).as_posix() for p in _modules()}
    assert {"engine.py", "cluster.py", "losses/classification.py", "losses/_common.py"} <= rels
    assert any(r.startswith("stages/") for r in rels) and any(r.startswith("io/") for r in rels)
    names = dict(_functions(PACKAGE / "losses" / "_common.py"))
    assert "softmax_rows" in names and "softmax_rows.part" in names  # nested
    names = dict(_functions(PACKAGE / "losses" / "softmax.py"))
    assert "_Tokens.__init__" in names  # methods


def test_functions_measure_def_to_last_line(tmp_path):
    src = tmp_path / "m.py"
    src.write_text("@staticmethod\ndef f(a):\n    x = 1\n\n    return x\n\n\nclass C:\n    def g(self):\n        pass\n")
    assert _functions(src) == [("f", 4), ("C.g", 2)]


def test_no_module_over_the_line_limit():
    over = [(p.relative_to(PACKAGE).as_posix(), _lines(p)) for p in _modules()]
    over = [(rel, n) for rel, n in over if n > MODULE_LINES]
    assert not over, f"modules over {MODULE_LINES} lines (split them by concern): " + ", ".join(
        f"lossctl/{rel} ({n})" for rel, n in sorted(over, key=lambda r: -r[1])
    )


def test_no_function_over_the_line_limit():
    over = []
    for path in _modules():
        if _in_function_scope(path):
            rel = path.relative_to(PACKAGE).as_posix()
            over += [(f"lossctl/{rel}:{name}", n) for name, n in _functions(path) if n > FUNCTION_LINES]
    assert not over, f"functions over {FUNCTION_LINES} lines (split them into named helpers): " + ", ".join(
        f"{where} ({n})" for where, n in sorted(over, key=lambda r: -r[1])
    )


def _loss_python_names() -> dict[str, str]:
    """Every loss's Python names (name and aliases, ``-`` as ``_``) -> the loss."""
    from lossctl import registry

    return {name.replace("-", "_"): spec.name for spec in registry.LOSSES for name in (spec.name, *spec.aliases)}


@pytest.mark.parametrize(
    "module", sorted(m.name for m in pkgutil.iter_modules(lossctl.losses.__path__) if not m.name.startswith("_"))
)
def test_no_kernel_module_hides_a_loss(module):
    """``lossctl.losses.NAME`` answers a kernel module before a loss of that name. A module may
    share its name only with the loss of that name it declares itself (``contrastive``, reached as
    ``contrastive_loss``); a family split into a module named like another loss or an alias (a
    module ``lm`` would hide token-cross-entropy's ``lossctl.losses.lm``) is refused."""
    from lossctl import registry

    names = _loss_python_names()
    if module in names:
        spec = registry.get(names[module])
        assert spec.name == module and spec.kernel == f"lossctl.losses.{module}:{module}", (
            f"lossctl/losses/{module}.py hides lossctl.losses.{module}, the loss {spec.name!r}"
        )
    assert importlib.import_module(f"lossctl.losses.{module}") is getattr(lossctl.losses, module)
