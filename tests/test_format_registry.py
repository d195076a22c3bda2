"""The format registry (lossctl/io/formats.py) and the shape of lossctl/io (issue #14 items 3, 6, 7):
detection, opening, dataset shards and sinks come from one record per format; a format added with
one registration is detected, read and listed; io modules stay small, free of import cycles, and
never spell a command-line flag."""

from __future__ import annotations

import ast
import json
import os
import pathlib
import re
import subprocess
import sys

import numpy as np
import pytest

from conftest import run_cli

IO = pathlib.Path(__file__).resolve().parent.parent / "lossctl" / "io"

# What lossctl read and wrote before the registry existed (the literal tables of sources._EXT,
# sinks.SINK_FORMATS, sinks.GRAD_FORMATS and dataset._DATASET_FORMATS): the registry must give
# exactly these.
READ = {
    ".csv": "csv", ".tsv": "tsv", ".tab": "tsv", ".txt": "csv", ".parquet": "parquet", ".pq": "parquet",
    ".npy": "npy", ".npz": "npz", ".arrow": "arrow", ".arrows": "arrow", ".feather": "arrow", ".ipc": "arrow",
    ".jsonl": "jsonl", ".ndjson": "jsonl",
}
SINK = {".csv": "csv", ".tsv": "tsv", ".parquet": "parquet", ".pq": "parquet", ".npy": "npy", ".jsonl": "jsonl",
        ".ndjson": "jsonl"}
GRAD = {".npy": "npy", ".parquet": "parquet", ".pq": "parquet", ".jsonl": "jsonl", ".ndjson": "jsonl", ".csv": "csv"}
SHARD = {".parquet": "parquet", ".pq": "parquet", ".arrow": "ipc", ".feather": "ipc", ".ipc": "ipc", ".csv": "csv",
         ".jsonl": "json", ".ndjson": "json"}


# ---------------------------------------------------------------------------
# The registry gives the tables lossctl always had
# ---------------------------------------------------------------------------


def test_extension_tables_come_from_the_registry_and_are_unchanged():
    from lossctl.io import dataset, formats, sinks, sources

    assert formats.EXTENSIONS == READ and sources._EXT == READ
    assert sinks.SINK_FORMATS == SINK and formats.SINK_EXTENSIONS == SINK
    assert sinks.GRAD_FORMATS == GRAD
    assert dataset._DATASET_FORMATS == SHARD
    assert formats.input_names() == sources.FORMATS == ("csv", "tsv", "parquet", "npy", "npz", "arrow", "jsonl")
    assert formats.sink_names() == ("csv", "tsv", "parquet", "npy", "jsonl")
    assert formats.grad_names() == ("csv", "parquet", "npy", "jsonl")
    assert formats.shard_names() == ("csv", "parquet", "arrow", "jsonl")


@pytest.mark.parametrize("ext, fmt", sorted(READ.items()))
def test_detection_by_extension_skips_one_compression_suffix(ext, fmt):
    from lossctl.io.sources import detect_format

    assert detect_format(f"/d/x{ext}", None) == fmt
    assert detect_format(f"/d/X{ext.upper()}.gz", None) == fmt
    assert detect_format(f"/d/x{ext}.zst", "npy") == fmt  # the extension wins over input_format
    assert detect_format("/d/x.bin", fmt) == fmt
    assert detect_format("/d/x.bin", None) is None


@pytest.mark.parametrize(
    "head, fmt",
    [
        (b"PAR1\x15\x04\x15\x80", "parquet"),
        (b"\x93NUMPY\x01\x00", "npy"),
        (b"PK\x03\x04\x14\x00\x00\x00", "npz"),
        (b"PK\x05\x06\x00\x00\x00\x00", "npz"),
        (b"ARROW1\x00\x00", "arrow"),
        (b"\xff\xff\xff\xff\x10\x01\x00\x00", "arrow"),
        (b'{"a": 1}', "jsonl"),
        (b'\xef\xbb\xbf \n{"a', "jsonl"),
        (b"a,b\n1,2\n", None),
        (b"{ a: 1 }", None),
        (b"", None),
    ],
)
def test_detection_by_magic_bytes(head, fmt):
    from lossctl.io import formats, sources

    assert formats.from_bytes(head) == fmt
    assert sources._sniff_bytes(head) == fmt


def test_a_file_named_without_an_extension_is_sniffed(tmp_path):
    x = np.array([0.5, -1.0, 2.0, 4.0])
    np.save(tmp_path / "preds.npy", x)
    (tmp_path / "preds.npy").rename(tmp_path / "preds")  # NPY by its magic bytes
    (tmp_path / "target.txt").write_text("t\n0\n0\n0\n0\n")  # .txt: CSV
    res = run_cli(["compute", "mse", str(tmp_path / "preds"), str(tmp_path / "target.txt"), "-f", "json"])
    assert res.code == 0, res.err
    assert json.loads(res.out)["value"] == pytest.approx(float(np.mean(x**2)), rel=1e-15)


def test_help_texts_and_metavars_come_from_the_registry():
    from lossctl.io import formats

    assert formats.input_metavar() == "csv|tsv|parquet|npy|npz|arrow|jsonl"
    assert formats.sink_metavar() == "PATH.{csv,tsv,parquet,npy,jsonl}"
    assert formats.grad_metavar() == "PATH.{csv,parquet,npy,jsonl}"
    # the texts of the CLI's help today, rebuilt from the registry
    assert "[" + formats.input_metavar() + "]" == "[csv|tsv|parquet|npy|npz|arrow|jsonl]"
    assert formats.extensions_text(formats.sink_names()) == ".csv .tsv .parquet .npy .jsonl"
    assert formats.extensions_text(("npy", "parquet", "jsonl", "csv"), ", ", " or ") == ".npy, .parquet, .jsonl or .csv"
    assert sorted(formats.grad_names()) == sorted(("npy", "parquet", "jsonl", "csv"))
    lines = formats.input_help().splitlines()
    assert len(lines) == 7 and lines[0].startswith("csv: .csv, .txt - ") and lines[5].startswith("arrow: .arrow")


def test_importing_the_registry_is_free_of_numpy_and_pyarrow():
    code = (
        "import sys, lossctl.io.formats as f; f.input_help(); f.from_extension('x.parquet'); "
        "print(sorted(m for m in ('numpy', 'pyarrow') if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"


# ---------------------------------------------------------------------------
# Adding a format is one module plus one registration
# ---------------------------------------------------------------------------


def _open_vals(source, opts, stream=None):
    """A toy format: a line 'VALS1', a line of column names, then rows of numbers (spaces)."""
    import pyarrow as pa

    from lossctl.errors import DataError
    from lossctl.io.memory import TableReader

    lines = open(source.path, encoding="utf-8").read().split("\n")
    names = lines[1].split()
    rows = [[float(v) for v in line.split()] for line in lines[2:] if line.strip()]
    if any(len(r) != len(names) for r in rows):
        raise DataError(f"{source.display}: a row does not have {len(names)} values.")
    return TableReader(source, pa.table({n: [r[i] for r in rows] for i, n in enumerate(names)}))


@pytest.fixture
def vals_format():
    from lossctl.io import formats

    formats.register(
        formats.Format("vals", (".vals",), _open_vals, "a toy format", magic=(b"VALS1",), compressed=False)
    )
    try:
        yield
    finally:
        formats.unregister("vals")
    assert "vals" not in formats.NAMES and ".vals" not in formats.EXTENSIONS


def test_a_registered_format_is_detected_read_and_listed(tmp_path, vals_format):
    rng = np.random.default_rng(3)
    p, t = rng.standard_normal(9), rng.standard_normal(9)
    body = "VALS1\np t\n" + "".join(f"{a!r} {b!r}\n" for a, b in zip(p.tolist(), t.tolist()))
    (tmp_path / "a.vals").write_text(body)
    (tmp_path / "noext").write_text(body)  # found by its magic bytes
    oracle = float(np.mean((p - t) ** 2))
    for path in (tmp_path / "a.vals", tmp_path / "noext"):
        res = run_cli(["compute", "mse", f"{path}:p", f"{path}:t", "-f", "json"])
        assert res.code == 0, res.err
        assert json.loads(res.out)["value"] == pytest.approx(oracle, rel=1e-14)
    # listed wherever the formats are listed; not a per-sample sink, which says so
    res = run_cli(["compute", "mse", "-:p", "-:t", "--input-format", "nope"])
    assert res.code == 2 and "csv, tsv, parquet, npy, npz, arrow, jsonl, vals" in res.err, res.err
    res = run_cli(["compute", "mse", f"{tmp_path / 'a.vals'}:p", f"{tmp_path / 'a.vals'}:t",
                   "--per-sample", str(tmp_path / "out.vals")])
    assert res.code == 2 and "--per-sample" in res.err and ".csv" in res.err and "Traceback" not in res.err
    assert not (tmp_path / "out.vals").exists()


# ---------------------------------------------------------------------------
# Options are named, not spelled, by lossctl/io
# ---------------------------------------------------------------------------


def test_io_errors_name_options_and_each_face_spells_them():
    from lossctl.errors import UsageError, spelling
    from lossctl.io.sources import parse_source

    with pytest.raises(UsageError) as err:
        parse_source("-", None, "pred")
    assert "input_format" in str(err.value) and "--" not in str(err.value)
    with spelling(lambda name: "--" + name.replace("_", "-")):
        assert "give --input-format (csv, tsv, parquet, npy, npz, arrow, jsonl)" in str(err.value)


def _strings(tree: ast.AST):
    for node in ast.walk(tree):
        if isinstance(node, ast.Constant) and isinstance(node.value, str):
            yield node.lineno, node.value


def test_no_flag_text_in_io_string_literals():
    """Every string literal (messages, f-string parts, docstrings) under lossctl/io: options are named
    through errors.opt("name"), never spelled --name."""
    hits = []
    for path in sorted(IO.glob("*.py")):
        for line, text in _strings(ast.parse(path.read_text())):
            if re.search(r"(?<![\w-])--[a-z]", text):
                hits.append(f"{path.name}:{line}: {text[:70]!r}")
    assert not hits, "\n".join(hits)


# ---------------------------------------------------------------------------
# Shape: small modules, short functions, no import cycles
# ---------------------------------------------------------------------------


def test_io_modules_and_functions_are_small():
    too_long = []
    for path in sorted(IO.glob("*.py")):
        text = path.read_text()
        if text.count("\n") > 800:
            too_long.append(f"{path.name}: {text.count(chr(10))} lines")
        for node in ast.walk(ast.parse(text)):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)) and node.end_lineno - node.lineno >= 80:
                too_long.append(f"{path.name}:{node.lineno} {node.name}: {node.end_lineno - node.lineno + 1} lines")
    assert not too_long, too_long


def _io_import_graph() -> dict[str, set[str]]:
    """Module -> io modules it imports (at module level or inside functions), plus the modules the
    format registry names as readers (imported by lossctl.io.opening when a format is opened)."""
    modules = {p.stem for p in IO.glob("*.py")}
    graph: dict[str, set[str]] = {}
    for path in IO.glob("*.py"):
        deps = set()
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("lossctl.io"):
                if node.module == "lossctl.io":
                    deps.update(a.name if a.name in modules else "__init__" for a in node.names)
                else:
                    deps.add(node.module.split(".")[2])
            elif isinstance(node, ast.Import):
                deps.update(a.name.split(".")[2] for a in node.names if a.name.startswith("lossctl.io."))
        graph[path.stem] = deps - {path.stem}
    from lossctl.io import formats

    for f in formats.REGISTRY:  # imported by lossctl.io.opening when a file of the format is opened
        if isinstance(f.reader, str):
            graph["opening"].add(f.reader.partition(":")[0].split(".")[2])
    return graph


def test_io_imports_have_no_cycle():
    graph = _io_import_graph()
    assert graph["opening"] >= {"fmt_csv", "fmt_parquet", "fmt_ipc", "fmt_npy", "fmt_jsonl"}  # (the walk sees them)
    assert graph["formats"] == set()  # the registry is data: it imports no other io module
    state: dict[str, int] = {}  # 1: on the current path, 2: done

    def visit(node: str, path: list[str]) -> None:
        state[node] = 1
        for dep in sorted(graph.get(node, ())):
            assert state.get(dep) != 1, "import cycle: " + " -> ".join(path + [node, dep])
            if dep not in state:
                visit(dep, path + [node])
        state[node] = 2

    for module in sorted(graph):
        if module not in state:
            visit(module, [])


def test_no_io_module_imports_the_compatibility_module():
    """lossctl.io.sources only re-exports names for the rest of lossctl: inside io it would hide cycles."""
    graph = _io_import_graph()
    assert [m for m, deps in graph.items() if "sources" in deps] == []


def test_every_name_sources_had_is_still_importable():
    names = (
        "FORMATS _EXT _COMPRESSED ID_KEY GROUP_KEY Source detect_format _sniff _sniff_bytes parse_source _parse_uri "
        "Request _split_expr _is_glob _glob_matches _is_selection Reader _ID_WORDS _NUMBERED _looks_like_id "
        "_one_family _largest_family _skipped_text _listing _pa ArrowReader _checked_schema arrow_numpy_dtype "
        "arrow_values arrow_valid _exact_ints_or_error arrow_to_numpy _list_to_numpy _ragged_from_arrow "
        "_ragged_vectors_from_arrow parquet_file ParquetReader IpcReader CsvReader _CSV_FLOAT csv_nulls _is_number "
        "HEAD_LIMIT _head_lines _Recording _split_head _PyRaw _Prefixed JSONL_LINE_LIMIT JSONL_BLOCK "
        "_JSONL_INFER_LINES _json_type _merge_json_types _flat_fields _floated _json_kind _json_fits _bad_json "
        "_not_object infer_jsonl_schema jsonl_read_schema JsonlReader _arrow_steps _py_step _struct_get "
        "_limited_lines _npy_header _PAGE MMAP_NPY _NpyStream NpyReader _field_array NpzReader ReadOptions "
        "_SPOOLED _stdin_binary stdin_is_terminal open_reader _spooled _open_file cleanup_spooled _shape_str"
    ).split()
    from lossctl.io import sources

    assert [n for n in names if not hasattr(sources, n)] == []
    assert os.path.basename(sources.__file__) == "sources.py"


# ---------------------------------------------------------------------------
# Readers raise structured errors: the input, the column, the rows, what was expected
# ---------------------------------------------------------------------------


def _read_all(text: str, role: str = "pred", column_key: str = "pred", dtype: str = "float"):
    from lossctl.io.sources import ReadOptions, Request, open_reader, parse_source

    source = parse_source(text, None, role)
    reader = open_reader(source, ReadOptions())
    reader.add(Request(column_key, source.column, matrix=False, dtype=dtype))
    reader.resolve()
    return [b for b in reader.batches(8)]


def test_structured_errors_name_the_input_column_rows_and_expectation(tmp_path):
    import pyarrow as pa
    import pyarrow.parquet as pq

    from lossctl.errors import DataError
    from lossctl.io.problems import InputDataError

    path = tmp_path / "p.parquet"
    pq.write_table(pa.table({"score": pa.array(["a", "b", None, "c", None, "d"])}), path)
    with pytest.raises(InputDataError) as err:
        _read_all(f"{path}:score")
    e = err.value
    assert isinstance(e, DataError) and e.exit_code == 1
    assert (e.file, e.column, e.rows) == (str(path), "score", [2])
    assert e.expected == "a value in every row; remove or fill missing rows"
    assert str(e).startswith(f"{path}, column 'score', row 2: missing value (null); 2 in this block.")

    with pytest.raises(InputDataError) as err:
        _read_all(f"{path}:scor")
    assert (err.value.file, err.value.column, err.value.rows) == (str(path), "scor", [])
    assert "Did you mean 'score'?" in str(err.value)

    with pytest.raises(InputDataError) as err:
        _read_all(str(tmp_path / "absent.csv:x"))
    assert (err.value.file, err.value.column, err.value.expected) == (str(tmp_path / "absent.csv"), "x", "an existing file")

    np.save(tmp_path / "x.npy", np.arange(10.0))
    with open(tmp_path / "x.npy", "r+b") as fh:
        fh.truncate(os.path.getsize(tmp_path / "x.npy") - 8 * 3)  # 3 rows short
    with pytest.raises(InputDataError) as err:
        _read_all(str(tmp_path / "x.npy"))
    assert err.value.file == str(tmp_path / "x.npy") and "promises 10 rows" in str(err.value)
