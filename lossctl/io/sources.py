"""Input sources: ``PATH[:COLUMN]`` parsing, format detection and chunked readers.

A reader serves every request made of one file (all roles whose source is
that file, plus the id column), so a file - and stdin - is read once. Readers
yield batches of at most ``rows`` rows as ``{key: ndarray}``; the engine aligns
batches of different files.

Formats: CSV/TSV (pyarrow's streaming CSV reader), Parquet (record batches of
``ParquetFile.iter_batches``), Arrow IPC file/stream and Feather v2 (record
batches, memory-mapped), NPY (rows read into fresh buffers, never pickles), NPZ
(members streamed from the zip, never pickles), and ``-`` for stdin.
"""

from __future__ import annotations

import csv
import fnmatch
import functools
import io
import json
import math
import os
import re
import sys
import tempfile
from dataclasses import dataclass, field
from typing import Callable, Iterator

import numpy as np

from lossctl.errors import DataError, UsageError, short_reason
from lossctl.io import STDIN_TOKEN

FORMATS = ("csv", "tsv", "parquet", "npy", "npz", "arrow", "jsonl")
_EXT = {
    ".csv": "csv",
    ".tsv": "tsv",
    ".tab": "tsv",
    ".txt": "csv",
    ".parquet": "parquet",
    ".pq": "parquet",
    ".npy": "npy",
    ".npz": "npz",
    ".arrow": "arrow",
    ".arrows": "arrow",
    ".feather": "arrow",
    ".ipc": "arrow",
    ".jsonl": "jsonl",
    ".ndjson": "jsonl",
}
_COMPRESSED = (".gz", ".bz2", ".zst", ".lz4")
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


def detect_format(path: str, input_format: str | None) -> str | None:
    """Format from the extension (compression suffixes skipped), or None if unknown."""
    name = path.lower()
    for comp in _COMPRESSED:
        if name.endswith(comp):
            name = name[: -len(comp)]
            break
    ext = os.path.splitext(name)[1]
    if ext in _EXT:
        return _EXT[ext]
    return input_format


def _sniff(path: str) -> str | None:
    try:
        with open(path, "rb") as fh:
            head = fh.read(8)
    except OSError:
        return None
    return _sniff_bytes(head)


def _sniff_bytes(head: bytes) -> str | None:
    if head.startswith(b"PAR1"):
        return "parquet"
    if head.startswith(b"\x93NUMPY"):
        return "npy"
    if head.startswith(b"PK\x03\x04") or head.startswith(b"PK\x05\x06"):
        return "npz"
    if head.startswith(b"ARROW1") or head.startswith(b"\xff\xff\xff\xff"):
        return "arrow"
    if head.lstrip(b"\xef\xbb\xbf \t\r\n").startswith(b'{"'):
        return "jsonl"
    return None


def parse_source(text: str, input_format: str | None = None, role: str = "input") -> Source:
    """Split ``PATH[:COLUMN]``; the whole text wins when it names an existing file."""
    if input_format is not None and input_format not in FORMATS:
        raise UsageError(f"--input-format must be one of {', '.join(FORMATS)}; got {input_format!r}.")
    if text.startswith("<memory:"):  # an object given to the Python API (lossctl.io.memory)
        from lossctl.io import memory

        if memory.known(text):
            return memory.parse(text)
    if text.startswith(STDIN_TOKEN + ":"):
        text = "-" + text[len(STDIN_TOKEN) :]
    if text == "-" or text.startswith("-:"):
        if input_format is None:
            raise UsageError(
                f"{role.upper()} is read from stdin ('-'), which has no file name to tell its format: "
                f"give --input-format ({', '.join(FORMATS)})."
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
        raise DataError(
            f"{role.upper()}: file not found: {path}{hint}. Check the path; a source is PATH or PATH:COLUMN."
        )
    fmt = detect_format(path, input_format) or _sniff(path)
    if fmt is None:
        raise UsageError(
            f"{role.upper()}: cannot tell the format of {path} from its name; "
            f"give --input-format ({', '.join(FORMATS)})."
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
        raise DataError(f"{role.upper()}: not found: {path}{hint}. Check the URI; a source is URI or URI:COLUMN.")
    fmt = detect_format(path, input_format)
    if fmt is None:
        with remote.open_input_stream(path, path, compression=None) as fh:
            fmt = _sniff_bytes(fh.read(8))
    if fmt is None:
        raise UsageError(
            f"{role.upper()}: cannot tell the format of {path} from its name; "
            f"give --input-format ({', '.join(FORMATS)})."
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


class Reader:
    """Base class: one file, several requests."""

    kind = "file"

    def __init__(self, source: Source):
        self.source = source
        self.requests: dict[str, Request] = {}
        self.rows_read = 0

    # --- set-up ---------------------------------------------------------------
    @property
    def display(self) -> str:
        return self.source.display

    def available(self) -> list[str]:
        raise NotImplementedError

    def scalar_columns(self) -> set[str]:
        """Names usable as one column of a matrix built from several columns."""
        return set(self.available())

    def value_columns(self) -> set[str]:
        """Names holding numbers (scalars or lists of numbers): candidates for a default selection."""
        return set(self.available())

    def add(self, req: Request) -> None:
        self.requests[req.key] = req

    def can_select(self, expr: str) -> bool:
        """Whether ``expr`` names one column of this input (side inputs such as --counts)."""
        return expr in self.available()

    def resolve(self) -> None:
        names = self.available()
        taken: set[str] = set()
        explicit = [r for r in self.requests.values() if r.expr is not None]
        implicit = [r for r in self.requests.values() if r.expr is None]
        for req in explicit:
            req.names = self._match(req, names)
            taken.update(req.names)
        if implicit:  # (each set computed once: linear in the number of columns)
            value_cols, index_cols = self.value_columns(), self.index_columns()
        for req in implicit:
            free = [n for n in names if n not in taken]
            # Never chosen automatically: pandas index columns and id / key columns.
            skipped = {n: why for n in free if (why := self._not_automatic(n, index_cols))}
            cands = [n for n in free if n not in skipped]
            values = [n for n in cands if n in value_cols]
            if len(cands) == 1:
                req.names = cands
            elif len(values) == 1:
                req.names = values
            elif len(values) > 1 and req.matrix and set(values) <= self.scalar_columns():
                # Several numeric columns left, stacked in file order: only when they are plainly
                # one family (class_0, class_1, ...), never a label or count column among logits.
                stack = values
                if req.dtype == "float":
                    ints = self.integer_columns()
                    stack = [n for n in values if n not in ints] or values
                    skipped.update({n: "integer-typed" for n in values if n not in stack})
                if len(stack) > 1 and not _one_family(stack):
                    raise DataError(self._ambiguous_message(req, stack, skipped))
                req.names = stack
            else:
                what = self._what()
                if not free:
                    raise DataError(
                        f"{self.display}: no {what} left for {req.key.upper()}: "
                        f"{', '.join(names) or 'none'} are all used by other inputs. "
                        f"Name the {what} as {self.display}:NAME."
                    )
                if not cands:
                    raise DataError(
                        f"{self.display}: no {what} left for {req.key.upper()} that can be chosen "
                        f"automatically ({_skipped_text(skipped)}). Name the {what} as {self.display}:NAME "
                        "if it really holds the values."
                    )
                raise DataError(
                    f"{self.display} has {len(cands)} {what}s ({_listing(cands)}); say which one is "
                    f"{req.key.upper()} as {self.display}:NAME"
                    + (" (or several: NAME_* or A,B,C)." if req.matrix else ".")
                    + (f" Not considered: {_skipped_text(skipped)}." if skipped else "")
                )
            taken.update(req.names)

    def index_columns(self) -> set[str]:
        """Columns a DataFrame library wrote for its row index (never values)."""
        return set()

    def integer_columns(self) -> set[str]:
        """Scalar columns of integer (or boolean) type: labels or counts, never stacked as logits."""
        return set()

    def _not_automatic(self, name: str, index_cols: set[str]) -> str | None:
        if name in index_cols:
            return "a pandas index column"
        if _looks_like_id(name):
            return "an id / key column"
        return None

    def _ambiguous_message(self, req: Request, stack: list[str], skipped: dict[str, str]) -> str:
        what = self._what()
        family = _largest_family(stack)
        glob_hint = f"{self.display}:'{family}*'" if family else f"{self.display}:'NAME_*'"
        listed = ",".join(stack[:3]) + (",..." if len(stack) > 3 else "")
        return (
            f"{self.display}: cannot tell which {what}s are {req.key.upper()}: the {len(stack)} numeric "
            f"{what}s left ({_listing(stack)}) are not one numbered family (like class_0..class_9), so "
            f"stacking them all could take a label, count or id {what} as a class. Name them: "
            f"{glob_hint} (a glob) or {self.display}:{listed} (a list)."
            + (f" Not considered: {_skipped_text(skipped)}." if skipped else "")
        )

    def _what(self) -> str:
        return "column"

    def _match(self, req: Request, names: list[str]) -> list[str]:
        out: list[str] = []
        known, chosen = set(names), set()
        for part in _split_expr(req.expr or ""):
            if _is_glob(part):
                hits = [n for n in names if fnmatch.fnmatchcase(n, part)]
            else:
                hits = [part] if part in known else []
            if not hits:
                raise DataError(self._missing_message(part, names, req.key))
            for h in hits:
                if h not in chosen:
                    chosen.add(h)
                    out.append(h)
        if len(out) > 1:
            if not req.matrix:
                raise DataError(
                    f"{self.display}: {req.key.upper()} takes one column, but {req.expr!r} "
                    f"selects {len(out)} ({_listing(out)})."
                )
            scalars = self.scalar_columns()
            not_scalar = [n for n in out if n not in scalars]
            if not_scalar:
                raise DataError(
                    f"{self.display}: column {not_scalar[0]!r} is not a numeric scalar column, so it "
                    f"cannot be one of several columns stacked into {req.key.upper()}."
                )
        return out

    def _missing_message(self, part: str, names: list[str], key: str) -> str:
        import difflib

        what = self._what()
        close = difflib.get_close_matches(part, names, n=3, cutoff=0.6)
        hint = f" Did you mean {' or '.join(repr(c) for c in close)}?" if close else ""
        who = "the id column (--id-col)" if key == ID_KEY else key.upper()
        return (
            f"{self.display} has no {what} {part!r} (asked for as {who}).{hint} Available {what}s: {_listing(names)}."
        )

    # --- reading ----------------------------------------------------------------
    def total_rows(self) -> int | None:
        return None

    def row_bytes(self) -> int | None:
        return None

    def batches(self, rows: int) -> Iterator[dict[str, np.ndarray]]:
        raise NotImplementedError

    def close(self) -> None:
        pass


_ID_WORDS = {"id", "ids", "idx", "index", "key", "uuid", "guid", "uid", "rowid", "pk"}
_NUMBERED = re.compile(r"^(.*?)(\d+)$", re.S)


def _looks_like_id(name: str) -> bool:
    """Named like an id or key: ``id``, ``sample_id``, ``row-idx``, ``sampleId``, ``uuid``."""
    words = [w for w in re.split(r"[^0-9A-Za-z]+", name) if w]
    if not words:
        return False
    if words[-1].lower() in _ID_WORDS:
        return True
    return bool(re.search(r"[a-z0-9](Id|ID|Idx|Key)$", words[-1]))


def _one_family(names: list[str]) -> bool:
    """True when the names are PREFIX<k>, PREFIX<k+1>, ... in this order (class_0..class_9)."""
    parts = [_NUMBERED.match(n) for n in names]
    if not all(parts):
        return False
    prefixes = {m.group(1) for m in parts}
    numbers = [int(m.group(2)) for m in parts]
    return len(prefixes) == 1 and numbers == list(range(numbers[0], numbers[0] + len(numbers)))


def _largest_family(names: list[str]) -> str:
    """The PREFIX shared by the most PREFIX<number> names (at least two), for a glob hint."""
    counts: dict[str, int] = {}
    for n in names:
        m = _NUMBERED.match(n)
        if m and m.group(1) and not _is_glob(m.group(1)) and ":" not in m.group(1):
            counts[m.group(1)] = counts.get(m.group(1), 0) + 1
    best = max(counts, key=counts.get, default="")
    return best if counts.get(best, 0) > 1 else ""


def _skipped_text(skipped: dict[str, str]) -> str:
    return "; ".join(f"{n!r} ({why})" for n, why in list(skipped.items())[:6]) + (
        f" and {len(skipped) - 6} more" if len(skipped) > 6 else ""
    )


def _listing(names: list[str], limit: int = 12) -> str:
    shown = ", ".join(repr(n) for n in names[:limit])
    if len(names) > limit:
        shown += f" and {len(names) - limit} more"
    return shown or "none"


# ---------------------------------------------------------------------------
# Arrow-backed readers: Parquet, Arrow IPC / Feather, CSV / TSV
# ---------------------------------------------------------------------------


def _pa():
    import pyarrow

    return pyarrow


class ArrowReader(Reader):
    """Shared conversion of Arrow record batches into NumPy arrays per request."""

    def __init__(self, source: Source):
        super().__init__(source)
        self.schema = None
        self._row_shapes: dict[str, tuple] = {}  # list columns: (row shape, first row) of the first batch

    def available(self) -> list[str]:
        return list(self.schema.names)

    def _converted(self, raw, rows: int, failure: Callable[[Exception, int], str], catch=(Exception,)):
        """Arrow record batches -> converted batches of at most ``rows`` rows, counting rows read.

        ``raw`` yields pyarrow RecordBatches; a failure while reading becomes one DataError
        whose text ``failure(exception, rows read so far)`` gives.
        """
        first = self.source.row_start  # rows are numbered globally in a task of a larger input
        row0 = first
        try:
            for batch in raw:
                for start in range(0, batch.num_rows, rows):
                    part = batch if start == 0 and batch.num_rows <= rows else batch.slice(start, rows)
                    out = self.convert(part, row0)
                    row0 += part.num_rows
                    self.rows_read = row0 - first
                    yield out
        except DataError:
            raise
        except catch as exc:  # noqa: BLE001 - one clear message instead of a traceback
            raise DataError(failure(exc, row0)) from None

    def scalar_columns(self) -> set[str]:
        pa = _pa()
        return {
            f.name
            for f in self.schema
            if pa.types.is_integer(f.type) or pa.types.is_floating(f.type) or pa.types.is_boolean(f.type)
        }

    def index_columns(self) -> set[str]:
        out = {n for n in self.schema.names if re.fullmatch(r"__index_level_\d+__", n)}
        meta = self.schema.metadata or {}
        if b"pandas" in meta:
            import json

            try:
                index = json.loads(meta[b"pandas"]).get("index_columns") or []
            except (ValueError, AttributeError, UnicodeDecodeError):
                index = []
            # A RangeIndex is stored as a dict (no column); a named index is its column's name.
            out.update(n for n in index if isinstance(n, str))
        return out

    def integer_columns(self) -> set[str]:
        pa = _pa()
        return {
            f.name
            for f in self.schema
            if pa.types.is_integer(f.type)
            or pa.types.is_boolean(f.type)
            or (pa.types.is_dictionary(f.type) and pa.types.is_integer(f.type.value_type))
        }

    def value_columns(self) -> set[str]:
        pa = _pa()
        out = set()
        for f in self.schema:
            t = f.type
            while pa.types.is_fixed_size_list(t) or pa.types.is_list(t) or pa.types.is_large_list(t):
                t = t.value_type
            if pa.types.is_integer(t) or pa.types.is_floating(t) or pa.types.is_boolean(t):
                out.add(f.name)
        return out

    def needed_columns(self) -> list[str]:
        out: list[str] = []
        for req in self.requests.values():
            for n in req.names:
                if n not in out:
                    out.append(n)
        return out

    def row_bytes(self) -> int | None:
        pa = _pa()
        total = 0
        for name in self.needed_columns():
            t = self.schema.field(name).type
            width = 1
            while pa.types.is_fixed_size_list(t):
                width *= t.list_size
                t = t.value_type
            if pa.types.is_list(t) or pa.types.is_large_list(t):
                return None
            try:
                total += width * max(t.bit_width // 8, 1)
            except ValueError:
                total += 8
        return total or None

    def convert(self, batch, row0: int) -> dict[str, np.ndarray]:
        out = {}
        for req in self.requests.values():
            if len(req.names) == 1 and not (req.matrix and self._stacks(req)):
                col = self._column(batch, req.names[0], row0)
                out[req.key] = arrow_to_numpy(col, req, self.display, req.names[0], row0)
                self._same_width_as_before(req, out[req.key], row0)
            else:
                cols = [arrow_to_numpy(self._column(batch, n, row0), req, self.display, n, row0) for n in req.names]
                out[req.key] = np.column_stack(cols) if cols[0].ndim == 1 else np.stack(cols, axis=1)
        return out

    def _stacks(self, req: Request) -> bool:
        """A glob or list of columns: stacked into (N, K) even when it names one column."""
        return _is_selection(req.expr)

    def _column(self, batch, name: str, row0: int):
        # (get_field_index gives -1 for a missing name, and column(-1) would be the last column)
        idx = batch.schema.get_field_index(name)
        if idx < 0:
            raise DataError(
                f"{self.display}: column {name!r} is missing from the data at row {row0}, though the "
                "schema has it. Expected every part of the input to hold the columns used."
            )
        return batch.column(idx)

    def _same_width_as_before(self, req: Request, a, row0: int) -> None:
        """List columns: every batch's lists have the length of the first batch's."""
        if getattr(a, "is_ragged", False) and a.values.ndim == 2 and len(a.values):
            a = a.values[:1].reshape(1, 1, -1)  # ragged vectors: only the vector length must agree
        if not isinstance(a, np.ndarray) or a.ndim < 2 or not len(a):
            return
        if req.ragged and a.ndim == 3:  # (N, T, V) with T varying between blocks: V must agree
            a = a[:1, :1]
        first = self._row_shapes.setdefault(req.key, (a.shape[1:], row0))
        if first[0] != a.shape[1:]:
            name = req.names[0]
            if req.ragged and a.ndim == 3:
                raise DataError(
                    f"{self.display}, column {name!r}, sequence (row) {row0}: {a.shape[2]} logits per token, but "
                    f"the tokens of row {first[1]} have {first[0][1]}. Expected the same vocabulary size V at "
                    "every token of every sequence (sequences may differ in their number of tokens)."
                )
            raise DataError(
                f"{self.display}, column {name!r}, row {row0}: list of {_shape_str(a.shape[1:]).strip('(,)')} "
                f"values, but row {first[1]} has {_shape_str(first[0]).strip('(,)')}. Expected lists of equal "
                "length (one value per class or feature) in every row."
            )


def _checked_schema(schema):
    """The schema, once its names and types are known to decode (a corrupt file may hold
    names that are not UTF-8, which pyarrow reports only when they are read)."""
    for f in schema:
        f.name, str(f.type)
    return schema


# pyarrow's Array.to_numpy and pa.array import pandas whenever it is installed (0.3 s on every
# run), and a Ctrl-C that lands during that import is swallowed: the run goes on and exits 0.
# Numbers therefore go between Arrow and NumPy through their buffers, never through pandas.


def arrow_numpy_dtype(t) -> np.dtype | None:
    """The NumPy dtype of a fixed-width numeric Arrow type (None for any other type)."""
    pa = _pa()
    if pa.types.is_floating(t):
        return np.dtype({16: np.float16, 32: np.float32, 64: np.float64}[t.bit_width])
    if pa.types.is_integer(t):
        return np.dtype(("i" if pa.types.is_signed_integer(t) else "u") + str(t.bit_width // 8))
    return None


def arrow_values(arr) -> np.ndarray:
    """A numeric or boolean Arrow array's values as NumPy (read-only, zero-copy for numbers);
    the values at null slots are unspecified (see ``arrow_valid``)."""
    pa = _pa()
    n = len(arr)
    buffers = arr.buffers()
    data = buffers[1] if len(buffers) > 1 else None
    if pa.types.is_boolean(arr.type):
        if not n or data is None:
            return np.zeros(n, dtype=bool)
        bits = np.unpackbits(np.frombuffer(data, dtype=np.uint8), bitorder="little")
        return bits[arr.offset : arr.offset + n].astype(bool)
    dtype = arrow_numpy_dtype(arr.type)
    if dtype is None:
        raise TypeError(f"not a numeric Arrow array: {arr.type}")
    if not n or data is None:
        return np.zeros(n, dtype=dtype)
    return np.frombuffer(data, dtype=dtype, count=n, offset=arr.offset * dtype.itemsize)


def arrow_valid(arr) -> np.ndarray:
    """True where an Arrow array holds a value (False at nulls)."""
    n = len(arr)
    if not arr.null_count:
        return np.ones(n, dtype=bool)
    validity = arr.buffers()[0]
    if validity is None:  # nulls without a bitmap (a null-typed array)
        return np.zeros(n, dtype=bool)
    bits = np.unpackbits(np.frombuffer(validity, dtype=np.uint8), bitorder="little")
    return bits[arr.offset : arr.offset + n].astype(bool)


def _exact_ints_or_error(arr, display: str, name: str, row0: int) -> None:
    """An integer column with nulls becomes float64 (NaN marks the nulls): a value float64
    cannot hold exactly (beyond 2**53) is an error, never a silently rounded number."""
    from lossctl.losses._common import inexact_in_float64

    bad = inexact_in_float64(arrow_values(arr))
    if bad is not None and (bad & arrow_valid(arr)).any():
        i = int(np.flatnonzero(bad & arrow_valid(arr))[0])
        raise DataError(
            f"{display}, column {name!r}, row {row0 + i}: the integer {arr[i].as_py()} has more than 53 "
            "significant bits, and a column with missing values is read as float64, which would round it. "
            f"Expected integers of magnitude up to 2**53 = {1 << 53}."
        )


def arrow_to_numpy(arr, req: Request, display: str, name: str, row0: int) -> np.ndarray:
    """One Arrow column → ndarray: scalars (N,), (nested) fixed/equal lists (N, K, ...)."""
    pa = _pa()
    t = arr.type
    if arr.null_count:
        scalar = pa.types.is_integer(t) or pa.types.is_floating(t)
        if scalar and not req.keylike:
            # A missing number is NaN; the --nan policy decides what happens to its row.
            _exact_ints_or_error(arr, display, name, row0)
            values = np.array(arrow_values(arr), dtype=np.float64)
            values[~arrow_valid(arr)] = np.nan
            return values
        nulls = np.flatnonzero(~arrow_valid(arr))
        raise DataError(
            f"{display}, column {name!r}, row {row0 + int(nulls[0])}: missing value (null)"
            + (f"; {len(nulls)} in this block" if len(nulls) > 1 else "")
            + ". Expected a value in every row; remove or fill missing rows."
        )
    if req.keylike:
        if pa.types.is_integer(t):
            return arrow_values(arr)
        if pa.types.is_floating(t):
            v = arrow_values(arr)
            whole = np.isfinite(v) & (v == np.round(v)) & (np.abs(v) < 2.0**63)  # 1e20 stays a float
            return v.astype(np.int64) if np.all(whole) else v
        if req.key == GROUP_KEY:
            # Few distinct values: convert each distinct string once, then index.
            enc = arr.cast(pa.string()).dictionary_encode()
            words = np.empty(len(enc.dictionary), dtype=object)
            words[:] = enc.dictionary.to_pylist()
            return words[enc.indices.to_numpy(zero_copy_only=False)]
        keys = np.empty(len(arr), dtype=object)
        keys[:] = arr.cast(pa.string()).to_pylist()
        return keys
    if pa.types.is_integer(t) or pa.types.is_floating(t):
        return arrow_values(arr)
    if pa.types.is_boolean(t):
        return arrow_values(arr).astype(np.int64)
    if pa.types.is_dictionary(t):
        return arrow_to_numpy(arr.dictionary_decode(), req, display, name, row0)
    if pa.types.is_fixed_size_list(t) or pa.types.is_list(t) or pa.types.is_large_list(t):
        return _list_to_numpy(arr, req, display, name, row0)
    raise DataError(
        f"{display}, column {name!r} has type {t}; expected numbers (a numeric column, or a list of numbers per row)."
    )


def _list_to_numpy(arr, req: Request, display: str, name: str, row0: int) -> np.ndarray:
    pa = _pa()
    n = len(arr)
    t = arr.type
    if pa.types.is_fixed_size_list(t):
        width = t.list_size
    else:
        lengths = arrow_values(arr.value_lengths())
        if req.ragged and not (
            pa.types.is_list(t.value_type)
            or pa.types.is_large_list(t.value_type)
            or pa.types.is_fixed_size_list(t.value_type)
        ):
            return _ragged_from_arrow(arr, display, name)  # type: ignore[return-value]
        if req.ragged and n and (lengths != lengths[0]).any():
            return _ragged_vectors_from_arrow(arr, display, name, row0)  # type: ignore[return-value]
        if n and (lengths != lengths[0]).any():
            bad = int(np.flatnonzero(lengths != lengths[0])[0])
            raise DataError(
                f"{display}, column {name!r}, row {row0 + bad}: list of {int(lengths[bad])} values, "
                f"but row {row0} has {int(lengths[0])}. Expected lists of equal length "
                "(one value per class or feature) in every row."
            )
        width = int(lengths[0]) if n else 0
    if n and width == 0:
        raise DataError(
            f"{display}, column {name!r}, row {row0}: an empty list (in every row of this block). "
            "Expected at least one value per row (one per class or feature)."
        )
    flat = arr.flatten()
    if flat.null_count:
        import pyarrow.compute as pc

        first = int(np.flatnonzero(~arrow_valid(flat))[0])
        parent = arrow_values(pc.list_parent_indices(arr))
        row = row0 + int(parent[first]) if first < len(parent) else None
        where = f", row {row}" if row is not None else ""
        raise DataError(
            f"{display}, column {name!r}{where}: a list holds a missing value (null). "
            "Expected numbers only in every list."
        )
    vt = flat.type
    if pa.types.is_fixed_size_list(vt) or pa.types.is_list(vt) or pa.types.is_large_list(vt):
        inner = _list_to_numpy(flat, Request(req.key, None, True), display, name, row0)
        return inner.reshape((n, width) + inner.shape[1:])
    if not (pa.types.is_integer(vt) or pa.types.is_floating(vt)):
        raise DataError(f"{display}, column {name!r} holds lists of {vt}; expected lists of numbers.")
    return arrow_values(flat).reshape(n, width)


def _ragged_from_arrow(arr, display: str, name: str):
    """A List/LargeList array of numbers as a Ragged (a null inside a list is NaN: the --nan
    policy decides), read through buffers (see arrow_values)."""
    from lossctl.ragged import Ragged

    pa = _pa()
    flat = arr.flatten()
    vt = flat.type
    if not (pa.types.is_integer(vt) or pa.types.is_floating(vt) or pa.types.is_boolean(vt)):
        raise DataError(f"{display}, column {name!r} holds lists of {vt}; expected lists of numbers.")
    offsets = arrow_values(arr.offsets).astype(np.int64)
    values = arrow_values(flat)
    if flat.null_count:
        values = np.array(values, dtype=np.float64)
        values[~arrow_valid(flat)] = np.nan
    return Ragged(values, offsets - offsets[0])


def _ragged_vectors_from_arrow(arr, display: str, name: str, row0: int):
    """A list of lists of numbers per row, of varying outer length (one vector per token, T_n per
    sequence), as a Ragged whose values are (Σ T_n, V): every vector must have the same length V."""
    import pyarrow.compute as pc

    from lossctl.ragged import Ragged

    pa = _pa()
    flat = arr.flatten()  # one entry per token
    if flat.null_count:
        parent = arrow_values(pc.list_parent_indices(arr))
        j = int(np.flatnonzero(~arrow_valid(flat))[0])
        raise DataError(
            f"{display}, column {name!r}, sequence (row) {row0 + int(parent[j])}: a token's vector is missing "
            "(null). Expected a list of numbers (one per vocabulary entry) at every token."
        )
    vt = flat.type
    if pa.types.is_fixed_size_list(vt):
        width = vt.list_size
    elif pa.types.is_list(vt) or pa.types.is_large_list(vt):
        widths = arrow_values(flat.value_lengths())
        if len(widths) and (widths != widths[0]).any():
            j = int(np.flatnonzero(widths != widths[0])[0])
            parent = arrow_values(pc.list_parent_indices(arr))
            offs = arrow_values(arr.offsets).astype(np.int64) - int(arrow_values(arr.offsets)[0])
            row = int(parent[j])
            raise DataError(
                f"{display}, column {name!r}, sequence (row) {row0 + row}, token {j - int(offs[row])}: "
                f"{int(widths[j])} logits, but the first token of row {row0 + int(parent[0])} has "
                f"{int(widths[0])}. Expected one logit per vocabulary entry, the same vocabulary size V "
                "at every token of every sequence (sequences may differ in their number of tokens)."
            )
        width = int(widths[0]) if len(widths) else 0
    else:
        raise DataError(f"{display}, column {name!r} holds lists of {vt}; expected lists of lists of numbers.")
    inner = flat.flatten()
    if inner.null_count:
        parent = arrow_values(pc.list_parent_indices(arr))
        tok = arrow_values(pc.list_parent_indices(flat))
        j = int(np.flatnonzero(~arrow_valid(inner))[0])
        raise DataError(
            f"{display}, column {name!r}, sequence (row) {row0 + int(parent[int(tok[j])])}: a logit is missing "
            "(null). Expected numbers only."
        )
    if not (pa.types.is_integer(inner.type) or pa.types.is_floating(inner.type)):
        raise DataError(f"{display}, column {name!r} holds lists of {vt}; expected lists of lists of numbers.")
    values = arrow_values(inner).reshape(len(flat), width)
    offsets = arrow_values(arr.offsets).astype(np.int64)
    return Ragged(values, offsets - offsets[0])


def parquet_file(where):
    """A ParquetFile (a path or an open file) read through a 1 MB buffer. No memory map: mapped
    pages would count against the process's memory for the whole file; buffered reads keep it
    bounded by the row group / batch."""
    import pyarrow.parquet as pq

    return pq.ParquetFile(where, memory_map=False, pre_buffer=False, buffer_size=1 << 20)


class ParquetReader(ArrowReader):
    def __init__(self, source: Source):
        super().__init__(source)
        where = source.path
        if source.is_remote:
            from lossctl.io.remote import open_input_file

            where = open_input_file(source.path, self.display)
        try:
            self.pf = parquet_file(where)
            self.schema = _checked_schema(self.pf.schema_arrow)
        except Exception as exc:  # noqa: BLE001
            raise DataError(
                f"{self.display}: not a readable Parquet file ({short_reason(exc)}). "
                "Expected a complete Parquet file; it may be truncated or corrupt."
            ) from None

    def total_rows(self) -> int | None:
        return self.pf.metadata.num_rows

    def batches(self, rows: int):
        raw = self.pf.iter_batches(batch_size=rows, columns=self.needed_columns(), use_threads=True)
        return self._converted(
            raw,
            rows,
            lambda exc, row0: (
                f"{self.display}: could not read Parquet data after row {row0} ({short_reason(exc)}). "
                "The file may be truncated or corrupt."
            ),
        )


class IpcReader(ArrowReader):
    """Arrow IPC file (Feather v2) through a memory map, or an IPC stream."""

    def __init__(self, source: Source, stream=None):
        super().__init__(source)
        pa = _pa()
        self._file = None
        self._stream = None
        self._stream_handle = None  # a stream read from a file: its end can be checked
        handle = None
        if stream is None:  # a random-access file: a memory map, or a URI's remote file
            if source.is_remote:
                from lossctl.io.remote import open_input_file

                handle = open_input_file(source.path, self.display)
        try:
            if stream is not None:
                self._stream = pa.ipc.open_stream(stream)
                self.schema = self._stream.schema
            else:
                if handle is None:  # read, not memory-mapped: a file truncated meanwhile is an error, not SIGBUS
                    handle = pa.OSFile(source.path, "r")
                try:
                    self._file = pa.ipc.open_file(handle)
                    self.schema = self._file.schema
                except pa.ArrowInvalid as file_exc:
                    handle.seek(0)
                    if handle.read(6) == b"ARROW1":  # an IPC file (Feather v2) that does not open: say why
                        raise file_exc
                    handle.seek(0)
                    self._stream = pa.ipc.open_stream(handle)
                    self._stream_handle = handle
                    self.schema = self._stream.schema
            self.schema = _checked_schema(self.schema)
        except Exception as exc:  # noqa: BLE001
            raise DataError(
                f"{self.display}: not a readable Arrow IPC / Feather file ({short_reason(exc)}). "
                "Expected an Arrow IPC file or stream (Feather v2); it may be truncated or corrupt."
            ) from None

    def total_rows(self) -> int | None:
        if self._file is None:
            return None
        try:
            return sum(self._file.get_batch(i).num_rows for i in range(self._file.num_record_batches))
        except Exception as exc:  # noqa: BLE001 - a corrupt record batch
            raise DataError(
                f"{self.display}: could not read Arrow record batches ({short_reason(exc)}). "
                "Expected an intact Arrow IPC file or stream (Feather v2); it may be truncated or corrupt."
            ) from None

    def _raw(self):
        if self._file is not None:
            batches = (self._file.get_batch(i) for i in range(self._file.num_record_batches))
        else:
            batches = iter(self._stream)
        for batch in batches:
            # Offsets and lengths are checked before any buffer is read: a corrupt file is
            # an error, never a wrong number or a crash.
            batch.validate(full=True)
            yield batch
        if self._stream_handle is not None:
            self._check_stream_end()

    def _check_stream_end(self) -> None:
        """A stream file cut at a record-batch boundary reads as a shorter stream: only its missing
        end-of-stream marker tells. Refuse it rather than report fewer rows as if they were all."""
        h = self._stream_handle
        try:
            size = h.size()
            h.seek(0)
            legacy = h.read(4) != b"\xff\xff\xff\xff"  # before Arrow 0.15: no continuation markers
            h.seek(max(0, size - 8))
            tail = h.read(8)
        except Exception:  # noqa: BLE001 - cannot look: the batches read were intact
            return
        # Modern streams end with 0xFFFFFFFF 0x00000000; legacy ones with 4 zero bytes (which a
        # zero-padded batch body also ends with, so that form is trusted for legacy streams only).
        if tail == b"\xff\xff\xff\xff\x00\x00\x00\x00" or (legacy and tail.endswith(b"\x00\x00\x00\x00")):
            return
        raise DataError(
            f"{self.display}: the Arrow IPC stream ends without its end-of-stream marker after the last "
            "complete record batch. Expected an intact stream; it is probably truncated (rows would be missing)."
        )

    def batches(self, rows: int):
        cols = self.needed_columns()
        return self._converted(
            (batch.select(cols) for batch in self._raw()),
            rows,
            lambda exc, row0: (
                f"{self.display}: could not read Arrow data after row {row0} ({short_reason(exc)}). "
                "Expected an intact Arrow IPC file or stream (Feather v2); it may be truncated or corrupt."
            ),
        )


class CsvReader(ArrowReader):
    """CSV/TSV via pyarrow's streaming reader; value columns are parsed as float64."""

    def __init__(self, source: Source, *, delimiter: str | None, header: bool, stream=None):
        super().__init__(source)
        pa = _pa()
        self.delimiter = delimiter or ("\t" if source.fmt == "tsv" else ",")
        self.header = header
        self._stream = stream
        first, second = self._first_lines()
        if first is None:
            raise DataError(f"{self.display} is empty. Expected a header line and one row per sample.")
        try:
            # Parsed as a stream, so that any line ending (\n, \r\n, a lone \r) ends a record.
            # NUL bytes are blanked first: Python before 3.11 refuses them, and these lines only
            # give the header and which columns look numeric (pyarrow reads the data itself).
            text = (first + "\n" + (second or "")).replace("\x00", " ")
            head = list(csv.reader(io.StringIO(text, newline=""), delimiter=self.delimiter))
        except csv.Error as exc:
            raise DataError(
                f"{self.display}: cannot parse the first lines as CSV ({exc}). "
                "Expected a header line of column names, then one row per sample."
            ) from None
        head = [r for r in head if r]
        fields = head[0] if head else []
        second = self.delimiter.join(head[1]) if len(head) > 1 else None
        if header:
            # A blank name is what pandas' to_csv writes for an unnamed index: named as pandas
            # reads it back ('Unnamed: 0'), so it can be named, and is never chosen automatically.
            self._names = [f.strip() or f"Unnamed: {i}" for i, f in enumerate(fields)]
            seen: set[str] = set()
            for i, name in enumerate(self._names):  # linear, at any header size
                if name in seen:
                    first = self._names.index(name)
                    raise DataError(
                        f"{self.display}: the header names column {name!r} more than once (fields "
                        f"{first + 1} and {i + 1}). Expected each column name once."
                    )
                seen.add(name)
        else:
            self._names = [f"f{i}" for i in range(len(fields))]
        self.schema = pa.schema([(n, pa.float64()) for n in self._names])
        # Which columns hold numbers, judged from the first data row (for default selections).
        data = head[1] if len(head) > 1 else []
        if not header:
            data = fields
        if header and not (second or "").strip():
            # No data row to judge from: every column may hold numbers; the run then
            # reports the file as having no data rows instead of blaming a column.
            self._numeric = set(self._names)
        else:
            self._numeric = None  # judged when first needed (only for a default selection)
            self._first_row = data

    def scalar_columns(self) -> set[str]:
        # Every named column is parsed as float64 when selected; a cell that is not a number
        # is then reported with its row. The first row only guides the default selection.
        return set(self._names)

    def value_columns(self) -> set[str]:
        if self._numeric is None:
            nulls = csv_nulls()
            self._numeric = {n for n, v in zip(self._names, self._first_row) if _is_number(v) or v in nulls}
        return self._numeric

    def index_columns(self) -> set[str]:
        return {n for n in self._names if re.fullmatch(r"Unnamed: \d+", n)} if self.header else set()

    def _first_lines(self) -> tuple[str | None, str | None]:
        """The header and first data line (decoded), without consuming a stream.

        Blank lines before the header are skipped and counted (``self._blank_lead``): pyarrow
        skips them too when it reads, and its ``skip_rows`` counts them.
        """
        self._blank_lead = 0
        if self._stream is not None:
            rec = _Recording(self._stream)
            one, two, self._blank_lead = _head_lines(rec, self.display)
            self._prefix = bytes(rec.data)  # handed to pyarrow before the rest of the stream
        else:
            pa = _pa()
            try:
                with pa.input_stream(self.source.path, compression="detect") as fh:
                    one, two, self._blank_lead = _head_lines(fh, self.display)
            except DataError:
                raise
            except Exception as exc:  # noqa: BLE001
                raise DataError(f"{self.display}: cannot read ({short_reason(exc)}).") from None
        self._head_bytes = len(one or b"") + len(two or b"")
        dec = [
            b.decode("utf-8-sig" if i == 0 else "utf-8", errors="replace").rstrip("\r\n") if b else None
            for i, b in enumerate((one, two))
        ]
        return dec[0], dec[1]

    def _open(self):
        import pyarrow.csv as pcsv

        pa = _pa()
        types = {n: pa.float64() for n in self.needed_columns()}
        values = {n for r in self.requests.values() if not r.keylike for n in r.names}
        for req in self.requests.values():
            if req.keylike:
                for n in req.names:
                    if n not in values:  # a key column that is also a value column stays numeric
                        types[n] = pa.string()
        # The names lossctl resolved (header names stripped of spaces) are given to pyarrow,
        # and the header line skipped, so both always agree on the names.
        from lossctl import limits

        read = pcsv.ReadOptions(
            # a block holds whole rows: room for rows as wide as the header and first row, twice
            block_size=max(limits.read_block(1 << 22), 2 * self._head_bytes + 1024),
            column_names=self._names,
            skip_rows=self._blank_lead + 1 if self.header else 0,
            use_threads=True,
        )
        parse = pcsv.ParseOptions(delimiter=self.delimiter)
        convert = pcsv.ConvertOptions(
            include_columns=self.needed_columns(), column_types=types, strings_can_be_null=False
        )
        if self._stream is not None:
            stream = _Prefixed(self._prefix, self._stream)
            return pcsv.open_csv(stream, read_options=read, parse_options=parse, convert_options=convert)
        return pcsv.open_csv(
            _pa().input_stream(self.source.path, compression="detect"),
            read_options=read,
            parse_options=parse,
            convert_options=convert,
        )

    def batches(self, rows: int):
        pa = _pa()

        def raw():
            yield from self._open()

        # parse and conversion errors, bad compression: locate the row
        return self._converted(raw(), rows, self._locate_error, catch=(pa.ArrowException, OSError))

    def _locate_error(self, exc: Exception, row0: int) -> str:
        """Find the first bad row with Python's csv module (files only; on the error path)."""
        msg = short_reason(exc)
        if self._stream is not None:
            # stdin cannot be read twice: say what pyarrow says, naming the column.
            return self._pyarrow_words(msg, row0)
        needed = self.needed_columns()
        id_cols = {n for r in self.requests.values() if r.keylike for n in r.names}
        pa = _pa()
        try:
            with pa.input_stream(self.source.path, compression="detect") as fh:
                text = io.TextIOWrapper(_PyRaw(fh), encoding="utf-8-sig", errors="replace", newline="")
                # NULs blanked: Python before 3.11 refuses them in csv (the cell is still not a number)
                rd = csv.reader((line.replace("\x00", " ") for line in text), delimiter=self.delimiter)
                if self.header:
                    for first in rd:  # the header: the first record that is not a blank line
                        if first:
                            break
                idx = {n: self._names.index(n) for n in needed}
                nulls = csv_nulls()
                i = -1
                for fields in rd:
                    line = rd.line_num
                    if not fields:
                        continue  # blank lines are skipped, as pyarrow does: they are not rows
                    i += 1
                    if len(fields) != len(self._names):
                        return (
                            f"{self.display}, row {i} (line {line}): {len(fields)} fields, but the "
                            f"{'header has' if self.header else 'first row has'} {len(self._names)}. "
                            "Expected the same number of fields in every row."
                        )
                    for n, j in idx.items():
                        if n in id_cols:
                            continue
                        cell = fields[j]
                        if not (_is_number(cell) or cell in nulls):
                            what = f"a blank cell {cell!r}" if cell.strip() == "" else f"{cell!r}"
                            return (
                                f"{self.display}, column {n!r}, row {i} (line {line}): {what} is not "
                                "a number. Expected a number in every row of the value columns."
                            )
        except Exception:  # noqa: BLE001 - fall back to pyarrow's own words
            pass
        return self._pyarrow_words(msg, row0)

    def _pyarrow_words(self, msg: str, row0: int) -> str:
        m = re.search(r"In CSV column #(\d+): (?:Row #\d+: )?CSV conversion error to \w+: invalid value '(.*)'", msg)
        if m and int(m.group(1)) < len(self._names):
            col = self._names[int(m.group(1))]
            cell = m.group(2)
            what = f"a blank cell {cell!r}" if cell.strip() == "" else repr(cell)
            return (
                f"{self.display}, column {col!r}, at or after row {row0}: {what} is not a number. "
                "Expected a number in every row of the value columns."
            )
        return (
            f"{self.display}: cannot parse CSV at or after row {row0} ({msg}). "
            "Expected the same number of fields in every row and numbers in the value columns."
        )


# What pyarrow's CSV reader parses as a float64 (surrounding spaces or tabs allowed).
_CSV_FLOAT = re.compile(r"[ \t]*[+-]?(?:(?:[0-9]+\.?[0-9]*|\.[0-9]+)(?:[eE][+-]?[0-9]+)?|inf|infinity|nan)[ \t]*", re.I)


@functools.cache
def csv_nulls() -> frozenset[str]:
    """The cells pyarrow's CSV reader reads as missing (null, then NaN: the --nan policy
    decides): its own default list, so the two never disagree."""
    import pyarrow.csv as pacsv

    return frozenset(pacsv.ConvertOptions().null_values)


def _is_number(text: str) -> bool:
    """True when pyarrow's CSV reader parses ``text`` as a float64 (stricter than ``float``)."""
    return _CSV_FLOAT.fullmatch(text) is not None


# The header line may be this long (a wide table's names); longer is an error, never a cut header.
HEAD_LIMIT = 256 << 20


def _head_lines(fh, display: str = "the CSV input") -> tuple[bytes, bytes, int]:
    """The first two non-blank lines of a binary stream (b"" if absent), and the number of
    blank lines before them. Any line ending counts (\n, \r\n, a lone \r). Read in chunks
    that double, so the work is linear in the header's length, up to HEAD_LIMIT."""
    buf = b""
    while True:
        blanks, lines = _split_head(buf)
        if len(lines) > 2:
            break
        if len(buf) >= HEAD_LIMIT:
            if len(lines) < 2:
                raise DataError(
                    f"{display}: the first line (the header) is longer than {HEAD_LIMIT >> 20} MiB. "
                    "Expected a header line of column names ending in a newline."
                )
            break  # (the first data row only guides which columns look numeric)
        chunk = fh.read(max(1 << 16, len(buf)))
        if not chunk:
            break
        buf += chunk
    one = lines[0] if lines and lines[0] else b""
    two = lines[1] if len(lines) > 1 else b""
    if not one and len(lines) <= 1:
        return b"", b"", blanks
    return one or b" ", two, blanks  # a header line that is empty but present stays a line


class _Recording:
    """A binary stream whose bytes read so far are kept (stdin's head, read once)."""

    def __init__(self, stream):
        self.stream = stream
        self.data = bytearray()

    def read(self, n: int) -> bytes:
        read1 = getattr(self.stream, "read1", None)
        chunk = read1(n) if read1 is not None else self.stream.read(n)
        self.data += chunk
        return chunk


def _split_head(data: bytes) -> tuple[int, list[bytes]]:
    if data.startswith(b"\xef\xbb\xbf"):
        data = data[3:]
    blanks = 0
    while True:
        for nl in (b"\r\n", b"\n", b"\r"):
            if data.startswith(nl):
                data = data[len(nl) :]
                blanks += 1
                break
        else:
            break
    return blanks, re.split(rb"\r\n|\n|\r", data, maxsplit=2)


class _PyRaw(io.RawIOBase):
    """A pyarrow NativeFile as a Python raw stream (for csv.reader on the error path)."""

    def __init__(self, fh):
        self.fh = fh

    def readable(self) -> bool:
        return True

    def readinto(self, b) -> int:
        data = self.fh.read(len(b))
        b[: len(data)] = data
        return len(data)


class _Prefixed(io.RawIOBase):
    """Bytes already read (the header line) followed by the rest of a stream."""

    def __init__(self, prefix: bytes, stream):
        self.prefix = prefix
        self.stream = stream

    def readable(self) -> bool:
        return True

    def readinto(self, b) -> int:
        if self.prefix:
            k = min(len(b), len(self.prefix))
            b[:k] = self.prefix[:k]
            self.prefix = self.prefix[k:]
            return k
        data = self.stream.read(len(b))
        if not data:
            return 0
        b[: len(data)] = data
        return len(data)


# ---------------------------------------------------------------------------
# JSON Lines / NDJSON
# ---------------------------------------------------------------------------

# A JSONL record (one line) may be this long: pyarrow's JSON reader parses whole blocks (of this
# size) and cannot split a line across two; a longer line is an error naming it, never a cut record.
JSONL_LINE_LIMIT = 8 << 20
JSONL_BLOCK = 2 << 20
_JSONL_INFER_LINES = 64


def _json_type(value, pa):
    """The Arrow type a decoded JSON value suggests (None: no information, e.g. null)."""
    if isinstance(value, bool):
        return pa.bool_()
    if isinstance(value, int):
        return pa.int64()
    if isinstance(value, float):
        return pa.float64()
    if isinstance(value, str):
        return pa.string()
    if isinstance(value, list):
        inner = None
        for v in value:
            inner = _merge_json_types(inner, _json_type(v, pa), pa)
        return None if inner is None else pa.list_(inner)
    if isinstance(value, dict):
        fields = [(k, _json_type(v, pa)) for k, v in value.items()]
        return pa.struct([(k, t) for k, t in fields if t is not None])
    return None


def _merge_json_types(a, b, pa):
    if a is None:
        return b
    if b is None or a == b:
        return a
    if pa.types.is_integer(a) and pa.types.is_floating(b) or pa.types.is_floating(a) and pa.types.is_integer(b):
        return pa.float64()
    if pa.types.is_list(a) and pa.types.is_list(b):
        return pa.list_(_merge_json_types(a.value_type, b.value_type, pa))
    if pa.types.is_struct(a) and pa.types.is_struct(b):
        out = {f.name: f.type for f in a}
        for f in b:
            out[f.name] = _merge_json_types(out.get(f.name), f.type, pa)
        return pa.struct(list(out.items()))
    return a  # a conflict: the first type stands, and reading reports the line that breaks it


def _flat_fields(fields, prefix=()):
    """(dotted name, path, type) of every leaf of a JSON schema: nested objects as ``a.b``."""
    import pyarrow as pa

    for f in fields:
        path = prefix + (f.name,)
        if pa.types.is_struct(f.type):
            yield from _flat_fields(list(f.type), path)
        else:
            yield ".".join(path), path, f.type


def _floated(t, pa):
    """``t`` with its numeric leaves as float64 (a value role: 1 and 1.5 in one column)."""
    if pa.types.is_integer(t) or pa.types.is_floating(t) or pa.types.is_boolean(t):
        return pa.float64()
    if pa.types.is_list(t):
        return pa.list_(_floated(t.value_type, pa))
    return t


def _json_kind(t, pa) -> str:
    if pa.types.is_integer(t) or pa.types.is_floating(t):
        return "a number"
    if pa.types.is_boolean(t):
        return "true or false"
    if pa.types.is_string(t):
        return "a string"
    if pa.types.is_list(t):
        return "a list of " + _json_kind(t.value_type, pa).replace("a ", "", 1).replace("list", "lists") + "s"
    return str(t)


def _json_fits(value, t, pa, whole: bool) -> bool:
    """Whether a decoded JSON value can be read as Arrow type ``t`` (null fits any type)."""
    if value is None:
        return True
    if pa.types.is_integer(t):
        return isinstance(value, int) and not isinstance(value, bool) or (
            not whole and isinstance(value, float)
        )
    if pa.types.is_floating(t):
        return isinstance(value, (int, float)) and not isinstance(value, bool)
    if pa.types.is_boolean(t):
        return isinstance(value, bool)
    if pa.types.is_string(t):
        return isinstance(value, str)
    if pa.types.is_list(t):
        return isinstance(value, list) and all(_json_fits(v, t.value_type, pa, whole) for v in value)
    return True


def _bad_json(display: str, line: int, row: int, exc) -> str:
    why = f"{exc.msg} at character {exc.pos + 1}" if isinstance(exc, json.JSONDecodeError) else short_reason(exc)
    return (
        f"{display}, line {line} (row {row}): not valid JSON ({why}). "
        "Expected one complete JSON object per line."
    )


def _not_object(display: str, line: int, row: int, obj) -> str:
    kind = {list: "an array", str: "a string", int: "a number", float: "a number", bool: "a boolean"}.get(
        type(obj), "null"
    )
    return (
        f"{display}, line {line} (row {row}): a JSON value that is not an object ({kind}). "
        'Expected one JSON object per line, e.g. {"logprobs": [-0.1, -2.3]}.'
    )


def infer_jsonl_schema(stream, display: str, stats: dict | None = None):
    """The fields (an Arrow struct type) of the first JSON Lines records of a binary stream,
    inferred with Python's json: pyarrow's own inference parses every field of a whole block,
    and fails on a field the run does not use (a "doc" holding numbers in one line, text in the next)."""
    pa = _pa()
    inferred = None
    lines = 0
    try:
        text = io.TextIOWrapper(_PyRaw(stream), encoding="utf-8", errors="replace", newline="")
        for lineno, line in enumerate(_limited_lines(text, display, JSONL_LINE_LIMIT), 1):
            if not line.strip():
                continue
            try:
                obj = json.loads(line)
            except ValueError as exc:
                raise DataError(_bad_json(display, lineno, lines, exc)) from None
            if not isinstance(obj, dict):
                raise DataError(_not_object(display, lineno, lines, obj))
            inferred = _merge_json_types(inferred, _json_type(obj, pa), pa)
            lines += 1
            if stats is not None:
                stats["chars"] = stats.get("chars", 0) + len(line)
                stats["longest"] = max(stats.get("longest", 0), len(line))
            if lines >= _JSONL_INFER_LINES:
                break
    except DataError:
        raise
    except Exception as exc:  # noqa: BLE001 - bad compression, unreadable file
        raise DataError(f"{display}: cannot read ({short_reason(exc)}). Expected JSON Lines.") from None
    if lines == 0:
        raise DataError(f"{display} holds no JSON records. Expected one JSON object per line.")
    if stats is not None:
        stats["lines"] = lines
    return inferred


def jsonl_read_schema(leaves: dict, needed: list[str], floats: set[str]):
    """The schema pyarrow is asked to read: the used fields only, nested as in the file, value
    columns as float64 (1 and 1.5 in one column)."""
    pa = _pa()
    tree: dict = {}
    for name in needed:
        path, t = leaves[name]
        if name in floats:
            t = _floated(t, pa)
        node = tree
        for part in path[:-1]:
            node = node.setdefault(part, {})
        node[path[-1]] = t

    def build(node):
        return [(k, pa.struct(build(v)) if isinstance(v, dict) else v) for k, v in node.items()]

    return pa.schema(build(tree))


class JsonlReader(ArrowReader):
    """JSON Lines / NDJSON (one object per line; .gz/.zst too) through pyarrow's streaming JSON
    reader. Nested objects are columns ``a.b``; lists are (N, K) or ragged, lists of lists
    (N, T, V) or ragged logits. Only the fields used are parsed (others are ignored, whatever
    their types); numbers of value columns are read as float64."""

    def __init__(self, source: Source):
        super().__init__(source)
        self._path = source.path  # (a spooled copy of stdin or a URI; self.source becomes the original)
        pa = _pa()
        try:
            stream = pa.input_stream(self._path, compression="detect")
        except Exception as exc:  # noqa: BLE001
            raise DataError(f"{self.display}: cannot read ({short_reason(exc)}). Expected JSON Lines.") from None
        stats: dict = {}
        with stream:
            inferred = infer_jsonl_schema(stream, self.display, stats)
        # Bytes of a line, on average in the first lines: an upper bound of its numbers in memory
        # (a JSON number takes more characters than its 8 bytes), for the chunk size.
        self._line_bytes = max(64, stats["chars"] // stats["lines"])
        self._longest = stats["longest"]
        self._leaves = {name: (path, t) for name, path, t in _flat_fields(list(inferred))}
        self.schema = pa.schema([(name, t) for name, (_, t) in self._leaves.items()])
        self._block = JSONL_LINE_LIMIT
        # Selections into lists: "field[k]" (element k), "field[*].sub" (sub of every element).
        self._selects: dict[str, tuple[str, list]] = {}

    def _parse_select(self, expr: str):
        """``expr`` as (a field, steps into it), or None: ``field[k]`` is element k of a list (the
        harness logs ``"byte_perplexity": [loglikelihood, bytes]``), ``field[*].name`` the member
        ``name`` of every element (OpenAI chat logprobs: ``choices[0].logprobs.content[*].logprob``)."""
        base = None
        for i in range(len(expr) - 1, 0, -1):
            if expr[i] == "[" and expr[:i] in self._leaves:
                base = expr[:i]
                break
        if base is None:
            return None
        ops, rest = [], expr[len(base) :]
        for m in re.finditer(r"\[(\d+|\*)?\]|\.([^.\[\]]+)|(.)", rest):
            if m.group(3) is not None:
                return None
            if m.group(2) is not None:
                ops.append(("field", m.group(2)))
            elif m.group(1) in (None, "*"):
                ops.append(("each", None))
            else:
                ops.append(("elem", int(m.group(1))))
        return base, ops

    def _step_type(self, expr: str, t, ops):
        """The Arrow type a selection gives (an error naming the step that does not apply)."""
        pa = _pa()
        for i, (op, arg) in enumerate(ops):
            if op == "field":
                if not pa.types.is_struct(t) or t.get_field_index(arg) < 0:
                    raise DataError(
                        f"{self.display}: {expr!r}: no member {arg!r} there (the value is {_json_kind(t, pa)}). "
                        "Expected a path of fields and list elements that exists in the first lines."
                    )
                t = t.field(arg).type
                continue
            if not pa.types.is_list(t):
                raise DataError(
                    f"{self.display}: {expr!r}: [{'*' if op == 'each' else arg}] applies to a list, but the "
                    f"value there is {_json_kind(t, pa)}. Expected a list before [k] or [*]."
                )
            if op == "each":
                return pa.list_(self._step_type(expr, t.value_type, ops[i + 1 :]))
            t = t.value_type
        return t

    def _match(self, req: Request, names: list[str]) -> list[str]:
        parsed = None if req.expr in self._leaves else self._parse_select(req.expr or "")
        if parsed is None:
            return super()._match(req, names)
        name = req.expr
        if name not in self._selects:
            base, ops = parsed
            t = self._step_type(name, self._leaves[base][1], ops)
            self._selects[name] = (base, ops)
            self.schema = self.schema.append(_pa().field(name, t))
        return [name]

    def can_select(self, expr: str) -> bool:
        return expr in self._leaves or self._parse_select(expr) is not None

    def _stacks(self, req: Request) -> bool:
        return req.expr not in self._selects and super()._stacks(req)

    def _read_leaves(self) -> dict:
        """The fields read from the file, each with the type it is read as: only the members a
        selection walks into, value columns as float64."""
        pa = _pa()
        floats = {n for r in self.requests.values() if r.dtype == "float" and not r.keylike for n in r.names}
        out: dict = {}

        def prune(t, ops, floated):
            if not ops:
                return _floated(t, pa) if floated else t
            (op, arg), rest = ops[0], ops[1:]
            if op == "field":
                return pa.struct([(arg, prune(t.field(arg).type, rest, floated))])
            return pa.list_(prune(t.value_type, rest, floated))

        for n in self.needed_columns():
            base, ops = self._selects.get(n, (n, []))
            path, t = self._leaves[base]
            typ = prune(t, ops, n in floats)
            out[base] = (path, _merge_json_types(out[base][1], typ, pa) if base in out else typ)
        return out

    def total_rows(self) -> int | None:
        return None

    def row_bytes(self) -> int | None:
        return self._line_bytes

    def _bad_json(self, line: int, row: int, exc) -> str:
        return _bad_json(self.display, line, row, exc)

    def _not_object(self, line: int, row: int, obj) -> str:
        return _not_object(self.display, line, row, obj)

    def _read_schema(self):
        leaves = self._read_leaves()
        return jsonl_read_schema(leaves, list(leaves), set())

    def batches(self, rows: int):
        import pyarrow.compute as pc
        import pyarrow.json as pjson

        pa = _pa()
        from lossctl import limits

        needed = self.needed_columns()
        schema = self._read_schema()
        # pyarrow's JSON parser holds some 30 times its block in memory: blocks of 2 MiB, larger
        # (up to JSONL_LINE_LIMIT) when the first lines are long; a longer line is an error naming it.
        want = min(JSONL_LINE_LIMIT, max(JSONL_BLOCK, 4 * self._longest))
        self._block = max(limits.read_block(want), 1 << 16)

        def raw():
            reader = pjson.open_json(
                pa.input_stream(self._path, compression="detect"),
                read_options=pjson.ReadOptions(block_size=self._block),
                parse_options=pjson.ParseOptions(
                    explicit_schema=schema, unexpected_field_behavior="ignore", newlines_in_values=False
                ),
            )
            for batch in reader:
                cols = []
                for name in needed:
                    base, ops = self._selects.get(name, (name, []))
                    path = self._leaves[base][0]
                    col = batch.column(batch.schema.get_field_index(path[0]))
                    if len(path) > 1:
                        col = _struct_get(col, path[1:], pc)
                    cols.append(_arrow_steps(col, ops, pc))
                yield pa.RecordBatch.from_arrays(cols, names=needed)

        def located(gen):
            try:
                yield from gen
            except DataError as err:
                raise DataError(self._with_line(str(err))) from None

        return located(self._converted(raw(), rows, self._locate_error, catch=(pa.ArrowException, OSError)))

    # --- the error path: find the line -------------------------------------------------
    def _lines(self):
        pa = _pa()
        with pa.input_stream(self._path, compression="detect") as fh:
            text = io.TextIOWrapper(_PyRaw(fh), encoding="utf-8", errors="replace", newline="")
            yield from enumerate(_limited_lines(text, self.display, self._block), 1)

    def _line_of(self, row: int) -> int | None:
        seen = -1
        try:
            for lineno, line in self._lines():
                if line.strip():
                    seen += 1
                    if seen == row:
                        return lineno
        except Exception:  # noqa: BLE001
            return None
        return None

    def _with_line(self, message: str) -> str:
        """A message about a row ("row R") also names its line."""
        m = re.search(r"\brow (\d+)(?![\d)]| \(line)", message)
        if not m or "line " in message[: m.start()]:
            return message
        line = self._line_of(int(m.group(1)) - self.source.row_start)
        if line is None:
            return message
        return message[: m.end()] + f" (line {line})" + message[m.end() :]

    def _locate_error(self, exc: Exception, row0: int) -> str:
        """The first line that is not valid JSON, not an object, or holds a used field of another
        type (a Python scan of the file, on the error path only)."""
        pa = _pa()
        msg = short_reason(exc)
        floats = {n for r in self.requests.values() if r.dtype == "float" and not r.keylike for n in r.names}
        row = -1
        try:
            for lineno, line in self._lines():
                if not line.strip():
                    continue
                row += 1
                try:
                    obj = json.loads(line)
                except ValueError as jexc:
                    return self._bad_json(lineno, row, jexc)
                if not isinstance(obj, dict):
                    return self._not_object(lineno, row, obj)
                leaves = self._read_leaves()
                for name in self.needed_columns():
                    base, ops = self._selects.get(name, (name, []))
                    path, t = leaves[base]
                    value = obj
                    for part in path:
                        value = value.get(part) if isinstance(value, dict) else None
                    for op, arg in ops:  # (a selection: walk it in Python too)
                        value, t, missing = _py_step(value, t, op, arg)
                        if missing:
                            return (
                                f"{self.display}, field {name!r}, line {lineno} (row {row}): {missing}. "
                                "Expected the selected member or element in every line."
                            )
                        if op == "each":
                            break
                    if not _json_fits(value, t, pa, whole=name not in floats):
                        shown = json.dumps(value)
                        shown = shown if len(shown) <= 40 else shown[:37] + "..."
                        return (
                            f"{self.display}, field {name!r}, line {lineno} (row {row}): {shown} is not "
                            f"{_json_kind(t, pa)}, as in the lines before it. Expected one type per field "
                            "in every line."
                        )
        except DataError as err:
            return str(err)
        except Exception:  # noqa: BLE001 - fall back to pyarrow's words
            pass
        return (
            f"{self.display}: cannot parse JSON Lines at or after row {row0} ({msg}). "
            "Expected one JSON object per line, with one type per field."
        )


def _arrow_steps(col, ops, pc):
    """A selection's steps applied to an Arrow column: a struct member, a list element, or
    (``[*]``) the rest of the steps applied to every element of each list."""
    pa = _pa()
    for i, (op, arg) in enumerate(ops):
        if op == "field":
            col = _struct_get(col, [arg], pc)
        elif op == "elem":
            col = pc.list_element(col, arg)
        else:
            inner = _arrow_steps(col.values, ops[i + 1 :], pc)
            mask = col.is_null() if col.null_count else None
            return pa.ListArray.from_arrays(col.offsets, inner, mask=mask)
    return col


def _py_step(value, t, op, arg):
    """One step of a selection on a decoded JSON value: (value, type, why it is missing or None)."""
    pa = _pa()
    if op == "field":
        if not isinstance(value, dict) or arg not in value:
            return None, t, f"no member {arg!r} in {json.dumps(value)[:40]}"
        return value[arg], t.field(arg).type, None
    if op == "elem":
        if not isinstance(value, list) or len(value) <= arg:
            return None, t, f"{json.dumps(value)[:40]} has no element {arg}"
        return value[arg], t.value_type, None
    if not isinstance(value, list):
        return None, t, f"{json.dumps(value)[:40]} is not a list"
    return value, t, None  # [*]: the list is checked against the list type


def _struct_get(col, path, pc):
    for part in path:
        col = pc.struct_field(col, [col.type.get_field_index(part)])
    return col


def _limited_lines(text, display: str, limit: int):
    """Lines of a text stream, refusing one longer than ``limit`` characters (never read whole)."""
    lineno = 0
    while True:
        line = text.readline(limit)
        if not line:
            return
        lineno += 1
        if len(line) >= limit and not line.endswith("\n"):
            size = f"{limit >> 20} MiB" if limit >= 1 << 20 else f"{limit >> 10} KiB"
            raise DataError(
                f"{display}, line {lineno}: longer than {size}, the longest JSON record read. Expected "
                f"one JSON object per line of at most {size} (split long sequences into several "
                "records, or store them as Parquet)."
            )
        yield line


# ---------------------------------------------------------------------------
# NumPy readers
# ---------------------------------------------------------------------------


def _npy_header(fh, display: str):
    """(shape, fortran_order, dtype) of an NPY stream positioned at its start; no pickles."""
    fmt = np.lib.format
    try:
        version = fmt.read_magic(fh)
        if version == (1, 0):
            shape, fortran, dtype = fmt.read_array_header_1_0(fh)
        else:
            shape, fortran, dtype = fmt.read_array_header_2_0(fh)
    except Exception as exc:  # noqa: BLE001
        raise DataError(f"{display}: not a valid NPY array ({short_reason(exc)}).") from None
    if dtype.hasobject:
        raise DataError(
            f"{display}: the array holds Python objects (dtype {dtype}), which NumPy stores as pickles; "
            "lossctl never loads pickles. Save a numeric array instead."
        )
    if len(shape) == 0:
        raise DataError(f"{display}: a 0-d (scalar) array; expected one row per sample.")
    if 0 in shape[1:]:
        raise DataError(
            f"{display}: an array of shape {_shape_str(shape)}, so every row holds no values. "
            "Expected at least one value per row (one per class or feature)."
        )
    return tuple(shape), fortran, dtype


_PAGE = os.sysconf("SC_PAGE_SIZE") if hasattr(os, "sysconf") else 4096
MMAP_NPY = False  # see NpyReader: reading is safe against files truncated during the run


class _NpyStream:
    """Rows of one NPY array read sequentially from a binary stream into fresh buffers."""

    def __init__(self, fh, display: str, size: int | None = None):
        self.fh = fh
        self.display = display
        self.shape, self.fortran, self.dtype = _npy_header(fh, display)
        # Python integers: a header's sizes may overflow int64 (shape (2, 2**32, 2**32)).
        self.row_items = math.prod(int(d) for d in self.shape[1:])
        self.row_nbytes = self.row_items * self.dtype.itemsize
        self.nrows = int(self.shape[0])
        promised = self.nrows * self.row_nbytes
        if self.row_nbytes >= 2**62 or promised >= 2**62:
            raise DataError(
                f"{display}: the header describes an array of shape {_shape_str(self.shape)} "
                f"({promised if self.nrows else self.row_nbytes} bytes{'' if self.nrows else ' per row'}), "
                "larger than any file can hold. Expected a header that describes the data; the file "
                "may be corrupt or its header edited."
            )
        if size is not None:
            payload = size - fh.tell()
            if payload < promised:
                raise DataError(
                    f"{display}: truncated: the header promises {self.nrows} rows "
                    f"({promised} bytes) but only {payload} bytes follow."
                )
            if payload > promised:
                # np.save never writes past the data: more bytes than the header's rows means a
                # header that no longer describes the data (edited or corrupt), so rows would be lost.
                raise DataError(
                    f"{display}: the header promises {self.nrows} rows ({promised} bytes) but "
                    f"{payload} bytes follow. Expected exactly the rows of the header; the file "
                    "may be corrupt or its header edited."
                )
        self.pos = 0

    def read(self, rows: int) -> np.ndarray:
        k = min(rows, self.nrows - self.pos)
        buf = np.empty((k,) + tuple(self.shape[1:]), dtype=self.dtype)
        if k:
            view = memoryview(buf.reshape(-1).view(np.uint8))
            got = 0
            while got < len(view):
                n = self.fh.readinto(view[got:])
                if not n:
                    raise DataError(
                        f"{self.display}: truncated at row {self.pos + got // max(self.row_nbytes, 1)} of {self.nrows}."
                    )
                got += n
        self.pos += k
        return buf


class NpyReader(Reader):
    """A plain NPY array (the whole array is the input) or a structured one (fields are columns)."""

    def __init__(self, source: Source):
        super().__init__(source)
        try:
            self.fh = open(source.path, "rb")
        except OSError as exc:
            raise DataError(f"{self.display}: cannot open ({exc.strerror}).") from None
        try:
            size = os.fstat(self.fh.fileno()).st_size
            self.arr = _NpyStream(self.fh, self.display, size)
        except BaseException:
            self.fh.close()  # a bad header or size: the error is reported, the file closed
            raise
        self.fields = list(self.arr.dtype.names or [])
        # Rows are read into fresh buffers, one chunk at a time (resident memory stays bounded
        # by a few chunks). Not a memory map: a file truncated while mapped kills the process
        # with SIGBUS, where a read reports "truncated at row N" (measured: a 20M-row mse takes the
        # same CPU time, 2.5 s, either way).
        self._map = None
        self._view = None
        try:
            if MMAP_NPY and self.arr.nrows and self.arr.row_nbytes:
                import mmap

                self._data_offset = self.fh.tell()
                self._map = mmap.mmap(self.fh.fileno(), 0, access=mmap.ACCESS_READ)
                self._view = np.ndarray(
                    self.arr.shape,
                    dtype=self.arr.dtype,
                    buffer=self._map,
                    offset=self.fh.tell(),
                    order="F" if self.arr.fortran else "C",
                )
        except (OSError, ValueError):  # a file that cannot be mapped (a pipe, say): read it instead
            self._map = self._view = None

    def available(self) -> list[str]:
        return self.fields

    def integer_columns(self) -> set[str]:
        return {n for n in self.fields if self.arr.dtype[n].kind in "biu"}

    def _what(self) -> str:
        return "field"

    def resolve(self) -> None:
        if not self.fields:
            for req in self.requests.values():
                if req.expr is not None or req.keylike:
                    what = f"column {req.expr!r}" if not req.keylike else f"a key column {req.expr!r}"
                    raise DataError(
                        f"{self.display} is a plain array of shape {_shape_str(self.arr.shape)} "
                        f"with no named columns, so it has no {what}. Use {self.display} on its own, "
                        "or save a structured array or an NPZ with named arrays."
                    )
                req.names = ["<array>"]
            if sum(1 for r in self.requests.values()) > 1:
                raise DataError(
                    f"{self.display} is a plain array; it can serve only one input, not "
                    f"{', '.join(r.key.upper() for r in self.requests.values())}."
                )
            return
        super().resolve()

    def total_rows(self) -> int | None:
        return self.arr.nrows

    def row_bytes(self) -> int | None:
        return self.arr.row_nbytes

    def batches(self, rows: int):
        done: list[tuple[int, int]] = []  # byte ranges of chunks handed out
        while self.rows_read < self.arr.nrows:
            row0 = self.rows_read
            if self._view is not None:
                block = self._view[row0 : row0 + rows]
                if self.arr.fortran and block.ndim > 1:
                    block = np.ascontiguousarray(block)
                else:
                    done.append((self._data_offset + row0 * self.arr.row_nbytes, len(block) * self.arr.row_nbytes))
                self.arr.pos += len(block)
            elif self.arr.fortran and len(self.arr.shape) > 1:
                block = self._fortran_rows(row0, rows)
            else:
                block = self.arr.read(rows)
            self.rows_read += len(block)
            yield self._split(block, row0)
            # Chunks handed out four batches ago are done with (the engine holds at most the
            # current chunk and two read ahead): drop their pages from this process's memory.
            if len(done) > 4:
                self._release(*done.pop(0))
        for rng in done:
            self._release(*rng)

    def _fortran_rows(self, row0: int, rows: int) -> np.ndarray:
        """Rows row0.. of a Fortran-order array: each trailing index is a contiguous run of all
        rows, so a chunk is one read per run, reassembled in C order."""
        arr = self.arr
        if row0 == 0:
            self._data_offset = self.fh.tell()
        k = min(rows, arr.nrows - row0)
        item = arr.dtype.itemsize
        cols = np.empty((k, arr.row_items), dtype=arr.dtype)
        for c in range(arr.row_items):
            want = k * item
            data = os.pread(self.fh.fileno(), want, self._data_offset + (c * arr.nrows + row0) * item)
            if len(data) < want:
                raise DataError(
                    f"{self.display}: truncated at row {row0} of {arr.nrows} (read {len(data)} bytes of {want})."
                )
            cols[:, c] = np.frombuffer(data, dtype=arr.dtype)
        arr.pos += k
        return np.ascontiguousarray(cols.reshape((k,) + tuple(arr.shape[1:]), order="F"))

    def _release(self, start: int, length: int) -> None:
        import mmap

        page = _PAGE
        lo = start + (-start) % page  # whole pages inside the range only
        hi = (start + length) - (start + length) % page
        if hi > lo and self._map is not None and not self._map.closed:
            try:
                self._map.madvise(mmap.MADV_DONTNEED, lo, hi - lo)
            except (OSError, ValueError, AttributeError):
                pass

    def _split(self, block: np.ndarray, row0: int) -> dict[str, np.ndarray]:
        if not self.fields:
            (req,) = self.requests.values()
            return {req.key: block}
        out = {}
        for req in self.requests.values():
            cols = [_field_array(block, n, self.display) for n in req.names]
            stack = len(cols) > 1 or (req.matrix and _is_selection(req.expr))
            out[req.key] = np.column_stack(cols) if stack else cols[0]
        return out

    def close(self) -> None:
        self._view = None
        if self._map is not None:
            try:
                self._map.close()
            except BufferError:  # an array still points into the map; the OS frees it at exit
                pass
        if not self.fh.closed:
            self.fh.close()


def _field_array(block: np.ndarray, name: str, display: str) -> np.ndarray:
    a = block[name]
    if a.dtype.kind not in "biuf":
        raise DataError(f"{display}: field {name!r} has dtype {a.dtype}; expected numbers.")
    return np.ascontiguousarray(a)


class NpzReader(Reader):
    """Named arrays in an NPZ archive, each streamed from its zip member (no pickles)."""

    def __init__(self, source: Source):
        super().__init__(source)
        import zipfile

        try:
            self.zf = zipfile.ZipFile(source.path)
            members = self.zf.namelist()
        except Exception as exc:  # noqa: BLE001
            raise DataError(
                f"{self.display}: not a readable NPZ archive ({short_reason(exc)}). It may be truncated or corrupt."
            ) from None
        self.keys = [m[:-4] for m in members if m.endswith(".npy")]
        self.streams: dict[str, _NpyStream] = {}

    def available(self) -> list[str]:
        return self.keys

    def _what(self) -> str:
        return "array"

    def _missing_message(self, part: str, names: list[str], key: str) -> str:
        return super()._missing_message(part, names, key).replace("has no array", "has no array named")

    def scalar_columns(self) -> set[str]:
        return set()

    def _stream(self, name: str) -> _NpyStream:
        if name not in self.streams:
            try:
                info = self.zf.getinfo(name + ".npy")
                fh = self.zf.open(info)
            except Exception as exc:  # noqa: BLE001
                raise DataError(f"{self.display}: cannot read array {name!r} ({short_reason(exc)}).") from None
            self.streams[name] = _NpyStream(fh, f"{self.display}:{name}", info.file_size)
        return self.streams[name]

    def resolve(self) -> None:
        super().resolve()
        counts = {}
        for req in self.requests.values():
            st = self._stream(req.names[0])
            counts[req.names[0]] = st.nrows
        if len(set(counts.values())) > 1:
            raise DataError(
                f"{self.display}: its arrays have different numbers of rows "
                f"({', '.join(f'{k!r}: {v}' for k, v in counts.items())}); expected one row per sample in each."
            )

    def total_rows(self) -> int | None:
        req = next(iter(self.requests.values()))
        return self._stream(req.names[0]).nrows

    def row_bytes(self) -> int | None:
        return sum(self._stream(r.names[0]).row_nbytes for r in self.requests.values())

    def batches(self, rows: int):
        total = self.total_rows()
        try:
            while self.rows_read < total:
                read: dict[str, np.ndarray] = {}  # an array used by several inputs is read once
                for req in self.requests.values():
                    name = req.names[0]
                    if name not in read:
                        read[name] = self._stream(name).read(rows)
                out = {req.key: read[req.names[0]] for req in self.requests.values()}
                self.rows_read += len(next(iter(out.values())))
                yield out
        except DataError:
            raise
        except Exception as exc:  # noqa: BLE001
            raise DataError(
                f"{self.display}: could not read after row {self.rows_read} ({short_reason(exc)}). "
                "The archive may be truncated or corrupt."
            ) from None

    def close(self) -> None:
        self.zf.close()


# ---------------------------------------------------------------------------
# Opening
# ---------------------------------------------------------------------------


@dataclass
class ReadOptions:
    delimiter: str | None = None
    header: bool = True


_SPOOLED: list[str] = []


def _stdin_binary():
    return sys.stdin.buffer


def stdin_is_terminal() -> bool:
    try:
        return sys.stdin.isatty()
    except (AttributeError, ValueError):
        return False


def open_reader(source: Source, opts: ReadOptions) -> Reader:
    if source.fmt == "memory":  # an object given to the Python API (lossctl.io.memory)
        from lossctl.io.memory import open_memory

        return open_memory(source)
    if source.is_stdin:
        if stdin_is_terminal():
            raise UsageError(
                "An input is '-' (stdin), but stdin is a terminal: pipe data in "
                "(e.g. `cat preds.csv | lossctl compute ...`) or give a file path."
            )
        stream = _stdin_binary()
        if source.fmt in ("csv", "tsv"):
            return CsvReader(source, delimiter=opts.delimiter, header=opts.header, stream=stream)
        # Parquet, NPY, NPZ and Arrow files need random access: spool stdin to a temporary file.
        return _spooled(source, stream, opts, "<stdin>")
    if source.is_remote and source.fmt != "dataset":
        from lossctl.io import remote

        if source.fmt in ("csv", "tsv"):
            stream = remote.open_input_stream(source.path, source.display)
            return CsvReader(source, delimiter=opts.delimiter, header=opts.header, stream=stream)
        if source.fmt in ("npy", "npz"):
            # NPY and NPZ are read through a local copy (memory-mapped / random access).
            with remote.open_input_stream(source.path, source.display, compression=None) as stream:
                return _spooled(source, stream, opts, source.path)
        if source.fmt in ("parquet", "arrow"):
            return ParquetReader(source) if source.fmt == "parquet" else IpcReader(source)
        if source.fmt == "jsonl":  # read through a local copy: an error is located by a second pass
            with remote.open_input_stream(source.path, source.display) as stream:
                return _spooled(source, stream, opts, source.path)
    return _open_file(source, opts)


def _spooled(source: Source, stream, opts: ReadOptions, label: str) -> Reader:
    """Copy a stream to a temporary file (removed at the end of the run) and read that."""
    kind = "stdin" if source.is_stdin else "remote"
    fd, tmp = tempfile.mkstemp(prefix=f"lossctl-{kind}-", suffix="." + source.fmt)
    _SPOOLED.append(tmp)
    try:
        with os.fdopen(fd, "wb") as out:
            while True:
                chunk = stream.read(1 << 20)
                if not chunk:
                    break
                out.write(chunk)
    except OSError as exc:  # disk full, file-size limit: the copy is removed with the other spools
        cleanup_spooled()
        raise DataError(
            f"{label}: copying it to a temporary file in {tempfile.gettempdir()} failed "
            f"({exc.strerror or short_reason(exc)}). Expected room for the whole input there: set TMPDIR "
            "to a directory with space, or give a file path."
        ) from None
    original = source
    reader = _open_file(Source(source.text, tmp, source.column, source.fmt, label=label), opts)
    reader.source = original
    return reader


def _open_file(source: Source, opts: ReadOptions) -> Reader:
    if source.fmt == "dataset":
        from lossctl.io.dataset import DatasetReader

        return DatasetReader(source)
    if not os.access(source.path, os.R_OK):
        raise DataError(f"{source.display}: not readable (permission denied).")
    if os.path.getsize(source.path) == 0:
        raise DataError(f"{source.display} is empty (0 bytes). Expected {source.fmt.upper()} data.")
    if source.fmt in ("csv", "tsv"):
        return CsvReader(source, delimiter=opts.delimiter, header=opts.header)
    if source.fmt == "parquet":
        return ParquetReader(source)
    if source.fmt == "arrow":
        return IpcReader(source)
    if source.fmt == "npy":
        return NpyReader(source)
    if source.fmt == "npz":
        return NpzReader(source)
    if source.fmt == "jsonl":
        return JsonlReader(source)
    raise UsageError(f"unknown input format {source.fmt!r}")


def cleanup_spooled() -> None:
    while _SPOOLED:
        path = _SPOOLED.pop()
        try:
            os.unlink(path)
        except OSError:
            pass


def _shape_str(shape) -> str:
    return "(" + ", ".join(str(s) for s in shape) + ("," if len(shape) == 1 else "") + ")"
