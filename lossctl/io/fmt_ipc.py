"""Arrow IPC file or stream, and Feather v2."""

from __future__ import annotations

from lossctl.errors import short_reason
from lossctl.io.arrow import ArrowReader, _checked_schema, _pa
from lossctl.io.parsing import Source
from lossctl.io.problems import InputDataError


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
            raise InputDataError(
                f"{self.display}: not a readable Arrow IPC / Feather file ({short_reason(exc)}). "
                "Expected an Arrow IPC file or stream (Feather v2); it may be truncated or corrupt.",
                file=self.display,
            ) from None

    def total_rows(self) -> int | None:
        if self._file is None:
            return None
        try:
            return sum(self._file.get_batch(i).num_rows for i in range(self._file.num_record_batches))
        except Exception as exc:  # noqa: BLE001 - a corrupt record batch
            raise InputDataError(
                f"{self.display}: could not read Arrow record batches ({short_reason(exc)}). "
                "Expected an intact Arrow IPC file or stream (Feather v2); it may be truncated or corrupt.",
                file=self.display,
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
        raise InputDataError(
            f"{self.display}: the Arrow IPC stream ends without its end-of-stream marker after the last "
            "complete record batch. Expected an intact stream; it is probably truncated (rows would be missing).",
            file=self.display,
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


def open_ipc(source: Source, opts, stream=None) -> IpcReader:
    return IpcReader(source, stream=stream)
