"""Parquet: record batches of ``ParquetFile.iter_batches`` through a buffered file."""

from __future__ import annotations

from lossctl.errors import short_reason
from lossctl.io.arrow import ArrowReader, _checked_schema
from lossctl.io.parsing import Source
from lossctl.io.problems import InputDataError


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
            raise InputDataError(
                f"{self.display}: not a readable Parquet file ({short_reason(exc)}). "
                "Expected a complete Parquet file; it may be truncated or corrupt.",
                file=self.display,
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


def open_parquet(source: Source, opts) -> ParquetReader:
    return ParquetReader(source)
