"""Many files as one input: a directory or a glob of shards, read with pyarrow's dataset API.

A directory is scanned recursively for files of one format; ``key=value`` directory
names (hive-style partitions, e.g. ``split=val/lang=de/part-0.parquet``) become columns,
so they can serve as group_by keys. Files are read in sorted path order, one
fragment and two batches ahead at a time, so memory stays bounded by the batch size.
"""

from __future__ import annotations

import glob
import re
import os
import posixpath

from lossctl.errors import DataError, short_reason
from lossctl.io.problems import InputDataError
from lossctl.io.remote import is_uri, listing, open_input_stream, resolve
from lossctl.io import fmt_jsonl, formats
from lossctl.io.arrow import ArrowReader, _checked_schema
from lossctl.io.fmt_parquet import parquet_file
from lossctl.io.parsing import Source

_DATASET_FORMATS = formats.SHARD_EXTENSIONS  # extension -> pyarrow dataset format (from the registry)


def _shard_ext(path: str) -> str:
    """A shard's format extension, after any compression suffix (part-0.jsonl.gz: .jsonl)."""
    return os.path.splitext(formats.strip_compression(path))[1]


def is_glob(path: str) -> bool:
    return any(ch in path for ch in "*?[")


def shard_files(path: str) -> list[str]:
    """The files of a directory (recursively) or of a glob, sorted; hidden files skipped."""
    if is_uri(path):
        return listing(path)
    if os.path.isdir(path):
        out = []
        for root, dirs, files in os.walk(path):
            dirs[:] = sorted(d for d in dirs if not d.startswith((".", "_")))
            out.extend(os.path.join(root, f) for f in files if not f.startswith((".", "_")))
        return sorted(out)
    return sorted(p for p in glob.glob(path, recursive=True) if os.path.isfile(p))


def dataset_base(path: str, files: list[str]) -> str:
    """The directory under which ``key=value`` directory names are partition keys."""
    if not is_glob(path):
        return path.rstrip("/") if is_uri(path) else path
    if not is_uri(path):
        return os.path.commonpath([os.path.dirname(f) for f in files])
    scheme, _, _ = path.partition("://")  # the common directory of the paths after the scheme
    return f"{scheme}://" + posixpath.commonpath([posixpath.dirname(f.partition("://")[2]) for f in files])


def open_dataset(files: list[str], fmt, base: str, schema=None, partitioning=None):
    """A pyarrow dataset over ``files`` (local paths or URIs of one filesystem)."""
    import pyarrow.dataset as ds

    filesystem = None
    if files and is_uri(files[0]):
        filesystem, _ = resolve(files[0])
        files = [resolve(f)[1] for f in files]
        base = resolve(base)[1] if is_uri(base) else base
    return ds.dataset(
        files,
        format=fmt,
        partitioning=partitioning or ds.partitioning(flavor="hive"),
        partition_base_dir=base,
        filesystem=filesystem,
        schema=schema,
    )


def dataset_format(files: list[str], display: str) -> str:
    kinds = {_DATASET_FORMATS.get(_shard_ext(f)) for f in files}
    kinds.discard(None)
    if not kinds:
        raise InputDataError(
            f"{display}: no Parquet, Arrow or CSV files found, nor JSON Lines (a directory or glob of shards "
            "is read as one input).",
            file=display,
        )
    if len(kinds) > 1:
        raise InputDataError(
            f"{display}: holds files of several formats ({', '.join(sorted(kinds))}); expected one format.",
            file=display,
        )
    return kinds.pop()


def _hive_keys(files: list[str], base: str):
    """The ``key=value`` directory names under ``base`` as Arrow fields: int64 when every value
    is an integer, else string (what pyarrow's hive discovery infers)."""
    import pyarrow as pa

    values: dict[str, list[str]] = {}
    strip = base.rstrip("/") + "/"
    for f in files:
        rel = f[len(strip) :] if f.startswith(strip) else f
        for part in rel.split("/")[:-1]:
            k, eq, v = part.partition("=")
            if eq and k:
                values.setdefault(k, []).append(v)
    return [
        pa.field(k, pa.int64() if all(re.fullmatch(r"-?\d{1,18}", v) for v in vs) else pa.string())
        for k, vs in values.items()
    ]


class DatasetReader(ArrowReader):
    """A directory or glob of shards as one table (hive partition keys as columns)."""

    def __init__(self, source: Source):
        super().__init__(source)
        import pyarrow.dataset as ds

        if source.files is not None:  # one task's part of a dataset (lossctl.cluster)
            files, base = list(source.files), source.base
        else:
            files = shard_files(source.path)
            base = None
        fmt = dataset_format(files, self.display)
        files = [f for f in files if _DATASET_FORMATS.get(_shard_ext(f)) == fmt]
        if base is None:
            base = dataset_base(source.path, files)
        self.files = files
        self.fmt = fmt
        self.base = base
        self._paths = None
        if fmt == "json":
            self._json_leaves(files, base)
            return
        try:
            self.ds = open_dataset(files, fmt, base, source.schema)
            if source.row_groups is not None:
                frags = [
                    f if rgs is None else f.subset(row_group_ids=list(rgs))
                    for f, rgs in zip(self.ds.get_fragments(), source.row_groups)
                ]
                self.ds = ds.FileSystemDataset(frags, self.ds.schema, self.ds.format, self.ds.filesystem)
            self.schema = _checked_schema(self.ds.schema)
        except Exception as exc:  # noqa: BLE001 - pyarrow's errors name the file
            raise InputDataError(
                f"{self.display}: cannot read the shards as one dataset ({short_reason(exc)}).",
                file=self.display,
            ) from None

    def _json_leaves(self, files: list[str], base: str) -> None:
        """JSON Lines shards: the fields of the first shard (nested objects as columns "a.b",
        as for one file) and the hive keys; the dataset is opened to read only the fields used."""
        import pyarrow as pa

        first = files[0]
        try:
            stream = open_input_stream(first, first) if is_uri(first) else pa.input_stream(first, compression="detect")
        except DataError:
            raise
        except Exception as exc:  # noqa: BLE001
            raise InputDataError(
                f"{self.display}: cannot read its shard {first} ({short_reason(exc)}).",
                file=self.display,
            ) from None
        stats: dict = {}
        with stream:
            inferred = fmt_jsonl.infer_jsonl_schema(stream, f"{self.display}: shard {first}", stats)
        self._longest = stats["longest"]
        self._leaves = {name: (path, t) for name, path, t in fmt_jsonl._flat_fields(list(inferred))}
        self._paths = {name: path for name, (path, _) in self._leaves.items()}
        self._keys = _hive_keys(files, base)
        fields = [(name, t) for name, (_, t) in self._leaves.items()]
        fields += [(f.name, f.type) for f in self._keys if f.name not in self._leaves]
        self.schema = pa.schema(fields)

    def _json_batches(self, rows: int):
        """JSON Lines shards one file at a time through pyarrow's streaming JSON reader, parsing
        only the fields used (as one file is read); hive keys are added as constant columns.
        (pyarrow's dataset scanner infers every field of a shard, and fails on fields not used.)"""
        import pyarrow as pa
        import pyarrow.compute as pc
        import pyarrow.json as pjson

        from lossctl import limits
        needed = self.needed_columns()
        floats = {n for r in self.requests.values() if r.dtype == "float" and not r.keylike for n in r.names}
        data = [n for n in needed if n in self._leaves]
        schema = fmt_jsonl.jsonl_read_schema(self._leaves, data, floats)
        key_types = {f.name: f.type for f in self._keys}
        strip = self.base.rstrip("/") + "/"
        want = min(fmt_jsonl.JSONL_LINE_LIMIT, max(fmt_jsonl.JSONL_BLOCK, 4 * self._longest))  # (as for one file)
        block = max(limits.read_block(want), 1 << 16)
        row = self.source.row_start
        for path in self.files:
            rel = path[len(strip) :] if path.startswith(strip) else path
            keys = dict(part.partition("=")[::2] for part in rel.split("/")[:-1] if "=" in part)
            stream = open_input_stream(path, path) if is_uri(path) else pa.input_stream(path, compression="detect")
            try:
                reader = pjson.open_json(
                    stream,
                    read_options=pjson.ReadOptions(block_size=block),
                    parse_options=pjson.ParseOptions(
                        explicit_schema=schema, unexpected_field_behavior="ignore", newlines_in_values=False
                    ),
                )
                for batch in reader:
                    cols = []
                    for name in needed:
                        if name in self._leaves:
                            p = self._paths[name]
                            col = batch.column(batch.schema.get_field_index(p[0]))
                            cols.append(fmt_jsonl._struct_get(col, p[1:], pc))
                        else:
                            value = pa.scalar(keys.get(name), type=pa.string()).cast(key_types[name])
                            cols.append(pa.repeat(value, batch.num_rows))
                    row += batch.num_rows
                    yield pa.RecordBatch.from_arrays(cols, names=needed)
            except pa.ArrowException as exc:
                where = None
                if not is_uri(path):  # the line, found as for one file (rows counted within the shard)
                    try:
                        one = fmt_jsonl.JsonlReader(Source(path, path, None, "jsonl"))
                        one.requests = self.requests
                        one._leaves = self._leaves
                        where = one._locate_error(exc, 0)
                    except DataError as err:
                        where = str(err)
                    except Exception:  # noqa: BLE001
                        where = None
                if where is not None:
                    raise InputDataError(
                        f"{self.display}: shard (from dataset row {row}) {where}",
                        file=self.display, rows=[row],
                    ) from None
                raise InputDataError(
                    f"{self.display}: shard {path} (from row {row}): cannot read it as JSON Lines "
                    f"({short_reason(exc)}). Expected one JSON object per line, with one type per field.",
                    file=self.display, rows=[row],
                ) from None
            finally:
                stream.close()

    def _missing_message(self, part: str, names: list[str], key: str) -> str:
        first = ""
        if self.files and self.source.schema is None:
            first = f" (the columns of its first shard, {self.files[0]})"
        return super()._missing_message(part, names, key).rstrip(".") + f"{first}."

    def total_rows(self) -> int | None:
        if self.source.rows is not None:
            return self.source.rows
        if self.fmt == "json":
            return None  # (counting would parse every shard; the JSON parser gives no row count)  # (pyarrow's count_rows ignores a row-group subset)
        try:
            return self.ds.count_rows()
        except Exception as exc:  # noqa: BLE001
            raise InputDataError(
                f"{self.display}: cannot count the rows of the shards ({short_reason(exc)}).",
                file=self.display,
            ) from None

    def batches(self, rows: int):
        if self.fmt == "parquet":
            raw = self._parquet_batches(rows)
        elif self.fmt == "json":
            raw = self._json_batches(rows)
        else:
            raw = self.ds.to_batches(
                columns=self.needed_columns(),
                batch_size=rows,
                batch_readahead=2,
                fragment_readahead=1,
                use_threads=True,
            )
        return self._converted(
            (b for b in raw if b.num_rows),
            rows,
            lambda exc, row0: f"{self.display}: could not read the shards after row {row0} ({short_reason(exc)}).",
        )

    def _parquet_batches(self, rows: int):
        """Parquet shards one file at a time through a buffered ``ParquetFile`` (as a single file is
        read): the dataset scanner decodes whole row groups ahead and peaks at several times the
        memory. Hive partition keys are added as constant columns."""
        import pyarrow as pa
        import pyarrow.dataset as ds

        needed = self.needed_columns()
        row = self.source.row_start  # global number of the next row (for messages)
        for frag in self.ds.get_fragments():
            keys = ds.get_partition_keys(frag.partition_expression)
            data_cols = [c for c in needed if c not in keys]
            pf = parquet_file(self.ds.filesystem.open_input_file(frag.path))
            self._check_shard(frag.path, pf.schema_arrow, data_cols, row)
            groups = [rg.id for rg in frag.row_groups] if self.source.row_groups is not None else None
            for batch in pf.iter_batches(batch_size=rows, columns=data_cols, row_groups=groups, use_threads=True):
                if not batch.num_rows:
                    continue
                row += batch.num_rows
                if len(data_cols) == len(needed):  # no partition key asked for
                    yield batch
                    continue
                cols = []
                for name in needed:
                    if name in keys:
                        typ = self.ds.schema.field(name).type
                        cols.append(pa.repeat(pa.scalar(keys[name], type=typ), batch.num_rows))
                    else:
                        cols.append(batch.column(batch.schema.get_field_index(name)))
                yield pa.RecordBatch.from_arrays(cols, names=needed)

    def _check_shard(self, path: str, schema, columns: list[str], row: int) -> None:
        """Every used column is in this shard, with the dataset's type: a shard without it would
        otherwise be read with another column in its place (or skipped), never an error."""
        for name in columns:
            want = self.ds.schema.field(name).type
            idx = schema.get_field_index(name)
            if idx < 0:
                raise InputDataError(
                    f"{self.display}: shard {path} (from row {row}) has no column {name!r}, which the "
                    f"other shards have ({want}). Expected every shard to hold the columns used "
                    f"({', '.join(repr(c) for c in columns)}); remove the shard or add the column.",
                    file=self.display, column=name, rows=[row],
                )
            got = schema.field(idx).type
            if got != want:
                raise InputDataError(
                    f"{self.display}: shard {path} (from row {row}), column {name!r} has type {got}, but "
                    f"{want} in the other shards. Expected the same type for a column in every shard; "
                    "rewrite the shard with that type.",
                    file=self.display, column=name, rows=[row],
                )
