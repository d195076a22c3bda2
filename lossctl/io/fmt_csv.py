"""CSV and TSV: pyarrow's streaming CSV reader (files, stdin and remote streams)."""

from __future__ import annotations

import csv
import functools
import io
import re

from lossctl.errors import DataError, short_reason
from lossctl.io.arrow import ArrowReader, _pa, _PyRaw
from lossctl.io.parsing import Source
from lossctl.io.problems import InputDataError


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
            raise InputDataError(
                f"{self.display} is empty. Expected a header line and one row per sample.",
                file=self.display,
            )
        try:
            # Parsed as a stream, so that any line ending (\n, \r\n, a lone \r) ends a record.
            # NUL bytes are blanked first: Python before 3.11 refuses them, and these lines only
            # give the header and which columns look numeric (pyarrow reads the data itself).
            text = (first + "\n" + (second or "")).replace("\x00", " ")
            head = list(csv.reader(io.StringIO(text, newline=""), delimiter=self.delimiter))
        except csv.Error as exc:
            raise InputDataError(
                f"{self.display}: cannot parse the first lines as CSV ({exc}). "
                "Expected a header line of column names, then one row per sample.",
                file=self.display,
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
                    raise InputDataError(
                        f"{self.display}: the header names column {name!r} more than once (fields "
                        f"{first + 1} and {i + 1}). Expected each column name once.",
                        file=self.display, column=name,
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
                raise InputDataError(f"{self.display}: cannot read ({short_reason(exc)}).", file=self.display) from None
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
    """The cells pyarrow's CSV reader reads as missing (null, then NaN: the nan policy
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
                raise InputDataError(
                    f"{display}: the first line (the header) is longer than {HEAD_LIMIT >> 20} MiB. "
                    "Expected a header line of column names ending in a newline.",
                    file=display,
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


def open_csv(source: Source, opts, stream=None) -> CsvReader:
    """CSV or TSV (``source.fmt``) from a file or a forward-only byte stream."""
    return CsvReader(source, delimiter=opts.delimiter, header=opts.header, stream=stream)
