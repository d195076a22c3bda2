"""Output sinks: per-sample rows (CSV, TSV, Parquet, NPY, JSONL) and atomic files.

Files are written to a temporary file next to the target and renamed into
place only when the run succeeds, so an interrupted or failed run never leaves
a half-written output. ``-`` writes to stdout.
"""

from __future__ import annotations

import errno
import functools
import json
import math
import os
import shutil
import sys
import tempfile

import numpy as np

from lossctl.errors import DataError, UsageError, opt
from lossctl.io import formats
from lossctl.io.outputs import AtomicFile  # noqa: F401 - where the sinks stage their files

SINK_FORMATS = formats.SINK_EXTENSIONS  # extension -> format of per-sample rows (from the registry)


def sink_format(path: str, option: str, default: str = "csv") -> str:
    if path == "-":
        return default
    ext = os.path.splitext(path.lower())[1]
    if not ext and _is_device_or_fifo(path):  # /dev/stdout, a named pipe: rows as on stdout
        return default
    if ext not in SINK_FORMATS:
        raise UsageError(
            f"{option} {path}: cannot tell the output format from the extension {ext or '(none)'!r}; "
            f"use one of {', '.join(sorted(SINK_FORMATS))}."
        )
    return SINK_FORMATS[ext]


def _is_device_or_fifo(path: str) -> bool:
    import stat

    from lossctl.io.outputs import fd_alias

    if fd_alias(path) is not None:
        return True
    try:
        mode = os.stat(path).st_mode
    except OSError:
        return False
    return stat.S_ISCHR(mode) or stat.S_ISFIFO(mode)


def _write_errors_are_data_errors(method):
    """An output that cannot be written (disk full, file too large, I/O error) is a data error
    naming the option and the path; a closed stdout pipe (BrokenPipeError) passes through."""

    @functools.wraps(method)
    def wrapper(self, *args, **kwargs):
        try:
            return method(self, *args, **kwargs)
        except BrokenPipeError:
            raise
        except OSError as exc:
            if self.path == "-" and exc.errno == errno.EPIPE:
                raise BrokenPipeError(*exc.args) from None
            reason = exc.strerror or str(exc).strip() or type(exc).__name__
            where = "stdout" if self.path == "-" else self.path
            raise DataError(
                f"{self.option} {where}: writing failed ({reason}). The partial output was removed; "
                "expected room for the whole output: free space or choose another path."
            ) from None

    return wrapper


_ROW_WRITERS = ("csv", "tsv", "parquet", "npy", "jsonl")  # what RowSink.write can write


class RowSink:
    """Streams rows (a dict of equal-length columns per call) to one file or stdout."""

    def __init__(self, path: str, fmt: str, option: str = opt("per_sample"), csv_safe: bool = False):
        if fmt not in _ROW_WRITERS:  # a registered format without a row writer: never write nothing
            raise UsageError(
                f"{option} {path}: lossctl cannot write rows as {fmt}; use one of {', '.join(_ROW_WRITERS)}."
            )
        self.path = path
        self.fmt = fmt
        self.option = option
        self.csv_safe = csv_safe and fmt in ("csv", "tsv")
        self.rows = 0
        self._writer = None
        self._atomic = None if path == "-" else AtomicFile(path, option)
        self._fh = sys.stdout.buffer if path == "-" else self._atomic.fh
        self._npy_raw = None

    @_write_errors_are_data_errors
    def write(self, columns: dict[str, np.ndarray]) -> None:
        n = len(next(iter(columns.values())))
        if self.fmt in ("csv", "tsv", "parquet"):
            self._write_arrow(columns)
        elif self.fmt == "jsonl":
            self._write_jsonl(columns, n)
        elif self.fmt == "npy":
            self._write_npy(columns)
        self.rows += n

    def _table(self, columns):
        import pyarrow as pa

        return pa.table({name: to_arrow(col) for name, col in columns.items()})

    def _write_arrow(self, columns) -> None:
        table = self._table(_spreadsheet_safe(columns) if self.csv_safe else columns)
        if self._writer is None:
            if self.fmt == "parquet":
                import pyarrow.parquet as pq

                self._writer = pq.ParquetWriter(self._fh, table.schema)
            else:
                import pyarrow.csv as pcsv

                # Quote only when a text column (ids) is present; numbers and statuses never need it.
                texty = any(str(f.type) in ("string", "large_string") and f.name != "status" for f in table.schema)
                delim = "\t" if self.fmt == "tsv" else ","
                opts = pcsv.WriteOptions(
                    delimiter=delim, quoting_style="needed" if texty else "none", include_header=False
                )
                self._fh.write((delim.join(table.schema.names) + "\n").encode())
                self._writer = pcsv.CSVWriter(self._fh, table.schema, write_options=opts)
        self._writer.write_table(table)

    def _write_jsonl(self, columns, n) -> None:
        names = list(columns)
        cols = [_json_values(columns[k]) for k in names]
        keys = [json.dumps(k) for k in names]
        lines = []
        for i in range(n):
            lines.append("{" + ",".join(f"{k}:{c[i]}" for k, c in zip(keys, cols)) + "}\n")
        self._fh.write("".join(lines).encode())

    def _write_npy(self, columns) -> None:
        if self._npy_raw is None:
            self._npy_raw = tempfile.TemporaryFile()
        loss = np.ascontiguousarray(columns["loss"], dtype=np.float64)
        self._npy_raw.write(loss.tobytes())

    @_write_errors_are_data_errors
    def close(self) -> None:
        """Finish the output (the rename happens in ``commit``)."""
        if self._writer is not None:
            self._writer.close()
            self._writer = None
        if self.fmt == "npy":
            _write_npy(self._fh, (self.rows,), self._npy_raw)
        self._fh.flush()

    @_write_errors_are_data_errors
    def commit(self) -> None:
        self.close()
        if self._atomic is not None:
            self._atomic.commit()

    def abort(self) -> None:
        try:
            if self._writer is not None:
                self._writer.close()
        except Exception:  # noqa: BLE001 - the file is discarded anyway
            pass
        if self._npy_raw is not None:
            self._npy_raw.close()
        if self._atomic is not None:
            self._atomic.abort()


# ---------------------------------------------------------------------------
# NumPy -> Arrow through buffers: pa.array imports pandas whenever it is installed (0.3 s per
# run), and a Ctrl-C that lands during that import is swallowed (the run goes on, exit 0).
# ---------------------------------------------------------------------------


def to_arrow(values):
    """A 1-D column as an Arrow array: numbers (float NaN -> null), booleans, or text/ints/None
    held in an object array (None -> null)."""
    import pyarrow as pa

    if isinstance(values, np.ma.MaskedArray):  # integers with missing entries (e.g. pred_class of a dropped row)
        data = np.ascontiguousarray(values.data)
        valid = ~np.ma.getmaskarray(values)
        return _primitive(pa.from_numpy_dtype(data.dtype), data, None if valid.all() else valid)
    col = np.asarray(values)
    n = len(col)
    if col.dtype == object or col.dtype.kind in "US":
        items = col.tolist()
        if items.count(None):
            valid = np.fromiter((v is not None for v in items), dtype=bool, count=n)
            present = [v for v in items if v is not None]
        else:
            valid, present = None, items
        if present and all(isinstance(v, (int, np.integer)) and not isinstance(v, (bool, np.bool_)) for v in present):
            ints = np.array([0 if v is None else v for v in items], dtype=np.int64)
            return _primitive(pa.int64(), ints, valid)
        if present and all(isinstance(v, (float, np.floating)) for v in present):
            floats = np.array([np.nan if v is None else v for v in items], dtype=np.float64)
            return to_arrow(floats) if valid is None else _primitive(pa.float64(), floats, valid)
        if valid is not None or not all(isinstance(v, str) for v in items):
            items = ["" if v is None else str(v) for v in items]
        return _strings(items, valid)
    if col.dtype.kind == "f":
        col = np.ascontiguousarray(col)
        nan = np.isnan(col)
        return _primitive(pa.from_numpy_dtype(col.dtype), col, ~nan if nan.any() else None)
    if col.dtype.kind == "b":
        data = pa.py_buffer(np.packbits(col, bitorder="little"))
        return pa.Array.from_buffers(pa.bool_(), n, [None, data])
    if col.dtype.kind in "iu":
        return _primitive(pa.from_numpy_dtype(col.dtype), np.ascontiguousarray(col), None)
    raise TypeError(f"cannot write a column of dtype {col.dtype}")


def _bitmap(valid: np.ndarray | None):
    import pyarrow as pa

    return None if valid is None else pa.py_buffer(np.packbits(valid, bitorder="little"))


def _primitive(typ, values: np.ndarray, valid: np.ndarray | None):
    import pyarrow as pa

    nulls = 0 if valid is None else int(len(valid) - valid.sum())
    return pa.Array.from_buffers(typ, len(values), [_bitmap(valid), pa.py_buffer(values)], null_count=nulls)


def _strings(items: list[str], valid: np.ndarray | None):
    import pyarrow as pa

    joined = "".join(items)
    if joined.isascii():  # one character, one byte: lengths in characters are byte lengths
        data = joined.encode("ascii")
        lengths = np.fromiter(map(len, items), dtype=np.int64, count=len(items))
    else:
        encoded = [t.encode("utf-8") for t in items]
        data = b"".join(encoded)
        lengths = np.fromiter(map(len, encoded), dtype=np.int64, count=len(encoded))
    offsets = np.zeros(len(items) + 1, dtype=np.int64)
    np.cumsum(lengths, out=offsets[1:])
    large = offsets[-1] >= 2**31 - 1
    typ = pa.large_string() if large else pa.string()
    offsets = offsets if large else offsets.astype(np.int32)
    nulls = 0 if valid is None else int(len(valid) - valid.sum())
    buffers = [_bitmap(valid), pa.py_buffer(offsets), pa.py_buffer(data)]
    return pa.Array.from_buffers(typ, len(items), buffers, null_count=nulls)


def _float_lists(rows: list):
    """A list<float64> array from Python lists (None -> a null list); NaN stays a value."""
    import pyarrow as pa

    n = len(rows)
    valid = np.array([r is not None for r in rows], dtype=bool)
    lengths = np.array([0 if r is None else len(r) for r in rows], dtype=np.int64)
    offsets = np.zeros(n + 1, dtype=np.int64)
    np.cumsum(lengths, out=offsets[1:])
    flat = np.array([v for r in rows if r is not None for v in r], dtype=np.float64)
    values = pa.Array.from_buffers(pa.float64(), len(flat), [None, pa.py_buffer(flat)])
    large = offsets[-1] >= 2**31 - 1
    typ = pa.large_list(pa.float64()) if large else pa.list_(pa.float64())
    offsets = offsets if large else offsets.astype(np.int32)
    nulls = int(n - valid.sum())
    return pa.Array.from_buffers(
        typ, n, [_bitmap(valid if nulls else None), pa.py_buffer(offsets)], null_count=nulls, children=[values]
    )


def _spreadsheet_safe(columns: dict) -> dict:
    """The csv_safe option: text cells a spreadsheet would run as a formula get a leading ``'``
    (numbers, and text that is a plain number such as ``-1.5``, are left as they are)."""
    from lossctl.literal import spreadsheet_safe

    out = {}
    for name, col in columns.items():
        if not isinstance(col, np.ma.MaskedArray) and np.asarray(col).dtype.kind in "OU":
            items = [spreadsheet_safe(v) if isinstance(v, str) else v for v in np.asarray(col).tolist()]
            col = np.empty(len(items), dtype=object)
            col[:] = items
        out[name] = col
    return out


def _object_array(ids) -> np.ndarray:
    out = np.empty(len(ids), dtype=object)
    out[:] = list(ids.tolist()) if hasattr(ids, "tolist") else list(ids)
    return out


def _write_npy(fh, shape: tuple, raw) -> None:
    """An NPY file of float64 ``shape`` whose data were spooled to ``raw`` (the row count is
    known only at the end, so the header is written last, before the data)."""
    header = {"descr": np.lib.format.dtype_to_descr(np.dtype(np.float64)), "fortran_order": False, "shape": shape}
    np.lib.format.write_array_header_1_0(fh, header)
    if raw is not None:
        raw.seek(0)
        shutil.copyfileobj(raw, fh, 1 << 20)
        raw.close()


def _json_values(col: np.ndarray) -> list[str]:
    if isinstance(col, np.ma.MaskedArray):
        mask = np.ma.getmaskarray(col)
        return ["null" if m else str(int(v)) for v, m in zip(col.data.tolist(), mask.tolist())]
    col = np.asarray(col)
    if col.dtype.kind == "f":
        return [json_number(v) for v in col.tolist()]
    if col.dtype.kind in "iub":
        return [str(int(v)) for v in col.tolist()]
    return [json.dumps(v if isinstance(v, (str, int, float)) or v is None else str(v)) for v in col.tolist()]


def json_number(v: float) -> str:
    """A float as JSON: shortest round-trip repr; NaN as null, ±inf as strings."""
    if math.isfinite(v):
        return repr(float(v))
    if math.isnan(v):
        return "null"
    return '"inf"' if v > 0 else '"-inf"'


GRAD_FORMATS = formats.GRAD_EXTENSIONS  # extension -> format of gradients (from the registry)


class GradSink:
    """Gradients of each per-sample loss w.r.t. the prediction, one row per prediction row.

    NPY holds an array (N, *row shape) with NaN rows where no loss was computed; Parquet
    and JSONL hold one list per row (null where none), and allow ragged rows; CSV has
    columns grad_0, grad_1, ... (fixed row shapes).
    """

    def __init__(self, path: str, csv_safe: bool = False):
        ext = os.path.splitext(path.lower())[1]
        if path == "-" or ext not in GRAD_FORMATS:
            raise UsageError(
                f"{opt('grad')} {path}: give a file ending in {', '.join(sorted(GRAD_FORMATS))} "
                "(gradients are not written to stdout)."
            )
        self.path = path
        self.option = opt("grad")
        self.fmt = GRAD_FORMATS[ext]
        if self.fmt not in ("npy", "parquet", "jsonl", "csv"):  # a registered format without a gradient writer
            raise UsageError(f"{self.option} {path}: lossctl cannot write gradients as {self.fmt}.")
        self.csv_safe = csv_safe
        self.rows = 0
        self.row_shape: tuple | None = None
        self._atomic = AtomicFile(path, self.option)
        self._raw = tempfile.TemporaryFile() if self.fmt == "npy" else None
        self._writer = None

    @_write_errors_are_data_errors
    def write(self, grad, used_idx: np.ndarray, prim_rows: np.ndarray, ids) -> None:
        n_all = len(prim_rows)
        ragged = getattr(grad, "is_ragged", False)
        if ragged and self.fmt in ("npy", "csv"):
            # Rows of one length (an (N, T) input) are an array like any other.
            lengths = np.diff(grad.offsets)
            if len(lengths) and (lengths == lengths[0]).all():
                values = np.asarray(grad.values)
                grad, ragged = values.reshape((len(lengths), int(lengths[0])) + values.shape[1:]), False
        if ragged and self.fmt in ("npy", "csv"):
            raise UsageError(
                f"{self.option} {self.path}: the gradients have a different length per row; write them to .parquet or .jsonl."
            )
        if ragged:
            rows = [None] * n_all
            for k, i in enumerate(used_idx.tolist()):
                # (ragged logits: the row's T_n x V gradient, flattened row-major)
                rows[i] = grad.row(k).reshape(-1).tolist()
        else:
            g = np.asarray(grad, dtype=np.float64) if grad is not None else np.empty((0,))
            shape = tuple(g.shape[1:]) if g.ndim and len(g) else None
            if self.row_shape is None and shape is not None:
                self.row_shape = shape
            elif shape is not None and shape != self.row_shape:
                raise DataError(f"{self.option} {self.path}: gradient rows change shape from {self.row_shape} to {shape}.")
            full = np.full((n_all,) + (self.row_shape or ()), np.nan)
            if len(used_idx):
                full[used_idx] = g
            if self.fmt == "npy":
                self._raw.write(np.ascontiguousarray(full).tobytes())
                self.rows += n_all
                return
            flat = full.reshape(n_all, -1)
            if self.fmt == "csv":
                self._write_csv(prim_rows, ids, flat)
                self.rows += n_all
                return
            used = np.zeros(n_all, dtype=bool)
            used[used_idx] = True
            rows = [flat[i].tolist() if used[i] else None for i in range(n_all)]
        if self.fmt == "parquet":
            import pyarrow as pa
            import pyarrow.parquet as pq

            cols = {"row": to_arrow(prim_rows.astype(np.int64))}
            if ids is not None:
                cols["id"] = to_arrow(_object_array(ids))
            cols["grad"] = _float_lists(rows)
            table = pa.table(cols)
            if self._writer is None:
                self._writer = pq.ParquetWriter(self._atomic.fh, table.schema)
            self._writer.write_table(table)
        else:
            lines = []
            for r, row in zip(prim_rows.tolist(), rows):
                body = "null" if row is None else "[" + ",".join(json_number(v) for v in row) + "]"
                lines.append(f'{{"row":{r},"grad":{body}}}\n')
            self._atomic.fh.write("".join(lines).encode())
        self.rows += n_all

    def _write_csv(self, prim_rows, ids, flat) -> None:
        import pyarrow as pa
        import pyarrow.csv as pcsv

        cols = {"row": to_arrow(prim_rows.astype(np.int64))}
        if ids is not None:
            id_col = {"id": _object_array(ids)}
            cols["id"] = to_arrow((_spreadsheet_safe(id_col) if self.csv_safe else id_col)["id"])
        for k in range(flat.shape[1]):
            cols[f"grad_{k}"] = to_arrow(flat[:, k])
        table = pa.table(cols)
        if self._writer is None:
            texty = "id" in cols and not pa.types.is_integer(table.schema.field("id").type)
            self._atomic.fh.write((",".join(table.schema.names) + "\n").encode())
            opts = pcsv.WriteOptions(include_header=False, quoting_style="needed" if texty else "none")
            self._writer = pcsv.CSVWriter(self._atomic.fh, table.schema, write_options=opts)
        self._writer.write_table(table)

    @_write_errors_are_data_errors
    def commit(self) -> None:
        if self._writer is not None:
            self._writer.close()
            self._writer = None
        if self.fmt == "npy":
            _write_npy(self._atomic.fh, (self.rows,) + (self.row_shape or ()), self._raw)
        self._atomic.commit()

    def abort(self) -> None:
        try:
            if self._writer is not None:
                self._writer.close()
        except Exception:  # noqa: BLE001 - discarded anyway
            pass
        if self._raw is not None:
            self._raw.close()
        self._atomic.abort()
