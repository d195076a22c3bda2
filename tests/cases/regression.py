"""Reference cases: regression losses."""

from __future__ import annotations

import math

import numpy as np

from cases.common import Case


def _make(rng, p):
    shape = (40, 3) if p.get("_multi") else (40,)
    pred = rng.normal(size=shape) * 4
    target = pred + rng.normal(size=shape) * rng.choice([0.1, 1.0, 10.0], size=shape)
    return [pred, target]


def _per_sample(elem):
    def ref(arrays, p):
        pred, target = arrays
        if pred.ndim == 1:
            return [elem(t - y) for y, t in zip(pred.tolist(), target.tolist())]
        return [math.fsum(elem(t - y) for y, t in zip(r, s)) / len(r) for r, s in zip(pred.tolist(), target.tolist())]

    return ref


CASES = {
    "mse": Case(make=_make, reference=_per_sample(lambda r: r * r), params=[{}, {"_multi": True}]),
    "mae": Case(make=_make, reference=_per_sample(abs), params=[{}, {"_multi": True}]),
}
