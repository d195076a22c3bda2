"""MSE and MAE against hand-derived values and float64 references."""

from __future__ import annotations

import math

import numpy as np
import pytest

from conftest import finite_difference
from lossctl.errors import InputError
from lossctl.losses.regression import mae, mae_grad, mse, mse_grad


def test_mse_mae_hand_values():
    pred = np.array([1.0, 2.0, 3.0, -1.0])
    target = np.array([1.5, 2.0, 1.0, 5.0])
    assert mse(pred, target).loss.tolist() == [0.25, 0.0, 4.0, 36.0]
    assert mae(pred, target).loss.tolist() == [0.5, 0.0, 2.0, 6.0]


def test_multi_output_is_mean_over_columns_so_mean_is_elementwise_mean():
    rng = np.random.default_rng(0)
    pred = rng.normal(size=(40, 5))
    target = rng.normal(size=(40, 5))
    r = target - pred
    np.testing.assert_allclose(
        mse(pred, target).loss, [math.fsum(v * v for v in row) / 5 for row in r.tolist()], rtol=1e-14
    )
    assert mse(pred, target).loss.mean() == pytest.approx(float((r**2).mean()), rel=1e-14)
    assert mae(pred, target).loss.mean() == pytest.approx(float(np.abs(r).mean()), rel=1e-14)


def test_column_vector_pairs_with_flat_vector():
    a = mse(np.array([[1.0], [2.0]]), np.array([0.0, 0.0])).loss
    assert a.tolist() == [1.0, 4.0]


def test_shape_mismatch_is_an_error():
    with pytest.raises(InputError) as err:
        mse(np.zeros((3, 2)), np.zeros((3, 3)))
    assert err.value.role == "target"


def test_large_residuals_are_exact_in_float64():
    # float32 inputs are computed in float64: r² of 1e20 does not overflow.
    pred = np.array([1e20, 1e6], dtype=np.float32)
    target = np.array([0.0, 0.0], dtype=np.float32)
    res = mse(pred, target).loss
    assert res[0] == pytest.approx(float(np.float32(1e20)) ** 2, rel=1e-15)
    assert res[1] == 1e12


def test_non_finite_inputs_rejected():
    with pytest.raises(InputError) as err:
        mae(np.array([1.0, np.inf]), np.array([0.0, 0.0]))
    assert err.value.rows == [1]


@pytest.mark.parametrize("shape", [(10,), (10, 3)])
def test_gradients(shape):
    rng = np.random.default_rng(1)
    pred = rng.normal(size=shape)
    target = pred + rng.uniform(0.1, 1.0, size=shape) * rng.choice([-1, 1], size=shape)
    np.testing.assert_allclose(
        mse_grad(pred, target), finite_difference(lambda z: mse(z, target).loss, pred), rtol=1e-6, atol=1e-9
    )
    np.testing.assert_allclose(
        mae_grad(pred, target), finite_difference(lambda z: mae(z, target).loss, pred), rtol=1e-6, atol=1e-9
    )
