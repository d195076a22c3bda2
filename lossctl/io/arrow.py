"""Arrow-backed readers: record batches converted into NumPy arrays per request (shared by the
Parquet, Arrow IPC, CSV/TSV, JSON Lines and dataset readers)."""

from __future__ import annotations

import io
import re
from typing import Callable

import numpy as np

from lossctl.errors import DataError
from lossctl.io.parsing import GROUP_KEY, Request, Source, _is_selection
from lossctl.io.problems import InputDataError
from lossctl.io.reader import Reader, _shape_str


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
            raise InputDataError(failure(exc, row0), file=self.display) from None  # (the row is in the text: at or after row0)

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
            raise InputDataError(
                f"{self.display}: column {name!r} is missing from the data at row {row0}, though the "
                "schema has it. Expected every part of the input to hold the columns used.",
                file=self.display, column=name, rows=[row0],
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
                raise InputDataError(
                    f"{self.display}, column {name!r}, sequence (row) {row0}: {a.shape[2]} logits per token, but "
                    f"the tokens of row {first[1]} have {first[0][1]}. Expected the same vocabulary size V at "
                    "every token of every sequence (sequences may differ in their number of tokens).",
                    file=self.display, column=name, rows=[row0],
                )
            raise InputDataError(
                f"{self.display}, column {name!r}, row {row0}: list of {_shape_str(a.shape[1:]).strip('(,)')} "
                f"values, but row {first[1]} has {_shape_str(first[0]).strip('(,)')}. Expected lists of equal "
                "length (one value per class or feature) in every row.",
                file=self.display, column=name, rows=[row0],
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
        raise InputDataError(
            f"{display}, column {name!r}, row {row0 + i}: the integer {arr[i].as_py()} has more than 53 "
            "significant bits, and a column with missing values is read as float64, which would round it. "
            f"Expected integers of magnitude up to 2**53 = {1 << 53}.",
            file=display, column=name, rows=[row0 + i],
        )


def arrow_to_numpy(arr, req: Request, display: str, name: str, row0: int) -> np.ndarray:
    """One Arrow column → ndarray: scalars (N,), (nested) fixed/equal lists (N, K, ...)."""
    pa = _pa()
    t = arr.type
    if arr.null_count:
        scalar = pa.types.is_integer(t) or pa.types.is_floating(t)
        if scalar and not req.keylike:
            # A missing number is NaN; the nan policy (option) decides what happens to its row.
            _exact_ints_or_error(arr, display, name, row0)
            values = np.array(arrow_values(arr), dtype=np.float64)
            values[~arrow_valid(arr)] = np.nan
            return values
        nulls = np.flatnonzero(~arrow_valid(arr))
        raise InputDataError(
            f"{display}, column {name!r}, row {row0 + int(nulls[0])}: missing value (null)"
            + (f"; {len(nulls)} in this block" if len(nulls) > 1 else "")
            + ". Expected a value in every row; remove or fill missing rows.",
            file=display, column=name, rows=[row0 + int(nulls[0])],
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
    raise InputDataError(
        f"{display}, column {name!r} has type {t}; expected numbers (a numeric column, or a list of numbers per row).",
        file=display, column=name,
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
            raise InputDataError(
                f"{display}, column {name!r}, row {row0 + bad}: list of {int(lengths[bad])} values, "
                f"but row {row0} has {int(lengths[0])}. Expected lists of equal length "
                "(one value per class or feature) in every row.",
                file=display, column=name, rows=[row0 + bad],
            )
        width = int(lengths[0]) if n else 0
    if n and width == 0:
        raise InputDataError(
            f"{display}, column {name!r}, row {row0}: an empty list (in every row of this block). "
            "Expected at least one value per row (one per class or feature).",
            file=display, column=name, rows=[row0],
        )
    flat = arr.flatten()
    if flat.null_count:
        import pyarrow.compute as pc

        first = int(np.flatnonzero(~arrow_valid(flat))[0])
        parent = arrow_values(pc.list_parent_indices(arr))
        row = row0 + int(parent[first]) if first < len(parent) else None
        where = f", row {row}" if row is not None else ""
        raise InputDataError(
            f"{display}, column {name!r}{where}: a list holds a missing value (null). "
            "Expected numbers only in every list.",
            file=display, column=name,
        )
    vt = flat.type
    if pa.types.is_fixed_size_list(vt) or pa.types.is_list(vt) or pa.types.is_large_list(vt):
        inner = _list_to_numpy(flat, Request(req.key, None, True), display, name, row0)
        return inner.reshape((n, width) + inner.shape[1:])
    if not (pa.types.is_integer(vt) or pa.types.is_floating(vt)):
        raise InputDataError(
            f"{display}, column {name!r} holds lists of {vt}; expected lists of numbers.",
            file=display, column=name,
        )
    return arrow_values(flat).reshape(n, width)


def _ragged_from_arrow(arr, display: str, name: str):
    """A List/LargeList array of numbers as a Ragged (a null inside a list is NaN: the nan
    policy decides), read through buffers (see arrow_values)."""
    from lossctl.ragged import Ragged

    pa = _pa()
    flat = arr.flatten()
    vt = flat.type
    if not (pa.types.is_integer(vt) or pa.types.is_floating(vt) or pa.types.is_boolean(vt)):
        raise InputDataError(
            f"{display}, column {name!r} holds lists of {vt}; expected lists of numbers.",
            file=display, column=name,
        )
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
        raise InputDataError(
            f"{display}, column {name!r}, sequence (row) {row0 + int(parent[j])}: a token's vector is missing "
            "(null). Expected a list of numbers (one per vocabulary entry) at every token.",
            file=display, column=name, rows=[row0 + int(parent[j])],
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
            raise InputDataError(
                f"{display}, column {name!r}, sequence (row) {row0 + row}, token {j - int(offs[row])}: "
                f"{int(widths[j])} logits, but the first token of row {row0 + int(parent[0])} has "
                f"{int(widths[0])}. Expected one logit per vocabulary entry, the same vocabulary size V "
                "at every token of every sequence (sequences may differ in their number of tokens).",
                file=display, column=name, rows=[row0 + row],
            )
        width = int(widths[0]) if len(widths) else 0
    else:
        raise InputDataError(
            f"{display}, column {name!r} holds lists of {vt}; expected lists of lists of numbers.",
            file=display, column=name,
        )
    inner = flat.flatten()
    if inner.null_count:
        parent = arrow_values(pc.list_parent_indices(arr))
        tok = arrow_values(pc.list_parent_indices(flat))
        j = int(np.flatnonzero(~arrow_valid(inner))[0])
        raise InputDataError(
            f"{display}, column {name!r}, sequence (row) {row0 + int(parent[int(tok[j])])}: a logit is missing "
            "(null). Expected numbers only.",
            file=display, column=name, rows=[row0 + int(parent[int(tok[j])])],
        )
    if not (pa.types.is_integer(inner.type) or pa.types.is_floating(inner.type)):
        raise InputDataError(
            f"{display}, column {name!r} holds lists of {vt}; expected lists of lists of numbers.",
            file=display, column=name,
        )
    values = arrow_values(inner).reshape(len(flat), width)
    offsets = arrow_values(arr.offsets).astype(np.int64)
    return Ragged(values, offsets - offsets[0])


class _PyRaw(io.RawIOBase):
    """A pyarrow NativeFile as a Python raw stream (for csv / json parsing on the error path)."""

    def __init__(self, fh):
        self.fh = fh

    def readable(self) -> bool:
        return True

    def readinto(self, b) -> int:
        data = self.fh.read(len(b))
        b[: len(data)] = data
        return len(data)
