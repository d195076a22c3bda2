"""The vectorised statistics (issue #16) keep their guarantees.

Oracles: exact order statistics of the data (np.sort), a per-value pure-Python bucket count
(math.log, one value at a time), the ``ddsketch`` package (DDSketch with the same relative
accuracy), math.fsum for sums. Never the code under test.
"""

from __future__ import annotations

import json
import math

import numpy as np
import pytest

from lossctl.stats import QuantileSketch, RunningStats

ALPHA = 0.005
QS = (0.0, 0.001, 0.01, 0.1, 0.25, 0.5, 0.75, 0.9, 0.99, 0.999, 1.0)


def _data(seed=0):
    rng = np.random.default_rng(seed)
    return np.concatenate(
        [
            rng.lognormal(0.0, 4.0, 40_000),  # 1e-7 .. 1e7: thousands of buckets
            -rng.exponential(3.0, 5_000),
            np.zeros(17),
            [-0.0, 5e-324, 1e-310, 1e300, -1e300],
        ]
    )


def _sketch(v, chunks=1, alpha=ALPHA):
    s = QuantileSketch(alpha)
    for c in np.array_split(v, chunks):
        s.update(c)
    return s


def _brute_buckets(v, alpha):
    """Bucket counts one value at a time, from the definition ceil(log_γ |v|)."""
    lg = math.log((1 + alpha) / (1 - alpha))
    pos, neg, zero = {}, {}, 0
    for x in v.tolist():
        if x == 0:
            zero += 1
            continue
        store = pos if x > 0 else neg
        k = math.ceil(math.log(abs(x)) / lg)
        store[k] = store.get(k, 0) + 1
    return pos, neg, zero


def test_sketch_buckets_equal_the_definition_for_any_chunking():
    v = _data()
    pos, neg, zero = _brute_buckets(v, ALPHA)
    for chunks in (1, 3, 64):
        s = _sketch(v, chunks)
        assert s.pos == pos and s.neg == neg and s.zero == zero
        assert s.count == len(v)


def test_sketch_quantiles_within_alpha_of_the_exact_order_statistic():
    v = _data(1)
    s = _sketch(v, 5)
    exact = np.sort(v)
    n = len(v)
    for q in QS:
        want = exact[int(math.floor(q * (n - 1)))]  # the value whose bucket the sketch reports
        got = s.quantile(q)
        assert abs(got - want) <= ALPHA * abs(want) * (1 + 1e-9), (q, got, want)


def test_sketch_quantiles_equal_ddsketch():
    ddsketch = pytest.importorskip("ddsketch")
    v = _data(2)[:-4]  # DDSketch's logarithmic mapping does not index subnormals or 1e300
    dd = ddsketch.DDSketch(relative_accuracy=ALPHA)
    for x in v.tolist():
        dd.add(x)
    s = _sketch(v, 9)
    for q in QS:
        assert s.quantile(q) == pytest.approx(dd.get_quantile_value(q), rel=1e-10), q


def test_sketch_merge_equals_one_sketch_and_state_round_trips():
    v = _data(3)
    one = _sketch(v)
    parts = [_sketch(c) for c in np.array_split(v, 4)]
    merged = parts[0]
    for p in parts[1:]:
        merged.merge(p)
    assert merged.to_dict() == one.to_dict()
    back = QuantileSketch.from_dict(json.loads(json.dumps(one.to_dict())))
    assert back.to_dict() == one.to_dict()
    assert [back.quantile(q) for q in QS] == [one.quantile(q) for q in QS]


def test_sketch_state_in_the_dict_format_loads_and_merges():
    """A state written as {"pos": {key: count}} (the saved-state format) gives the quantile of its
    buckets: here 3 values in bucket 0 (value 2/(γ+1)), 1 in bucket 100 and 1 beyond the window."""
    g = (1 + ALPHA) / (1 - ALPHA)
    d = {"alpha": ALPHA, "pos": {"0": 3, "100": 1, "1000000": 1}, "neg": {"-5": 2}, "zero": 1, "nan": 0}
    s = QuantileSketch.from_dict(d)
    assert s.count == 8
    assert s.quantile(0.0) == pytest.approx(-2 * g**-5 / (g + 1), rel=1e-15)
    assert s.quantile(2 / 7) == 0.0
    assert s.quantile(3 / 7) == pytest.approx(2 / (g + 1), rel=1e-15)
    assert s.quantile(6 / 7) == pytest.approx(2 * g**100 / (g + 1), rel=1e-15)
    assert s.quantile(1.0) == math.inf
    s.merge(QuantileSketch.from_dict(d))
    assert s.count == 16 and s.pos == {0: 6, 100: 2, 1_000_000: 2}


def test_sketch_with_infinities_and_nan_counts_them():
    s = QuantileSketch(ALPHA)
    s.update(np.array([1.0, np.inf, np.nan, -np.inf, 2.0, np.nan]))
    assert s.nan == 2 and s.count == 4
    assert s.quantile(0.0) == -math.inf and s.quantile(1.0) == math.inf


def test_running_stats_exact_sum_minmax_nan_independent_of_chunking():
    rng = np.random.default_rng(4)
    v = rng.standard_normal(300_001) ** 2 * 1e8
    v[::1000] = 1e-20  # values far smaller than the running sum
    want_sum = math.fsum(v.tolist())
    summaries = []
    for sizes in ((300_001,), (1, 999, 65_536), (7,) * 50):
        s = RunningStats(exact_limit=1000)  # past the limit: the sketch path
        i = 0
        for k in sizes:
            s.update(v[i : i + k])
            i += k
        s.update(v[i:])
        summaries.append(s.summary())
        assert s.sum.value == want_sum
        assert s.min == v.min() and s.max == v.max()
        assert s.std() == pytest.approx(float(np.std(v, ddof=1)), rel=1e-12)
    assert summaries[0] == summaries[1] == summaries[2]
    s = RunningStats()
    s.update(np.array([1.0, np.nan, 3.0]))
    s.update(np.array([np.nan]))
    assert s.nan_count == 2 and math.isnan(s.min) and math.isnan(s.max)
