"""ECMA 262 regular expressions and JSON Schema formats as jsonschema_rs reads them, for the
compiled schema check (``hystate.core.schema_check``): a pattern becomes a Python regular
expression matching exactly the same strings (``\\d`` and ``\\w`` ASCII, ``\\s`` ECMA's 25
white-space characters, ``$`` only at the very end) or Unsupported; a format check says True only
for what jsonschema_rs certainly accepts, never False."""

from __future__ import annotations

import datetime as dt
import re
from collections.abc import Callable
from typing import Any

Check = Callable[[Any], bool | None]

_ECMA_SPACE = "\t\n\x0b\x0c\r \xa0\u1680\u2000-\u200a\u2028\u2029\u202f\u205f\u3000\ufeff"
_CLASS_ESCAPES = {"d": "0-9", "w": "A-Za-z0-9_", "s": _ECMA_SPACE}
_CHAR_ESCAPES = {"n": "\n", "t": "\t", "r": "\r", "f": "\f", "v": "\v"}
_DATE = re.compile(r"[0-9]{4}-[0-9]{2}-[0-9]{2}\Z")
_DATETIME = re.compile(
    r"([0-9]{4}-[0-9]{2}-[0-9]{2})T([0-9]{2}):([0-9]{2}):([0-9]{2})(\.[0-9]{1,6})?"
    r"(Z|[+-]([0-9]{2}):([0-9]{2}))\Z"
)


class Unsupported(Exception):
    """The schema uses something the compiled check does not translate exactly."""


# -- regular expressions (ECMA 262 as jsonschema_rs reads them) -------------------------------


def translate(pattern: str) -> str:
    """``pattern`` as a Python regular expression matching the same strings (for re.search);
    Unsupported for any construct outside the plain subset."""
    out, i = [], 0
    while i < len(pattern):
        ch = pattern[i]
        if ch == "\\":
            text, i, _ = _escape(pattern, i + 1, in_class=False)
            out.append(text)
            continue
        if ch == "[":
            text, i = _char_class(pattern, i + 1)
            out.append(text)
            continue
        if ch == "(":
            if pattern[i + 1 : i + 2] == "?":
                raise Unsupported(pattern)
            out.append("(?:")
        elif ch == "$":
            out.append(r"\Z")
        elif ch == "{":
            match = re.compile(r"\{[0-9]+(,[0-9]*)?\}").match(pattern, i)
            if match is None or not out:
                raise Unsupported(pattern)
            out.append(match.group())
            i = match.end()
            continue
        elif ch in "^)|?*+":
            out.append(ch)
        elif ch in ".]}":
            raise Unsupported(pattern)
        else:
            out.append(re.escape(ch))
        i += 1
    return "".join(out)


def _escape(pattern: str, i: int, *, in_class: bool) -> tuple[str, int, str | None]:
    """One escape at ``pattern[i]`` (after the backslash): (Python text, next index, the one
    character it stands for, or None for a class such as ``\\d``)."""
    if i >= len(pattern):
        raise Unsupported(pattern)
    ch = pattern[i]
    if ch in _CLASS_ESCAPES:
        members = _class_body(_CLASS_ESCAPES[ch])
        return (members if in_class else f"[{members}]"), i + 1, None
    if ch in _CHAR_ESCAPES:
        char, i = _CHAR_ESCAPES[ch], i + 1
    elif ch == "x" and re.fullmatch(r"[0-9A-Fa-f]{2}", pattern[i + 1 : i + 3]):
        char, i = chr(int(pattern[i + 1 : i + 3], 16)), i + 3
    elif ch == "u" and re.fullmatch(r"[0-9A-Fa-f]{4}", pattern[i + 1 : i + 5]):
        char, i = chr(int(pattern[i + 1 : i + 5], 16)), i + 5
    elif ch.isascii() and not ch.isalnum():  # an escaped punctuation mark is itself
        char, i = ch, i + 1
    else:
        raise Unsupported(pattern)
    return _literal(char), i, char


def _literal(ch: str) -> str:
    """``ch`` as itself in a Python pattern, in a class or out (short: compiling is per process)."""
    if ch.isascii() and ch.isalnum():
        return ch
    if " " < ch < "\x7f":
        return "\\" + ch
    return f"\\U{ord(ch):08x}"


def _class_body(spec: str) -> str:
    """``a-z`` style text (ranges written with a plain hyphen) as escaped class members."""
    out, i = [], 0
    while i < len(spec):
        if i + 2 < len(spec) and spec[i + 1] == "-":
            out.append(f"{_literal(spec[i])}-{_literal(spec[i + 2])}")
            i += 3
        else:
            out.append(_literal(spec[i]))
            i += 1
    return "".join(out)


def _char_class(pattern: str, i: int) -> tuple[str, int]:
    """A class starting after ``[``: (Python text, index after ``]``)."""
    out = ["["]
    if pattern[i : i + 1] == "^":
        out.append("^")
        i += 1
    # (text, the single character or None for a class escape, written as a plain hyphen)
    items: list[tuple[str, str | None, bool]] = []
    while True:
        if i >= len(pattern):
            raise Unsupported(pattern)
        ch = pattern[i]
        if ch == "]":
            break
        if ch == "[":
            raise Unsupported(pattern)
        if ch == "\\":
            text, i, single = _escape(pattern, i + 1, in_class=True)
            items.append((text, single, False))
        else:
            items.append((_literal(ch), ch, ch == "-"))
            i += 1
    if not items:
        raise Unsupported(pattern)
    j = 0
    while j < len(items):
        text, single, _ = items[j]
        is_range = j + 2 < len(items) and items[j + 1][2]
        high = items[j + 2][1] if is_range else None
        if single is not None and high is not None:
            low = single
            if ord(low) > ord(high):
                raise Unsupported(pattern)
            out.append(f"{_literal(low)}-{_literal(high)}")
            j += 3
            continue
        if is_range:  # a class escape at a range's end: ECMA and Python differ
            raise Unsupported(pattern)
        out.append(text)
        j += 1
    out.append("]")
    return "".join(out), i + 1


# -- formats -----------------------------------------------------------------------------------


def format_check(name: str) -> Check:
    """True for what jsonschema_rs certainly accepts; never False (None: ask it)."""
    if name == "date":

        def check(value: Any) -> bool | None:
            if not isinstance(value, str):
                return True
            if _DATE.match(value) and _valid_date(value):
                return True
            return None

        return check
    if name == "date-time":

        def check_time(value: Any) -> bool | None:
            if not isinstance(value, str):
                return True
            match = _DATETIME.match(value)
            if match is None or not _valid_date(match.group(1)):
                return None
            hour, minute, second = (int(match.group(n)) for n in (2, 3, 4))
            if hour > 23 or minute > 59 or second > 59:
                return None
            if match.group(7) is not None and (
                int(match.group(7)) > 23 or int(match.group(8)) > 59
            ):
                return None
            return True

        return check_time
    raise Unsupported(f"format {name}")


def _valid_date(text: str) -> bool:
    try:
        return dt.date.fromisoformat(text).year >= 1
    except ValueError:
        return False
