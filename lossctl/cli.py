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
from typer.core import TyperCommand, TyperGroup

try:  # typer >= 0.22 vendors click as typer._click
    from typer import _click as click
except ImportError:  # pragma: no cover - older typer depends on click
    import click

from lossctl import __version__, registry
from lossctl.io import STDIN_TOKEN
from lossctl.io.outputs import Outputs
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
    "2 usage error (the command line); 3 a check failed (--max/--min); 130 interrupted (143 SIGTERM, 129 SIGHUP)."
)

# ---------------------------------------------------------------------------
# Groups with "did you mean"
# ---------------------------------------------------------------------------


_SWITCH_WORDS = {
    **dict.fromkeys(("true", "yes", "on", "1"), True),
    **dict.fromkeys(("false", "no", "off", "0"), False),
}


def _refuse_switch_values(cmd: "click.Command", ctx: "click.Context", args: list[str], stop_at_command: bool) -> None:
    """Boolean options are switches (``--log-input`` / ``--no-log-input``). A value written after
    one (``--log-input false``, ``--hist=1``) would otherwise become a source file or "an
    unexpected extra argument"; say which switch to write instead (a file of that name is kept)."""
    switches: dict[str, tuple[Any, bool]] = {}
    for p in cmd.params:
        if getattr(p, "is_flag", False) and not getattr(p, "count", False):
            switches.update({name: (p, True) for name in p.opts})
            switches.update({name: (p, False) for name in p.secondary_opts})
    for i, arg in enumerate(args):
        if arg == "--" or (stop_at_command and not arg.startswith("-")):
            break
        name, eq, word = arg.partition("=")
        if name not in switches or not name.startswith("-"):
            continue
        if not eq:
            word = args[i + 1] if i + 1 < len(args) else ""
            if os.path.exists(word):
                continue
        if word.lower() not in _SWITCH_WORDS:
            continue
        opt, positive = switches[name]
        wanted = _SWITCH_WORDS[word.lower()] == positive  # is the option's own sense (on) meant?
        long = [o for o in opt.opts if o.startswith("--")] or opt.opts
        off = [o for o in opt.secondary_opts if o.startswith("--")] or opt.secondary_opts
        target = long[0] if wanted else (off[0] if off else None)
        if target is None:
            advice = f"leave out {long[0]}"
        else:
            advice = f"use {target}" + (" (alone)" if positive == wanted else "")  # the switch as written
        written = arg if eq else f"{arg} {word}"
        raise click.exceptions.UsageError(f"{name} is a switch and takes no value; got {written!r}: {advice}.", ctx)


class _SwitchCommand(TyperCommand):
    """A command whose boolean options say how to write them when given a value."""

    def parse_args(self, ctx: "click.Context", args: list[str]) -> list[str]:
        _refuse_switch_values(self, ctx, args, stop_at_command=False)
        return super().parse_args(ctx, args)


class _SuggestingGroup(TyperGroup):
    what = "command"

    def parse_args(self, ctx: "click.Context", args: list[str]) -> list[str]:
        _refuse_switch_values(self, ctx, args, stop_at_command=True)
        return super().parse_args(ctx, args)

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
        from lossctl import plugins

        plugins.load_installed()  # (a plugin that fails to load is left out; `lossctl list` says why)
        return [s.name for s in registry.LOSSES]

    def get_command(self, ctx: "click.Context", name: str):
        if name in self.commands:
            return self.commands[name]
        spec = registry.BY_NAME.get(name)
        if spec is None and not name.startswith("-"):
            from lossctl import plugins

            spec = plugins.find(name)  # a plugin's loss; one that fails to load is an error naming it
        if spec is None:
            return None
        fn = type(self).make(spec)
        mini = typer.Typer(add_completion=False, pretty_exceptions_enable=False)
        mini.command(name=name, help=fn.__doc__, no_args_is_help=True, hidden=name != spec.name, cls=_SwitchCommand)(
            fn
        )
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
            metavar="[csv|tsv|parquet|npy|npz|arrow|jsonl]",
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
            help=(
                "Headline reduction as in PyTorch: 'mean' (the loss's reference mean) or 'sum' (PyTorch's "
                "reduction='sum': for (N, D) element-wise losses such as mse, bce and focal the sum over all "
                "N·D elements, D times the sum of the per-sample values, which are row means); "
                "'none' writes the per-sample values to stdout (and to --per-sample PATH too when given)."
            ),
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
        "html",
        Optional[str],
        typer.Option(
            None,
            "--html",
            metavar="PATH",
            help="Also write a self-contained HTML report (histogram, worst samples, groups, signature).",
            rich_help_panel=_OUT,
        ),
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
            help="Bootstrap seed, 0 to 2**64 - 1 (default 12345, or env LOSSCTL_SEED).",
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
        "per_token",
        Optional[str],
        typer.Option(
            None,
            "--per-token",
            metavar="PATH",
            help="Token-level losses (token-cross-entropy): write one row per scored token (row, position, "
            "token, loss): .csv .tsv .parquet .jsonl.",
            rich_help_panel=_OUT,
        ),
    ),
    (
        "normalize_by",
        Optional[str],
        typer.Option(
            None,
            "--normalize-by",
            metavar="[tokens|bytes|words]",
            help="Perplexity per token, word or byte (and bits per byte) in 'derived', as lm-evaluation-harness "
            "defines them: exp(Σ NLL / Σ units) over the corpus; bytes and words need --counts.",
            rich_help_panel=_OUT,
        ),
    ),
    (
        "counts",
        Optional[str],
        typer.Option(
            None,
            "--counts",
            metavar="COL|PATH:COL",
            help="The number of bytes, words or tokens of each sequence (a column of an input, or of a side "
            "file), for --normalize-by.",
            rich_help_panel=_OUT,
        ),
    ),
    (
        "csv_safe",
        bool,
        typer.Option(
            False,
            "--csv-safe",
            help="CSV/TSV outputs for spreadsheets: a text cell (id, group) starting with = + - @ or a tab "
            "gets a leading ' so it is not run as a formula (numbers stay numbers).",
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
        "strict",
        bool,
        typer.Option(
            False,
            "--strict",
            help="Treat warnings (e.g. a prediction read as logits that looks like probabilities) as errors: "
            "exit 1 and write nothing.",
            rich_help_panel=_CHK,
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
    "correction": ("holm", "none"),
}


def _param_option(p: registry.Param):
    metavar = {
        "float": "FLOAT",
        "int": "INT",
        "floats": "FLOATS|FILE",
        "names": "NAMES|FILE",
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
    """Help text is rendered as Rich markup: keep formulas such as w[y_n] literal (and a plugin's
    control characters visible).

    The same rule as ``rich.markup.escape``, without importing Rich at start-up.
    """
    from lossctl.literal import visible

    return _MARKUP_TAG.sub(lambda m: f"{m.group(1)}{m.group(1)}\\{m.group(2)}", visible(text, keep="\n"))


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
                default=typer.Option(
                    None,
                    f"--{role.name}",
                    metavar="SOURCE",
                    help=_escape(f"{role.shape}: {role.help}"),
                    rich_help_panel=_IN,
                )
                if role.option
                else typer.Argument(
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
        "Losses from plugins: installed packages (entry points 'lossctl.losses'), --plugin MODULE "
        "(or FILE.py, anywhere on the line) and LOSSCTL_PLUGINS=MODULE,...\n\n"
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
    help="Compute a loss: lossctl compute NAME INPUT... (see `lossctl list`). "
    + registry.INPUT_ORDER_RULE
    + " "
    + EXIT_CODES_HELP,
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
    "html",
    "group_by",
    "per_group",
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
        "labels",
        Optional[list[str]],
        typer.Option(
            None,
            "--label",
            metavar="NAME",
            help="A name per system, in order (default: the shortest path suffixes that tell them apart).",
            rich_help_panel=_OUT,
        ),
    ),
    (
        "correction",
        str,
        typer.Option(
            "none",
            "--correction",
            metavar="[holm|none]",
            help="Adjust the p-values of several candidates or groups (Holm's step-down).",
            rich_help_panel=_OUT,
        ),
    ),
    (
        "max_delta",
        Optional[float],
        typer.Option(
            None, "--max-delta", metavar="A", help="Exit 3 if candidate - baseline > A.", rich_help_panel=_CHK
        ),
    ),
    (
        "max_rel_delta",
        Optional[float],
        typer.Option(
            None,
            "--max-rel-delta",
            metavar="R",
            help="Exit 3 if (candidate - baseline) / |baseline| > R.",
            rich_help_panel=_CHK,
        ),
    ),
    (
        "fail_if_worse",
        bool,
        typer.Option(
            False,
            "--fail-if-worse",
            help="Exit 3 if the interval of the difference lies entirely on the worse side.",
            rich_help_panel=_CHK,
        ),
    ),
    (
        "gate_alpha",
        Optional[float],
        typer.Option(
            None,
            "--alpha",
            metavar="A",
            help="Exit 3 if a candidate is worse with a permutation p-value (adjusted by --correction) below A.",
            rich_help_panel=_CHK,
        ),
    ),
    (
        "junit",
        Optional[str],
        typer.Option(
            None, "--junit", metavar="PATH", help="Write JUnit XML: one test case per candidate.", rich_help_panel=_CHK
        ),
    ),
    (
        "no_step_summary",
        bool,
        typer.Option(
            False,
            "--no-step-summary",
            help="Do not append the markdown report to $GITHUB_STEP_SUMMARY.",
            rich_help_panel=_OUT,
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
        if name == "gate_alpha" and any(p.name == "alpha" for p in spec.params):
            # the loss's own --alpha (focal, distillation) keeps PyTorch's name; the gate moves aside
            opt = typer.Option(
                None,
                "--test-alpha",
                metavar="A",
                help="Exit 3 if a candidate is worse with a permutation p-value (adjusted by --correction) below A.",
                rich_help_panel=_CHK,
            )
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


@app.command("list", cls=_SwitchCommand)
def list_losses(
    format: str = typer.Option("table", "--format", "-f", metavar="[table|json]", help="Output format."),
    family: Optional[str] = typer.Option(None, "--family", help="Only this family."),
) -> None:
    """List every loss, grouped by family (from the registry)."""
    _guard(_list, format, family)


@app.command("check", cls=_SwitchCommand)
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
    html: Optional[str] = typer.Option(
        None, "--html", metavar="PATH", help="Also write a self-contained HTML report: a pass/fail table."
    ),
    no_step_summary: bool = typer.Option(
        False, "--no-step-summary", help="Do not append the markdown report to $GITHUB_STEP_SUMMARY."
    ),
) -> None:
    """Run every check of a config; report each; exit 3 if any failed, 1 if any could not run.

    Bounds: max X fails when value > X; min X when value < X; max-abs-increase A when
    value - baseline > A; max-rel-increase R when (value - baseline) / |baseline| > R (over a
    zero baseline any increase fails). A NaN or missing value fails. Every check runs and every
    failure is reported.
    """
    _guard(_check, config, format, junit, precision, quiet, no_color, html, no_step_summary)


@app.command("merge", cls=_SwitchCommand)
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
    html: Optional[str] = typer.Option(None, "--html", metavar="PATH", help="Also write a self-contained HTML report."),
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
    csv_safe: bool = typer.Option(
        False, "--csv-safe", help="-f csv/tsv for spreadsheets: text cells starting with = + - @ get a leading '."
    ),
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


@app.command("explain", cls=_SwitchCommand)
def explain(
    name: str = typer.Argument(..., metavar="NAME", help="A loss name or alias (see `lossctl list`)."),
    format: str = typer.Option("text", "--format", "-f", metavar="[text|json]", help="Output format."),
) -> None:
    """Explain a loss: formula, inputs, parameters, gradient, properties, uses and references."""
    _guard(_explain, name, format)


@app.command("diff")
def diff_command(
    docs: list[str] = typer.Argument(
        ..., metavar="BASE CAND...", help="Saved reports (-f json of compute, merge, check, compare) or --save-state files."
    ),
    format: str = typer.Option(
        "table", "--format", "-f", envvar="LOSSCTL_FORMAT", metavar="[table|json|markdown]", help="Output format."
    ),
    precision: Optional[int] = typer.Option(None, "--precision", metavar="N", help="Significant digits (default 6)."),
    max_delta: Optional[float] = typer.Option(
        None, "--max-delta", metavar="A", help="Exit 3 if candidate - base > A for any value.", rich_help_panel=_CHK
    ),
    max_rel_delta: Optional[float] = typer.Option(
        None,
        "--max-rel-delta",
        metavar="R",
        help="Exit 3 if (candidate - base) / |base| > R for any value.",
        rich_help_panel=_CHK,
    ),
    ci: Optional[float] = typer.Option(
        None, "--ci", metavar="LEVEL", help="Level of the paired interval from two state files (default 0.95)."
    ),
    quiet: bool = typer.Option(False, "--quiet", "-q", help="No messages on stderr."),
    no_color: bool = typer.Option(False, "--no-color", help="No colour."),
) -> None:
    """Compare saved reports value by value: per loss (or check) and per group, the base value,
    the candidate's, delta = candidate - base and delta / |base|.

    Two state files written with the same --ci-n and --seed over the same rows also give a
    paired bootstrap interval of the headline difference, without the raw predictions (the
    bootstrap weights depend only on the seed and the row number). With --max-delta or
    --max-rel-delta a value above the gate, or missing on one side, exits 3.
    """
    _guard(_diff, docs, format, precision, max_delta, max_rel_delta, ci, quiet, no_color)


@app.command("completion")
def completion_command(
    shell: str = typer.Argument(..., metavar="[bash|zsh|fish]", help="The shell to complete in."),
) -> None:
    """Print a shell completion script: commands, loss names and aliases, options, their choices, files.

    bash: eval "$(lossctl completion bash)" (or save it as
    ~/.local/share/bash-completion/completions/lossctl); zsh: eval "$(lossctl completion zsh)"
    in ~/.zshrc; fish: lossctl completion fish > ~/.config/fish/completions/lossctl.fish.
    """
    _guard(_completion, shell)


def _completion(shell: str) -> None:
    from lossctl import completion

    if shell not in completion.SHELLS:
        raise UsageError(f"the shell must be one of {', '.join(completion.SHELLS)}; got {shell!r}.")
    sys.stdout.write(completion.script(shell))


def _diff(docs, fmt, precision, max_delta, max_rel_delta, ci, quiet, no_color) -> None:
    from lossctl import diff, report as rep

    if fmt not in ("table", "json", "markdown"):
        raise UsageError(f"--format must be table, json or markdown; got {fmt!r}.")
    if len(docs) < 2:
        raise UsageError("diff needs a baseline and at least one candidate: lossctl diff BASE.json CAND.json.")
    if ci is not None and not 0 < ci < 1:
        raise UsageError(f"--ci must lie in (0, 1); got {ci!r}.")
    try:
        doc = diff.diff(docs, max_delta=max_delta, max_rel_delta=max_rel_delta, ci=ci)
    except UsageError as exc:
        if ci is not None and "paired interval" in exc.message:
            raise UsageError("--ci needs state files on both sides (compute --ci ... --save-state).") from None
        raise
    if fmt == "json":
        sys.stdout.write(rep.to_json(doc) + "\n")
    elif fmt == "markdown":
        sys.stdout.write(diff.to_markdown(doc, precision))
    else:
        diff.render_table(doc, _stdout_console(no_color), precision)
    sys.stdout.flush()
    if not doc["passed"]:
        if not quiet:
            for c in doc["candidates"]:
                for r in c["rows"]:
                    if r["status"] == "fail":
                        where = r["name"] + ("" if r["group"] is None else f" group {r['group']}")
                        print(f"lossctl: check failed: {c['label']}: {where}: {'; '.join(r['failures'])}.", file=sys.stderr)
        raise typer.Exit(EXIT_CHECK)


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


_CONSOLE_CLASS = None


def _console(file, no_color: bool, **kw):
    """A Rich console that shows every string as typed (no markup, no emoji codes, no
    highlighting: data such as an id ``[/]`` or ``:x:`` is data) and lets a closed pipe reach
    the boundary (Rich's own handler exits 1 without a word)."""
    global _CONSOLE_CLASS
    if _CONSOLE_CLASS is None:
        from rich.console import Console

        class _LiteralConsole(Console):
            def on_broken_pipe(self) -> None:
                self.quiet = True
                raise BrokenPipeError(32, "the reader of the output went away")

        _CONSOLE_CLASS = _LiteralConsole
    return _CONSOLE_CLASS(
        file=file, no_color=True if no_color else None, highlight=False, markup=False, emoji=False, **kw
    )


def _stdout_console(no_color: bool):
    # Into a pipe or a file, Rich would assume 80 columns and wrap names and numbers onto extra
    # lines; a reader there (grep, less -S, a CI log) wants whole lines. $COLUMNS still wins.
    wide = not sys.stdout.isatty() and not os.environ.get("COLUMNS")
    return _console(sys.stdout, no_color, soft_wrap=True, **({"width": 200} if wide else {}))


def _stderr_console(no_color: bool = False):
    return _console(sys.stderr, no_color)


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
        "strict",
    )
    return {k.replace("_", "-"): kw.get(k) for k in keys if k in kw}


def _compute(spec: registry.LossSpec, kw: dict[str, Any]) -> None:
    from lossctl import engine
    from lossctl.io import remote

    remote.set_timeout(kw["remote_timeout"])
    texts = [kw.pop(role.name.replace("-", "_")) for role in spec.inputs]
    inputs = [(role.metavar, t) for role, t in zip(spec.inputs, texts)]
    inputs += [("--" + p.name, kw[p.dest]) for p in spec.params if isinstance(kw[p.dest], str)]
    _preflight(kw, inputs, dirs=("--per-sample",) if kw["engine"] == "dask" else ())
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
    if kw["per_token"] == "-":
        raise UsageError("--per-token -: stdout holds the report; write the per-token rows to a file (.csv, .parquet, ...).")
    if per_sample == "-" and kw["score_only"]:
        raise UsageError("--per-sample - and -b both write to stdout; send the per-sample rows to a file.")

    stderr_tty = sys.stderr.isatty() and not kw["quiet"]
    progress = _Progress(stderr_tty, kw["no_color"])
    opts = engine.build_options(
        _run_options(kw),
        per_sample=per_sample,
        grad=kw["grad"],
        grad_norm=kw["grad_norm"],
        per_token=kw["per_token"],
        counts=kw["counts"],
        normalize_by=kw["normalize_by"],
        per_sample_format=fmt if fmt in ("csv", "tsv", "jsonl") else ("jsonl" if fmt == "json" else "csv"),
        top=kw["top"],
        hist=kw["hist"] or bool(kw["html"]),
        save_state=kw["save_state"],
        csv_safe=kw["csv_safe"],
        progress=progress.update if stderr_tty else None,
        per_sample_echo=reduction == "none",
    )
    try:
        result = engine.run_on(kw["engine"], spec, texts, params, opts, kw["scheduler"], kw["workers"])
    finally:
        progress.stop()
    _finish(result, bounds, kw, per_sample, stderr_tty, fmt, "lossctl compute")


def _preflight(kw: dict[str, Any], inputs: list, dirs: tuple = ()) -> None:
    """Refuse outputs that would overwrite an input or each other, before anything is read."""
    from lossctl.io.outputs import preflight

    outputs = [
        (f"--{k.replace('_', '-')}", kw.get(k)) for k in ("per_sample", "grad", "save_state", "junit", "per_token")
    ]
    inputs = inputs + [("--group-by", kw.get("group_by")), ("--baseline", kw.get("baseline"))]
    inputs += [("--counts", kw.get("counts"))]
    preflight(outputs, inputs, dirs)


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
    if kw.get("html"):
        from lossctl import html

        _write_text(kw["html"], html.render(result), "--html")
    if not kw["hist"]:
        result.pop("hist", None)  # computed for the HTML page only

    if reduction != "none":
        try:
            if kw["score_only"]:
                sys.stdout.write(rep.score_only(result, kw["precision"]) + "\n")
                sys.stdout.flush()
            elif per_sample == "-":
                if stderr_tty:
                    rep.render_table(result, _stderr_console(kw["no_color"]), kw["precision"])
            elif fmt == "table":
                rep.render_table(result, _stdout_console(kw["no_color"]), kw["precision"])
            else:  # plain text: Rich (~14 ms to import) is not needed
                sys.stdout.write(rep.machine_text(result, fmt, kw["precision"], kw.get("csv_safe", False)))
                sys.stdout.flush()
        except BrokenPipeError:  # the reader went away (`| head -1`): the bounds still set the exit code
            _silence_stdout()
    if not kw["quiet"]:
        for w in result.get("warnings") or []:
            _say(f"lossctl: warning: {w}")
    dropped = result["rows"]["dropped"]
    if dropped and stderr_tty and fmt != "table":
        _say(f"lossctl: note: {dropped} row(s) dropped by --on-missing drop.")
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
        f.write(text.encode())
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
    correction = _choice("correction", kw["correction"], "--correction")
    if kw["gate_alpha"] is not None and not 0 < kw["gate_alpha"] < 1:
        raise UsageError(f"--alpha must lie in (0, 1); got {kw['gate_alpha']!r}.")
    for flag, v in (("--max-delta", kw["max_delta"]), ("--max-rel-delta", kw["max_rel_delta"])):
        if v is not None and v != v:
            raise UsageError(f"{flag} must be a number, not NaN.")
    if kw["per_group"] and not kw["group_by"]:
        raise UsageError("--per-group applies the gates to each group of --group-by COL; give --group-by too.")
    gated = kw["max_delta"] is not None or kw["max_rel_delta"] is not None or kw["fail_if_worse"] or kw["gate_alpha"] is not None
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
        delta_hist=bool(kw["html"]),
        labels=kw["labels"] or None,
        correction=correction,
    )
    if gated:
        compare.gate(
            doc,
            max_delta=kw["max_delta"],
            max_rel_delta=kw["max_rel_delta"],
            fail_if_worse=kw["fail_if_worse"],
            alpha=kw["gate_alpha"],
            per_group=kw["per_group"],
        )
    if kw["junit"]:
        from lossctl import checks

        cases = [
            {
                "name": c["label"],
                "loss": doc["loss"],
                "value": c["value"],
                "outcomes": c.get("outcomes", []),
                "status": c.get("status", "pass"),
                "signature": c["signature"],
            }
            for c in doc["candidates"]
        ]
        _write_text(kw["junit"], checks.junit_xml(cases, suite=f"lossctl compare {doc['loss']}"), "--junit")
    if kw["html"]:
        from lossctl import html

        _write_text(kw["html"], html.render(doc), "--html")
        for c in doc["candidates"]:
            c.pop("delta_hist", None)  # for the HTML page only
    if fmt == "json":
        sys.stdout.write(rep.to_json(doc) + "\n")
    elif fmt == "markdown":
        sys.stdout.write(rep.compare_markdown(doc, kw["precision"]))
    else:
        rep.render_compare(doc, _stdout_console(kw["no_color"]), kw["precision"])
    sys.stdout.flush()
    if not kw["no_step_summary"]:
        _step_summary(lambda: rep.compare_markdown(doc, kw["precision"]))
    if gated and not doc["passed"]:
        if not kw["quiet"]:
            for c in doc["candidates"]:
                msgs = "; ".join(o["message"] for o in c["outcomes"] if not o["passed"])
                if msgs:
                    print(f"lossctl: check failed: {msgs}.", file=sys.stderr)
        raise typer.Exit(EXIT_CHECK)


def _step_summary(markdown: Callable[[], str]) -> None:
    """Append a report's markdown to $GITHUB_STEP_SUMMARY when the variable names a file (GitHub Actions)."""
    path = os.environ.get("GITHUB_STEP_SUMMARY", "")
    if not path:
        return
    try:
        with open(path, "a", encoding="utf-8") as fh:
            fh.write(markdown() + "\n")
    except OSError as exc:
        print(f"lossctl: warning: could not append to GITHUB_STEP_SUMMARY {path} ({exc.strerror}).", file=sys.stderr)


def _merge(kw: dict[str, Any]) -> None:
    from lossctl import engine

    _preflight(kw, [("STATE", path) for path in kw["states"]])
    fmt = _choice("format", kw["format"], "--format")
    spec, meta, state, level = engine.merge_states(kw["states"])
    if kw["ci"] is not None and state.bootstrap is None:
        raise UsageError("--ci needs bootstrap resamples in the states: run compute with --ci (and --save-state).")
    if kw["per_group"] and not meta.get("group_by"):
        raise UsageError("--per-group needs states computed with --group-by.")
    ci = kw["ci"] if kw["ci"] is not None else level
    result = engine.report_from_state(spec, meta, state, ci_level=ci, hist=kw["hist"] or bool(kw["html"]))
    stderr_tty = sys.stderr.isatty() and not kw["quiet"]
    _finish(result, _bounds_from(kw, spec.name), kw, None, stderr_tty, fmt, "lossctl merge")


def _check(
    config: str,
    fmt: str,
    junit: str | None,
    precision: int | None,
    quiet: bool,
    no_color: bool,
    html: str | None = None,
    no_step_summary: bool = False,
) -> None:
    from lossctl import checks, report as rep

    if fmt not in ("table", "json", "markdown"):
        raise UsageError(f"--format must be table, json or markdown; got {fmt!r}.")
    _preflight({"junit": junit}, [("CONFIG", config)])
    items = checks.load_config(config)
    _preflight({"junit": junit}, [(f"check {c.name}:", t) for c in items for t in _check_inputs(c)])
    results = checks.run_checks(items)
    if junit:
        _write_text(junit, checks.junit_xml(results, suite=f"lossctl check {os.path.basename(config)}"), "--junit")
    doc = rep.check_document(config, results)
    if html:
        from lossctl import html as html_page

        _write_text(html, html_page.render(doc), "--html")
    try:
        if fmt == "json":
            sys.stdout.write(rep.to_json(doc) + "\n")
        elif fmt == "markdown":
            sys.stdout.write(rep.checks_markdown(doc, precision))
        else:
            rep.render_checks(doc, _stdout_console(no_color), precision)
        sys.stdout.flush()
    except BrokenPipeError:  # the reader went away: the checks still set the exit code
        _silence_stdout()
    if not no_step_summary:
        _step_summary(lambda: rep.checks_markdown(doc, precision))
    errors = [r for r in results if r["status"] == "error"]
    failed = [r for r in results if r["status"] == "fail"]
    if not quiet:
        for r in results:
            reps = [t["report"] for t in r.get("terms") or []] or ([r["report"]] if r.get("report") else [])
            for w in dict.fromkeys(w for rep_ in reps for w in rep_.get("warnings") or []):
                _say(f"lossctl: warning: check {r['name']}: {w}")
        for r in errors:
            _say(f"lossctl: error: check {r['name']}: {r['error']}")
        for r in failed:
            msgs = "; ".join(o["message"] for o in r["outcomes"] if not o["passed"])
            _say(f"lossctl: check failed: {r['name']}: {msgs}.")
    if errors:
        from lossctl.io.outputs import current_outputs

        staged = current_outputs()
        if staged is not None:  # every check ran: the JUnit/HTML report is complete and says why some could not
            staged.commit()
        raise typer.Exit(EXIT_DATA)
    if failed:
        raise typer.Exit(EXIT_CHECK)


def _check_inputs(check) -> list:
    """Every file a check of a config reads: its terms' inputs, side files and file parameters."""
    texts = []
    for t in check.terms:
        texts += list(t.inputs) + [t.options.get("group-by")]
        texts += [v for v in t.params.values() if isinstance(v, str)]
    return [t for t in texts if isinstance(t, str)]


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

    from lossctl.literal import visible as v  # a plugin's texts are shown as typed

    con = _stdout_console(False)
    title = Text(v(spec.name), style="bold cyan")
    if spec.aliases:
        title.append(v(f" ({', '.join(spec.aliases)})"), style="cyan")
    title.append(v(f"  ·  {spec.family}"), style="dim")
    con.print(title)
    con.print(Text(v(spec.summary)))

    def section(head: str, body: str | None = None) -> None:
        con.print()
        con.print(Text(head, style="bold"))
        if body is not None:
            for line in body.splitlines():
                con.print(Text("  " + v(line)))

    section("Formula (per sample)", spec.formula)
    section("Inputs (positional, in this order)")
    t = Table(box=None, show_header=False, pad_edge=False)
    for _ in range(3):
        t.add_column()
    for r in spec.inputs:
        t.add_row(v("  " + r.metavar + (" (optional)" if r.optional else "")), v(r.shape), v(r.help))
    con.print(t)
    if spec.params:
        section("Parameters")
        t = Table(box=None, show_header=False, pad_edge=False)
        for _ in range(3):
            t.add_column()
        for p in spec.params:
            default = "none" if p.default is None else str(p.default)
            rng = p.describe_range()
            t.add_row(v("  --" + p.name), v(f"default {default}"), v(p.help + (f" ({rng})" if rng else "")))
        con.print(t)
    section("Headline value", spec.headline)
    section("Gradient", spec.gradient + f"  (w.r.t. {spec.inputs[spec.pred_index].metavar})")
    section("Properties")
    for prop in spec.properties:
        con.print(Text("  • " + v(prop)))
    section("Used for", spec.used_for)
    section("Output activation it assumes", spec.activation)
    section("Reference equivalent", spec.reference)
    section("Paper", spec.paper)
    section("Example", "lossctl compute " + " ".join((spec.name, *spec.example)))


def _list(fmt: str, family: str | None) -> None:
    from lossctl import plugins

    for problem in plugins.load_installed():
        _say(f"lossctl: warning: {problem}; its losses are not listed.")
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
    from rich.text import Text

    from lossctl.literal import visible as v  # a plugin's names are shown as typed

    head = ("loss", "aliases", "inputs", "what it is")
    rows: list[tuple[str, ...]] = []  # a 1-tuple is a family heading
    for fam in registry.FAMILIES:
        group = [s for s in specs if s.family == fam]
        if not group:
            continue
        rows.append((v(fam),))
        for s in group:
            inputs = " ".join(r.metavar + ("?" if r.optional else "") for r in s.inputs)
            rows.append(("  " + v(s.name), v(", ".join(s.aliases)), v(inputs), v(s.summary)))
    if not sys.stdout.isatty():
        _list_plain(head, rows)
        sys.stdout.write("\n" + registry.INPUT_ORDER_RULE + "\n")
        return
    table = Table(box=None, header_style="bold", pad_edge=False)
    table.add_column("loss", style="cyan", no_wrap=True)
    table.add_column("aliases", no_wrap=True)
    table.add_column("inputs")
    table.add_column("what it is")
    for row in rows:
        if len(row) == 1:
            table.add_row(Text(row[0], style="bold"), "", "", "")
        else:
            table.add_row(*row)
    _stdout_console(False).print(table)
    sys.stdout.write("\n" + registry.INPUT_ORDER_RULE + "\n")


def _list_plain(head: tuple[str, ...], rows: list[tuple[str, ...]]) -> None:
    """`lossctl list` into a pipe or file: one line per loss, columns aligned, never wrapped
    (a terminal's 80 columns do not apply; grep, cut and less -S see whole lines)."""
    from rich.cells import cell_len

    body = [r for r in rows if len(r) > 1]
    widths = [max(cell_len(r[i]) for r in [head, *body]) for i in range(len(head) - 1)]

    def line(cells: tuple[str, ...]) -> str:
        text = "".join(c + " " * (w - cell_len(c) + 2) for c, w in zip(cells, widths)) + cells[-1]
        return text.rstrip() + "\n"

    sys.stdout.write("".join(line(r) if len(r) > 1 else r[0] + "\n" for r in [head, *rows]))


# ---------------------------------------------------------------------------
# The one error boundary
# ---------------------------------------------------------------------------


def _silence_stdout() -> None:
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
    except (OSError, ValueError):
        pass


def _say(text: str, keep: str = "") -> None:
    """A message for the human on stderr: text from data or paths in it is shown literally
    (control characters as escapes); a closed stderr is not an error of its own."""
    from lossctl.literal import visible

    try:
        sys.stderr.write(visible(text, keep) + ("" if text.endswith("\n") else "\n"))
        sys.stderr.flush()
    except (OSError, ValueError):
        pass


def _traceback() -> None:
    import traceback

    _say(traceback.format_exc(), keep="\n")


def _flag(name: str) -> str:
    """How the CLI spells an option the core names by its Python name (errors.opt)."""
    return "--" + name.replace("_", "-")


def main(argv: list[str] | None = None) -> None:
    from lossctl.errors import spelling

    with spelling(_flag):
        return _main(argv)


def _main(argv: list[str] | None = None) -> None:
    from lossctl import limits

    limits.configure()  # under a small memory cap: allocators and thread pools, before NumPy/pyarrow
    args = list(sys.argv[1:] if argv is None else argv)
    # `-:COLUMN` (a column of stdin) would parse as an option; hand it over as a source.
    args = [STDIN_TOKEN + a[1:] if a.startswith("-:") and len(a) > 2 else a for a in args]
    debug = "--debug" in args or os.environ.get("LOSSCTL_DEBUG", "") not in ("", "0")
    code = EXIT_OK
    outputs = Outputs()  # every file the command writes: committed below only if it succeeds
    signals = _Signals()
    try:
        if any(a == "--plugin" or a.startswith("--plugin=") for a in args):
            from lossctl import plugins

            args = plugins.take_cli_args(args)  # --plugin MODULE, anywhere: losses a command may name
        command = typer.main.get_command(app)
        try:
            rv = command.main(args=args, prog_name="lossctl", standalone_mode=False)
        except CheckFailed:
            _commit(outputs, signals, EXIT_CHECK)
            raise
        code = rv if isinstance(rv, int) else EXIT_OK
        if code == EXIT_INTERRUPTED:
            _say("lossctl: interrupted")
        code = _commit(outputs, signals, code)
    except typer.Abort:
        _say("lossctl: interrupted")
        code = EXIT_INTERRUPTED
    except _Terminated as exc:
        _say(f"lossctl: terminated by {exc.name}")
        code = 128 + exc.signum
    except KeyboardInterrupt:
        _say("lossctl: interrupted")
        code = EXIT_INTERRUPTED
    except click.exceptions.ClickException as exc:
        import io

        shown = io.StringIO()  # click quotes the command line as typed: show it literally
        exc.show(file=shown)
        _say(shown.getvalue(), keep="\n")
        code = EXIT_USAGE if isinstance(exc, click.exceptions.UsageError) else exc.exit_code
    except (_PipeClosed, BrokenPipeError):  # the reader went away (`| head`): nothing more to say
        _silence_stdout()
        code = _commit_after_pipe(outputs, signals)  # the run itself succeeded: its files are kept
    except SystemExit as exc:  # click's and Rich's own answer to a closed pipe (help, --version): exit 1
        if not isinstance(exc.__context__, BrokenPipeError):
            raise
        _silence_stdout()
        code = _commit_after_pipe(outputs, signals)
    except LossctlError as exc:
        if debug:
            _traceback()
        label = "check failed" if isinstance(exc, CheckFailed) else "error"
        text = str(exc)
        if isinstance(exc, CheckFailed) and text.startswith("check failed: "):
            text = text[len("check failed: ") :]
        code = exc.exit_code
        if not isinstance(exc, (UsageError, CheckFailed)) and limits.is_memory_error(exc.__context__):
            # A reader's "could not read ... (malloc of size N failed)" is not a corrupt file.
            text, code = limits.memory_message(exc), EXIT_DATA
        _say(f"lossctl: {label}: {text}")
    except MemoryError as exc:
        _say(f"lossctl: error: {limits.memory_message(exc)}")
        code = EXIT_DATA
    except Exception as exc:  # noqa: BLE001 - the boundary: never a bare traceback
        if debug:
            _traceback()
        if limits.is_memory_error(exc):
            _say(f"lossctl: error: {limits.memory_message(exc)}")
        else:
            _say(
                f"lossctl: internal error: {type(exc).__name__}: {exc}. This is a bug in lossctl; "
                "run with --debug for a traceback and report it."
            )
        code = EXIT_DATA
    finally:
        signals.restore()
        outputs.abort()  # after a commit: nothing left to remove
        sources = sys.modules.get("lossctl.io.sources")  # never imported: nothing was spooled
        if sources is not None:  # (importing it here would load NumPy for --help)
            sources.cleanup_spooled()
    try:
        sys.stdout.flush()
    except BrokenPipeError:
        _silence_stdout()
    except OSError as exc:  # e.g. stdout redirected to a full disk: the output is incomplete
        _silence_stdout()
        _say(f"lossctl: error: writing stdout failed ({exc.strerror or exc}).")
        code = code or EXIT_DATA
    except ValueError:
        _silence_stdout()
    sys.exit(code)


class _Terminated(BaseException):
    """SIGTERM or SIGHUP: like Ctrl-C, it unwinds the run (every output removed), but exits
    128 + the signal. Not a KeyboardInterrupt, which typer would turn into exit 130."""

    def __init__(self, signum: int):
        import signal

        super().__init__(signum)
        self.signum = signum
        self.name = signal.Signals(signum).name


class _Signals:
    """SIGTERM and SIGHUP raise :class:`_Terminated` (Ctrl-C: KeyboardInterrupt) in the main
    thread while a command runs. While the outputs are being committed a signal is only
    noted: the run has succeeded by then, and a commit is never cut in half."""

    def __init__(self):
        import signal
        import threading

        self.previous = {}
        self.holding = False
        self.pending: int | None = None
        if threading.current_thread() is threading.main_thread():
            for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
                if sig != signal.SIGINT or signal.getsignal(sig) is signal.default_int_handler:
                    self.previous[sig] = signal.signal(sig, self._raise)

    def _raise(self, signum, frame) -> None:
        import signal

        if self.holding:
            self.pending = signum
            return
        if signum == signal.SIGINT:
            raise KeyboardInterrupt
        raise _Terminated(signum)

    def restore(self) -> None:
        import signal

        for sig, handler in self.previous.items():
            signal.signal(sig, handler)
        self.previous = {}


def _commit(outputs: "Outputs", signals: _Signals, code: int) -> int:
    """Publish every staged output when the run succeeded (exit 0, or 3: a bound not met is a
    result, and --junit records it); a failed publication is the run's error."""
    if code not in (EXIT_OK, EXIT_CHECK):
        return code
    signals.holding = True
    try:
        outputs.commit()
    finally:
        signals.holding = False
    return code


def _commit_after_pipe(outputs: "Outputs", signals: _Signals) -> int:
    """Stdout's reader went away after the run: keep its files, and say so if that fails."""
    try:
        return _commit(outputs, signals, EXIT_OK)
    except LossctlError as exc:
        _say(f"lossctl: error: {exc}")
        return exc.exit_code


__all__ = ["app", "main", "EXIT_CHECK", "EXIT_DATA", "EXIT_USAGE"]
