"""Numbers a user can trust (issue #12 items 4, 5, 6, 8; issue #13 item 10's warnings).

Every expected value here comes from an independent oracle written in this file: PyTorch's
formula element by element in Python floats (``math``) summed with ``math.fsum``, or a
brute force in ``decimal`` at 60 digits. None of it calls lossctl's kernels.
"""

from __future__ import annotations

import json
import math
import warnings
from decimal import Decimal, localcontext

import numpy as np
import pytest

from conftest import assert_clean_error, write_csv, write_parquet

# ---------------------------------------------------------------------------
# Oracles: PyTorch's element formulas, one Python float at a time
# ---------------------------------------------------------------------------


def _softplus(x: float) -> float:
    return max(x, 0.0) + math.log1p(math.exp(-abs(x)))


def _sigmoid(x: float) -> float:
    return 1.0 / (1.0 + math.exp(-x)) if x >= 0 else math.exp(x) / (1.0 + math.exp(x))


def _huber(x, y, delta=1.0):
    a = abs(y - x)
    return 0.5 * a * a if a <= delta else delta * (a - 0.5 * delta)


def _smooth_l1(x, y, beta=1.0):
    a = abs(y - x)
    return 0.5 * a * a / beta if a < beta else a - 0.5 * beta


def _quantile(x, y, q=0.5):
    r = y - x
    return max(q * r, (q - 1.0) * r)


def _gaussian_nll(x, y, v, eps=1e-6):
    v = max(v, eps)
    return 0.5 * (math.log(v) + (x - y) ** 2 / v)


def _bce_logits(x, y):
    # torch.nn.functional.binary_cross_entropy_with_logits: max(x, 0) - x·y + log(1 + exp(-|x|))
    return max(x, 0.0) - x * y + math.log1p(math.exp(-abs(x)))


def _focal(x, y, alpha=0.25, gamma=2.0):
    # torchvision.ops.sigmoid_focal_loss, element by element
    p = _sigmoid(x)
    ce = _bce_logits(x, y)
    p_t = p * y + (1.0 - p) * (1.0 - y)
    a_t = alpha * y + (1.0 - alpha) * (1.0 - y)
    return a_t * ce * (1.0 - p_t) ** gamma


ELEMENT_LOSSES = {
    # name: (element formula of PyTorch, extra CLI args, needs a variance input)
    "mse": (lambda x, y: (x - y) ** 2, [], False),
    "mae": (lambda x, y: abs(x - y), [], False),
    "huber": (lambda x, y: _huber(x, y, 0.7), ["--delta", "0.7"], False),
    "smooth-l1": (lambda x, y: _smooth_l1(x, y, 0.6), ["--beta", "0.6"], False),
    "log-cosh": (lambda x, y: math.log(math.cosh(y - x)), [], False),
    "quantile": (lambda x, y: _quantile(x, y, 0.3), ["--quantile", "0.3"], False),
    "gaussian-nll": (None, [], True),
    "poisson-nll": (lambda x, y: math.exp(x) - y * x, [], False),
    "binary-cross-entropy": (_bce_logits, [], False),
    "focal": (_focal, [], False),
}

N, D = 41, 3


def _data(name: str, seed: int = 3):
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(N, D)) * 1.5
    if name in ("binary-cross-entropy", "focal"):
        y = rng.integers(0, 2, size=(N, D)).astype(np.float64)
        y[::5, 1] = 0.3  # soft targets too
    elif name == "poisson-nll":
        y = rng.integers(0, 6, size=(N, D)).astype(np.float64)
    else:
        y = rng.normal(size=(N, D)) * 2.0
    v = rng.uniform(0.2, 3.0, size=(N, D))
    return x, y, v


def _elements(name: str, x, y, v) -> list[list[float]]:
    f, _, needs_var = ELEMENT_LOSSES[name]
    out = []
    for i in range(len(x)):
        if needs_var:
            out.append([_gaussian_nll(float(x[i, j]), float(y[i, j]), float(v[i, j])) for j in range(x.shape[1])])
        else:
            out.append([f(float(x[i, j]), float(y[i, j])) for j in range(x.shape[1])])
    return out


def _run(cli, name, path, extra):
    _, args, needs_var = ELEMENT_LOSSES[name]
    src = [f"{path}:pred", f"{path}:target"] + ([f"{path}:var"] if needs_var else [])
    res = cli(["compute", name, *src, *args, *extra, "-f", "json"])
    assert res.code == 0, res.err
    assert res.err == ""
    return res.json


@pytest.mark.parametrize("name", sorted(ELEMENT_LOSSES))
def test_sum_of_n_by_d_inputs_is_pytorchs_element_sum(cli, tmp_path, name):
    """#12.4: --reduction sum on (N, D) is Σ over all N·D elements (F.*(..., reduction='sum')),
    mean is the element mean, and each per-sample value is its row's mean, through small chunks,
    groups and the per-sample file."""
    x, y, v = _data(name)
    g = np.array(["a", "b", "c"])[np.arange(N) % 3]
    path = write_parquet(tmp_path / "d.parquet", {"pred": x, "target": y, "var": v, "g": g})
    elems = _elements(name, x, y, v)
    want_sum = math.fsum(e for row in elems for e in row)
    want_mean = want_sum / (N * D)

    rep = _run(cli, name, path, ["--reduction", "sum", "--chunk-size", "7", "--group-by", "g"])
    assert rep["value"] == pytest.approx(want_sum, rel=1e-12)
    for grp in rep["groups"]:
        rows = [i for i in range(N) if g[i] == grp["group"]]
        assert grp["value"] == pytest.approx(math.fsum(e for i in rows for e in elems[i]), rel=1e-12)

    rep = _run(cli, name, path, ["--chunk-size", "5"])
    assert rep["value"] == pytest.approx(want_mean, rel=1e-12)

    out = tmp_path / "ps.csv"
    _run(cli, name, path, ["--reduction", "sum", "--per-sample", str(out)])
    got = np.genfromtxt(out, delimiter=",", names=True)["loss"]
    want_rows = [math.fsum(row) / D for row in elems]
    np.testing.assert_allclose(got, want_rows, rtol=1e-12)
    assert math.fsum(got) * D == pytest.approx(want_sum, rel=1e-12)  # the documented relation


def test_sum_of_one_column_is_unchanged(cli, tmp_path):
    rng = np.random.default_rng(5)
    x, y = rng.normal(size=30), rng.normal(size=30)
    path = write_parquet(tmp_path / "d.parquet", {"pred": x, "target": y})
    res = cli(["compute", "mse", f"{path}:pred", f"{path}:target", "--reduction", "sum", "-f", "json"])
    assert res.json["value"] == pytest.approx(math.fsum((a - b) ** 2 for a, b in zip(x, y)), rel=1e-13)


def test_sum_through_saved_states_and_merge(cli, tmp_path):
    """#12.4: shards evaluated apart and merged give the element sum of the whole."""
    x, y, v = _data("huber", seed=11)
    states = []
    for k, (a, b) in enumerate(((0, 17), (17, N))):
        p = write_parquet(tmp_path / f"s{k}.parquet", {"pred": x[a:b], "target": y[a:b]})
        st = tmp_path / f"s{k}.json"
        res = cli(
            ["compute", "huber", f"{p}:pred", f"{p}:target", "--delta", "0.7", "--reduction", "sum"]
            + ["--row-offset", str(a), "--save-state", str(st), "-b"]
        )
        assert res.code == 0, res.err
        states.append(str(st))
    res = cli(["merge", *states, "-f", "json"])
    assert res.code == 0, res.err
    want = math.fsum(e for row in _elements("huber", x, y, v) for e in row)
    assert res.json["reduction"] == "sum"
    assert res.json["value"] == pytest.approx(want, rel=1e-12)


def test_sum_bootstrap_interval_counts_every_element(cli, tmp_path):
    """#12.4: the bootstrap of `sum` resamples rows and adds their element sums: an (N, 2) input
    [a, a] against 0 has exactly the bootstrap of the (N,) input 2·|a| under mae."""
    rng = np.random.default_rng(2)
    a = rng.normal(size=200)
    two = write_parquet(tmp_path / "two.parquet", {"pred": np.stack([a, a], axis=1), "target": np.zeros((200, 2))})
    one = write_parquet(tmp_path / "one.parquet", {"pred": 2.0 * a, "target": np.zeros(200)})
    common = ["--reduction", "sum", "--ci", "0.9", "--ci-n", "200", "--seed", "7", "-f", "json"]
    r2 = cli(["compute", "mae", f"{two}:pred", f"{two}:target", *common]).json
    r1 = cli(["compute", "mae", f"{one}:pred", f"{one}:target", *common]).json
    assert r2["value"] == pytest.approx(math.fsum(2.0 * abs(t) for t in a), rel=1e-12)
    assert r2["ci"]["low"] == pytest.approx(r1["ci"]["low"], rel=1e-12)
    assert r2["ci"]["high"] == pytest.approx(r1["ci"]["high"], rel=1e-12)
    assert r2["ci"]["low"] < r2["value"] < r2["ci"]["high"]


@pytest.mark.slow
def test_sum_through_dask_tasks(cli, tmp_path):
    pytest.importorskip("distributed", reason="the dask extra is not installed: pip install 'lossctl[dask]'")
    x, y, v = _data("mse", seed=4)
    path = write_parquet(tmp_path / "d.parquet", {"pred": x, "target": y}, row_group_size=8)
    res = cli(
        ["compute", "mse", f"{path}:pred", f"{path}:target", "--reduction", "sum", "-f", "json"]
        + ["--engine", "dask", "--workers", "1"]
    )
    assert res.code == 0, res.err
    assert res.json["value"] == pytest.approx(math.fsum((a - b) ** 2 for a, b in zip(x.ravel(), y.ravel())), rel=1e-12)


def test_help_and_explain_say_how_sum_relates_to_per_sample_values(cli):
    res = cli(["compute", "mse", "--help"])
    text = " ".join(res.out.split())
    assert "reduction='sum'" in text and "N·D" in text
    res = cli(["explain", "bce"])
    assert "row mean over D" in " ".join(res.out.split())


# ---------------------------------------------------------------------------
# #12.5: near-one-hot rows from logits, against 60-digit decimal arithmetic
# ---------------------------------------------------------------------------


def _dsoftmax(row):
    """Softmax and log-softmax of a row of floats, as Decimals at 60 digits (caller's context)."""
    xs = [Decimal(float(v)) for v in row]
    m = max(xs)
    es = [(v - m).exp() for v in xs]
    s = sum(es)
    return [e / s for e in es], [(v - m) - s.ln() for v in xs]


def _dkl(t_row, x_row):
    """KL(softmax(t) ‖ softmax(x)) and its gradient in x: softmax(x) - softmax(t)."""
    with localcontext() as ctx:
        ctx.prec = 60
        p, lp = _dsoftmax(t_row)
        q, lq = _dsoftmax(x_row)
        kl = sum(pi * (a - b) for pi, a, b in zip(p, lp, lq))
        return float(kl), [float(a - b) for a, b in zip(q, p)]


def _dentropy(row):
    with localcontext() as ctx:
        ctx.prec = 60
        p, lp = _dsoftmax(row)
        h = -sum(a * b for a, b in zip(p, lp))
        return float(h), [float(-a * (b + h)) for a, b in zip(p, lp)]


def _rel(got, want):
    return abs(got - want) / abs(want)


def test_kl_of_near_one_hot_logits_is_exact_and_positive():
    from lossctl.losses.divergence import kl_divergence, kl_divergence_grad

    t, x = np.array([[41.0, 0.0]]), np.array([[40.0, 0.0]])
    got = kl_divergence(target=t, pred=x, target_kind="logits").loss[0]
    want, _ = _dkl([41.0, 0.0], [40.0, 0.0])
    assert want == pytest.approx(1.1226e-18, rel=1e-4)
    assert got > 0 and _rel(got, want) < 1e-15
    # two-class rows [g, 0] against [g + 1, 0], both ways, and their gradients
    for g in range(30, 41):
        for a, b in (([g, 0.0], [g + 1.0, 0.0]), ([g + 1.0, 0.0], [g, 0.0])):
            ta, xb = np.array([a]), np.array([b])
            want, want_grad = _dkl(a, b)
            got = kl_divergence(target=ta, pred=xb, target_kind="logits").loss[0]
            assert _rel(got, want) < 1e-15, (g, a, b, got, want)
            grad = kl_divergence_grad(target=ta, pred=xb, target_kind="logits")[0]
            for gv, wv in zip(grad, want_grad):
                assert _rel(gv, wv) < 1e-14, (g, a, b, grad, want_grad)


def test_kl_of_a_three_class_confident_row_against_probabilities():
    from lossctl.losses.divergence import kl_divergence

    x = [35.0, 1.5, -2.0]
    with localcontext() as ctx:
        ctx.prec = 60
        q, _ = _dsoftmax(x)
    # P: the softmax of other logits, rounded to float64, given as probabilities
    p = np.array([[float(v) for v in _dsoftmax_float([36.0, 0.5, -1.0])]])
    got = kl_divergence(target=p, pred=np.array([x]), target_kind="probs").loss[0]
    with localcontext() as ctx:
        ctx.prec = 60
        pd = [Decimal(float(v)) for v in p[0]]
        want = float(sum(a * (a.ln() - b.ln()) for a, b in zip(pd, q) if a > 0))
    assert _rel(got, want) < 1e-13  # P's own rounding in the float64 file bounds this case


def _dsoftmax_float(row):
    with localcontext() as ctx:
        ctx.prec = 60
        return [float(v) for v in _dsoftmax(row)[0]]


def test_entropy_of_near_one_hot_logits_is_exact():
    from lossctl.losses.softmax import entropy, entropy_grad

    rows = [[g, 0.0] for g in (28.0, 31.0, 33.5, 36.0, 40.0)] + [[32.0, 0.0, 1.0], [34.0, -3.0, 2.0, 0.5]]
    for row in rows:
        want, want_grad = _dentropy(row)
        got = entropy(np.array([row])).loss[0]
        assert _rel(got, want) < 1e-14, (row, got, want)
        grad = entropy_grad(np.array([row]))[0]
        for gv, wv in zip(grad, want_grad):
            assert _rel(gv, wv) < 1e-13, (row, grad, want_grad)
    assert _dentropy([33.5, 0.0])[0] < 2e-13  # rows this confident are what the issue measured


def test_distillation_soft_term_and_gradient_on_confident_rows():
    from lossctl.losses.rl import distillation, distillation_grad

    for g in (30.0, 34.0, 38.0):
        s, t = np.array([[g + 1.0, 0.0, -1.0]]), np.array([[g, 0.0, -1.0]])
        want, want_grad = _dkl(t[0], s[0])  # T = 1: KL(softmax(t) ‖ softmax(s)), ∂/∂s = q - p
        res = distillation(student=s, teacher=t, temperature=1.0, alpha=1.0)
        assert _rel(res.loss[0], want) < 1e-14, (g, res.loss[0], want)
        grad = distillation_grad(student=s, teacher=t, temperature=1.0, alpha=1.0)[0]
        for gv, wv in zip(grad, want_grad):
            assert _rel(gv, wv) < 1e-13, (g, grad, want_grad)


def test_cross_entropy_gradient_of_a_confident_correct_row():
    from lossctl.losses.classification import cross_entropy_grad

    x = [40.0, 0.0, -3.0]
    with localcontext() as ctx:
        ctx.prec = 60
        q, _ = _dsoftmax(x)
        want = [float(q[0] - 1), float(q[1]), float(q[2])]
    grad = cross_entropy_grad(np.array([x]), np.array([0]))[0]
    assert want[0] < 0
    for gv, wv in zip(grad, want):
        assert _rel(gv, wv) < 1e-14, (grad, want)


# ---------------------------------------------------------------------------
# #12.6: the focal-loss gradient of confident correct logits
# ---------------------------------------------------------------------------


def _dfocal_grad(x: float, y: float, alpha: float, gamma: float) -> float:
    """d/dx of α_t·(1-p_t)^γ·BCE(x, y), by a centred difference at 60 digits on the exact formula
    (step 1e-25: truncation error ~1e-50 relative)."""

    def f(xv):
        p = 1 / (1 + (-xv).exp())
        one_minus_p = 1 / (1 + xv.exp())
        ce = -(y * p.ln() + (1 - y) * one_minus_p.ln())
        one_minus_pt = y * one_minus_p + (1 - y) * p
        a_t = alpha * y + (1 - alpha) * (1 - y)
        return a_t * ce * one_minus_pt**gamma

    with localcontext() as ctx:
        ctx.prec = 120
        xv, h = Decimal(x), Decimal("1e-25")
        y, alpha, gamma = Decimal(y), Decimal(alpha), Decimal(gamma)
        return float((f(xv + h) - f(xv - h)) / (2 * h))


@pytest.mark.parametrize("gamma", [2.0, 0.5, 1.0])
@pytest.mark.parametrize("x,y", [(40.0, 1.0), (-40.0, 0.0), (30.0, 1.0), (25.0, 0.7), (-36.0, 0.0)])
def test_focal_gradient_of_confident_logits(x, y, gamma):
    from lossctl.losses.classification import focal_grad

    want = _dfocal_grad(x, y, 0.25, gamma)
    got = focal_grad(np.array([x]), np.array([y]), alpha=0.25, gamma=gamma)[0]
    assert _rel(got, want) < 1e-13, (got, want)
    if (x, y, gamma) == (40.0, 1.0, 2.0):
        assert want == pytest.approx(-5.75e-53, rel=1e-3)


# ---------------------------------------------------------------------------
# #12.8: labels are range-checked in their own dtype; integers float64 cannot hold are refused
# ---------------------------------------------------------------------------


def _no_warning_run(cli, args):
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # a RuntimeWarning becomes an internal error the asserts see
        return cli(args)


@pytest.mark.parametrize("fmt", ["parquet", "npy"])
@pytest.mark.parametrize(
    "label,shown",
    [
        (np.uint64(2**64 - 100), "18446744073709551516"),  # must not wrap to -100 = --ignore-index
        (np.uint64(2**64 - 1), "18446744073709551615"),  # must not be "class index -1"
    ],
)
def test_uint64_labels_are_checked_before_conversion(cli, tmp_path, fmt, label, shown):
    logits = np.array([[2.0, 0.0, -1.0], [0.5, 0.1, 0.2], [0.0, 1.0, 0.0]])
    y = np.array([0, label, 2], dtype=np.uint64)
    if fmt == "npy":
        np.save(tmp_path / "x.npy", logits)
        np.save(tmp_path / "y.npy", y)
        src = [str(tmp_path / "x.npy"), str(tmp_path / "y.npy")]
    else:
        p = write_parquet(tmp_path / "d.parquet", {"logits": logits, "label": y})
        src = [f"{p}:logits", f"{p}:label"]
    res = _no_warning_run(cli, ["compute", "ce", *src])
    assert_clean_error(res, 1, shown, "row 1", "out of range")
    assert "-100" not in res.err.split("ignore-index")[0] and "index -1 " not in res.err


@pytest.mark.parametrize("value", [1e20, 2.0**63, -1e300, 2.0**64])
def test_huge_float_labels_are_a_clean_error(cli, tmp_path, value):
    logits = np.zeros((3, 4))
    p = write_parquet(tmp_path / "d.parquet", {"logits": logits, "label": np.array([1.0, value, 0.0])})
    res = _no_warning_run(cli, ["compute", "ce", f"{p}:logits", f"{p}:label"])
    assert_clean_error(res, 1, "row 1", "out of range", "label")
    assert "-9223372036854775808" not in res.err and "RuntimeWarning" not in res.err


def test_token_labels_are_checked_in_their_own_dtype():
    from lossctl.errors import InputError
    from lossctl.losses.softmax import token_cross_entropy

    x = np.zeros((2, 3, 5))
    y = np.array([[0, 1, 2], [3, 2**64 - 100, 4]], dtype=np.uint64)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        with pytest.raises(InputError, match="18446744073709551516"):
            token_cross_entropy(x, y, ignore_index=-100)
        with pytest.raises(InputError, match="out of range"):
            token_cross_entropy(x, np.array([[0.0, 1.0, 2.0], [1e20, 0.0, 1.0]]), ignore_index=-100)


def test_ignore_index_still_matches_in_every_dtype(cli, tmp_path):
    """The ignore index works for int64, float and (non-negative) uint64 labels alike."""
    logits = np.array([[2.0, 0.0], [0.0, 3.0], [1.0, 1.0]])
    want = math.fsum([_softplus(-2.0), _softplus(-3.0)]) / 2  # two-class CE = softplus(other - own)
    for y, ignore in (
        (np.array([0, 1, -100]), None),
        (np.array([0.0, 1.0, -100.0]), None),
        (np.array([0, 1, 7], dtype=np.uint64), "7"),
    ):
        p = write_parquet(tmp_path / "d.parquet", {"logits": logits, "label": y})
        args = ["compute", "ce", f"{p}:logits", f"{p}:label", "-f", "json"]
        args += ["--ignore-index", ignore] if ignore else []
        res = _no_warning_run(cli, args)
        assert res.code == 0, res.err
        assert res.json["rows"]["ignored"] == 1
        assert res.json["value"] == pytest.approx(want, rel=1e-14)


@pytest.mark.parametrize("dtype", [np.int64, np.uint64])
def test_integer_regression_values_beyond_2_53_are_refused(cli, tmp_path, dtype):
    base = 2**53
    pred = np.array([5, base + 1, 7], dtype=dtype)  # base + 1 is not a float64
    target = np.array([5, base + 2, 7], dtype=dtype)  # true MSE of row 1: 1, rounded it would be 0 or 4
    p = write_parquet(tmp_path / "d.parquet", {"pred": pred, "target": target})
    res = _no_warning_run(cli, ["compute", "mse", f"{p}:pred", f"{p}:target"])
    assert_clean_error(res, 1, "d.parquet", "'pred'", "row 1", str(base + 1), "2**53")
    np.save(tmp_path / "p.npy", pred)
    np.save(tmp_path / "t.npy", target)
    res = _no_warning_run(cli, ["compute", "mse", str(tmp_path / "p.npy"), str(tmp_path / "t.npy")])
    assert_clean_error(res, 1, "p.npy", "row 1", str(base + 1))


def test_integers_float64_holds_exactly_are_accepted(cli, tmp_path):
    # 2**60 and -2**63 are floats exactly; so is every integer up to 2**53
    pred = np.array([2**60, -(2**63), 2**53, 12], dtype=np.int64)
    target = np.array([2**60, -(2**63), 2**53 - 1, 10], dtype=np.int64)
    p = write_parquet(tmp_path / "d.parquet", {"pred": pred, "target": target})
    res = cli(["compute", "mse", f"{p}:pred", f"{p}:target", "-f", "json"])
    assert res.code == 0, res.err
    assert res.json["value"] == pytest.approx((0 + 0 + 1 + 4) / 4, rel=1e-15)


def test_integer_column_with_nulls_beyond_2_53_is_refused(cli, tmp_path):
    import pyarrow as pa
    import pyarrow.parquet as pq

    t = pa.table(
        {"pred": pa.array([1, None, 2**53 + 1], type=pa.int64()), "target": pa.array([1.0, 2.0, 3.0])}
    )
    pq.write_table(t, tmp_path / "n.parquet")
    res = _no_warning_run(cli, ["compute", "mse", f"{tmp_path / 'n.parquet'}:pred", f"{tmp_path / 'n.parquet'}:target"])
    assert_clean_error(res, 1, "'pred'", "row 2", str(2**53 + 1))


# ---------------------------------------------------------------------------
# #13.10: no Python RuntimeWarning, no NaN with exit 0, on extreme-but-legal inputs
# ---------------------------------------------------------------------------


def _extreme_variants():
    yield "times 1e300", lambda a: a * 1e300
    yield "times 1e-320", lambda a: a * 1e-320
    yield "row of ±1e308", _first_row_extreme
    yield "signs at 1e308", lambda a: np.where(a > 0, 1e308, np.where(a < 0, -1e308, 0.0))


def _first_row_extreme(a):
    a = a.copy()
    flat = a[0].reshape(-1) if a.ndim > 1 else a[:1]
    flat[:] = np.resize(np.array([1e308, -1e308, 0.0]), flat.shape)
    return a


def _write_inputs(tmp_path, arrays, change):
    from lossctl.ragged import Ragged

    srcs = []
    for k, a in enumerate(arrays):
        if a is None:
            break
        if isinstance(a, Ragged):
            vals = change(a.values) if a.values.dtype.kind == "f" else a.values
            rows = [vals[a.offsets[i] : a.offsets[i + 1]] for i in range(len(a))]
            import pyarrow as pa
            import pyarrow.parquet as pq

            pq.write_table(pa.table({"v": pa.array(rows, type=pa.list_(pa.float64()))}), tmp_path / f"in{k}.parquet")
            srcs.append(f"{tmp_path / f'in{k}.parquet'}:v")
            continue
        a = np.asarray(a)
        if a.dtype.kind == "f":
            a = change(a)
        np.save(tmp_path / f"in{k}.npy", a)
        srcs.append(str(tmp_path / f"in{k}.npy"))
    return srcs


def _assert_trustworthy(res, what):
    assert "Traceback" not in res.err and "Warning" not in res.err, (what, res.err)
    assert "internal error" not in res.err, (what, res.err)
    assert res.code in (0, 1, 2), (what, res.code, res.err)
    if res.code == 0:
        rep = json.loads(res.out)
        assert not (isinstance(rep["value"], float) and math.isnan(rep["value"])), (what, rep["value"])
        assert rep["rows"]["nan_propagated"] == 0
    else:
        assert res.err.startswith("lossctl: error:") and res.out == "", (what, res.err)


def _loss_names():
    import sys

    sys.path.insert(0, str(__import__("pathlib").Path(__file__).parent))
    from cases import CASES

    return sorted(CASES)


@pytest.mark.parametrize("name", _loss_names())
def test_every_loss_on_extreme_inputs_is_exact_or_refused(cli, tmp_path, name):
    from cases import CASES

    case = CASES[name]
    steer = {k: v for k, v in case.params[0].items() if k.startswith("_")}
    arrays = case.make(np.random.default_rng(1), steer)
    for label, change in _extreme_variants():
        d = tmp_path / label.replace(" ", "_")
        d.mkdir()
        srcs = _write_inputs(d, arrays, change)
        args = ["compute", name, *srcs, "-f", "json", "--grad", str(d / "g.npy"), "--per-sample", str(d / "ps.csv")]
        args += ["--grad-norm", "--ci", "0.9", "--ci-n", "50", "--hist"]
        res = _no_warning_run(cli, args)
        _assert_trustworthy(res, (name, label))
        if res.code == 0:
            g = np.load(d / "g.npy", allow_pickle=False) if (d / "g.npy").exists() else None
            if g is not None and g.dtype.kind == "f":
                assert not np.isnan(g).any(), (name, label)


@pytest.mark.parametrize("name", ["distillation", "info-nce"])
@pytest.mark.parametrize("temperature", ["1e-320", "4.9e-324", "1e-310"])
def test_subnormal_temperature_is_refused(cli, tmp_path, name, temperature):
    rng = np.random.default_rng(0)
    np.save(tmp_path / "a.npy", rng.normal(size=(6, 4)))
    np.save(tmp_path / "b.npy", rng.normal(size=(6, 4)))
    res = _no_warning_run(
        cli, ["compute", name, str(tmp_path / "a.npy"), str(tmp_path / "b.npy"), "--temperature", temperature]
    )
    assert_clean_error(res, 2, "--temperature")


def test_tiny_but_normal_temperature_is_exact_or_refused(cli, tmp_path):
    """τ = 1e-300: InfoNCE's scores s/τ stay finite (|s| <= 1), so the loss is computed: the
    margin (max_j s_ij - s_ii)/τ, here for two one-hot rows (s = 0 off the diagonal, 1 on it)."""
    np.save(tmp_path / "q.npy", np.eye(2))
    np.save(tmp_path / "k.npy", np.eye(2))
    res = _no_warning_run(
        cli, ["compute", "info-nce", f"{tmp_path}/q.npy", f"{tmp_path}/k.npy", "--temperature", "1e-300", "-f", "json"]
    )
    assert res.code == 0, res.err
    assert res.json["value"] == 0.0  # log(1 + exp(-1e300)) underflows to exactly 0: the true value rounded
    rng = np.random.default_rng(3)
    np.save(tmp_path / "s.npy", rng.normal(size=(5, 3)) * 50)
    np.save(tmp_path / "t.npy", rng.normal(size=(5, 3)) * 50)
    res = _no_warning_run(
        cli, ["compute", "kd", f"{tmp_path}/s.npy", f"{tmp_path}/t.npy", "--temperature", "1e-300", "-f", "json"]
    )
    _assert_trustworthy(res, "distillation 1e-300")


def test_logits_spanning_the_float_range(cli, tmp_path):
    """Logits [1e308, -1e308, 0]: the softmax is exactly one-hot in float64."""
    np.save(tmp_path / "x.npy", np.array([[1e308, -1e308, 0.0], [0.0, 1.0, 2.0]]))
    np.save(tmp_path / "y.npy", np.array([0, 2]))
    args = ["compute", "ce", f"{tmp_path}/x.npy", f"{tmp_path}/y.npy", "-f", "json", "--grad", f"{tmp_path}/g.npy"]
    res = _no_warning_run(cli, args)
    assert res.code == 0, res.err
    want_row1 = math.log(math.exp(-2) + math.exp(-1) + 1)
    assert res.json["value"] == pytest.approx((0.0 + want_row1) / 2, rel=1e-15)
    g = np.load(tmp_path / "g.npy")
    assert np.array_equal(g[0], [0.0, 0.0, 0.0])
    args = ["compute", "entropy", f"{tmp_path}/x.npy", "-f", "json", "--grad", f"{tmp_path}/ge.npy"]
    res = _no_warning_run(cli, args)
    assert res.code == 0, res.err
    assert res.json["value"] == pytest.approx((0.0 + _dentropy([0.0, 1.0, 2.0])[0]) / 2, rel=1e-14)
    assert np.array_equal(np.load(tmp_path / "ge.npy")[0], [0.0, 0.0, 0.0])  # one-hot: H = 0, flat


@pytest.mark.parametrize("weight", ["1e308", "1.7e308"])
def test_huge_class_weights_are_exact_or_refused(cli, tmp_path, weight):
    rng = np.random.default_rng(0)
    np.save(tmp_path / "x.npy", rng.normal(size=(8, 3)))
    np.save(tmp_path / "y.npy", rng.integers(0, 3, size=8))
    for loss in ("ce", "softmax-focal"):
        opt = "--weight" if loss == "ce" else "--alpha"
        res = _no_warning_run(
            cli, ["compute", loss, f"{tmp_path}/x.npy", f"{tmp_path}/y.npy", opt, ",".join([weight] * 3), "-f", "json"]
        )
        _assert_trustworthy(res, (loss, weight))
    np.save(tmp_path / "b.npy", rng.normal(size=(8, 2)))
    np.save(tmp_path / "t.npy", rng.integers(0, 2, size=(8, 2)).astype(float))
    res = _no_warning_run(
        cli, ["compute", "bce", f"{tmp_path}/b.npy", f"{tmp_path}/t.npy", "--weight", weight, "--pos-weight", weight]
        + ["-f", "json"],
    )
    _assert_trustworthy(res, ("bce", weight))


def test_gradient_norms_of_huge_gradients_do_not_overflow(cli, tmp_path):
    """‖∂l/∂ŷ‖ of an (N, 2) mse row [1e300, 1e300] against 0 is (2/2)·1e300·√2, finite."""
    np.save(tmp_path / "p.npy", np.array([[1e300, 1e300], [3.0, 4.0]]))
    np.save(tmp_path / "t.npy", np.zeros((2, 2)))
    ps = tmp_path / "ps.csv"
    res = _no_warning_run(
        cli, ["compute", "mse", f"{tmp_path}/p.npy", f"{tmp_path}/t.npy", "--per-sample", str(ps), "--grad-norm"]
    )
    assert res.code == 0, res.err
    got = np.genfromtxt(ps, delimiter=",", names=True)["grad_norm"]
    assert got[0] == pytest.approx(math.sqrt(2.0) * 1e300, rel=1e-15)
    assert got[1] == pytest.approx(5.0, rel=1e-15)  # -2r/D = (-3, -4)


@pytest.mark.parametrize(
    "args",
    [
        ["kd", "{d}/a.npy", "{d}/b.npy", "--temperature", "1e-320"],
        ["info-nce", "{d}/a.npy", "{d}/b.npy", "--temperature", "1e-320"],
        ["ce", "{d}/x.npy", "{d}/y.npy", "--grad", "{d}/g.npy"],
        ["entropy", "{d}/x.npy"],
        ["ce", "{d}/a.npy", "{d}/y3.npy", "--weight", "1e308,1e308,1e308,1e308"],
    ],
)
def test_reproducers_print_no_runtime_warning_in_a_real_process(tmp_path, args):
    import subprocess
    import sys

    rng = np.random.default_rng(0)
    np.save(tmp_path / "a.npy", rng.normal(size=(5, 4)))
    np.save(tmp_path / "b.npy", rng.normal(size=(5, 4)))
    np.save(tmp_path / "x.npy", np.array([[1e308, -1e308, 0.0]]))
    np.save(tmp_path / "y.npy", np.array([0]))
    np.save(tmp_path / "y3.npy", np.array([0, 1, 2, 3, 0]))
    cmd = [sys.executable, "-m", "lossctl", "compute"] + [a.format(d=tmp_path) for a in args] + ["-f", "json"]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=60)
    assert "Warning" not in proc.stderr and "Traceback" not in proc.stderr, proc.stderr
    assert proc.returncode in (0, 1, 2), proc.stderr
    if proc.returncode == 0:
        assert not math.isnan(json.loads(proc.stdout)["value"])
    else:
        assert proc.stderr.startswith("lossctl: error:") and "internal error" not in proc.stderr


def test_float_ids_beyond_int64_are_not_wrapped(cli, tmp_path):
    import pyarrow as pa
    import pyarrow.parquet as pq

    t = pa.table({"id": pa.array([1e20, 2.0, 3.0]), "p": pa.array([1.0, 2.0, 3.0]), "t": pa.array([1.0, 2.0, 5.0])})
    pq.write_table(t, tmp_path / "ids.parquet")
    f = tmp_path / "ids.parquet"
    res = _no_warning_run(cli, ["compute", "mse", f"{f}:p", f"{f}:t", "--group-by", "id", "-f", "json"])
    assert res.code == 0, res.err
    groups = {g["group"]: g["value"] for g in res.json["groups"]}
    assert groups == {1e20: 0.0, 2.0: 0.0, 3.0: 4.0}
