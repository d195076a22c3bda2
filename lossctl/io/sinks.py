"""Output sinks: per-sample rows (CSV, TSV, Parquet, NPY, JSONL) and atomic files.

Files are written to a temporary file next to the target and renamed into
place only when the run succeeds, so an interrupted or failed run never leaves
a half-written output. ``-`` writes to stdout.
"""

from __future__ import annotations

import json
import math
import os
import shutil
import sys
import tempfile

import numpy as np

from lossctl.errors import DataError, UsageError

SINK_FORMATS = {
    ".csv": "csv",
    ".tsv": "tsv",
    ".parquet": "parquet",
    ".pq": "parquet",
    ".npy": "npy",
    ".jsonl": "jsonl",
    ".ndjson": "jsonl",
}


def sink_format(path: str, option: str, default: str = "csv") -> str:
    if path == "-":
        return default
    ext = os.path.splitext(path.lower())[1]
    if ext not in SINK_FORMATS:
        raise UsageError(
            f"{option} {path}: cannot tell the output format from the extension {ext or '(none)'!r}; "
            f"use one of {', '.join(sorted(SINK_FORMATS))}."
        )
    return SINK_FORMATS[ext]


class AtomicFile:
    """A temporary file in the target's directory, renamed onto the target by ``commit``."""

    def __init__(self, path: str, option: str):
        self.path = path
        directory = os.path.dirname(os.path.abspath(path)) or "."
        if os.path.isdir(path):
            raise DataError(f"{option} {path}: is a directory; expected a file path.")
        if not os.path.isdir(directory):
            raise DataError(f"{option} {path}: the directory {directory} does not exist.")
        try:
            fd, self.tmp = tempfile.mkstemp(prefix=f".{os.path.basename(path)}.", suffix=".tmp", dir=directory)
        except OSError as exc:
            raise DataError(f"{option} {path}: cannot write there ({exc.strerror}).") from None
        self.fh = os.fdopen(fd, "wb")

    def commit(self) -> None:
        self.fh.close()
        os.replace(self.tmp, self.path)

    def abort(self) -> None:
        try:
            self.fh.close()
        finally:
            try:
                os.unlink(self.tmp)
            except OSError:
                pass


class RowSink:
    """Streams rows (a dict of equal-length columns per call) to one file or stdout."""

    def __init__(self, path: str, fmt: str, option: str = "--per-sample"):
        self.path = path
        self.fmt = fmt
        self.option = option
        self.rows = 0
        self._writer = None
        self._atomic = None if path == "-" else AtomicFile(path, option)
        self._fh = sys.stdout.buffer if path == "-" else self._atomic.fh
        self._npy_raw = None

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

        arrays = {}
        for name, col in columns.items():
            col = np.asarray(col)
            if col.dtype == object:
                arrays[name] = pa.array(col.tolist())
            elif col.dtype.kind == "f":
                arrays[name] = pa.array(col, mask=np.isnan(col))
            else:
                arrays[name] = pa.array(col)
        return pa.table(arrays)

    def _write_arrow(self, columns) -> None:
        table = self._table(columns)
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

    def close(self) -> None:
        """Finish the output (the rename happens in ``commit``)."""
        if self._writer is not None:
            self._writer.close()
            self._writer = None
        if self.fmt == "npy":
            header = {
                "descr": np.lib.format.dtype_to_descr(np.dtype(np.float64)),
                "fortran_order": False,
                "shape": (self.rows,),
            }
            np.lib.format.write_array_header_1_0(self._fh, header)
            if self._npy_raw is not None:
                self._npy_raw.seek(0)
                shutil.copyfileobj(self._npy_raw, self._fh, 1 << 20)
                self._npy_raw.close()
        self._fh.flush()

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


def _json_values(col: np.ndarray) -> list[str]:
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


GRAD_FORMATS = {
    ".npy": "npy",
    ".parquet": "parquet",
    ".pq": "parquet",
    ".jsonl": "jsonl",
    ".ndjson": "jsonl",
    ".csv": "csv",
}


class GradSink:
    """Gradients of each per-sample loss w.r.t. the prediction, one row per prediction row.

    NPY holds an array (N, *row shape) with NaN rows where no loss was computed; Parquet
    and JSONL hold one list per row (null where none), and allow ragged rows; CSV has
    columns grad_0, grad_1, ... (fixed row shapes).
    """

    def __init__(self, path: str):
        ext = os.path.splitext(path.lower())[1]
        if path == "-" or ext not in GRAD_FORMATS:
            raise UsageError(
                f"--grad {path}: give a file ending in {', '.join(sorted(GRAD_FORMATS))} "
                "(gradients are not written to stdout)."
            )
        self.path = path
        self.fmt = GRAD_FORMATS[ext]
        self.rows = 0
        self.row_shape: tuple | None = None
        self._atomic = AtomicFile(path, "--grad")
        self._raw = tempfile.TemporaryFile() if self.fmt == "npy" else None
        self._writer = None

    def write(self, grad, used_idx: np.ndarray, prim_rows: np.ndarray, ids) -> None:
        n_all = len(prim_rows)
        ragged = getattr(grad, "is_ragged", False)
        if ragged and self.fmt in ("npy", "csv"):
            raise UsageError(
                f"--grad {self.path}: the gradients have a different length per row; write them to .parquet or .jsonl."
            )
        if ragged:
            rows = [None] * n_all
            for k, i in enumerate(used_idx.tolist()):
                rows[i] = grad.row(k).tolist()
        else:
            g = np.asarray(grad, dtype=np.float64) if grad is not None else np.empty((0,))
            shape = tuple(g.shape[1:]) if g.ndim and len(g) else None
            if self.row_shape is None and shape is not None:
                self.row_shape = shape
            elif shape is not None and shape != self.row_shape:
                raise DataError(f"--grad {self.path}: gradient rows change shape from {self.row_shape} to {shape}.")
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

            cols = {"row": pa.array(prim_rows.astype(np.int64))}
            if ids is not None:
                cols["id"] = pa.array(list(ids.tolist()) if hasattr(ids, "tolist") else list(ids))
            cols["grad"] = pa.array(rows, type=pa.list_(pa.float64()))
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

        cols = {"row": pa.array(prim_rows.astype(np.int64))}
        if ids is not None:
            cols["id"] = pa.array(list(ids.tolist()) if hasattr(ids, "tolist") else list(ids))
        for k in range(flat.shape[1]):
            cols[f"grad_{k}"] = pa.array(flat[:, k], mask=np.isnan(flat[:, k]))
        table = pa.table(cols)
        if self._writer is None:
            texty = "id" in cols and not pa.types.is_integer(table.schema.field("id").type)
            self._atomic.fh.write((",".join(table.schema.names) + "\n").encode())
            opts = pcsv.WriteOptions(include_header=False, quoting_style="needed" if texty else "none")
            self._writer = pcsv.CSVWriter(self._atomic.fh, table.schema, write_options=opts)
        self._writer.write_table(table)

    def commit(self) -> None:
        if self._writer is not None:
            self._writer.close()
            self._writer = None
        if self.fmt == "npy":
            header = {
                "descr": np.lib.format.dtype_to_descr(np.dtype(np.float64)),
                "fortran_order": False,
                "shape": (self.rows,) + (self.row_shape or ()),
            }
            np.lib.format.write_array_header_1_0(self._atomic.fh, header)
            self._raw.seek(0)
            shutil.copyfileobj(self._raw, self._atomic.fh, 1 << 20)
            self._raw.close()
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
