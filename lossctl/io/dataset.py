"""Many files as one input: a directory or a glob of shards, read with pyarrow's dataset API.

A directory is scanned recursively for files of one format; ``key=value`` directory
names (hive-style partitions, e.g. ``split=val/lang=de/part-0.parquet``) become columns,
so they can serve as ``--group-by`` keys. Files are read in sorted path order, one
fragment and two batches ahead at a time, so memory stays bounded by the batch size.
"""

from __future__ import annotations

import glob
import os

from lossctl.errors import DataError
from lossctl.io.sources import ArrowReader, Source, _checked_schema, _short

_DATASET_FORMATS = {
    ".parquet": "parquet",
    ".pq": "parquet",
    ".arrow": "ipc",
    ".feather": "ipc",
    ".ipc": "ipc",
    ".csv": "csv",
}


def is_glob(path: str) -> bool:
    return any(ch in path for ch in "*?[")


def shard_files(path: str) -> list[str]:
    """The files of a directory (recursively) or of a glob, sorted; hidden files skipped."""
    if os.path.isdir(path):
        out = []
        for root, dirs, files in os.walk(path):
            dirs[:] = sorted(d for d in dirs if not d.startswith((".", "_")))
            out.extend(os.path.join(root, f) for f in files if not f.startswith((".", "_")))
        return sorted(out)
    return sorted(p for p in glob.glob(path, recursive=True) if os.path.isfile(p))


def dataset_format(files: list[str], display: str) -> str:
    kinds = {_DATASET_FORMATS.get(os.path.splitext(f.lower())[1]) for f in files}
    kinds.discard(None)
    if not kinds:
        raise DataError(
            f"{display}: no Parquet, Arrow or CSV files found (a directory or glob of shards is read as one input)."
        )
    if len(kinds) > 1:
        raise DataError(f"{display}: holds files of several formats ({', '.join(sorted(kinds))}); expected one format.")
    return kinds.pop()


class DatasetReader(ArrowReader):
    """A directory or glob of shards as one table (hive partition keys as columns)."""

    def __init__(self, source: Source):
        super().__init__(source)
        import pyarrow.dataset as ds

        files = shard_files(source.path)
        fmt = dataset_format(files, self.display)
        files = [f for f in files if _DATASET_FORMATS.get(os.path.splitext(f.lower())[1]) == fmt]
        base = source.path if os.path.isdir(source.path) else os.path.commonpath([os.path.dirname(f) for f in files])
        self.files = files
        try:
            self.ds = ds.dataset(
                files,
                format=fmt,
                partitioning=ds.partitioning(flavor="hive"),
                partition_base_dir=base,
            )
            self.schema = _checked_schema(self.ds.schema)
        except Exception as exc:  # noqa: BLE001 - pyarrow's errors name the file
            raise DataError(f"{self.display}: cannot read the shards as one dataset ({_short(exc)}).") from None

    def total_rows(self) -> int | None:
        try:
            return self.ds.count_rows()
        except Exception as exc:  # noqa: BLE001
            raise DataError(f"{self.display}: cannot count the rows of the shards ({_short(exc)}).") from None

    def batches(self, rows: int):
        raw = self.ds.to_batches(
            columns=self.needed_columns(), batch_size=rows, batch_readahead=2, fragment_readahead=1, use_threads=True
        )
        return self._converted(
            (b for b in raw if b.num_rows),
            rows,
            lambda exc, row0: f"{self.display}: could not read the shards after row {row0} ({_short(exc)}).",
        )
