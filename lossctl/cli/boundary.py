"""The one error boundary: :func:`main` runs a command line and maps every outcome to the
documented exit codes (lossctl.errors), commits the outputs of a run that succeeded and
removes those of one that did not."""

from __future__ import annotations

import os
import sys

import typer

from lossctl.cli.console import _PipeClosed, _say, _silence_stdout, _traceback
from lossctl.cli.groups import click
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
from lossctl.io import STDIN_TOKEN
from lossctl.io.outputs import Outputs


def _flag(name: str) -> str:
    """How the CLI spells an option the core names by its Python name (errors.opt): the option
    schema's spelling (``max_value`` is ``--max``), else ``--name-with-hyphens`` (loss parameters)."""
    from lossctl.options import flag_of

    return flag_of(name)


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
        from lossctl.cli.commands import app

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
        code = _report_error(exc, debug)
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
    sys.exit(_flush_stdout(code))


def _report_error(exc: LossctlError, debug: bool) -> int:
    """Say what went wrong in one paragraph on stderr; the exit code."""
    from lossctl import limits

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
    return code


def _flush_stdout(code: int) -> int:
    """The last of stdout; a failure to write it (a full disk) makes a successful run an error."""
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
    return code


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
