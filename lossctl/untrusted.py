"""Reading what a user (or anyone) wrote: JSON documents, config tables, saved states.

A small declarative schema: a *rule* is a function ``rule(value) -> value`` that returns the
value (converted where that is lossless) or raises :class:`Bad` with what was expected.
A schema is a dict ``key -> rule``; :func:`validate` applies it to a table and names the
key that is wrong. Rules nest (:func:`table_of`, :func:`list_of`), and :class:`Bad` carries
the path inside the document (``terms[2].weight``, ``state.all.stats.m2``).

Strings are never booleans or numbers; booleans are never numbers.
"""

from __future__ import annotations

import math
from typing import Any, Callable

Rule = Callable[[Any], Any]


class Bad(Exception):
    """A value does not have the expected type or range; ``path`` is where in the document."""

    def __init__(self, expected: str, value: Any = None, path: str = "", show_value: bool = True):
        super().__init__(expected)
        self.expected = expected
        self.value = value
        self.path = path
        self.show_value = show_value

    def at(self, key: str) -> "Bad":
        """The same problem, one level further out (``key`` is the enclosing key or index)."""
        if self.path.startswith("["):
            self.path = key + self.path
        else:
            self.path = key + ("." + self.path if self.path else "")
        return self

    def describe(self) -> str:
        """``expected …; got …`` (the value shortened, shown literally)."""
        text = f"expected {self.expected}"
        if self.show_value:
            text += f"; got {shown(self.value)}"
        return text


def shown(value: Any, limit: int = 60) -> str:
    """A value as the user would have written it, in one short line."""
    if isinstance(value, bool):
        text = "true" if value else "false"
    elif isinstance(value, str):
        text = "the string " + repr(value)
    elif isinstance(value, dict):
        text = "a table" if value else "an empty table"
    elif isinstance(value, list):
        text = "a list of " + str(len(value)) if value else "an empty list"
    elif value is None:
        text = "null"
    else:
        text = repr(value)
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _is_number(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool)


# -- scalar rules ------------------------------------------------------------------


def text(v: Any) -> str:
    if not isinstance(v, str) or not v:
        raise Bad("a non-empty string", v)
    return v


def char(v: Any) -> str:
    if not isinstance(v, str) or len(v) != 1:
        raise Bad("one character (a string)", v)
    return v


def flag(v: Any) -> bool:
    if not isinstance(v, bool):
        raise Bad("true or false (a boolean, not a string)", v)
    return v


def one_of(*allowed: str) -> Rule:
    def rule(v: Any) -> str:
        if not isinstance(v, str) or v not in allowed:
            raise Bad("one of " + ", ".join(repr(a) for a in allowed), v)
        return v

    return rule


def integer(low: int | None = None, high: int | None = None) -> Rule:
    """A whole number (an integer, not a float or a string) in [low, high]."""
    span = f" in [{low}, {high}]" if low is not None and high is not None else (f" >= {low}" if low is not None else "")

    def rule(v: Any) -> int:
        if not isinstance(v, int) or isinstance(v, bool):
            raise Bad("an integer" + span, v)
        if (low is not None and v < low) or (high is not None and v > high):
            raise Bad("an integer" + span, v)
        return v

    return rule


def number(
    low: float | None = None,
    high: float | None = None,
    low_open: bool = False,
    high_open: bool = False,
    finite: bool = False,
) -> Rule:
    """A number (not NaN) in the given interval."""
    if low is None and high is None:
        span = " (finite)" if finite else ""
    else:
        span = (
            f" in {'(' if low_open else '['}{'-inf' if low is None else f'{low:g}'}, "
            f"{'inf' if high is None else f'{high:g}'}{')' if high_open else ']'}"
        )

    def rule(v: Any) -> float:
        if not _is_number(v):
            raise Bad("a number" + span, v)
        x = float(v)
        bad = (
            math.isnan(x)
            or (finite and not math.isfinite(x))
            or (low is not None and (x < low or (low_open and x == low)))
            or (high is not None and (x > high or (high_open and x == high)))
        )
        if bad:
            raise Bad("a number" + span, v)
        return x

    return rule


def number_or_text(v: Any) -> Any:
    if _is_number(v) and not math.isnan(float(v)):
        return float(v)
    if isinstance(v, str) and v:
        return v
    raise Bad("a number or a file name", v)


def any_value(v: Any) -> Any:
    return v


def maybe(rule: Rule) -> Rule:
    """``null`` or what ``rule`` accepts."""

    def inner(v: Any) -> Any:
        return None if v is None else rule(v)

    return inner


# -- containers ------------------------------------------------------------------


def validate(table: Any, schema: dict[str, Rule], required: tuple[str, ...] = (), what: str = "a table") -> dict:
    """``table`` checked against ``schema``: every present key by its rule, ``required`` present.

    Unknown keys are the caller's business (it has better hints); they pass through unchanged.
    """
    if not isinstance(table, dict):
        raise Bad(what, table)
    out = dict(table)
    for key in required:
        if key not in table:
            raise Bad("this key (it is required)", path=key, show_value=False)
    for key, rule in schema.items():
        if key in table:
            try:
                out[key] = rule(table[key])
            except Bad as bad:
                raise bad.at(key) from None
    return out


def table_of(schema: dict[str, Rule], required: tuple[str, ...] = (), closed: bool = True) -> Rule:
    """A nested table; ``closed``: no keys beyond the schema's."""

    def rule(v: Any) -> dict:
        out = validate(v, schema, required)
        if closed:
            for key in v:
                if key not in schema:
                    raise Bad("no such key", path=str(key), show_value=False)
        return out

    return rule


def list_of(item: Rule, min_len: int = 0, what: str = "a list") -> Rule:
    def rule(v: Any) -> list:
        if not isinstance(v, list):
            raise Bad(what, v)
        if len(v) < min_len:
            raise Bad(f"{what} of at least {min_len} item{'s' if min_len != 1 else ''}", v)
        out = []
        for i, x in enumerate(v):
            try:
                out.append(item(x))
            except Bad as bad:
                raise bad.at(f"[{i}]") from None
        return out

    return rule


def pair(first: Rule, second: Rule) -> Rule:
    """A list of exactly two items."""

    def rule(v: Any) -> list:
        if not isinstance(v, list) or len(v) != 2:
            raise Bad("a pair [a, b]", v)
        out = []
        for i, (r, x) in enumerate(zip((first, second), v)):
            try:
                out.append(r(x))
            except Bad as bad:
                raise bad.at(f"[{i}]") from None
        return out

    return rule


def scalar(v: Any) -> Any:
    """A string, a number, a boolean or null (a group value, an id)."""
    if v is None or isinstance(v, (str, int, float)):
        return v
    raise Bad("a string, a number or null", v)


def dict_of(value: Rule, key: Rule = any_value) -> Rule:
    """A table whose keys are data (e.g. sketch bucket numbers)."""

    def rule(v: Any) -> dict:
        if not isinstance(v, dict):
            raise Bad("a table", v)
        for k, x in v.items():
            try:
                key(k)
                value(x)
            except Bad as bad:
                raise bad.at(str(k)) from None
        return v

    return rule


# -- JSON ------------------------------------------------------------------------


def _no_constant(token: str):
    raise ValueError(f"{token} is not JSON (lossctl writes non-finite numbers as strings)")


def read_json(path: str) -> Any:
    """Parse a JSON file strictly: no NaN/Infinity tokens; deep nesting is an error, not a crash.

    Raises ``FileNotFoundError`` and ``ValueError`` (with a one-line reason) only.
    """
    with open(path, "rb") as fh:
        return parse_json(fh.read())


def parse_json(raw: bytes) -> Any:
    """:func:`read_json` of bytes already read."""
    import json

    try:
        return json.loads(raw.decode("utf-8-sig"), parse_constant=_no_constant)
    except RecursionError:
        raise ValueError("nested too deeply") from None
    except UnicodeDecodeError as exc:
        raise ValueError(f"not UTF-8 text ({exc.reason} at byte {exc.start})") from None
    except json.JSONDecodeError as exc:
        raise ValueError(f"{exc.msg} at line {exc.lineno} column {exc.colno}") from None


__all__ = [
    "Bad",
    "char",
    "dict_of",
    "flag",
    "integer",
    "list_of",
    "maybe",
    "number",
    "number_or_text",
    "one_of",
    "pair",
    "parse_json",
    "read_json",
    "scalar",
    "shown",
    "table_of",
    "text",
    "validate",
]
