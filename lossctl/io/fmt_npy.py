"""NPY (rows read into fresh buffers, never pickles) and NPZ (members streamed from the zip)."""

from __future__ import annotations

import math
import os

import numpy as np

from lossctl.errors import DataError, short_reason
from lossctl.io.parsing import Source, _is_selection
from lossctl.io.problems import InputDataError
from lossctl.io.reader import Reader, _shape_str


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
        raise InputDataError(f"{display}: not a valid NPY array ({short_reason(exc)}).", file=display) from None
    if dtype.hasobject:
        raise InputDataError(
            f"{display}: the array holds Python objects (dtype {dtype}), which NumPy stores as pickles; "
            "lossctl never loads pickles. Save a numeric array instead.",
            file=display,
        )
    if len(shape) == 0:
        raise InputDataError(f"{display}: a 0-d (scalar) array; expected one row per sample.", file=display)
    if 0 in shape[1:]:
        raise InputDataError(
            f"{display}: an array of shape {_shape_str(shape)}, so every row holds no values. "
            "Expected at least one value per row (one per class or feature).",
            file=display,
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
            raise InputDataError(
                f"{display}: the header describes an array of shape {_shape_str(self.shape)} "
                f"({promised if self.nrows else self.row_nbytes} bytes{'' if self.nrows else ' per row'}), "
                "larger than any file can hold. Expected a header that describes the data; the file "
                "may be corrupt or its header edited.",
                file=display,
            )
        if size is not None:
            payload = size - fh.tell()
            if payload < promised:
                raise InputDataError(
                    f"{display}: truncated: the header promises {self.nrows} rows "
                    f"({promised} bytes) but only {payload} bytes follow.",
                    file=display,
                )
            if payload > promised:
                # np.save never writes past the data: more bytes than the header's rows means a
                # header that no longer describes the data (edited or corrupt), so rows would be lost.
                raise InputDataError(
                    f"{display}: the header promises {self.nrows} rows ({promised} bytes) but "
                    f"{payload} bytes follow. Expected exactly the rows of the header; the file "
                    "may be corrupt or its header edited.",
                    file=display,
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
                    raise InputDataError(
                        f"{self.display}: truncated at row {self.pos + got // max(self.row_nbytes, 1)} "
                        f"of {self.nrows}.",
                        file=self.display, rows=[self.pos + got // max(self.row_nbytes, 1)],
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
            raise InputDataError(f"{self.display}: cannot open ({exc.strerror}).", file=self.display) from None
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
                    raise InputDataError(
                        f"{self.display} is a plain array of shape {_shape_str(self.arr.shape)} "
                        f"with no named columns, so it has no {what}. Use {self.display} on its own, "
                        "or save a structured array or an NPZ with named arrays.",
                        file=self.display,
                    )
                req.names = ["<array>"]
            if sum(1 for r in self.requests.values()) > 1:
                raise InputDataError(
                    f"{self.display} is a plain array; it can serve only one input, not "
                    f"{', '.join(r.key.upper() for r in self.requests.values())}.",
                    file=self.display,
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
                raise InputDataError(
                    f"{self.display}: truncated at row {row0} of {arr.nrows} (read {len(data)} bytes of {want}).",
                    file=self.display, rows=[row0],
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
        raise InputDataError(f"{display}: field {name!r} has dtype {a.dtype}; expected numbers.", file=display)
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
            raise InputDataError(
                f"{self.display}: not a readable NPZ archive ({short_reason(exc)}). It may be truncated or corrupt.",
                file=self.display,
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
                raise InputDataError(
                    f"{self.display}: cannot read array {name!r} ({short_reason(exc)}).",
                    file=self.display,
                ) from None
            self.streams[name] = _NpyStream(fh, f"{self.display}:{name}", info.file_size)
        return self.streams[name]

    def resolve(self) -> None:
        super().resolve()
        counts = {}
        for req in self.requests.values():
            st = self._stream(req.names[0])
            counts[req.names[0]] = st.nrows
        if len(set(counts.values())) > 1:
            raise InputDataError(
                f"{self.display}: its arrays have different numbers of rows "
                f"({', '.join(f'{k!r}: {v}' for k, v in counts.items())}); expected one row per sample in each.",
                file=self.display,
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
            raise InputDataError(
                f"{self.display}: could not read after row {self.rows_read} ({short_reason(exc)}). "
                "The archive may be truncated or corrupt.",
                file=self.display, rows=[self.rows_read],
            ) from None

    def close(self) -> None:
        self.zf.close()


def open_npy(source: Source, opts) -> NpyReader:
    return NpyReader(source)


def open_npz(source: Source, opts) -> NpzReader:
    return NpzReader(source)
