"""Stage 1, joined: stream the prediction file and join every other file to it by ``id_col``.

The other inputs are read whole (sorted by id once); each chunk of the prediction file looks
its ids up by binary search. Ids missing on either side are an error, or dropped and counted
(``on_missing drop``); an id twice on either side is an error.
"""

from __future__ import annotations

import numpy as np

from lossctl.errors import DataError, opt
from lossctl.io.sources import ID_KEY, Reader
from lossctl.stages.chunks import Cursor, cat, py


def norm_ids(ids: np.ndarray, as_text: bool) -> np.ndarray:
    if as_text:
        return (
            np.asarray([str(v) for v in ids.tolist()], dtype=str)
            if ids.dtype == object or ids.dtype.kind != "U"
            else ids
        )
    return ids.astype(np.int64)


def _read_whole(sources, readers: list[Reader], rows: int) -> list[tuple[Reader, dict]]:
    tables = []
    for r in readers:
        cols: dict[str, list[np.ndarray]] = {}
        for batch in sources.batches(r, rows):
            for k, v in batch.items():
                cols.setdefault(k, []).append(v)
        if not cols:
            raise DataError(f"{r.display} has no data rows. Expected one row per sample.")
        tables.append((r, {k: cat(v) for k, v in cols.items()}))
    return tables


def _index(sources, tables, as_text: bool) -> list[tuple]:
    """Each other file's ids sorted once: (reader, table, sorted ids, order, matched yet)."""
    indexes = []
    for r, t in tables:
        keys = norm_ids(t[ID_KEY], as_text)
        order = np.argsort(keys, kind="stable")
        sk = keys[order]
        dup = np.flatnonzero(sk[1:] == sk[:-1])
        if len(dup):
            d = sk[dup[0]]
            rows_d = np.sort(order[(sk == d)])[:3]
            raise DataError(
                f"{r.display}, id column {sources.opts.id_col!r}: id {py(d)!r} appears more than once "
                f"(rows {', '.join(map(str, rows_d.tolist()))}). Expected each id once."
            )
        indexes.append((r, t, sk, order, np.zeros(len(keys), dtype=bool)))
    return indexes


def _lookup(indexes, ids: np.ndarray) -> tuple[np.ndarray, dict[int, np.ndarray]]:
    found = np.ones(len(ids), dtype=bool)
    pos_by_reader = {}
    for r, t, sk, order, used in indexes:
        j = np.searchsorted(sk, ids)
        j = np.minimum(j, len(sk) - 1)
        hit = sk[j] == ids
        pos = np.where(hit, order[j], -1)
        found &= hit
        pos_by_reader[id(r)] = pos
    return found, pos_by_reader


def _mark_used(sources, primary: Reader, indexes, found, pos_by_reader) -> None:
    """Duplicate ids on the prediction side: a target row matched twice."""
    for r, t, sk, order, used in indexes:
        pos = pos_by_reader[id(r)][found]
        if len(pos):
            uniq, counts = np.unique(pos, return_counts=True)
            again = used[pos]
            if again.any() or (counts > 1).any():
                bad = pos[again][0] if again.any() else uniq[counts > 1][0]
                raise DataError(
                    f"{primary.display}, id column {sources.opts.id_col!r}: id {py(t[ID_KEY][bad])!r} "
                    "appears more than once. Expected each id once."
                )
            used[pos] = True


def _missing_here(sources, primary: Reader, indexes, found, ids_raw, start: int) -> None:
    missing = np.flatnonzero(~found)
    if len(missing) and sources.opts.on_missing == "error":
        shown = ", ".join(f"{py(ids_raw[i])!r} (row {start + int(i)})" for i in missing[:5])
        other = " / ".join(r.display for r, *_ in indexes)
        raise DataError(
            f"{primary.display}: {len(missing)} id(s) in this chunk have no row in {other}: {shown}. "
            f"Expected every id on both sides; {opt('on_missing')} drop leaves them out and counts them."
        )


def _unmatched(sources, primary: Reader, indexes) -> int:
    """Rows of the other files no prediction id matched: an error, or counted as dropped."""
    dropped = 0
    for r, t, sk, order, used in indexes:
        unmatched = np.flatnonzero(~used)
        if not len(unmatched):
            continue
        if sources.opts.on_missing == "error":
            shown = ", ".join(f"{py(t[ID_KEY][i])!r} (row {int(i)})" for i in unmatched[:5])
            raise DataError(
                f"{r.display}: {len(unmatched)} id(s) have no row in {primary.display}: {shown}. "
                f"Expected every id on both sides; {opt('on_missing')} drop leaves them out and counts them."
            )
        dropped += len(unmatched)
    return dropped


def joined(sources, readers: list[Reader], rows: int):
    """Chunks of the prediction file with the matching rows of the other files (see module)."""
    primary = sources.inputs[0].reader
    tables = _read_whole(sources, [r for r in readers if r is not primary], rows)
    prim_cursor = Cursor(sources, primary, rows)
    first = prim_cursor.take(rows)
    if not first:
        raise DataError(f"{primary.display} has no data rows. Expected one row per sample.")
    as_text = any(t[ID_KEY].dtype.kind not in "iu" for _, t in tables) or cat(first[ID_KEY]).dtype.kind not in "iu"
    indexes = _index(sources, tables, as_text)
    start = 0
    pending = first
    while pending:
        ids_raw = cat(pending[ID_KEY])
        ids = norm_ids(ids_raw, as_text)
        n = len(ids)
        prim = np.arange(start, start + n, dtype=np.int64)
        found, pos_by_reader = _lookup(indexes, ids)
        _mark_used(sources, primary, indexes, found, pos_by_reader)
        _missing_here(sources, primary, indexes, found, ids_raw, start)
        kept = np.flatnonzero(found)
        arrays: dict[str, np.ndarray] = {}
        role_rows: dict[str, np.ndarray] = {}
        for key, parts in pending.items():
            if key != ID_KEY:
                arrays[key] = cat(parts)[kept]
        for r, t, *_ in indexes:
            pos = pos_by_reader[id(r)][kept]
            for key, values in t.items():
                if key != ID_KEY:
                    arrays[key] = values[pos]
            for inp in sources.inputs:
                if inp.reader is r:
                    role_rows[inp.role.name] = pos
        for inp in sources.inputs:
            if inp.reader is primary:
                role_rows[inp.role.name] = prim[kept]
        yield arrays, role_rows, prim, kept, ids_raw
        start += n
        pending = prim_cursor.take(rows)
    sources.dropped_target += _unmatched(sources, primary, indexes)
