"""In-memory inputs for the Python API: NumPy arrays, lists, pandas / polars objects, Arrow data,
anything with the Arrow PyCapsule interface, ``__array__`` or DLPack.

An object is registered under a token (``<memory:N>``) and reaches the engine as a ``Source`` of
format ``memory``; ``open_reader`` hands such a source to :func:`open_memory`, so the engine reads
it in chunks exactly like a file: a NumPy array through row slices (views, no copy), Arrow data
through zero-copy record-batch slices. pandas, polars and torch are never imported here: an
object is recognised by its type's module name and converted through its own methods.
"""

from __future__ import annotations

import itertools
from typing import Any

import numpy as np

from lossctl.errors import DataError, short_reason
from lossctl.io.arrow import ArrowReader
from lossctl.io.parsing import Source, add_token
from lossctl.io.problems import InputDataError
from lossctl.io.reader import Reader, _shape_str

PREFIX = "<memory:"
FORMAT = "memory"

_OBJECTS: dict[str, tuple[Any, str]] = {}
_COUNTER = itertools.count(1)


def register(obj: Any, name: str) -> str:
    """Register an in-memory object; returns its token, a source text the engine reads like a path
    (``TOKEN`` or ``TOKEN:COLUMN``). ``name`` is what messages call it. Release with ``release``."""
    data, kind = as_data(obj, name)
    token = f"{PREFIX}{next(_COUNTER)}>"
    _OBJECTS[token] = (data, f"{name} ({kind})", _one_column(obj))
    return token


def release(token: str) -> None:
    _OBJECTS.pop(token, None)


def known(text: str) -> bool:
    return text.partition(">")[0] + ">" in _OBJECTS


def display(token: str) -> str:
    entry = _OBJECTS.get(token)
    return entry[1] if entry else token


def parse(text: str) -> Source:
    """The Source of a token text (``TOKEN`` or ``TOKEN:COLUMN``)."""
    token, _, column = text.partition(">")
    token += ">"
    column = column[1:] if column.startswith(":") else None
    return Source(text, token, column or None, FORMAT, label=display(token))


def _token_source(text: str) -> Source | None:
    return parse(text) if known(text) else None


add_token(PREFIX, _token_source)  # parse_source reads registered tokens as sources


def is_memory(source: Source) -> bool:
    return source.fmt == FORMAT


def _one_column(obj: Any) -> bool:
    """A Series or an Array: its one column is the input whatever its name (``id``, ``key`` ...)."""
    return _module(obj) in ("pandas", "polars", "pyarrow") and type(obj).__name__ in (
        "Series", "Array", "ChunkedArray"
    ) or (_module(obj) == "pyarrow" and type(obj).__name__.endswith("Array"))


def _module(obj: Any) -> str:
    return type(obj).__module__.split(".", 1)[0]


def as_data(obj: Any, name: str) -> tuple[Any, str]:
    """(a NumPy array, a pyarrow Table or a RecordBatchReader, a short description of what was given)."""
    if isinstance(obj, np.ndarray):
        return _checked_array(obj, name), f"numpy array {obj.dtype} {_shape_str(obj.shape)}"
    mod = _module(obj)
    if mod == "pyarrow":
        return _from_arrow(obj, name), f"pyarrow {type(obj).__name__}"
    if mod == "pandas":
        return _from_pandas(obj, name), f"pandas {type(obj).__name__}"
    if mod == "polars":
        kind = type(obj).__name__
        if kind == "LazyFrame":
            obj = obj.collect()
        return _from_arrow(obj.to_arrow(), name), f"polars {kind}"
    if hasattr(obj, "__arrow_c_stream__") or hasattr(obj, "__arrow_c_array__"):
        import pyarrow as pa

        try:
            if hasattr(obj, "__arrow_c_stream__"):
                data = pa.RecordBatchReader.from_stream(obj)
            else:
                data = pa.array(obj)
        except Exception as exc:  # noqa: BLE001
            raise DataError(
                f"{name}: the object's Arrow interface could not be read ({short_reason(exc)}). "
                "Expected Arrow data (a stream of record batches or an array)."
            ) from None
        return _from_arrow(data, name), f"{type(obj).__name__} via the Arrow C interface"
    if hasattr(obj, "__dlpack__") or hasattr(obj, "__array__"):
        return _from_array_like(obj, name), f"{mod}.{type(obj).__name__}"
    if isinstance(obj, (list, tuple)):
        try:
            arr = np.asarray(obj)
        except ValueError as exc:
            raise DataError(
                f"{name}: a list that is not rectangular ({short_reason(exc)}). Expected one value, or one "
                "equal-length list of values, per sample; give variable-length rows as a pyarrow list array."
            ) from None
        if arr.dtype.kind not in "biuf":
            raise DataError(f"{name}: a list of {arr.dtype} values; expected numbers.")
        return _checked_array(arr, name), f"list {_shape_str(arr.shape)}"
    raise DataError(
        f"{name}: cannot read an object of type {type(obj).__module__}.{type(obj).__qualname__}. Expected a "
        "NumPy array, a list, a pandas or polars Series/DataFrame, a pyarrow Array/Table/RecordBatchReader, "
        "an object with __arrow_c_stream__, __array__ or __dlpack__, or a source string such as 'preds.parquet:col'."
    )


def _checked_array(arr: np.ndarray, name: str) -> np.ndarray:
    if arr.ndim == 0:
        raise DataError(
            f"{name}: a single number (0-d array); expected one row per sample (an array of shape (N,) or (N, K))."
        )
    if arr.dtype.names:
        raise DataError(f"{name}: a structured array; pass one field at a time (arr['name']).")
    if arr.dtype.kind not in "biuf":
        raise DataError(f"{name}: an array of dtype {arr.dtype}; expected numbers.")
    return arr


def _from_array_like(obj: Any, name: str) -> np.ndarray:
    """A CPU tensor (torch, JAX, CuPy on host ...) as NumPy, zero-copy through DLPack when offered."""
    errors = []
    if hasattr(obj, "__dlpack__"):
        try:
            return _checked_array(np.from_dlpack(obj), name)
        except DataError:
            raise
        except Exception as exc:  # noqa: BLE001 - try __array__ next
            errors.append(short_reason(exc))
    if hasattr(obj, "__array__"):
        try:
            return _checked_array(np.asarray(obj), name)
        except DataError:
            raise
        except Exception as exc:  # noqa: BLE001
            errors.append(short_reason(exc))
    raise DataError(
        f"{name}: could not read the {type(obj).__name__} as an array ({'; '.join(errors)}). Expected a tensor "
        "in host memory that does not require grad (for torch: tensor.detach().cpu())."
    )


def _from_pandas(obj: Any, name: str):
    import pyarrow as pa

    kind = type(obj).__name__
    try:
        if kind == "Series":
            if obj.dtype.kind in "biuf":
                return _checked_array(obj.to_numpy(copy=False), name)
            return pa.table({str(obj.name) if obj.name is not None else name: pa.Array.from_pandas(obj)})
        if kind == "DataFrame":
            frame = obj.rename(columns=str) if not all(isinstance(c, str) for c in obj.columns) else obj
            return pa.Table.from_pandas(frame, preserve_index=False)
    except DataError:
        raise
    except Exception as exc:  # noqa: BLE001
        raise DataError(f"{name}: could not read the pandas {kind} ({short_reason(exc)}).") from None
    return _from_array_like(obj, name)


def _from_arrow(obj: Any, name: str):
    import pyarrow as pa

    if isinstance(obj, pa.Table):
        return obj
    if isinstance(obj, pa.RecordBatch):
        return pa.Table.from_batches([obj])
    if isinstance(obj, pa.RecordBatchReader):
        return obj
    if isinstance(obj, (pa.Array, pa.ChunkedArray)):
        if pa.types.is_struct(obj.type):
            chunks = obj.chunks if isinstance(obj, pa.ChunkedArray) else [obj]
            return pa.Table.from_batches([pa.RecordBatch.from_struct_array(c) for c in chunks])
        return pa.table({name: obj})
    raise DataError(
        f"{name}: cannot read a pyarrow {type(obj).__name__}; expected an Array, Table or RecordBatchReader."
    )


def open_memory(source: Source) -> Reader:
    try:
        data, _, whole = _OBJECTS[source.path]
    except KeyError:
        raise InputDataError(
            f"{source.display}: the in-memory input is no longer available (released).",
            file=source.display,
        ) from None
    if isinstance(data, np.ndarray):
        return ArrayReader(source, data)
    return TableReader(source, data, whole)


class ArrayReader(Reader):
    """A plain array: the whole array is one input; chunks are row slices (views, no copy)."""

    kind = "memory"

    def __init__(self, source: Source, arr: np.ndarray):
        super().__init__(source)
        self.arr = arr

    def available(self) -> list[str]:
        return []

    def resolve(self) -> None:
        for req in self.requests.values():
            if req.expr is not None or req.keylike:
                raise InputDataError(
                    f"{self.display} is a plain array of shape {_shape_str(self.arr.shape)} with no named "
                    f"columns, so it has no column {req.expr!r}. Pass a table (a DataFrame, a pyarrow Table) "
                    "to select columns by name.",
                    file=self.display, column=req.expr,
                )
            req.names = ["<array>"]
        if len(self.requests) > 1:
            raise InputDataError(f"{self.display} is a plain array; it can serve only one input.", file=self.display)

    def total_rows(self) -> int | None:
        return len(self.arr)

    def row_bytes(self) -> int | None:
        return max(1, self.arr[:1].nbytes) if len(self.arr) else None

    def batches(self, rows: int):
        (req,) = self.requests.values()
        n = len(self.arr)
        while self.rows_read < n:
            row0 = self.rows_read
            block = self.arr[row0 : row0 + rows]
            self.rows_read += len(block)
            yield {req.key: block}


class TableReader(ArrowReader):
    """A pyarrow Table (chunks are zero-copy slices) or a RecordBatchReader (read once)."""

    kind = "memory"

    def __init__(self, source: Source, data, whole: bool = False):
        super().__init__(source)
        self.data = data
        self.schema = data.schema
        self.whole = whole  # one column given on its own (a Series, an Array): it is the input

    def resolve(self) -> None:
        if self.whole:
            for req in self.requests.values():
                if req.expr is None and not req.keylike:
                    req.names = list(self.schema.names)
            if all(r.names for r in self.requests.values()):
                return
        super().resolve()

    def total_rows(self) -> int | None:
        import pyarrow as pa

        return self.data.num_rows if isinstance(self.data, pa.Table) else None

    def batches(self, rows: int):
        import pyarrow as pa

        cols = self.needed_columns()
        if isinstance(self.data, pa.Table):
            raw = self.data.select(cols).to_batches(max_chunksize=rows)
        else:
            raw = (b.select(cols) for b in self.data)
        return self._converted(
            raw,
            rows,
            lambda exc, row0: f"{self.display}: could not read the data after row {row0} ({short_reason(exc)}).",
        )
