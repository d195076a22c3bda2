"""Paired comparison of several prediction files against one target.

Every candidate is compared with the baseline (the first file) on the rows both
scored, sample by sample:

- the difference of headline values (candidate - baseline; lower is better);
- a paired bootstrap interval of that difference: the same Poisson(1) row weights
  (``lossctl.stats.PoissonBootstrap``) resample both, so the interval reflects the
  per-sample pairing;
- a paired permutation test (approximate randomization): each row's baseline and
  candidate values are swapped with probability ½; the p-value is the share of
  permutations whose |difference| reaches the observed one, ``(k + 1) / (R + 1)``;
- the samples that got most worse.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from lossctl.errors import DataError, UsageError, opt
from lossctl.stats import PoissonBootstrap

SCHEMA_VERSION = 1


def _headline(num: np.ndarray, den: np.ndarray, reduction: str) -> float:
    if reduction == "sum":
        return float(np.sum(num))
    d = float(np.sum(den))
    return float(np.sum(num)) / d if d else float("nan")


def paired_bootstrap(a: dict, c: dict, reduction: str, n: int, seed: int, level: float) -> tuple[float, float]:
    """Percentile interval of H(candidate) - H(baseline) under shared row weights."""
    rows = np.arange(len(a["num"]), dtype=np.int64)
    ba, bc = PoissonBootstrap(n, seed), PoissonBootstrap(n, seed)
    ba.update(a["num"], a["den"], rows)
    bc.update(c["num"], c["den"], rows)
    diff = bc.estimates(reduction) - ba.estimates(reduction)
    diff = diff[np.isfinite(diff)]
    if not len(diff):
        return float("nan"), float("nan")
    lo, hi = np.quantile(diff, [(1 - level) / 2, (1 + level) / 2])
    return float(lo), float(hi)


def permutation_p_value(a: dict, c: dict, reduction: str, permutations: int, seed: int) -> float:
    """Two-sided approximate-randomization p-value of the paired difference."""
    m = len(a["num"])
    observed = _headline(c["num"], c["den"], reduction) - _headline(a["num"], a["den"], reduction)
    if not math.isfinite(observed):
        return float("nan")
    d_num = c["num"] - a["num"]
    d_den = c["den"] - a["den"]
    s_a, s_c = float(np.sum(a["num"])), float(np.sum(c["num"]))
    den_a, den_c = float(np.sum(a["den"])), float(np.sum(c["den"]))
    rng = np.random.Generator(np.random.PCG64([seed, 0x5EED]))
    tol = 1e-12 * max(1.0, abs(observed))
    hits = 0
    block = max(1, min(permutations, (1 << 23) // max(m, 1)))
    done = 0
    while done < permutations:
        k = min(block, permutations - done)
        bits = np.unpackbits(rng.integers(0, 256, size=(k, (m + 7) // 8), dtype=np.uint8), axis=1, count=m)
        swapped = bits.astype(np.float64)
        moved_num = swapped @ d_num
        if reduction == "sum":
            delta = (s_c - moved_num) - (s_a + moved_num)
        else:
            moved_den = swapped @ d_den
            with np.errstate(invalid="ignore", divide="ignore"):
                delta = (s_c - moved_num) / (den_c - moved_den) - (s_a + moved_num) / (den_a + moved_den)
        hits += int(np.sum(np.abs(delta) >= abs(observed) - tol))
        done += k
    return (hits + 1) / (permutations + 1)


def adjust(p_values: list[float], method: str) -> list[float]:
    """Multiplicity-adjusted p-values: Holm's step-down (1979), or the raw values for 'none'."""
    if method == "none":
        return list(p_values)
    if method != "holm":
        raise UsageError(f"the correction must be holm or none; got {method!r}.")
    m = len(p_values)
    order = sorted(range(m), key=lambda i: (math.isnan(p_values[i]), p_values[i]))
    out = [float("nan")] * m
    running = 0.0
    for rank, i in enumerate(order):
        p = p_values[i]
        if math.isnan(p):
            continue
        running = max(running, min(1.0, (m - rank) * p))
        out[i] = running
    return out


def _groups(base: dict, cand: dict, red: str, resamples: int, seed: int, level: float, permutations: int) -> list[dict]:
    """Per-group values, deltas, paired intervals and p-values over the group's paired rows."""
    if base.get("group") is None:
        return []
    keys = base["group"]
    out = []
    for key in sorted(set(keys.tolist()), key=lambda k: (0, k, "") if isinstance(k, (int, float)) else (1, 0, str(k))):
        sel = keys == key
        a = {f: base[f][sel] for f in ("num", "den", "loss")}
        c = {f: cand[f][sel] for f in ("num", "den", "loss")}
        va, vc = _headline(a["num"], a["den"], red), _headline(c["num"], c["den"], red)
        lo, hi = paired_bootstrap(a, c, red, resamples, seed, level)
        d = c["loss"] - a["loss"]
        out.append(
            {
                "group": key.item() if hasattr(key, "item") else key,
                "rows": int(sel.sum()),
                "baseline": va,
                "value": vc,
                "delta": vc - va,
                "delta_ci": {"level": level, "low": lo, "high": hi},
                "p_value": permutation_p_value(a, c, red, permutations, seed),
                "better_rows": int(np.sum(d < 0)),
                "worse_rows": int(np.sum(d > 0)),
            }
        )
    return out


def gate(doc: dict, *, max_delta=None, max_rel_delta=None, fail_if_worse=False, alpha=None, per_group=True) -> None:
    """Evaluate the gates on every candidate (and its groups): sets 'outcomes' and 'status' on each."""
    def evaluate(item: dict, base_value: float, where: str) -> list[dict]:
        out = []
        d = item["delta"]
        rel = (0.0 if d == 0 else math.copysign(math.inf, d)) if base_value == 0 else d / abs(base_value)

        def add(bound, limit, observed, passed, message):
            out.append({"bound": bound, "limit": limit, "observed": observed, "passed": bool(passed), "message": message})

        finite = isinstance(d, float) and math.isfinite(d)
        if max_delta is not None:
            ok = finite and d <= max_delta
            add("max-delta", max_delta, d, ok, f"{where}: delta {d:.6g} {'<=' if ok else '>'} max-delta {max_delta:g}")
        if max_rel_delta is not None:
            ok = finite and rel <= max_rel_delta
            add("max-rel-delta", max_rel_delta, rel, ok, f"{where}: relative delta {rel:.6g} {'<=' if ok else '>'} max-rel-delta {max_rel_delta:g}")
        if fail_if_worse:
            ci = item["delta_ci"]
            worse = ci["low"] > 0
            add(
                "fail-if-worse",
                0.0,
                ci["low"],
                not worse,
                f"{where}: the {ci['level'] * 100:g}% CI of delta [{ci['low']:.6g}, {ci['high']:.6g}] "
                + ("lies entirely on the worse side" if worse else "does not lie entirely on the worse side"),
            )
        if alpha is not None:
            p = item.get("p_adjusted", item["p_value"])
            worse = d > 0 and p < alpha
            which = "adjusted p" if doc["method"].get("correction", "none") != "none" else "p"
            add(
                "alpha",
                alpha,
                p,
                not worse,
                f"{where}: worse with {which} = {p:.4g} " + ("<" if worse else ">=") + f" alpha {alpha:g}"
                if d > 0
                else f"{where}: not worse (delta {d:.6g}, {which} = {p:.4g})",
            )
        return out

    for c in doc["candidates"]:
        c["outcomes"] = evaluate(c, doc["baseline"]["value"], c["label"])
        if per_group:
            for g in c.get("groups", []):
                g["outcomes"] = evaluate(g, g["baseline"], f"{c['label']} [{doc.get('group_by')}={g['group']}]")
                c["outcomes"] += g["outcomes"]
        c["status"] = "fail" if any(not o["passed"] for o in c["outcomes"]) else "pass"
    doc["passed"] = all(c["status"] == "pass" for c in doc["candidates"])
    doc["gates"] = {
        "max_delta": max_delta,
        "max_rel_delta": max_rel_delta,
        "fail_if_worse": fail_if_worse,
        "alpha": alpha,
        "per_group": per_group,
    }


def _histogram(values: np.ndarray) -> dict:
    """Equal-width bins of the per-sample differences (for the HTML report)."""
    v = values[np.isfinite(values)]
    bins = int(min(40, max(10, round(math.sqrt(len(v)))))) if len(v) else 1
    counts, edges = np.histogram(v, bins=bins)
    return {"edges": [float(e) for e in edges], "counts": [int(c) for c in counts]}


def pair(runs: list[dict], by_id: bool) -> tuple[np.ndarray, list[dict], int]:
    """Rows scored in every run, aligned; returns (keys, per-run arrays, rows excluded)."""
    key_name = "id" if by_id else "row"
    keys = [r[key_name] for r in runs]
    common = keys[0]
    for k in keys[1:]:
        common = np.intersect1d(common, k)
    aligned = []
    for r, k in zip(runs, keys):
        order = np.argsort(k, kind="stable")
        pos = order[np.searchsorted(k[order], common)]
        aligned.append(
            {f: r[f][pos] for f in ("row", "loss", "num", "den")}
            | {f: None if r.get(f) is None else r[f][pos] for f in ("id", "group")}
        )
    excluded = max(len(k) for k in keys) - len(common)
    return common, aligned, excluded


def compare(
    spec,
    predictions: list[str],
    others: dict[str, str | None],
    params: dict[str, Any],
    options,
    *,
    level: float,
    resamples: int,
    seed: int,
    permutations: int,
    top: int,
    delta_hist: bool = False,
    labels: list[str] | None = None,
    correction: str = "none",
) -> dict:
    from lossctl import engine

    labels = _check_systems(spec, predictions, options, labels)
    pred_role = spec.inputs[spec.pred_index].name
    runs, reports = [], []
    for text in predictions:
        texts = [text if role.name == pred_role else others.get(role.name) for role in spec.inputs]
        opts = engine.Options(**{**options.__dict__, "collect": True, "per_sample": None, "grad": None, "ci": None})
        report, rows = engine.run_with_rows(spec, texts, params, opts)
        reports, runs = [*reports, report], [*runs, rows]
    by_id = options.id_col is not None
    keys, aligned, excluded = pair(runs, by_id)
    if not len(keys):
        raise DataError("compare: no row was scored in every run, so nothing can be paired.")
    base, red = aligned[0], options.reduction
    base_value = _headline(base["num"], base["den"], red)
    candidates = []
    for text, label, report, c in zip(predictions[1:], labels[1:], reports[1:], aligned[1:]):
        one = _candidate(base, c, red, resamples, seed, level, permutations)
        diff = c["loss"] - base["loss"]
        candidates.append(
            {
                "source": text,
                "label": label,
                "value": one["value"],
                "delta": one["value"] - base_value,
                "delta_ci": {"level": level, "low": one["low"], "high": one["high"]},
                "p_value": one["p"],
                "better_rows": int(np.sum(diff < 0)),
                "worse_rows": int(np.sum(diff > 0)),
                "most_worse": _most_worse(base, c, diff, top),
                "signature": report["signature"],
            }
        )
        if delta_hist:
            candidates[-1]["delta_hist"] = _histogram(diff)
        if options.group_by:
            candidates[-1]["groups"] = _groups(base, c, red, resamples, seed, level, permutations)
    _adjust_all(candidates, correction)
    return {
        "schema_version": SCHEMA_VERSION,
        "kind": "compare",
        "loss": spec.name,
        "params": reports[0]["params"],
        "reduction": red,
        "paired_by": "id" if by_id else "row",
        "paired_rows": int(len(keys)),
        "excluded_rows": int(excluded),
        "baseline": {
            "source": predictions[0],
            "label": labels[0],
            "value": base_value,
            "signature": reports[0]["signature"],
        },
        "candidates": candidates,
        "method": {
            "interval": f"paired percentile bootstrap, {resamples} Poisson resamples, seed {seed}",
            "p_value": f"paired approximate randomization, {permutations} permutations, two-sided",
            "correction": correction,
        },
        "group_by": reports[0].get("group_by"),
        "signature": f"compare|{reports[0]['signature']}|ci:{level:g},n:{resamples},seed:{seed}|ar:{permutations}",
    }


def _check_systems(spec, predictions: list[str], options, labels: list[str] | None) -> list[str]:
    """What compare needs before any file is read; returns the systems' labels."""
    if len(predictions) < 2:
        raise UsageError("compare needs a baseline and at least one candidate: BASELINE CANDIDATE [CANDIDATE ...].")
    if options.reduction == "none":
        raise UsageError(f"compare needs a headline value: {opt('reduction')} mean or sum.")
    if getattr(spec, "headline_from", ""):
        raise UsageError(
            f"compare {spec.name} is not available: its value is a function of per-bin sums, not a mean of "
            "per-sample values, so paired per-sample differences do not give its difference. Compare a "
            "per-sample loss such as brier, or run `lossctl compute` on each model."
        )
    if labels is not None and len(labels) != len(predictions):
        raise UsageError(
            f"give one label per system: {len(predictions)} systems but {len(labels)} labels."
        )
    if labels is None:
        from lossctl.diff import unique_labels

        labels = unique_labels(predictions)
    if len(set(labels)) != len(labels):
        raise UsageError(f"system labels must differ; got {', '.join(labels)}.")
    return labels


def _candidate(base: dict, c: dict, red: str, resamples: int, seed: int, level: float, permutations: int) -> dict:
    """A candidate's headline, the paired bootstrap interval of its difference and the p-value."""
    value = _headline(c["num"], c["den"], red)
    lo, hi = paired_bootstrap(base, c, red, resamples, seed, level)
    p = permutation_p_value(base, c, red, permutations, seed)
    return {"value": value, "low": lo, "high": hi, "p": p}


def _adjust_all(candidates: list[dict], correction: str) -> None:
    """Every p-value (candidates and their groups) adjusted for the multiple comparisons together."""
    tests = [(c, None) for c in candidates] + [(c, g) for c in candidates for g in c.get("groups", [])]
    adjusted = adjust([(g or c)["p_value"] for c, g in tests], correction)
    for (c, g), p_adj in zip(tests, adjusted):
        (g or c)["p_adjusted"] = p_adj


def _most_worse(base: dict, c: dict, diff: np.ndarray, top: int) -> list[dict]:
    """The ``top`` rows where the candidate is worse than the baseline, largest difference first."""
    order = np.lexsort((c["row"], -diff))[:top]
    worse = []
    for i in order.tolist():
        if not diff[i] > 0:
            break
        item = {
            "row": int(c["row"][i]),
            "baseline": float(base["loss"][i]),
            "candidate": float(c["loss"][i]),
            "delta": float(diff[i]),
        }
        if c["id"] is not None:
            item["id"] = c["id"][i].item() if hasattr(c["id"][i], "item") else c["id"][i]
        worse.append(item)
    return worse


# ``lossctl.compare(...)`` is the Python API's compare (lossctl.api.compare). This module is the
# package's attribute ``compare`` once imported, so the module itself is made callable as that function.
class _CallableModule(__import__("types").ModuleType):
    def __call__(self, *args, **kwargs):
        from lossctl.api import compare as api_compare

        return api_compare(*args, **kwargs)


__import__("sys").modules[__name__].__class__ = _CallableModule
