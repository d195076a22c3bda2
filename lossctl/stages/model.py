"""Stage 4 of a run: the report model, built from a run's metadata and accumulated state.

``report_from_state`` gives the report as a plain dict (the JSON object documented in the
README; rendering is ``lossctl.report``'s job): the headline (or, for a loss that declares
``headline_from``, the value from its reliability bins), the statistics, derived values the
loss declares (``spec.derived``), the interval, the groups, and the reproducibility
``signature``. ``run_meta`` describes a run apart from its numbers; ``normalized`` adds the
perplexities per token, word or byte.
"""

from __future__ import annotations

import hashlib
import math
from typing import Callable

import numpy as np

from lossctl import __version__
from lossctl.aggregate import Aggregate, RunState, reliability_table
from lossctl.errors import DataError, UsageError, opt
from lossctl.registry import LossSpec
from lossctl.stages.compute import load_hook as _load_hook, shape_text as _shape

SCHEMA_VERSION = 1
NORMALIZE_UNITS = ("tokens", "bytes", "words")

# What reduction sum adds up: PyTorch's reduction="sum" (element-wise losses on (N, D)
# inputs report the row mean per sample and add all N·D elements here).
SUM_RULE = (
    "PyTorch's reduction='sum' (for (N, D) element-wise losses: all N·D elements, "
    "D × the sum of the per-sample row means)"
)


def report_from_state(
    spec: LossSpec, meta: dict, acc: RunState, ci_level: float | None = None, hist: bool = False
) -> dict:
    """The report of a run (or of merged runs) from its metadata and accumulated state."""
    reduction = meta["reduction"]
    agg = acc.all
    summary = agg.stats.summary()
    value = agg.value(reduction)
    _no_overflowed_headline(spec, agg, value, reduction)
    reliability = _reliability(spec, meta, agg)
    if spec.headline_from:
        value = _value_from_bins(spec, meta, agg, reliability)
    report = {
        "schema_version": SCHEMA_VERSION,
        "lossctl_version": __version__,
        "loss": spec.name,
        **({"plugin": meta["plugin"]} if meta.get("plugin") else {}),
        "params": meta["params"],
        "reduction": reduction,
        "value": value,
        "value_rule": spec.headline if reduction == "mean" else SUM_RULE,
        "count": agg.used,
        "rows": {
            "read": meta["rows_read"],
            "used": agg.used,
            "ignored": agg.ignored,
            "dropped": acc.dropped_pred + acc.dropped_target,
            "dropped_detail": {"no_target": acc.dropped_pred, "no_prediction": acc.dropped_target},
            "nan_omitted": agg.nan_omitted,
            "nan_propagated": agg.nan_propagated,
        },
        "stats": summary,
        "components": agg.component_means(),
        "derived": _derived(spec, value, reduction, agg.component_means()),
        "top": _top_rows(acc),
        "inputs": meta["inputs"],
        "id_col": meta["id_col"],
        "nan_policy": meta["nan_policy"],
        "warnings": [],
    }
    if meta.get("shards"):
        report["shards"] = meta["shards"]
    if spec.batched:
        report["batch_size"] = meta["batch_size"]
    report["headline_differs_from_mean"] = _differs(value, summary["mean"], reduction)
    if acc.bootstrap is not None and ci_level:
        report["ci"] = _interval(spec, meta, acc, value, ci_level, reduction)
    if meta.get("group_by"):
        report["group_by"] = meta["group_by"]
        report["groups"] = [
            _group_report(spec, key, g, reduction, meta)
            for key, g in sorted(acc.groups.items(), key=lambda kv: _sort_key(kv[0]))
        ]
    if hist:
        report["hist"] = agg.histogram()
    if reliability is not None:
        report["reliability"] = reliability
    report["signature"] = signature(report)
    return report


def _top_rows(acc: RunState) -> list[dict]:
    top = []
    for v, r in zip(acc.top.values.tolist(), acc.top.rows.tolist()):
        item = {"row": int(r), "loss": v}
        if r in acc.top_ids:
            item["id"] = acc.top_ids[r]
        top.append(item)
    return top


def _interval(spec: LossSpec, meta: dict, acc: RunState, value, ci_level: float, reduction: str) -> dict:
    """The percentile interval of the streaming Poisson bootstrap (of the bin sums for a headline
    from reliability bins)."""
    if spec.headline_from:
        hook, params = _load_hook(spec.headline_from), meta.get("params") or {}
        est = acc.bootstrap.bin_estimates(lambda bins, total: hook(bins, total, params))
        est = est[np.isfinite(est)]
        lo, hi = (
            (float("nan"), float("nan"))
            if not len(est) or (math.isnan(value) if isinstance(value, float) else False)
            else tuple(float(q) for q in np.quantile(est, [(1 - ci_level) / 2, (1 + ci_level) / 2]))
        )
    else:
        lo, hi = acc.bootstrap.interval(ci_level, reduction)
    return {
        "level": ci_level,
        "low": lo,
        "high": hi,
        "method": "percentile, streaming Poisson bootstrap over rows",
        "resamples": acc.bootstrap.n,
        "seed": acc.bootstrap.seed,
    }


def _no_overflowed_headline(spec: LossSpec, agg: Aggregate, value: float, reduction: str, group=None) -> None:
    """A headline that is NaN only because a float64 sum overflowed (inf/inf, inf - inf) is refused:
    the true value may well be finite (huge class weights cancel in Σ w·l / Σ w)."""
    if not math.isnan(value) or agg.nan_propagated:
        return
    if math.isfinite(agg.num.value) and math.isfinite(agg.den.value):
        return
    where = "" if group is None else f" of group {group!r}"
    raise DataError(
        f"the {reduction} of {spec.name}{where} cannot be computed in float64: the sums over rows overflow "
        f"(Σ = {agg.num.value!r} over {agg.den.value!r}), so the result would be NaN. Expected per-sample values "
        "and weights whose sums stay below 1.8e308; scale the weights (the weighted mean does not change) "
        "or the inputs down."
    )


def _derived(spec: LossSpec, value: float, reduction: str, comps: dict | None = None) -> dict:
    derived = {}
    if "perplexity" in spec.derived and reduction == "mean":
        if value != value:
            derived["perplexity"] = float("nan")
        else:
            derived["perplexity"] = math.exp(value) if value < 709.0 else float("inf")
    if "clipfrac" in spec.derived and comps and comps.get("tokens"):
        # Fractions of all counted tokens (ratios of the components' sums): TRL's clipfrac
        # (the clipped term is the one taken) and Stable-Baselines3's clip_fraction (|r - 1| > ε).
        derived["clipfrac_trl"] = comps["clipped"] / comps["tokens"]
        derived["clipfrac_sb3"] = comps["clipped_sb3"] / comps["tokens"]
    return derived


def _group_report(spec: LossSpec, key, g: Aggregate, reduction: str, meta: dict | None = None) -> dict:
    summary = g.stats.summary()
    value = g.value(reduction)
    _no_overflowed_headline(spec, g, value, reduction, _py(key))
    reliability = _reliability(spec, meta or {}, g)
    if spec.headline_from:
        value = _value_from_bins(spec, meta or {}, g, reliability)
    out = {
        "group": _py(key),
        "value": value,
        "count": g.used,
        "rows": {
            "used": g.used,
            "ignored": g.ignored,
            "nan_omitted": g.nan_omitted,
            "nan_propagated": g.nan_propagated,
        },
        "stats": summary,
        "components": g.component_means(),
        "derived": _derived(spec, value, reduction, g.component_means()),
    }
    if reliability is not None:
        out["reliability"] = reliability
    return out


def headline_from_allowed(spec: LossSpec, ci, reduction: str, params: dict | None = None) -> None:
    """A headline computed from per-bin sums (ece): the streaming bootstrap resamples those sums
    (per resample and bin), so ci works with uniform bins; quantile bins are formed after the
    pass from a fine grid, per resample they would differ, so ci is refused there. It is not a
    sum over rows: reduction sum is refused rather than answered wrongly."""
    if not spec.headline_from:
        return
    if ci and (params or {}).get("binning") == "quantile":
        raise UsageError(
            f"{opt('ci')} is not available for {spec.name} with {opt('binning')} quantile: the bins are formed "
            f"from the data after the pass, so each resample would need its own; use {opt('binning')} uniform."
        )
    if reduction == "sum":
        raise UsageError(
            f"{opt('reduction')} sum is not defined for {spec.name} (its value is not a sum over rows); use mean."
        )


def _reliability(spec: LossSpec, meta: dict, agg: Aggregate) -> dict | None:
    if not (spec.reliability or spec.headline_from):
        return None
    from lossctl.losses.classification import QUANTILE_FINE_BINS, RELIABILITY_BINS

    params = meta.get("params") or {}
    n_bins = int(params.get("bins") or RELIABILITY_BINS)
    binning = params.get("binning") or "uniform"
    return reliability_table(agg, n_bins, binning, fine=QUANTILE_FINE_BINS)


def _value_from_bins(spec: LossSpec, meta: dict, agg: Aggregate, reliability: dict | None) -> float:
    if agg.rel_nan():
        return float("nan")  # nan propagate: a NaN row makes the value NaN, as for every loss
    bins = reliability["bins"] if reliability else []
    return float(_load_hook(spec.headline_from)(bins, agg.used, meta.get("params") or {}))




def _differs(value: float, plain_mean: float, reduction: str) -> bool:
    return (
        reduction == "mean"
        and math.isfinite(value)
        and math.isfinite(plain_mean)
        and abs(value - plain_mean) > 1e-12 * max(1.0, abs(value))
    )


def _sort_key(key):
    return (0, key, "") if isinstance(key, (int, float)) else (1, 0, str(key))


def _py(v):
    return v.item() if isinstance(v, np.generic) else v


def _jsonable(v):
    if isinstance(v, (list, tuple)):
        return [x if isinstance(x, str) else float(x) for x in v]
    return v


def _fmt_param(v) -> str:
    if v is None:
        return "none"
    if isinstance(v, bool):
        return "yes" if v else "no"
    if isinstance(v, (list, tuple)):
        text = ",".join(x if isinstance(x, str) else f"{x:g}" for x in v)
        if len(v) > 8:
            text = f"{len(v)}:" + hashlib.sha256(text.encode()).hexdigest()[:8]
        return text
    if isinstance(v, float):
        return "e" if v == math.e else f"{v:g}"
    return str(v)


def check_normalize(spec: LossSpec, opts) -> None:
    """normalize_by and counts: for a loss that derives a perplexity, with a unit and its counts."""
    by = opts.normalize_by
    if by is None and opts.counts is None:
        return
    if "perplexity" not in spec.derived:
        raise UsageError(
            f"{opt('normalize_by')} and {opt('counts')} give perplexities of a language model's log-likelihood; "
            f"{spec.name} is not one (use token-cross-entropy)."
        )
    if by is None:
        raise UsageError(
            f"{opt('counts')} gives a count per sequence: say what it counts with {opt('normalize_by')} bytes, "
            "words or tokens."
        )
    if by not in NORMALIZE_UNITS:
        raise UsageError(f"{opt('normalize_by')} must be one of {', '.join(NORMALIZE_UNITS)}; got {by!r}.")
    if by in ("bytes", "words") and opts.counts is None:
        raise UsageError(
            f"{opt('normalize_by')} {by} needs {opt('counts')} COL or PATH:COL: the number of {by} of each sequence "
            "(lossctl sees only the log-probabilities, not the text)."
        )
    if opts.reduction != "mean":
        raise UsageError(
            f"{opt('normalize_by')} applies to the mean ({opt('reduction')} mean): it divides the total NLL by a "
            "total count."
        )


def signature(report: dict) -> str:
    """A sacreBLEU-style one-line reproducibility signature of a result."""
    parts = [report["loss"]]
    if report.get("plugin"):  # a plugin's loss: which plugin, which version ("DIST VERSION")
        parts.append("plugin:" + report["plugin"].replace(" ", "@"))
    for name, value in report["params"].items():
        parts.append(f"{name}:{_fmt_param(value)}")
    shapes = ",".join(
        f"{i['role']}{_shape(i['shape']).replace(' ', '')}{i['dtype']}" for i in report["inputs"] if i["shape"]
    )
    parts.append(f"inputs:{shapes}")
    parts.append(f"red:{report['reduction']}")
    rows = report["rows"]
    read = "/".join(str(v) for v in rows["read"].values())
    parts.append(f"rows:{read}->{rows['used']}")
    if rows["ignored"] or rows["dropped"] or rows["nan_omitted"]:
        parts.append(f"ign:{rows['ignored']},drop:{rows['dropped']},nan:{rows['nan_omitted']}")
    if report.get("batch_size"):
        parts.append(f"batch:{report['batch_size']}")
    if report.get("ci"):
        ci = report["ci"]
        parts.append(f"ci:{ci['level']:g},n:{ci['resamples']},seed:{ci['seed']},poisson-bootstrap")
    if report.get("group_by"):
        parts.append(f"group:{report['group_by']}")
    if report.get("id_col"):
        parts.append(f"join:{report['id_col']}")
    parts.append(f"nan:{report['nan_policy']}")
    parts.append(f"lossctl:{report['lossctl_version']}")
    return "|".join(parts)


# ---------------------------------------------------------------------------
# Options from the command line or a check config (one validation for both)


def normalized(report: dict, by: str, nll: float, units: float, counts_label: str) -> None:
    """normalize_by: perplexity per token / word / byte and bits per byte, as
    lm-evaluation-harness defines them: totals over the corpus (Σ NLL / Σ units), never
    averages of per-sequence values. ``nll``: Σ over the sequences used of their summed token
    NLL (nats); ``units``: Σ of their counts."""
    report["normalize"] = {"by": by, "counts": counts_label, "nll_sum": nll, "units": units}
    derived = report.setdefault("derived", {})
    if by != "tokens":
        # Per word / byte only: the rows may hold whole documents' log-likelihoods (the harness
        # logs one per document), and exp of their mean is no perplexity of anything.
        derived.pop("perplexity", None)
    if not units > 0:
        raise DataError(
            f"{opt('normalize_by')} {by}: the {by} of the sequences used add up to {units!r} "
            f"({counts_label}), so there is no per-{by[:-1]} value. Expected counts above 0."
        )
    rate = nll / units

    def ppl(x):
        return float("nan") if x != x else (math.exp(x) if x < 709.0 else float("inf"))

    if by == "tokens":
        derived["perplexity"] = ppl(rate)
    elif by == "words":
        derived["word_perplexity"] = ppl(rate)
    else:
        derived["byte_perplexity"] = ppl(rate)
        derived["bits_per_byte"] = rate / math.log(2)


def run_meta(spec: LossSpec, params: dict, opts, inputs, batch_size: int | None, group_label: str | None) -> dict:
    """Everything about a run except the accumulated numbers (JSON-safe)."""
    params = dict(params)
    if spec.batched:
        params["batch_size"] = batch_size
    return {
        "loss": spec.name,
        "params": {p.name: _jsonable(params.get(p.dest)) for p in spec.params},
        "reduction": opts.reduction,
        "rows_read": {i.role.name: i.reader.rows_read for i in inputs},
        "inputs": [
            {
                "role": i.role.name,
                "source": i.source.text,
                "path": i.source.display,
                "column": i.column_label,
                "columns": i.column_names,
                "format": i.source.fmt,
                "shape": list(i.shape) if i.shape else None,
                "dtype": i.dtype,
                "rows": i.reader.rows_read,
            }
            for i in inputs
        ],
        "id_col": opts.id_col,
        "nan_policy": opts.nan,
        "group_by": group_label if opts.group_by else None,
        "batch_size": batch_size if spec.batched else None,
        "row_offset": opts.row_offset,
        **({"plugin": spec.plugin} if spec.plugin else {}),
    }
