"""The mergeable state of a run: overall and per-group aggregates, worst samples, bootstrap.

``RunState`` is what a run accumulates chunk by chunk and what ``save_state`` /
``lossctl merge`` serialise and combine: every part merges exactly (counts and
compensated sums add, moments combine by Chan's update, min/max, sketches and
bootstrap sums add), so shards evaluated anywhere give the report of one run.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from lossctl import untrusted as u
from lossctl.stats import (
    CompensatedSum,
    PoissonBootstrap,
    QuantileSketch,
    RunningStats,
    TopK,
    _sketch_of,
)

GROUP_EXACT_LIMIT = 1 << 16  # values kept per group for exact quantiles
# Values kept over all groups together (64 MiB): past it the largest groups keep a quantile
# sketch instead, so --max-groups x GROUP_EXACT_LIMIT values are never held at once.
GROUPS_KEPT_BUDGET = 1 << 23

# Reliability (calibration) bins: a kernel gives per-row components "rel/bin" (the bin index),
# "rel/conf" (confidence) and "rel/hit" (correct: 0/1, or a fraction); an aggregate keeps them as
# the per-bin sums "rel/<bin>/n", "rel/<bin>/conf", "rel/<bin>/hit" (CompensatedSums among its
# components), so they merge, group and save like every other sum.
REL = "rel/"


def _split_rel(components: dict) -> tuple[dict, dict]:
    plain = {k: v for k, v in components.items() if not k.startswith(REL)}
    rel = {k: v for k, v in components.items() if k.startswith(REL)}
    return plain, rel


class Aggregate:
    """Aggregates of one set of rows (all rows, or one group)."""

    def __init__(self, exact_limit: int | None = None):
        self.stats = RunningStats() if exact_limit is None else RunningStats(exact_limit=exact_limit)
        self.num = CompensatedSum()
        self.den = CompensatedSum()
        self.components: dict[str, CompensatedSum] = {}
        self.used = 0
        self.ignored = 0
        self.nan_omitted = 0
        self.nan_propagated = 0

    def add(self, values, num, den, components: dict[str, np.ndarray]) -> None:
        s = self.stats.update(values)
        if num is values:  # the headline numerator is the loss itself: its sum is already known
            self.num.add(s)
        else:
            self.num.update(num)
        if den is None:
            self.den.add(float(len(values)))
        else:
            self.den.update(den)
        components, rel = _split_rel(components)
        for name, comp in components.items():
            self.components.setdefault(name, CompensatedSum()).update(comp)
        if rel:
            self.add_bins(rel["rel/bin"], rel["rel/conf"], rel["rel/hit"])

    def add_bins(self, bins, conf, hit) -> None:
        """Per-bin sums of rows, confidence and correctness (rows with a NaN bin, from
        nan propagate, are counted under rel/nan)."""
        bins = np.asarray(bins, dtype=np.float64)
        ok = np.isfinite(bins)
        if not ok.all():
            self.components.setdefault(REL + "nan", CompensatedSum()).add(float((~ok).sum()))
            bins, conf, hit = bins[ok], np.asarray(conf)[ok], np.asarray(hit)[ok]
        if not len(bins):
            return
        b = bins.astype(np.int64)
        # the same stable order; bin numbers that fit 16 bits sort by NumPy's radix sort (4x faster)
        small = len(b) and -(1 << 15) <= b.min() and b.max() < 1 << 15
        order = np.argsort(b.astype(np.int16) if small else b, kind="stable")
        b = b[order]
        conf = np.asarray(conf, dtype=np.float64)[order]
        hit = np.asarray(hit, dtype=np.float64)[order]
        starts = np.flatnonzero(np.r_[True, b[1:] != b[:-1]])
        ends = np.r_[starts[1:], len(b)]
        comps = self.components
        for k, lo, hi in zip(b[starts].tolist(), starts.tolist(), ends.tolist()):
            key = f"{REL}{k}/"
            comps.setdefault(key + "n", CompensatedSum()).add(float(hi - lo))
            comps.setdefault(key + "conf", CompensatedSum()).update(conf[lo:hi])
            comps.setdefault(key + "hit", CompensatedSum()).update(hit[lo:hi])

    def bin_sums(self) -> dict[int, tuple[float, float, float]]:
        """{bin: (rows, Σ confidence, Σ correct)} of the bins that hold rows."""
        out = {}
        for name, comp in self.components.items():
            parts = name.split("/")
            if len(parts) == 3 and parts[0] + "/" == REL and parts[2] == "n":
                k = int(parts[1])
                out[k] = (
                    comp.value,
                    self.components[f"{REL}{k}/conf"].value,
                    self.components[f"{REL}{k}/hit"].value,
                )
        return dict(sorted(out.items()))

    def rel_nan(self) -> int:
        c = self.components.get(REL + "nan")
        return 0 if c is None else int(c.value)

    def merge(self, other: "Aggregate") -> None:
        self.stats.merge(other.stats)
        self.num.merge(other.num)
        self.den.merge(other.den)
        for name, comp in other.components.items():
            self.components.setdefault(name, CompensatedSum()).merge(comp)
        self.used += other.used
        self.ignored += other.ignored
        self.nan_omitted += other.nan_omitted
        self.nan_propagated += other.nan_propagated

    def value(self, reduction: str) -> float:
        if reduction == "sum":
            return self.num.value
        den = self.den.value
        return self.num.value / den if den else float("nan")

    def component_means(self) -> dict[str, float]:
        if not self.used:
            return {}
        return {k: v.value / self.used for k, v in self.components.items() if not k.startswith(REL)}

    def histogram(self, bins: int = 20) -> dict | None:
        """Bins of the per-sample values: linear, or logarithmic for positive heavy tails."""
        st = self.stats
        if st.count == 0 or not math.isfinite(st.min) or not math.isfinite(st.max):
            return None
        vals = st.values()
        lo, hi = st.min, st.max
        p50 = st.quantile(0.5)
        log = lo > 0 and hi / max(lo, 1e-300) > 1e3 and hi / max(p50, 1e-300) > 20
        if hi == lo:
            edges = np.array([lo, hi])
        elif log:
            edges = np.geomspace(lo, hi, bins + 1)
        else:
            edges = np.linspace(lo, hi, bins + 1)
        if vals is not None:
            counts = np.histogram(vals, bins=edges)[0] if hi > lo else np.array([len(vals)])
        else:
            counts = _sketch_histogram(_sketch_of(st), edges)
        return {
            "edges": [float(e) for e in edges],
            "counts": [int(c) for c in counts],
            "scale": "log" if log else "linear",
            "exact": vals is not None,
        }

    def to_dict(self) -> dict:
        return {
            "stats": self.stats.to_dict(),
            "num": self.num.to_dict(),
            "den": self.den.to_dict(),
            "components": {k: v.to_dict() for k, v in self.components.items()},
            "used": self.used,
            "ignored": self.ignored,
            "nan_omitted": self.nan_omitted,
            "nan_propagated": self.nan_propagated,
        }

    @classmethod
    def from_dict(cls, d: dict) -> "Aggregate":
        a = cls()
        a.stats = RunningStats.from_dict(d["stats"])
        a.num = CompensatedSum.from_dict(d["num"])
        a.den = CompensatedSum.from_dict(d["den"])
        a.components = {k: CompensatedSum.from_dict(v) for k, v in d["components"].items()}
        for key in ("used", "ignored", "nan_omitted", "nan_propagated"):
            setattr(a, key, int(d[key]))
        return a


def add_segments(aggs: list[Aggregate], starts, counts, vals, num, den, components: dict[str, np.ndarray]) -> None:
    """``aggs[j].add(...)`` of the rows ``starts[j] : starts[j] + counts[j]`` of arrays sorted by group.

    The same updates as one ``Aggregate.add`` per group, with the per-group reductions (min, max,
    squared deviations) done for all groups at once and exactly rounded sums (math.fsum, as
    ``CompensatedSum.update``) of each group's rows: many small groups cost a few float operations
    each, not a dozen NumPy calls. A group with a non-finite value, or more than 1024 rows, takes
    ``Aggregate.add`` itself.
    """
    if not len(aggs):
        return
    vals = np.asarray(vals, dtype=np.float64)
    starts = np.asarray(starts, dtype=np.intp)
    counts = np.asarray(counts, dtype=np.intp)
    ends = starts + counts
    arrays = [np.asarray(a, dtype=np.float64) for a in (num, *components.values()) if a is not None]
    arrays += [np.asarray(den, dtype=np.float64)] if den is not None else []
    with np.errstate(invalid="ignore", over="ignore"):
        finite = np.isfinite(vals)
        for a in arrays:
            finite &= np.isfinite(a)
        bad = np.logical_or.reduceat(~finite, starts) | (counts > 1024)
        centre = np.add.reduceat(vals, starts) / counts  # only to centre the squared deviations
        d = vals - np.repeat(centre, counts)
        m2 = np.add.reduceat(d * d, starts)
        lo = np.minimum.reduceat(vals, starts)
        hi = np.maximum.reduceat(vals, starts)
    same_num = num is vals or num is None
    v_list = vals.tolist()
    n_list = v_list if same_num else np.asarray(num, dtype=np.float64).tolist()
    d_list = None if den is None else np.asarray(den, dtype=np.float64).tolist()
    components, rel = _split_rel(components)
    c_lists = {k: np.asarray(v, dtype=np.float64).tolist() for k, v in components.items()}
    fsum = math.fsum
    for j, agg in enumerate(aggs):
        a, b = int(starts[j]), int(ends[j])
        if bad[j]:
            agg.add(
                vals[a:b],
                (vals if num is None else num)[a:b],
                None if den is None else den[a:b],
                {k: v[a:b] for k, v in (components | rel).items()},
            )
            continue
        n = b - a
        st = agg.stats
        s = fsum(v_list[a:b])
        # Chan's update with this group's mean (from its exactly rounded sum) and squared deviations.
        mean = s / n
        st._combine(n, mean, max(float(m2[j]) - n * (float(centre[j]) - mean) ** 2, 0.0))
        st.sum.add(s)
        if not math.isnan(st.min):
            st.min = min(st.min, float(lo[j]))
            st.max = max(st.max, float(hi[j]))
        seg = vals[a:b]
        if st._kept is not None and st.count <= st.exact_limit:
            st._kept.append(seg.copy())
        else:
            st._to_sketch().update(seg)
        agg.num.add(s if same_num else fsum(n_list[a:b]))
        agg.den.add(float(n) if d_list is None else fsum(d_list[a:b]))
        for name, lst in c_lists.items():
            comp = agg.components.get(name)
            if comp is None:
                comp = agg.components[name] = CompensatedSum()
            comp.add(fsum(lst[a:b]))
        if rel:
            agg.add_bins(rel["rel/bin"][a:b], rel["rel/conf"][a:b], rel["rel/hit"][a:b])


def _sketch_histogram(sk: QuantileSketch, edges: np.ndarray) -> np.ndarray:
    """Approximate bin counts from sketch buckets (each bucket counted at its representative)."""
    counts = np.zeros(len(edges) - 1, dtype=np.int64)
    reps, ns = [], []
    for k, c in sk.pos.items():
        reps.append(sk._value(k))
        ns.append(c)
    for k, c in sk.neg.items():
        reps.append(-sk._value(k))
        ns.append(c)
    if sk.zero:
        reps.append(0.0)
        ns.append(sk.zero)
    if not reps:
        return counts
    idx = np.clip(np.searchsorted(edges, np.array(reps), side="right") - 1, 0, len(counts) - 1)
    np.add.at(counts, idx, np.array(ns))
    return counts


class RunState:
    """Everything a run accumulates; mergeable and serialisable."""

    def __init__(self, top: int = 5, bootstrap: tuple[int, int] | None = None):
        self.all = Aggregate()
        self.groups: dict[Any, Aggregate] = {}
        self.top = TopK(top)
        self.top_ids: dict[int, Any] = {}
        self.bootstrap = PoissonBootstrap(*bootstrap) if bootstrap else None
        self.rows_seen = 0
        self.dropped_pred = 0
        self.dropped_target = 0

    def group(self, key) -> Aggregate:
        if key not in self.groups:
            self.groups[key] = Aggregate(exact_limit=GROUP_EXACT_LIMIT)
        return self.groups[key]

    def bound_kept(self, budget: int | None = None) -> None:
        """Keep at most ``budget`` exact values over all groups: the groups holding most switch
        to their quantile sketch (their quantiles are then reported as approximate)."""
        budget = GROUPS_KEPT_BUDGET if budget is None else budget
        kept = [(g.stats.count, g.stats) for g in self.groups.values() if g.stats.quantiles_exact]
        total = sum(n for n, _ in kept)
        if total <= budget:
            return
        for n, stats in sorted(kept, key=lambda kv: -kv[0]):
            stats.to_sketch()
            total -= n
            if total <= budget:
                break

    def merge(self, other: "RunState") -> None:
        self.all.merge(other.all)
        for key, agg in other.groups.items():
            self.group(key).merge(agg)
        self.top.merge(other.top)
        self.top_ids.update(other.top_ids)
        if self.bootstrap is not None and other.bootstrap is not None:
            self.bootstrap.merge(other.bootstrap)
        elif (self.bootstrap is None) != (other.bootstrap is None):
            raise ValueError("one state has bootstrap resamples and the other has none")
        self.rows_seen += other.rows_seen
        self.dropped_pred += other.dropped_pred
        self.dropped_target += other.dropped_target
        self.bound_kept()

    def to_dict(self) -> dict:
        return {
            "all": self.all.to_dict(),
            "groups": [[_key_json(k), v.to_dict()] for k, v in self.groups.items()],
            "top": self.top.to_dict(),
            "top_ids": [[r, v] for r, v in self.top_ids.items()],
            "bootstrap": None if self.bootstrap is None else self.bootstrap.to_dict(),
            "rows_seen": self.rows_seen,
            "dropped_pred": self.dropped_pred,
            "dropped_target": self.dropped_target,
        }

    @classmethod
    def from_dict(cls, d: dict) -> "RunState":
        s = cls()
        s.all = Aggregate.from_dict(d["all"])
        s.groups = {k: Aggregate.from_dict(v) for k, v in ((_key_py(k), v) for k, v in d["groups"])}
        s.top = TopK.from_dict(d["top"])
        s.top_ids = {int(r): v for r, v in d["top_ids"]}
        s.bootstrap = None if d["bootstrap"] is None else PoissonBootstrap.from_dict(d["bootstrap"])
        s.rows_seen = int(d["rows_seen"])
        s.dropped_pred = int(d["dropped_pred"])
        s.dropped_target = int(d["dropped_target"])
        return s


def _key_json(k):
    return k.item() if hasattr(k, "item") else k


def _key_py(k):
    return k


# ---------------------------------------------------------------------------
# A state read back (lossctl merge) is untrusted: its structure, types and ranges are
# checked (STATE_SCHEMA), then what must hold between its numbers (check_state), before
# RunState.from_dict builds anything from it.
# ---------------------------------------------------------------------------


def _stored(v):
    """A float as lossctl.stats writes it: a JSON number, or "nan", "inf", "-inf"."""
    if isinstance(v, str) and v in ("nan", "inf", "-inf"):
        return v
    if isinstance(v, (int, float)) and not isinstance(v, bool):
        return v
    raise u.Bad('a number (or "nan", "inf", "-inf")', v)


def _m2(v):
    """Σ (x - mean)²: never negative (NaN or inf after infinite losses)."""
    _stored(v)
    if not isinstance(v, str) and v < 0:
        raise u.Bad("a number >= 0 (a sum of squares)", v)
    return v


def _bucket(k):
    try:
        if abs(int(k)) <= 1_000_000:
            return k
    except (TypeError, ValueError):
        pass
    raise u.Bad("a bucket number (an integer of at most 1000000 in magnitude)", k)


def _all(schema: dict) -> u.Rule:
    return u.table_of(schema, tuple(schema))


_count = u.integer(0, 2**63 - 1)  # counts and row numbers: int64
_alpha = u.number(0.001, 1, high_open=True)  # stats.mapping_bits: the sketch accuracies it supports
_SUM = _all({"s": _stored, "c": _stored})
_SKETCH = u.table_of(
    {
        "alpha": _alpha,
        "mapping": u.one_of("linear"),  # stats.MAPPING; sketches without it (logarithmic) are refused
        "pos": u.dict_of(_count, _bucket),
        "neg": u.dict_of(_count, _bucket),
        "zero": _count,
        "nan": _count,
    },
    ("alpha", "pos", "neg", "zero", "nan"),
)
_STATS = _all(
    {
        "count": _count,
        "sum": _SUM,
        "mean": _stored,
        "m2": _m2,
        "min": _stored,
        "max": _stored,
        "nan_count": _count,
        "exact_limit": _count,
        "alpha": _alpha,
        "values": u.maybe(u.list_of(_stored)),
        "sketch": u.maybe(_SKETCH),
    }
)
_AGGREGATE = _all(
    {
        "stats": _STATS,
        "num": _SUM,
        "den": _SUM,
        "components": u.dict_of(_SUM, u.text),
        "used": _count,
        "ignored": _count,
        "nan_omitted": _count,
        "nan_propagated": _count,
    }
)
STATE_SCHEMA = _all(
    {
        "all": _AGGREGATE,
        "groups": u.list_of(u.pair(u.scalar, _AGGREGATE)),
        "top": _all({"k": _count, "values": u.list_of(_stored), "rows": u.list_of(_count)}),
        "top_ids": u.list_of(u.pair(_count, u.scalar)),
        "bootstrap": u.maybe(
            u.table_of(
                {
                    "n": u.integer(1),
                    "seed": u.integer(0, 2**64 - 1),
                    "num": u.list_of(_stored),
                    "den": u.list_of(_stored),
                    # per resample and bin (ece): resampled rows, Σ confidence, Σ correct
                    "bins": _all({k: u.list_of(u.list_of(_stored)) for k in ("n", "conf", "hit")}),
                },
                ("n", "seed", "num", "den"),
            )
        ),
        "rows_seen": _count,
        "dropped_pred": _count,
        "dropped_target": _count,
    }
)


def check_state(d: dict) -> None:
    """What must hold between the numbers of a state that passed STATE_SCHEMA; raises Bad."""

    def aggregate(a: dict, where: str) -> None:
        st = a["stats"]
        if st["count"] != a["used"] + a["nan_propagated"]:
            need = f"count = used + nan_propagated ({a['used']} + {a['nan_propagated']})"
            raise u.Bad(need, st["count"], f"{where}.stats.count")
        if st["nan_count"] > st["count"]:
            raise u.Bad(f"at most count ({st['count']}) NaN values", st["nan_count"], f"{where}.stats.nan_count")
        if (st["values"] is None) == (st["sketch"] is None):
            raise u.Bad("either kept values or a sketch (exactly one)", path=f"{where}.stats", show_value=False)
        if st["values"] is not None and len(st["values"]) != st["count"]:
            raise u.Bad(f"a list of count ({st['count']}) values", st["values"], f"{where}.stats.values")
        if st["sketch"] is not None:
            sk = st["sketch"]
            if "mapping" not in sk:
                raise u.Bad(
                    "a sketch with this lossctl's bucket mapping ('linear'): this one has the logarithmic buckets "
                    "of an earlier lossctl, which do not merge with today's",
                    path=f"{where}.stats.sketch",
                    show_value=False,
                )
            total = sum(sk["pos"].values()) + sum(sk["neg"].values()) + sk["zero"] + sk["nan"]
            if total != st["count"]:
                raise u.Bad(f"buckets holding count ({st['count']}) values in all", total, f"{where}.stats.sketch")

    aggregate(d["all"], "all")
    for i, (_, g) in enumerate(d["groups"]):
        aggregate(g, f"groups[{i}][1]")
    top = d["top"]
    if len(top["values"]) != len(top["rows"]) or len(top["rows"]) > top["k"]:
        raise u.Bad(f"as many rows as values, at most k ({top['k']})", top["rows"], "top.rows")
    boot = d["bootstrap"]
    if boot is not None and not len(boot["num"]) == len(boot["den"]) == boot["n"]:
        raise u.Bad(f"a list of n ({boot['n']}) resample sums, as den", boot["num"], "bootstrap.num")
    if boot is not None and boot.get("bins") is not None:
        shapes = {k: (len(v), {len(row) for row in v}) for k, v in boot["bins"].items()}
        widths = set().union(*(w for _, w in shapes.values()))
        if any(n != boot["n"] for n, _ in shapes.values()) or len(widths) != 1:
            raise u.Bad(f"n ({boot['n']}) rows of equal length for each bin sum", shapes, "bootstrap.bins")


def reliability_table(agg: Aggregate, n_bins: int, binning: str = "uniform", fine: int = 1000) -> dict | None:
    """The reliability table (bin, rows, mean confidence, accuracy) from an aggregate's bin sums.

    ``uniform``: the sums are already per bin of linspace(0, 1, n_bins + 1). ``quantile``: the
    sums are per bin of a fine uniform grid (``fine`` bins), grouped into ``n_bins`` bins of about
    equal counts; the edges are fine-grid edges, so the bins approximate the exact quantiles."""
    sums = agg.bin_sums()
    if not sums:
        return None
    if binning == "quantile":
        total = sum(n for n, _, _ in sums.values())
        groups: list[list] = []
        cum = 0.0
        for k, (n, c, h) in sums.items():
            if not groups or cum >= total * len(groups) / n_bins:
                groups.append([k, k, 0.0, 0.0, 0.0])
            g = groups[-1]
            g[1] = k
            g[2] += n
            g[3] += c
            g[4] += h
            cum += n
        rows = [(lo / fine, (hi + 1) / fine, n, c, h) for lo, hi, n, c, h in groups]
    else:
        rows = []
        for k in range(n_bins):
            n, c, h = sums.get(k, (0.0, 0.0, 0.0))
            rows.append((k / n_bins, (k + 1) / n_bins, n, c, h))
    bins = [
        {
            "low": lo,
            "high": hi,
            "count": int(n),
            "confidence": c / n if n else None,
            "accuracy": h / n if n else None,
        }
        for lo, hi, n, c, h in rows
    ]
    out = {
        "bins": bins,
        "n_bins": n_bins,
        "binning": binning,
        "edges": "each bin (low, high]; the first also holds 0 (sklearn's calibration_curve)",
    }
    if binning == "quantile":
        out["approximate"] = True
        out["note"] = (
            f"quantile bins are formed from a {fine}-bin uniform grid in one streaming pass: "
            f"their edges are accurate to 1/{fine}, so counts are only approximately equal"
        )
    if agg.rel_nan():
        out["nan_rows"] = agg.rel_nan()
    return out
