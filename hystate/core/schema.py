"""JSON Schema validation of episode files and the config, collecting every problem.

Two validators over the same schema files: ``jsonschema-rs`` (compiled, ~3 us a document)
answers "valid or not" for every read and write; ``jsonschema`` (the reference, ~550 us) is
asked only when a document is invalid, to name every problem with its JSON path and rule. A
property test checks that the two agree. At 100,000 episodes this is the difference between a
cache rebuild of seconds and one of a minute.
"""

from __future__ import annotations

import datetime as dt
import json
import math
from functools import cache
from pathlib import Path
from typing import TYPE_CHECKING, Any

from hystate.core.errors import InvalidData, Problem, shown

if TYPE_CHECKING:
    from jsonschema import Draft202012Validator, FormatChecker
    from jsonschema.exceptions import ValidationError


def _is_date(value: object) -> bool:
    return not isinstance(value, str) or dt.date.fromisoformat(value) is not None


def _is_datetime(value: object) -> bool:
    if not isinstance(value, str):
        return True
    parsed = dt.datetime.fromisoformat(value)
    if parsed.utcoffset() is None:
        raise ValueError("timestamp has no UTC offset")
    return True


@cache
def _formats() -> FormatChecker:
    from jsonschema import FormatChecker

    checker = FormatChecker(formats=())
    checker.checks("date", raises=ValueError)(_is_date)
    checker.checks("date-time", raises=ValueError)(_is_datetime)
    return checker


def schema_dir() -> Path:
    """The schemas: inside the installed package, or ``schema/`` beside a source checkout."""
    # the package's own folder (what importlib.resources.files would answer for it, without
    # importing importlib.resources, zipfile and their readers: ~4 ms of every command)
    packaged = Path(__file__).resolve().parents[1] / "schema"
    if packaged.is_dir():
        return packaged
    return Path(__file__).resolve().parents[2] / "schema"


@cache
def load_schema(name: str) -> dict[str, Any]:
    with open(schema_dir() / f"{name}.schema.json", encoding="utf-8") as fh:
        schema: dict[str, Any] = json.load(fh)
    return schema


@cache
def _validator(name: str) -> Draft202012Validator:
    from jsonschema import Draft202012Validator

    schema = load_schema(name)
    # Local "$ref"s are inlined for speed: resolving them costs ~0.3 ms a document.
    inlined = _inline(schema, schema.get("$defs", {}))
    return Draft202012Validator(inlined, format_checker=_formats())


@cache
def _fast_validator(name: str) -> Any:
    try:
        import jsonschema_rs
    except ImportError:  # pragma: no cover - no wheel for this platform
        return None
    return jsonschema_rs.validator_for(load_schema(name), validate_formats=True)


def is_valid(name: str, doc: Any) -> bool:
    """Whether ``doc`` satisfies schema ``name``: the fast validator when present."""
    fast = _fast_validator(name)
    if fast is not None:
        return bool(fast.is_valid(doc))
    return bool(_validator(name).is_valid(doc))


def _inline(node: Any, defs: dict[str, Any]) -> Any:
    if isinstance(node, dict):
        ref = node.get("$ref")
        if len(node) == 1 and isinstance(ref, str) and ref.startswith("#/$defs/"):
            return _inline(defs[ref.removeprefix("#/$defs/")], defs)
        return {key: _inline(value, defs) for key, value in node.items()}
    if isinstance(node, list):
        return [_inline(value, defs) for value in node]
    return node


def json_path(parts: Any) -> str:
    out = "$"
    for part in parts:
        out += f"[{part}]" if isinstance(part, int) else f".{part}"
    return out


def _message(error: ValidationError, schema: dict[str, Any], doc: Any) -> tuple[str, str]:
    """(JSON path, rule) for one error; invariant rules are named by their description."""
    schema_path = list(error.absolute_schema_path)
    if len(schema_path) >= 3 and schema_path[0] == "allOf" and schema_path[2] == "then":
        rule = schema["allOf"][schema_path[1]]["description"]
        stage = doc.get("stage") if isinstance(doc, dict) else None
        field = json_path(error.absolute_path)
        if error.validator == "required":
            field = json_path([*error.absolute_path, *error.message.split("'")[1:2]])
        return field, f"{rule} (stage {stage})"
    if error.validator == "additionalProperties" and isinstance(error.instance, dict):
        schema_node: Any = error.schema
        known = schema_node.get("properties", {}) if isinstance(schema_node, dict) else {}
        extra = sorted(str(k) for k in error.instance if k not in known)
        allowed = ", ".join(known)
        return (
            json_path([*error.absolute_path, extra[0]] if extra else error.absolute_path),
            f"unknown key {', '.join(map(repr, extra))} (known: {allowed})",
        )
    if error.validator == "required":
        missing = error.message.split("'")[1] if "'" in error.message else "?"
        return json_path([*error.absolute_path, missing]), f"missing key {missing!r}"
    if error.validator == "enum":
        choices: Any = error.validator_value
        allowed = ", ".join(str(v) for v in choices)
        return json_path(error.absolute_path), f"{error.instance!r} is not one of: {allowed}"
    message = error.message
    if len(message) > 300:  # jsonschema quotes the whole value: "'…20 MB…' is too long"
        message = f"{shown(error.instance, 80)}: {error.validator} {shown(error.validator_value)}"
    return json_path(error.absolute_path), message


def schema_problems(name: str, doc: Any, file: str) -> list[Problem]:
    """Every schema violation of ``doc`` (none when the fast validator accepts it)."""
    if is_valid(name, doc):
        return []
    schema = load_schema(name)
    errors = sorted(_validator(name).iter_errors(doc), key=lambda e: list(e.absolute_path))
    problems = []
    for error in errors:
        path, message = _message(error, schema, doc)
        problems.append(Problem(file, path, message))
    return problems


def episode_problems(doc: Any, file: str, *, expect_id: str | None = None) -> list[Problem]:
    """Every way ``doc`` fails to be a valid episode: schema, invariants, file placement."""
    problems = schema_problems("episode", doc, file)
    if not isinstance(doc, dict):
        return problems
    history = doc.get("history")
    last = history[-1] if isinstance(history, list) and history else None
    if isinstance(last, dict) and last.get("to") != doc.get("stage"):
        problems.append(
            Problem(file, "$.stage", "stage differs from the last history entry's 'to'")
        )
    if expect_id is not None and doc.get("episode_id") != expect_id:
        problems.append(
            Problem(file, "$.episode_id", f"episode_id does not match the file name {expect_id!r}")
        )
    return problems


def check_value(name: str, value: Any) -> Any:
    """A value given through the API or ``--set``: integers must fit SQLite's 64 bits and
    floats be finite (the YAML loader enforces the same on every file it reads)."""
    items = value if isinstance(value, list) else [value]
    for item in items:
        if isinstance(item, float) and not math.isfinite(item):
            raise InvalidData(f"{name}: {item!r} is not a finite number")
        if isinstance(item, int) and not -(2**63) <= item < 2**63:
            raise InvalidData(f"{name}: {shown(item)} does not fit in 64 bits")
    return value
