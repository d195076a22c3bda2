"""Bounding-box regression losses: IoU, GIoU, DIoU and CIoU.

Boxes are ``[N, 4]`` and compared elementwise (row n of the prediction with
row n of the target, not all pairs). ``box_format`` says what the four
columns hold: ``xyxy`` (x1, y1, x2, y2), ``xywh`` (x1, y1, w, h) or
``cxcywh`` (centre x, centre y, w, h); boxes are converted to ``xyxy`` first.
Computed in float64.

References:
    torchvision 0.28 ``ops.generalized_box_iou_loss``, ``distance_box_iou_loss``,
    ``complete_box_iou_loss`` (formulas, ``eps`` placement, the strict
    ``x2 > x1 and y2 > y1`` intersection test) and ``ops.box_iou`` (IoU).

Deviations from torchvision (documented in the registry entries):
  * inverted boxes (x1 > x2 or y1 > y2; negative w/h) raise ``InputError``
    instead of giving a silent number;
  * ``iou`` uses ``I / (U + eps)`` like the other three (``box_iou`` has no
    eps; ``eps=0`` reproduces it exactly, and a 0/0 row then raises);
  * ``ciou`` rejects point boxes (zero width *and* zero height), where
    torchvision returns NaN from ``atan(0/0)``; the aspect term is
    ``atan2(w, h)``, equal to ``atan(w/h)`` for every other box;
  * ``ciou``'s gradient differentiates α too (torchvision detaches it), so
    the gradient is that of the value lossctl reports.
"""

from __future__ import annotations

import math

from lossctl.losses._lazy import lazy

from lossctl.errors import InputError, opt
from lossctl.losses import Result
from lossctl.losses._common import check_finite, first_rows
from lossctl.losses.spec import loss, Param, Role

np = lazy(globals())  # NumPy is imported on first use (lossctl/losses/_lazy.py)

# Declarations shared by this module's losses ----------------------------------------

BOX_EPS = Param(
    "eps",
    "float",
    1e-7,
    "Added to the denominators (union, enclosing area, squared diagonal), as torchvision does.",
    low=0.0,
    high_open=True,
)

CIOU_EPS = Param(
    "eps",
    "float",
    1e-7,
    "Added to the denominator of α = v / (1 - IoU + v + eps) only: as in torchvision, the DIoU part always uses 1e-7.",
    low=0.0,
    high_open=True,
)

BOX_FORMAT = Param(
    "box-format",
    "choice",
    "xyxy",
    "What the four box columns hold: xyxy (x1, y1, x2, y2), xywh (x1, y1, w, h) or "
    "cxcywh (centre x, centre y, w, h). Boxes are converted to xyxy first.",
    choices=("xyxy", "xywh", "cxcywh"),
)

PRED_BOXES = Role(
    "pred",
    "(N, 4)",
    "Predicted boxes, one per row (four columns, e.g. CSV columns x1,y1,x2,y2 or a list column of length 4).",
    ndim=(2,),
)

TARGET_BOXES = Role(
    "target",
    "(N, 4)",
    "Ground-truth boxes, paired with the prediction row by row (not all pairs).",
    ndim=(2,),
)

_BOX_COMMON_PROPS = (
    "Scale- and translation-invariant (up to eps): moving or scaling both boxes together leaves the value unchanged; "
    "for ciou the DIoU part always adds 1e-7, so very small boxes (areas near 1e-7) are not.",
    "Symmetric in the two boxes, except that the gradient is taken w.r.t. the predicted box.",
    "Inverted boxes (x1 > x2 or y1 > y2; negative w/h) are an error naming the row "
    "(torchvision does not check them and returns a number).",
    "eps keeps identical boxes at ~1e-7 rather than 0 (torchvision float32 prints 1.19e-7; float64 gives 1.0e-7).",
)

_BOX_GRAD_TIES = (
    "Piecewise: the intersection and enclosing-box edges switch between the two boxes where edges cross; "
    "at coincident edges each max/min splits the derivative in half (PyTorch's convention), "
    "and the intersection contributes nothing unless it has positive width and height."
)

_BOX_EXAMPLE = ("sample_data/detection_boxes.csv:pred_*", "sample_data/detection_boxes.csv:true_*")

# torchvision's _diou_iou_loss default: complete_box_iou_loss never passes its eps to it.
DIOU_EPS_IN_CIOU = 1e-7
_V_SCALE = 4.0 / math.pi**2
FORMATS = ("xyxy", "xywh", "cxcywh")


# ---------------------------------------------------------------------------
# input handling
# ---------------------------------------------------------------------------


def _check_eps(eps: float) -> float:
    return float(eps)  # (declared: [0, inf))


def _to_xyxy(boxes: np.ndarray, role: str, box_format: str) -> np.ndarray:
    """Validated ``[N, 4]`` float64 boxes in xyxy form."""
    if box_format not in FORMATS:
        raise ValueError(f"box_format {box_format!r} is not one of the declared choices {FORMATS}")
    b = np.asarray(boxes)
    if b.ndim != 2 or b.shape[1] != 4:
        shape = "(N, " + ", ".join(str(s) for s in b.shape[1:]) + ")" if b.ndim > 1 else "(N,)"
        raise InputError(
            role,
            f"boxes have shape {shape}, not (N, 4)",
            [],
            expected=f"four numbers per row ({box_format}), e.g. columns x1,y1,x2,y2 or a list column of length 4",
        )
    b = np.asarray(b, dtype=np.float64)
    check_finite(b, role, "box coordinates")
    if box_format == "xyxy":
        bad = (b[:, 0] > b[:, 2]) | (b[:, 1] > b[:, 3])
        if bad.any():
            rows = first_rows(bad)
            r = b[rows[0]]
            raise InputError(
                role,
                f"inverted box ({_g(r[0])}, {_g(r[1])}, {_g(r[2])}, {_g(r[3])}): expected x1 <= x2 and y1 <= y2",
                rows,
                expected=f"boxes as x1, y1, x2, y2 with x1 <= x2 and y1 <= y2 (or set {opt('box-format')} xywh|cxcywh)",
            )
        return b
    bad = (b[:, 2] < 0) | (b[:, 3] < 0)
    if bad.any():
        rows = first_rows(bad)
        r = b[rows[0]]
        raise InputError(
            role,
            f"negative box size (w = {_g(r[2])}, h = {_g(r[3])})",
            rows,
            expected=f"boxes in {box_format} format with width >= 0 and height >= 0",
        )
    out = np.empty_like(b)
    if box_format == "xywh":
        out[:, 0] = b[:, 0]
        out[:, 1] = b[:, 1]
        out[:, 2] = b[:, 0] + b[:, 2]
        out[:, 3] = b[:, 1] + b[:, 3]
    else:  # cxcywh
        out[:, 0] = b[:, 0] - 0.5 * b[:, 2]
        out[:, 1] = b[:, 1] - 0.5 * b[:, 3]
        out[:, 2] = b[:, 0] + 0.5 * b[:, 2]
        out[:, 3] = b[:, 1] + 0.5 * b[:, 3]
    return out


def _pair(pred, target, box_format):
    p = _to_xyxy(pred, "pred", box_format)
    t = _to_xyxy(target, "target", box_format)
    if len(p) != len(t):
        raise InputError(
            "target",
            f"{len(t)} target boxes for {len(p)} predicted boxes",
            [],
            expected="one target box per predicted box",
        )
    return p, t


def _grad_to_format(g: np.ndarray, box_format: str) -> np.ndarray:
    """Chain rule from d/d(x1, y1, x2, y2) to d/d(the input's four columns)."""
    if box_format == "xyxy":
        return g
    out = np.empty_like(g)
    if box_format == "xywh":
        out[:, 0] = g[:, 0] + g[:, 2]
        out[:, 1] = g[:, 1] + g[:, 3]
        out[:, 2] = g[:, 2]
        out[:, 3] = g[:, 3]
    else:  # cxcywh
        out[:, 0] = g[:, 0] + g[:, 2]
        out[:, 1] = g[:, 1] + g[:, 3]
        out[:, 2] = 0.5 * (g[:, 2] - g[:, 0])
        out[:, 3] = 0.5 * (g[:, 3] - g[:, 1])
    return out


def _cols(g: "_Geom", extras: bool) -> dict:
    """Per-sample extra output (``--per-sample``): the pair's IoU."""
    return {"iou": g.iou} if extras else {}


def _g(v) -> str:
    return f"{float(v):.9g}"


# ---------------------------------------------------------------------------
# shared geometry (values and derivatives w.r.t. the predicted xyxy box)
# ---------------------------------------------------------------------------


def _step(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """[a > b] with ties counted as 1/2 (torch's max/min split a tie's gradient evenly)."""
    return np.where(a > b, 1.0, np.where(a == b, 0.5, 0.0))


class _Geom:
    """Intersection, union, IoU and enclosing box of each pair, with their gradients."""

    def __init__(self, p: np.ndarray, t: np.ndarray, eps: float, grad: bool):
        x1, y1, x2, y2 = p.T
        a1, b1, a2, b2 = t.T
        self.w, self.h = x2 - x1, y2 - y1
        self.wg, self.hg = a2 - a1, b2 - b1
        iw = np.minimum(x2, a2) - np.maximum(x1, a1)
        ih = np.minimum(y2, b2) - np.maximum(y1, b1)
        overlap = (iw > 0) & (ih > 0)  # torchvision's strict test
        self.inter = np.where(overlap, iw * ih, 0.0)
        self.union = self.w * self.h + self.wg * self.hg - self.inter
        den = self.union + eps
        zero = den == 0
        if zero.any():  # only with eps = 0 and two zero-area boxes
            raise InputError(
                "pred",
                "both boxes have zero area, so IoU = 0/0 with eps = 0",
                first_rows(zero),
                expected="eps > 0 (default 1e-7) or boxes with positive area",
            )
        self.den = den
        self.iou = self.inter / den
        self.cw = np.maximum(x2, a2) - np.minimum(x1, a1)
        self.ch = np.maximum(y2, b2) - np.minimum(y1, b1)
        # centre offset (pred - target)
        self.dx = 0.5 * ((x1 + x2) - (a1 + a2))
        self.dy = 0.5 * ((y1 + y2) - (b1 + b2))
        if not grad:
            return
        ov = overlap.astype(np.float64)
        ihm, iwm = ih * ov, iw * ov
        # d inter / d (x1, y1, x2, y2)
        d_inter = np.stack(
            [-ihm * _step(x1, a1), -iwm * _step(y1, b1), ihm * _step(a2, x2), iwm * _step(b2, y2)],
            axis=1,
        )
        d_area = np.stack([-self.h, -self.w, self.h, self.w], axis=1)
        self.d_union = d_area - d_inter
        self.d_iou = d_inter / den[:, None] - (self.inter / den**2)[:, None] * self.d_union
        # d cw / d(x1, x2), d ch / d(y1, y2)
        self.d_cw = np.stack([-_step(a1, x1), _step(x2, a2)], axis=1)
        self.d_ch = np.stack([-_step(b1, y1), _step(y2, b2)], axis=1)

    def d_enclosing_area(self) -> np.ndarray:
        g = np.zeros((len(self.cw), 4))
        g[:, 0] = self.ch * self.d_cw[:, 0]
        g[:, 2] = self.ch * self.d_cw[:, 1]
        g[:, 1] = self.cw * self.d_ch[:, 0]
        g[:, 3] = self.cw * self.d_ch[:, 1]
        return g

    def d_diag2(self) -> np.ndarray:
        g = np.zeros((len(self.cw), 4))
        g[:, 0] = 2 * self.cw * self.d_cw[:, 0]
        g[:, 2] = 2 * self.cw * self.d_cw[:, 1]
        g[:, 1] = 2 * self.ch * self.d_ch[:, 0]
        g[:, 3] = 2 * self.ch * self.d_ch[:, 1]
        return g

    def d_rho2(self) -> np.ndarray:
        return np.stack([self.dx, self.dy, self.dx, self.dy], axis=1)


def _diou_terms(g: _Geom, eps: float, grad: bool):
    c2 = g.cw**2 + g.ch**2 + eps
    rho2 = g.dx**2 + g.dy**2
    loss = 1.0 - g.iou + rho2 / c2
    if not grad:
        return loss, None
    d = -g.d_iou + g.d_rho2() / c2[:, None] - (rho2 / c2**2)[:, None] * g.d_diag2()
    return loss, d


def _aspect(w, h, wg, hg, grad: bool):
    """v = 4/π² (atan(wg/hg) - atan(w/h))², with atan2 so h = 0 gives π/2 (as atan(w/0) does)."""
    diff = np.arctan2(wg, hg) - np.arctan2(w, h)
    v = _V_SCALE * diff**2
    if not grad:
        return v, None
    r2 = w**2 + h**2
    dv_dtheta = -2.0 * _V_SCALE * diff
    # θ = atan2(w, h): dθ/dw = h / (w²+h²), dθ/dh = -w / (w²+h²); w = x2-x1, h = y2-y1
    dtw, dth = h / r2, -w / r2
    dv = np.stack([-dtw, -dth, dtw, dth], axis=1) * dv_dtheta[:, None]
    return v, dv


def _check_points(p: np.ndarray, t: np.ndarray) -> None:
    for role, b in (("pred", p), ("target", t)):
        point = (b[:, 2] == b[:, 0]) & (b[:, 3] == b[:, 1])
        if point.any():
            raise InputError(
                role,
                "point box (zero width and zero height): the CIoU aspect term atan(w/h) is 0/0 "
                "(torchvision returns NaN)",
                first_rows(point),
                expected="boxes with positive width or height for ciou (giou and diou accept point boxes)",
            )


# ---------------------------------------------------------------------------
# kernels
# ---------------------------------------------------------------------------


@loss(
    name="iou",
    aliases=(),
    family="detection",
    summary="IoU loss 1 - IoU between predicted and ground-truth boxes, pair by pair.",
    inputs=(PRED_BOXES, TARGET_BOXES),
    params=(BOX_EPS, BOX_FORMAT),
    kernel_options=("extras",),
    reference=f"1 - torchvision.ops.box_iou(boxes1, boxes2).diag() (box_iou has no eps: {opt('eps')} 0 reproduces it)",
    formula=(
        "I = max(0, min(x2,x2g) - max(x1,x1g)) · max(0, min(y2,y2g) - max(y1,y1g))\n"
        "U = area(pred) + area(target) - I\n"
        "l = 1 - I / (U + eps)"
    ),
    headline="the mean over box pairs",
    gradient="∂l/∂b = -[∂I/(U+eps) - I·∂U/(U+eps)²], ∂U = ∂area - ∂I. " + _BOX_GRAD_TIES,
    properties=(
        "Bounded in [0, 1]; 1 for every non-overlapping pair, so it gives no gradient when boxes do not overlap "
        "(the motivation for GIoU/DIoU/CIoU).",
        *_BOX_COMMON_PROPS,
        f"With {opt('eps')} 0 two zero-area boxes give 0/0, which is an error naming the row.",
    ),
    used_for="Object detection: bounding-box regression and evaluation.",
    activation="none (box coordinates; decode the network's offsets into boxes first)",
    paper="Yu et al. 2016, UnitBox (IoU loss).",
    example=_BOX_EXAMPLE,
)
def iou(
    pred: np.ndarray, target: np.ndarray, *, eps: float = 1e-7, box_format: str = "xyxy", extras: bool = False
) -> Result:
    """``1 - I / (U + eps)`` per pair (the diagonal of ``torchvision.ops.box_iou`` when eps = 0)."""
    eps = _check_eps(eps)
    g = _Geom(*_pair(pred, target, box_format), eps, grad=False)
    return Result(loss=1.0 - g.iou, columns=_cols(g, extras))


def iou_grad(pred: np.ndarray, target: np.ndarray, *, eps: float = 1e-7, box_format: str = "xyxy") -> np.ndarray:
    eps = _check_eps(eps)
    g = _Geom(*_pair(pred, target, box_format), eps, grad=True)
    return _grad_to_format(-g.d_iou, box_format)


@loss(
    name="giou",
    aliases=(),
    family="detection",
    summary="Generalized IoU loss: 1 - IoU plus the share of the enclosing box not covered by the union.",
    inputs=(PRED_BOXES, TARGET_BOXES),
    params=(BOX_EPS, BOX_FORMAT),
    kernel_options=("extras",),
    reference="torchvision.ops.generalized_box_iou_loss(boxes1, boxes2, reduction='none', eps)",
    formula=(
        "IoU = I / (U + eps); A_c = area of the smallest box enclosing both\n"
        "l = 1 - [IoU - (A_c - U) / (A_c + eps)]"
    ),
    headline="the mean over box pairs",
    gradient=(
        "∂l/∂b = -∂IoU + [∂A_c·(U + eps) - ∂U·(A_c + eps)] / (A_c + eps)², "
        "∂IoU = ∂I/(U+eps) - I·∂U/(U+eps)². " + _BOX_GRAD_TIES
    ),
    properties=(
        "Bounded in [0, 2]; unlike IoU it still decreases as disjoint boxes approach each other.",
        *_BOX_COMMON_PROPS,
        "Two identical zero-area boxes give 1.0, as in torchvision.",
    ),
    used_for="Object detection: bounding-box regression (DETR-style recipe: focal + L1 + GIoU).",
    activation="none (box coordinates; decode the network's offsets into boxes first)",
    paper="Rezatofighi et al. 2019, Generalized Intersection over Union.",
    example=_BOX_EXAMPLE,
)
def giou(
    pred: np.ndarray, target: np.ndarray, *, eps: float = 1e-7, box_format: str = "xyxy", extras: bool = False
) -> Result:
    """``1 - [IoU - (A_c - U) / (A_c + eps)]`` (``torchvision.ops.generalized_box_iou_loss``)."""
    eps = _check_eps(eps)
    g = _Geom(*_pair(pred, target, box_format), eps, grad=False)
    area_c = g.cw * g.ch
    return Result(loss=1.0 - g.iou + (area_c - g.union) / (area_c + eps), columns=_cols(g, extras))


def giou_grad(pred: np.ndarray, target: np.ndarray, *, eps: float = 1e-7, box_format: str = "xyxy") -> np.ndarray:
    eps = _check_eps(eps)
    g = _Geom(*_pair(pred, target, box_format), eps, grad=True)
    area_c = g.cw * g.ch
    dc = area_c + eps
    # d/dθ (A_c - U)/(A_c + eps) = (dA_c (U + eps) - dU (A_c + eps)) / (A_c + eps)²
    d_pen = (g.d_enclosing_area() * (g.union + eps)[:, None] - g.d_union * dc[:, None]) / (dc**2)[:, None]
    return _grad_to_format(-g.d_iou + d_pen, box_format)


@loss(
    name="diou",
    aliases=(),
    family="detection",
    summary="Distance IoU loss: 1 - IoU plus the squared centre distance over the enclosing box's squared diagonal.",
    inputs=(PRED_BOXES, TARGET_BOXES),
    params=(BOX_EPS, BOX_FORMAT),
    kernel_options=("extras",),
    reference="torchvision.ops.distance_box_iou_loss(boxes1, boxes2, reduction='none', eps)",
    formula=(
        "IoU = I / (U + eps); ρ² = squared distance between the box centres\n"
        "c² = squared diagonal of the smallest enclosing box\n"
        "l = 1 - IoU + ρ² / (c² + eps)"
    ),
    headline="the mean over box pairs",
    gradient=(
        "∂l/∂b = -∂IoU + ∂ρ²/(c² + eps) - ρ²·∂c²/(c² + eps)², with ∂ρ²/∂x1 = ∂ρ²/∂x2 = Δcx, "
        "∂c²/∂x = 2·c_w·∂c_w. " + _BOX_GRAD_TIES
    ),
    properties=(
        "Bounded in [0, 2); the centre-distance term pulls disjoint boxes together directly.",
        *_BOX_COMMON_PROPS,
        "Two identical zero-area boxes give 1.0, as in torchvision.",
    ),
    used_for="Object detection: bounding-box regression (faster convergence than GIoU).",
    activation="none (box coordinates; decode the network's offsets into boxes first)",
    paper="Zheng et al. 2020, Distance-IoU Loss.",
    example=_BOX_EXAMPLE,
)
def diou(
    pred: np.ndarray, target: np.ndarray, *, eps: float = 1e-7, box_format: str = "xyxy", extras: bool = False
) -> Result:
    """``1 - IoU + ρ²(centres) / (c² + eps)`` (``torchvision.ops.distance_box_iou_loss``)."""
    eps = _check_eps(eps)
    g = _Geom(*_pair(pred, target, box_format), eps, grad=False)
    loss, _ = _diou_terms(g, eps, grad=False)
    return Result(loss=loss, columns=_cols(g, extras))


def diou_grad(pred: np.ndarray, target: np.ndarray, *, eps: float = 1e-7, box_format: str = "xyxy") -> np.ndarray:
    eps = _check_eps(eps)
    g = _Geom(*_pair(pred, target, box_format), eps, grad=True)
    _, d = _diou_terms(g, eps, grad=True)
    return _grad_to_format(d, box_format)


def _ciou(pred, target, eps, box_format, grad, extras=False):
    eps = _check_eps(eps)
    p, t = _pair(pred, target, box_format)
    _check_points(p, t)
    # torchvision: the DIoU part (and the IoU inside α) always use eps = 1e-7.
    g = _Geom(p, t, DIOU_EPS_IN_CIOU, grad=grad)
    d_loss, d_d = _diou_terms(g, DIOU_EPS_IN_CIOU, grad=grad)
    v, dv = _aspect(g.w, g.h, g.wg, g.hg, grad=grad)
    s = 1.0 - g.iou + v + eps
    pos = v > 0  # α·v = 0 whenever v = 0 (also guards 0/0 when IoU rounds to 1 and eps = 0)
    alpha = np.zeros_like(v)
    np.divide(v, s, out=alpha, where=pos)
    loss = d_loss + alpha * v
    if not grad:
        return Result(loss=loss, columns=_cols(g, extras), components={"diou": d_loss, "aspect": alpha * v})
    # α·v = v²/s with s = 1 - IoU + v + eps: d(v²/s) = α(2 - α) dv + α² dIoU
    d = d_d + (alpha * (2.0 - alpha))[:, None] * dv + (alpha**2)[:, None] * g.d_iou
    return _grad_to_format(d, box_format)


@loss(
    name="ciou",
    aliases=(),
    family="detection",
    summary="Complete IoU loss: DIoU plus an aspect-ratio consistency term α·v.",
    inputs=(PRED_BOXES, TARGET_BOXES),
    params=(CIOU_EPS, BOX_FORMAT),
    kernel_options=("extras",),
    reference="torchvision.ops.complete_box_iou_loss(boxes1, boxes2, reduction='none', eps)",
    formula=(
        "l = DIoU_loss + α·v  (DIoU part and its IoU always with eps = 1e-7, as torchvision)\n"
        "v = 4/π² · (atan(w_g/h_g) - atan(w/h))²   (atan2(w, h), so h = 0 gives π/2)\n"
        "α = v / (1 - IoU + v + eps)   (α = 0 when v = 0)"
    ),
    headline="the mean over box pairs",
    gradient=(
        "Exact gradient of the reported value, α included: ∂l = ∂DIoU_loss + α(2 - α)·∂v + α²·∂IoU, "
        "with ∂atan2(w,h)/∂w = h/(w²+h²), ∂/∂h = -w/(w²+h²). torchvision computes α under no_grad, so "
        "autograd there gives ∂DIoU_loss + α·∂v instead (a surrogate that differs from the derivative of the "
        "value by v·∂α). " + _BOX_GRAD_TIES
    ),
    properties=(
        "Non-negative; adds an aspect-ratio penalty to DIoU that is 0 when the boxes have the same w/h.",
        *_BOX_COMMON_PROPS,
        "torchvision's complete_box_iou_loss does not pass eps to its DIoU part, which always uses 1e-7; "
        "eps only enters α. lossctl reproduces this (eps = 0.1 changes only pairs with v > 0).",
        "Point boxes (zero width and zero height) are an error naming the row: atan(0/0) is undefined and has "
        "no limit, and torchvision returns NaN there. Boxes with only one zero side are accepted (atan(w/0) = π/2).",
        "Report components: diou (the DIoU loss) and aspect (α·v), which sum to the loss.",
    ),
    used_for="Object detection: bounding-box regression (YOLOv4/v5-style recipes).",
    activation="none (box coordinates; decode the network's offsets into boxes first)",
    paper="Zheng et al. 2020, Distance-IoU Loss (CIoU); Zheng et al. 2021, Enhancing Geometric Factors.",
    example=(
        "sample_data/detection_boxes.parquet:pred",
        "sample_data/detection_boxes.parquet:target",
        f"{opt('box-format')}",
        "cxcywh",
    ),
)
def ciou(
    pred: np.ndarray, target: np.ndarray, *, eps: float = 1e-7, box_format: str = "xyxy", extras: bool = False
) -> Result:
    """``DIoU loss + α·v`` (``torchvision.ops.complete_box_iou_loss``).

    As in torchvision, ``eps`` only enters ``α = v / (1 - IoU + v + eps)``; the
    DIoU part and the IoU in α use 1e-7. Point boxes raise ``InputError``.
    Components: ``diou`` (the DIoU loss) and ``aspect`` (α·v), summing to the loss.
    """
    return _ciou(pred, target, eps, box_format, grad=False, extras=extras)


def ciou_grad(pred: np.ndarray, target: np.ndarray, *, eps: float = 1e-7, box_format: str = "xyxy") -> np.ndarray:
    """Exact gradient of the reported value, α included (torchvision detaches α)."""
    return _ciou(pred, target, eps, box_format, grad=True)
