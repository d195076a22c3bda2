"""The Python API: ``lossctl.compute``, ``lossctl.check``, ``lossctl.compare`` and ``Report``.

The same engine as the command line runs underneath: in-memory inputs are read in chunks through
``lossctl.io.memory``, strings are sources exactly as on the command line. Errors are Python
exceptions with structured fields: a bad option or parameter is a :class:`ParamError` (``.param``
names the keyword), bad data a :class:`lossctl.errors.DataError`; never command-line flag wording.
"""

from __future__ import annotations

import os
import re
import shutil
import tempfile
from typing import Any

from lossctl.errors import _MARK, LossctlError, ParamError, UsageError

_OPTION_KEYS = {
    "reduction": "reduction",
    "id_col": "id-col",
    "on_missing": "on-missing",
    "nan": "nan",
    "chunk_size": "chunk-size",
    "input_format": "input-format",
    "group_by": "group-by",
    "max_groups": "max-groups",
    "ci": "ci",
    "ci_n": "ci-n",
    "seed": "seed",
    "prob_atol": "prob-atol",
    "no_header": "no-header",
    "delimiter": "delimiter",
    "strict": "strict",
}
_FLAG = re.compile(r"(?<![\w-])--([a-z][a-z0-9-]*)")


def _api_wording(text: str) -> str:
    """A command-line message in API terms: ``--label-smoothing`` -> ``label_smoothing``."""
    return _FLAG.sub(lambda m: m.group(1).replace("-", "_"), text)


def translated(exc: UsageError) -> ParamError:
    m = _FLAG.search(exc.message)
    message = _api_wording(exc.message) + (f" {_api_wording(exc.hint)}" if exc.hint else "")
    # the option or parameter at fault: declared on the error (OptionError.option, UsageError.param),
    # else the first option the message names (errors.opt marks), else a --flag in older wording
    option = getattr(exc, "option", None) or getattr(exc, "param", None)
    if option is None and _MARK in exc.message:
        option = exc.message.split(_MARK)[1]
    return ParamError(option or (m.group(1).replace("-", "_") if m else None), message)


class _Boundary:
    """Turns the core's usage errors (worded for the command line) into ParamError."""

    def __enter__(self):
        return self

    def __exit__(self, typ, exc, tb):
        if isinstance(exc, UsageError):
            raise translated(exc) from None
        if isinstance(exc, LossctlError):  # a data error: same class, the message in API terms
            exc.message = _api_wording(exc.message)
            exc.args = (exc.message,)
        return False


# ---------------------------------------------------------------------------
# Inputs
# ---------------------------------------------------------------------------


def _param_text(value: Any) -> Any:
    """A Python value as the command-line text Param.parse validates (one validation for both)."""
    if isinstance(value, str) or value is None:
        return value
    if hasattr(value, "tolist"):
        value = value.tolist()
    if isinstance(value, (list, tuple)):
        return ",".join(repr(float(v)) for v in value)
    if isinstance(value, float):
        return repr(value)
    return str(value)


def _params(spec, given: dict[str, Any]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    known = {p.dest: p for p in spec.params}
    for key in given:
        if key.replace("-", "_") not in known:
            listing = ", ".join(sorted(known)) or "none"
            raise ParamError(
                key,
                f"{spec.name} has no parameter or option {key!r}. Its parameters: {listing}; options: "
                f"{', '.join(sorted(_OPTION_KEYS))}, top, per_sample, hist, engine.",
            )
    for p in spec.params:
        raw = given.get(p.dest, given.get(p.name))
        if p.type == "bool":
            if raw is not None and not isinstance(raw, bool):
                raise ParamError(p.dest, f"{p.dest} of {spec.name} must be True or False; got {raw!r}.")
            out[p.dest] = p.default if raw is None else raw
        else:
            out[p.dest] = p.default if raw is None else p.parse(_param_text(raw), spec.name)
    return out


def _texts(spec, inputs: tuple, data, made: list[str]) -> list[str | None]:
    """Source texts for the engine, one per role: strings as given (or columns of ``data``), other
    objects registered as in-memory inputs (their tokens appended to ``made``, released by the caller)."""
    from lossctl.io import memory

    roles = spec.inputs
    required = [r for r in roles if not r.optional]
    if not len(required) <= len(inputs) <= len(roles):
        names = ", ".join(r.name + (" (optional)" if r.optional else "") for r in roles)
        raise ParamError(
            None, f"{spec.name} takes {len(required)} to {len(roles)} inputs ({names}); got {len(inputs)}."
        )
    shared: str | None = None
    texts: list[str | None] = []
    for role, obj in zip(roles, inputs):
        texts.append(_text(obj, role.name, data, made, shared))
        if isinstance(obj, str) and data is not None and shared is None:
            shared = made[-1]
    return texts + [None] * (len(roles) - len(texts))


def _text(obj, name: str, data, made: list[str], shared: str | None = None) -> str | None:
    from lossctl.io import memory

    if obj is None:
        return None
    if isinstance(obj, str):
        if data is None:
            return obj
        if shared is None:
            shared = memory.register(data, "data")
            made.append(shared)
        return f"{shared}:{obj}"
    if isinstance(obj, os.PathLike):
        return os.fspath(obj)
    if isinstance(obj, tuple) and len(obj) == 2 and isinstance(obj[1], str):
        token = memory.register(obj[0], name)
        made.append(token)
        return f"{token}:{obj[1]}"
    token = memory.register(obj, name)
    made.append(token)
    return token


def _group_keys(keys: Any, made: list[str]) -> str:
    """``group_by=`` an array, list or Series of keys (one per row): a one-column in-memory table."""
    import numpy as np
    import pyarrow as pa

    from lossctl.io import memory

    if memory._module(keys) in ("pandas", "polars") or isinstance(keys, (pa.Array, pa.ChunkedArray)):
        if isinstance(keys, (pa.Array, pa.ChunkedArray)):
            column = keys
        else:
            column = pa.array(keys.to_numpy() if memory._module(keys) == "polars" else keys)
    else:
        arr = np.asarray(keys)
        if arr.ndim != 1:
            raise ParamError("group_by", f"group_by takes one key per row (a 1-D array); got shape {arr.shape}.")
        column = pa.array(arr.tolist() if arr.dtype.kind == "O" else arr)
    token = memory.register(pa.table({"group_by": column}), "group_by")
    made.append(token)
    return f"{token}:group_by"


def _readable(doc: dict) -> dict:
    """In-memory inputs are named by what they are, not by their internal tokens."""
    from lossctl.io import memory

    for i in doc.get("inputs") or []:
        if isinstance(i.get("source"), str) and memory.known(i["source"]):
            i["source"] = i["path"]
    return doc


# ---------------------------------------------------------------------------
# compute
# ---------------------------------------------------------------------------


def compute(
    loss: str,
    *inputs: Any,
    data: Any = None,
    reduction: str = "mean",
    nan: str = "error",
    top: int = 5,
    ci: float | None = None,
    ci_n: int = 1000,
    seed: int | None = None,
    group_by: str | None = None,
    id_col: str | None = None,
    on_missing: str = "error",
    per_sample: bool = False,
    hist: bool = False,
    engine: str = "local",
    chunk_size: int | None = None,
    max_groups: int | None = None,
    prob_atol: float | None = None,
    input_format: str | None = None,
    strict: bool = False,
    **params: Any,
) -> "Report":
    """Evaluate ``loss`` on ``inputs`` (model outputs first, then references) and return a :class:`Report`.

    Inputs are NumPy arrays, lists, pandas / polars Series or DataFrames, pyarrow Arrays, Tables or
    RecordBatchReaders, objects with ``__arrow_c_stream__`` / ``__array__`` / ``__dlpack__`` (a CPU
    torch tensor), ``(table, "column")`` pairs, or source strings as on the command line
    (``"preds.parquet:logits"``). With ``data=TABLE``, strings name columns of that table.
    Loss parameters are keywords (``label_smoothing=0.1``); the other keywords are the run options of
    ``lossctl compute``. ``per_sample=True`` keeps the per-sample rows (``Report.per_sample``, an
    Arrow table); without it memory stays bounded by a few chunks however long the input.
    """
    from lossctl import engine as eng
    from lossctl import registry
    from lossctl.io import memory

    with _Boundary():
        spec = registry.get(loss)
        kernel_params = _params(spec, params)
        if isinstance(top, bool) or not isinstance(top, int) or top < 0:
            raise ParamError("top", f"top must be a whole number of 0 or more; got {top!r}.")
        if engine not in ("local", "dask"):
            raise ParamError("engine", f"engine must be 'local' or 'dask'; got {engine!r}.")
        raw = {
            "reduction": reduction, "id-col": id_col, "on-missing": on_missing, "nan": nan,
            "chunk-size": chunk_size, "input-format": input_format, "group-by": group_by,
            "max-groups": max_groups, "ci": ci, "ci-n": ci_n, "seed": seed, "prob-atol": prob_atol,
            "strict": strict,
        }  # fmt: skip
        made: list[str] = []
        tmp = tempfile.mkdtemp(prefix="lossctl-api-") if (per_sample or reduction == "none") else None
        try:
            texts = _texts(spec, inputs, data, made)
            if group_by is not None and not isinstance(group_by, str):
                raw["group-by"] = _group_keys(group_by, made)
            opts = eng.build_options(
                raw, top=top, hist=hist, per_sample=os.path.join(tmp, "per_sample.parquet") if tmp else None
            )
            result = _run(spec, texts, kernel_params, opts, engine, made, group_by)
            rows = _kept_rows(tmp, result)
            if not hist:
                result.pop("hist", None)
        finally:
            for token in made:
                memory.release(token)
            if tmp:
                shutil.rmtree(tmp, ignore_errors=True)
    return Report(result, rows)


def _run(spec, texts, kernel_params, opts, engine: str, made: list[str], group_by) -> dict:
    """The report of one run on the chosen engine (in-memory inputs run locally only)."""
    from lossctl import engine as eng

    if engine == "dask":
        if made:
            raise ParamError(
                "engine",
                "engine='dask' reads files (its tasks run in other processes); in-memory inputs run "
                "with engine='local'. Write the data to Parquet first, or leave engine out.",
            )
        return eng.run_on("dask", spec, texts, kernel_params, opts)
    result = _readable(eng.run(spec, texts, kernel_params, opts))
    if group_by is not None and not isinstance(group_by, str):  # keys given as an array
        result["group_by"] = "<group_by keys>"
        result["signature"] = eng.signature(result)
    return result


def _kept_rows(tmp: str | None, result: dict):
    """The per-sample rows the run wrote to the scratch directory (an Arrow table), or None."""
    if not tmp:
        return None
    import pyarrow.parquet as pq

    result.pop("per_sample", None)
    return pq.read_table(os.path.join(tmp, "per_sample.parquet"), memory_map=False)


# ---------------------------------------------------------------------------
# Report
# ---------------------------------------------------------------------------


class Report:
    """The result of one run: the numbers of ``lossctl compute -f json`` as attributes.

    ``to_dict()`` is the JSON document of ``lossctl compute -f json`` on the same data (non-finite
    numbers as there: NaN -> None, ±inf -> "inf"/"-inf"); the attributes hold the same values.
    """

    def __init__(self, result: dict, per_sample=None):
        self._result = result
        self._rows = per_sample

    # -- the numbers ---------------------------------------------------------------------------
    @property
    def loss(self) -> str:
        return self._result["loss"]

    @property
    def value(self) -> float | None:
        """The headline value (the mean, or the sum with reduction='sum')."""
        return self._result.get("value")

    @property
    def count(self) -> int:
        """Rows that contributed to the value."""
        return self._result["rows"]["used"]

    @property
    def rows(self) -> dict:
        return dict(self._result["rows"])

    @property
    def stats(self) -> dict:
        return dict(self._result.get("stats") or {})

    @property
    def components(self) -> dict:
        return dict(self._result.get("components") or {})

    @property
    def derived(self) -> dict:
        return dict(self._result.get("derived") or {})

    @property
    def ci(self) -> dict | None:
        return self._result.get("ci")

    @property
    def groups(self) -> list | None:
        return self._result.get("groups")

    @property
    def top(self) -> list:
        return list(self._result.get("top") or [])

    @property
    def warnings(self) -> list:
        return list(self._result.get("warnings") or [])

    @property
    def signature(self) -> str:
        return self._result["signature"]

    @property
    def per_sample(self):
        """The per-sample rows (a pyarrow Table with the columns of ``--per-sample``: row, id when
        joined, loss, status ...), when the run was made with ``per_sample=True``."""
        if self._rows is None:
            raise AttributeError(
                "per_sample: this report was computed without per-sample rows; pass per_sample=True to compute()."
            )
        return self._rows

    # -- views ---------------------------------------------------------------------------------
    def to_dict(self) -> dict:
        import json

        from lossctl.report import to_json

        return json.loads(to_json(self._result, indent=None))

    def to_json(self, indent: int | None = 2) -> str:
        from lossctl.report import to_json

        return to_json(self._result, indent=indent)

    def to_markdown(self, precision: int | None = 6) -> str:
        from lossctl.report import to_markdown

        return to_markdown(self._result, precision)

    def __repr__(self) -> str:
        from lossctl.literal import visible
        from lossctl.report import num

        r = self._result
        head = f"{r['loss']} {r['reduction']}"
        value = "" if r.get("value") is None else f" = {num(r['value'], 6)}"
        ci = r.get("ci")
        ci_text = ""
        if ci and ci.get("low") is not None:
            ci_text = f" [{num(ci['low'], 6)}, {num(ci['high'], 6)}] ({ci['level']:g} CI)"
        return visible(f"<lossctl.Report {head}{value}{ci_text} over {r['rows']['used']} rows>")

    def _repr_html_(self) -> str:
        from lossctl import html

        return f'<div class="lossctl-report">{html.compute_body(self._result)}</div>'

    def __getitem__(self, key: str):
        return self.to_dict()[key]


# ---------------------------------------------------------------------------
# check and compare
# ---------------------------------------------------------------------------


class CheckResult:
    """The outcome of ``lossctl.check``: ``.passed``, ``.failures`` (checks that failed or could not
    run, with their messages), ``.checks`` (one dict per check, as in ``lossctl check -f json``)."""

    def __init__(self, doc: dict):
        self._doc = doc

    @property
    def passed(self) -> bool:
        return bool(self._doc["passed"])

    @property
    def checks(self) -> list:
        return self.to_dict()["checks"]

    @property
    def failures(self) -> list[dict]:
        out = []
        for r in self._doc["checks"]:
            if r["status"] == "pass":
                continue
            msgs = [o["message"] for o in r.get("outcomes") or [] if not o["passed"]]
            out.append({"name": r["name"], "status": r["status"], "message": r.get("error") or "; ".join(msgs)})
        return out

    def to_dict(self) -> dict:
        import json

        from lossctl.report import to_json

        return json.loads(to_json(self._doc, indent=None))

    def to_markdown(self, precision: int | None = 6) -> str:
        from lossctl.report import checks_markdown

        return checks_markdown(self._doc, precision)

    def __bool__(self) -> bool:
        return self.passed

    def __repr__(self) -> str:
        c = self._doc["counts"]
        state = "passed" if self.passed else "failed"
        return f"<lossctl.CheckResult {state}: {c['pass']} pass, {c['fail']} fail, {c['error']} error>"

    def _repr_html_(self) -> str:
        from lossctl import html

        return f'<div class="lossctl-report">{html.check_page(self._doc)}</div>'


def check(config: Any) -> CheckResult:
    """Run checks: ``config`` is a TOML config path (as ``lossctl check``) or a list of check dicts
    with the config's keys (``{"name": ..., "loss": ..., "inputs": [...], "max": ...}``); inputs may be
    in-memory objects as for :func:`compute`. A check that fails or cannot run is reported in the
    result, never raised."""
    from lossctl import checks
    from lossctl.io import memory
    from lossctl.report import check_document

    made: list[str] = []
    try:
        with _Boundary():
            if isinstance(config, (str, os.PathLike)):
                path = os.fspath(config)
                items = checks.load_config(path)
            else:
                path = "<python>"
                items = [_check_from_dict(c, i, made) for i, c in enumerate(config)]
            results = [checks.run_check(c) for c in items]
    finally:
        for token in made:
            memory.release(token)
    for r in results:
        if isinstance(r.get("error"), str):
            r["error"] = _api_wording(r["error"])
        for rep in [r.get("report")] + [t.get("report") for t in r.get("terms") or []]:
            if rep:
                _readable(rep)
    return CheckResult(check_document(path, results))


def _check_from_dict(c: Any, i: int, made: list[str]):
    from lossctl import checks

    if not isinstance(c, dict):
        raise ParamError(
            "config", f"check {i + 1}: expected a dict with the keys of a [[checks]] table; got {type(c).__name__}."
        )
    name = c.get("name") if isinstance(c.get("name"), str) and c.get("name") else f"check-{i + 1}"
    where = f"check {i + 1} ({name})"
    c = dict(c)
    tokens: dict[int, str] = {}
    if isinstance(c.get("inputs"), (list, tuple)):
        inputs = []
        for j, obj in enumerate(c["inputs"]):
            text = _text(obj, f"{name} input {j + 1}", None, made)
            if not isinstance(obj, (str, os.PathLike)):
                tokens[j] = text
            inputs.append(text)
        c["inputs"] = inputs
    try:
        item = checks._check(c, name, where, {}, os.getcwd())
    except LossctlError as exc:
        return checks.Check(name, [], checks.Bounds(), False, {}, error=exc, loss=str(c.get("loss", "")))
    for j, token in tokens.items():  # (paths are made relative to the config's directory; tokens are not paths)
        item.terms[0].inputs[j] = token
    return item


class CompareResult:
    """The outcome of ``lossctl.compare``: ``.baseline``, ``.candidates`` (value, delta, its CI and
    p-value each), ``.passed`` and ``.failures`` when gates were given; ``.to_dict()`` is the JSON of
    ``lossctl compare -f json``."""

    def __init__(self, doc: dict):
        self._doc = doc

    @property
    def baseline(self) -> dict:
        return self.to_dict()["baseline"]

    @property
    def candidates(self) -> list:
        return self.to_dict()["candidates"]

    @property
    def passed(self) -> bool:
        return bool(self._doc.get("passed", True))

    @property
    def failures(self) -> list[dict]:
        out = []
        for c in self._doc["candidates"]:
            for o in c.get("outcomes") or []:
                if not o["passed"]:
                    out.append({"label": c["label"], "message": o["message"]})
        return out

    @property
    def signature(self) -> str:
        return self._doc["signature"]

    def to_dict(self) -> dict:
        import json

        from lossctl.report import to_json

        return json.loads(to_json(self._doc, indent=None))

    def to_markdown(self, precision: int | None = 6) -> str:
        from lossctl.report import compare_markdown

        return compare_markdown(self._doc, precision)

    def __repr__(self) -> str:
        from lossctl.literal import visible
        from lossctl.report import num

        parts = [f"{c['label']} Δ={num(c['delta'], 4)} (p={num(c['p_value'], 3)})" for c in self._doc["candidates"]]
        gate = "" if "passed" not in self._doc else (" passed" if self.passed else " failed")
        head = f"{self._doc['loss']} vs {self._doc['baseline']['label']}"
        return visible(f"<lossctl.CompareResult {head}: {', '.join(parts)}{gate}>")

    def _repr_html_(self) -> str:
        from lossctl import html

        return f'<div class="lossctl-report">{html.compare_page(self._doc)}</div>'


def compare(
    loss: str,
    baseline: Any,
    *candidates: Any,
    references: Any = (),
    data: Any = None,
    labels: list[str] | None = None,
    reduction: str = "mean",
    nan: str = "error",
    ci: float = 0.95,
    ci_n: int = 1000,
    seed: int | None = None,
    permutations: int = 1000,
    top: int = 5,
    group_by: str | None = None,
    id_col: str | None = None,
    on_missing: str = "error",
    correction: str = "none",
    max_delta: float | None = None,
    max_rel_delta: float | None = None,
    fail_if_worse: bool = False,
    alpha: float | None = None,
    per_group: bool = False,
    **params: Any,
) -> CompareResult:
    """Compare systems on the same references (paired bootstrap CI of the difference, permutation
    p-value), as ``lossctl compare``: ``baseline`` and ``candidates`` are the model outputs,
    ``references`` the other inputs in role order (one object, or a tuple/list for several). Gates
    (``max_delta``, ``max_rel_delta``, ``fail_if_worse``, ``alpha``) set ``.passed``."""
    import lossctl.compare as cmp
    from lossctl import engine as eng
    from lossctl import registry
    from lossctl.io import memory

    made: list[str] = []
    try:
        with _Boundary():
            spec = registry.get(loss)
            kernel_params = _params(spec, params)
            if not candidates:
                raise ParamError(None, "compare needs a baseline and at least one candidate.")
            if correction not in ("none", "holm", "bonferroni", "bh"):
                raise ParamError("correction", f"correction must be none, holm, bonferroni or bh; got {correction!r}.")
            systems = [baseline, *candidates]
            texts = [_text(s, "baseline" if i == 0 else f"candidate {i}", data, made) for i, s in enumerate(systems)]
            refs = references if isinstance(references, (list, tuple)) and not _is_pair(references) else [references]
            others_roles = [r for i, r in enumerate(spec.inputs) if i != spec.pred_index]
            others = {}
            for role, obj in zip(others_roles, refs):
                others[role.name] = _text(obj, role.name, data, made)
            if labels is None:
                many = len(candidates) > 1
                labels = ["baseline"] + [f"candidate {i}" if many else "candidate" for i in range(1, len(systems))]
            opts = eng.build_options(
                {"reduction": reduction, "nan": nan, "ci": ci, "ci-n": ci_n, "seed": seed, "group-by": group_by,
                 "id-col": id_col, "on-missing": on_missing}
            )
            doc = cmp.compare(
                spec, texts, others, kernel_params, opts, level=opts.ci, resamples=opts.ci_n, seed=opts.seed,
                permutations=int(permutations), top=int(top), labels=list(labels), correction=correction,
            )  # fmt: skip
            for part in [doc["baseline"], *doc["candidates"]]:
                if memory.known(str(part.get("source"))):
                    part["source"] = memory.display(part["source"].partition(">")[0] + ">")
            if max_delta is not None or max_rel_delta is not None or fail_if_worse or alpha is not None:
                cmp.gate(doc, max_delta=max_delta, max_rel_delta=max_rel_delta, fail_if_worse=fail_if_worse,
                         alpha=alpha, per_group=per_group)  # fmt: skip
    finally:
        for token in made:
            memory.release(token)
    return CompareResult(doc)


def _is_pair(obj) -> bool:
    return isinstance(obj, tuple) and len(obj) == 2 and isinstance(obj[1], str) and not isinstance(obj[0], str)
