"""The ``lossctl`` command line: argument handling only.

``lossctl compute NAME`` has one subcommand per registered loss (and alias),
generated from ``lossctl.registry``: one positional source per input role, one
option per parameter, and the shared options below. Errors of every kind meet
at one boundary, :func:`main`, which maps them to the documented exit codes.
NumPy and pyarrow are imported only when a command runs, so ``--help`` is fast.
"""

from __future__ import annotations

import difflib
import inspect
import os
import re
import sys
from typing import Any, Callable, Optional

import typer
from typer.core import TyperGroup

try:  # typer >= 0.22 vendors click as typer._click
    from typer import _click as click
except ImportError:  # pragma: no cover - older typer depends on click
    import click

from lossctl import __version__, registry
from lossctl.io import STDIN_TOKEN
from lossctl.errors import (
    EXIT_CHECK,
    EXIT_DATA,
    EXIT_INTERRUPTED,
    EXIT_OK,
    EXIT_USAGE,
    CheckFailed,
    LossctlError,
    UsageError,
)

EXIT_CODES_HELP = (
    "Exit codes: 0 success; 1 data or runtime error (files, columns, values); "
    "2 usage error (the command line); 3 a check failed (--max/--min); 130 interrupted."
)

# ---------------------------------------------------------------------------
# Groups with "did you mean"
# ---------------------------------------------------------------------------


class _SuggestingGroup(TyperGroup):
    what = "command"

    def resolve_command(self, ctx: "click.Context", args: list[str]):
        name = args[0] if args else ""
        if name and not name.startswith("-") and self.get_command(ctx, name) is None:
            self.unknown(ctx, name)
        return super().resolve_command(ctx, args)

    def unknown(self, ctx: "click.Context", name: str) -> None:
        close = difflib.get_close_matches(name, list(self.commands), n=3, cutoff=0.5)
        hint = f" Did you mean {' or '.join(repr(c) for c in close)}?" if close else ""
        raise click.exceptions.UsageError(f"No such command {name!r}.{hint}", ctx)


class _LossGroup(_SuggestingGroup):
    """One subcommand per loss and alias, built from the registry only when asked for.

    Building ~60 commands with ~40 options each costs tens of milliseconds; `lossctl --help`
    and `lossctl compute ce ...` need none or one of them.
    """

    make: Callable[[registry.LossSpec], Callable] | None = None  # set on the subclasses below

    def list_commands(self, ctx: "click.Context") -> list[str]:
        return [s.name for s in registry.LOSSES]

    def get_command(self, ctx: "click.Context", name: str):
        if name in self.commands:
            return self.commands[name]
        spec = registry.BY_NAME.get(name)
        if spec is None:
            return None
        fn = type(self).make(spec)
        mini = typer.Typer(add_completion=False, pretty_exceptions_enable=False)
        mini.command(name=name, help=fn.__doc__, no_args_is_help=True, hidden=name != spec.name)(fn)
        cmd = typer.main.get_command(mini)
        cmd.name = name
        self.commands[name] = cmd
        return cmd

    def unknown(self, ctx: "click.Context", name: str) -> None:
        registry.get(name)  # raises UsageError with the suggestion


# ---------------------------------------------------------------------------
# Shared options of `compute NAME`
# ---------------------------------------------------------------------------

_IN, _OUT, _CHK, _ENG = "Inputs", "Output", "Checks", "Engine"

COMMON_OPTIONS: list[tuple[str, Any, Any]] = [
    (
        "id_col",
        Optional[str],
        typer.Option(
            None,
            "--id-col",
            metavar="NAME",
            help="Join inputs by this key column instead of by row position.",
            rich_help_panel=_IN,
        ),
    ),
    (
        "on_missing",
        str,
        typer.Option(
            "error",
            "--on-missing",
            metavar="[error|drop]",
            help="With --id-col: ids missing on one side are an error, or dropped and counted.",
            rich_help_panel=_IN,
        ),
    ),
    (
        "nan",
        str,
        typer.Option(
            "error",
            "--nan",
            metavar="[error|omit|propagate]",
            help="Rows with NaN: an error naming them, omitted and counted, or NaN in the result.",
            rich_help_panel=_IN,
        ),
    ),
    (
        "input_format",
        Optional[str],
        typer.Option(
            None,
            "--input-format",
            metavar="[csv|tsv|parquet|npy|npz|arrow]",
            help="Format of stdin ('-') and of files whose name does not tell.",
            rich_help_panel=_IN,
        ),
    ),
    (
        "no_header",
        bool,
        typer.Option(
            False,
            "--no-header",
            help="CSV/TSV files have no header line (columns are f0, f1, ...).",
            rich_help_panel=_IN,
        ),
    ),
    (
        "delimiter",
        Optional[str],
        typer.Option(
            None,
            "--delimiter",
            metavar="CHAR",
            help="CSV field delimiter (default ',' or tab for .tsv).",
            rich_help_panel=_IN,
        ),
    ),
    (
        "prob_atol",
        Optional[float],
        typer.Option(
            None,
            "--prob-atol",
            metavar="TOL",
            help="Tolerance on |Σp - 1| for probability rows (default 1e-4, more for float16).",
            rich_help_panel=_IN,
        ),
    ),
    (
        "chunk_size",
        Optional[int],
        typer.Option(
            None,
            "--chunk-size",
            metavar="ROWS",
            help="Rows per chunk (default: about 16 MB of input).",
            rich_help_panel=_IN,
        ),
    ),
    (
        "format",
        str,
        typer.Option(
            "table",
            "--format",
            "-f",
            envvar="LOSSCTL_FORMAT",
            metavar="[table|json|jsonl|csv|tsv|markdown]",
            help="Report format on stdout (env LOSSCTL_FORMAT).",
            rich_help_panel=_OUT,
        ),
    ),
    (
        "score_only",
        bool,
        typer.Option(False, "--score-only", "-b", help="Print only the headline number.", rich_help_panel=_OUT),
    ),
    (
        "reduction",
        str,
        typer.Option(
            "mean",
            "--reduction",
            metavar="[mean|sum|none]",
            help="Headline reduction as in PyTorch; 'none' writes the per-sample values to stdout.",
            rich_help_panel=_OUT,
        ),
    ),
    (
        "per_sample",
        Optional[str],
        typer.Option(
            None,
            "--per-sample",
            metavar="PATH",
            help="Write one row per input row (row, id, loss, status, ...): .csv .tsv .parquet .npy .jsonl, or - for stdout.",
            rich_help_panel=_OUT,
        ),
    ),
    ("top", int, typer.Option(5, "--top", metavar="K", help="Show the K worst samples.", rich_help_panel=_OUT)),
    (
        "group_by",
        Optional[str],
        typer.Option(
            None,
            "--group-by",
            metavar="COL|PATH:COL",
            help="One aggregate per value of COL (a column of an input, or of a side file) plus 'all'.",
            rich_help_panel=_OUT,
        ),
    ),
    (
        "max_groups",
        Optional[int],
        typer.Option(
            None,
            "--max-groups",
            metavar="N",
            help="With --group-by: more than N distinct values (default 10000) is an error, found early.",
            rich_help_panel=_OUT,
        ),
    ),
    (
        "hist",
        bool,
        typer.Option(False, "--hist", help="Add a histogram of the per-sample losses.", rich_help_panel=_OUT),
    ),
    (
        "ci",
        Optional[float],
        typer.Option(
            None,
            "--ci",
            metavar="LEVEL",
            help="Bootstrap confidence interval of the value, e.g. 0.95.",
            rich_help_panel=_OUT,
        ),
    ),
    ("ci_n", int, typer.Option(1000, "--ci-n", metavar="N", help="Bootstrap resamples.", rich_help_panel=_OUT)),
    (
        "seed",
        Optional[int],
        typer.Option(
            None,
            "--seed",
            metavar="N",
            help="Bootstrap seed (default 12345, or env LOSSCTL_SEED).",
            rich_help_panel=_OUT,
        ),
    ),
    (
        "grad",
        Optional[str],
        typer.Option(
            None,
            "--grad",
            metavar="PATH",
            help="Write d loss_n / d prediction_n for every row, in input order: .npy, .parquet, .jsonl or .csv.",
            rich_help_panel=_OUT,
        ),
    ),
    (
        "grad_norm",
        bool,
        typer.Option(
            False,
            "--grad-norm",
            help="Add each row's gradient norm (how hard it pulls) to --per-sample.",
            rich_help_panel=_OUT,
        ),
    ),
    (
        "precision",
        Optional[int],
        typer.Option(
            None,
            "--precision",
            metavar="N",
            help="Significant digits in table/markdown (default 6) and -b (default: exact).",
            rich_help_panel=_OUT,
        ),
    ),
    (
        "quiet",
        bool,
        typer.Option(False, "--quiet", "-q", help="No progress bar or messages on stderr.", rich_help_panel=_OUT),
    ),
    (
        "no_color",
        bool,
        typer.Option(False, "--no-color", help="No colour (NO_COLOR is honoured too).", rich_help_panel=_OUT),
    ),
    (
        "save_state",
        Optional[str],
        typer.Option(
            None,
            "--save-state",
            metavar="PATH",
            help="Write the run's mergeable state (JSON) for `lossctl merge` (shards evaluated anywhere).",
            rich_help_panel=_OUT,
        ),
    ),
    (
        "remote_timeout",
        Optional[float],
        typer.Option(
            None,
            "--remote-timeout",
            metavar="SECONDS",
            help="Wait at most SECONDS for a remote (s3://) endpoint to connect or answer; tried twice "
            "(default 10, or LOSSCTL_REMOTE_TIMEOUT).",
            rich_help_panel=_IN,
        ),
    ),
    (
        "row_offset",
        int,
        typer.Option(
            0,
            "--row-offset",
            metavar="N",
            help="Number this shard's rows from N (global rows across shards).",
            rich_help_panel=_IN,
        ),
    ),
    (
        "max_value",
        Optional[float],
        typer.Option(
            None, "--max", metavar="X", help="Exit 3 if the headline value is above X (or NaN).", rich_help_panel=_CHK
        ),
    ),
    (
        "baseline",
        Optional[str],
        typer.Option(
            None,
            "--baseline",
            metavar="NUMBER|JSON",
            help="A previous value: a number, or a --format json result.",
            rich_help_panel=_CHK,
        ),
    ),
    (
        "max_abs_increase",
        Optional[float],
        typer.Option(
            None, "--max-abs-increase", metavar="A", help="Exit 3 if value - baseline > A.", rich_help_panel=_CHK
        ),
    ),
    (
        "max_rel_increase",
        Optional[float],
        typer.Option(
            None,
            "--max-rel-increase",
            metavar="R",
            help="Exit 3 if (value - baseline) / |baseline| > R; over a zero baseline any increase fails.",
            rich_help_panel=_CHK,
        ),
    ),
    (
        "per_group",
        bool,
        typer.Option(
            False, "--per-group", help="Apply the bounds to every --group-by group too.", rich_help_panel=_CHK
        ),
    ),
    (
        "junit",
        Optional[str],
        typer.Option(
            None, "--junit", metavar="PATH", help="Write the check as JUnit XML (one test case).", rich_help_panel=_CHK
        ),
    ),
    (
        "engine",
        str,
        typer.Option(
            "local",
            "--engine",
            metavar="[local|dask]",
            help="local: this process. dask: tasks on a Dask cluster (Parquet inputs; needs the dask extra).",
            rich_help_panel=_ENG,
        ),
    ),
    (
        "scheduler",
        Optional[str],
        typer.Option(
            None,
            "--scheduler",
            metavar="ADDRESS",
            help="With --engine dask: a running Dask scheduler, e.g. tcp://10.0.0.5:8786.",
            rich_help_panel=_ENG,
        ),
    ),
    (
        "workers",
        Optional[int],
        typer.Option(
            None,
            "--workers",
            metavar="N",
            help="With --engine dask: start a local cluster of N worker processes (default: one per core).",
            rich_help_panel=_ENG,
        ),
    ),
    (
        "min_value",
        Optional[float],
        typer.Option(
            None, "--min", metavar="X", help="Exit 3 if the headline value is below X (or NaN).", rich_help_panel=_CHK
        ),
    ),
]

_CHOICES = {
    "format": ("table", "json", "jsonl", "csv", "tsv", "markdown"),
    "reduction": ("mean", "sum", "none"),
    "on_missing": ("error", "drop"),
    "nan": ("error", "omit", "propagate"),
}


def _param_option(p: registry.Param):
    metavar = {
        "float": "FLOAT",
        "int": "INT",
        "floats": "FLOATS|FILE",
        "float-or-floats": "FLOAT[,FLOAT...]",
        "choice": "[" + "|".join(p.choices) + "]",
    }.get(p.type, "VALUE")
    extra = p.describe_range()
    default_text = "none" if p.default is None else str(p.default)
    help_text = _escape(
        p.help + (f" Must be {extra}." if extra and p.type != "choice" else "") + f" Default: {default_text}."
    )
    if p.type == "bool":
        return bool, typer.Option(
            p.default, f"--{p.name}/--no-{p.name}", help=help_text, rich_help_panel="Loss parameters"
        )
    return Optional[str], typer.Option(
        None, f"--{p.name}", metavar=metavar, help=help_text, show_default=False, rich_help_panel="Loss parameters"
    )


_MARKUP_TAG = re.compile(r"(\\*)(\[[a-z#/@][^[]*?])")


def _escape(text: str) -> str:
    """Help text is rendered as Rich markup: keep formulas such as w[y_n] literal.

    The same rule as ``rich.markup.escape``, without importing Rich at start-up.
    """
    return _MARKUP_TAG.sub(lambda m: f"{m.group(1)}{m.group(1)}\\{m.group(2)}", text)


def _command_help(spec: registry.LossSpec) -> str:
    example = "lossctl compute " + " ".join((spec.name, *spec.example))
    aliases = f" Aliases: {', '.join(spec.aliases)}." if spec.aliases else ""
    return _escape(
        f"{spec.summary}{aliases}\n\n"
        f"Per sample: {spec.formula}\n\n"
        f"Headline: {spec.headline}.\n\n"
        f"Reference: {spec.reference}.\n\n"
        f"Example: {example}\n\n"
        f"A source is PATH[:COLUMN] or - (stdin, with --input-format). {EXIT_CODES_HELP}"
    )


def _make_compute(spec: registry.LossSpec) -> Callable:
    params: list[inspect.Parameter] = []
    for role in spec.inputs:
        params.append(
            inspect.Parameter(
                role.name.replace("-", "_"),
                inspect.Parameter.POSITIONAL_OR_KEYWORD,
                default=typer.Argument(
                    None if role.optional else ...,
                    metavar=role.metavar,
                    help=_escape(f"{role.shape}: {role.help}"),
                    show_default=False,
                ),
                annotation=Optional[str] if role.optional else str,
            )
        )
    for p in spec.params:
        ann, opt = _param_option(p)
        params.append(inspect.Parameter(p.dest, inspect.Parameter.POSITIONAL_OR_KEYWORD, default=opt, annotation=ann))
    for name, ann, opt in COMMON_OPTIONS:
        params.append(inspect.Parameter(name, inspect.Parameter.POSITIONAL_OR_KEYWORD, default=opt, annotation=ann))

    def command(**kwargs):
        _guard(_compute, spec, kwargs)

    command.__signature__ = inspect.Signature(params)  # type: ignore[attr-defined]
    command.__annotations__ = {p.name: p.annotation for p in params}
    command.__name__ = "compute_" + spec.name.replace("-", "_")
    command.__doc__ = _command_help(spec)
    return command


# ---------------------------------------------------------------------------
# Apps
# ---------------------------------------------------------------------------

app = typer.Typer(
    name="lossctl",
    cls=_SuggestingGroup,
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    rich_markup_mode=None,
    help=(
        "How wrong are a model's outputs? lossctl computes losses (cross-entropy, BCE, MSE, MAE, ...) "
        "from CSV, Parquet, NPY/NPZ and Arrow files or stdin, with per-sample and aggregate reports.\n\n"
        + EXIT_CODES_HELP
    ),
    epilog="Example: lossctl compute cross-entropy preds.parquet:logits labels.parquet:label",
)


class _ComputeGroup(_LossGroup):
    make = staticmethod(lambda spec: _make_compute(spec))


class _CompareGroup(_LossGroup):
    make = staticmethod(lambda spec: _make_compare(spec))


compute_app = typer.Typer(
    cls=_ComputeGroup,
    no_args_is_help=True,
    help="Compute a loss: lossctl compute NAME INPUT... (see `lossctl list`). " + EXIT_CODES_HELP,
)
app.add_typer(compute_app, name="compute")
compare_app = typer.Typer(
    cls=_CompareGroup,
    no_args_is_help=True,
    help=(
        "Compare prediction files against one target, paired sample by sample: "
        "lossctl compare NAME --target TARGET BASELINE CANDIDATE... " + EXIT_CODES_HELP
    ),
)
app.add_typer(compare_app, name="compare")

_SHARED_WITH_COMPUTE = (
    "id_col",
    "on_missing",
    "nan",
    "input_format",
    "no_header",
    "delimiter",
    "prob_atol",
    "chunk_size",
    "ci_n",
    "seed",
    "precision",
    "quiet",
    "no_color",
    "remote_timeout",
)
COMPARE_OPTIONS: list[tuple[str, Any, Any]] = [
    *(o for o in COMMON_OPTIONS if o[0] in _SHARED_WITH_COMPUTE),
    (
        "reduction",
        str,
        typer.Option("mean", "--reduction", metavar="[mean|sum]", help="Headline reduction.", rich_help_panel=_OUT),
    ),
    (
        "ci",
        float,
        typer.Option(
            0.95,
            "--ci",
            metavar="LEVEL",
            help="Level of the paired bootstrap interval of each difference.",
            rich_help_panel=_OUT,
        ),
    ),
    (
        "permutations",
        int,
        typer.Option(
            10000,
            "--permutations",
            metavar="R",
            help="Approximate-randomization permutations for the p-value.",
            rich_help_panel=_OUT,
        ),
    ),
    (
        "top",
        int,
        typer.Option(5, "--top", metavar="K", help="Show the K samples that got most worse.", rich_help_panel=_OUT),
    ),
    (
        "format",
        str,
        typer.Option(
            "table",
            "--format",
            "-f",
            envvar="LOSSCTL_FORMAT",
            metavar="[table|json|markdown]",
            help="Output format.",
            rich_help_panel=_OUT,
        ),
    ),
]


def _make_compare(spec: registry.LossSpec) -> Callable:
    pred = spec.inputs[spec.pred_index]
    params: list[inspect.Parameter] = [
        inspect.Parameter(
            "predictions",
            inspect.Parameter.POSITIONAL_OR_KEYWORD,
            default=typer.Argument(
                ...,
                metavar="BASELINE CANDIDATE...",
                help=f"{pred.metavar} files: the baseline first, then the candidates.",
                show_default=False,
            ),
            annotation=list[str],
        )
    ]
    taken = {p.dest for p in spec.params} | {name for name, _, _ in COMPARE_OPTIONS}
    for role in spec.inputs:
        if role is pred:
            continue
        dest = role.name.replace("-", "_")
        flag = role.name if dest not in taken else f"input-{role.name}"
        params.append(
            inspect.Parameter(
                "role_" + dest,
                inspect.Parameter.POSITIONAL_OR_KEYWORD,
                default=typer.Option(
                    None if role.optional else ...,
                    f"--{flag}",
                    metavar="SOURCE",
                    help=_escape(f"{role.shape}: {role.help}"),
                    rich_help_panel=_IN,
                ),
                annotation=Optional[str],
            )
        )
    for p in spec.params:
        ann, opt = _param_option(p)
        params.append(inspect.Parameter(p.dest, inspect.Parameter.POSITIONAL_OR_KEYWORD, default=opt, annotation=ann))
    for name, ann, opt in COMPARE_OPTIONS:
        params.append(inspect.Parameter(name, inspect.Parameter.POSITIONAL_OR_KEYWORD, default=opt, annotation=ann))

    def command(**kwargs):
        _guard(_compare, spec, kwargs)

    command.__signature__ = inspect.Signature(params)  # type: ignore[attr-defined]
    command.__annotations__ = {p.name: p.annotation for p in params}
    command.__name__ = "compare_" + spec.name.replace("-", "_")
    command.__doc__ = _escape(
        f"Compare {spec.name} of several {pred.metavar} files, paired sample by sample: each candidate minus "
        "the baseline (the first file), a paired bootstrap interval of that difference, a paired permutation "
        "(approximate randomization) p-value, and the samples that got most worse.\n\n"
        f"Example: lossctl compare {spec.name} "
        + " ".join(f"--{r.name} {r.metavar.lower()}.parquet" for r in spec.inputs if r is not pred and not r.optional)
        + f" baseline.parquet candidate.parquet\n\n{EXIT_CODES_HELP}"
    )
    return command


@compute_app.callback()
def _compute_group() -> None:
    """Compute a loss: lossctl compute NAME INPUT... (see `lossctl list`)."""


@compare_app.callback()
def _compare_group() -> None:
    """Compare prediction files against one target, paired sample by sample."""


def _version(value: bool) -> None:
    if value:
        typer.echo(f"lossctl {__version__}")
        raise typer.Exit()


@app.callback()
def _root(
    version: bool = typer.Option(False, "--version", callback=_version, is_eager=True, help="Print the version."),
    debug: bool = typer.Option(False, "--debug", help="Show a traceback on errors (env LOSSCTL_DEBUG=1)."),
) -> None:
    """lossctl."""


@app.command("list")
def list_losses(
    format: str = typer.Option("table", "--format", "-f", metavar="[table|json]", help="Output format."),
    family: Optional[str] = typer.Option(None, "--family", help="Only this family."),
) -> None:
    """List every loss, grouped by family (from the registry)."""
    _guard(_list, format, family)


@app.command("check")
def check_command(
    config: str = typer.Argument(..., metavar="CONFIG.toml", help="The checks: [[checks]] tables (see the README)."),
    format: str = typer.Option(
        "table",
        "--format",
        "-f",
        envvar="LOSSCTL_FORMAT",
        metavar="[table|json|markdown]",
        help="Report format on stdout.",
    ),
    junit: Optional[str] = typer.Option(
        None, "--junit", metavar="PATH", help="Also write JUnit XML: one test case per check."
    ),
    precision: Optional[int] = typer.Option(None, "--precision", metavar="N", help="Significant digits (default 6)."),
    quiet: bool = typer.Option(False, "--quiet", "-q", help="No messages on stderr."),
    no_color: bool = typer.Option(False, "--no-color", help="No colour."),
) -> None:
    """Run every check of a config; report each; exit 3 if any failed, 1 if any could not run.

    Bounds: max X fails when value > X; min X when value < X; max-abs-increase A when
    value - baseline > A; max-rel-increase R when (value - baseline) / |baseline| > R (over a
    zero baseline any increase fails). A NaN or missing value fails. Every check runs and every
    failure is reported.
    """
    _guard(_check, config, format, junit, precision, quiet, no_color)


@app.command("merge")
def merge_command(
    states: list[str] = typer.Argument(..., metavar="STATE...", help="State files written by compute --save-state."),
    format: str = typer.Option(
        "table",
        "--format",
        "-f",
        envvar="LOSSCTL_FORMAT",
        metavar="[table|json|jsonl|csv|tsv|markdown]",
        help="Report format.",
    ),
    score_only: bool = typer.Option(False, "--score-only", "-b", help="Print only the headline number."),
    precision: Optional[int] = typer.Option(None, "--precision", metavar="N", help="Significant digits."),
    ci: Optional[float] = typer.Option(
        None, "--ci", metavar="LEVEL", help="Interval level (the states must hold bootstrap resamples: compute --ci)."
    ),
    hist: bool = typer.Option(False, "--hist", help="Add a histogram of the per-sample losses."),
    max_value: Optional[float] = typer.Option(
        None, "--max", metavar="X", help="Exit 3 if the value is above X.", rich_help_panel=_CHK
    ),
    min_value: Optional[float] = typer.Option(
        None, "--min", metavar="X", help="Exit 3 if the value is below X.", rich_help_panel=_CHK
    ),
    baseline: Optional[str] = typer.Option(
        None, "--baseline", metavar="NUMBER|JSON", help="A previous value.", rich_help_panel=_CHK
    ),
    max_abs_increase: Optional[float] = typer.Option(
        None, "--max-abs-increase", metavar="A", help="Exit 3 if value - baseline > A.", rich_help_panel=_CHK
    ),
    max_rel_increase: Optional[float] = typer.Option(
        None,
        "--max-rel-increase",
        metavar="R",
        help="Exit 3 if (value - baseline) / |baseline| > R.",
        rich_help_panel=_CHK,
    ),
    per_group: bool = typer.Option(
        False, "--per-group", help="Apply the bounds to every group too.", rich_help_panel=_CHK
    ),
    junit: Optional[str] = typer.Option(None, "--junit", metavar="PATH", help="Write JUnit XML.", rich_help_panel=_CHK),
    quiet: bool = typer.Option(False, "--quiet", "-q", help="No messages on stderr."),
    no_color: bool = typer.Option(False, "--no-color", help="No colour."),
) -> None:
    """Merge states of shards (compute --save-state) into the report one run over all rows gives.

    States must come from the same loss with identical parameters and bootstrap settings;
    counts and compensated sums add, moments, quantiles and bootstrap sums combine, so shards
    can be evaluated in parallel by any scheduler. Give each shard --row-offset (its first
    global row) so row numbers and bootstrap weights are those of one run.
    """
    _guard(_merge, dict(locals()))


@app.command("explain")
def explain(
    name: str = typer.Argument(..., metavar="NAME", help="A loss name or alias (see `lossctl list`)."),
    format: str = typer.Option("text", "--format", "-f", metavar="[text|json]", help="Output format."),
) -> None:
    """Explain a loss: formula, inputs, parameters, gradient, properties, uses and references."""
    _guard(_explain, name, format)


# ---------------------------------------------------------------------------
# Command bodies
# ---------------------------------------------------------------------------


class _PipeClosed(Exception):
    """stdout's reader went away (e.g. `| head`): end quietly."""


def _guard(fn: Callable, *args) -> None:
    try:
        fn(*args)
    except BrokenPipeError:
        raise _PipeClosed() from None


def _stdout_console(no_color: bool):
    from rich.console import Console

    return Console(file=sys.stdout, no_color=True if no_color else None, highlight=False, soft_wrap=True)


def _stderr_console(no_color: bool = False):
    from rich.console import Console

    return Console(file=sys.stderr, no_color=True if no_color else None, highlight=False)


def _choice(name: str, value: str, option: str) -> str:
    if value not in _CHOICES[name]:
        raise UsageError(f"{option} must be one of {', '.join(_CHOICES[name])}; got {value!r}.")
    return value


def _run_options(kw: dict[str, Any]) -> dict[str, Any]:
    """The run options shared by compute, compare and check, as hyphenated keys."""
    keys = (
        "reduction",
        "id_col",
        "on_missing",
        "nan",
        "chunk_size",
        "input_format",
        "group_by",
        "max_groups",
        "ci",
        "ci_n",
        "seed",
        "prob_atol",
        "no_header",
        "delimiter",
        "row_offset",
    )
    return {k.replace("_", "-"): kw.get(k) for k in keys if k in kw}


def _compute(spec: registry.LossSpec, kw: dict[str, Any]) -> None:
    from lossctl import engine
    from lossctl.io import remote

    remote.set_timeout(kw["remote_timeout"])
    texts = [kw.pop(role.name.replace("-", "_")) for role in spec.inputs]
    params: dict[str, Any] = {}
    for p in spec.params:
        raw = kw.pop(p.dest)
        params[p.dest] = raw if p.type == "bool" else (p.default if raw is None else p.parse(raw, spec.name))
    fmt = _choice("format", kw["format"], "--format")
    reduction = kw["reduction"]
    if kw["top"] < 0:
        raise UsageError(f"--top must be 0 or more; got {kw['top']}.")
    bounds = _bounds_from(kw, spec.name)
    if kw["per_group"] and not kw["group_by"]:
        raise UsageError("--per-group applies the bounds to each group of --group-by COL; give --group-by too.")
    if reduction == "none" and (bounds.any or kw["score_only"] or kw["junit"]):
        raise UsageError("--reduction none has no headline value, so bounds, -b and --junit do not apply.")
    per_sample = kw["per_sample"]
    if kw["grad_norm"] and per_sample is None and reduction != "none":
        raise UsageError("--grad-norm adds a column to the per-sample output: give --per-sample PATH too.")
    if reduction == "none" and per_sample is None:
        per_sample = "-"
    if per_sample == "-" and kw["score_only"]:
        raise UsageError("--per-sample - and -b both write to stdout; send the per-sample rows to a file.")

    stderr_tty = sys.stderr.isatty() and not kw["quiet"]
    progress = _Progress(stderr_tty, kw["no_color"])
    opts = engine.build_options(
        _run_options(kw),
        per_sample=per_sample,
        grad=kw["grad"],
        grad_norm=kw["grad_norm"],
        per_sample_format=fmt if fmt in ("csv", "tsv", "jsonl") else ("jsonl" if fmt == "json" else "csv"),
        top=kw["top"],
        hist=kw["hist"],
        save_state=kw["save_state"],
        progress=progress.update if stderr_tty else None,
    )
    try:
        result = engine.run_on(kw["engine"], spec, texts, params, opts, kw["scheduler"], kw["workers"])
    finally:
        progress.stop()
    _finish(result, bounds, kw, per_sample, stderr_tty, fmt, "lossctl compute")


def _bounds_from(kw: dict[str, Any], loss: str):
    from lossctl import checks

    bounds = checks.Bounds(
        max=kw["max_value"],
        min=kw["min_value"],
        max_abs_increase=kw["max_abs_increase"],
        max_rel_increase=kw["max_rel_increase"],
        per_group=kw["per_group"],
    )
    if kw["baseline"] is not None:
        bounds.baseline = checks.load_baseline(kw["baseline"], loss)
    if (bounds.max_abs_increase is not None or bounds.max_rel_increase is not None) and bounds.baseline is None:
        raise UsageError(
            "--max-abs-increase and --max-rel-increase compare with a --baseline (a number or a JSON result)."
        )
    return bounds


def _finish(result: dict, bounds, kw: dict[str, Any], per_sample, stderr_tty: bool, fmt: str, suite: str) -> None:
    """Bounds, JUnit, rendering and the exit code of a compute-like report."""
    from lossctl import checks, report as rep

    reduction = result["reduction"]
    outcomes = checks.check_report(result, bounds) if bounds.any else []
    if outcomes:
        result["checks"] = outcomes
        if bounds.baseline is not None:
            result["baseline"] = {"source": bounds.baseline.source, "value": bounds.baseline.value}
    if kw["junit"]:
        _write_text(kw["junit"], checks.junit_xml([_as_check(result, outcomes)], suite=suite), "--junit")

    if reduction != "none":
        if kw["score_only"]:
            sys.stdout.write(rep.score_only(result, kw["precision"]) + "\n")
            sys.stdout.flush()
        elif per_sample == "-":
            if stderr_tty:
                rep.render_table(result, _stderr_console(kw["no_color"]), kw["precision"])
        elif fmt == "table":
            rep.render_table(result, _stdout_console(kw["no_color"]), kw["precision"])
        else:  # plain text: Rich (~14 ms to import) is not needed
            sys.stdout.write(rep.machine_text(result, fmt, kw["precision"]))
            sys.stdout.flush()
    dropped = result["rows"]["dropped"]
    if dropped and stderr_tty and fmt != "table":
        _stderr_console(kw["no_color"]).print(f"lossctl: note: {dropped} row(s) dropped by --on-missing drop.")
    failed = [o["message"] for o in outcomes if not o["passed"]]
    if failed:
        raise CheckFailed("check failed: " + "; ".join(failed) + ".")


def _as_check(result: dict, outcomes: list[dict]) -> dict:
    from lossctl import checks

    return {
        "name": result["loss"],
        "loss": result["loss"],
        "value": result["value"],
        "outcomes": outcomes,
        "status": checks.status_of(outcomes),
        "signature": result["signature"],
    }


def _write_text(path: str, text: str, option: str) -> None:
    from lossctl.io.sinks import AtomicFile

    f = AtomicFile(path, option)
    try:
        f.fh.write(text.encode())
    except BaseException:
        f.abort()
        raise
    f.commit()


class _Progress:
    """A Rich progress bar on stderr that appears only once a run has taken a second."""

    def __init__(self, enabled: bool, no_color: bool):
        import time

        self.enabled = enabled
        self.no_color = no_color
        self.started = time.monotonic()
        self.bar = None
        self.task = None

    def update(self, done: int, total: int | None) -> None:
        import time

        if not self.enabled:
            return
        if self.bar is None:
            if time.monotonic() - self.started < 1.0:
                return
            from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

            self.bar = Progress(
                TextColumn("rows"),
                BarColumn(),
                MofNCompleteColumn(),
                TimeElapsedColumn(),
                console=_stderr_console(self.no_color),
                transient=True,
            )
            self.bar.start()
            self.task = self.bar.add_task("rows", total=total)
        self.bar.update(self.task, completed=done, total=total)

    def stop(self) -> None:
        if self.bar is not None:
            self.bar.stop()
            self.bar = None


def _compare(spec: registry.LossSpec, kw: dict[str, Any]) -> None:
    from lossctl import compare, engine, report as rep
    from lossctl.io import remote

    remote.set_timeout(kw["remote_timeout"])
    predictions = kw.pop("predictions")
    others = {
        role.name: kw.pop("role_" + role.name.replace("-", "_"))
        for role in spec.inputs
        if ("role_" + role.name.replace("-", "_")) in kw
    }
    params: dict[str, Any] = {}
    for p in spec.params:
        raw = kw.pop(p.dest)
        params[p.dest] = raw if p.type == "bool" else (p.default if raw is None else p.parse(raw, spec.name))
    fmt = kw["format"]
    if fmt not in ("table", "json", "markdown"):
        raise UsageError(f"--format must be table, json or markdown; got {fmt!r}.")
    if kw["reduction"] not in ("mean", "sum"):
        raise UsageError(f"--reduction must be mean or sum for compare; got {kw['reduction']!r}.")
    if kw["permutations"] < 1:
        raise UsageError(f"--permutations must be at least 1; got {kw['permutations']}.")
    if kw["top"] < 0:
        raise UsageError(f"--top must be 0 or more; got {kw['top']}.")
    opts = engine.build_options(_run_options(kw))
    doc = compare.compare(
        spec,
        predictions,
        others,
        params,
        opts,
        level=opts.ci if opts.ci is not None else 0.95,
        resamples=opts.ci_n,
        seed=opts.seed,
        permutations=kw["permutations"],
        top=kw["top"],
    )
    if fmt == "json":
        sys.stdout.write(rep.to_json(doc) + "\n")
    elif fmt == "markdown":
        sys.stdout.write(rep.compare_markdown(doc, kw["precision"]))
    else:
        rep.render_compare(doc, _stdout_console(kw["no_color"]), kw["precision"])
    sys.stdout.flush()


def _merge(kw: dict[str, Any]) -> None:
    from lossctl import engine

    fmt = _choice("format", kw["format"], "--format")
    spec, meta, state, level = engine.merge_states(kw["states"])
    if kw["ci"] is not None and state.bootstrap is None:
        raise UsageError("--ci needs bootstrap resamples in the states: run compute with --ci (and --save-state).")
    if kw["per_group"] and not meta.get("group_by"):
        raise UsageError("--per-group needs states computed with --group-by.")
    ci = kw["ci"] if kw["ci"] is not None else level
    result = engine.report_from_state(spec, meta, state, ci_level=ci, hist=kw["hist"])
    stderr_tty = sys.stderr.isatty() and not kw["quiet"]
    _finish(result, _bounds_from(kw, spec.name), kw, None, stderr_tty, fmt, "lossctl merge")


def _check(config: str, fmt: str, junit: str | None, precision: int | None, quiet: bool, no_color: bool) -> None:
    from lossctl import checks, report as rep

    if fmt not in ("table", "json", "markdown"):
        raise UsageError(f"--format must be table, json or markdown; got {fmt!r}.")
    items = checks.load_config(config)
    results = [checks.run_check(c) for c in items]
    if junit:
        _write_text(junit, checks.junit_xml(results, suite=f"lossctl check {os.path.basename(config)}"), "--junit")
    doc = rep.check_document(config, results)
    if fmt == "json":
        sys.stdout.write(rep.to_json(doc) + "\n")
    elif fmt == "markdown":
        sys.stdout.write(rep.checks_markdown(doc, precision))
    else:
        rep.render_checks(doc, _stdout_console(no_color), precision)
    sys.stdout.flush()
    errors = [r for r in results if r["status"] == "error"]
    failed = [r for r in results if r["status"] == "fail"]
    if not quiet:
        for r in errors:
            print(f"lossctl: error: check {r['name']}: {r['error']}", file=sys.stderr)
        for r in failed:
            msgs = "; ".join(o["message"] for o in r["outcomes"] if not o["passed"])
            print(f"lossctl: check failed: {r['name']}: {msgs}.", file=sys.stderr)
    if errors:
        raise typer.Exit(EXIT_DATA)
    if failed:
        raise typer.Exit(EXIT_CHECK)


def _explain(name: str, fmt: str) -> None:
    spec = registry.get(name)
    if fmt == "json":
        import json

        sys.stdout.write(json.dumps(registry.describe(spec), indent=2, ensure_ascii=False) + "\n")
        return
    if fmt != "text":
        raise UsageError(f"--format must be text or json; got {fmt!r}.")
    from rich.table import Table
    from rich.text import Text

    con = _stdout_console(False)
    title = Text(spec.name, style="bold cyan")
    if spec.aliases:
        title.append(f" ({', '.join(spec.aliases)})", style="cyan")
    title.append(f"  ·  {spec.family}", style="dim")
    con.print(title)
    con.print(spec.summary)

    def section(head: str, body: str | None = None) -> None:
        con.print()
        con.print(Text(head, style="bold"))
        if body is not None:
            for line in body.splitlines():
                con.print(Text("  " + line))

    section("Formula (per sample)", spec.formula)
    section("Inputs (positional, in this order)")
    t = Table(box=None, show_header=False, pad_edge=False)
    for _ in range(3):
        t.add_column()
    for r in spec.inputs:
        t.add_row("  " + r.metavar + (" (optional)" if r.optional else ""), r.shape, r.help)
    con.print(t)
    if spec.params:
        section("Parameters")
        t = Table(box=None, show_header=False, pad_edge=False)
        for _ in range(3):
            t.add_column()
        for p in spec.params:
            default = "none" if p.default is None else str(p.default)
            rng = p.describe_range()
            t.add_row("  --" + p.name, f"default {default}", p.help + (f" ({rng})" if rng else ""))
        con.print(t)
    section("Headline value", spec.headline)
    section("Gradient", spec.gradient + f"  (w.r.t. {spec.inputs[spec.pred_index].metavar})")
    section("Properties")
    for prop in spec.properties:
        con.print(Text("  • " + prop))
    section("Used for", spec.used_for)
    section("Output activation it assumes", spec.activation)
    section("Reference equivalent", spec.reference)
    section("Paper", spec.paper)
    section("Example", "lossctl compute " + " ".join((spec.name, *spec.example)))


def _list(fmt: str, family: str | None) -> None:
    specs = [s for s in registry.LOSSES if family is None or s.family == family]
    if family is not None and not specs:
        raise UsageError(
            f"--family must be one of {', '.join(sorted({s.family for s in registry.LOSSES}))}; got {family!r}."
        )
    if fmt == "json":
        import json

        sys.stdout.write(json.dumps([registry.describe(s) for s in specs], indent=2, ensure_ascii=False) + "\n")
        return
    if fmt != "table":
        raise UsageError(f"--format must be table or json; got {fmt!r}.")
    from rich.table import Table

    table = Table(box=None, header_style="bold", pad_edge=False)
    table.add_column("loss", style="cyan", no_wrap=True)
    table.add_column("aliases", no_wrap=True)
    table.add_column("inputs")
    table.add_column("what it is")
    for fam in registry.FAMILIES:
        group = [s for s in specs if s.family == fam]
        if not group:
            continue
        table.add_row(f"[bold]{fam}[/bold]", "", "", "")
        for s in group:
            inputs = " ".join(r.metavar + ("?" if r.optional else "") for r in s.inputs)
            table.add_row("  " + s.name, ", ".join(s.aliases), inputs, s.summary)
    _stdout_console(False).print(table)


# ---------------------------------------------------------------------------
# The one error boundary
# ---------------------------------------------------------------------------


def _silence_stdout() -> None:
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
    except (OSError, ValueError):
        pass


def main(argv: list[str] | None = None) -> None:
    from lossctl import limits

    limits.configure()  # under a small memory cap: allocators and thread pools, before NumPy/pyarrow
    args = list(sys.argv[1:] if argv is None else argv)
    # `-:COLUMN` (a column of stdin) would parse as an option; hand it over as a source.
    args = [STDIN_TOKEN + a[1:] if a.startswith("-:") and len(a) > 2 else a for a in args]
    debug = "--debug" in args or os.environ.get("LOSSCTL_DEBUG", "") not in ("", "0")
    code = EXIT_OK
    try:
        command = typer.main.get_command(app)
        rv = command.main(args=args, prog_name="lossctl", standalone_mode=False)
        code = rv if isinstance(rv, int) else EXIT_OK
        if code == EXIT_INTERRUPTED:
            print("lossctl: interrupted", file=sys.stderr)
    except typer.Abort:
        print("lossctl: interrupted", file=sys.stderr)
        code = EXIT_INTERRUPTED
    except KeyboardInterrupt:
        print("lossctl: interrupted", file=sys.stderr)
        code = EXIT_INTERRUPTED
    except click.exceptions.ClickException as exc:
        exc.show()
        code = EXIT_USAGE if isinstance(exc, click.exceptions.UsageError) else exc.exit_code
    except _PipeClosed:
        _silence_stdout()
        code = EXIT_OK
    except LossctlError as exc:
        if debug:
            import traceback

            traceback.print_exc()
        label = "check failed" if isinstance(exc, CheckFailed) else "error"
        text = str(exc)
        if isinstance(exc, CheckFailed) and text.startswith("check failed: "):
            text = text[len("check failed: ") :]
        code = exc.exit_code
        if not isinstance(exc, (UsageError, CheckFailed)) and limits.is_memory_error(exc.__context__):
            # A reader's "could not read ... (malloc of size N failed)" is not a corrupt file.
            text, code = limits.memory_message(exc), EXIT_DATA
        print(f"lossctl: {label}: {text}", file=sys.stderr)
    except MemoryError as exc:
        print(f"lossctl: error: {limits.memory_message(exc)}", file=sys.stderr)
        code = EXIT_DATA
    except Exception as exc:  # noqa: BLE001 - the boundary: never a bare traceback
        if debug:
            import traceback

            traceback.print_exc()
        if limits.is_memory_error(exc):
            print(f"lossctl: error: {limits.memory_message(exc)}", file=sys.stderr)
        else:
            print(
                f"lossctl: internal error: {type(exc).__name__}: {exc}. This is a bug in lossctl; "
                "run with --debug for a traceback and report it.",
                file=sys.stderr,
            )
        code = EXIT_DATA
    try:
        sys.stdout.flush()
    except (BrokenPipeError, ValueError):
        _silence_stdout()
    sys.exit(code)


__all__ = ["app", "main", "EXIT_CHECK", "EXIT_DATA", "EXIT_USAGE"]
