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
import math
import os
from dataclasses import dataclass, field
from typing import Any

from lossctl import untrusted as u
from lossctl.errors import DataError, LossctlError, UsageError, short_reason
from lossctl.io.remote import is_uri
from lossctl.literal import visible
from lossctl.options import CONFIG_OPTIONS, SEED_MAX, Options, build_options

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


def _result_number(v):
    """A value in a JSON result: a number, null, or the strings lossctl writes for inf and NaN."""
    if v is None or v in ("inf", "-inf", "nan"):
        return v
    return u.number(finite=False)(v) if not (isinstance(v, float) and math.isnan(v)) else v


def _group_key(v):
    if v is None or isinstance(v, (str, int, float)):
        return v
    raise u.Bad("a group value (a string or a number)", v)


_BASELINE_SCHEMA = {
    "value": _result_number,
    "loss": u.maybe(u.text),
    "groups": u.maybe(u.list_of(u.table_of({"group": _group_key, "value": _result_number}, ("group",), closed=False))),
}


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
        data = u.read_json(path)
    except (OSError, ValueError) as exc:
        raise DataError(f"baseline {text}: not readable JSON ({short_reason(exc)}).") from None
    if isinstance(data, dict) and "checks" in data:
        listed = data["checks"] if isinstance(data["checks"], list) else []
        entries = [c for c in listed if isinstance(c, dict) and c.get("name") == check_name]
        if check_name is None:
            raise DataError(f"baseline {text} is the result of lossctl check; give the JSON of lossctl compute.")
        if not entries:
            names = ", ".join(u.shown(c.get("name")) for c in listed if isinstance(c, dict))
            raise DataError(f"baseline {text} has no check named {check_name!r} (it has {names or 'none'}).")
        data = entries[0]
    try:
        data = u.validate(data, _BASELINE_SCHEMA, required=("value",), what="a lossctl JSON result")
    except u.Bad as bad:
        key = f", key {bad.path!r}" if bad.path else ""
        raise DataError(
            f"baseline {text}{key}: {bad.describe()}; expected a lossctl JSON result with a 'value'."
        ) from None
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

# The schema of a check config: key -> rule (lossctl.untrusted), one line per key; the run
# options' keys and rules come from their one declaration in lossctl.options. Every value is
# checked by type and range before anything runs; an error names the file, the check and the
# key, and makes only that check an error (the other checks still run).
def _rule(o) -> u.Rule:
    """The config rule of a run option, from its one declaration (lossctl.options.SCHEMA)."""
    if o.type == "bool":
        return u.flag
    if o.type == "choice":
        return u.one_of(*o.choices)
    if o.type == "char":
        return u.char
    if o.type == "int":
        return u.integer(o.low, o.high)
    if o.type == "float":
        return u.number(o.low, o.high, low_open=o.low_open, high_open=o.high_open)
    return u.text


RUN_SCHEMA: dict[str, u.Rule] = {o.key: _rule(o) for o in CONFIG_OPTIONS}
BOUND_SCHEMA: dict[str, u.Rule] = {
    "max": u.number(),
    "min": u.number(),
    "baseline": u.number_or_text,
    "max-abs-increase": u.number(),
    "max-rel-increase": u.number(),
}
TERM_SCHEMA: dict[str, u.Rule] = {
    "loss": u.text,
    "inputs": u.list_of(u.text, min_len=1, what="a list of sources"),
    "params": u.table_of({}, closed=False),
    "weight": u.number(finite=True),
    **RUN_SCHEMA,
}
CHECK_SCHEMA: dict[str, u.Rule] = {
    "name": u.text,
    "loss": u.text,
    "inputs": TERM_SCHEMA["inputs"],
    "params": TERM_SCHEMA["params"],
    "terms": u.list_of(u.table_of({}, closed=False), min_len=1, what="a list of term tables"),
    **BOUND_SCHEMA,
    **RUN_SCHEMA,
}
# A [[compare]] entry: `lossctl compare` with its gates, run as a check (one result per candidate).
COMPARE_SCHEMA: dict[str, u.Rule] = {
    "name": u.text,
    "loss": u.text,
    "target": u.text,
    "baseline": u.text,
    "candidates": u.list_of(u.text, min_len=1, what="a list of sources"),
    "labels": u.list_of(u.text, min_len=2, what="a list of names (baseline first)"),
    "params": TERM_SCHEMA["params"],
    "max-delta": u.number(),
    "max-rel-delta": u.number(),
    "fail-if-worse": u.flag,
    "alpha": u.number(0, 1, low_open=True, high_open=True),
    "correction": u.one_of("none", "holm"),
    "permutations": u.integer(1, 10_000_000),
    **RUN_SCHEMA,
}
RUN_KEYS = tuple(RUN_SCHEMA)
CHECK_KEYS = tuple(CHECK_SCHEMA)
TERM_KEYS = tuple(TERM_SCHEMA)
COMPARE_KEYS = tuple(COMPARE_SCHEMA)


@dataclass
class Term:
    loss: str
    inputs: list[str]
    params: dict[str, Any]
    weight: float
    options: Options  # validated once, when the config is read


@dataclass
class Check:
    name: str
    terms: list[Term]
    bounds: Bounds
    composite: bool
    options: dict[str, Any]
    error: LossctlError | None = None  # the check's config is invalid: reported as an error, not run
    loss: str = ""  # what the config says it computes, for an invalid check's report
    # A [[compare]] entry: terms[0] holds the loss, [baseline, *candidates, target] and the run
    # options; this holds the rest (labels, gates, correction, permutations).
    compare: dict[str, Any] | None = None


def _toml():
    try:
        import tomllib  # Python 3.11+
    except ModuleNotFoundError:  # pragma: no cover - Python 3.10
        import tomli as tomllib
    return tomllib


def _unknown(keys, allowed, where: str) -> None:
    for k in keys:
        if k not in allowed:
            close = difflib.get_close_matches(str(k), allowed, n=1)
            hint = f" Did you mean {close[0]!r}?" if close else ""
            raise UsageError(f"{where}: unknown key {k!r}.{hint} Allowed: {', '.join(allowed)}.")


def _checked(table, schema: dict, where: str, prefix: str = "", what: str = "a table") -> dict:
    """``table`` validated by ``schema``; a UsageError naming ``where`` and the key otherwise."""
    try:
        return u.validate(table, schema, what=what)
    except u.Bad as bad:
        key = prefix + bad.path if bad.path else prefix.rstrip(".")
        at = f", key {key!r}" if key else ""
        raise UsageError(f"{where}{at}: {bad.describe()}.") from None


class _Located:
    """Re-raise a LossctlError from inside with ``where`` and the key in front of its message."""

    def __init__(self, where: str, key: str):
        self.where, self.key = where, key

    def __enter__(self):
        return self

    def __exit__(self, kind, exc, tb):
        if exc is not None and isinstance(exc, LossctlError) and not getattr(exc, "_located", False):
            located = type(exc)(f"{self.where}, key {self.key!r}: {exc.message}", hint=exc.hint)
            located._located = True
            raise located from None
        return False


def load_config(path: str) -> list[Check]:
    """Parse a check config (TOML); paths inside are relative to the config file.

    Problems with the file as a whole (not TOML, unknown top-level keys, bad [defaults], no
    checks) raise a UsageError; a problem inside one check makes only that check an error
    (``Check.error``), so the others still run and are reported.
    """
    if not os.path.exists(path):
        raise DataError(f"{path}: file not found; expected a TOML check config.")
    try:
        with open(path, "rb") as fh:
            data = _toml().load(fh)
    except Exception as exc:  # noqa: BLE001 - tomllib.TOMLDecodeError, RecursionError and I/O
        raise UsageError(f"{path}: not valid TOML ({short_reason(exc)}).") from None
    base = os.path.dirname(os.path.abspath(path))
    _unknown(data.keys(), ("checks", "compare", "defaults"), path)
    defaults = _checked(data.get("defaults", {}), RUN_SCHEMA, path, prefix="defaults.", what="a table of run options")
    _unknown(defaults.keys(), RUN_KEYS, f"{path} [defaults]")
    raw = data.get("checks", [])
    raw_compare = data.get("compare", [])
    if not isinstance(raw_compare, list):
        raise UsageError(f"{path}, key 'compare': expected [[compare]] tables (an array of tables).")
    if not isinstance(raw, list) or not (raw or raw_compare):
        raise UsageError(
            f"{path}: no [[checks]] or [[compare]]; each check needs a name, a loss (or terms) and inputs, "
            "each compare a loss, a target, a baseline and candidates."
        )
    checks: list[Check] = []
    names: set[str] = set()
    entries = [(c, "check", i) for i, c in enumerate(raw)] + [(c, "compare", i) for i, c in enumerate(raw_compare)]
    for c, kind, i in entries:
        given = c.get("name") if isinstance(c, dict) else None
        name = given if isinstance(given, str) and given else f"{kind}-{i + 1}"
        where = f"{path}: {kind} {i + 1} ({name})"
        try:
            checks.append((_check if kind == "check" else _compare_entry)(c, name, where, defaults, base))
        except LossctlError as exc:
            loss = c.get("loss") if isinstance(c, dict) and isinstance(c.get("loss"), str) else ""
            loss = "composite" if isinstance(c, dict) and "terms" in c and not loss else loss
            checks.append(Check(name, [], Bounds(), False, {}, error=exc, loss=loss))
        if name in names:
            err = UsageError(f"{where}: the name {name!r} is used twice; names identify checks in reports.")
            checks[-1] = Check(name, [], Bounds(), False, {}, error=err, loss=checks[-1].loss)
        names.add(name)
    return checks


def _check(c, name: str, where: str, defaults: dict, base: str) -> Check:
    """One [[checks]] table, validated, or a LossctlError naming the check and the key."""
    c = _checked(c, CHECK_SCHEMA, where, what="a table (one check)")
    _unknown(c.keys(), CHECK_KEYS, where)
    opts = {**defaults, **{k: c[k] for k in RUN_KEYS if k in c}}
    if "terms" in c:
        if "loss" in c or "inputs" in c:
            raise UsageError(f"{where}: give either loss + inputs, or terms (a composite), not both.")
        terms = []
        for j, t in enumerate(c["terms"]):
            tw = f"{where} term {j + 1}"
            t = _checked(t, TERM_SCHEMA, where, prefix=f"terms[{j}].")
            _unknown(t.keys(), TERM_KEYS, tw)
            terms.append(_term(t, {**opts, **{k: t[k] for k in RUN_KEYS if k in t}}, base, where, f"terms[{j}]."))
        composite = True
    else:
        terms = [_term(c, opts, base, where, "")]
        composite = False
    bounds = Bounds(
        max=c.get("max"),
        min=c.get("min"),
        max_abs_increase=c.get("max-abs-increase"),
        max_rel_increase=c.get("max-rel-increase"),
        per_group=bool(opts.get("per-group", False)),
    )
    if "baseline" in c:
        with _Located(where, "baseline"):
            bounds.baseline = load_baseline(c["baseline"], None if composite else terms[0].loss, name, base)
    if (bounds.max_abs_increase is not None or bounds.max_rel_increase is not None) and bounds.baseline is None:
        raise UsageError(f"{where}: max-abs-increase / max-rel-increase need a baseline.")
    return Check(name, terms, bounds, composite, opts)


def _compare_entry(c, name: str, where: str, defaults: dict, base: str) -> Check:
    """One [[compare]] table, validated, or a LossctlError naming the entry and the key."""
    c = _checked(c, COMPARE_SCHEMA, where, what="a table (one compare)")
    _unknown(c.keys(), COMPARE_KEYS, where)
    for key in ("loss", "target", "baseline", "candidates"):
        if key not in c:
            raise UsageError(f"{where}, key {key!r}: missing; a compare needs loss, target, baseline and candidates.")
    opts = {**defaults, **{k: c[k] for k in RUN_KEYS if k in c}}
    if opts.get("reduction") == "none":
        raise UsageError(f"{where}, key 'reduction': a compare needs a headline value (mean or sum).")
    systems = [c["baseline"], *c["candidates"]]
    if "labels" in c and len(c["labels"]) != len(systems):
        raise UsageError(
            f"{where}, key 'labels': one name per system, baseline first: {len(systems)} systems but "
            f"{len(c['labels'])} labels."
        )
    if opts.get("per-group") and "group-by" not in opts:
        raise UsageError(f"{where}, key 'per-group': applies the gates to each group of group-by; give group-by too.")
    with _Located(where, "loss"):
        from lossctl import registry

        spec = registry.get(c["loss"])
    if len([r for r in spec.inputs if not r.optional]) != 2 or spec.inputs[spec.pred_index].name != "pred":
        raise UsageError(
            f"{where}, key 'loss': a [[compare]] entry takes a loss of a prediction and a target; "
            f"{spec.name} takes {', '.join(r.metavar for r in spec.inputs)} (use lossctl compare on the command line)."
        )
    pair = {"loss": c["loss"], "inputs": [c["baseline"], c["target"]], "params": c.get("params", {})}
    term = _term(pair, opts, base, where, "")
    term.inputs = [term.inputs[0], *(_resolve(x, base) for x in c["candidates"]), term.inputs[1]]
    rest = {
        "labels": c.get("labels"),
        "max_delta": c.get("max-delta"),
        "max_rel_delta": c.get("max-rel-delta"),
        "fail_if_worse": bool(c.get("fail-if-worse", False)),
        "alpha": c.get("alpha"),
        "correction": c.get("correction", "none"),
        "permutations": int(c.get("permutations", 10000)),
    }
    return Check(name, [term], Bounds(per_group=bool(opts.get("per-group", False))), False, opts, compare=rest)


def _term(t: dict, opts: dict, base: str, where: str, prefix: str) -> Term:
    """One loss of a check (``t`` already validated by TERM_SCHEMA or CHECK_SCHEMA)."""
    from lossctl import registry

    for key in ("loss", "inputs"):
        if key not in t:
            raise UsageError(f"{where}, key {prefix + key!r}: missing; every check needs a loss and its inputs.")
    with _Located(where, prefix + "loss"):
        spec = registry.get(t["loss"])
    inputs = t["inputs"]
    required = [r for r in spec.inputs if not r.optional]
    if not (len(required) <= len(inputs) <= len(spec.inputs)):
        raise UsageError(
            f"{where}, key {prefix + 'inputs'!r}: {spec.name} takes {len(required)}"
            + (f" to {len(spec.inputs)}" if len(spec.inputs) != len(required) else "")
            + f" inputs ({', '.join(r.metavar for r in spec.inputs)}); got {len(inputs)}."
        )
    resolved = [_resolve(s, base) for s in inputs]
    params = {}
    for k, v in t.get("params", {}).items():
        key = f"{prefix}params.{k}"
        try:
            p = spec.param(k)
        except KeyError:
            close = difflib.get_close_matches(k, [p.name for p in spec.params], n=1)
            hint = f" Did you mean {close[0]!r}?" if close else ""
            raise UsageError(f"{where}, key {key!r}: {spec.name} has no parameter {k!r}.{hint}") from None
        params[p.dest] = _param(p, v, spec.name, where, key)
    weight = t.get("weight", 1.0)
    if "group-by" in opts and ":" in opts["group-by"] and not os.path.isabs(opts["group-by"]):
        opts = {**opts, "group-by": os.path.join(base, opts["group-by"])}
    return Term(spec.name, resolved, params, weight, build_options(opts, top=5))


def _resolve(s: str, base: str) -> str:
    """A source named in a config: relative paths are relative to the config file."""
    return s if s == "-" or s.startswith("-:") or os.path.isabs(s) or is_uri(s) else os.path.join(base, s)


def _param(p, v, loss: str, where: str, key: str):
    """A loss parameter from TOML: its type first (strings are never booleans), then its range."""
    if p.type == "bool":
        rule = u.flag
    elif p.type in ("float", "int"):
        rule = u.number() if p.type == "float" else u.integer()
    elif p.type == "choice":
        rule = u.text
    elif p.type == "names":  # --classes: a list of class names, or one text (a comma list or a file)
        rule = _names_or_file
    else:  # floats / float-or-floats: a number, a list of numbers, or a file name
        rule = _numbers_or_file
    try:
        v = rule(v)
    except u.Bad as bad:
        raise UsageError(f"{where}, key {key!r}: {bad.describe()}.") from None
    if p.type == "bool":
        return v
    with _Located(where, key):
        if isinstance(v, list):
            return p.parse(",".join(repr(x) for x in v), loss)
        return p.parse(v, loss)


def _names_or_file(v):
    if isinstance(v, list):
        return ",".join(u.list_of(u.text, min_len=1, what="a list of class names")(v))
    return u.text(v)


def _numbers_or_file(v):
    if isinstance(v, list):
        return u.list_of(u.number(), min_len=1, what="a list of numbers")(v)
    return u.number_or_text(v)


# ---------------------------------------------------------------------------
# Running checks
# ---------------------------------------------------------------------------


def run_checks(items: list[Check]) -> list[dict]:
    """Every check's result; a [[compare]] entry gives one result per candidate."""
    out: list[dict] = []
    for c in items:
        if c.compare is not None and c.error is None:
            out.extend(run_compare(c))
        else:
            out.append(run_check(c))
    return out


def run_compare(check: Check) -> list[dict]:
    """A [[compare]] entry: `lossctl compare` with its gates; one result per candidate whose value is
    the delta (candidate - baseline) of the headline. Never raises for data problems."""
    from lossctl import compare, engine, registry

    t = check.terms[0]
    cfg = check.compare or {}
    systems, target = t.inputs[:-1], t.inputs[-1]
    try:
        spec = registry.get(t.loss)
        params = {**spec.defaults(), **t.params}
        opts = t.options
        doc = compare.compare(
            spec,
            systems,
            {"target": target},
            params,
            opts,
            level=opts.ci if opts.ci is not None else 0.95,
            resamples=opts.ci_n,
            seed=opts.seed,
            permutations=cfg.get("permutations", 10000),
            top=5,
            labels=cfg.get("labels"),
            correction=cfg.get("correction", "none"),
        )
        compare.gate(
            doc,
            max_delta=cfg.get("max_delta"),
            max_rel_delta=cfg.get("max_rel_delta"),
            fail_if_worse=cfg.get("fail_if_worse", False),
            alpha=cfg.get("alpha"),
            per_group=check.bounds.per_group,
        )
    except LossctlError as exc:
        return [
            {
                "name": check.name,
                "kind": "compare",
                "composite": False,
                "loss": t.loss,
                "status": "error",
                "error": str(exc),
                "outcomes": [],
                "exit_code": exc.exit_code,
            }
        ]
    base = doc["baseline"]
    out = []
    for c in doc["candidates"]:
        name = check.name if len(doc["candidates"]) == 1 else f"{check.name} [{c['label']}]"
        out.append(
            {
                "name": name,
                "kind": "compare",
                "composite": False,
                "loss": f"Δ {doc['loss']} ({c['label']} - {base['label']})",
                "value": c["delta"],
                "baseline": {"label": base["label"], "source": base["source"], "value": base["value"]},
                "candidate": {"label": c["label"], "source": c["source"], "value": c["value"]},
                "delta_ci": c["delta_ci"],
                "p_value": c["p_value"],
                "p_adjusted": c.get("p_adjusted", c["p_value"]),
                "correction": doc["method"]["correction"],
                "groups": c.get("groups"),
                "outcomes": c["outcomes"],
                "status": c["status"],
                "signature": c["signature"],
                "compare_signature": doc["signature"],
            }
        )
    return out


def run_check(check: Check) -> dict:
    """Run every term of a check; never raises for data problems (status 'error' instead)."""
    from lossctl import engine, registry

    if check.error is not None:
        return {
            "name": check.name,
            "composite": False,
            "loss": check.loss,
            "status": "error",
            "error": str(check.error),
            "outcomes": [],
            "exit_code": check.error.exit_code,
        }
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
            opts = t.options
            if opts.reduction == "none":
                raise UsageError(f"check {check.name}: reduction 'none' has no value to check.")
            reports.append(engine.run_on(opts.engine, spec, texts, params, opts, opts.scheduler, opts.workers))
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
    """One <testcase> per check; failures and errors carry the numbers. Text from data (check
    names, file and column names, messages) is written with what XML 1.0 forbids (ESC and the
    other control characters, lone surrogates) as visible escapes, so the file always parses."""
    from xml.sax.saxutils import quoteattr as _quoteattr

    def quoteattr(text: str) -> str:
        return _quoteattr(visible(text, keep="\n\t"))

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
    return visible(text, keep="\n\t").replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


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
