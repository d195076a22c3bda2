"""One error family, caught at one boundary (``lossctl.cli.main``).

Every error carries its exit code and a one-paragraph message that names the
file, the column, the row (or the shape) and what was expected.

Exit codes (also in the README and ``lossctl --help``):
    0  success
    1  data or runtime error (a file, a column, a value)
    2  usage error (the command line itself)
    3  a check failed (``--max``/``--min``, ``lossctl check``)
  130  interrupted (Ctrl-C; SIGTERM and SIGHUP exit 143 and 129)
"""

from __future__ import annotations

EXIT_OK = 0
EXIT_DATA = 1
EXIT_USAGE = 2
EXIT_CHECK = 3
EXIT_INTERRUPTED = 130


def short_reason(exc: BaseException) -> str:
    """The first line of an exception's message (its type when it has none), at most 300 characters:
    what a library said, to quote inside a one-paragraph error."""
    text = str(exc).strip()
    return (text.splitlines()[0] if text else type(exc).__name__)[:300]


# ---------------------------------------------------------------------------
# Naming options inside messages. The core never spells a command-line flag: it names a run
# option or a loss parameter by its Python name through ``opt("chunk_size")``, and the face
# that shows the message spells it: the CLI as ``--chunk-size``, the Python API as
# ``chunk_size``. ``spelling(fn)`` sets the speller for a block (the CLI wraps each command).
# ---------------------------------------------------------------------------
_MARK = "\x1f"  # ASCII unit separator: never in a message otherwise (data is shown escaped)
_OPT = None  # compiled lazily: importing re costs start-up time


def opt(name: str) -> str:
    """A run option or loss parameter, by its Python name (``chunk_size``, ``ignore_index``),
    to be spelled by the face that shows the message."""
    return f"{_MARK}{name.replace('-', '_')}{_MARK}"


def _python_name(name: str) -> str:
    return name


_speller = _python_name


class spelling:
    """``with spelling(fn):`` messages shown inside the block spell options with ``fn(name)``."""

    def __init__(self, fn):
        self.fn = fn

    def __enter__(self):
        global _speller
        self.saved, _speller = _speller, self.fn
        return self

    def __exit__(self, *exc):
        global _speller
        _speller = self.saved
        return False


def spell(text: str, speller=None) -> str:
    """``text`` with every ``opt(...)`` mark replaced by the option's spelling."""
    if _MARK not in text:
        return text
    global _OPT
    if _OPT is None:
        import re

        _OPT = re.compile(f"{_MARK}([A-Za-z0-9_]+){_MARK}")
    fn = speller or _speller
    return _OPT.sub(lambda m: fn(m.group(1)), text)


class LossctlError(Exception):
    """Base of every error lossctl reports to a user."""

    exit_code = EXIT_DATA

    def __init__(self, message: str, *, hint: str | None = None, param: str | None = None):
        super().__init__(message)
        self.message = message
        self.hint = hint
        self.param = param  # the loss parameter or run option at fault (Python name), when one is

    def __str__(self) -> str:
        """The message for a human: names of files, columns and values in it are shown literally
        (control characters as escapes such as ``\\x1b``; ``message`` keeps them as they are)."""
        from lossctl.literal import visible

        return visible(spell(f"{self.message} {self.hint}" if self.hint else self.message))


class DataError(LossctlError):
    """Something about the input data or files: missing, unreadable, wrong shape or value."""

    exit_code = EXIT_DATA


class UsageError(LossctlError):
    """The command line is wrong: unknown loss or option, invalid parameter value."""

    exit_code = EXIT_USAGE


class CheckFailed(LossctlError):
    """A bound on a result was not met."""

    exit_code = EXIT_CHECK


class InputError(Exception):
    """Raised by pure kernels and validators; carries no file names.

    ``role`` is the input role (e.g. ``"pred"``) and ``rows`` are row indices
    relative to the arrays the kernel was given; the engine translates this into
    a :class:`DataError` that names the file, the column and the absolute rows.
    ``column`` optionally names a class / feature index within the row.
    """

    def __init__(self, role: str | None, message: str, rows=None, *, expected: str = ""):
        super().__init__(message)
        self.role = role
        self.message = message
        self.rows = [] if rows is None else [int(r) for r in rows]
        self.expected = expected

    def __str__(self) -> str:
        return spell(self.message)


class ParamError(Exception):
    """Raised by kernels when a parameter is inconsistent with the data (e.g. weight length)."""

    def __init__(self, param: str, message: str):
        super().__init__(message)
        self.param = param
        self.message = message

    def __str__(self) -> str:
        return spell(self.message)
