"""JSON Lines / NDJSON: pyarrow's streaming JSON reader, nested fields as columns ``a.b``."""

from __future__ import annotations

import io
import json
import re

from lossctl.errors import DataError, short_reason
from lossctl.io.arrow import ArrowReader, _pa, _PyRaw
from lossctl.io.parsing import Request, Source
from lossctl.io.problems import InputDataError


# A JSONL record (one line) may be this long: pyarrow's JSON reader parses whole blocks (of this
# size) and cannot split a line across two; a longer line is an error naming it, never a cut record.
JSONL_LINE_LIMIT = 8 << 20
JSONL_BLOCK = 2 << 20
_JSONL_INFER_LINES = 64


def _json_type(value, pa):
    """The Arrow type a decoded JSON value suggests (None: no information, e.g. null)."""
    if isinstance(value, bool):
        return pa.bool_()
    if isinstance(value, int):
        return pa.int64()
    if isinstance(value, float):
        return pa.float64()
    if isinstance(value, str):
        return pa.string()
    if isinstance(value, list):
        inner = None
        for v in value:
            inner = _merge_json_types(inner, _json_type(v, pa), pa)
        return None if inner is None else pa.list_(inner)
    if isinstance(value, dict):
        fields = [(k, _json_type(v, pa)) for k, v in value.items()]
        return pa.struct([(k, t) for k, t in fields if t is not None])
    return None


def _merge_json_types(a, b, pa):
    if a is None:
        return b
    if b is None or a == b:
        return a
    if pa.types.is_integer(a) and pa.types.is_floating(b) or pa.types.is_floating(a) and pa.types.is_integer(b):
        return pa.float64()
    if pa.types.is_list(a) and pa.types.is_list(b):
        return pa.list_(_merge_json_types(a.value_type, b.value_type, pa))
    if pa.types.is_struct(a) and pa.types.is_struct(b):
        out = {f.name: f.type for f in a}
        for f in b:
            out[f.name] = _merge_json_types(out.get(f.name), f.type, pa)
        return pa.struct(list(out.items()))
    return a  # a conflict: the first type stands, and reading reports the line that breaks it


def _flat_fields(fields, prefix=()):
    """(dotted name, path, type) of every leaf of a JSON schema: nested objects as ``a.b``."""
    import pyarrow as pa

    for f in fields:
        path = prefix + (f.name,)
        if pa.types.is_struct(f.type):
            yield from _flat_fields(list(f.type), path)
        else:
            yield ".".join(path), path, f.type


def _floated(t, pa):
    """``t`` with its numeric leaves as float64 (a value role: 1 and 1.5 in one column)."""
    if pa.types.is_integer(t) or pa.types.is_floating(t) or pa.types.is_boolean(t):
        return pa.float64()
    if pa.types.is_list(t):
        return pa.list_(_floated(t.value_type, pa))
    return t


def _json_kind(t, pa) -> str:
    if pa.types.is_integer(t) or pa.types.is_floating(t):
        return "a number"
    if pa.types.is_boolean(t):
        return "true or false"
    if pa.types.is_string(t):
        return "a string"
    if pa.types.is_list(t):
        return "a list of " + _json_kind(t.value_type, pa).replace("a ", "", 1).replace("list", "lists") + "s"
    return str(t)


def _json_fits(value, t, pa, whole: bool) -> bool:
    """Whether a decoded JSON value can be read as Arrow type ``t`` (null fits any type)."""
    if value is None:
        return True
    if pa.types.is_integer(t):
        return isinstance(value, int) and not isinstance(value, bool) or (
            not whole and isinstance(value, float)
        )
    if pa.types.is_floating(t):
        return isinstance(value, (int, float)) and not isinstance(value, bool)
    if pa.types.is_boolean(t):
        return isinstance(value, bool)
    if pa.types.is_string(t):
        return isinstance(value, str)
    if pa.types.is_list(t):
        return isinstance(value, list) and all(_json_fits(v, t.value_type, pa, whole) for v in value)
    return True


def _bad_json(display: str, line: int, row: int, exc) -> str:
    why = f"{exc.msg} at character {exc.pos + 1}" if isinstance(exc, json.JSONDecodeError) else short_reason(exc)
    return (
        f"{display}, line {line} (row {row}): not valid JSON ({why}). "
        "Expected one complete JSON object per line."
    )


def _not_object(display: str, line: int, row: int, obj) -> str:
    kind = {list: "an array", str: "a string", int: "a number", float: "a number", bool: "a boolean"}.get(
        type(obj), "null"
    )
    return (
        f"{display}, line {line} (row {row}): a JSON value that is not an object ({kind}). "
        'Expected one JSON object per line, e.g. {"logprobs": [-0.1, -2.3]}.'
    )


def infer_jsonl_schema(stream, display: str, stats: dict | None = None):
    """The fields (an Arrow struct type) of the first JSON Lines records of a binary stream,
    inferred with Python's json: pyarrow's own inference parses every field of a whole block,
    and fails on a field the run does not use (a "doc" holding numbers in one line, text in the next)."""
    pa = _pa()
    inferred = None
    lines = 0
    try:
        text = io.TextIOWrapper(_PyRaw(stream), encoding="utf-8", errors="replace", newline="")
        for lineno, line in enumerate(_limited_lines(text, display, JSONL_LINE_LIMIT), 1):
            if not line.strip():
                continue
            try:
                obj = json.loads(line)
            except ValueError as exc:
                raise DataError(_bad_json(display, lineno, lines, exc)) from None
            if not isinstance(obj, dict):
                raise DataError(_not_object(display, lineno, lines, obj))
            inferred = _merge_json_types(inferred, _json_type(obj, pa), pa)
            lines += 1
            if stats is not None:
                stats["chars"] = stats.get("chars", 0) + len(line)
                stats["longest"] = max(stats.get("longest", 0), len(line))
            if lines >= _JSONL_INFER_LINES:
                break
    except DataError:
        raise
    except Exception as exc:  # noqa: BLE001 - bad compression, unreadable file
        raise InputDataError(
            f"{display}: cannot read ({short_reason(exc)}). Expected JSON Lines.",
            file=display,
        ) from None
    if lines == 0:
        raise InputDataError(f"{display} holds no JSON records. Expected one JSON object per line.", file=display)
    if stats is not None:
        stats["lines"] = lines
    return inferred


def jsonl_read_schema(leaves: dict, needed: list[str], floats: set[str]):
    """The schema pyarrow is asked to read: the used fields only, nested as in the file, value
    columns as float64 (1 and 1.5 in one column)."""
    pa = _pa()
    tree: dict = {}
    for name in needed:
        path, t = leaves[name]
        if name in floats:
            t = _floated(t, pa)
        node = tree
        for part in path[:-1]:
            node = node.setdefault(part, {})
        node[path[-1]] = t

    def build(node):
        return [(k, pa.struct(build(v)) if isinstance(v, dict) else v) for k, v in node.items()]

    return pa.schema(build(tree))


class JsonlReader(ArrowReader):
    """JSON Lines / NDJSON (one object per line; .gz/.zst too) through pyarrow's streaming JSON
    reader. Nested objects are columns ``a.b``; lists are (N, K) or ragged, lists of lists
    (N, T, V) or ragged logits. Only the fields used are parsed (others are ignored, whatever
    their types); numbers of value columns are read as float64."""

    def __init__(self, source: Source):
        super().__init__(source)
        self._path = source.path  # (a spooled copy of stdin or a URI; self.source becomes the original)
        pa = _pa()
        try:
            stream = pa.input_stream(self._path, compression="detect")
        except Exception as exc:  # noqa: BLE001
            raise InputDataError(
                f"{self.display}: cannot read ({short_reason(exc)}). Expected JSON Lines.",
                file=self.display,
            ) from None
        stats: dict = {}
        with stream:
            inferred = infer_jsonl_schema(stream, self.display, stats)
        # Bytes of a line, on average in the first lines: an upper bound of its numbers in memory
        # (a JSON number takes more characters than its 8 bytes), for the chunk size.
        self._line_bytes = max(64, stats["chars"] // stats["lines"])
        self._longest = stats["longest"]
        self._leaves = {name: (path, t) for name, path, t in _flat_fields(list(inferred))}
        self.schema = pa.schema([(name, t) for name, (_, t) in self._leaves.items()])
        self._block = JSONL_LINE_LIMIT
        # Selections into lists: "field[k]" (element k), "field[*].sub" (sub of every element).
        self._selects: dict[str, tuple[str, list]] = {}

    def _parse_select(self, expr: str):
        """``expr`` as (a field, steps into it), or None: ``field[k]`` is element k of a list (the
        harness logs ``"byte_perplexity": [loglikelihood, bytes]``), ``field[*].name`` the member
        ``name`` of every element (OpenAI chat logprobs: ``choices[0].logprobs.content[*].logprob``)."""
        base = None
        for i in range(len(expr) - 1, 0, -1):
            if expr[i] == "[" and expr[:i] in self._leaves:
                base = expr[:i]
                break
        if base is None:
            return None
        ops, rest = [], expr[len(base) :]
        for m in re.finditer(r"\[(\d+|\*)?\]|\.([^.\[\]]+)|(.)", rest):
            if m.group(3) is not None:
                return None
            if m.group(2) is not None:
                ops.append(("field", m.group(2)))
            elif m.group(1) in (None, "*"):
                ops.append(("each", None))
            else:
                ops.append(("elem", int(m.group(1))))
        return base, ops

    def _step_type(self, expr: str, t, ops):
        """The Arrow type a selection gives (an error naming the step that does not apply)."""
        pa = _pa()
        for i, (op, arg) in enumerate(ops):
            if op == "field":
                if not pa.types.is_struct(t) or t.get_field_index(arg) < 0:
                    raise InputDataError(
                        f"{self.display}: {expr!r}: no member {arg!r} there (the value is {_json_kind(t, pa)}). "
                        "Expected a path of fields and list elements that exists in the first lines.",
                        file=self.display,
                    )
                t = t.field(arg).type
                continue
            if not pa.types.is_list(t):
                raise InputDataError(
                    f"{self.display}: {expr!r}: [{'*' if op == 'each' else arg}] applies to a list, but the "
                    f"value there is {_json_kind(t, pa)}. Expected a list before [k] or [*].",
                    file=self.display,
                )
            if op == "each":
                return pa.list_(self._step_type(expr, t.value_type, ops[i + 1 :]))
            t = t.value_type
        return t

    def _match(self, req: Request, names: list[str]) -> list[str]:
        parsed = None if req.expr in self._leaves else self._parse_select(req.expr or "")
        if parsed is None:
            return super()._match(req, names)
        name = req.expr
        if name not in self._selects:
            base, ops = parsed
            t = self._step_type(name, self._leaves[base][1], ops)
            self._selects[name] = (base, ops)
            self.schema = self.schema.append(_pa().field(name, t))
        return [name]

    def can_select(self, expr: str) -> bool:
        return expr in self._leaves or self._parse_select(expr) is not None

    def _stacks(self, req: Request) -> bool:
        return req.expr not in self._selects and super()._stacks(req)

    def _read_leaves(self) -> dict:
        """The fields read from the file, each with the type it is read as: only the members a
        selection walks into, value columns as float64."""
        pa = _pa()
        floats = {n for r in self.requests.values() if r.dtype == "float" and not r.keylike for n in r.names}
        out: dict = {}

        def prune(t, ops, floated):
            if not ops:
                return _floated(t, pa) if floated else t
            (op, arg), rest = ops[0], ops[1:]
            if op == "field":
                return pa.struct([(arg, prune(t.field(arg).type, rest, floated))])
            return pa.list_(prune(t.value_type, rest, floated))

        for n in self.needed_columns():
            base, ops = self._selects.get(n, (n, []))
            path, t = self._leaves[base]
            typ = prune(t, ops, n in floats)
            out[base] = (path, _merge_json_types(out[base][1], typ, pa) if base in out else typ)
        return out

    def total_rows(self) -> int | None:
        return None

    def row_bytes(self) -> int | None:
        return self._line_bytes

    def _bad_json(self, line: int, row: int, exc) -> str:
        return _bad_json(self.display, line, row, exc)

    def _not_object(self, line: int, row: int, obj) -> str:
        return _not_object(self.display, line, row, obj)

    def _read_schema(self):
        leaves = self._read_leaves()
        return jsonl_read_schema(leaves, list(leaves), set())

    def batches(self, rows: int):
        import pyarrow.compute as pc
        import pyarrow.json as pjson

        pa = _pa()
        from lossctl import limits

        needed = self.needed_columns()
        schema = self._read_schema()
        # pyarrow's JSON parser holds some 30 times its block in memory: blocks of 2 MiB, larger
        # (up to JSONL_LINE_LIMIT) when the first lines are long; a longer line is an error naming it.
        want = min(JSONL_LINE_LIMIT, max(JSONL_BLOCK, 4 * self._longest))
        self._block = max(limits.read_block(want), 1 << 16)

        def raw():
            reader = pjson.open_json(
                pa.input_stream(self._path, compression="detect"),
                read_options=pjson.ReadOptions(block_size=self._block),
                parse_options=pjson.ParseOptions(
                    explicit_schema=schema, unexpected_field_behavior="ignore", newlines_in_values=False
                ),
            )
            for batch in reader:
                cols = []
                for name in needed:
                    base, ops = self._selects.get(name, (name, []))
                    path = self._leaves[base][0]
                    col = batch.column(batch.schema.get_field_index(path[0]))
                    if len(path) > 1:
                        col = _struct_get(col, path[1:], pc)
                    cols.append(_arrow_steps(col, ops, pc))
                yield pa.RecordBatch.from_arrays(cols, names=needed)

        def located(gen):
            try:
                yield from gen
            except DataError as err:
                raise DataError(self._with_line(str(err))) from None

        return located(self._converted(raw(), rows, self._locate_error, catch=(pa.ArrowException, OSError)))

    # --- the error path: find the line -------------------------------------------------
    def _lines(self):
        pa = _pa()
        with pa.input_stream(self._path, compression="detect") as fh:
            text = io.TextIOWrapper(_PyRaw(fh), encoding="utf-8", errors="replace", newline="")
            yield from enumerate(_limited_lines(text, self.display, self._block), 1)

    def _line_of(self, row: int) -> int | None:
        seen = -1
        try:
            for lineno, line in self._lines():
                if line.strip():
                    seen += 1
                    if seen == row:
                        return lineno
        except Exception:  # noqa: BLE001
            return None
        return None

    def _with_line(self, message: str) -> str:
        """A message about a row ("row R") also names its line."""
        m = re.search(r"\brow (\d+)(?![\d)]| \(line)", message)
        if not m or "line " in message[: m.start()]:
            return message
        line = self._line_of(int(m.group(1)) - self.source.row_start)
        if line is None:
            return message
        return message[: m.end()] + f" (line {line})" + message[m.end() :]

    def _locate_error(self, exc: Exception, row0: int) -> str:
        """The first line that is not valid JSON, not an object, or holds a used field of another
        type (a Python scan of the file, on the error path only)."""
        pa = _pa()
        msg = short_reason(exc)
        floats = {n for r in self.requests.values() if r.dtype == "float" and not r.keylike for n in r.names}
        row = -1
        try:
            for lineno, line in self._lines():
                if not line.strip():
                    continue
                row += 1
                try:
                    obj = json.loads(line)
                except ValueError as jexc:
                    return self._bad_json(lineno, row, jexc)
                if not isinstance(obj, dict):
                    return self._not_object(lineno, row, obj)
                leaves = self._read_leaves()
                for name in self.needed_columns():
                    base, ops = self._selects.get(name, (name, []))
                    path, t = leaves[base]
                    value = obj
                    for part in path:
                        value = value.get(part) if isinstance(value, dict) else None
                    for op, arg in ops:  # (a selection: walk it in Python too)
                        value, t, missing = _py_step(value, t, op, arg)
                        if missing:
                            return (
                                f"{self.display}, field {name!r}, line {lineno} (row {row}): {missing}. "
                                "Expected the selected member or element in every line."
                            )
                        if op == "each":
                            break
                    if not _json_fits(value, t, pa, whole=name not in floats):
                        shown = json.dumps(value)
                        shown = shown if len(shown) <= 40 else shown[:37] + "..."
                        return (
                            f"{self.display}, field {name!r}, line {lineno} (row {row}): {shown} is not "
                            f"{_json_kind(t, pa)}, as in the lines before it. Expected one type per field "
                            "in every line."
                        )
        except DataError as err:
            return str(err)
        except Exception:  # noqa: BLE001 - fall back to pyarrow's words
            pass
        return (
            f"{self.display}: cannot parse JSON Lines at or after row {row0} ({msg}). "
            "Expected one JSON object per line, with one type per field."
        )


def _arrow_steps(col, ops, pc):
    """A selection's steps applied to an Arrow column: a struct member, a list element, or
    (``[*]``) the rest of the steps applied to every element of each list."""
    pa = _pa()
    for i, (op, arg) in enumerate(ops):
        if op == "field":
            col = _struct_get(col, [arg], pc)
        elif op == "elem":
            col = pc.list_element(col, arg)
        else:
            inner = _arrow_steps(col.values, ops[i + 1 :], pc)
            mask = col.is_null() if col.null_count else None
            return pa.ListArray.from_arrays(col.offsets, inner, mask=mask)
    return col


def _py_step(value, t, op, arg):
    """One step of a selection on a decoded JSON value: (value, type, why it is missing or None)."""
    pa = _pa()
    if op == "field":
        if not isinstance(value, dict) or arg not in value:
            return None, t, f"no member {arg!r} in {json.dumps(value)[:40]}"
        return value[arg], t.field(arg).type, None
    if op == "elem":
        if not isinstance(value, list) or len(value) <= arg:
            return None, t, f"{json.dumps(value)[:40]} has no element {arg}"
        return value[arg], t.value_type, None
    if not isinstance(value, list):
        return None, t, f"{json.dumps(value)[:40]} is not a list"
    return value, t, None  # [*]: the list is checked against the list type


def _struct_get(col, path, pc):
    for part in path:
        col = pc.struct_field(col, [col.type.get_field_index(part)])
    return col


def _limited_lines(text, display: str, limit: int):
    """Lines of a text stream, refusing one longer than ``limit`` characters (never read whole)."""
    lineno = 0
    while True:
        line = text.readline(limit)
        if not line:
            return
        lineno += 1
        if len(line) >= limit and not line.endswith("\n"):
            size = f"{limit >> 20} MiB" if limit >= 1 << 20 else f"{limit >> 10} KiB"
            raise InputDataError(
                f"{display}, line {lineno}: longer than {size}, the longest JSON record read. Expected "
                f"one JSON object per line of at most {size} (split long sequences into several "
                "records, or store them as Parquet).",
                file=display,
            )
        yield line


def open_jsonl(source: Source, opts) -> JsonlReader:
    return JsonlReader(source)
