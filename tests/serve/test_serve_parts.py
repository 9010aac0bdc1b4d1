"""The serve package's pure parts: the chart's thinning, the token checks, SSE encoding."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from hystate.core.errors import UsageError
from hystate.serve import actions, feed, readmodel


def test_thin_keeps_shape_and_last_point() -> None:
    start = datetime(2026, 1, 1, tzinfo=UTC)
    points = [((start + timedelta(seconds=i)).isoformat(), i + 1) for i in range(50_000)]
    short = [(start.isoformat(), 1), ((start + timedelta(days=1)).isoformat(), 2)]
    thinned = readmodel.thin({"downloaded": points, "published": short, "converted": []})
    line = thinned["downloaded"]
    assert len(line) <= readmodel.CHART_POINTS + 1
    assert line[-1] == points[-1]  # the final count is always shown
    assert [n for _, n in line] == sorted(n for _, n in line)  # still cumulative
    assert thinned["published"] == short and thinned["converted"] == []


def test_token_checks(tmp_path: Path) -> None:
    token = "a" * 20
    assert actions.token_ok(token, f"Bearer {token}")
    for header in (None, "", token, f"Basic {token}", f"Bearer {token}x", "Bearer "):
        assert not actions.token_ok(token, header)
    path = tmp_path / "token"
    path.write_text(f"{token}\nignored\n")
    assert actions.load_token(path, "b" * 30) == token  # the file wins
    assert actions.load_token(None, f"  {'c' * 16}  ") == "c" * 16
    for bad in ("", "short", "x" * 15, "tab\there-and-long-enough"):
        with pytest.raises(UsageError):
            actions.load_token(None, bad)
    with pytest.raises(UsageError, match="cannot read the token file"):
        actions.load_token(tmp_path / "missing", None)


def test_sse_encoding_is_one_data_line() -> None:
    event = feed.encode("commit", {"subject": "a\nb\r\nc </script>"}, "f" * 40)
    text = event.decode()
    assert text.endswith("\n\n") and text.count("\n") == 4
    lines = text.splitlines()
    assert lines[:2] == [f"id: {'f' * 40}", "event: commit"]
    assert json.loads(lines[2].removeprefix("data: "))["subject"] == "a\nb\r\nc </script>"
