"""The blocked, threaded kernels: a row's bits never depend on how many rows are passed,
where the blocks fall, the thread count or the memory layout; validation errors are the
same as the exact checks'; float32 cross-entropy stays within 2e-6 of float64."""

from __future__ import annotations

import math
import zlib

import numpy as np
import pytest

import lossctl.losses._common as common
from lossctl.errors import InputError
from lossctl.losses._common import check_finite, check_probs, logsumexp_parts, num_threads
from lossctl.losses.classification import binary_cross_entropy, cross_entropy
from lossctl.losses.divergence import kl_divergence
from lossctl.losses.softmax import softmax_focal
from lossctl.losses.regression import huber, log_cosh, mae, mse, smooth_l1

SIZES = (1, 7, 4097, 100_000)


@pytest.fixture
def small_blocks(monkeypatch):
    """Blocks of a few rows and threads from tiny inputs, so every boundary case shows."""
    monkeypatch.setattr(common, "ROW_BLOCK_ELEMS", 64)
    monkeypatch.setattr(common, "ELEM_BLOCK_ELEMS", 64)
    monkeypatch.setattr(common, "PARALLEL_MIN_ELEMS", 1)
    import lossctl.losses._bce_blocked as cl  # the blocked binary cross-entropy
    import lossctl.losses.regression as rg

    monkeypatch.setattr(cl, "ELEM_BLOCK_ELEMS", 64)
    monkeypatch.setattr(rg, "ELEM_BLOCK_ELEMS", 64)


def _ce_inputs(rng, n, c, dtype):
    x = (rng.normal(size=(n, c)) * 6).astype(dtype)
    y = rng.integers(0, c, size=n)
    y[::9] = -100
    return [x, y]


def _bce_inputs(rng, n, k, dtype):
    shape = (n,) if k is None else (n, k)
    x = (rng.normal(size=shape) * 5).astype(dtype)
    y = rng.random(shape).astype(dtype)
    y[::3] = np.round(y[::3])
    return [x, y]


def _kl_inputs(rng, n, c, dtype):
    p = rng.dirichlet(np.ones(c) * 0.7, size=n)
    p[::4, 0] = 0.0
    p /= p.sum(axis=1, keepdims=True)
    return [p.astype(dtype), (rng.normal(size=(n, c)) * 3).astype(dtype)]


def _reg_inputs(rng, n, d, dtype):
    shape = (n,) if d is None else (n, d)
    x = rng.normal(size=shape) * 4
    y = x + rng.normal(size=shape) * rng.choice([0.01, 1.0, 60.0], size=shape)
    return [x.astype(dtype), y.astype(dtype)]


CASES = {
    "ce": (lambda a: cross_entropy(*a).loss, lambda rng, n, dt: _ce_inputs(rng, n, 10, dt)),
    "ce-wide": (lambda a: cross_entropy(*a).loss, lambda rng, n, dt: _ce_inputs(rng, n, 300, dt)),
    "ce-smooth-weight": (
        lambda a: cross_entropy(*a, label_smoothing=0.1, weight=np.linspace(0.5, 2.0, 10)).loss,
        lambda rng, n, dt: _ce_inputs(rng, n, 10, dt),
    ),
    "ce-extras": (
        lambda a: np.stack(
            [
                cross_entropy(*a, extras=True).columns["p_true"],
                cross_entropy(*a, extras=True).columns["pred_class"].astype(float),
            ]
        ),
        lambda rng, n, dt: _ce_inputs(rng, n, 4, dt),
    ),
    "logsumexp": (lambda a: np.stack(logsumexp_parts(a[0])), lambda rng, n, dt: _ce_inputs(rng, n, 6, dt)),
    "softmax-focal": (
        lambda a: softmax_focal(a[0], np.abs(a[1]) % a[0].shape[1]).loss,
        lambda rng, n, dt: _ce_inputs(rng, n, 5, dt),
    ),
    "bce": (lambda a: binary_cross_entropy(*a).loss, lambda rng, n, dt: _bce_inputs(rng, n, None, dt)),
    "bce-pos-weight": (
        lambda a: binary_cross_entropy(*a, pos_weight=[1.0, 2.5, 0.3], weight=[2.0, 1.0, 0.5]).loss,
        lambda rng, n, dt: _bce_inputs(rng, n, 3, dt),
    ),
    "kl": (lambda a: kl_divergence(a[1], a[0]).loss, lambda rng, n, dt: _kl_inputs(rng, n, 8, dt)),
    "mse": (lambda a: mse(*a).loss, lambda rng, n, dt: _reg_inputs(rng, n, None, dt)),
    "mse-2d": (lambda a: mse(*a).loss, lambda rng, n, dt: _reg_inputs(rng, n, 3, dt)),
    "mae": (lambda a: mae(*a).loss, lambda rng, n, dt: _reg_inputs(rng, n, None, dt)),
    "huber": (lambda a: huber(*a, delta=1.5).loss, lambda rng, n, dt: _reg_inputs(rng, n, 2, dt)),
    "smooth-l1": (lambda a: smooth_l1(*a, beta=0.7).loss, lambda rng, n, dt: _reg_inputs(rng, n, None, dt)),
    "log-cosh": (lambda a: log_cosh(*a).loss, lambda rng, n, dt: _reg_inputs(rng, n, None, dt)),
}


def _rows(arrays, start, stop):
    return [a[start:stop] for a in arrays]


@pytest.mark.parametrize("name", sorted(CASES))
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_rows_do_not_depend_on_how_many_rows_are_passed(name, dtype, monkeypatch):
    fn, make = CASES[name]
    rng = np.random.default_rng(zlib.crc32(name.encode()))
    n = max(SIZES) if not name.startswith("ce-wide") else 20_000
    arrays = make(rng, n, dtype)
    monkeypatch.setenv("LOSSCTL_THREADS", "2")
    whole = fn(arrays)
    for size in SIZES:
        if size >= n:
            continue
        # a few chunks of this size at unaligned offsets
        for start in (0, 3, n - size):
            got = fn(_rows(arrays, start, start + size))
            np.testing.assert_array_equal(got, whole[..., start : start + size], err_msg=f"{name} {size}@{start}")
    monkeypatch.setenv("LOSSCTL_THREADS", "1")
    np.testing.assert_array_equal(fn(arrays), whole, err_msg=f"{name}: 1 thread vs 2")


@pytest.mark.parametrize("name", sorted(CASES))
def test_tiny_blocks_and_many_threads_give_the_same_bits(name, small_blocks, monkeypatch):
    fn, make = CASES[name]
    rng = np.random.default_rng(7)
    arrays = make(rng, 301, np.float32)
    monkeypatch.setenv("LOSSCTL_THREADS", "1")
    ref = fn(arrays)
    for threads in ("2", "3", "8"):
        monkeypatch.setenv("LOSSCTL_THREADS", threads)
        np.testing.assert_array_equal(fn(arrays), ref, err_msg=f"{name} threads={threads}")
    for size in (1, 2, 5, 64, 65):
        got = np.concatenate([np.atleast_2d(fn(_rows(arrays, i, i + size))) for i in range(0, 301, size)], axis=-1)
        np.testing.assert_array_equal(got.reshape(np.shape(ref)), ref, err_msg=f"{name} chunks of {size}")


@pytest.mark.parametrize("name", ["ce", "ce-smooth-weight", "kl", "mse-2d", "huber", "bce-pos-weight"])
def test_memory_layout_does_not_change_bits(name):
    fn, make = CASES[name]
    arrays = make(np.random.default_rng(3), 5000, np.float32)
    fortran = [np.asfortranarray(a) if a.ndim == 2 else a for a in arrays]
    strided = [np.repeat(a, 2, axis=0)[::2] for a in arrays]
    ref = fn(arrays)
    np.testing.assert_array_equal(fn(fortran), ref)
    np.testing.assert_array_equal(fn(strided), ref)


def _ref_ce(x, y):
    x = x.astype(np.float64)
    out = []
    for row, t in zip(x.tolist(), y.tolist()):
        m = max(row)
        # log Σ exp(v - m) = log1p(Σ exp(v - m) - 1), the sum correctly rounded (fsum)
        rest = math.fsum([math.exp(v - m) for v in row] + [-1.0])
        out.append(math.log1p(rest) + (m - row[t]))
    return np.array(out)


@pytest.mark.parametrize("c, scale", [(3, 1.0), (100, 3.0), (100, 15.0), (1000, 2.0)])
def test_float32_cross_entropy_within_2e_6_of_float64(c, scale):
    rng = np.random.default_rng(c)
    n = 400
    x = (rng.normal(size=(n, c)) * scale).astype(np.float32)
    y = rng.integers(0, c, size=n)
    y[::2] = np.argmax(x[::2], axis=1)  # confident, small losses too
    got = cross_entropy(x, y).loss
    np.testing.assert_allclose(got, _ref_ce(x, y), rtol=2e-6, atol=1e-12)
    got64 = cross_entropy(x.astype(np.float64), y).loss
    np.testing.assert_allclose(got64, _ref_ce(x, y), rtol=1e-12, atol=1e-15)


# ---------------------------------------------------------------------------
# validation: the same InputError (role, rows, message) as the exact checks
# ---------------------------------------------------------------------------


def _error(fn, *args, **kw) -> InputError:
    with pytest.raises(InputError) as err:
        fn(*args, **kw)
    return err.value


@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_non_finite_logits_name_the_same_rows(bad, dtype):
    rng = np.random.default_rng(1)
    x = rng.normal(size=(9000, 6)).astype(dtype)
    y = rng.integers(0, 6, size=9000)
    for r in (17, 4100, 8999, 8998, 5000, 6000, 7000):
        x[r, r % 6] = bad
    expected = _error(check_finite, x, "pred", "logits")
    for err in (_error(cross_entropy, x, y), _error(kl_divergence, x, np.full((9000, 6), 1 / 6))):
        assert (err.role, err.rows, err.message) == (expected.role, expected.rows, expected.message)
    assert expected.rows == [17, 4100, 5000, 6000, 7000]
    xb = x[:, 0].copy()
    err = _error(binary_cross_entropy, xb, (rng.random(9000) < 0.5).astype(dtype))
    exp_b = _error(check_finite, xb, "pred", "logits")
    assert (err.role, err.rows, err.message) == (exp_b.role, exp_b.rows, exp_b.message)


def test_minus_inf_beside_a_finite_maximum_is_caught():
    x = np.array([[0.0, 1.0, -np.inf], [0.0, 1.0, 2.0]], dtype=np.float32)
    assert _error(cross_entropy, x, np.array([0, 1])).rows == [0]
    assert _error(kl_divergence, x, np.full((2, 3), 1 / 3)).rows == [0]


def test_finite_logits_whose_sums_overflow_are_not_errors():
    x = np.array([[3e38, 3e38, -3e38], [1.0, 2.0, 3.0]], dtype=np.float32)
    res = cross_entropy(x, np.array([0, 2]))
    np.testing.assert_allclose(res.loss, [math.log(2.0), math.log1p(math.exp(-1) + math.exp(-2))], rtol=1e-6)
    big = np.array([1e308, -1e308, 5.0])
    assert np.isfinite(huber(big, np.zeros(3)).loss).all()
    assert mse(big, np.zeros(3)).loss[0] == math.inf  # an overflowing square, not an input error


def test_regression_errors_name_pred_before_target():
    x = np.arange(70_000, dtype=np.float64)
    y = x.copy()
    x[[5, 69_999]] = np.nan
    y[[3]] = np.inf
    for fn in (mse, mae, huber, smooth_l1, log_cosh):
        err = _error(fn, x, y)
        assert err.role == "pred" and err.rows == [5, 69_999]
        err = _error(fn, np.zeros(70_000), y)
        assert err.role == "target" and err.rows == [3]


def test_bad_labels_and_targets_are_reported_first():
    x = np.full((6, 3), np.nan, dtype=np.float32)
    err = _error(cross_entropy, x, np.array([0, 1, 3, 0, 1, 2]))
    assert err.role == "target" and err.rows == [2]
    err = _error(binary_cross_entropy, np.full(5, np.nan), np.array([0.0, 1.0, 1.5, -1.0, 0.5]))
    assert err.role == "target" and err.rows == [2, 3]
    err = _error(binary_cross_entropy, np.zeros(5), np.array([0.0, np.nan, 1.0, 0.0, 1.0]))
    assert err.role == "target" and err.rows == [1]


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_kl_probability_errors_are_those_of_check_probs(dtype):
    rng = np.random.default_rng(2)
    n, c = 9000, 5
    p = rng.dirichlet(np.ones(c), size=n)
    x = rng.normal(size=(n, c))
    cases = []
    q = p.copy()
    q[[10, 8000], 1] += 0.01  # sums off
    cases.append(q)
    q = p.copy()
    q[4321, 0] = -0.1  # out of range
    q[4322, 2] = np.nan
    cases.append(q)
    for bad in cases:
        bad = bad.astype(dtype)
        expected = _error(check_probs, bad, "target", None)
        err = _error(kl_divergence, x.astype(dtype), bad)
        assert (err.role, err.rows, err.message) == (expected.role, expected.rows, expected.message)
    # a looser tolerance accepts the rows as they are (never renormalised)
    ok = kl_divergence(x.astype(dtype), cases[0].astype(dtype), prob_atol=0.05)
    assert np.isfinite(ok.loss).all()


def test_thread_count_from_the_environment(monkeypatch):
    monkeypatch.setenv("LOSSCTL_THREADS", "3")
    assert num_threads() == 3
    for text in ("0", "-2", "many", ""):
        monkeypatch.setenv("LOSSCTL_THREADS", text)
        assert num_threads() >= 1
    monkeypatch.delenv("LOSSCTL_THREADS")
    import os

    assert num_threads() == (os.cpu_count() or 1)


def test_a_failing_part_waits_for_the_others_and_raises(monkeypatch):
    monkeypatch.setenv("LOSSCTL_THREADS", "4")
    done = []

    def part(a, b):
        if a == 0:
            raise ValueError("boom")
        done.append((a, b))
        return a

    with pytest.raises(ValueError, match="boom"):
        common.row_parts(1 << 20, 1 << 30, part)
    assert len(done) == 3


def test_threads_work_in_a_forked_child(monkeypatch):
    import multiprocessing as mp

    monkeypatch.setenv("LOSSCTL_THREADS", "2")
    x = np.random.default_rng(4).normal(size=(200_000, 3)).astype(np.float32)
    y = np.zeros(200_000, dtype=np.int64)
    ref = cross_entropy(x, y).loss  # the parent's pool now exists
    ctx = mp.get_context("fork")
    with ctx.Pool(1) as pool:
        got = pool.apply(_ce_in_child, (x, y))
    np.testing.assert_array_equal(got, ref)


def _ce_in_child(x, y):
    return cross_entropy(x, y).loss
