"""Input sources: the names other modules import, re-exported from where they live now.

- ``lossctl.io.formats``: the format registry (extensions, magic bytes, readers, sinks);
- ``lossctl.io.parsing``: ``PATH[:COLUMN]`` parsing (``Source``), requests, read options;
- ``lossctl.io.reader``: the ``Reader`` base class and column selection;
- ``lossctl.io.arrow``: Arrow record batches -> NumPy arrays (``ArrowReader``);
- ``lossctl.io.fmt_csv``, ``fmt_parquet``, ``fmt_ipc``, ``fmt_jsonl``, ``fmt_npy``: one module per format;
- ``lossctl.io.opening``: ``open_reader`` (stdin, remote objects, files, datasets) and spooling.

A reader serves every request made of one file (all roles whose source is that file, plus
the id column), so a file - and stdin - is read once. Readers yield batches of at most
``rows`` rows as ``{key: ndarray}``; the engine aligns batches of different files.
No module of ``lossctl.io`` imports this one (it is for the rest of lossctl and the tests).
"""

from __future__ import annotations

from lossctl.io.formats import COMPRESSED as _COMPRESSED  # noqa: F401
from lossctl.io.formats import EXTENSIONS as _EXT  # noqa: F401
from lossctl.io.formats import from_bytes as _sniff_bytes  # noqa: F401
from lossctl.io.formats import from_file as _sniff  # noqa: F401
from lossctl.io.parsing import (  # noqa: F401
    FORMATS,
    GROUP_KEY,
    ID_KEY,
    ReadOptions,
    Request,
    Source,
    _glob_matches,
    _is_glob,
    _is_selection,
    _parse_uri,
    _split_expr,
    detect_format,
    parse_source,
)
from lossctl.io.reader import (  # noqa: F401
    _ID_WORDS,
    _NUMBERED,
    Reader,
    _largest_family,
    _listing,
    _looks_like_id,
    _one_family,
    _shape_str,
    _skipped_text,
)
from lossctl.io.arrow import (  # noqa: F401
    ArrowReader,
    _checked_schema,
    _exact_ints_or_error,
    _list_to_numpy,
    _pa,
    _PyRaw,
    _ragged_from_arrow,
    _ragged_vectors_from_arrow,
    arrow_numpy_dtype,
    arrow_to_numpy,
    arrow_valid,
    arrow_values,
)
from lossctl.io.fmt_parquet import ParquetReader, parquet_file  # noqa: F401
from lossctl.io.fmt_ipc import IpcReader  # noqa: F401
from lossctl.io.fmt_csv import (  # noqa: F401
    _CSV_FLOAT,
    HEAD_LIMIT,
    CsvReader,
    _head_lines,
    _is_number,
    _Prefixed,
    _Recording,
    _split_head,
    csv_nulls,
)
from lossctl.io.fmt_jsonl import (  # noqa: F401
    _JSONL_INFER_LINES,
    JSONL_BLOCK,
    JSONL_LINE_LIMIT,
    JsonlReader,
    _arrow_steps,
    _bad_json,
    _flat_fields,
    _floated,
    _json_fits,
    _json_kind,
    _json_type,
    _limited_lines,
    _merge_json_types,
    _not_object,
    _py_step,
    _struct_get,
    infer_jsonl_schema,
    jsonl_read_schema,
)
from lossctl.io.fmt_npy import (  # noqa: F401
    _PAGE,
    MMAP_NPY,
    NpyReader,
    NpzReader,
    _field_array,
    _npy_header,
    _NpyStream,
)
from lossctl.io.opening import (  # noqa: F401
    _SPOOLED,
    _open_file,
    _spooled,
    _stdin_binary,
    cleanup_spooled,
    open_reader,
    stdin_is_terminal,
)
