"""The PyTorch numbers the tests use as oracles (tests/reference/torch_values.py) are what
PyTorch computes: each block is recomputed with torch when it is installed (the bench extra),
and skipped with the reason otherwise."""

from __future__ import annotations

import os

import pytest

from reference import regenerate, torch_values


def _close(stored, now, rel: float, path: str = "") -> None:
    if isinstance(stored, dict):
        assert isinstance(now, dict) and stored.keys() == now.keys(), (path, stored, now)
        for k in stored:
            _close(stored[k], now[k], rel, f"{path}/{k}")
    elif isinstance(stored, list):
        assert isinstance(now, list) and len(stored) == len(now), (path, stored, now)
        for i, (a, b) in enumerate(zip(stored, now)):
            _close(a, b, rel, f"{path}[{i}]")
    else:
        assert now == pytest.approx(stored, rel=rel, abs=0), path


@pytest.mark.slow  # importing torch takes seconds
@pytest.mark.parametrize("name", list(regenerate.BLOCKS))
def test_stored_torch_values_are_what_torch_computes(name):
    pytest.importorskip("torch", reason="recomputing the PyTorch reference values needs torch: pip install '.[bench]'")
    block = regenerate.BLOCKS[name]
    if block.needs == "torchvision" and not regenerate.have("torchvision"):
        pytest.skip(f"{name} is recomputed only where torchvision imports (not part of the bench extra)")
    entry = getattr(torch_values, name)
    assert entry["inputs"] == block.inputs and entry["dtype"] == block.dtype and entry["doc"] == block.doc
    # float32 blocks are stored to 9 digits; another torch build may differ in the last float32 ulp
    _close(entry["values"], regenerate.compute(block), rel=2.5e-7 if block.dtype == "float32" else 1e-15)


def test_torch_values_module_is_the_generated_text():
    """torch_values.py is exactly what regenerate.py writes for its values (no hand edits, and
    every block the generator defines is stored)."""
    values, versions = regenerate.stored()
    assert set(values) == set(regenerate.BLOCKS)
    with open(os.path.join(os.path.dirname(regenerate.__file__), "torch_values.py"), encoding="utf-8") as fh:
        assert fh.read() == regenerate.render(values, versions)
