"""Reference cases: box losses (iou, giou, diou, ciou).

The reference is torchvision's formulas evaluated one pair at a time in plain
Python float64 (math.atan, no NumPy vectorisation), with the box-format
conversion done separately here.
"""

from __future__ import annotations

import math

import numpy as np

from cases.common import Case


def _xyxy_boxes(rng, n, points):
    """Target boxes and predictions covering: overlapping, nested, disjoint, touching, identical, zero-area."""
    t0 = rng.uniform(-5, 5, size=(n, 2))
    t = np.hstack([t0, t0 + rng.uniform(0.2, 4, size=(n, 2))])
    p = t + rng.normal(0, 0.6, size=(n, 4))
    p[:, 2:] = np.maximum(p[:, 2:], p[:, :2] + 0.05)
    p[0] = t[0]  # identical
    p[1] = t[1] + np.array([10, 10, 10, 10])  # disjoint
    p[2] = [t[2, 0] + 0.1, t[2, 1] + 0.1, t[2, 2] - 0.05, t[2, 3] - 0.05]  # nested
    p[3] = [t[3, 2], t[3, 1], t[3, 2] + 1, t[3, 3]]  # touching edge: zero intersection
    p[4] = [t[4, 0], t[4, 1], t[4, 0] + 2, t[4, 1]]  # zero height (h = 0)
    p[5] = [t[5, 0], t[5, 1], t[5, 0], t[5, 1] + 1.5]  # zero width
    p[6] = t[6] * 1000.0  # large coordinates
    if points:
        t[7] = [2, 3, 2, 3]
        p[7] = [2, 3, 2, 3]  # identical point boxes (not for ciou)
    return p, t


def _encode(b, fmt):
    if fmt == "xyxy":
        return b.copy()
    w, h = b[:, 2] - b[:, 0], b[:, 3] - b[:, 1]
    if fmt == "xywh":
        return np.stack([b[:, 0], b[:, 1], w, h], axis=1)
    return np.stack([(b[:, 0] + b[:, 2]) / 2, (b[:, 1] + b[:, 3]) / 2, w, h], axis=1)


def _make(points: bool):
    def make(rng, p):
        # identical point boxes: not for ciou (an error), nor with eps = 0 (0/0, an error)
        pred, target = _xyxy_boxes(rng, 24, points and p.get("eps", 1e-7) > 0)
        fmt = p.get("box_format", "xyxy")
        return [_encode(pred, fmt), _encode(target, fmt)]

    return make


def _grad_make(rng, p):
    """Generic boxes (no coincident edges, no exact zero intersections); some disjoint, some nested."""
    n = 30
    t0 = rng.uniform(-5, 5, size=(n, 2))
    t = np.hstack([t0, t0 + rng.uniform(0.5, 4, size=(n, 2))])
    p_ = t + rng.normal(0, 0.7, size=(n, 4))
    p_[:, 2:] = np.maximum(p_[:, 2:], p_[:, :2] + 0.3)
    p_[0] = t[0] + np.array([7.3, 5.1, 8.2, 6.9])  # disjoint
    p_[1] = [t[1, 0] + 0.11, t[1, 1] + 0.13, t[1, 2] - 0.07, t[1, 3] - 0.09]  # inside
    p_[2] = [t[2, 0] - 0.21, t[2, 1] - 0.17, t[2, 2] + 0.23, t[2, 3] + 0.31]  # encloses
    fmt = p.get("box_format", "xyxy")
    return [_encode(p_, fmt), _encode(t, fmt)]


def _decode(row, fmt):
    a, b, c, d = (float(v) for v in row)
    if fmt == "xyxy":
        return a, b, c, d
    if fmt == "xywh":
        return a, b, a + c, b + d
    return a - c / 2, b - d / 2, a + c / 2, b + d / 2


def _parts(pb, tb, eps):
    x1, y1, x2, y2 = pb
    a1, b1, a2, b2 = tb
    xi1, yi1, xi2, yi2 = max(x1, a1), max(y1, b1), min(x2, a2), min(y2, b2)
    inter = (xi2 - xi1) * (yi2 - yi1) if (xi2 > xi1 and yi2 > yi1) else 0.0
    union = (x2 - x1) * (y2 - y1) + (a2 - a1) * (b2 - b1) - inter
    iou = inter / (union + eps)
    xc1, yc1, xc2, yc2 = min(x1, a1), min(y1, b1), max(x2, a2), max(y2, b2)
    return iou, union, xc1, yc1, xc2, yc2


def _one(kind, pb, tb, eps):
    if kind == "iou":
        return 1.0 - _parts(pb, tb, eps)[0]
    if kind == "giou":
        iou, union, xc1, yc1, xc2, yc2 = _parts(pb, tb, eps)
        area_c = (xc2 - xc1) * (yc2 - yc1)
        return 1.0 - (iou - (area_c - union) / (area_c + eps))
    if kind == "diou":
        iou, union, xc1, yc1, xc2, yc2 = _parts(pb, tb, eps)
        diag = (xc2 - xc1) ** 2 + (yc2 - yc1) ** 2 + eps
        x1, y1, x2, y2 = pb
        a1, b1, a2, b2 = tb
        rho = ((x1 + x2) / 2 - (a1 + a2) / 2) ** 2 + ((y1 + y2) / 2 - (b1 + b2) / 2) ** 2
        return 1.0 - iou + rho / diag
    # ciou: the DIoU part (and the IoU in alpha) with torchvision's fixed 1e-7
    d = _one("diou", pb, tb, 1e-7)
    iou = _parts(pb, tb, 1e-7)[0]
    w, h = pb[2] - pb[0], pb[3] - pb[1]
    wg, hg = tb[2] - tb[0], tb[3] - tb[1]
    at = lambda a, b: math.atan(a / b) if b != 0 else math.pi / 2  # noqa: E731  (a > 0 when b = 0)
    v = 4 / math.pi**2 * (at(wg, hg) - at(w, h)) ** 2
    alpha = v / (1 - iou + v + eps) if v != 0 else 0.0
    return d + alpha * v


def _ref(kind):
    def ref(arrays, p):
        pred, target = arrays
        fmt = p.get("box_format", "xyxy")
        eps = p.get("eps", 1e-7)
        return [_one(kind, _decode(a, fmt), _decode(b, fmt), eps) for a, b in zip(pred, target)]

    return ref


_PARAMS = [{}, {"eps": 1e-3}, {"box_format": "xywh"}, {"box_format": "cxcywh", "eps": 0.05}, {"eps": 0.0}]
_GRAD_PARAMS = [{}, {"box_format": "xywh", "eps": 1e-3}, {"box_format": "cxcywh"}]

CASES = {
    kind: Case(
        make=_make(points=kind != "ciou"),
        reference=_ref(kind),
        params=_PARAMS if kind != "ciou" else [*_PARAMS, {"eps": 0.1}],
        # format conversions round at 1e-16 of coordinates up to ~5e3
        rtol=1e-9,
        atol=1e-11,
        grad_make=_grad_make,
        grad_params=_GRAD_PARAMS,
    )
    for kind in ("iou", "giou", "diou", "ciou")
}
