"""Text from data shown literally: never as markup, terminal control or a spreadsheet formula.

Ids, group values, file and column names, check names, loss names from plugins and values
read from state files reach human-readable outputs (the Rich table, markdown, JUnit, messages
on stderr). One rule applies to all of them, :func:`visible`: characters that would act on
a terminal or a viewer instead of being shown (C0/C1 control characters such as ESC, DEL,
bidirectional overrides, line separators, lone surrogates) are written as Python-style
escapes (``\\x1b``, ``\\u202e``). Rich consoles are created with markup and emoji codes
off, so ``[/]`` or ``[link=...]`` in data is printed as typed.

Machine outputs (JSON, CSV, Parquet, NPY) carry data unchanged; only ``--csv-safe`` alters
CSV text cells (:func:`spreadsheet_safe`).
"""

from __future__ import annotations

import re
from typing import Any

# C0 controls, DEL and C1 controls; the Arabic letter mark, LRM/RLM, line and paragraph separators,
# bidi embeddings/overrides/isolates; lone surrogates (undecodable bytes of a file name); U+FFFE/U+FFFF.
_UNSAFE = re.compile(
    "[\x00-\x1f\x7f-\x9f\u061c\u200e\u200f\u2028\u2029\u202a-\u202e\u2066-\u2069\ud800-\udfff\ufffe\uffff]"
)
_SHORT = {"\n": "\\n", "\r": "\\r", "\t": "\\t"}


def _escape(m: re.Match) -> str:
    c = m.group()
    if c in _SHORT:
        return _SHORT[c]
    code = ord(c)
    return f"\\x{code:02x}" if code < 0x100 else f"\\u{code:04x}"


def visible(text: Any, keep: str = "") -> str:
    """``text`` (any object, as ``str``) with every character that is not safe to show made
    visible as an escape; characters in ``keep`` (e.g. ``"\\n"``) are left as they are."""
    s = text if isinstance(text, str) else str(text)
    if not _UNSAFE.search(s):
        return s
    if keep:
        return _UNSAFE.sub(lambda m: m.group() if m.group() in keep else _escape(m), s)
    return _UNSAFE.sub(_escape, s)


def literal(obj: Any) -> Any:
    """A copy of a report (dicts, lists, strings, numbers) whose strings, keys included, are
    :func:`visible`: what a human-readable renderer may show as it is."""
    if isinstance(obj, str):
        return visible(obj)
    if isinstance(obj, dict):
        return {(visible(k) if isinstance(k, str) else k): literal(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [literal(v) for v in obj]
    return obj


# A spreadsheet reads these as numbers, which run nothing; anything else starting with a formula
# trigger is a formula (or DDE) to Excel, LibreOffice and Google Sheets.
_PLAIN_NUMBER = re.compile(r"[+-]?(\d+(\.\d*)?|\.\d+)([eE][+-]?\d+)?")
_TRIGGERS = ("=", "+", "-", "@", "\t", "\r", "\n")


def spreadsheet_safe(text: str) -> str:
    """A CSV text cell a spreadsheet shows instead of running (``--csv-safe``): a cell starting
    with ``=``, ``+``, ``-``, ``@``, a tab or a line break gets a leading ``'`` (OWASP's
    advice), unless it is a plain number such as ``-1.5``."""
    if text and text.startswith(_TRIGGERS) and not _PLAIN_NUMBER.fullmatch(text):
        return "'" + text
    return text


__all__ = ["literal", "spreadsheet_safe", "visible"]
