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
