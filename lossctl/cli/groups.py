"""Click groups and commands with the CLI's manners: "did you mean", switches that refuse a value,
and one subcommand per loss built only when it is asked for."""

from __future__ import annotations

import os
from typing import Any, Callable

import typer
from typer.core import TyperCommand, TyperGroup

try:  # typer >= 0.22 vendors click as typer._click
    from typer import _click as click
except ImportError:  # pragma: no cover - older typer depends on click
    import click

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
        import difflib

        close = difflib.get_close_matches(name, list(self.commands), n=3, cutoff=0.5)
        hint = f" Did you mean {' or '.join(repr(c) for c in close)}?" if close else ""
        raise click.exceptions.UsageError(f"No such command {name!r}.{hint}", ctx)


class _LossGroup(_SuggestingGroup):
    """One subcommand per loss and alias, built from the registry only when asked for.

    Building ~60 commands with ~40 options each costs tens of milliseconds; `lossctl --help`
    and `lossctl compute ce ...` need none or one of them.
    """

    make: Callable[["LossSpec"], Callable] | None = None  # set on the subclasses below

    def list_commands(self, ctx: "click.Context") -> list[str]:
        from lossctl import plugins

        from lossctl import registry

        plugins.load_installed()  # (a plugin that fails to load is left out; `lossctl list` says why)
        return [s.name for s in registry.LOSSES]

    def get_command(self, ctx: "click.Context", name: str):
        if name in self.commands:
            return self.commands[name]
        from lossctl import registry  # (not at import: `lossctl --help` needs no catalogue)

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
        from lossctl import registry

        registry.get(name)  # raises UsageError with the suggestion
