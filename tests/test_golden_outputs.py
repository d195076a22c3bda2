"""What lossctl prints for the bundled examples stays byte-identical through refactors.

Each tests/golden/NAME.txt holds the arguments (first line) and the exit code, stdout and stderr
of `lossctl ARGS` run from the repository root; tests/golden/make_golden.py regenerates them
when a change of output is intended.
"""

from __future__ import annotations

import glob
import json
import os
import sys

import pytest

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "golden"))
import make_golden  # noqa: E402

FILES = sorted(glob.glob(os.path.join(HERE, "golden", "*.txt")))


def test_there_is_a_golden_file_per_case():
    names = {n for n, _ in make_golden.cases()}
    assert names == {os.path.basename(f)[:-4] for f in FILES}


def _golden(path: str) -> tuple[list[str], str]:
    with open(path, encoding="utf-8") as f:
        return json.loads(f.readline()), f.read()


@pytest.fixture(scope="module")
def outputs() -> dict[str, str]:
    """Every case run once, a subprocess per core at a time (each is mostly start-up)."""
    from concurrent.futures import ThreadPoolExecutor

    with ThreadPoolExecutor(max_workers=max(2, os.cpu_count() or 1)) as pool:
        got = pool.map(lambda p: make_golden.run(_golden(p)[0]) + "\n", FILES)
        return dict(zip(FILES, got))


@pytest.mark.slow
@pytest.mark.parametrize("path", FILES, ids=lambda p: os.path.basename(p)[:-4])
def test_output_is_unchanged(path, outputs):
    assert outputs[path] == _golden(path)[1]
