"""Stage 3, persisted: a run's state saved (``save_state``), loaded and verified
(``load_state``), and the states of several runs merged into one (``merge_states``)."""

from __future__ import annotations

import os

from lossctl import __version__
from lossctl.aggregate import RunState
from lossctl.errors import DataError, LossctlError, UsageError, opt, short_reason
from lossctl.registry import LossSpec

STATE_VERSION = 2  # 2: row range, input fingerprint and sha256 checksum (format 1 states are refused)


def save_state(path: str, spec: LossSpec, meta: dict, acc: RunState, ci_level: float | None) -> None:
    import hashlib
    import json

    from lossctl.io.sinks import AtomicFile

    first = int(meta.get("row_offset") or 0)
    doc = {
        "lossctl_state": STATE_VERSION,
        "lossctl_version": __version__,
        "loss": spec.name,
        "meta": meta,
        "ci_level": ci_level,
        "state": acc.to_dict(),
        "source": {"rows": [first, first + acc.rows_seen], "fingerprint": input_fingerprint(meta["inputs"])},
    }
    # The canonical body once, its checksum appended as the last key (load_state checks these
    # bytes directly, and the parsed document by state_checksum when they were re-laid out).
    body = _canonical(doc)
    text = body[:-1] + ',"checksum":' + json.dumps("sha256:" + hashlib.sha256(body.encode()).hexdigest()) + "}"
    f = AtomicFile(path, opt("save_state"))
    try:
        f.write(text.encode())
    except BaseException:
        f.abort()
        raise
    f.commit()


def state_checksum(doc: dict) -> str:
    """``sha256:`` + the SHA-256 of the state's canonical JSON without its ``checksum`` key
    (keys sorted, no spaces, ASCII): any edit to a saved state changes it."""
    import hashlib

    return "sha256:" + hashlib.sha256(_canonical(doc).encode()).hexdigest()


def _canonical(doc: dict) -> str:
    import json

    body = {k: v for k, v in doc.items() if k != "checksum"}
    return json.dumps(body, sort_keys=True, separators=(",", ":"), ensure_ascii=True, allow_nan=False)


def _signed_bytes_match(raw: bytes, checksum) -> bool:
    """Whether the file is a canonical body with ``"checksum"`` appended as lossctl writes it,
    and that body hashes to ``checksum`` (the fast check: no re-serialisation)."""
    import hashlib

    if not isinstance(checksum, str):
        return False
    tail = (',"checksum":"' + checksum + '"}').encode()
    if not raw.endswith(tail):
        return False
    return "sha256:" + hashlib.sha256(raw[: -len(tail)] + b"}").hexdigest() == checksum


def input_fingerprint(inputs: list[dict]) -> str | None:
    """The identity of a run's inputs: role, column and each file's real path, size and
    modification time (every file of a directory); URIs by their text. None for stdin
    (a stream has no identity to compare)."""
    import glob
    import hashlib
    import json

    from lossctl.io.remote import is_uri

    parts = []
    for i in inputs:
        where = str(i.get("path"))
        src = str(i.get("source"))
        if src == "-" or src.startswith("-:") or where == "<stdin>":
            return None
        ident: list = []
        if is_uri(where):
            ident = [where]
        else:
            paths = [where] if os.path.exists(where) else sorted(glob.glob(where))
            for p in paths:
                files = [p]
                if os.path.isdir(p):
                    files = sorted(os.path.join(d, f) for d, _, fs in os.walk(p) for f in fs)
                for fp in files:
                    try:
                        st = os.stat(fp)
                        ident.append([os.path.realpath(fp), st.st_size, st.st_mtime_ns])
                    except OSError:
                        ident.append([os.path.realpath(fp)])
            ident = ident or [where]
        parts.append([i.get("role"), i.get("column"), ident])
    return "sha256:" + hashlib.sha256(json.dumps(parts, sort_keys=True, default=str).encode()).hexdigest()


def _state_rules():
    from lossctl import untrusted as u
    from lossctl.aggregate import STATE_SCHEMA

    rows = u.integer(0, 2**63 - 1)
    inp = u.table_of(
        {
            "role": u.text,
            "source": u.text,
            "path": u.text,
            "column": u.maybe(u.text),
            "format": u.maybe(u.text),
            "shape": u.maybe(u.list_of(u.scalar)),
            "dtype": u.maybe(u.text),
            "rows": rows,
        },
        ("role", "source", "path", "column", "format", "shape", "dtype", "rows"),
        closed=False,
    )
    meta = u.table_of(
        {
            "loss": u.text,
            "params": u.table_of({}, closed=False),
            "reduction": u.one_of("mean", "sum", "none"),
            "rows_read": u.dict_of(rows, u.text),
            "inputs": u.list_of(inp, min_len=1),
            "id_col": u.maybe(u.text),
            "nan_policy": u.one_of("error", "omit", "propagate"),
            "group_by": u.maybe(u.text),
            "batch_size": u.maybe(u.integer(1)),
            "row_offset": rows,
            "plugin": u.text,
        },
        ("loss", "params", "reduction", "rows_read", "inputs", "nan_policy", "row_offset"),
        closed=False,
    )
    schema = {
        "lossctl_state": u.integer(),
        "lossctl_version": u.text,
        "loss": u.text,
        "meta": meta,
        "ci_level": u.maybe(u.number(0, 1, low_open=True, high_open=True)),
        "state": STATE_SCHEMA,
        "source": u.table_of({"rows": u.pair(rows, rows), "fingerprint": u.maybe(u.text)}, ("rows", "fingerprint")),
        "checksum": u.text,
    }
    return schema


def load_state(path: str) -> dict:
    """A state written by save_state, verified: format and lossctl version, structure, types
    and ranges of every field, its checksum, and what must hold between its numbers."""
    from lossctl import registry
    from lossctl import untrusted as u
    from lossctl.aggregate import check_state

    redo = f"recompute it with lossctl compute {opt('save_state')}"
    try:
        with open(path, "rb") as fh:
            raw = fh.read()
        doc = u.parse_json(raw)
    except FileNotFoundError:
        raise DataError(f"{path}: file not found; expected a state written by {opt('save_state')}.") from None
    except (OSError, ValueError) as exc:
        raise DataError(f"{path}: not a readable lossctl state ({short_reason(exc)}).") from None
    if not isinstance(doc, dict) or "lossctl_state" not in doc:
        raise DataError(f"{path}: not a lossctl state (version {STATE_VERSION}) written by {opt('save_state')}.")
    version = doc["lossctl_state"]
    if version != STATE_VERSION or isinstance(version, bool):
        raise DataError(
            f"{path}: a lossctl state of format {u.shown(version)}; this lossctl reads format {STATE_VERSION} only "
            f"(format 1 has no row range or checksum to verify); {redo}."
        )
    if doc.get("lossctl_version") != __version__:
        ver = doc.get("lossctl_version")
        ver = ver if isinstance(ver, str) and ver.isprintable() and len(ver) < 40 else u.shown(ver)
        raise DataError(
            f"{path}: written by lossctl {ver}, but this is lossctl {__version__}; "
            f"states merge only within one lossctl version (another version may compute other numbers); {redo}."
        )
    try:
        u.validate(doc, _state_rules(), required=tuple(_state_rules()))
        for key in doc:
            if key not in _state_rules():
                raise u.Bad("no such key", path=key, show_value=False)
    except u.Bad as bad:
        raise DataError(f"{path}, key {bad.path!r}: {bad.describe()}; not a valid lossctl state ({redo}).") from None
    if not _signed_bytes_match(raw, doc["checksum"]) and doc["checksum"] != state_checksum(doc):
        raise DataError(
            f"{path}: changed after lossctl wrote it (its sha256 checksum does not match its contents); "
            f"states are not edited by hand: {redo}."
        )
    try:
        try:
            check_state(doc["state"])
        except u.Bad as bad:
            raise bad.at("state") from None
        meta = doc["meta"]
        if meta["loss"] != doc["loss"]:
            raise u.Bad(f"the loss of its metadata ({meta['loss']!r})", doc["loss"], "loss")
        try:
            spec = registry.get(doc["loss"])
        except LossctlError:
            raise u.Bad("the name of a loss of this lossctl", doc["loss"], "loss") from None
        if spec.name != doc["loss"] or set(meta["params"]) != {p.name for p in spec.params}:
            raise u.Bad(f"the parameters of {spec.name}", sorted(meta["params"]), "meta.params")
        a, b = doc["source"]["rows"]
        if a != meta["row_offset"] or b - a != doc["state"]["rows_seen"]:
            raise u.Bad(
                f"[row_offset, row_offset + rows_seen) = [{meta['row_offset']}, "
                f"{meta['row_offset'] + doc['state']['rows_seen']})",
                [a, b],
                "source.rows",
            )
    except u.Bad as bad:
        raise DataError(f"{path}, key {bad.path!r}: {bad.describe()}; not a valid lossctl state ({redo}).") from None
    return doc


def merge_states(paths: list[str]) -> tuple[LossSpec, dict, RunState, float | None]:
    """Combine saved states into the metadata and state of one run over all their rows.

    Refused: the same state twice (equal checksums), two states of the same inputs
    (equal fingerprints), and states whose global row ranges overlap (their rows would count
    twice, or share bootstrap weights).
    """
    from lossctl import registry

    if not paths:
        raise UsageError("merge needs at least one state file.")
    docs = [load_state(p) for p in paths]
    first = docs[0]
    spec = registry.get(first["loss"])
    keys = ("params", "reduction", "nan_policy", "id_col", "group_by", "batch_size", "plugin")
    for path, doc in zip(paths[1:], docs[1:]):
        if doc["loss"] != first["loss"]:
            raise DataError(
                f"{path} is a {doc['loss']} state but {paths[0]} is {first['loss']}; states of different losses do not merge."
            )
        for k in keys:
            if doc["meta"].get(k) != first["meta"].get(k):
                raise DataError(
                    f"{path} was computed with {k} {doc['meta'].get(k)!r} but {paths[0]} with {first['meta'].get(k)!r}; "
                    "states merge only when loss and parameters are identical."
                )
        if (doc["state"]["bootstrap"] is None) != (first["state"]["bootstrap"] is None) or (
            doc["state"]["bootstrap"]
            and (doc["state"]["bootstrap"]["n"], doc["state"]["bootstrap"]["seed"])
            != (first["state"]["bootstrap"]["n"], first["state"]["bootstrap"]["seed"])
        ):
            raise DataError(f"{path} has different bootstrap settings ({opt('ci_n')}, {opt('seed')}) from {paths[0]}.")
    _refuse_overlaps(paths, docs)
    try:
        state = RunState.from_dict(first["state"])
        for doc in docs[1:]:
            state.merge(RunState.from_dict(doc["state"]))
    except ValueError as exc:  # e.g. sketches of different accuracy
        raise DataError(f"{', '.join(paths)}: these states do not merge ({short_reason(exc)}).") from None
    meta = dict(first["meta"])
    rows_read: dict[str, int] = {}
    inputs = []
    for doc in docs:
        for role, n in doc["meta"]["rows_read"].items():
            rows_read[role] = rows_read.get(role, 0) + int(n)
        inputs.extend(doc["meta"]["inputs"])
    meta.update(rows_read=rows_read, inputs=inputs, shards=len(docs))
    return spec, meta, state, first.get("ci_level")


def _refuse_overlaps(paths: list[str], docs: list[dict]) -> None:
    """Each row once: no state twice, no input twice, no global row twice."""
    seen_sum: dict[str, str] = {}
    seen_fp: dict[str, str] = {}
    for path, doc in zip(paths, docs):
        if doc["checksum"] in seen_sum:
            raise DataError(
                f"{path} and {seen_sum[doc['checksum']]} are the same state (equal checksums); "
                "merging it twice would count its rows twice."
            )
        seen_sum[doc["checksum"]] = path
        fp = doc["source"]["fingerprint"]
        if fp is not None and fp in seen_fp:
            raise DataError(
                f"{path} and {seen_fp[fp]} were computed from the same input files (same paths, sizes and "
                "modification times); merging them would count those rows twice."
            )
        if fp is not None:
            seen_fp[fp] = path
    spans = sorted(
        (doc["source"]["rows"][0], doc["source"]["rows"][1], path)
        for path, doc in zip(paths, docs)
        if doc["source"]["rows"][1] > doc["source"]["rows"][0]
    )
    for (a0, a1, pa), (b0, b1, pb) in zip(spans, spans[1:]):
        if b0 < a1:
            raise DataError(
                f"{pa} covers rows {a0} to {a1 - 1} and {pb} rows {b0} to {b1 - 1}: the row ranges overlap, so rows "
                f"would count twice or share bootstrap weights. Give each shard {opt('row_offset')}, its first global "
                "row."
            )
