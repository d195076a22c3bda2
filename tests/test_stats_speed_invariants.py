"""The vectorised statistics (issue #16) keep their guarantees.

Oracles: exact order statistics of the data (np.sort), a per-value pure-Python bucket count
(math.frexp and fractions.Fraction, one value at a time), the ``ddsketch`` package (DDSketch with the same relative
accuracy), math.fsum for sums. Never the code under test.
"""

from __future__ import annotations

import json
import math
from fractions import Fraction

import numpy as np
import pytest

from lossctl.stats import CompensatedSum, QuantileSketch, RunningStats

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


def _brute_key(x, bits=7):
    """The bucket of x > 0 from the definition, in exact rational arithmetic: x = m·2^e with
    1 <= m < 2 (math.frexp), L = e + (m - 1), key = ceil(L·2^bits)."""
    m, e = math.frexp(x)  # x = m·2^e, 0.5 <= m < 1
    return math.ceil((Fraction(e - 1) + 2 * Fraction(m) - 1) * 2**bits)


def _brute_bounds(k, bits=7):
    """The values (lo, hi] of bucket k, exactly: L^-1((k-1)/2^bits), L^-1(k/2^bits)."""

    def inv(y):
        e = math.floor(y)
        return (1 + (y - e)) * Fraction(2) ** e

    return inv(Fraction(k - 1, 2**bits)), inv(Fraction(k, 2**bits))


def _brute_buckets(v, bits=7):
    """Bucket counts one value at a time, from the definition."""
    pos, neg, zero = {}, {}, 0
    for x in v.tolist():
        if x == 0:
            zero += 1
            continue
        store = pos if x > 0 else neg
        k = 1_000_000 if math.isinf(x) else _brute_key(abs(x), bits)
        store[k] = store.get(k, 0) + 1
    return pos, neg, zero


def test_sketch_buckets_equal_the_definition_for_any_chunking():
    v = _data()
    pos, neg, zero = _brute_buckets(v)
    for chunks in (1, 3, 64):
        s = _sketch(v, chunks)
        assert s.pos == pos and s.neg == neg and s.zero == zero
        assert s.count == len(v)


def test_sketch_keys_at_bucket_edges_subnormals_and_the_largest_float():
    """Powers of two, their neighbours, every mantissa step of one octave, subnormals,
    the smallest normal and DBL_MAX: the keys of the definition, and each representative within
    the guaranteed 1/257 of the value (so within alpha = 0.005), plus, among the subnormals, the
    half step 2^-1075 of their grid."""
    edges = [2.0**e for e in range(-1074, 1024, 7)] + [1.0 + t / 128 for t in range(129)]
    v = np.array(sorted({y for x in edges for y in (x, np.nextafter(x, 0), np.nextafter(x, np.inf)) if 0 < y < np.inf}))
    v = np.concatenate([v, [2.2250738585072014e-308, 1.7976931348623157e308]])
    s = _sketch(v, 3)
    pos, _, _ = _brute_buckets(v)
    assert s.pos == pos
    for x in v.tolist():
        k = _brute_key(x)
        lo, hi = _brute_bounds(k)
        assert lo < Fraction(x) <= hi
        r = Fraction(s._value(k))
        # the representative is a float: rounding adds up to half a subnormal step (2^-1075)
        bound = Fraction(x) / 257 * (1 + Fraction(1, 10**12)) + Fraction(2) ** -1075
        assert abs(r - Fraction(x)) <= bound, x


def test_sketch_quantiles_within_alpha_of_the_exact_order_statistic():
    v = _data(1)
    s = _sketch(v, 5)
    exact = np.sort(v)
    n = len(v)
    for q in QS:
        want = exact[int(math.floor(q * (n - 1)))]  # the value whose bucket the sketch reports
        got = s.quantile(q)
        assert abs(got - want) <= ALPHA * abs(want) * (1 + 1e-9), (q, got, want)
        assert abs(got - want) <= abs(want) / 257 * (1 + 1e-9), (q, got, want)  # the mapping's own bound


def test_sketch_quantiles_agree_with_ddsketch():
    """ddsketch (logarithmic mapping, same alpha) and this sketch both land within alpha of the
    exact order statistic at rank q·(n-1), so within 2·alpha of each other."""
    ddsketch = pytest.importorskip("ddsketch")
    v = _data(2)[:-4]  # DDSketch's logarithmic mapping does not index subnormals or 1e300
    dd = ddsketch.DDSketch(relative_accuracy=ALPHA)
    for x in v.tolist():
        dd.add(x)
    s = _sketch(v, 9)
    exact = np.sort(v)
    for q in QS:
        want = exact[int(math.floor(q * (len(v) - 1)))]
        theirs = dd.get_quantile_value(q)
        assert abs(theirs - want) <= ALPHA * abs(want) * (1 + 1e-9), q  # the oracle itself
        assert abs(s.quantile(q) - theirs) <= 2 * ALPHA * abs(want) * (1 + 1e-9), q


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
    buckets: 3 values in bucket 0 = (1 - 1/128, 1], 1 in bucket 128 = (2 - 1/128, 2], 1 in the +inf
    bucket, 2 in negative bucket -128 = -(0.5 - 1/512, 0.5]; representatives are harmonic means."""
    d = {"alpha": ALPHA, "mapping": "linear", "pos": {"0": 3, "128": 1, "1000000": 1}, "neg": {"-128": 2}, "zero": 1, "nan": 0}
    s = QuantileSketch.from_dict(d)
    hm = lambda lo, hi: 2 * lo * hi / (lo + hi)  # noqa: E731
    assert s.count == 8
    assert s.quantile(0.0) == pytest.approx(-hm(0.5 - 1 / 512, 0.5), rel=1e-15)
    assert s.quantile(2 / 7) == 0.0
    assert s.quantile(3 / 7) == pytest.approx(hm(1 - 1 / 256, 1.0), rel=1e-15)
    assert s.quantile(6 / 7) == pytest.approx(hm(2 - 1 / 128, 2.0), rel=1e-15)
    assert s.quantile(1.0) == math.inf
    s.merge(QuantileSketch.from_dict(d))
    assert s.count == 16 and s.pos == {0: 6, 128: 2, 1_000_000: 2}


def test_sketch_saved_with_the_old_logarithmic_mapping_is_refused():
    old = {"alpha": ALPHA, "pos": {"0": 3}, "neg": {}, "zero": 0, "nan": 0}  # no "mapping": log buckets
    with pytest.raises(ValueError, match="recompute"):
        QuantileSketch.from_dict(old)


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


def _canonical_checksum(doc):
    """The state checksum as the state format defines it: SHA-256 of the canonical JSON body."""
    import hashlib

    body = {k: v for k, v in doc.items() if k != "checksum"}
    text = json.dumps(body, sort_keys=True, separators=(",", ":"), ensure_ascii=True, allow_nan=False)
    return "sha256:" + hashlib.sha256(text.encode()).hexdigest()


def test_merge_refuses_a_saved_state_with_the_old_logarithmic_sketch(tmp_path):
    """A state whose sketch has no "mapping" (written before the bucket mapping changed) is refused
    by merge with a message naming the file and the key and telling the user to recompute; one with
    today's mapping merges."""
    from conftest import assert_clean_error, run_cli

    rng = np.random.default_rng(5)
    paths = []
    for k in range(2):
        np.save(tmp_path / f"p{k}.npy", rng.normal(size=40))
        np.save(tmp_path / f"t{k}.npy", rng.normal(size=40))
        state = str(tmp_path / f"s{k}.json")
        args = ["compute", "mse", str(tmp_path / f"p{k}.npy"), str(tmp_path / f"t{k}.npy"), "-b"]
        res = run_cli([*args, "--save-state", state, "--row-offset", str(40 * k)])
        assert res.code == 0, res.err
        paths.append(state)

    def with_sketch(path, name, mapping):
        doc = json.load(open(path))
        st = doc["state"]["all"]["stats"]
        sk = QuantileSketch(st["alpha"])
        sk.update(np.array(st["values"]))
        d = sk.to_dict()
        if mapping is None:
            del d["mapping"]
        st["values"], st["sketch"] = None, d
        doc["checksum"] = _canonical_checksum(doc)
        out = tmp_path / name
        out.write_text(json.dumps(doc))
        return str(out)

    new = with_sketch(paths[1], "new.json", "linear")
    res = run_cli(["merge", paths[0], new, "-f", "json"])
    assert res.code == 0, res.err
    old = with_sketch(paths[1], "old.json", None)
    res = run_cli(["merge", paths[0], old])
    assert_clean_error(res, 1, old, "state.all.stats.sketch", "logarithmic", "recompute")


def test_running_stats_identical_for_one_and_two_threads(monkeypatch):
    """The fused blocked passes (sums, min/max, buckets; then Σ(v - mean)²) give the same state
    bit for bit on 1 and 2 threads, and for any chunking; the sum is math.fsum's."""
    rng = np.random.default_rng(6)
    v = np.concatenate([rng.lognormal(0, 3, 700_000), -rng.exponential(size=1000), [0.0] * 10])
    rng.shuffle(v)
    want_sum = math.fsum(v.tolist())
    states = []
    for threads in ("1", "2"):
        monkeypatch.setenv("LOSSCTL_THREADS", threads)
        for sizes in ((len(v),), (300_001, 400_009)):
            s = RunningStats(exact_limit=1000)
            i = 0
            for k in sizes:
                s.update(v[i : i + k])
                i += k
            s.update(v[i:])
            assert s.sum.value == want_sum
            states.append(json.dumps(s.to_dict(keep_values=False), sort_keys=True))
    assert len(set(states[0::2])) == 1 and len(set(states[1::2])) == 1  # same chunking: same bits
    a, b = (json.loads(x) for x in states[:2])
    assert a["sketch"] == b["sketch"] and a["min"] == b["min"] and a["max"] == b["max"]


def test_running_stats_chunk_sum_is_compensated_sums_of_1024_value_blocks():
    """A chunk's sum is math.fsum of its 1024-value block sums (each block summed on its own), for
    a chunk whose last 64K block is shorter than 1024 values too: the oracle builds the block sums
    with Python's sum over each block's values in float64 order, so it checks the rule, not NumPy."""
    rng = np.random.default_rng(8)
    for n in (1000, 65_536 + 500, 3 * 65_536 + 1):
        v = rng.lognormal(0, 2, n) * rng.choice([-1.0, 1.0], n)
        s = RunningStats(exact_limit=10)
        got = s.update(v)
        if n <= 1024:
            assert got == math.fsum(v.tolist())
        else:
            blocks = [math.fsum(v[a : a + 1024].tolist()) for a in range(0, n, 1024)]
            # each block's float64 sum is within 1024 ulps of its exact sum; the chunk's sum is the
            # exactly rounded sum of those block sums
            exact = math.fsum(v.tolist())
            assert abs(got - exact) <= 1024 * len(blocks) * np.spacing(max(abs(b) for b in blocks))
            assert got == s.sum.value
            # the documented contract: the same chunk sum as CompensatedSum.update (which the fused
            # blocked pass replaced inside RunningStats), for a short last block as well
            assert got == CompensatedSum().update(v)
