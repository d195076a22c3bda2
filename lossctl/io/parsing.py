"""Sources as the user writes them: ``PATH[:COLUMN]``, ``-[:COLUMN]`` (stdin), ``URI[:COLUMN]``,
a directory or glob of shards; and the requests (column expressions) made of one source."""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import Callable

from lossctl.errors import UsageError, opt
from lossctl.io import STDIN_TOKEN, formats
from lossctl.io.problems import InputDataError

FORMATS = formats.NAMES  # the values of the input_format option (bundled; formats.NAMES adds registered ones)
ID_KEY = "__id__"
GROUP_KEY = "__group__"


@dataclass
class Source:
    """One positional input as the user wrote it: ``PATH[:COLUMN]`` or ``-[:COLUMN]``."""

    text: str
    path: str
    column: str | None
    fmt: str
    label: str | None = None  # the name shown in messages, when not the path (stdin spooled to a file)
    # A part of a dataset read by one task of the dask engine (lossctl.cluster): these files
    # (URIs or local paths), these row groups of each (None: all), hive keys under ``base``,
    # the dataset's schema, its row count, and the global row number of its first row.
    files: tuple[str, ...] | None = None
    row_groups: tuple[tuple[int, ...] | None, ...] | None = None
    base: str | None = None
    schema: object = None
    rows: int | None = None
    row_start: int = 0

    @property
    def is_stdin(self) -> bool:
        return self.path == "-"

    @property
    def is_remote(self) -> bool:
        from lossctl.io.remote import is_uri

        return is_uri(self.path)

    @property
    def display(self) -> str:
        if self.label is not None:
            return self.label
        return "<stdin>" if self.is_stdin else self.path


_TOKENS: dict[str, Callable[[str], Source | None]] = {}


def add_token(prefix: str, parse: Callable[[str], Source | None]) -> None:
    """Source texts starting with ``prefix`` name objects another module holds (the Python API's
    in-memory inputs, ``<memory:N>``): ``parse(text)`` gives their Source, or None if unknown."""
    _TOKENS[prefix] = parse


def detect_format(path: str, input_format: str | None) -> str | None:
    """Format from the extension (compression suffixes skipped), else ``input_format``."""
    return formats.from_extension(path) or input_format


def parse_source(text: str, input_format: str | None = None, role: str = "input") -> Source:
    """Split ``PATH[:COLUMN]``; the whole text wins when it names an existing file."""
    if input_format is not None and input_format not in formats.NAMES:
        raise UsageError(f"{opt('input_format')} must be one of {', '.join(formats.NAMES)}; got {input_format!r}.")
    for prefix, parse in _TOKENS.items():  # an object given to the Python API (lossctl.io.memory)
        if text.startswith(prefix) and (source := parse(text)) is not None:
            return source
    if text.startswith(STDIN_TOKEN + ":"):
        text = "-" + text[len(STDIN_TOKEN) :]
    if text == "-" or text.startswith("-:"):
        if input_format is None:
            raise UsageError(
                f"{role.upper()} is read from stdin ('-'), which has no file name to tell its format: "
                f"give {opt('input_format')} ({', '.join(formats.NAMES)})."
            )
        column = text[2:] or None
        return Source(text, "-", column, input_format)
    from lossctl.io import remote

    if remote.is_uri(text):
        return _parse_uri(text, input_format, role)
    path, column = text, None
    if not os.path.exists(text) and ":" in text:
        head, _, tail = text.rpartition(":")
        # A column name may hold ':' itself (pandas' 'Unnamed: 0'): the file is the longest
        # prefix before a ':' that exists.
        cut = len(head)
        while cut > 0 and not os.path.exists(text[:cut]):
            cut = text.rfind(":", 0, cut)
        if cut > 0:
            head, tail = text[:cut], text[cut + 1 :]
        if head and (os.path.exists(head) or not os.path.exists(text)):
            path, column = head, (tail or None)
    if os.path.isdir(path) or (not os.path.exists(path) and _is_glob(path) and _glob_matches(path)):
        # A directory or glob of shards: one input, read with pyarrow's dataset API.
        return Source(text, path, column, "dataset")
    if not os.path.exists(path):
        hint = ""
        if column is not None:
            hint = f" (read {text!r} as file {path!r}, column {column!r})"
        raise InputDataError(
            f"{role.upper()}: file not found: {path}{hint}. Check the path; a source is PATH or PATH:COLUMN.",
            file=path, column=column, expected="an existing file",
        )
    fmt = detect_format(path, input_format) or formats.from_file(path)
    if fmt is None:
        raise UsageError(
            f"{role.upper()}: cannot tell the format of {path} from its name; "
            f"give {opt('input_format')} ({', '.join(formats.NAMES)})."
        )
    return Source(text, path, column, fmt)


def _parse_uri(text: str, input_format: str | None, role: str) -> Source:
    """``URI[:COLUMN]`` (s3://, gs://, hdfs://, file://): a file, or a directory / glob of shards."""
    from lossctl.io import remote

    path, column, kind = text, None, None
    head, _, tail = text.rpartition(":")
    if tail and "/" not in tail and remote.is_uri(head):  # URI:COLUMN (a name with ':' is tried next)
        path, column = head, tail
        kind = "missing" if _is_glob(path) else remote.kind(path)
        if kind == "missing" and not _is_glob(text) and remote.kind(text) != "missing":
            path, column, kind = text, None, None
    if kind is None:
        kind = "missing" if _is_glob(path) else remote.kind(path)
    if kind == "dir" or (kind == "missing" and _is_glob(path) and remote.listing(path)):
        return Source(text, path, column, "dataset")
    if kind == "missing":
        hint = f" (read {text!r} as {path!r}, column {column!r})" if column is not None else ""
        raise InputDataError(
            f"{role.upper()}: not found: {path}{hint}. Check the URI; a source is URI or URI:COLUMN.",
            file=path, column=column, expected="an existing object or directory",
        )
    fmt = detect_format(path, input_format)
    if fmt is None:
        with remote.open_input_stream(path, path, compression=None) as fh:
            fmt = formats.from_bytes(fh.read(8))
    if fmt is None:
        raise UsageError(
            f"{role.upper()}: cannot tell the format of {path} from its name; "
            f"give {opt('input_format')} ({', '.join(formats.NAMES)})."
        )
    return Source(text, path, column, fmt)


# ---------------------------------------------------------------------------
# Requests and column resolution
# ---------------------------------------------------------------------------


@dataclass
class Request:
    key: str  # role name, or ID_KEY
    expr: str | None  # column expression as given (None: the default selection)
    matrix: bool  # the role accepts a (N, K) array built from several columns
    ragged: bool = False
    keylike: bool = False  # ids and group keys: kept as text or integers, never cast to float
    names: list[str] = field(default_factory=list)  # resolved column names
    dtype: str = "float"  # the role's kind of values (Role.dtype): float, label or int

    @property
    def label(self) -> str:
        if not self.names:
            return self.expr or ""
        if len(self.names) == 1:
            return self.names[0]
        if self.expr and any(ch in self.expr for ch in "*?[,"):
            return self.expr
        return f"{self.names[0]}..{self.names[-1]}"


def _split_expr(expr: str) -> list[str]:
    return [p.strip() for p in expr.split(",") if p.strip()]


def _is_glob(part: str) -> bool:
    return any(ch in part for ch in "*?[")


def _glob_matches(pattern: str) -> bool:
    import glob

    return any(os.path.isfile(p) for p in glob.iglob(pattern, recursive=True))


def _is_selection(expr: str | None) -> bool:
    """A glob or a list of columns: always gives a (N, K) array, even when K = 1."""
    return expr is not None and ("," in expr or _is_glob(expr))


@dataclass
class ReadOptions:
    delimiter: str | None = None
    header: bool = True
