"""Reference cases for every registered loss, one module per family.

Each family module defines ``CASES: dict[str, Case]`` keyed by the loss's
canonical name. ``tests/test_catalogue.py`` runs every case through the same
checks (kernel vs. independent float64 reference; analytic gradient vs.
central finite differences) and fails when a registered loss has no case.
"""

from __future__ import annotations

import importlib
import pkgutil

from cases.common import Case

CASES: dict[str, Case] = {}
for _mod in pkgutil.iter_modules(__path__):
    if _mod.name == "common":
        continue
    _m = importlib.import_module(f"cases.{_mod.name}")
    for _name, _case in getattr(_m, "CASES", {}).items():
        if _name in CASES:
            raise RuntimeError(f"two reference cases for {_name}")
        CASES[_name] = _case
