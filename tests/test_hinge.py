"""hinge: the multi-class margin loss of ``torch.nn.functional.multi_margin_loss``.

What PyTorch computes (ATen's LossMultiMargin.cpp, read for this test; and the reference table of
torch 2.13): per row ``(1/C) Σ_{i≠y} w[y] · max(0, margin - x_y + x_i)^p`` where a term counts only
when ``z = margin - x_y + x_i > 0`` (strictly: at z = 0 neither the value nor the gradient gets
anything), the weight is the *target* class's weight, and the division is by C (not C - 1).
``reduction='mean'`` is ``Σ_n l_n / N``: the plain mean over rows even when ``weight`` is given,
unlike cross_entropy's weighted mean ``Σ l_n / Σ w[y_n]``. The backward pass gives
``w[y] · (1 or 2z) / C`` to each active wrong class and minus their sum to the target.

Oracles here: closed forms worked by hand (and PyTorch's documentation example), a brute force in
``decimal`` written below (no NumPy), central finite differences, and PyTorch itself when it is
installed.
"""

from __future__ import annotations

import json
import sys
from decimal import Decimal, getcontext

import numpy as np
import pytest

from conftest import assert_clean_error, run_cli, write_csv, write_parquet
from lossctl.errors import InputError, ParamError
from lossctl.losses.hinge import hinge, hinge_grad

getcontext().prec = 50


# ---------------------------------------------------------------------------
# the independent oracle: decimal arithmetic, one class at a time
# ---------------------------------------------------------------------------


def _terms(row, t, margin):
    """(i, z_i) for every wrong class, in exact decimal arithmetic of the float64 inputs."""
    d = [Decimal(float(v)) for v in row]
    m = Decimal(float(margin))
    return [(i, m - d[t] + d[i]) for i in range(len(d)) if i != t]


def brute_loss(x, y, p=1, margin=1.0, weight=None) -> list[float]:
    out = []
    for row, t in zip(np.asarray(x, dtype=np.float64).tolist(), [int(v) for v in y]):
        w = Decimal(1) if weight is None else Decimal(float(weight[t]))
        s = sum((z ** int(p) for _, z in _terms(row, t, margin) if z > 0), Decimal(0))
        out.append(float(w * s / len(row)))
    return out


def brute_grad(x, y, p=1, margin=1.0, weight=None) -> np.ndarray:
    x = np.asarray(x, dtype=np.float64)
    g = np.zeros(x.shape)
    for n, (row, t) in enumerate(zip(x.tolist(), [int(v) for v in y])):
        w = Decimal(1) if weight is None else Decimal(float(weight[t]))
        c = len(row)
        target = Decimal(0)
        for i, z in _terms(row, t, margin):
            gi = w * (Decimal(1) if int(p) == 1 else 2 * z) / c if z > 0 else Decimal(0)
            g[n, i] = float(gi)
            target -= gi
        g[n, t] = float(target)
    return g


def assert_close_to_brute_force(loss, grad, x, y, p=1, margin=1.0, weight=None):
    """Values and gradient equal to the exact ones up to float64's rounding: z = margin - x_y + x_i
    is carried to a few ulps of its terms, so small z lose relative (not absolute) precision."""
    eps = np.finfo(np.float64).eps
    scale = abs(margin) + 2 * float(np.max(np.abs(x)))
    z_err = 4 * eps * scale
    w_max = 1.0 if weight is None else max(1.0, max(weight))
    slope = 1.0 if p == 1 else 2 * scale
    np.testing.assert_allclose(loss, brute_loss(x, y, p, margin, weight), rtol=8 * eps, atol=w_max * slope * z_err)
    grad_atol = 0.0 if p == 1 else w_max * 2 * z_err * x.shape[1]
    np.testing.assert_allclose(grad, brute_grad(x, y, p, margin, weight), rtol=8 * eps, atol=grad_atol)


def _data(seed=0, n=40, c=6, scale=1.5):
    rng = np.random.default_rng(seed)
    return rng.normal(size=(n, c)) * scale, rng.integers(0, c, size=n)


W6 = [0.5, 2.0, 1.0, 0.0, 3.25, 1.5]
CONFIGS = [
    {"p": 1, "margin": 1.0, "weight": None},
    {"p": 2, "margin": 1.0, "weight": None},
    {"p": 1, "margin": 0.3, "weight": W6},
    {"p": 2, "margin": 2.5, "weight": W6},
    {"p": 1, "margin": -0.4, "weight": None},
    {"p": 2, "margin": 0.0, "weight": W6},
]


# ---------------------------------------------------------------------------
# closed forms
# ---------------------------------------------------------------------------


def test_pytorch_documentation_example():
    """MultiMarginLoss docs: x = [0.1, 0.2, 0.4, 0.8], y = 3 gives
    1/4 · ((1 - (0.8 - 0.1)) + (1 - (0.8 - 0.2)) + (1 - (0.8 - 0.4))) = 0.325."""
    res = hinge(np.array([[0.1, 0.2, 0.4, 0.8]]), np.array([3]))
    assert res.loss[0] == pytest.approx(0.325, rel=1e-15)


def test_hand_worked_values_p_margin_weight():
    # x = [0.25, 1, -0.5], y = 1: z_0 = m - 1 + 0.25, z_2 = m - 1 - 0.5 (all exact in binary)
    x, y = np.array([[0.25, 1.0, -0.5]]), np.array([1])
    assert hinge(x, y).loss[0] == 0.25 / 3  # z = 0.25, -0.5
    assert hinge(x, y, p="2").loss[0] == 0.0625 / 3
    assert hinge(x, y, margin=2.0).loss[0] == (1.25 + 0.5) / 3
    assert hinge(x, y, p=2, margin=2.0).loss[0] == (1.5625 + 0.25) / 3
    # the target class's weight scales the row; the other classes' weights do not matter
    assert hinge(x, y, weight=[100.0, 4.0, 100.0]).loss[0] == 4.0 * 0.25 / 3
    assert hinge(x, y, margin=0.5).loss[0] == 0.0  # target wins every gap by at least the margin
    # negative margin: only a wrong class above the target by more than |margin| costs anything
    assert hinge(np.array([[2.0, 1.0, 0.0]]), np.array([1]), margin=-0.5).loss[0] == 0.5 / 3


def test_kink_at_zero_counts_for_nothing_as_pytorch():
    """z = margin - x_y + x_i = 0 exactly: the term adds 0 to the value and 0 to the gradient
    (ATen: ``if (z > 0)``), for p = 1 and p = 2."""
    x, y = np.array([[1.0, 0.0, 0.5]]), np.array([0])  # z_1 = 0 exactly, z_2 = 0.5
    for p in (1, 2):
        assert hinge(x, y, p=p).loss[0] == (0.5 if p == 1 else 0.25) / 3
        g = hinge_grad(x, y, p=p)
        assert g[0, 1] == 0.0
        assert g[0, 2] == (1.0 if p == 1 else 1.0) / 3  # p = 2: 2 · 0.5 / 3
        assert g[0, 0] == -g[0, 2]


def test_one_class_is_zero_and_weight_does_not_make_nan():
    assert hinge(np.array([[3.0], [-1.0]]), np.array([0, 0])).loss.tolist() == [0.0, 0.0]
    # an infinite weight on a row with no active term is 0 (PyTorch multiplies only active terms)
    res = hinge(np.array([[5.0, 0.0]]), np.array([0]), weight=[np.inf, 1.0])
    assert res.loss.tolist() == [0.0]
    assert hinge_grad(np.array([[5.0, 0.0]]), np.array([0]), weight=[np.inf, 1.0]).tolist() == [[0.0, 0.0]]


# ---------------------------------------------------------------------------
# against the decimal brute force
# ---------------------------------------------------------------------------


@pytest.mark.parametrize("cfg", CONFIGS, ids=lambda c: f"p{c['p']}_m{c['margin']}_{'w' if c['weight'] else 'nw'}")
def test_values_and_gradient_match_decimal_brute_force(cfg):
    x, y = _data(seed=3)
    kw = {"p": str(cfg["p"]), "margin": cfg["margin"], "weight": cfg["weight"]}
    got = hinge(x, y, **kw).loss
    assert got.dtype == np.float64
    assert_close_to_brute_force(got, hinge_grad(x, y, **kw), x, y, **cfg)


@pytest.mark.parametrize("p", [1, 2])
def test_gradient_matches_central_differences_away_from_kinks(p):
    x, y = _data(seed=11, n=25, c=5)
    margin = 0.7
    rows = np.arange(len(y))
    # keep every z at least 0.05 away from the kink
    z = margin - x[rows, y][:, None] + x
    z[rows, y] = 1.0
    x = x + np.where(np.abs(z) < 0.05, 0.1, 0.0)
    z = margin - x[rows, y][:, None] + x
    z[rows, y] = 1.0
    assert np.all(np.abs(z) >= 0.05)
    h = 1e-6
    fd = np.zeros_like(x)
    for j in range(x.shape[1]):
        hi, lo = x.copy(), x.copy()
        hi[:, j] += h
        lo[:, j] -= h
        fd[:, j] = (hinge(hi, y, p=p, margin=margin, weight=W6[:5]).loss - hinge(lo, y, p=p, margin=margin, weight=W6[:5]).loss) / (2 * h)
    np.testing.assert_allclose(hinge_grad(x, y, p=p, margin=margin, weight=W6[:5]), fd, rtol=1e-6, atol=1e-8)


def test_float32_and_integer_scores_are_computed_in_float64():
    x, y = _data(seed=5)
    x32 = x.astype(np.float32)
    want = brute_loss(x32.astype(np.float64), y, p=2)
    np.testing.assert_allclose(hinge(x32, y, p=2).loss, want, rtol=3e-15, atol=0)
    xi = np.array([[3, 1, 2]], dtype=np.int64)
    assert hinge(xi, np.array([1])).loss[0] == (1 - 1 + 3 + (1 - 1 + 2)) / 3


def test_kernel_errors_are_structured():
    x, y = _data(n=8, c=4)
    with pytest.raises(ParamError) as err:
        hinge(x, y % 4, weight=[1.0, 2.0])
    assert err.value.param == "weight" and "2 value(s)" in str(err.value) and "4 classes" in str(err.value)
    bad = y % 4
    bad[5] = 4
    with pytest.raises(InputError) as ierr:
        hinge(x, bad)
    assert ierr.value.role == "target" and ierr.value.rows == [5] and "out of range [0, 4)" in str(ierr.value)
    with pytest.raises(InputError) as ierr:
        hinge(x, np.where(np.arange(8) == 2, 1.5, 0.0))
    assert ierr.value.rows == [2] and "not an integer" in str(ierr.value)
    with pytest.raises(InputError) as ierr:
        x2 = x.copy()
        x2[3, 1] = np.inf
        hinge(x2, y % 4)
    assert ierr.value.role == "pred" and ierr.value.rows == [3]


# ---------------------------------------------------------------------------
# through the CLI
# ---------------------------------------------------------------------------


def _files(tmp_path, x, y):
    return write_parquet(tmp_path / "h.parquet", {"x": x, "y": y})


def test_cli_headline_is_the_plain_mean_even_with_weights(tmp_path):
    x, y = _data(seed=7, n=50)
    pq = _files(tmp_path, x, y)
    res = run_cli(["compute", "hinge", f"{pq}:x", f"{pq}:y", "--weight", ",".join(map(str, W6)), "--p", "2", "-f", "json"])
    assert res.code == 0, res.err
    per = brute_loss(x, y, p=2, weight=W6)
    plain = float(sum(Decimal(v) for v in per) / len(per))
    weighted = float(sum(Decimal(v) for v in per) / sum(Decimal(W6[int(t)]) for t in y))
    assert res.json["value"] == pytest.approx(plain, rel=1e-14)
    assert abs(plain - weighted) > 1e-3  # the test can tell the two averages apart
    res = run_cli(["compute", "hinge", f"{pq}:x", f"{pq}:y", "--weight", ",".join(map(str, W6)), "--p", "2",
                   "--reduction", "sum", "-f", "json"])
    assert res.json["value"] == pytest.approx(float(sum(Decimal(v) for v in per)), rel=1e-14)


def test_cli_per_sample_and_gradient_do_not_depend_on_chunk_size(tmp_path):
    x, y = _data(seed=9, n=300, c=7)
    pq = _files(tmp_path, x, y)
    runs = []
    for chunk in (None, 7, 64, 299):
        ps, gr = tmp_path / f"ps_{chunk}.npy", tmp_path / f"g_{chunk}.npy"
        args = ["compute", "hinge", f"{pq}:x", f"{pq}:y", "--p", "2", "--margin", "0.5",
                "--per-sample", str(ps), "--grad", str(gr), "-f", "json", "-q"]
        if chunk:
            args += ["--chunk-size", str(chunk)]
        res = run_cli(args)
        assert res.code == 0, res.err
        runs.append((res.json["value"], np.load(ps), np.load(gr)))
    assert_close_to_brute_force(runs[0][1], runs[0][2], x, y, p=2, margin=0.5)
    for value, ps, gr in runs[1:]:
        assert value == runs[0][0]
        assert ps.tobytes() == runs[0][1].tobytes()
        assert gr.tobytes() == runs[0][2].tobytes()


def test_cli_csv_example_matches_brute_force(tmp_path):
    x, y = _data(seed=13, n=30, c=4)
    cs = write_csv(tmp_path / "h.csv", {"s": x, "label": y})
    res = run_cli(["compute", "hinge", f"{cs}:s_*", f"{cs}:label", "--margin", "1.5", "-f", "json"])
    assert res.code == 0, res.err
    want = brute_loss(x, y, margin=1.5)
    assert res.json["value"] == pytest.approx(float(sum(Decimal(v) for v in want) / len(want)), rel=1e-14)
    assert run_cli(["compute", "multi-margin", f"{cs}:s_*", f"{cs}:label", "--margin", "1.5", "-f", "json"]).json[
        "value"
    ] == res.json["value"]


@pytest.mark.parametrize(
    "label, needle",
    [(4, "class index 4 out of range [0, 4)"), (-1, "class index -1 out of range [0, 4)"), (-100, "out of range")],
)
def test_cli_bad_label_names_file_column_and_row(tmp_path, label, needle):
    x, y = _data(seed=1, n=12, c=4)
    y = y.astype(np.int64)
    y[9] = label
    pq = _files(tmp_path, x, y)
    res = run_cli(["compute", "hinge", f"{pq}:x", f"{pq}:y"])
    assert_clean_error(res, 1, "h.parquet", "'y'", "row 9", needle, "Expected class indices in [0, 4)")


def test_cli_non_integer_label(tmp_path):
    x, y = _data(seed=1, n=6, c=3)
    y = y.astype(np.float64)
    y[4] = 0.5
    pq = _files(tmp_path, x, y)
    assert_clean_error(run_cli(["compute", "hinge", f"{pq}:x", f"{pq}:y"]), 1, "row 4", "0.5 is not an integer")


@pytest.mark.parametrize(
    "args, needles",
    [
        (["--weight", "1,2"], ["--weight has 2 value(s)", "4 classes"]),
        (["--weight", "1,2,-1,1"], ["--weight of hinge must be in [0, inf]"]),
        (["--p", "3"], ["--p of hinge must be one of 1, 2"]),
        (["--margin", "inf"], ["--margin of hinge must be in (-inf, inf)"]),
        (["--margin", "nan"], ["--margin of hinge expects a number"]),
        (["--ignore-index", "0"], ["--ignore-index"]),
    ],
)
def test_cli_parameter_errors_are_usage_errors(tmp_path, args, needles):
    x, y = _data(seed=1, n=6, c=4)
    pq = _files(tmp_path, x, y)
    out = tmp_path / "ps.csv"
    res = run_cli(["compute", "hinge", f"{pq}:x", f"{pq}:y", *args, "--per-sample", str(out)])
    assert_clean_error(res, 2, *needles)
    assert not out.exists()  # a failed run writes nothing


def test_python_api_speaks_keywords(tmp_path):
    import lossctl
    from lossctl import losses

    x, y = _data(seed=2, n=10, c=4)
    np.testing.assert_allclose(losses.hinge_loss(x, y, p=2, margin=0.5), brute_loss(x, y, p=2, margin=0.5),
                               rtol=3e-15, atol=0)
    report = lossctl.compute("hinge", x, y, weight=[1.0, 2.0, 3.0, 4.0])
    per = brute_loss(x, y, weight=[1.0, 2.0, 3.0, 4.0])
    assert report.value == pytest.approx(sum(per) / len(per), rel=1e-14)
    with pytest.raises(Exception) as err:
        lossctl.compute("hinge", x, y, weight=[1.0, 2.0])
    assert "--weight" not in str(err.value) and "weight" in str(err.value)


# ---------------------------------------------------------------------------
# PyTorch itself
# ---------------------------------------------------------------------------


@pytest.mark.slow  # importing torch takes seconds
@pytest.mark.parametrize("cfg", CONFIGS, ids=lambda c: f"p{c['p']}_m{c['margin']}_{'w' if c['weight'] else 'nw'}")
def test_agrees_with_torch(cfg):
    torch = pytest.importorskip("torch", reason="the PyTorch comparison needs torch: pip install '.[bench]'")
    F = torch.nn.functional
    x, y = _data(seed=21, n=60, c=6, scale=2.0)
    X = torch.tensor(x, dtype=torch.float64, requires_grad=True)
    Y = torch.tensor(y)
    W = None if cfg["weight"] is None else torch.tensor(cfg["weight"], dtype=torch.float64)
    kw = dict(p=cfg["p"], margin=cfg["margin"], weight=W)
    per = F.multi_margin_loss(X, Y, reduction="none", **kw)
    per.sum().backward()
    mine = hinge(x, y, p=str(cfg["p"]), margin=cfg["margin"], weight=cfg["weight"])
    np.testing.assert_allclose(mine.loss, per.detach().numpy(), rtol=1e-15, atol=0)
    np.testing.assert_allclose(hinge_grad(x, y, **cfg), X.grad.numpy(), rtol=1e-14, atol=1e-16)
    mean = F.multi_margin_loss(X, Y, reduction="mean", **kw).item()
    assert float(np.mean(mine.loss)) == pytest.approx(mean, rel=1e-15)


def test_cli_class_names_map_to_indices(tmp_path):
    """--classes, as for the other index-target losses: names in logit order are the indices."""
    path = tmp_path / "names.csv"
    path.write_text("s0,s1,s2,label\n0.25,1.0,-0.5,dog\n1.0,0.0,0.5,cat\n")
    res = run_cli(["compute", "hinge", f"{path}:s0,s1,s2", f"{path}:label", "--classes", "cat,dog,bird", "-f", "json"])
    assert res.code == 0, res.err
    assert res.json["value"] == pytest.approx((0.25 / 3 + 0.5 / 3) / 2, rel=1e-15)
    res = run_cli(["compute", "hinge", f"{path}:s0,s1,s2", f"{path}:label", "--classes", "cat,cow,bird"])
    assert_clean_error(res, 1, "row 0", "'dog'")


def test_overflowing_gap_is_inf_without_warnings_and_zero_weight_stays_zero():
    """A gap beyond float64's range is +inf (the exact value rounds there, as in PyTorch); a target
    weight of 0 gives exactly 0 even then (PyTorch computes inf · 0 = NaN); no RuntimeWarning."""
    import warnings

    x, y = np.array([[1e308, -1e308], [0.0, 1.0]]), np.array([1, 0])
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert hinge(x, y, p=2).loss.tolist() == [np.inf, 2.0]  # row 1: z = 2, 2² / 2
        assert hinge(x, y, p=2, weight=[1.0, 0.0]).loss.tolist() == [0.0, 2.0]
        g = hinge_grad(x, y, p=2, weight=[1.0, 0.0])
    assert g.tolist() == [[0.0, 0.0], [-2.0, 2.0]]
    assert not np.signbit(g[0]).any()  # +0, as PyTorch's accumulator starting at 0
