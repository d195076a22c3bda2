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


class LossctlError(Exception):
    """Base of every error lossctl reports to a user."""

    exit_code = EXIT_DATA

    def __init__(self, message: str, *, hint: str | None = None):
        super().__init__(message)
        self.message = message
        self.hint = hint

    def __str__(self) -> str:
        """The message for a human: names of files, columns and values in it are shown literally
        (control characters as escapes such as ``\\x1b``; ``message`` keeps them as they are)."""
        from lossctl.literal import visible

        return visible(f"{self.message} {self.hint}" if self.hint else self.message)


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


class ParamError(Exception):
    """Raised by kernels when a parameter is inconsistent with the data (e.g. weight length)."""

    def __init__(self, param: str, message: str):
        super().__init__(message)
        self.param = param
        self.message = message
