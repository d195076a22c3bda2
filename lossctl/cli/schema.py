"""The Typer options of ``compute NAME`` and ``compare NAME``, derived from the one option schema
(``lossctl.options.SCHEMA``) and from each loss's declaration (inputs, parameters, help)."""

from __future__ import annotations

from typing import Any, Callable, Optional

import typer

from lossctl import options as run_options
from lossctl import registry
from lossctl.cli.commands import EXIT_CODES_HELP
from lossctl.options import IN as _IN, Opt


_ANNOTATION = {"text": str, "char": str, "choice": str, "int": int, "float": float, "bool": bool, "names": list[str]}


def typer_option(o: Opt, **change: Any) -> tuple[str, Any, Any]:
    """``(python name, annotation, typer.Option)`` of a schema option (``change``: a variant's fields)."""
    if change:
        o = o.but(**change)
    ann = _ANNOTATION[o.type]
    decls = [o.spelled, *([o.short] if o.short else [])]
    kw: dict[str, Any] = {"help": o.help, "rich_help_panel": o.panel}
    if o.envvar:
        kw["envvar"] = o.envvar
    if o.type != "bool":
        kw["metavar"] = o.shown_metavar
    return o.name, (ann if o.default is not None else Optional[ann]), typer.Option(o.default, *decls, **kw)


COMMON_OPTIONS: list[tuple[str, Any, Any]] = [typer_option(o) for o in run_options.SCHEMA]
COMPARE_OPTIONS: list[tuple[str, Any, Any]] = [typer_option(o) for o in run_options.compare_options()]


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


_MARKUP_TAG = None  # compiled on first use: importing re costs start-up time


def _escape(text: str) -> str:
    """Help text is rendered as Rich markup: keep formulas such as w[y_n] literal (and a plugin's
    control characters visible).

    The same rule as ``rich.markup.escape``, without importing Rich at start-up.
    """
    global _MARKUP_TAG
    from lossctl.literal import visible

    if _MARKUP_TAG is None:
        import re

        _MARKUP_TAG = re.compile(r"(\\*)(\[[a-z#/@][^[]*?])")
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


def _role_parameter(role: registry.Role, name: str, flag: str | None, compare: bool = False):
    """The parameter of one input role: a positional SOURCE, or an option ``flag`` when given
    (under compare a required role's option is required)."""
    import inspect

    text = _escape(f"{role.shape}: {role.help}")
    ann = Optional[str] if role.optional or compare else str
    if flag is not None:
        default = None if role.optional or not compare else ...
        spec = typer.Option(default, flag, metavar="SOURCE", help=text, rich_help_panel=_IN)
    else:
        spec = typer.Argument(None if role.optional else ..., metavar=role.metavar, help=text, show_default=False)
    return inspect.Parameter(name, inspect.Parameter.POSITIONAL_OR_KEYWORD, default=spec, annotation=ann)


def _command(name: str, doc: str, params: list, body: Callable) -> Callable:
    """A function Typer can read: ``params`` as its signature; it runs ``body(kwargs)`` at the boundary."""
    import inspect

    def command(**kwargs):
        from lossctl.cli.console import _guard

        _guard(body, kwargs)

    command.__signature__ = inspect.Signature(params)  # type: ignore[attr-defined]
    command.__annotations__ = {p.name: p.annotation for p in params}
    command.__name__ = name
    command.__doc__ = doc
    return command


def _shared_parameters(spec: registry.LossSpec, shared: list[tuple[str, Any, Any]]) -> list:
    import inspect

    kind = inspect.Parameter.POSITIONAL_OR_KEYWORD
    params = []
    for p in spec.params:
        ann, opt = _param_option(p)
        params.append(inspect.Parameter(p.dest, kind, default=opt, annotation=ann))
    for name, ann, opt in shared:
        if name == "gate_alpha" and any(p.name == "alpha" for p in spec.params):
            # the loss's own --alpha (focal, distillation) keeps PyTorch's name; the gate moves aside
            name, ann, opt = typer_option(run_options.COMPARE_BY_NAME["gate_alpha"], flag="--test-alpha")
        params.append(inspect.Parameter(name, kind, default=opt, annotation=ann))
    return params


def _make_compute(spec: registry.LossSpec) -> Callable:
    params = [
        _role_parameter(role, role.name.replace("-", "_"), f"--{role.name}" if role.option else None)
        for role in spec.inputs
    ]
    params += _shared_parameters(spec, COMMON_OPTIONS)

    def body(kwargs: dict) -> None:
        from lossctl.cli.run import _compute

        _compute(spec, kwargs)

    return _command("compute_" + spec.name.replace("-", "_"), _command_help(spec), params, body)


def _make_compare(spec: registry.LossSpec) -> Callable:
    import inspect

    pred = spec.inputs[spec.pred_index]
    predictions = typer.Argument(
        ...,
        metavar="BASELINE CANDIDATE...",
        help=f"{pred.metavar} files: the baseline first, then the candidates.",
        show_default=False,
    )
    params = [inspect.Parameter("predictions", inspect.Parameter.POSITIONAL_OR_KEYWORD, default=predictions,
                                annotation=list[str])]  # fmt: skip
    taken = {p.dest for p in spec.params} | {name for name, _, _ in COMPARE_OPTIONS}
    for role in spec.inputs:
        if role is not pred:
            dest = role.name.replace("-", "_")
            flag = role.name if dest not in taken else f"input-{role.name}"
            params.append(_role_parameter(role, "role_" + dest, f"--{flag}", compare=True))
    params += _shared_parameters(spec, COMPARE_OPTIONS)

    def body(kwargs: dict) -> None:
        from lossctl.cli.run import _compare

        _compare(spec, kwargs)

    doc = _escape(
        f"Compare {spec.name} of several {pred.metavar} files, paired sample by sample: each candidate minus "
        "the baseline (the first file), a paired bootstrap interval of that difference, a paired permutation "
        "(approximate randomization) p-value, and the samples that got most worse.\n\n"
        f"Example: lossctl compare {spec.name} "
        + " ".join(f"--{r.name} {r.metavar.lower()}.parquet" for r in spec.inputs if r is not pred and not r.optional)
        + f" baseline.parquet candidate.parquet\n\n{EXIT_CODES_HELP}"
    )
    return _command("compare_" + spec.name.replace("-", "_"), doc, params, body)
