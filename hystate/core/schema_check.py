"""A JSON Schema compiled into Python closures, for a process that validates a few documents.

Importing ``jsonschema_rs`` costs a command ~7 ms (it imports ``decimal``, ``email.utils``,
``socket``, ``calendar``) while a transition validates one document and the config. ``compile``
turns the same schema file into a check that answers True (valid), False (invalid) or None
(not sure); ``hystate.core.schema.is_valid`` trusts only True and asks ``jsonschema_rs``, the
validator of record, for anything else, and for every document once a process has validated
more than a few (a rebuild). So the check may be unsure, never wrong: every True and every
False below is what ``jsonschema_rs`` answers (ECMA regular expressions: ``\\d`` and ``\\w``
ASCII, ``\\s`` ECMA's 25 white-space characters, ``$`` only at the very end), and anything it
does not know exactly (a float where an integer is asked, a format it does not check, a
keyword or a regular-expression construct it does not translate) is None or makes ``compile``
return None. ``tests/core/test_schema_check.py`` compares both on thousands of documents.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable
from typing import Any

from hystate.core.ecma import Check, Unsupported, format_check, translate

_IGNORED = {"$id", "$schema", "$defs", "$comment", "title", "description", "default", "examples"}
_DRAFT = "https://json-schema.org/draft/2020-12/schema"
_SAFE_INT = 2**53


def compile_schema(schema: Any) -> Check | None:
    """The check of ``schema`` (a draft 2020-12 document), or None when it cannot be exact."""
    if not isinstance(schema, dict) or schema.get("$schema", _DRAFT) != _DRAFT:
        return None
    try:
        check = _Compiler(schema.get("$defs", {})).node(schema, 0)
    except (Unsupported, re.error, TypeError, ValueError, KeyError, RecursionError):
        return None

    def whole(doc: Any) -> bool | None:
        return check(doc) if _plain_json(doc, 0) else None

    return whole


def _plain_json(value: Any, depth: int) -> bool:
    """Made only of what both validators read alike: dicts with string keys, lists, strings
    without lone surrogates, 64-bit integers, finite floats, booleans and None."""
    kind = type(value)
    if kind is str:
        return _plain(value)
    if kind is dict:
        return depth < 64 and all(
            type(k) is str and _plain(k) and _plain_json(v, depth + 1) for k, v in value.items()
        )
    if kind is list:
        return depth < 64 and all(_plain_json(v, depth + 1) for v in value)
    if kind is int:
        return bool(-(2**63) <= value < 2**63)
    if kind is float:
        return math.isfinite(value)
    return value is None or kind is bool


# -- values ------------------------------------------------------------------------------------


def _key(value: Any) -> tuple[Any, ...] | None:
    """A hashable key equal for equal JSON values (1 == 1.0, True != 1), None: not sure."""
    if value is None:
        return ("null",)
    if isinstance(value, bool):
        return ("bool", value)
    if isinstance(value, int) and abs(value) < _SAFE_INT:
        return ("num", value)
    if isinstance(value, float) and math.isfinite(value) and abs(value) < _SAFE_INT:
        return ("num", value)
    if isinstance(value, str) and _plain(value):
        return ("str", value)
    return None


def _plain(text: str) -> bool:
    """A string both validators see the same (no lone surrogate, which JSON cannot carry)."""
    if text.isascii():
        return True
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def _type_of(value: Any) -> str | None:
    """The JSON type of a Python value as loaded from YAML or JSON, None: not sure."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, int):
        return "integer"
    if isinstance(value, float):
        return "number" if math.isfinite(value) else None
    if isinstance(value, str):
        return "string" if _plain(value) else None
    if isinstance(value, list):
        return "array"
    if isinstance(value, dict):
        return "object" if all(isinstance(k, str) and _plain(k) for k in value) else None
    return None


def _is_type(value: Any, name: str) -> bool | None:
    kind = _type_of(value)
    if kind is None or (isinstance(value, float) and name == "integer"):
        return None  # 1.0 is an integer to JSON Schema: not decided here
    if name == "number":
        return kind in ("integer", "number")
    return kind == name


def _number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


# -- the compiler ------------------------------------------------------------------------------


class _Compiler:
    def __init__(self, defs: dict[str, Any]) -> None:
        self.defs = defs

    def node(self, schema: Any, depth: int) -> Check:
        if depth > 40:
            raise Unsupported("too deep")
        if schema is True:
            return lambda value: True
        if schema is False:
            return lambda value: False
        if not isinstance(schema, dict):
            raise Unsupported(schema)
        checks: list[Check] = []
        for keyword, arg in schema.items():
            if keyword in _IGNORED or keyword in ("then", "else"):
                continue
            make = getattr(self, "k_" + keyword.replace("$", "_"), None)
            if make is None:
                raise Unsupported(keyword)
            checks.append(make(arg, schema, depth + 1))
        return _all(checks)

    # each k_<keyword> returns the check of that keyword

    def k__ref(self, ref: Any, _s: Any, depth: int) -> Check:
        if not isinstance(ref, str) or not ref.startswith("#/$defs/"):
            raise Unsupported(ref)
        return self.node(self.defs[ref.removeprefix("#/$defs/")], depth)

    def k_type(self, names: Any, _s: Any, _d: int) -> Check:
        wanted = [names] if isinstance(names, str) else list(names)

        def check(value: Any) -> bool | None:
            unsure = False
            for name in wanted:
                verdict = _is_type(value, name)
                if verdict:
                    return True
                unsure = unsure or verdict is None
            return None if unsure else False

        return check

    def k_enum(self, values: Any, _s: Any, _d: int) -> Check:
        keys = {_key(v) for v in values}
        if None in keys:
            raise Unsupported("enum")

        def check(value: Any) -> bool | None:
            key = _key(value)
            if key is None:
                return None if not isinstance(value, (dict, list)) else False
            return key in keys

        return check

    def k_const(self, value: Any, s: Any, d: int) -> Check:
        return self.k_enum([value], s, d)

    def k_properties(self, props: Any, _s: Any, depth: int) -> Check:
        compiled = [(name, self.node(sub, depth)) for name, sub in props.items()]

        def check(value: Any) -> bool | None:
            if not isinstance(value, dict):
                return True
            return _all_of((check(value[name]) for name, check in compiled if name in value))

        return check

    def k_additionalProperties(self, sub: Any, schema: Any, depth: int) -> Check:
        if "patternProperties" in schema:
            raise Unsupported("patternProperties")
        known = set(schema.get("properties", {}))
        extra = self.node(sub, depth)

        def check(value: Any) -> bool | None:
            if not isinstance(value, dict):
                return True
            return _all_of(extra(v) for k, v in value.items() if k not in known)

        return check

    def k_required(self, names: Any, _s: Any, _d: int) -> Check:
        return lambda value: not isinstance(value, dict) or all(n in value for n in names)

    def k_propertyNames(self, sub: Any, _s: Any, depth: int) -> Check:
        names = self.node(sub, depth)
        return lambda value: not isinstance(value, dict) or _all_of(names(k) for k in value)

    def k_minProperties(self, n: Any, _s: Any, _d: int) -> Check:
        return lambda value: not isinstance(value, dict) or len(value) >= n

    def k_maxProperties(self, n: Any, _s: Any, _d: int) -> Check:
        return lambda value: not isinstance(value, dict) or len(value) <= n

    def k_items(self, sub: Any, _s: Any, depth: int) -> Check:
        if not isinstance(sub, (dict, bool)):
            raise Unsupported("items")
        item = self.node(sub, depth)
        return lambda value: not isinstance(value, list) or _all_of(item(v) for v in value)

    def k_minItems(self, n: Any, _s: Any, _d: int) -> Check:
        return lambda value: not isinstance(value, list) or len(value) >= n

    def k_maxItems(self, n: Any, _s: Any, _d: int) -> Check:
        return lambda value: not isinstance(value, list) or len(value) <= n

    def k_uniqueItems(self, flag: Any, _s: Any, _d: int) -> Check:
        def check(value: Any) -> bool | None:
            if not flag or not isinstance(value, list):
                return True
            keys = [_key(v) for v in value]
            if None in keys:
                return None
            return len(set(keys)) == len(keys)

        return check

    def k_minLength(self, n: Any, _s: Any, _d: int) -> Check:
        return lambda value: not isinstance(value, str) or len(value) >= n

    def k_maxLength(self, n: Any, _s: Any, _d: int) -> Check:
        return lambda value: not isinstance(value, str) or len(value) <= n

    def k_pattern(self, pattern: Any, _s: Any, _d: int) -> Check:
        search = re.compile(translate(pattern)).search

        def check(value: Any) -> bool | None:
            if not isinstance(value, str):
                return True
            if not _plain(value):
                return None
            return search(value) is not None

        return check

    def k_format(self, name: Any, _s: Any, _d: int) -> Check:
        return format_check(name)

    def _bound(self, limit: Any, compare: Callable[[Any, Any], bool]) -> Check:
        if not _number(limit):
            raise Unsupported("bound")

        def check(value: Any) -> bool | None:
            if not _number(value):
                return True
            if abs(value) >= _SAFE_INT or (isinstance(value, float) and not math.isfinite(value)):
                return None
            return compare(value, limit)

        return check

    def k_minimum(self, limit: Any, _s: Any, _d: int) -> Check:
        return self._bound(limit, lambda v, n: v >= n)

    def k_maximum(self, limit: Any, _s: Any, _d: int) -> Check:
        return self._bound(limit, lambda v, n: v <= n)

    def k_exclusiveMinimum(self, limit: Any, _s: Any, _d: int) -> Check:
        return self._bound(limit, lambda v, n: v > n)

    def k_exclusiveMaximum(self, limit: Any, _s: Any, _d: int) -> Check:
        return self._bound(limit, lambda v, n: v < n)

    def k_allOf(self, subs: Any, _s: Any, depth: int) -> Check:
        compiled = [self.node(sub, depth) for sub in subs]
        return lambda value: _all_of(check(value) for check in compiled)

    def k_not(self, sub: Any, _s: Any, depth: int) -> Check:
        inner = self.node(sub, depth)

        def check(value: Any) -> bool | None:
            verdict = inner(value)
            return None if verdict is None else not verdict

        return check

    def k_if(self, sub: Any, schema: Any, depth: int) -> Check:
        condition = self.node(sub, depth)
        then = self.node(schema.get("then", True), depth)
        otherwise = self.node(schema.get("else", True), depth)

        def check(value: Any) -> bool | None:
            verdict = condition(value)
            if verdict is None:
                return None
            return then(value) if verdict else otherwise(value)

        return check


def _all_of(verdicts: Any) -> bool | None:
    """Every verdict True: True; one False: False (each is exact); else None."""
    unsure = False
    for verdict in verdicts:
        if verdict is False:
            return False
        unsure = unsure or verdict is None
    return None if unsure else True


def _all(checks: list[Check]) -> Check:
    if len(checks) == 1:
        return checks[0]
    return lambda value: _all_of(check(value) for check in checks)
