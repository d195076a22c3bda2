"""The format registry: one record per file format lossctl reads or writes.

Detection (extension, then magic bytes), opening (``lossctl.io.opening``), which formats a
dataset of shards may hold (``lossctl.io.dataset``), which ones per-sample rows and gradients
are written to (``lossctl.io.sinks``) and the help texts all come from ``REGISTRY``.

Adding a format: write its reader in a module of its own (``lossctl/io/fmt_<name>.py``, an
``open(source, opts, stream=None)`` function returning a ``Reader``), and add one ``Format``
record below. Readers are named by ``"module:function"`` and imported only when a file of that
format is opened (by ``lossctl.io.opening``), so this module is plain data: importing it (for the
CLI's help) costs nothing, no NumPy, no pyarrow, and it imports no other io module.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Callable

COMPRESSED = (".gz", ".bz2", ".zst", ".lz4")  # suffixes read through (file.csv.gz is CSV)


@dataclass(frozen=True)
class Format:
    name: str  # as given to the input_format option and shown in messages
    extensions: tuple[str, ...]  # read, written (when a sink) and taken as dataset shards
    reader: str | Callable  # "module:function" (or the function): open(source, opts, stream=None) -> Reader
    description: str = ""  # one line for help texts
    aliases: tuple[str, ...] = ()  # extensions only read (.txt is CSV), never written or taken as shards
    magic: tuple[bytes, ...] = ()  # a file starting with one of these is this format
    lstrip: bytes = b""  # bytes skipped at the start before the magic bytes are compared (a BOM, blanks)
    sniff: Callable[[bytes], bool] | None = None  # head bytes -> bool, when magic bytes are not enough
    streams: bool = False  # reads a forward-only stream (stdin, a remote stream) without a local copy
    random_access_remote: bool = False  # reads an object-store URI directly (else through a stream or a copy)
    compressed: bool = True  # a compressed remote object is decompressed by its extension
    shard: str | None = None  # the pyarrow dataset format when a directory / glob of shards may hold it
    sink: bool = False  # per-sample rows can be written in it
    grad: bool = False  # gradients can be written in it

    def recognises(self, head: bytes) -> bool:
        body = head.lstrip(self.lstrip) if self.lstrip else head
        if any(body.startswith(m) for m in self.magic):
            return True
        return self.sniff is not None and bool(self.sniff(head))


REGISTRY: tuple[Format, ...] = (
    Format(
        "csv", (".csv",), "lossctl.io.fmt_csv:open_csv", "comma-separated values with a header line",
        aliases=(".txt",), streams=True, shard="csv", sink=True, grad=True,
    ),
    Format(
        "tsv", (".tsv",), "lossctl.io.fmt_csv:open_csv", "tab-separated values with a header line",
        aliases=(".tab",), streams=True, sink=True,
    ),
    Format(
        "parquet", (".parquet", ".pq"), "lossctl.io.fmt_parquet:open_parquet", "Apache Parquet",
        magic=(b"PAR1",), random_access_remote=True, shard="parquet", sink=True, grad=True,
    ),
    Format(
        "npy", (".npy",), "lossctl.io.fmt_npy:open_npy", "a NumPy array (no pickles)",
        magic=(b"\x93NUMPY",), compressed=False, sink=True, grad=True,
    ),
    Format(
        "npz", (".npz",), "lossctl.io.fmt_npy:open_npz", "a NumPy archive of arrays (no pickles)",
        magic=(b"PK\x03\x04", b"PK\x05\x06"), compressed=False,
    ),
    Format(
        "arrow", (".arrow", ".feather", ".ipc"), "lossctl.io.fmt_ipc:open_ipc", "Arrow IPC file or stream, Feather v2",
        aliases=(".arrows",), magic=(b"ARROW1", b"\xff\xff\xff\xff"), random_access_remote=True, shard="ipc",
    ),
    Format(
        "jsonl", (".jsonl", ".ndjson"), "lossctl.io.fmt_jsonl:open_jsonl", "JSON Lines: one object per line",
        magic=(b'{"',), lstrip=b"\xef\xbb\xbf \t\r\n", shard="json", sink=True, grad=True,
    ),
)
BY_NAME: dict[str, Format] = {}
NAMES: tuple[str, ...] = ()  # the values of the input_format option


def get(name: str) -> Format | None:
    return BY_NAME.get(name)


def _table(use: str) -> dict[str, str]:
    """Extension -> format name, of the extensions ``use`` reads ("read") or writes ("sink", "grad",
    "shard")."""
    out: dict[str, str] = {}
    for f in REGISTRY:
        if use == "read":
            out.update({e: f.name for e in f.extensions + f.aliases})
        elif getattr(f, use):
            out.update({e: f.name for e in f.extensions})
    return out


EXTENSIONS: dict[str, str] = {}  # every extension read, with its format
SINK_EXTENSIONS: dict[str, str] = {}  # extension -> format of per-sample rows
GRAD_EXTENSIONS: dict[str, str] = {}  # extension -> format of gradients
SHARD_EXTENSIONS: dict[str, str] = {}  # extension -> pyarrow dataset format of a shard


def _rebuild() -> None:
    """The derived tables, updated in place (other modules hold references to them)."""
    global NAMES
    BY_NAME.clear()
    BY_NAME.update({f.name: f for f in REGISTRY})
    NAMES = tuple(BY_NAME)
    for table, use in ((EXTENSIONS, "read"), (SINK_EXTENSIONS, "sink"), (GRAD_EXTENSIONS, "grad")):
        table.clear()
        table.update(_table(use))
    SHARD_EXTENSIONS.clear()
    SHARD_EXTENSIONS.update({e: BY_NAME[n].shard for e, n in _table("shard").items()})


def register(fmt: Format) -> None:
    """Add a format (or replace the one of that name): detection, opening, datasets and sinks use it
    at once. The bundled formats are the records of ``REGISTRY`` above."""
    global REGISTRY
    REGISTRY = tuple(f for f in REGISTRY if f.name != fmt.name) + (fmt,)
    _rebuild()


def unregister(name: str) -> None:
    global REGISTRY
    REGISTRY = tuple(f for f in REGISTRY if f.name != name)
    _rebuild()


_rebuild()


def strip_compression(path: str) -> str:
    """The name without one compression suffix (part-0.jsonl.gz: part-0.jsonl), lower case."""
    name = path.lower()
    for comp in COMPRESSED:
        if name.endswith(comp):
            return name[: -len(comp)]
    return name


def from_extension(path: str) -> str | None:
    """The format a file's extension names (after any compression suffix), or None."""
    return EXTENSIONS.get(os.path.splitext(strip_compression(path))[1])


def from_bytes(head: bytes) -> str | None:
    """The format the first bytes of a file (at least 8) show, or None."""
    for f in REGISTRY:
        if f.recognises(head):
            return f.name
    return None


def from_file(path: str) -> str | None:
    try:
        with open(path, "rb") as fh:
            head = fh.read(8)
    except OSError:
        return None
    return from_bytes(head)


def shard_format(path: str) -> str | None:
    """The pyarrow dataset format of a shard, from its extension (after any compression suffix)."""
    return SHARD_EXTENSIONS.get(os.path.splitext(strip_compression(path))[1])


# ---------------------------------------------------------------------------
# For the faces: metavars and help texts
# ---------------------------------------------------------------------------


def input_names() -> tuple[str, ...]:
    """The values of the input_format option, in order: csv, tsv, parquet, npy, npz, arrow, jsonl."""
    return NAMES


def sink_names() -> tuple[str, ...]:
    """The formats per-sample rows can be written in."""
    return tuple(f.name for f in REGISTRY if f.sink)


def grad_names() -> tuple[str, ...]:
    """The formats gradients can be written in."""
    return tuple(f.name for f in REGISTRY if f.grad)


def shard_names() -> tuple[str, ...]:
    """The formats a directory or glob of shards may hold."""
    return tuple(f.name for f in REGISTRY if f.shard)


def input_metavar() -> str:
    """``csv|tsv|parquet|npy|npz|arrow|jsonl``"""
    return "|".join(NAMES)


def sink_metavar() -> str:
    """``PATH.{csv,tsv,parquet,npy,jsonl}``"""
    return "PATH.{" + ",".join(sink_names()) + "}"


def grad_metavar() -> str:
    return "PATH.{" + ",".join(grad_names()) + "}"


def input_help() -> str:
    """One line per input format: its name, extensions and what it is."""
    return "\n".join(
        f"{f.name}: {', '.join(f.extensions + f.aliases)} - {f.description}" for f in REGISTRY
    )


def extensions_text(names, sep: str = " ", last: str | None = None) -> str:
    """The main extension of each format in ``names``, for a help text: ``.csv .tsv .parquet``, or
    with ``sep=", ", last=" or "``: ``.npy, .parquet, .jsonl or .csv`` (in the order given)."""
    exts = [BY_NAME[n].extensions[0] for n in names]
    if last is None or len(exts) < 2:
        return sep.join(exts)
    return sep.join(exts[:-1]) + last + exts[-1]
