"""Stage 1 of a run: open the sources and align their rows into chunks.

``Sources`` opens one reader per file (inputs, ``id_col``, ``group_by`` and ``counts``
columns, side files), chooses the chunk size, and yields ``Chunk`` objects whose rows are
paired across inputs, by position or joined by the id column. Reading runs ahead on a thread
(``Prefetch``) so that it overlaps computing.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any

import numpy as np

from lossctl.errors import DataError, UsageError, opt
from lossctl.io.sources import GROUP_KEY, ID_KEY, ReadOptions, Reader, Request, Source, open_reader, parse_source
from lossctl.stages.chunks import NAN_PREFIX, Cursor, Prefetch, cat, with_nan_masks
from lossctl.stages.join import joined
from lossctl.registry import LossSpec, Role

from lossctl.options import CHUNK_BYTES  # noqa: E402 - one definition, in the option schema

# Without batch_size, a batched loss (InfoNCE) treats the whole input as one batch,
# up to this many rows; beyond it the batch size must be given.
DEFAULT_BATCH_CAP = 4096

COUNTS_KEY = "__counts__"


@dataclass
class Input:
    """One input role of a run: its source, reader, the columns it reads, its shape so far."""

    role: Role
    source: Source
    reader: Reader | None = None
    request: Request | None = None
    shape: tuple | None = None
    dtype: str | None = None

    @property
    def column_label(self) -> str | None:
        if self.request is None or self.request.names == ["<array>"]:
            return None
        return self.request.label

    @property
    def column_names(self) -> list[str] | None:
        """The columns this role read, in order (None: a plain array)."""
        if self.request is None or self.request.names == ["<array>"]:
            return None
        return list(self.request.names)

    def where(self) -> str:
        col = self.column_label
        return f"{self.source.display}, column {col!r}" if col else self.source.display


@dataclass
class Chunk:
    """Rows of every input, aligned: ``arrays`` by role (and the group, counts and NaN-mask
    columns), each role's row numbers in its file, the primary rows, the rows kept by an id
    join (None: all) and the ids."""

    arrays: dict[str, Any]
    role_rows: dict[str, np.ndarray]
    prim_rows: np.ndarray
    kept: np.ndarray | None
    ids: np.ndarray | None
    groups: Any = None
    counts: Any = None
    nan_masks: dict[str, np.ndarray] | None = None

    @classmethod
    def of(cls, arrays, role_rows, prim_rows, kept, ids) -> "Chunk":
        """Set the group, counts and NaN-mask columns apart from the inputs' arrays."""
        groups = arrays.pop(GROUP_KEY, None)
        counts = arrays.pop(COUNTS_KEY, None)
        role_rows.pop(COUNTS_KEY, None)
        masks = {k[len(NAN_PREFIX) :]: arrays.pop(k) for k in [k for k in arrays if k.startswith(NAN_PREFIX)]}
        return cls(arrays, role_rows, prim_rows, kept, ids, groups, counts, masks)

    @property
    def n_all(self) -> int:
        return len(self.prim_rows)

    @property
    def kept_idx(self) -> np.ndarray:
        return np.arange(self.n_all) if self.kept is None else self.kept


def inputs_of(spec: LossSpec, texts, opts, sources: list[Source | None] | None = None) -> list[Input]:
    """The inputs named by ``texts`` (one per role; None: an optional role left out).
    ``sources``: already parsed (the parts of a dataset one dask task reads)."""
    out = []
    for i, (role, text) in enumerate(zip(spec.inputs, texts)):
        if text is None:
            if not role.optional:
                raise UsageError(f"{spec.name} needs {role.metavar} ({role.shape}).")
            continue
        src = sources[i] if sources is not None else parse_source(text, opts.input_format, role.name)
        out.append(Input(role, src))
    return out


class Sources:
    """Open and align the sources of a run (see the module docstring)."""

    def __init__(self, spec: LossSpec, inputs: list[Input], opts, keylike_roles: set[str] = frozenset()):
        self.spec = spec
        self.inputs = inputs
        self.opts = opts
        self.keylike_roles = set(keylike_roles)  # label roles read as text (class names)
        self.group_label: str | None = None
        self.counts_label: str | None = None
        self.dropped_target = 0  # rows of the other inputs an id join left without a match
        self.prefetchers: list[Prefetch] = []

    # -- opening ------------------------------------------------------------------
    def open(self) -> list[Reader]:
        """One reader per file, every column of the run requested and resolved."""
        readers: dict[str, Reader] = {}
        try:
            return self._open_into(readers)
        except BaseException:
            for r in readers.values():
                r.close()
            raise

    def _open_into(self, readers: dict[str, Reader]) -> list[Reader]:
        stdin_users = [i for i in self.inputs if i.source.is_stdin]
        ropts = ReadOptions(delimiter=self.opts.delimiter, header=self.opts.header)
        for inp in self.inputs:
            key = inp.source.path
            if key not in readers:
                readers[key] = open_reader(inp.source, ropts)
            inp.reader = readers[key]
            inp.request = Request(
                inp.role.name,
                inp.source.column,
                matrix=2 in inp.role.ndim or inp.role.dtype == "label",
                ragged=inp.role.ragged,
                dtype=inp.role.dtype,
                keylike=inp.role.name in self.keylike_roles,
            )
            inp.reader.add(inp.request)
        if len({i.source.fmt for i in stdin_users}) > 1:
            raise UsageError("Several inputs read stdin ('-') with different formats; stdin can be read once.")
        if self.opts.id_col:
            for reader in readers.values():
                reader.add(Request(ID_KEY, self.opts.id_col, matrix=False, keylike=True))
        if self.opts.group_by:
            self._add_group(readers, ropts)
        if self.opts.counts:
            self._add_counts(readers, ropts)
        for reader in readers.values():
            reader.resolve()
        return list(readers.values())

    def _side_source(self, readers: dict[str, Reader], ropts: ReadOptions, text: str, role: str) -> Source:
        """A side file named by group_by or counts (PATH:COL): opened once, joined by id_col."""
        src = parse_source(text, self.opts.input_format, role)
        if src.path not in readers:
            readers[src.path] = open_reader(src, ropts)
            if self.opts.id_col:
                readers[src.path].add(Request(ID_KEY, self.opts.id_col, matrix=False, keylike=True))
        return src

    @staticmethod
    def _listing(readers: dict[str, Reader]) -> str:
        return "; ".join(f"{r.display}: {', '.join(r.available()) or 'no named columns'}" for r in readers.values())

    def _add_group(self, readers: dict[str, Reader], ropts: ReadOptions) -> None:
        """group_by COL (a column of an input) or PATH:COL (a side file, aligned or joined by id)."""
        text = self.opts.group_by
        head, _, col = text.rpartition(":")
        if head and (os.path.exists(head) or head.startswith("<memory:")):  # (memory: the Python API's group_by=array)
            src = self._side_source(readers, ropts, text, "group-by")
            readers[src.path].add(Request(GROUP_KEY, src.column, matrix=False, keylike=True))
            self.group_label = f"{src.display}:{src.column}"
            return
        for reader in readers.values():
            if text in reader.available():
                reader.add(Request(GROUP_KEY, text, matrix=False, keylike=True))
                self.group_label = text
                return
        raise DataError(
            f"{opt('group_by')} {text!r}: no input has a column of that name ({self._listing(readers)}). "
            "Name a column of an input, or a side file as PATH:COLUMN."
        )

    def _add_counts(self, readers: dict[str, Reader], ropts: ReadOptions) -> None:
        """counts COL (a column of an input) or PATH:COL (a side file, aligned by row or id)."""
        text = self.opts.counts
        head = text.rpartition(":")[0]
        if (head and os.path.exists(head)) or os.path.isfile(text):
            src = self._side_source(readers, ropts, text, "counts")
            readers[src.path].add(Request(COUNTS_KEY, src.column, matrix=False))
            self.counts_label = f"{src.display}:{src.column}" if src.column else src.display
            return
        for reader in readers.values():
            if reader.can_select(text):
                reader.add(Request(COUNTS_KEY, text, matrix=False))
                self.counts_label = text
                return
        raise DataError(
            f"{opt('counts')} {text!r}: no input has a column of that name ({self._listing(readers)}). "
            "Name a column of an input, or a side file as PATH:COLUMN (one count per sequence)."
        )

    # -- chunking -----------------------------------------------------------------
    def chunk_rows(self, readers: list[Reader], total: int | None, batch_size: int | None) -> int:
        """Rows per chunk: ``chunk_rows`` or about CHUNK_BYTES of input; for a batched loss a
        multiple of the batch size (without one: the whole input, checked by the compute stage)."""
        if self.opts.chunk_rows:
            rows = max(1, int(self.opts.chunk_rows))
        else:
            widths = [r.row_bytes() for r in readers]
            width = sum(w for w in widths if w) or 64
            rows = int(min(1 << 20, max(1024, CHUNK_BYTES // width)))
        if not self.spec.batched:
            return rows
        # Batched losses: chunks hold whole batches, so per-sample values never depend on chunking.
        if batch_size is None:
            if total is not None and total > DEFAULT_BATCH_CAP:
                raise UsageError(
                    f"{self.spec.name}: the input has {total} rows; without {opt('batch_size')} the whole input is "
                    f"one batch, which is allowed up to {DEFAULT_BATCH_CAP} rows. Give {opt('batch_size')} "
                    "(the batch size the model was trained or evaluated with)."
                )
            return DEFAULT_BATCH_CAP + 1  # one chunk: the whole input
        return batch_size * max(1, rows // batch_size)

    def count_mismatch(self, counts: dict[str, int]) -> str:
        listing = ", ".join(f"{name} has {n} rows" for name, n in counts.items())
        return (
            f"Row counts differ: {listing}. Rows are paired by position, so every input needs the same "
            f"number of rows; to pair rows by a key column instead, use {opt('id_col')} NAME."
        )

    def chunks(self, readers: list[Reader], totals: dict[int, int | None], rows: int):
        """The aligned chunks: joined by id_col when there are several files, else by position."""
        if self.opts.id_col and len(readers) > 1:
            return (Chunk.of(*c) for c in joined(self, readers, rows))
        if len(readers) > 1:
            known = {r.display: totals[id(r)] for r in readers if totals[id(r)] is not None}
            if len(known) == len(readers) and len(set(known.values())) > 1:
                raise DataError(self.count_mismatch(known))
        return (Chunk.of(*c) for c in self._positional(readers, rows))

    def _positional(self, readers: list[Reader], rows: int):
        cursors = [Cursor(self, r, rows) for r in readers]
        start = readers[0].source.row_start  # 0, or a dask task's first global row
        while True:
            got = [c.take(rows) for c in cursors]
            sizes = [len(cat(next(iter(g.values())))) if g else 0 for g in got]
            if all(s == 0 for s in sizes):
                return
            if len(set(sizes)) > 1:
                counts = {}
                for c, s in zip(cursors, sizes):
                    counts[c.reader.display] = start + s + c.drain()
                raise DataError(self.count_mismatch(counts))
            n = sizes[0]
            arrays: dict[str, np.ndarray] = {}
            ids = None
            for g in got:
                for key, parts in g.items():
                    if key == ID_KEY:
                        ids = cat(parts)
                    else:
                        arrays[key] = cat(parts)
            prim = np.arange(start, start + n, dtype=np.int64)
            role_rows = {i.role.name: prim for i in self.inputs}
            yield arrays, role_rows, prim, None, ids
            start += n

    def batches(self, reader: Reader, rows: int):
        """A reader's batches, read ahead on a thread (set LOSSCTL_THREADS=1 to read inline)."""
        raw = (with_nan_masks(b) for b in reader.batches(rows))
        if os.environ.get("LOSSCTL_THREADS") == "1":
            return raw
        it = Prefetch(raw)
        self.prefetchers.append(it)
        return it

    def close(self) -> None:
        """Stop the read-ahead threads."""
        for it in self.prefetchers:
            it.close()
        for it in self.prefetchers:
            it._thread.join(timeout=5)
