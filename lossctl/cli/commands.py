"""The command tree: ``lossctl`` and its commands, each a thin function that hands its arguments
to a body (``lossctl.cli.run``, ``lossctl.cli.catalogue``) inside the boundary's guard."""

from __future__ import annotations

from typing import Optional

import typer

from lossctl import __version__
from lossctl.losses.spec import INPUT_ORDER_RULE
from lossctl.cli.console import _guard
from lossctl.cli.groups import _LossGroup, _SuggestingGroup, _SwitchCommand

# (the option schema, the Typer options of the loss commands and the command bodies are
# imported when a command needs them: `lossctl --help` builds none of them)
_CHK = "Checks"  # = lossctl.options.CHK, the help panel of bounds and gates

EXIT_CODES_HELP = (
    "Exit codes: 0 success; 1 data or runtime error (files, columns, values); "
    "2 usage error (the command line); 3 a check failed (--max/--min); 130 interrupted (143 SIGTERM, 129 SIGHUP)."
)

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


def _make(kind: str):
    def make(spec):
        from lossctl.cli import schema

        return getattr(schema, "_make_" + kind)(spec)

    return staticmethod(make)


class _ComputeGroup(_LossGroup):
    make = _make("compute")


class _CompareGroup(_LossGroup):
    make = _make("compare")


compute_app = typer.Typer(
    cls=_ComputeGroup,
    no_args_is_help=True,
    help="Compute a loss: lossctl compute NAME INPUT... (see `lossctl list`). "
    + INPUT_ORDER_RULE
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
    from lossctl.cli import catalogue

    _guard(catalogue.list_losses, format, family)


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
    from lossctl.cli import run

    _guard(run._check, config, format, junit, precision, quiet, no_color, html, no_step_summary)


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
    from lossctl.cli import run

    _guard(run._merge, dict(locals()))


@app.command("explain", cls=_SwitchCommand)
def explain(
    name: str = typer.Argument(..., metavar="NAME", help="A loss name or alias (see `lossctl list`)."),
    format: str = typer.Option("text", "--format", "-f", metavar="[text|json]", help="Output format."),
) -> None:
    """Explain a loss: formula, inputs, parameters, gradient, properties, uses and references."""
    from lossctl.cli import catalogue

    _guard(catalogue.explain, name, format)


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
    from lossctl.cli import run

    _guard(run._diff, docs, format, precision, max_delta, max_rel_delta, ci, quiet, no_color)


@app.command("completion")
def completion_command(
    shell: str = typer.Argument(..., metavar="[bash|zsh|fish]", help="The shell to complete in."),
) -> None:
    """Print a shell completion script: commands, loss names and aliases, options, their choices, files.

    bash: eval "$(lossctl completion bash)" (or save it as
    ~/.local/share/bash-completion/completions/lossctl); zsh: eval "$(lossctl completion zsh)"
    in ~/.zshrc; fish: lossctl completion fish > ~/.config/fish/completions/lossctl.fish.
    """
    from lossctl.cli import run

    _guard(run._completion, shell)
