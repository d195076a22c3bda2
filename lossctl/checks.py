"""CI gates: bounds on a headline value, baselines, check configs, composite losses, JUnit.

Bounds (lower is better for every loss):

- ``max X``: fails when ``value > X``.
- ``min X``: fails when ``value < X``.
- ``max-abs-increase A`` (needs a baseline b): fails when ``value - b > A``.
- ``max-rel-increase R`` (needs a baseline b): fails when ``(value - b) / |b| > R``;
  with ``b = 0`` the relative increase is 0 when ``value = 0`` and +inf when
  ``value > 0``, so any increase over a zero baseline fails.
- A NaN or missing value (or baseline) fails every bound that needs it.

A baseline is a number, or a JSON file written by ``lossctl compute --format json``
(its ``value``, and per-group values) or by ``lossctl check --format json`` (the
entry with the same check name).
"""

from __future__ import annotations

import difflib
import json
import math
import os
from dataclasses import dataclass, field
from typing import Any

from lossctl.errors import DataError, LossctlError, UsageError
from lossctl.io.remote import is_uri

BOUND_KEYS = ("max", "min", "baseline", "max-abs-increase", "max-rel-increase")


@dataclass
class Baseline:
    value: float | None
    groups: dict[Any, float] = field(default_factory=dict)
    source: str = ""


@dataclass
class Bounds:
    max: float | None = None
    min: float | None = None
    baseline: Baseline | None = None
    max_abs_increase: float | None = None
    max_rel_increase: float | None = None
    per_group: bool = False

    @property
    def any(self) -> bool:
        return any(v is not None for v in (self.max, self.min, self.max_abs_increase, self.max_rel_increase))


def _num(v) -> float:
    if v is None:
        return float("nan")
    if isinstance(v, str):
        return {"inf": math.inf, "-inf": -math.inf, "nan": math.nan}.get(v, math.nan)
    return float(v)


def load_baseline(spec, loss: str | None, check_name: str | None = None, base_dir: str = ".") -> Baseline:
    """A number, or the value(s) of a previous JSON result."""
    if isinstance(spec, (int, float)) and not isinstance(spec, bool):
        return Baseline(float(spec), source=repr(float(spec)))
    text = str(spec)
    try:
        return Baseline(float(text), source=text)
    except ValueError:
        pass
    path = text if os.path.isabs(text) else os.path.join(base_dir, text)
    if not os.path.exists(path):
        raise DataError(f"baseline {text}: file not found; expected a number or a JSON result of lossctl.")
    try:
        with open(path) as fh:
            data = json.load(fh)
    except (OSError, ValueError) as exc:
        raise DataError(f"baseline {text}: not readable JSON ({exc}).") from None
    if isinstance(data, dict) and "checks" in data:
        entries = [c for c in data["checks"] if c.get("name") == check_name]
        if not entries:
            names = ", ".join(repr(c.get("name")) for c in data["checks"])
            raise DataError(f"baseline {text} has no check named {check_name!r} (it has {names}).")
        data = entries[0]
    if not isinstance(data, dict) or "value" not in data:
        raise DataError(f"baseline {text}: expected a lossctl JSON result with a 'value'.")
    if loss is not None and data.get("loss") not in (None, loss):
        raise DataError(
            f"baseline {text} is a {data.get('loss')} result, but this check computes {loss}; compare like with like."
        )
    groups = {g["group"]: _num(g.get("value")) for g in data.get("groups") or []}
    return Baseline(_num(data["value"]), groups, source=text)


def evaluate(value, bounds: Bounds, baseline_value: float | None = None, label: str = "value") -> list[dict]:
    """Every bound's outcome for one value: {'bound', 'limit', 'observed', 'passed', 'message'}."""
    out: list[dict] = []
    v = _num(value)
    finite = not math.isnan(v)

    def add(bound: str, limit, observed, passed: bool, message: str) -> None:
        out.append({"bound": bound, "limit": limit, "observed": observed, "passed": passed, "message": message})

    if bounds.max is not None:
        ok = finite and v <= bounds.max
        add(
            "max",
            bounds.max,
            v,
            ok,
            f"{label} {_fmt(v)} {'<=' if ok else '>'} max {_fmt(bounds.max)}" if finite else f"{label} is NaN",
        )
    if bounds.min is not None:
        ok = finite and v >= bounds.min
        add(
            "min",
            bounds.min,
            v,
            ok,
            f"{label} {_fmt(v)} {'>=' if ok else '<'} min {_fmt(bounds.min)}" if finite else f"{label} is NaN",
        )
    if bounds.max_abs_increase is not None or bounds.max_rel_increase is not None:
        b = _num(baseline_value)
        if math.isnan(b):
            for name, lim in (
                ("max-abs-increase", bounds.max_abs_increase),
                ("max-rel-increase", bounds.max_rel_increase),
            ):
                if lim is not None:
                    add(name, lim, None, False, f"{label}: no baseline value (missing or NaN)")
        else:
            delta = v - b if finite else math.nan
            # Bounds are inclusive; allow the rounding of the subtraction itself (a few ulps),
            # so that exactly +2% passes "max-rel-increase 0.02".
            slack = 4 * math.ulp(max(abs(v), abs(b))) if finite else 0.0
            if bounds.max_abs_increase is not None:
                ok = finite and delta <= bounds.max_abs_increase + slack
                add(
                    "max-abs-increase",
                    bounds.max_abs_increase,
                    delta,
                    ok,
                    f"{label} {_fmt(v)} - baseline {_fmt(b)} = {_fmt(delta)} {'<=' if ok else '>'} {_fmt(bounds.max_abs_increase)}"
                    if finite
                    else f"{label} is NaN",
                )
            if bounds.max_rel_increase is not None:
                rel = relative_increase(v, b)
                ok = finite and (
                    rel <= bounds.max_rel_increase or (b != 0 and delta <= bounds.max_rel_increase * abs(b) + slack)
                )
                add(
                    "max-rel-increase",
                    bounds.max_rel_increase,
                    rel,
                    ok,
                    f"{label} {_fmt(v)} vs baseline {_fmt(b)}: relative increase {_fmt(rel)} "
                    f"{'<=' if ok else '>'} {_fmt(bounds.max_rel_increase)}"
                    if finite
                    else f"{label} is NaN",
                )
    if not finite and not out:
        add("finite", None, v, False, f"{label} is NaN")
    return out


def relative_increase(value: float, baseline: float) -> float:
    """(value - baseline) / |baseline|; over a zero baseline: 0 if equal, ±inf otherwise."""
    delta = value - baseline
    if baseline == 0:
        return 0.0 if delta == 0 else math.copysign(math.inf, delta)
    return delta / abs(baseline)


def check_report(report: dict, bounds: Bounds) -> list[dict]:
    """Outcomes for a compute report: the headline, and each group when per_group is set."""
    base = bounds.baseline
    outcomes = evaluate(report.get("value"), bounds, base.value if base else None, label=report.get("loss", "value"))
    if bounds.per_group and report.get("groups") is not None:
        seen = set()
        for g in report["groups"]:
            seen.add(g["group"])
            bval = None
            if base is not None:
                bval = base.groups.get(g["group"], math.nan)
            label = f"{report.get('loss', 'value')}[{report.get('group_by', 'group')}={g['group']}]"
            for o in evaluate(g.get("value"), bounds, bval, label=label):
                o["group"] = g["group"]
                outcomes.append(o)
        if base is not None and (bounds.max_abs_increase is not None or bounds.max_rel_increase is not None):
            for key in base.groups:
                if key not in seen:
                    outcomes.append(
                        {
                            "bound": "present",
                            "limit": None,
                            "observed": None,
                            "passed": False,
                            "group": key,
                            "message": f"group {key!r} is in the baseline but has no rows now",
                        }
                    )
    return outcomes


def _fmt(v) -> str:
    if v is None:
        return "none"
    v = float(v)
    if math.isnan(v):
        return "nan"
    if math.isinf(v):
        return "inf" if v > 0 else "-inf"
    return f"{v:.6g}"


# ---------------------------------------------------------------------------
# Config files
# ---------------------------------------------------------------------------

RUN_KEYS = (
    "id-col",
    "on-missing",
    "nan",
    "group-by",
    "max-groups",
    "per-group",
    "reduction",
    "input-format",
    "no-header",
    "delimiter",
    "prob-atol",
    "chunk-size",
    "ci",
    "ci-n",
    "seed",
    "engine",
    "scheduler",
    "workers",
)
CHECK_KEYS = ("name", "loss", "inputs", "params", "terms", *BOUND_KEYS, *RUN_KEYS)
TERM_KEYS = ("loss", "inputs", "params", "weight", *RUN_KEYS)


@dataclass
class Term:
    loss: str
    inputs: list[str]
    params: dict[str, Any]
    weight: float
    options: dict[str, Any]


@dataclass
class Check:
    name: str
    terms: list[Term]
    bounds: Bounds
    composite: bool
    options: dict[str, Any]


def _toml():
    try:
        import tomllib  # Python 3.11+
    except ModuleNotFoundError:  # pragma: no cover - Python 3.10
        import tomli as tomllib
    return tomllib


def _unknown(keys, allowed, where: str) -> None:
    for k in keys:
        if k not in allowed:
            close = difflib.get_close_matches(k, allowed, n=1)
            hint = f" Did you mean {close[0]!r}?" if close else ""
            raise UsageError(f"{where}: unknown key {k!r}.{hint} Allowed: {', '.join(allowed)}.")


def load_config(path: str) -> list[Check]:
    """Parse a check config (TOML); paths inside are relative to the config file."""
    if not os.path.exists(path):
        raise DataError(f"{path}: file not found; expected a TOML check config.")
    try:
        with open(path, "rb") as fh:
            data = _toml().load(fh)
    except Exception as exc:  # noqa: BLE001 - tomllib.TOMLDecodeError and I/O
        raise UsageError(f"{path}: not valid TOML ({exc}).") from None
    base = os.path.dirname(os.path.abspath(path))
    _unknown(data.keys(), ("checks", "defaults"), path)
    defaults = data.get("defaults", {})
    _unknown(defaults.keys(), RUN_KEYS, f"{path} [defaults]")
    raw = data.get("checks")
    if not isinstance(raw, list) or not raw:
        raise UsageError(f"{path}: no [[checks]]; each check needs a name, a loss (or terms) and inputs.")
    checks: list[Check] = []
    names: set[str] = set()
    for i, c in enumerate(raw):
        where = f"{path} check {i + 1}"
        _unknown(c.keys(), CHECK_KEYS, where)
        name = str(c.get("name") or f"check-{i + 1}")
        if name in names:
            raise UsageError(f"{where}: the name {name!r} is used twice; names identify checks in reports.")
        names.add(name)
        opts = {**defaults, **{k: c[k] for k in RUN_KEYS if k in c}}
        if "terms" in c:
            if "loss" in c or "inputs" in c:
                raise UsageError(f"{where} ({name}): give either loss + inputs, or terms (a composite), not both.")
            terms = []
            for j, t in enumerate(c["terms"]):
                _unknown(t.keys(), TERM_KEYS, f"{where} ({name}) term {j + 1}")
                terms.append(
                    _term(t, {**opts, **{k: t[k] for k in RUN_KEYS if k in t}}, base, f"{where} ({name}) term {j + 1}")
                )
            composite = True
        else:
            terms = [_term(c, opts, base, f"{where} ({name})")]
            composite = False
        bounds = Bounds(
            max=_opt_float(c, "max", where),
            min=_opt_float(c, "min", where),
            max_abs_increase=_opt_float(c, "max-abs-increase", where),
            max_rel_increase=_opt_float(c, "max-rel-increase", where),
            per_group=bool(opts.get("per-group", False)),
        )
        if "baseline" in c:
            bounds.baseline = load_baseline(c["baseline"], None if composite else terms[0].loss, name, base)
        if (bounds.max_abs_increase is not None or bounds.max_rel_increase is not None) and bounds.baseline is None:
            raise UsageError(f"{where} ({name}): max-abs-increase / max-rel-increase need a baseline.")
        checks.append(Check(name, terms, bounds, composite, opts))
    return checks


def _opt_float(c: dict, key: str, where: str) -> float | None:
    if key not in c:
        return None
    try:
        return float(c[key])
    except (TypeError, ValueError):
        raise UsageError(f"{where}: {key} must be a number; got {c[key]!r}.") from None


def _term(t: dict, opts: dict, base: str, where: str) -> Term:
    from lossctl import registry

    if "loss" not in t or "inputs" not in t:
        raise UsageError(f"{where}: needs loss and inputs.")
    spec = registry.get(str(t["loss"]))
    inputs = t["inputs"]
    if isinstance(inputs, str) or not isinstance(inputs, list):
        raise UsageError(
            f'{where}: inputs must be a list of sources, e.g. ["preds.parquet:logits", "labels.csv:label"].'
        )
    required = [r for r in spec.inputs if not r.optional]
    if not (len(required) <= len(inputs) <= len(spec.inputs)):
        raise UsageError(
            f"{where}: {spec.name} takes {len(required)}"
            + (f" to {len(spec.inputs)}" if len(spec.inputs) != len(required) else "")
            + f" inputs ({', '.join(r.metavar for r in spec.inputs)}); got {len(inputs)}."
        )
    resolved = [
        s if s == "-" or s.startswith("-:") or os.path.isabs(s) or is_uri(s) else os.path.join(base, s)
        for s in map(str, inputs)
    ]
    params_raw = t.get("params", {}) or {}
    params = {}
    for k, v in params_raw.items():
        try:
            p = spec.param(k)
        except KeyError:
            close = difflib.get_close_matches(k, [p.name for p in spec.params], n=1)
            hint = f" Did you mean {close[0]!r}?" if close else ""
            raise UsageError(f"{where}: {spec.name} has no parameter {k!r}.{hint}") from None
        if p.type == "bool":
            params[p.dest] = bool(v)
        elif isinstance(v, list):
            params[p.dest] = p.parse(",".join(str(x) for x in v), spec.name)
        else:
            params[p.dest] = p.parse(v, spec.name)
    weight = float(t.get("weight", 1.0))
    if "group-by" in opts and ":" in str(opts["group-by"]) and not os.path.isabs(str(opts["group-by"])):
        opts = {**opts, "group-by": os.path.join(base, str(opts["group-by"]))}
    return Term(spec.name, resolved, params, weight, opts)


# ---------------------------------------------------------------------------
# Running checks
# ---------------------------------------------------------------------------


def run_check(check: Check) -> dict:
    """Run every term of a check; never raises for data problems (status 'error' instead)."""
    from lossctl import engine, registry

    out: dict[str, Any] = {
        "name": check.name,
        "composite": check.composite,
        "loss": " + ".join(f"{_fmt(t.weight)}×{t.loss}" for t in check.terms)
        if check.composite
        else check.terms[0].loss,
    }
    try:
        reports = []
        for t in check.terms:
            spec = registry.get(t.loss)
            params = {**spec.defaults(), **t.params}
            texts = list(t.inputs) + [None] * (len(spec.inputs) - len(t.inputs))
            opts = engine.build_options(t.options, top=5)
            if opts.reduction == "none":
                raise UsageError(f"check {check.name}: reduction 'none' has no value to check.")
            workers = t.options.get("workers")
            reports.append(
                engine.run_on(
                    str(t.options.get("engine", "local")),
                    spec,
                    texts,
                    params,
                    opts,
                    t.options.get("scheduler"),
                    None if workers is None else int(workers),
                )
            )
        if check.composite:
            terms = []
            total = 0.0
            for t, rep in zip(check.terms, reports):
                v = _num(rep["value"])
                terms.append(
                    {
                        "loss": t.loss,
                        "weight": t.weight,
                        "value": v,
                        "weighted": t.weight * v,
                        "signature": rep["signature"],
                        "report": rep,
                    }
                )
                total += t.weight * v
            out.update(loss=" + ".join(f"{_fmt(t.weight)}×{t.loss}" for t in check.terms), value=total, terms=terms)
            base = check.bounds.baseline
            outcomes = evaluate(total, check.bounds, base.value if base else None, label=check.name)
            out["signature"] = " + ".join(f"{_fmt(t['weight'])}×[{t['signature']}]" for t in terms)
        else:
            rep = reports[0]
            out.update(loss=rep["loss"], value=rep["value"], report=rep, signature=rep["signature"])
            outcomes = check_report(rep, check.bounds)
        out["outcomes"] = outcomes
        out["status"] = status_of(outcomes)
    except LossctlError as exc:
        out.update(status="error", error=str(exc), outcomes=[], exit_code=exc.exit_code)
    return out


# ---------------------------------------------------------------------------
# JUnit XML
# ---------------------------------------------------------------------------


def junit_xml(results: list[dict], suite: str = "lossctl") -> str:
    """One <testcase> per check; failures and errors carry the numbers."""
    from xml.sax.saxutils import quoteattr

    failures = sum(1 for r in results if r["status"] == "fail")
    errors = sum(1 for r in results if r["status"] == "error")
    lines = [
        '<?xml version="1.0" encoding="UTF-8"?>',
        f'<testsuites><testsuite name={quoteattr(suite)} tests="{len(results)}" failures="{failures}" errors="{errors}">',
    ]
    for r in results:
        head = f"  <testcase classname={quoteattr(suite)} name={quoteattr(r['name'])}"
        body = []
        if r["status"] == "fail":
            msgs = [o["message"] for o in r.get("outcomes", []) if not o["passed"]]
            body.append(
                f'    <failure message={quoteattr("; ".join(msgs))} type="CheckFailed">{_esc(_describe(r))}</failure>'
            )
        elif r["status"] == "error":
            body.append(
                f'    <error message={quoteattr(r.get("error", ""))} type="Error">{_esc(r.get("error", ""))}</error>'
            )
        out = _describe(r)
        if r["status"] != "error":
            body.append(f"    <system-out>{_esc(out)}</system-out>")
        lines.append(head + ">" if body else head + " />")
        if body:
            lines.extend(body)
            lines.append("  </testcase>")
    lines.append("</testsuite></testsuites>")
    return "\n".join(lines) + "\n"


def _describe(r: dict) -> str:
    parts = [f"{r['name']}: {r.get('loss', '')} = {_fmt(r.get('value'))}"]
    for o in r.get("outcomes", []):
        parts.append(("PASS " if o["passed"] else "FAIL ") + o["message"])
    if r.get("signature"):
        parts.append(r["signature"])
    return "\n".join(parts)


def _esc(text: str) -> str:
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def status_of(outcomes: list[dict]) -> str:
    return "pass" if all(o["passed"] for o in outcomes) else "fail"


__all__ = [
    "Baseline",
    "Bounds",
    "Check",
    "LossctlError",
    "check_report",
    "evaluate",
    "junit_xml",
    "load_baseline",
    "load_config",
    "relative_increase",
]
