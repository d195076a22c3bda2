"""The CLI's streams: Rich consoles that print data literally, messages on stderr, files it writes."""

from __future__ import annotations

import os
import sys
from typing import Callable


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


def _write_text(path: str, text: str, option: str) -> None:
    from lossctl.io.sinks import AtomicFile

    f = AtomicFile(path, option)
    try:
        f.write(text.encode())
    except BaseException:
        f.abort()
        raise
    f.commit()


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
