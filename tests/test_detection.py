"""Box losses (iou, giou, diou, ciou) against torchvision's published numbers and relationships.

Oracles: numbers torchvision 0.28 / torch 2.13 printed (loss-semantics.md §2, §9 #25,
copied here as literals), closed forms worked out by hand (fractions), and
relationships (box-format equivalence, symmetry, scale invariance, one-sided
finite differences at ties).

float32 vs float64: torchvision printed identical boxes as 1.1920929e-07 (float32:
1 - 1/(1+1e-7) rounds to one ulp of 1). lossctl computes in float64 and gives the
exact 1 - 1/(1+1e-7) = 9.9999999e-08, so those entries are compared to 1e-7 tightly
and to torchvision's value within 2e-8 (the float32 rounding).
"""

from __future__ import annotations

import math

import numpy as np
import pytest

from conftest import SAMPLE, assert_clean_error, finite_difference, write_csv
from lossctl.errors import InputError, ParamError
from lossctl.losses import detection as D

B1 = np.array([[0, 0, 2, 2], [0, 0, 1, 1], [0, 0, 1, 1], [0, 0, 2, 1]], dtype=np.float64)
B2 = np.array([[1, 1, 3, 3], [0, 0, 1, 1], [2, 2, 3, 3], [0, 0, 1, 2]], dtype=np.float64)
TORCH = {
    "giou": [1.0793650, 1.19e-7, 1.7777778, 0.9166666],
    "diou": [0.9682540, 1.19e-7, 1.4444444, 0.7291666],
    "ciou": [0.9682540, 1.19e-7, 1.4444444, 0.7629183],
}
KERNELS = {"iou": D.iou, "giou": D.giou, "diou": D.diou, "ciou": D.ciou}
GRADS = {"iou": D.iou_grad, "giou": D.giou_grad, "diou": D.diou_grad, "ciou": D.ciou_grad}
IDENTICAL_F64 = 1.0 - 1.0 / (1.0 + 1e-7)


def _random_boxes(rng, n, lo=-5.0, hi=5.0):
    a = rng.uniform(lo, hi, size=(n, 2))
    return np.hstack([a, a + rng.uniform(0.3, 4.0, size=(n, 2))])


# ---------------------------------------------------------------------------
# torchvision's numbers
# ---------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["giou", "diou", "ciou"])
def test_torchvision_published_values(name):
    got = KERNELS[name](B1, B2).loss
    want = np.array(TORCH[name])
    # rows 0, 2, 3: torch float32 printed to 7 digits
    np.testing.assert_allclose(got[[0, 2, 3]], want[[0, 2, 3]], rtol=2e-7, atol=1e-7)
    # row 1 (identical unit boxes): float64 exact vs torch's float32 1.19e-7
    assert got[1] == pytest.approx(IDENTICAL_F64, rel=1e-12)
    assert abs(got[1] - 1.1920929e-07) < 2e-8


def test_torchvision_values_are_the_closed_forms():
    # Row 0: I = 1, U = 7, A_c = 9, ρ² = 2, c² = 18; row 3: I = 1, U = 3, A_c = 4, ρ² = 0.5, c² = 8.
    g = D.giou(B1, B2, eps=0.0).loss
    assert g[0] == pytest.approx(1 - (1 / 7 - 2 / 9), rel=1e-15)
    assert g[2] == pytest.approx(1 - (0 - 7 / 9), rel=1e-15)  # U = 2, A_c = 9
    assert g[3] == pytest.approx(1 - (1 / 3 - 1 / 4), rel=1e-15)
    d = D.diou(B1, B2, eps=0.0).loss
    assert d[0] == pytest.approx(1 - 1 / 7 + 2 / 18, rel=1e-15)
    assert d[3] == pytest.approx(1 - 1 / 3 + 0.5 / 8, rel=1e-15)
    v = 4 / math.pi**2 * (math.atan(0.5) - math.atan(2.0)) ** 2
    iou = 1 / (3 + 1e-7)
    c = D.ciou(B1, B2).loss
    want = (1 - iou + 0.5 / (8 + 1e-7)) + v * v / (1 - iou + v + 1e-7)
    assert c[3] == pytest.approx(want, rel=1e-14)


def test_iou_is_one_minus_box_iou_diagonal():
    # torchvision.ops.box_iou has no eps: --eps 0 reproduces it exactly.
    got = D.iou(B1, B2, eps=0.0).loss
    np.testing.assert_allclose(got, [1 - 1 / 7, 0.0, 1.0, 1 - 1 / 3], rtol=0, atol=1e-15)
    # the default eps = 1e-7 shifts identical boxes to 1e-7 like the other three
    assert D.iou(B1, B2).loss[1] == pytest.approx(IDENTICAL_F64, rel=1e-12)


def test_ciou_eps_only_enters_alpha():
    base = D.ciou(B1, B2).loss
    wide = D.ciou(B1, B2, eps=0.1).loss
    assert wide[3] == pytest.approx(0.75931, abs=5e-6)  # torchvision ✔ 0.75931
    np.testing.assert_array_equal(wide[:3], base[:3])  # v = 0 there: eps has no effect
    # the DIoU part keeps eps = 1e-7 whatever eps is: identical boxes stay at 1e-7
    assert D.ciou(B1, B2, eps=0.5).loss[1] == pytest.approx(IDENTICAL_F64, rel=1e-12)
    # whereas diou's own eps does move it
    assert D.diou(B1, B2, eps=0.5).loss[1] > 0.3


def test_ciou_components_sum_to_loss():
    rng = np.random.default_rng(3)
    p, t = _random_boxes(rng, 50), _random_boxes(rng, 50)
    res = D.ciou(p, t)
    np.testing.assert_allclose(res.components["diou"] + res.components["aspect"], res.loss, rtol=1e-15)
    np.testing.assert_allclose(res.components["diou"], D.diou(p, t).loss, rtol=1e-15)
    assert (res.components["aspect"] >= 0).all() and (res.components["aspect"] > 0).any()


# ---------------------------------------------------------------------------
# degenerate boxes (§9 #25)
# ---------------------------------------------------------------------------


def test_zero_area_identical_boxes_giou_diou_one_ciou_error():
    pt = np.array([[0, 0, 1, 1], [2.0, 3.0, 2.0, 3.0]])
    assert D.giou(pt, pt).loss[1] == 1.0
    assert D.diou(pt, pt).loss[1] == 1.0
    assert D.iou(pt, pt).loss[1] == 1.0
    with pytest.raises(InputError) as e:
        D.ciou(pt, pt)  # torchvision: nan
    assert e.value.role == "pred" and e.value.rows == [1]
    assert "point box" in e.value.message
    # a point only in the target is named as the target
    with pytest.raises(InputError) as e:
        D.ciou(np.array([[0, 0, 1, 1.0]]), np.array([[0.5, 0.5, 0.5, 0.5]]))
    assert e.value.role == "target" and e.value.rows == [0]


def test_ciou_boxes_with_one_zero_side_are_finite():
    # atan(w/0) = π/2 in torch; atan(0/h) = 0
    p = np.array([[0, 0, 2, 0.0], [0, 0, 0, 2.0]])
    t = np.array([[0, 0, 2, 2.0], [0, 0, 2, 2.0]])
    res = D.ciou(p, t)
    assert np.isfinite(res.loss).all()
    v = 4 / math.pi**2 * (math.pi / 4) ** 2  # |atan(1) - π/2| = |atan(1) - 0| = π/4
    for i in range(2):
        iou = 0.0
        dio = D.diou(p[i : i + 1], t[i : i + 1]).loss[0]
        assert res.loss[i] == pytest.approx(dio + v * v / (1 - iou + v + 1e-7), rel=1e-14)
    assert np.isfinite(D.ciou_grad(p, t)).all()


def test_eps_zero_with_zero_union_is_an_error():
    pt = np.array([[0, 0, 1, 1], [1.0, 1.0, 1.0, 1.0], [0, 0, 3, 0.0]])
    for name in ("iou", "giou", "diou"):
        with pytest.raises(InputError) as e:
            KERNELS[name](pt, pt, eps=0.0)
        assert e.value.rows == [1, 2], name
        assert "0/0" in e.value.message


def test_touching_boxes_have_zero_intersection():
    # strict x2 > x1: edge contact gives I = 0, so IoU loss = 1 and GIoU = 1 (A_c = U)
    p = np.array([[0, 0, 1, 1.0]])
    t = np.array([[1, 0, 2, 1.0]])
    assert D.iou(p, t).loss[0] == 1.0
    assert D.giou(p, t, eps=0.0).loss[0] == pytest.approx(1.0, abs=1e-15)
    # and the intersection contributes no gradient there
    g = D.iou_grad(p, t)
    np.testing.assert_array_equal(g, 0.0)


# ---------------------------------------------------------------------------
# validation
# ---------------------------------------------------------------------------


def test_inverted_boxes_raise_naming_rows():
    p = np.array([[0, 0, 1, 1], [2, 0, 1, 1], [0, 0, 1, 1], [0, 3, 1, 1.0]])
    t = np.array([[0, 0, 1, 1.0]] * 4)
    for name, f in KERNELS.items():
        with pytest.raises(InputError) as e:
            f(p, t)
        assert e.value.role == "pred" and e.value.rows == [1, 3], name
        assert "expected x1 <= x2 and y1 <= y2" in e.value.message
    with pytest.raises(InputError) as e:
        D.giou_grad(t, p)
    assert e.value.role == "target" and e.value.rows == [1, 3]


@pytest.mark.parametrize("fmt", ["xywh", "cxcywh"])
def test_negative_size_raises(fmt):
    p = np.array([[0, 0, 1, 1], [0, 0, -1, 1.0], [0, 0, 1, -0.5]])
    with pytest.raises(InputError) as e:
        D.diou(p, np.abs(p), box_format=fmt)
    assert e.value.rows == [1, 2] and "negative box size" in e.value.message


def test_shape_and_value_errors():
    with pytest.raises(InputError) as e:
        D.giou(np.zeros((3, 3)), np.zeros((3, 3)))
    assert "(N, 4)" in e.value.message
    with pytest.raises(InputError):
        D.giou(np.zeros((3, 4)), np.zeros((2, 4)))
    p = np.array([[0, 0, 1, 1], [0, 0, np.inf, 1.0]])
    with pytest.raises(InputError) as e:
        D.iou(p, p)
    assert e.value.rows == [1]
    with pytest.raises(ParamError):
        D.giou(B1, B2, eps=-1.0)
    with pytest.raises(ParamError):
        D.giou(B1, B2, box_format="yxyx")


def test_empty_input():
    e = np.zeros((0, 4))
    for name, f in KERNELS.items():
        assert f(e, e).loss.shape == (0,)
        assert GRADS[name](e, e).shape == (0, 4)


# ---------------------------------------------------------------------------
# relationships
# ---------------------------------------------------------------------------


@pytest.mark.parametrize("name", list(KERNELS))
def test_box_formats_agree(name):
    rng = np.random.default_rng(5)
    p, t = _random_boxes(rng, 40), _random_boxes(rng, 40)
    base = KERNELS[name](p, t).loss

    def xywh(b):
        return np.column_stack([b[:, 0], b[:, 1], b[:, 2] - b[:, 0], b[:, 3] - b[:, 1]])

    def cxcywh(b):
        return np.column_stack([(b[:, 0] + b[:, 2]) / 2, (b[:, 1] + b[:, 3]) / 2, b[:, 2] - b[:, 0], b[:, 3] - b[:, 1]])

    np.testing.assert_allclose(KERNELS[name](xywh(p), xywh(t), box_format="xywh").loss, base, rtol=1e-12, atol=1e-14)
    np.testing.assert_allclose(
        KERNELS[name](cxcywh(p), cxcywh(t), box_format="cxcywh").loss, base, rtol=1e-12, atol=1e-14
    )
    # gradients: chain rule through the conversion (xywh: ∂/∂w = ∂/∂x2; ∂/∂x = ∂/∂x1 + ∂/∂x2)
    g = GRADS[name](p, t)
    gw = GRADS[name](xywh(p), xywh(t), box_format="xywh")
    np.testing.assert_allclose(gw[:, 2:], g[:, 2:], rtol=1e-9, atol=1e-12)
    np.testing.assert_allclose(gw[:, :2], g[:, :2] + g[:, 2:], rtol=1e-9, atol=1e-12)
    gc = GRADS[name](cxcywh(p), cxcywh(t), box_format="cxcywh")
    np.testing.assert_allclose(gc[:, 2:], 0.5 * (g[:, 2:] - g[:, :2]), rtol=1e-9, atol=1e-12)


@pytest.mark.parametrize("name", list(KERNELS))
def test_symmetric_and_scale_invariant(name):
    rng = np.random.default_rng(6)
    p, t = _random_boxes(rng, 40), _random_boxes(rng, 40)
    base = KERNELS[name](p, t, eps=0.0).loss
    np.testing.assert_allclose(KERNELS[name](t, p, eps=0.0).loss, base, rtol=1e-12, atol=1e-15)
    for k in (1e-3, 7.0, 1e6):
        if name == "ciou" and k < 1:
            # ciou's DIoU part always adds eps = 1e-7 (torchvision), so tiny boxes are not scale-invariant
            small = KERNELS[name](p * k, t * k, eps=0.0).loss
            assert np.abs(small - base).max() > 1e-4
            continue
        tol = 1e-7 if name == "ciou" else 1e-9  # ciou: the fixed 1e-7 relative to areas of order 1
        np.testing.assert_allclose(KERNELS[name](p * k, t * k, eps=0.0).loss, base, rtol=tol, atol=1e-12)
    # translation invariance
    np.testing.assert_allclose(KERNELS[name](p + 1e4, t + 1e4, eps=0.0).loss, base, rtol=1e-8, atol=1e-10)


def test_ordering_and_bounds():
    rng = np.random.default_rng(7)
    p, t = _random_boxes(rng, 200), _random_boxes(rng, 200)
    i, g, d, c = (KERNELS[n](p, t).loss for n in ("iou", "giou", "diou", "ciou"))
    assert ((i >= 0) & (i <= 1)).all()
    assert ((g >= 0) & (g < 2)).all() and ((d >= 0) & (d < 2)).all()
    assert (g >= i - 1e-15).all() and (d >= i - 1e-15).all() and (c >= d - 1e-15).all()
    disjoint = i == 1.0
    assert disjoint.any() and (g[disjoint] > 1).all() and (d[disjoint] > 1).all()


def test_far_disjoint_boxes_approach_two_and_iou_gives_no_signal():
    p = np.array([[0, 0, 1, 1.0], [0, 0, 1, 1.0]])
    t = np.array([[1e6, 1e6, 1e6 + 1, 1e6 + 1], [5, 5, 6, 6.0]])
    assert D.giou(p, t).loss[0] == pytest.approx(2.0, abs=1e-11)
    # ρ² = 2·1e12, c² = 2·(1e6 + 1)²: 1 + ρ²/c² = 2 - 2e-6 + O(1e-12)
    assert D.diou(p, t).loss[0] == pytest.approx(1 + 2e12 / (2 * (1e6 + 1) ** 2 + 1e-7), rel=1e-15)
    assert 1.999997 < D.diou(p, t).loss[0] < 2.0
    np.testing.assert_array_equal(D.iou_grad(p, t), 0.0)
    # GIoU/DIoU pull the prediction towards the target: a small step down the gradient lowers the loss
    for name in ("giou", "diou", "ciou"):
        g = GRADS[name](p[1:], t[1:])
        assert np.abs(g).sum() > 0
        before = KERNELS[name](p[1:], t[1:]).loss[0]
        after = KERNELS[name](p[1:] - 0.1 * g, t[1:]).loss[0]
        assert after < before, name


# ---------------------------------------------------------------------------
# gradients
# ---------------------------------------------------------------------------


def _fd(f, p, t, h=1e-6, side=0, **kw):
    return finite_difference(lambda z: f(z, t, **kw).loss, p, h=h, side=side)


@pytest.mark.parametrize("name", list(KERNELS))
@pytest.mark.parametrize("eps", [1e-7, 0.05])
def test_gradient_matches_central_differences(name, eps):
    rng = np.random.default_rng(11)
    t = _random_boxes(rng, 40)
    p = t + rng.normal(0, 0.8, size=t.shape)
    p[:, 2:] = np.maximum(p[:, 2:], p[:, :2] + 0.2)
    np.testing.assert_allclose(GRADS[name](p, t, eps=eps), _fd(KERNELS[name], p, t, eps=eps), rtol=1e-5, atol=1e-7)


@pytest.mark.parametrize("name", list(KERNELS))
def test_gradient_at_coincident_edges_is_mean_of_one_sided(name):
    # identical boxes and shared edges: each max/min splits the derivative in half (as torch does),
    # which equals the mean of the left and right derivatives because the pieces enter linearly
    p = np.array([[0, 0, 2, 3.0], [0, 0, 2, 1.5], [1, 0.5, 4, 2.0]])
    t = np.array([[0, 0, 2, 3.0], [0, 0, 1, 2.5], [1, 0, 3, 2.0]])
    g = GRADS[name](p, t)
    h = 1e-7
    mean = 0.5 * (_fd(KERNELS[name], p, t, h=h, side=1) + _fd(KERNELS[name], p, t, h=h, side=-1))
    np.testing.assert_allclose(g, mean, rtol=1e-5, atol=2e-6)


def test_ciou_gradient_includes_alpha_unlike_torchvision():
    # torchvision detaches α: its autograd gives ∂DIoU + α·∂v. lossctl's value is DIoU + α·v with α
    # depending on the boxes, so its gradient adds v·∂α; the two differ wherever v·∂α ≠ 0.
    p = np.array([[0.2, 0.1, 2.3, 1.1]])
    t = np.array([[0.0, 0.0, 1.2, 2.1]])
    ours = D.ciou_grad(p, t)

    def v_of(b):
        w, h = b[:, 2] - b[:, 0], b[:, 3] - b[:, 1]
        return 4 / math.pi**2 * (np.arctan(1.2 / 2.1) - np.arctan(w / h)) ** 2

    class _V:
        def __init__(self, loss):
            self.loss = loss

    dv = _fd(lambda a, b: _V(v_of(a)), p, t)
    res = D.ciou(p, t)
    v = v_of(p)[0]
    alpha = res.components["aspect"][0] / v
    torchvision_style = D.diou_grad(p, t) + alpha * dv
    assert np.abs(ours - torchvision_style).max() > 1e-3
    np.testing.assert_allclose(ours, _fd(D.ciou, p, t), rtol=1e-6, atol=1e-9)


# ---------------------------------------------------------------------------
# command line
# ---------------------------------------------------------------------------


def test_cli_sample_csv_and_parquet_agree(cli):
    csv = f"{SAMPLE}/detection_boxes.csv"
    pq = f"{SAMPLE}/detection_boxes.parquet"
    a = cli(["compute", "giou", f"{csv}:pred_*", f"{csv}:true_*", "-f", "json"])
    b = cli(["compute", "giou", f"{pq}:pred", f"{pq}:target", "--box-format", "cxcywh", "-f", "json"])
    assert a.code == 0 and b.code == 0, (a.err, b.err)
    assert a.json["count"] == 120
    assert b.json["value"] == pytest.approx(a.json["value"], rel=1e-12)
    assert 0 < a.json["value"] < 1


def test_cli_inverted_box_names_file_and_row(cli, tmp_path):
    p = np.array([[0, 0, 1, 1], [0, 0, 1, 1], [3, 0, 1, 1.0]])
    path = write_csv(tmp_path / "boxes.csv", {"p": p, "t": np.array([[0, 0, 1, 1.0]] * 3)})
    res = cli(["compute", "iou", f"{path}:p_*", f"{path}:t_*"])
    assert_clean_error(res, 1, "boxes.csv", "row 2", "x1 <= x2")


def test_cli_ciou_point_box_is_an_error(cli, tmp_path):
    p = np.array([[0, 0, 1, 1], [1, 1, 1, 1.0]])
    path = write_csv(tmp_path / "pts.csv", {"p": p, "t": p})
    res = cli(["compute", "ciou", f"{path}:p_*", f"{path}:t_*"])
    assert_clean_error(res, 1, "row 1", "point box")
    assert cli(["compute", "giou", f"{path}:p_*", f"{path}:t_*", "-b"]).code == 0


def test_cli_rejects_negative_eps_and_bad_format(cli):
    csv = f"{SAMPLE}/detection_boxes.csv"
    res = cli(["compute", "giou", f"{csv}:pred_*", f"{csv}:true_*", "--eps", "-1"])
    assert res.code == 2
    res = cli(["compute", "giou", f"{csv}:pred_*", f"{csv}:true_*", "--box-format", "yxyx"])
    assert res.code == 2
