"""The event stream's settings and best-effort publish, without a broker: URL checks and
redaction, the documented config block, bounded values, one notice at most."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

from hystate.core.config import Config
from hystate.core.errors import InvalidData
from hystate.core.urls import check_broker_url as check_url
from hystate.events.redis_streams import redact
from hystate.events.source import bounded
from hystate.manager import StateManager

DOCUMENTED = b"""state_management:
  events:
    enabled: true
    backend: redis
    url: redis://127.0.0.1:6379/0
    stream: hystate:transitions
    maxlen: 1000000
    ref: null
    timeout: 2
"""


@pytest.mark.parametrize(
    "url",
    [
        "redis://127.0.0.1:6379/0",
        "rediss://user:pw@redis.example.org:6380/2",
        "redis://[::1]:6379",
        "unix:///run/redis/redis.sock",
    ],
)
def test_good_urls(url: str) -> None:
    assert check_url(url) is None


@pytest.mark.parametrize(
    ("url", "why"),
    [
        ("http://user:s3cret@host/0", "must start with redis://"),
        ("redis://user:s3cret@host/db", "database that is not a number"),
        ("redis://user:s3cret@host:0/0", "port 0"),
        ("redis://user:s3cret@host:99999/0", "not a URL"),
        ("redis:///0", "no host"),
        ("redis://user:s3cret@host/0\r\nFLUSHALL", "control characters"),
        ("unix://", "no socket path"),
        (42, "must be a string"),
    ],
)
def test_bad_urls_say_why_without_the_secret(url: object, why: str) -> None:
    problem = check_url(url)
    assert problem is not None and why in problem and "s3cret" not in problem


def test_redaction() -> None:
    assert redact("redis://user:s3cret@h:1/0") == "redis://***@h:1/0"
    assert redact("rediss://:s3cret@h/3") == "rediss://***@h/3"
    assert redact("redis://h:6379/0") == "redis://h:6379/0"
    assert redact("unix:///run/r.sock") == "unix:///run/r.sock"


def test_the_documented_block_is_valid_and_defaults_are_off(tmp_path: Path) -> None:
    config = Config.parse(DOCUMENTED, tmp_path / "hystate.yaml")
    assert config.get("events.enabled") is True and config.get("events.ref") is None
    assert Config.defaults().get("events.enabled") is False
    for bad, key in [
        (b"state_management:\n  events:\n    maxlen: 5\n", "maxlen"),
        (b"state_management:\n  events:\n    timeout: 0\n", "timeout"),
        (b"state_management:\n  events:\n    stream: 'a b'\n", "stream"),
        (b"state_management:\n  events:\n    backend: kafka\n", "backend"),
        (b"state_management:\n  events:\n    ref: '../x'\n", "ref"),
        (b"state_management:\n  events:\n    ref: refs/../../etc/passwd\n", "ref"),
        (b"state_management:\n  events:\n    ref: refs/heads/x.lock\n", "ref"),
        (b"state_management:\n  events:\n    colour: red\n", "events"),
    ]:
        with pytest.raises(InvalidData, match=key):
            Config.parse(bad, tmp_path / "hystate.yaml")


def test_bounded_values() -> None:
    assert bounded("a\x1b[2Jb\u202ec\ud800", 100) == "a\\u001b[2Jb\\u202ec\\ud800"
    assert len(bounded("x" * 10_000, 300)) == 300
    assert bounded(None, 10) == "" and bounded(12, 10) == ""


def test_without_redis_py_transitions_succeed_with_one_notice(
    repo: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (repo / "hystate.yaml").write_bytes(DOCUMENTED)
    monkeypatch.setitem(sys.modules, "redis", None)  # the extra is not installed
    manager = StateManager(cwd=repo, worker="w")
    told: list[str] = []
    manager.notice = told.append
    for eid in sorted(p.stem for p in manager.store.iter_paths())[:3]:
        assert manager.update_state(eid, "downloading").commit
    assert len(told) == 1 and "pip install 'hystate[redis]'" in told[0]


def test_events_off_costs_no_broker(repo: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import hystate.events.publisher

    def refuse(*args: object, **kwargs: object) -> None:
        raise AssertionError("no publisher when events are off")

    monkeypatch.setattr(hystate.events.publisher.Publisher, "__init__", refuse)
    manager = StateManager(cwd=repo, worker="w")
    eid = sorted(p.stem for p in manager.store.iter_paths())[0]
    assert manager.update_state(eid, "downloading").commit
