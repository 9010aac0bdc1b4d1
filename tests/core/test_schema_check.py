"""The schema compiled into Python (hystate.core.schema_check) may be unsure, never wrong:
wherever it answers, jsonschema_rs (the validator of record) answers the same."""

from __future__ import annotations

import copy
import json
import random
import subprocess
import sys
from pathlib import Path
from typing import Any

import jsonschema_rs
import pytest

from hystate.core.config import Config
from hystate.core.model import EpisodeState, ProcessingStage, new_episode
from hystate.core.rules import Change, apply_change
from hystate.core.schema import load_schema
from hystate.core.schema_check import compile_schema, translate

S = ProcessingStage
AT = "2026-01-01T00:00:00+00:00"


def _walk(stages: list[tuple[S, dict[str, Any]]]) -> dict[str, Any]:
    episode = EpisodeState(new_episode("hy0_ep", title="t", date="2004-01-01", at=AT, by="t"))
    for stage, fields in stages:
        change = Change(
            stage, AT, "t", worker="w", fields=[(tuple(k.split(".")), v) for k, v in fields.items()]
        )
        if stage is S.FAILED:
            change.error = "HTTP 503"
        episode = EpisodeState(apply_change(episode, change))
    return episode.data


def episodes() -> list[dict[str, Any]]:
    audio = {"files.audio_file": "audio/x.mp3", "metrics.audio_size": 28_000_000}
    video = {"files.video_file": "video/x.mp4"}
    return [
        _walk([]),
        _walk([(S.DOWNLOADING, {})]),
        _walk([(S.DOWNLOADING, {}), (S.DOWNLOADED, audio)]),
        _walk([(S.DOWNLOADING, {}), (S.FAILED, {})]),
        _walk([(S.DOWNLOADING, {}), (S.DOWNLOADED, audio), (S.CONVERTING, {}), (S.CONVERTED, video),
               (S.UPLOADING, {}), (S.UPLOADED, {"youtube.video_id": "abcDEF12345"}),
               (S.SCHEDULED, {"youtube.scheduled_date": "2027-01-01T18:00:00+00:00"}),
               (S.PUBLISHED, {"youtube.published_date": "2027-01-01T18:00:00+00:00"})]),
        _walk([(S.DOWNLOADING, {}), (S.DOWNLOADED, audio), (S.CONVERTING, {}), (S.FAILED, {})]),
        _walk([(S.SKIPPED, {})]),
    ]  # fmt: skip


# values a mutation puts anywhere: the edges where Python and ECMA, or YAML and JSON, differ
TRICKY: list[Any] = [
    None, True, False, 0, 1, -1, 1.0, 0.5, -0.0, 2**53, 2**63 - 1, 10**30, 1e300,
    "", "x", " ", "a b", "a\n", "\n", "abc\u00a0", "\u2003", "\ufeff", "\x1c", "\x85", "é",
    "٣", "2004-04-14", "2004-02-30", "2004-02-29", "2003-02-29", "0000-01-01", "2004-4-14",
    "2004-04-14\n", "\uff12\uff10\uff10\uff14-04-14", "2026-01-01T00:00:00+00:00", "2026-01-01T00:00:00Z",
    "2026-01-01T00:00:00", "2026-01-01T24:00:00Z", "2026-01-01T23:59:60Z", "2026-01-01 00:00:00Z",
    "2026-01-01t00:00:00z", "2026-01-01T00:00:00.123456+05:30", "2026-01-01T00:00:00+25:00",
    "2026-01-01T00:00:00.1234567Z", "downloaded", "failed", "uploading", "published",
    "https://archive.org/x", "https://a b", "http://x\x7f", "redis://h:6379", "PL1", "bad id",
    "abcDEF12345", "d41d8cd98f00b204e9800998ecf8427e", "D41D8CD98F00B204E9800998ECF8427E",
    "a" * 300, "a/../b", "a//b", "x.lock", "index.json", "1.5c3b863b", "\ud800",
    [], ["PL1"], ["PL1", "PL1"], [1, 1.0], [True, 1], [None], [{}], {}, {"a": 1}, {1: "x"},
    {"source_url": None}, b"bytes",
]  # fmt: skip


def _paths(doc: Any, prefix: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    found = [prefix]
    if isinstance(doc, dict):
        for k, v in doc.items():
            found += _paths(v, (*prefix, k))
    elif isinstance(doc, list):
        for i, v in enumerate(doc):
            found += _paths(v, (*prefix, i))
    return found


def mutate(doc: Any, rng: random.Random) -> Any:
    doc = copy.deepcopy(doc)
    for _ in range(rng.randint(1, 3)):
        paths = [p for p in _paths(doc) if p]
        if not paths:
            break
        path = rng.choice(paths)
        parent = doc
        for part in path[:-1]:
            parent = parent[part]
        how = rng.random()
        if how < 0.15 and isinstance(parent, dict):
            del parent[path[-1]]
        elif how < 0.25 and isinstance(parent, dict):
            parent[rng.choice(["extra", "Stage", "x_y"])] = rng.choice(TRICKY)
        elif how < 0.35 and isinstance(parent[path[-1]], str):
            parent[path[-1]] += rng.choice([" ", "\n", "/", "é", "\u3000", "x" * 120])
        else:
            parent[path[-1]] = copy.deepcopy(rng.choice(TRICKY))
    if rng.random() < 0.3 and isinstance(doc, dict):
        doc["stage"] = rng.choice([s.value for s in S])
    return doc


def _agree(name: str, docs: list[Any]) -> tuple[int, int]:
    check = compile_schema(load_schema(name))
    assert check is not None, (
        f"the {name} schema no longer compiles: every command pays jsonschema_rs"
    )
    record = jsonschema_rs.validator_for(load_schema(name), validate_formats=True)
    answered = valid = 0
    for doc in docs:
        verdict = check(doc)
        if verdict is None:
            continue
        try:
            expected = record.is_valid(doc)
        except (ValueError, TypeError, OverflowError):  # not a JSON value at all
            expected = False
        assert verdict == expected, (name, doc)
        answered += 1
        valid += verdict
    return answered, valid


def test_valid_episodes_are_valid_without_jsonschema_rs() -> None:
    check = compile_schema(load_schema("episode"))
    assert check is not None
    for doc in episodes():
        assert check(doc) is True, doc


def test_the_compiled_episode_check_never_contradicts_jsonschema_rs() -> None:
    rng = random.Random(29)
    base = episodes()
    docs = [mutate(rng.choice(base), rng) for _ in range(4000)]
    answered, valid = _agree("episode", docs)
    # it decides most documents (else it would buy nothing), valid and invalid ones
    assert answered > 3000 and 0 < valid < answered


def test_the_compiled_config_check_never_contradicts_jsonschema_rs() -> None:
    rng = random.Random(7)
    base = {"hystate": json.loads(json.dumps(Config.defaults().values))}
    docs = [base] + [mutate(base, rng) for _ in range(3000)]
    answered, valid = _agree("config", docs)
    assert answered > 2000 and 0 < valid < answered


def _ecma(pattern: str, text: str) -> bool:
    return bool(jsonschema_rs.validator_for({"type": "string", "pattern": pattern}).is_valid(text))


def test_class_escapes_are_ecma_262_over_every_code_point() -> None:
    for escape in (r"\d", r"\s", r"\w", r"[^\s/]", r"[\s\x00-\x1f]"):
        ours = __import__("re").compile(translate(f"^{escape}$"))
        record = jsonschema_rs.validator_for({"type": "string", "pattern": f"^{escape}$"})
        for code in range(0x110000):
            if 0xD800 <= code < 0xE000:
                continue
            char = chr(code)
            assert (ours.search(char) is not None) == record.is_valid(char), (escape, hex(code))


@pytest.mark.parametrize(
    ("pattern", "texts"),
    [
        ("^a$", ["a", "a\n", "\na", "ab"]),
        (r"(\.\.|//|/\.|\.lock$|/$|\.$)", ["a..b", "a/.b", "x.lock", "x.lock\n", "a/", "a.", "ok"]),
        (r"[a\-z]", ["-", "b", "a", "z"]),
        (r"^[!-~][ -~]{0,3}$", ["!", "! ~", "~~~~~", " a", "a\t"]),
        (r"^[0-9]{1,18}\.[0-9a-f]{8}$", ["1.5c3b863b", "1.5C3B863B", "1x5c3b863b"]),
    ],
)
def test_patterns_match_what_jsonschema_rs_matches(pattern: str, texts: list[str]) -> None:
    import re

    ours = re.compile(translate(pattern))
    for text in texts:
        assert (ours.search(text) is not None) == _ecma(pattern, text), (pattern, text)


@pytest.mark.parametrize("pattern", [r"\bword", r"a.b", r"(?=x)", r"\D", r"x{,3}", r"[\d-z]"])
def test_constructs_it_does_not_translate_exactly_are_refused(pattern: str) -> None:
    assert compile_schema({"type": "string", "pattern": pattern}) is None


def test_unknown_keywords_make_no_check() -> None:
    assert compile_schema({"anyOf": [{"type": "string"}]}) is None
    assert compile_schema({"$schema": "http://json-schema.org/draft-07/schema#"}) is None


def test_a_transition_imports_no_jsonschema_rs() -> None:
    """In a fresh interpreter: the config and a valid episode pass without jsonschema_rs, an
    invalid one is judged by it."""
    code = (
        "import json, sys; from hystate.core import schema; doc = json.loads(sys.argv[1]);"
        " assert schema.is_valid('episode', doc); assert 'jsonschema_rs' not in sys.modules;"
        " doc['stage'] = 'nonsense'; assert not schema.is_valid('episode', doc);"
        " assert 'jsonschema_rs' in sys.modules"
    )
    root = Path(__file__).resolve().parents[2]
    args = [sys.executable, "-c", code, json.dumps(episodes()[2])]
    proc = subprocess.run(args, cwd=root, capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr


@pytest.mark.parametrize("char", ["a", "é", "\u3000x", "😀"])
def test_lengths_count_code_points_as_jsonschema_rs_does(char: str) -> None:
    schema = {"type": "string", "minLength": 3, "maxLength": 5, "pattern": "^[^\\s/]+$"}
    check = compile_schema(schema)
    record = jsonschema_rs.validator_for(schema)
    assert check is not None
    for n in range(8):
        text = char * n
        verdict = check(text)
        assert verdict is None or verdict == record.is_valid(text), (char, n)


def test_formats_it_accepts_jsonschema_rs_accepts() -> None:
    from hystate.core.ecma import format_check

    date, when = format_check("date"), format_check("date-time")
    record_date = jsonschema_rs.validator_for({"format": "date"}, validate_formats=True)
    record_when = jsonschema_rs.validator_for({"format": "date-time"}, validate_formats=True)
    years, months, days = ["0000", "0001", "1900", "2004", "2100", "9999"], ["00", "02", "12", "13"], ["00", "01", "29", "30", "31", "32"]  # fmt: skip
    dates = [f"{y}-{m}-{d}" for y in years for m in months for d in days]
    assert any(date(d) for d in dates)
    for text in dates:
        assert date(text) in (True, None) and (date(text) is None or record_date.is_valid(text))
    times = [
        f"{d}T{h}:{m}:{s}{f}{z}"
        for d in ("0001-01-01", "2004-02-29")
        for h in ("00", "23", "24")
        for m in ("00", "59", "60")
        for s in ("00", "59", "60")
        for f in ("", ".1", ".123456")
        for z in ("Z", "+00:00", "-00:00", "+23:59", "+24:00", "+05:60")
    ]
    assert any(when(t) for t in times)
    for text in times:
        assert when(text) in (True, None) and (when(text) is None or record_when.is_valid(text))
