"""The shape of a reference case (see tests/cases/__init__.py)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable, Sequence

import numpy as np


@dataclass
class Case:
    """How to test one loss against an independent float64 reference.

    make(rng, params) -> list of input arrays in the registry's role order
        (None for an absent optional input; lossctl.ragged.Ragged for ragged roles).
    reference(arrays, params) -> per-sample float64 values, computed independently
        of the kernel (plain Python loops with math.fsum, a closed form, SciPy ...).
        Rows the kernel reports as ignored are not compared.
    params: keyword-parameter variants (Python names, as the kernel takes them);
        keys starting with "_" steer ``make`` only and are not passed to the kernel.
    grad_make: inputs for the gradient check (e.g. away from kinks); default make.
    """

    make: Callable[[np.random.Generator, dict], list]
    reference: Callable[[list, dict], Sequence[float]]
    params: list[dict[str, Any]] = field(default_factory=lambda: [{}])
    rtol: float = 1e-10
    atol: float = 1e-12
    grad_make: Callable[[np.random.Generator, dict], list] | None = None
    grad_params: list[dict[str, Any]] | None = None
    grad_rtol: float = 1e-5
    grad_atol: float = 1e-7
