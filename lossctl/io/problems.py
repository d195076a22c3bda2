"""Structured data errors of the readers: which input (as shown), which column, which rows, and what
was expected, besides the one-paragraph message a user reads. A face (the CLI, the Python API) may
use the fields; the message is unchanged, so ``str(err)`` reads as before."""

from __future__ import annotations

from lossctl.errors import DataError


class InputDataError(DataError):
    """A data error located in one input: ``file`` (its name as shown: a path, a URI, ``<stdin>``),
    ``column`` (None: the whole input), ``rows`` (0-based data rows, global in the input) and
    ``expected`` (what a good input holds there: by default the message's "Expected ..." sentence)."""

    def __init__(
        self,
        message: str,
        *,
        file: str | None = None,
        column: str | None = None,
        rows=(),
        expected: str | None = None,
        hint: str | None = None,
    ):
        super().__init__(message, hint=hint)
        self.file = file
        self.column = column
        self.rows = [int(r) for r in rows]
        self.expected = _expected(message) if expected is None else expected


def _expected(message: str) -> str:
    """The "Expected ..." sentence of a message (lossctl's messages end by saying what was expected)."""
    head, sep, tail = message.partition("Expected ")
    if not sep:
        head, sep, tail = message.partition("expected ")
    if not sep:
        return ""
    end = tail.find(". ")
    return (tail if end < 0 else tail[:end]).rstrip(".")
