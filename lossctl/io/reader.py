"""The base of every reader: one input, several requests, and how a request's columns are chosen
(named, a glob, a list, or the default selection)."""

from __future__ import annotations

import fnmatch
import re
from typing import TYPE_CHECKING, Iterator

from lossctl.errors import opt
from lossctl.io.parsing import ID_KEY, Request, Source, _is_glob, _split_expr
from lossctl.io.problems import InputDataError

if TYPE_CHECKING:
    import numpy as np


class Reader:
    """Base class: one file, several requests."""

    kind = "file"

    def __init__(self, source: Source):
        self.source = source
        self.requests: dict[str, Request] = {}
        self.rows_read = 0

    # --- set-up ---------------------------------------------------------------
    @property
    def display(self) -> str:
        return self.source.display

    def available(self) -> list[str]:
        raise NotImplementedError

    def scalar_columns(self) -> set[str]:
        """Names usable as one column of a matrix built from several columns."""
        return set(self.available())

    def value_columns(self) -> set[str]:
        """Names holding numbers (scalars or lists of numbers): candidates for a default selection."""
        return set(self.available())

    def add(self, req: Request) -> None:
        self.requests[req.key] = req

    def can_select(self, expr: str) -> bool:
        """Whether ``expr`` names one column of this input (side inputs such as the counts option)."""
        return expr in self.available()

    def resolve(self) -> None:
        names = self.available()
        taken: set[str] = set()
        explicit = [r for r in self.requests.values() if r.expr is not None]
        implicit = [r for r in self.requests.values() if r.expr is None]
        for req in explicit:
            req.names = self._match(req, names)
            taken.update(req.names)
        if implicit:  # (each set computed once: linear in the number of columns)
            value_cols, index_cols = self.value_columns(), self.index_columns()
        for req in implicit:
            free = [n for n in names if n not in taken]
            # Never chosen automatically: pandas index columns and id / key columns.
            skipped = {n: why for n in free if (why := self._not_automatic(n, index_cols))}
            cands = [n for n in free if n not in skipped]
            values = [n for n in cands if n in value_cols]
            if len(cands) == 1:
                req.names = cands
            elif len(values) == 1:
                req.names = values
            elif len(values) > 1 and req.matrix and set(values) <= self.scalar_columns():
                # Several numeric columns left, stacked in file order: only when they are plainly
                # one family (class_0, class_1, ...), never a label or count column among logits.
                stack = values
                if req.dtype == "float":
                    ints = self.integer_columns()
                    stack = [n for n in values if n not in ints] or values
                    skipped.update({n: "integer-typed" for n in values if n not in stack})
                if len(stack) > 1 and not _one_family(stack):
                    raise InputDataError(self._ambiguous_message(req, stack, skipped), file=self.display)
                req.names = stack
            else:
                what = self._what()
                if not free:
                    raise InputDataError(
                        f"{self.display}: no {what} left for {req.key.upper()}: "
                        f"{', '.join(names) or 'none'} are all used by other inputs. "
                        f"Name the {what} as {self.display}:NAME.",
                        file=self.display,
                    )
                if not cands:
                    raise InputDataError(
                        f"{self.display}: no {what} left for {req.key.upper()} that can be chosen "
                        f"automatically ({_skipped_text(skipped)}). Name the {what} as {self.display}:NAME "
                        "if it really holds the values.",
                        file=self.display,
                    )
                raise InputDataError(
                    f"{self.display} has {len(cands)} {what}s ({_listing(cands)}); say which one is "
                    f"{req.key.upper()} as {self.display}:NAME"
                    + (" (or several: NAME_* or A,B,C)." if req.matrix else ".")
                    + (f" Not considered: {_skipped_text(skipped)}." if skipped else ""),
                    file=self.display,
                )
            taken.update(req.names)

    def index_columns(self) -> set[str]:
        """Columns a DataFrame library wrote for its row index (never values)."""
        return set()

    def integer_columns(self) -> set[str]:
        """Scalar columns of integer (or boolean) type: labels or counts, never stacked as logits."""
        return set()

    def _not_automatic(self, name: str, index_cols: set[str]) -> str | None:
        if name in index_cols:
            return "a pandas index column"
        if _looks_like_id(name):
            return "an id / key column"
        return None

    def _ambiguous_message(self, req: Request, stack: list[str], skipped: dict[str, str]) -> str:
        what = self._what()
        family = _largest_family(stack)
        glob_hint = f"{self.display}:'{family}*'" if family else f"{self.display}:'NAME_*'"
        listed = ",".join(stack[:3]) + (",..." if len(stack) > 3 else "")
        return (
            f"{self.display}: cannot tell which {what}s are {req.key.upper()}: the {len(stack)} numeric "
            f"{what}s left ({_listing(stack)}) are not one numbered family (like class_0..class_9), so "
            f"stacking them all could take a label, count or id {what} as a class. Name them: "
            f"{glob_hint} (a glob) or {self.display}:{listed} (a list)."
            + (f" Not considered: {_skipped_text(skipped)}." if skipped else "")
        )

    def _what(self) -> str:
        return "column"

    def _match(self, req: Request, names: list[str]) -> list[str]:
        out: list[str] = []
        known, chosen = set(names), set()
        for part in _split_expr(req.expr or ""):
            if _is_glob(part):
                hits = [n for n in names if fnmatch.fnmatchcase(n, part)]
            else:
                hits = [part] if part in known else []
            if not hits:
                raise InputDataError(self._missing_message(part, names, req.key), file=self.display, column=part)
            for h in hits:
                if h not in chosen:
                    chosen.add(h)
                    out.append(h)
        if len(out) > 1:
            if not req.matrix:
                raise InputDataError(
                    f"{self.display}: {req.key.upper()} takes one column, but {req.expr!r} "
                    f"selects {len(out)} ({_listing(out)}).",
                    file=self.display,
                )
            scalars = self.scalar_columns()
            not_scalar = [n for n in out if n not in scalars]
            if not_scalar:
                raise InputDataError(
                    f"{self.display}: column {not_scalar[0]!r} is not a numeric scalar column, so it "
                    f"cannot be one of several columns stacked into {req.key.upper()}.",
                    file=self.display, column=not_scalar[0],
                )
        return out

    def _missing_message(self, part: str, names: list[str], key: str) -> str:
        import difflib

        what = self._what()
        close = difflib.get_close_matches(part, names, n=3, cutoff=0.6)
        hint = f" Did you mean {' or '.join(repr(c) for c in close)}?" if close else ""
        who = f"the id column ({opt('id_col')})" if key == ID_KEY else key.upper()
        return (
            f"{self.display} has no {what} {part!r} (asked for as {who}).{hint} Available {what}s: {_listing(names)}."
        )

    # --- reading ----------------------------------------------------------------
    def total_rows(self) -> int | None:
        return None

    def row_bytes(self) -> int | None:
        return None

    def batches(self, rows: int) -> Iterator[dict[str, np.ndarray]]:
        raise NotImplementedError

    def close(self) -> None:
        pass


_ID_WORDS = {"id", "ids", "idx", "index", "key", "uuid", "guid", "uid", "rowid", "pk"}
_NUMBERED = re.compile(r"^(.*?)(\d+)$", re.S)


def _looks_like_id(name: str) -> bool:
    """Named like an id or key: ``id``, ``sample_id``, ``row-idx``, ``sampleId``, ``uuid``."""
    words = [w for w in re.split(r"[^0-9A-Za-z]+", name) if w]
    if not words:
        return False
    if words[-1].lower() in _ID_WORDS:
        return True
    return bool(re.search(r"[a-z0-9](Id|ID|Idx|Key)$", words[-1]))


def _one_family(names: list[str]) -> bool:
    """True when the names are PREFIX<k>, PREFIX<k+1>, ... in this order (class_0..class_9)."""
    parts = [_NUMBERED.match(n) for n in names]
    if not all(parts):
        return False
    prefixes = {m.group(1) for m in parts}
    numbers = [int(m.group(2)) for m in parts]
    return len(prefixes) == 1 and numbers == list(range(numbers[0], numbers[0] + len(numbers)))


def _largest_family(names: list[str]) -> str:
    """The PREFIX shared by the most PREFIX<number> names (at least two), for a glob hint."""
    counts: dict[str, int] = {}
    for n in names:
        m = _NUMBERED.match(n)
        if m and m.group(1) and not _is_glob(m.group(1)) and ":" not in m.group(1):
            counts[m.group(1)] = counts.get(m.group(1), 0) + 1
    best = max(counts, key=counts.get, default="")
    return best if counts.get(best, 0) > 1 else ""


def _skipped_text(skipped: dict[str, str]) -> str:
    return "; ".join(f"{n!r} ({why})" for n, why in list(skipped.items())[:6]) + (
        f" and {len(skipped) - 6} more" if len(skipped) > 6 else ""
    )


def _listing(names: list[str], limit: int = 12) -> str:
    shown = ", ".join(repr(n) for n in names[:limit])
    if len(names) > limit:
        shown += f" and {len(names) - limit} more"
    return shown or "none"


def _shape_str(shape) -> str:
    return "(" + ", ".join(str(s) for s in shape) + ("," if len(shape) == 1 else "") + ")"
