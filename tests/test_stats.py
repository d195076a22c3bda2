"""Mergeable running statistics against NumPy on the whole array."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from lossctl.stats import CompensatedSum, QuantileSketch, RunningStats, TopK


def feed(values, sizes, **kw):
    s = RunningStats(**kw)
    i = 0
    for k in sizes:
        s.update(values[i : i + k])
        i += k
    s.update(values[i:])
    return s


def test_summary_matches_numpy():
    rng = np.random.default_rng(0)
    v = rng.gamma(2.0, 1.5, size=10_001)
    s = feed(v, [1, 7, 100, 3000])
    out = s.summary()
    assert out["count"] == len(v)
    assert out["mean"] == pytest.approx(v.mean(), rel=1e-14)
    assert out["std"] == pytest.approx(v.std(ddof=1), rel=1e-12)
    assert out["min"] == v.min() and out["max"] == v.max()
    for q, key in ((0.5, "p50"), (0.9, "p90"), (0.99, "p99")):
        assert out[key] == np.quantile(v, q)
    assert out["quantiles"] == "exact"


def test_compensated_sum_does_not_drift():
    # 1e8 values of 0.1 in 1000 chunks: a naive float accumulation drifts, fsum-level result expected.
    s = CompensatedSum()
    chunk = np.full(100_000, 0.1)
    for _ in range(1000):
        s.update(chunk)
    exact = math.fsum([math.fsum([0.1] * 100_000)] * 1000)
    assert s.value == pytest.approx(exact, rel=1e-15)
    assert s.value / 1e8 == pytest.approx(0.1, rel=1e-14)


@settings(max_examples=60, deadline=None)
@given(
    st.lists(st.floats(-1e6, 1e6, allow_nan=False), min_size=1, max_size=300),
    st.integers(1, 5),
)
def test_merge_of_split_runs_equals_one_run(values, parts):
    v = np.array(values)
    whole = feed(v, [])
    pieces = np.array_split(v, parts)
    merged = RunningStats()
    for p in pieces:
        part = RunningStats()
        part.update(p)
        merged.merge(part)
    a, b = whole.summary(), merged.summary()
    assert a["count"] == b["count"]
    assert b["mean"] == pytest.approx(a["mean"], rel=1e-9, abs=1e-9)
    assert b["min"] == a["min"] and b["max"] == a["max"]
    if len(v) > 1:
        assert b["std"] == pytest.approx(a["std"], rel=1e-7, abs=1e-7)
    assert b["p50"] == a["p50"]


def test_beyond_the_exact_limit_quantiles_are_within_relative_error():
    rng = np.random.default_rng(3)
    v = rng.lognormal(0.0, 2.0, size=50_000)
    s = feed(v, [1000] * 40, exact_limit=10_000, alpha=0.005)
    assert not s.quantiles_exact
    out = s.summary()
    for q, key in ((0.5, "p50"), (0.9, "p90"), (0.99, "p99")):
        true = np.quantile(v, q)
        # the rank can fall between neighbours; compare with the values around that rank
        lo, hi = np.quantile(v, [max(q - 1e-4, 0), min(q + 1e-4, 1)])
        assert lo * (1 - 0.006) <= out[key] <= hi * (1 + 0.006), (key, out[key], true)
    assert out["mean"] == pytest.approx(v.mean(), rel=1e-12)
    assert "approximate" in out["quantiles"]


def test_sketch_handles_negatives_zeros_and_merges():
    v = np.concatenate([-np.arange(1, 101, dtype=float), np.zeros(50), np.arange(1, 101, dtype=float)])
    a, b = QuantileSketch(0.01), QuantileSketch(0.01)
    a.update(v[:120])
    b.update(v[120:])
    a.merge(b)
    assert a.count == len(v)
    assert a.quantile(0.0) == pytest.approx(-100, rel=0.02)
    assert a.quantile(0.5) == 0.0
    assert a.quantile(1.0) == pytest.approx(100, rel=0.02)


def test_state_round_trips_through_json():
    rng = np.random.default_rng(1)
    v = rng.normal(size=1000)
    s = feed(v, [10, 100])
    back = RunningStats.from_dict(json.loads(json.dumps(s.to_dict())))
    assert back.summary() == s.summary()
    small = feed(v, [10], exact_limit=100)
    back = RunningStats.from_dict(json.loads(json.dumps(small.to_dict())))
    assert back.summary() == small.summary()


def test_nan_propagates():
    s = RunningStats()
    s.update(np.array([1.0, np.nan, 2.0]))
    out = s.summary()
    assert math.isnan(out["mean"]) and math.isnan(out["max"]) and math.isnan(out["p50"])


def test_topk_keeps_largest_with_ties_by_row():
    t = TopK(3)
    t.update(np.array([1.0, 5.0, 3.0]), np.array([0, 1, 2]))
    t.update(np.array([5.0, 4.0, np.nan]), np.array([3, 4, 5]))
    assert t.values.tolist() == [5.0, 5.0, 4.0]
    assert t.rows.tolist() == [1, 3, 4]
    u = TopK(3)
    u.update(np.array([6.0]), np.array([9]))
    t.merge(u)
    assert t.rows.tolist() == [9, 1, 3]
