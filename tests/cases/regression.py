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


# ---------------------------------------------------------------------------
# huber, smooth-l1, log-cosh, quantile (pinball), gaussian-nll, poisson-nll
# ---------------------------------------------------------------------------


def _make_away(rng, p):
    """Residuals whose magnitudes stay clear of 0 and of the kinks at 0.5, 1 and 2 (gradient checks)."""
    shape = (40, 3) if p.get("_multi") else (40,)
    pred = rng.normal(size=shape) * 4
    mag = rng.choice([0.1, 0.3, 0.7, 1.3, 1.7, 2.6, 4.0, 30.0], size=shape) + rng.uniform(-0.05, 0.05, size=shape)
    return [pred, pred + mag * rng.choice([-1.0, 1.0], size=shape)]


def _make_kinks(rng, p):
    """Random residuals plus residuals exactly at 0 and exactly at ±1, ±0.5, ±2 (the kinks)."""
    pred, target = _make(rng, p)
    exact = np.array([0.0, 0.5, -0.5, 1.0, -1.0, 2.0, -2.0, 1e6, -1e6])
    if pred.ndim == 1:
        pred[: len(exact)] = 3.0
        target[: len(exact)] = 3.0 + exact
    else:
        pred[: len(exact), 0] = 3.0
        target[: len(exact), 0] = 3.0 + exact
    return [pred, target]


def _huber_elem(p):
    d = p.get("delta", 1.0)
    return lambda r: 0.5 * r * r if abs(r) <= d else d * (abs(r) - 0.5 * d)


def _smooth_l1_elem(p):
    b = p.get("beta", 1.0)
    if b == 0:
        return abs
    return lambda r: 0.5 * r * r / b if abs(r) < b else abs(r) - 0.5 * b


def _log_cosh_elem(r):
    # math.cosh is finite below ~710; beyond, log cosh r = |r| - log 2 + log1p(e^{-2|r|}) and e^{-1400} = 0.
    return math.log(math.cosh(r)) if abs(r) < 700 else abs(r) - math.log(2.0)


def _pinball_elem(p):
    q = p.get("quantile", 0.5)
    # sklearn's form: alpha * max(e, 0) + (1 - alpha) * max(-e, 0)
    return lambda r: q * max(r, 0.0) + (1 - q) * max(-r, 0.0)


def _with_params(elem_factory):
    def ref(arrays, p):
        return _per_sample(elem_factory(p))(arrays, p)

    return ref


def _make_large(rng, p):
    pred = rng.normal(size=40) * 4
    return [pred, pred + rng.normal(size=40) * 1000.0]


def _gauss_make(rng, p):
    multi = p.get("_var_shape") in ("full2d", "row", "col")
    shape = (30, 4) if multi else (30,)
    pred = rng.normal(size=shape) * 3
    sd = rng.uniform(0.2, 3.0, size=shape[:1] if p.get("_var_shape") in ("row", "col") else shape)
    target = pred + rng.normal(size=shape) * (sd[:, None] if sd.ndim < len(shape) else sd)
    var = sd * sd
    if not p.get("_grad"):
        var[::7] = 0.0  # clamped to eps
        var[3::11] = 1e-9
    if p.get("_var_shape") == "col":
        var = var[:, None]
    return [pred, target, var]


def _gauss_ref(arrays, p):
    pred, target, var = arrays
    eps = p.get("eps", 1e-6)
    const = 0.5 * math.log(2 * math.pi) if p.get("full") else 0.0
    out = []
    for i in range(len(pred)):
        xs = np.atleast_1d(pred[i]).tolist()
        ys = np.atleast_1d(target[i]).tolist()
        vs = np.atleast_1d(var[i]).tolist()
        if len(vs) == 1:
            vs = vs * len(xs)
        terms = []
        for x, y, v in zip(xs, ys, vs):
            v = max(v, eps)
            terms.append(0.5 * (math.log(v) + (x - y) ** 2 / v) + const)
        out.append(math.fsum(terms) / len(terms))
    return out


def _poisson_make(rng, p):
    shape = (40, 3) if p.get("_multi") else (40,)
    counts = rng.poisson(3.0, size=shape).astype(np.float64)
    counts.flat[::5] = 0.0
    counts.flat[1::5] = 1.0
    counts.flat[2::9] = 2.5  # non-integer targets are allowed (as in PyTorch)
    if p.get("log_input", True):
        pred = np.log(counts + 0.5) + rng.normal(size=shape) * 0.5
    else:
        pred = rng.uniform(0.5 if p.get("_grad") else 0.0, 6.0, size=shape)
        if not p.get("_grad"):
            pred.flat[::13] = 0.0  # rate 0: -y log(eps)
    return [pred, counts]


def _poisson_ref(arrays, p):
    pred, target = arrays
    eps = p.get("eps", 1e-8)

    def elem(x, y):
        v = math.exp(x) - y * x if p.get("log_input", True) else x - y * math.log(x + eps)
        if p.get("full") and y > 1:
            v += y * math.log(y) - y + 0.5 * math.log(2 * math.pi * y)
        return v

    if pred.ndim == 1:
        return [elem(x, y) for x, y in zip(pred.tolist(), target.tolist())]
    return [math.fsum(elem(x, y) for x, y in zip(r, s)) / len(r) for r, s in zip(pred.tolist(), target.tolist())]


CASES.update(
    {
        "huber": Case(
            make=_make_kinks,
            reference=_with_params(_huber_elem),
            params=[{}, {"delta": 0.5}, {"delta": 2.0}, {"delta": 1.0, "_multi": True}, {"delta": 1e-3}],
            grad_make=_make_away,
            grad_params=[{}, {"delta": 0.5}, {"delta": 2.0}, {"delta": 1.0, "_multi": True}],
        ),
        "smooth-l1": Case(
            make=_make_kinks,
            reference=_with_params(_smooth_l1_elem),
            params=[{}, {"beta": 0.5}, {"beta": 2.0}, {"beta": 0.0}, {"beta": 1.0, "_multi": True}],
            grad_make=_make_away,
            grad_params=[{}, {"beta": 0.5}, {"beta": 2.0}, {"beta": 0.0}, {"beta": 2.0, "_multi": True}],
        ),
        "log-cosh": Case(
            make=lambda rng, p: (_make_large if p.get("_large") else _make)(rng, p),
            reference=_per_sample(_log_cosh_elem),
            params=[{}, {"_multi": True}, {"_large": True}],
            atol=1e-15,
        ),
        "quantile": Case(
            make=_make_kinks,
            reference=_with_params(_pinball_elem),
            params=[
                {},
                {"quantile": 0.1},
                {"quantile": 0.9},
                {"quantile": 0.0},
                {"quantile": 1.0},
                {"quantile": 0.75, "_multi": True},
            ],
            grad_make=_make_away,
            grad_params=[{}, {"quantile": 0.1}, {"quantile": 0.9}, {"quantile": 0.3, "_multi": True}],
        ),
        "gaussian-nll": Case(
            make=_gauss_make,
            reference=_gauss_ref,
            params=[
                {},
                {"full": True},
                {"eps": 1e-3},
                {"_var_shape": "full2d"},
                {"_var_shape": "row", "full": True},
                {"_var_shape": "col"},
            ],
            grad_params=[
                {"_grad": True},
                {"_grad": True, "full": True},
                {"_grad": True, "_var_shape": "full2d"},
                {"_grad": True, "_var_shape": "row"},
                {"_grad": True, "_var_shape": "col"},
                {"eps": 10.0},  # every variance clamped: gradient -r/eps
            ],
        ),
        "poisson-nll": Case(
            make=_poisson_make,
            reference=_poisson_ref,
            params=[
                {},
                {"full": True},
                {"log_input": False},
                {"log_input": False, "full": True, "eps": 1e-4},
                {"_multi": True, "full": True},
            ],
            grad_params=[
                {},
                {"full": True},
                {"log_input": False, "_grad": True},
                {"log_input": False, "_grad": True, "full": True},
                {"_multi": True},
            ],
        ),
    }
)
