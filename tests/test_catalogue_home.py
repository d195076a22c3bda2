"""One home per loss (#14): each loss is declared next to its kernel, the registry only
collects the declarations, the docstring and `explain` share one text, the catalogue is
importable without NumPy, and the README's loss tables are generated from it."""

from __future__ import annotations

import importlib
import importlib.util
import inspect
import os
import pydoc
import subprocess
import sys

import pytest

from lossctl import registry
from lossctl.errors import spelling
from lossctl.losses import spec as spec_mod

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
NAMES = [s.name for s in registry.LOSSES]


def _function(path: str):
    module, _, name = path.partition(":")
    return getattr(importlib.import_module(module), name)


@pytest.mark.parametrize("name", NAMES)
def test_declared_next_to_its_kernel(name):
    """The kernel carries its own declaration: the registry holds no LossSpec of its own."""
    spec = registry.get(name)
    kernel = _function(spec.kernel)
    assert kernel.__loss__ is spec
    assert spec.kernel.startswith("lossctl.losses.") and kernel.__module__ == spec.kernel.partition(":")[0]
    # the gradient, reliability and headline functions sit in the same module as the kernel
    for path in (spec.grad, spec.reliability, spec.headline_from, spec.tokens):
        if path:
            assert path.partition(":")[0] == kernel.__module__
            assert callable(_function(path))


def test_registry_declares_no_loss_itself():
    source = inspect.getsource(registry)
    assert "LossSpec(" not in source and "Param(" not in source and "Role(" not in source
    assert len(registry.LOSSES) == len({s.name for s in registry.LOSSES}) >= 33


@pytest.mark.parametrize("name", ["focal", "cross-entropy", "kl-divergence", "giou", "info-nce", "vae"])
def test_docstring_and_explain_share_the_text(name):
    from conftest import run_cli

    spec = registry.get(name)
    kernel = _function(spec.kernel)
    doc = pydoc.render_doc(kernel, renderer=pydoc.plaintext)
    explain = run_cli(["explain", name])
    assert explain.code == 0
    flat_explain = " ".join(explain.out.split())
    # one text: the docstring spells options as Python names, `explain` as flags
    for text in (spec.summary, spec.reference, spec.paper, *spec.formula.splitlines()):
        assert " ".join(text.split()) in " ".join(doc.split()), text
    with spelling(lambda n: "--" + n.replace("_", "-")):
        for text in (spec.summary, spec.reference, spec.paper, *spec.formula.splitlines()):
            assert " ".join(text.split())[:60] in flat_explain, text
    assert "--" not in doc.split("Example::")[0]  # (the example is a command line)
    for role in spec.inputs:
        assert f"{role.name.replace('-', '_')} {role.shape}" in doc


def test_help_of_a_kernel_shows_formula_and_reference():
    from lossctl.losses import classification

    text = pydoc.render_doc(classification.focal, renderer=pydoc.plaintext)
    assert "α_t · (1 - p_t)^γ · ce" in text
    assert "torchvision.ops.sigmoid_focal_loss" in text
    assert "Lin, Goyal, Girshick" in text
    assert "alpha = 0.25" in text and "in [0, 1] or -1" in text


def test_token_function_is_declared():
    """The per-token function is declared on the loss (``tokens``), not found by its name."""
    with_tokens = {s.name for s in registry.LOSSES if s.tokens}
    assert with_tokens == {"token-cross-entropy"}
    fn = registry.get("lm").load_tokens()
    assert fn.__name__ == "token_cross_entropy_tokens"
    assert registry.get("mse").load_tokens() is None
    # no loss has a `<kernel>_tokens` function it does not declare
    for s in registry.LOSSES:
        module, _, kernel = s.kernel.partition(":")
        if hasattr(importlib.import_module(module), kernel + "_tokens"):
            assert s.tokens == f"{module}:{kernel}_tokens"


def test_dead_fields_are_gone():
    fields = set(spec_mod.LossSpec.__dataclass_fields__)
    assert "classification" not in fields and "notes" not in fields
    from lossctl.losses import classification

    assert not hasattr(classification, "BCE_TAIL_IN_INPUT_PRECISION")
    import lossctl.losses.contrastive as con

    assert "so it differs" not in (con.__doc__ or "")


_PROBE = """
import sys
from lossctl.cli import main
try:
    main({args!r})
except SystemExit:
    pass
sys.stdout.flush()
print("NUMPY-IMPORTED" if "numpy" in sys.modules else "NUMPY-ABSENT", file=sys.stderr)
"""


# (`lossctl list` also loads installed plugins, and lossctl/plugins.py imports NumPy: not the catalogue's.)
@pytest.mark.parametrize("args", [["--help"], ["explain", "focal"], ["compute", "focal", "--help"], ["explain", "vae"]])
def test_catalogue_faces_do_not_import_numpy(args):
    env = {**os.environ, "PYTHONPATH": ROOT}
    proc = subprocess.run(
        [sys.executable, "-c", _PROBE.format(args=args)], capture_output=True, text=True, env=env, cwd=ROOT, timeout=60
    )
    assert proc.stdout.strip(), proc.stderr
    assert "NUMPY-ABSENT" in proc.stderr, proc.stderr[-2000:]


def test_kernels_still_get_numpy_on_first_use():
    """The lazy stand-in is replaced by the real module the first time a kernel runs."""
    import numpy as np

    from lossctl.losses import regression

    r = regression.mse(np.array([1.0, 2.0]), np.array([0.0, 0.0]))
    assert list(r.loss) == [1.0, 4.0]
    assert regression.np is np


def _readme_tables():
    path = os.path.join(ROOT, "tools", "readme_tables.py")
    spec = importlib.util.spec_from_file_location("readme_tables", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_readme_loss_tables_are_generated_from_the_catalogue():
    tables = _readme_tables()
    with open(os.path.join(ROOT, "README.md"), encoding="utf-8") as fh:
        text = fh.read()
    assert text.count("<!-- loss-table ") == len(registry.FAMILIES)
    assert tables.render(text) == text, "README.md's loss tables are stale: run python tools/readme_tables.py"
    for s in registry.LOSSES:  # every loss has its row
        assert f"| `{s.name}`" in text


def test_readme_table_check_fails_on_a_stale_row():
    tables = _readme_tables()
    with open(os.path.join(ROOT, "README.md"), encoding="utf-8") as fh:
        text = fh.read()
    stale = text.replace("`--gamma` (2.0) | torchvision", "`--gamma` (3.0) | torchvision", 1)
    assert stale != text and tables.render(stale) == text
