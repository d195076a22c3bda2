"""Opening a source: stdin, a remote object, a local file or a dataset, dispatched through the
format registry (``lossctl.io.formats``)."""

from __future__ import annotations

import os
import sys
import tempfile

from lossctl.errors import UsageError, short_reason
from lossctl.io import formats
from lossctl.io.parsing import ReadOptions, Source
from lossctl.io.problems import InputDataError
from lossctl.io.reader import Reader

_SPOOLED: list[str] = []


def _stdin_binary():
    return sys.stdin.buffer


def stdin_is_terminal() -> bool:
    try:
        return sys.stdin.isatty()
    except (AttributeError, ValueError):
        return False


def open_reader(source: Source, opts: ReadOptions) -> Reader:
    if source.fmt == "memory":  # an object given to the Python API (lossctl.io.memory)
        from lossctl.io.memory import open_memory

        return open_memory(source)
    fmt = formats.get(source.fmt)
    if source.is_stdin:
        if stdin_is_terminal():
            raise UsageError(
                "An input is '-' (stdin), but stdin is a terminal: pipe data in "
                "(e.g. `cat preds.csv | lossctl compute ...`) or give a file path."
            )
        stream = _stdin_binary()
        if fmt is not None and fmt.streams:
            return _open_with(fmt, source, opts, stream=stream)
        # Parquet, NPY, NPZ and Arrow files need random access: spool stdin to a temporary file.
        return _spooled(source, stream, opts, "<stdin>")
    if source.is_remote and fmt is not None:
        from lossctl.io import remote

        if fmt.streams:
            return _open_with(fmt, source, opts, stream=remote.open_input_stream(source.path, source.display))
        if fmt.random_access_remote:
            return _open_with(fmt, source, opts)
        # Read through a local copy: random access (NPY, NPZ), or an error located by a second pass (JSONL).
        compression = "detect" if fmt.compressed else None
        with remote.open_input_stream(source.path, source.display, compression=compression) as stream:
            return _spooled(source, stream, opts, source.path)
    return _open_file(source, opts)


def _spooled(source: Source, stream, opts: ReadOptions, label: str) -> Reader:
    """Copy a stream to a temporary file (removed at the end of the run) and read that."""
    kind = "stdin" if source.is_stdin else "remote"
    fd, tmp = tempfile.mkstemp(prefix=f"lossctl-{kind}-", suffix="." + source.fmt)
    _SPOOLED.append(tmp)
    try:
        with os.fdopen(fd, "wb") as out:
            while True:
                chunk = stream.read(1 << 20)
                if not chunk:
                    break
                out.write(chunk)
    except OSError as exc:  # disk full, file-size limit: the copy is removed with the other spools
        cleanup_spooled()
        raise InputDataError(
            f"{label}: copying it to a temporary file in {tempfile.gettempdir()} failed "
            f"({exc.strerror or short_reason(exc)}). Expected room for the whole input there: set TMPDIR "
            "to a directory with space, or give a file path.",
            file=label,
        ) from None
    original = source
    reader = _open_file(Source(source.text, tmp, source.column, source.fmt, label=label), opts)
    reader.source = original
    return reader


def _open_file(source: Source, opts: ReadOptions) -> Reader:
    if source.fmt == "dataset":
        from lossctl.io.dataset import DatasetReader

        return DatasetReader(source)
    if not os.access(source.path, os.R_OK):
        raise InputDataError(f"{source.display}: not readable (permission denied).", file=source.display)
    if os.path.getsize(source.path) == 0:
        raise InputDataError(
            f"{source.display} is empty (0 bytes). Expected {source.fmt.upper()} data.",
            file=source.display,
        )
    fmt = formats.get(source.fmt)
    if fmt is None:
        raise UsageError(f"unknown input format {source.fmt!r}")
    return _open_with(fmt, source, opts)


def _open_with(fmt: formats.Format, source: Source, opts: ReadOptions, stream=None) -> Reader:
    """The reader the format's record names (``stream``: a forward-only byte stream, for ``streams`` formats)."""
    fn = fmt.reader
    if isinstance(fn, str):  # "module:function", imported on first use
        import importlib

        module, _, name = fn.partition(":")
        fn = getattr(importlib.import_module(module), name)
    return fn(source, opts) if stream is None else fn(source, opts, stream=stream)


def cleanup_spooled() -> None:
    while _SPOOLED:
        path = _SPOOLED.pop()
        try:
            os.unlink(path)
        except OSError:
            pass
