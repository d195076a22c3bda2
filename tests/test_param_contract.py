"""Validated once (#14): a parameter's whole contract is declared on its Param and checked at
parse time, before any file is opened, in one wording; the catalogue speaks no flags."""

from __future__ import annotations

import glob
import io
import math
import os
import re
import tokenize

import pytest

from conftest import run_cli
from lossctl import registry

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
MISSING = os.path.join(ROOT, "no-such-dir", "never.csv")


def _num(v: float) -> str:
    """How the declaration's bounds read in the message (written here, not taken from lossctl)."""
    if v == math.inf:
        return "inf"
    if v == -math.inf:
        return "-inf"
    if float(v).is_integer() and abs(v) >= 1 or v == 0:
        return str(int(v))
    return repr(float(v))


def _expected_range(p) -> str:
    lo = "(" if p.low_open else "["
    hi = ")" if p.high_open else "]"
    text = f"in {lo}{'-inf' if p.low is None else _num(p.low)}, {'inf' if p.high is None else _num(p.high)}{hi}"
    text += "".join(f" or {_num(a)}" for a in p.allow)
    if p.exclude:
        text += " other than " + " or ".join(_num(x) for x in p.exclude)
    return text


def _bad_values(p):
    """Out-of-contract values derived from the declaration: (text given, 'got' shown)."""
    out = []
    if p.type == "choice":
        return [("not-a-choice", "'not-a-choice'")]
    if p.low is not None:
        v = p.low if p.low_open else p.low - 1
        if v not in p.allow:
            out.append((repr(float(v)) if p.type != "int" else str(int(v)), _num(v)))
    elif p.low_open:
        out.append(("-inf", "-inf"))
    if p.high is not None:
        v = p.high if p.high_open else p.high + 1
        out.append((repr(float(v)) if p.type != "int" else str(int(v)), _num(v)))
    elif p.high_open and p.type != "int":
        out.append(("inf", "inf"))
    for x in p.exclude:
        out.append((repr(float(x)), _num(x)))
    if p.normal:
        out.append(("1e-320", "1e-320"))
    if p.type in ("floats", "float-or-floats") and out:
        # a list with one bad element among good ones
        good = _num(p.default) if isinstance(p.default, float) else "1"
        text, got = out[0]
        out.append((f"{good},{text}", got))
    return out


CASES = [
    (spec.name, p.name, text, got)
    for spec in registry.LOSSES
    for p in spec.params
    if p.type not in ("bool", "names")
    for text, got in _bad_values(p)
]


def test_every_ranged_parameter_is_walked():
    walked = {(loss, param) for loss, param, _, _ in CASES}
    ranged = {
        (s.name, p.name)
        for s in registry.LOSSES
        for p in s.params
        if p.type == "choice" or p.low is not None or p.high is not None or p.exclude
    }
    assert ranged <= walked
    assert len(CASES) >= 80


def _args(spec, param: str, text: str) -> list[str]:
    positional = [f"{MISSING}:col{i}" for i, r in enumerate(spec.inputs) if not r.option and not r.optional]
    return ["compute", spec.name, *positional, f"--{param}={text}"]


@pytest.mark.parametrize("loss,param,text,got", CASES, ids=[f"{c[0]}-{c[1]}-{c[2]}" for c in CASES])
def test_out_of_range_is_one_message_before_any_file(loss, param, text, got):
    spec = registry.get(loss)
    p = spec.param(param)
    res = run_cli(_args(spec, param, text))
    assert res.code == 2, res.err
    expected = "one of " + ", ".join(p.choices) if p.type == "choice" else _expected_range(p)
    assert f"--{param} of {loss} must be {expected}" in res.err, res.err
    assert f"; got {got}." in res.err, res.err
    assert "never.csv" not in res.err and "Traceback" not in res.err  # no file was opened


def test_base_one_and_zero_get_the_same_wording():
    """The issue's example: base 0 and base 1 were two messages, one after the files were opened."""
    errs = []
    for base in ("0", "1"):
        res = run_cli(["compute", "kl-divergence", f"{MISSING}:a", f"{MISSING}:b", "--base", base])
        assert res.code == 2
        errs.append(res.err.replace(f"got {base}.", "got X."))
    assert errs[0] == errs[1]
    assert "--base of kl-divergence must be in (0, inf) other than 1; got X." in errs[0]


def test_integer_parameters_refuse_fractions():
    res = run_cli(["compute", "ece", f"{MISSING}:a", f"{MISSING}:b", "--bins", "2.5"])
    assert res.code == 2 and "--bins of ece expects an integer; got '2.5'." in res.err


@pytest.mark.parametrize(
    "loss,params,param",
    [
        ("kl-divergence", {"base": 1.0}, "base"),
        ("focal", {"alpha": 2.0}, "alpha"),
        ("ppo-clip", {"clip": 1.0}, "clip"),
        ("info-nce", {"temperature": 1e-320}, "temperature"),
        ("iou", {"box_format": "yxyx"}, "box_format"),
        ("ece", {"bins": 0}, "bins"),
    ],
)
def test_python_api_gets_the_same_contract_without_flags(loss, params, param):
    import lossctl

    spec = registry.get(loss)
    inputs = [f"{MISSING}:c{i}" for i, r in enumerate(spec.inputs) if not r.optional]
    with pytest.raises(lossctl.ParamError) as err:
        lossctl.compute(loss, *inputs, **params)
    assert err.value.param == param
    assert "--" not in str(err.value) and f"{param} of {loss} must be " in str(err.value)


def test_validate_gives_every_parameter_checked():
    from lossctl.errors import UsageError

    spec = registry.get("kl-divergence")
    out = spec.validate({"base": 2, "scale-t2": True})
    assert out["base"] == 2.0 and out["scale_t2"] is True and out["temperature"] == 1.0
    assert set(out) == {p.dest for p in spec.params}
    for bad in ({"base": 1}, {"temperature": 0.0}, {"direction": "up"}, {"nope": 1}, {"scale_t2": "yes"}):
        with pytest.raises(UsageError) as err:
            spec.validate(bad)
        assert err.value.param == next(iter(bad)).replace("-", "_")


# ---------------------------------------------------------------------------
# The catalogue speaks data: no flag text in its string literals
# ---------------------------------------------------------------------------

FLAG = re.compile(r"(?<![\w-])--[a-z{]")
# The core: catalogue kernels, readers and writers, the engine and its stages, the statistics.
PACKAGES = [
    "lossctl/losses",
    "lossctl/io",
    "lossctl/stages",
    "lossctl/engine.py",
    "lossctl/cluster.py",
    "lossctl/stats.py",
    "lossctl/aggregate.py",
    "lossctl/kinds.py",
]


def _docstring_positions(source: str) -> set[tuple[int, int]]:
    import ast

    out = set()
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)) and node.body:
            first = node.body[0]
            if isinstance(first, ast.Expr) and isinstance(first.value, ast.Constant) and isinstance(first.value.value, str):
                out.add((first.value.lineno, first.value.col_offset))
    return out


def _flag_literals(path: str) -> list[str]:
    with open(path, encoding="utf-8") as fh:
        source = fh.read()
    docs = _docstring_positions(source)
    found = []
    for tok in tokenize.generate_tokens(io.StringIO(source).readline):
        if tok.type == tokenize.STRING and tok.start not in docs and FLAG.search(tok.string):
            found.append(f"{os.path.relpath(path, ROOT)}:{tok.start[0]}: {tok.string[:80]}")
    return found


@pytest.mark.parametrize("package", PACKAGES)
def test_no_flag_text_in_string_literals(package):
    """Messages and declarations name options with errors.opt(...); the face spells them.
    Comments and docstrings may keep prose."""
    path = os.path.join(ROOT, package)
    files = [path] if path.endswith(".py") else glob.glob(os.path.join(path, "**", "*.py"), recursive=True)
    assert files
    found = [hit for f in sorted(files) for hit in _flag_literals(f)]
    assert not found, "\n".join(found)


def test_the_grep_finds_a_flag():
    """The check above can fail: a literal with a flag is found, a comment is not."""
    import tempfile

    with tempfile.NamedTemporaryFile("w", suffix=".py", delete=False) as fh:
        fh.write('# --comment is fine\nx = 1\ny = f"use --alpha {x}"\n')
    try:
        assert len(_flag_literals(fh.name)) == 1
    finally:
        os.unlink(fh.name)
