"""Issue #14 item 4: every run option is declared once (lossctl.options.SCHEMA); the Typer options of
compute and compare, the check config's keys and rules, Options and build_options derive from it, and
the core names options through errors.opt while the CLI spells them."""

from __future__ import annotations

import ast
import dataclasses
import math
import os
import sys

import pytest

from conftest import run_cli
from lossctl import checks, options, untrusted as u
from lossctl.errors import spelling
from lossctl.options import SCHEMA, OptionError, build_options

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _click_command(group: str, loss: str):
    import typer

    from lossctl.cli import app, click

    root = typer.main.get_command(app)
    ctx = click.Context(root)
    sub = root.get_command(ctx, group)
    return sub.get_command(click.Context(sub, parent=ctx), loss)


def _params_by_name(cmd) -> dict:
    return {p.name: p for p in cmd.params}


@pytest.mark.parametrize("group,loss,schema", [
    ("compute", "mse", SCHEMA),
    ("compute", "cross-entropy", SCHEMA),
    ("compare", "mse", tuple(options.compare_options())),
])  # fmt: skip
def test_typer_options_are_the_schema(group, loss, schema):
    params = _params_by_name(_click_command(group, loss))
    for o in schema:
        p = params[o.name]
        assert p.opts == [o.spelled, *([o.short] if o.short else [])], o.name
        assert p.help == o.help, o.name
        assert p.default == o.default, o.name
        if o.type == "bool":
            assert p.is_flag, o.name
        else:
            assert p.metavar == (o.metavar or "[" + "|".join(o.choices) + "]"), o.name
        assert (p.envvar or None) == o.envvar, o.name
    # nothing shared that the schema does not declare (the rest are the loss's inputs and parameters)
    from lossctl import registry

    spec = registry.get(loss)
    own = {p.dest for p in spec.params} | {r.name.replace("-", "_") for r in spec.inputs}
    own |= {"predictions"} | {"role_" + r.name.replace("-", "_") for r in spec.inputs}
    assert set(params) - own == {o.name for o in schema}


def test_compare_moves_its_gate_alpha_aside_for_a_loss_with_alpha():
    params = _params_by_name(_click_command("compare", "focal"))
    assert params["gate_alpha"].opts == ["--test-alpha"]
    assert params["alpha"].opts == ["--alpha"]  # focal's own parameter keeps PyTorch's name


def test_check_config_keys_are_the_schema_run_keys():
    assert list(checks.RUN_SCHEMA) == [o.key for o in SCHEMA if o.config]
    assert {"chunk-size", "ci", "seed", "engine", "workers", "strict", "per-group"} <= set(checks.RUN_SCHEMA)
    assert "format" not in checks.RUN_SCHEMA and "html" not in checks.RUN_SCHEMA  # faces' own options


def _probes(o):
    """Values on and around the declared contract of ``o``, written independently of its code."""
    if o.type == "bool":
        return [True, False, "true", 1]
    if o.type == "choice":
        return [*o.choices, "bogus", ""]
    if o.type == "char":
        return [",", "ab", ""]
    if o.type == "text":
        return ["x", "path/to:col"]
    vals = [0, 1, -1, 10, 9, 0.5, 2**64 - 1, 2**64, 2**62, 2**62 + 1, 1e-300, math.nan, -math.inf, math.inf]
    return vals if o.type == "float" else [v for v in vals if isinstance(v, int)]


def _expected_ok(o, v) -> bool:
    """The contract as the README states it, spelled out per option (an oracle, not the schema)."""
    if o.type == "bool":
        return isinstance(v, bool)
    if o.type == "choice":
        return v in {"on_missing": ("error", "drop"), "nan": ("error", "omit", "propagate"),
                     "reduction": ("mean", "sum", "none"), "engine": ("local", "dask")}[o.name]  # fmt: skip
    if o.type == "char":
        return isinstance(v, str) and len(v) == 1
    if o.type == "text":
        return isinstance(v, str) and v != ""
    rules = {
        "prob_atol": lambda x: x > 0,
        "chunk_size": lambda x: x >= 1,
        "max_groups": lambda x: x >= 1,
        "ci": lambda x: 0 < x < 1,
        "ci_n": lambda x: x >= 10,
        "seed": lambda x: 0 <= x <= 2**64 - 1,
        "workers": lambda x: x >= 1,
    }
    return not (isinstance(v, float) and math.isnan(v)) and rules[o.name](v)


@pytest.mark.parametrize("o", options.CONFIG_OPTIONS, ids=lambda o: o.key)
def test_config_rule_and_cli_check_agree_with_the_contract(o):
    rule = checks.RUN_SCHEMA[o.key]
    for v in _probes(o):
        want = _expected_ok(o, v)
        try:
            rule(v)
            config_ok = True
        except u.Bad:
            config_ok = False
        assert config_ok == want, (o.key, v)
        if o.type in ("int", "float") and isinstance(v, (int, float)) and not isinstance(v, bool):
            try:
                o.check(v)
                cli_ok = True
            except OptionError as exc:
                cli_ok = False
                assert exc.option == o.name
            assert cli_ok == want, (o.name, v)


def test_options_defaults_match_the_schema():
    defaults = {f.name: f.default for f in dataclasses.fields(options.Options)}
    for o in options.RUN_OPTIONS:
        assert o.dest in defaults, o.name
        if o.default is not None:
            assert defaults[o.dest] == ((not o.default) if o.invert else o.default), o.name
    assert defaults["chunk_rows"] is None and defaults["seed"] == 12345 and defaults["max_groups"] == 10_000


def test_build_options_maps_and_validates_once():
    got = build_options({"chunk-size": 7, "no-header": True, "ci": 0.9}, top=3, engine="dask", workers=2)
    assert (got.chunk_rows, got.header, got.ci, got.top, got.engine, got.workers) == (7, False, 0.9, 3, "dask", 2)
    assert build_options({"chunk_size": 7}).chunk_rows == 7  # Python names too


@pytest.mark.parametrize("raw,name,cli_text,api_text", [
    ({"chunk-size": 0}, "chunk_size", "--chunk-size must be at least 1; got 0.", "chunk_size must be at least 1; got 0."),
    ({"ci": 2}, "ci", "--ci is a confidence level in (0, 1), e.g. 0.95; got 2.0.", "ci is a confidence level"),
    ({"nan": "skip"}, "nan", "--nan must be one of error, omit, propagate; got 'skip'.", "nan must be one of"),
    ({"max-groups": 0}, "max_groups", "--max-groups must be a whole number of at least 1; got 0.", "max_groups must"),
    ({"seed": -1}, "seed", "--seed must be an integer from 0 to 2**64 - 1; got -1.", "seed must be an integer"),
    ({"row-offset": 2**62 + 1}, "row_offset", "--row-offset must be between 0 and 2**62", "row_offset must be"),
    ({"strict": "yes"}, "strict", "--strict must be true or false; got 'yes'.", "strict must be true or false"),
])  # fmt: skip
def test_core_names_the_option_and_each_face_spells_it(raw, name, cli_text, api_text):
    from lossctl.cli import _flag

    with pytest.raises(OptionError) as e:
        build_options(raw)
    assert e.value.option == name
    assert "--" not in e.value.message  # the core never spells a flag
    assert str(e.value).startswith(api_text)
    with spelling(_flag):
        assert str(e.value).startswith(cli_text)


def test_the_cli_spells_options_as_the_schema_does():
    from lossctl.cli import _flag

    assert _flag("max_value") == "--max" and _flag("min_value") == "--min"
    assert _flag("gate_alpha") == "--alpha" and _flag("labels") == "--label"
    assert _flag("chunk_size") == "--chunk-size" and _flag("label_smoothing") == "--label-smoothing"


def test_chunk_size_help_quotes_the_engine_rule():
    from lossctl import engine

    assert engine.CHUNK_BYTES == 8 * 1024 * 1024
    help_text = options.BY_NAME["chunk_size"].help
    assert "about 8 MB of input" in help_text and "16" not in help_text


def test_bad_option_is_refused_before_any_file_is_opened(tmp_path):
    missing = str(tmp_path / "nope.csv")
    res = run_cli(["compute", "mse", f"{missing}:a", f"{missing}:b", "--workers", "0"])
    assert res.code == 2
    assert "--workers must be at least 1; got 0." in res.err and "nope.csv" not in res.err
    res = run_cli(["compare", "mse", "--target", missing, missing, missing, "--max-delta", "nan"])
    assert res.code == 2 and "--max-delta must be a number, not NaN" in res.err


def test_check_terms_carry_validated_options(tmp_path):
    cfg = tmp_path / "c.toml"
    cfg.write_text(
        '[defaults]\nchunk-size = 3\n\n[[checks]]\nname = "a"\nloss = "mse"\ninputs = ["p.csv:p", "p.csv:t"]\n'
        'no-header = true\nworkers = 2\nengine = "dask"\n'
    )
    (item,) = checks.load_config(str(cfg))
    opts = item.terms[0].options
    assert isinstance(opts, options.Options)
    assert (opts.chunk_rows, opts.header, opts.engine, opts.workers, opts.top) == (3, False, "dask", 2, 5)
    cfg.write_text('[[checks]]\nname = "a"\nloss = "mse"\ninputs = ["p.csv:p", "p.csv:t"]\nchunk-size = 0\n')
    (item,) = checks.load_config(str(cfg))
    assert item.error is not None and "key 'chunk-size': expected an integer >= 1; got 0" in str(item.error)


def test_panels_named_in_the_command_tree_are_the_schema_panels():
    from lossctl.cli import commands

    assert commands._CHK == options.CHK


def _functions(path: str):
    tree = ast.parse(open(path, encoding="utf-8").read())
    return [n for n in ast.walk(tree) if isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef))]


def test_cli_modules_are_small():
    cli_dir = os.path.join(ROOT, "lossctl", "cli")
    assert not os.path.exists(os.path.join(ROOT, "lossctl", "cli.py"))
    paths = [os.path.join(cli_dir, f) for f in os.listdir(cli_dir) if f.endswith(".py")]
    paths += [os.path.join(ROOT, "lossctl", f) for f in ("options.py", "completion.py", "untrusted.py")]
    for path in paths:
        lines = open(path, encoding="utf-8").read().count("\n")
        assert lines <= 800, (path, lines)
        for fn in _functions(path):
            assert fn.end_lineno - fn.lineno + 1 <= 80, (path, fn.name)


def test_options_module_stays_free_of_heavy_imports():
    import subprocess

    code = "import sys, lossctl.options; print(sorted(m for m in ('numpy', 'pyarrow', 'rich', 'typer') if m in sys.modules))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=ROOT)
    assert out.stdout.strip() == "[]"
