"""Values: integers fit SQLite's 64 bits and floats are finite, wherever they come from
(``--set``, episode files, the config, the Python API); ``show --json`` is always JSON."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest

from hystate.core.errors import InvalidData
from hystate.manager import StateManager
from tests.hostile.checks import accepted, commit_all, episode_files, refused

TOO_BIG = [
    "100000000000000000000000",  # the value
    "9223372036854775808",  # 2**63: one past SQLite's INTEGER
    "-9223372036854775809",
    "0x8000000000000000",
    ".nan",
    ".inf",
    "-.inf",
    "1.0e+999",  # a float that overflows to inf
]


@pytest.mark.parametrize("value", TOO_BIG)
def test_set_refuses_values_sqlite_or_json_cannot_hold(repo: Path, value: str) -> None:
    eid = episode_files(repo)[0].stem
    refused(
        repo,
        ["advance", eid, "downloading", "--set", f"metrics.audio_size={value}"],
        5,
        contains="metrics.audio_size",
    )


def test_set_accepts_the_largest_64_bit_integer_and_show_json_is_json(repo: Path) -> None:
    eid = episode_files(repo)[0].stem
    accepted(repo, ["advance", eid, "downloading", "--set", f"metrics.audio_size={2**63 - 1}"])
    shown = accepted(repo, ["show", eid, "--json"])
    assert json.loads(shown.stdout)["metrics"]["audio_size"] == 2**63 - 1
    listed = accepted(repo, ["list", "--json"], stderr_lines=0)
    assert any(e["metrics"]["audio_size"] == 2**63 - 1 for e in json.loads(listed.stdout))


@pytest.mark.parametrize("value", ["100000000000000000000000", ".nan", "-.inf"])
@pytest.mark.parametrize("command", ["show", "show-json", "list", "status", "advance"])
def test_a_committed_file_with_such_a_value_is_invalid_data(
    repo: Path, value: str, command: str
) -> None:
    """A branch committed the value by hand: every reading command says so, exit 5."""
    path = episode_files(repo)[0]
    field = "audio_size" if "0" in value else "audio_duration"
    text = path.read_text().replace(f"  {field}: null", f"  {field}: {value}")
    assert value in text
    path.write_text(text)
    commit_all(repo)
    argv = {
        "show": ["show", path.stem],
        "show-json": ["show", path.stem, "--json"],
        "list": ["list"],
        "status": ["status"],
        "advance": ["advance", path.stem, "downloading"],
    }[command]
    refused(repo, argv, 5, contains=path.name)


CONFIG_VALUES = [
    ("locks:\n    timeout: .nan", "not finite"),
    ("locks:\n    timeout: 1.0e+400", "not finite"),
    ("locks:\n    timeout: 1.0e+300", "timeout"),
    ("recovery:\n    retry_delay: .inf", "not finite"),
    ("recovery:\n    retry_delay: 1.0e+300", "retry_delay"),
    ("recovery:\n    max_retries:\n      download: 100000000000000000000", "64 bits"),
    ("recovery:\n    max_retries:\n      download: 1000000000", "download"),
    ("recovery:\n    stage_timeouts:\n      downloading: .nan", "not finite"),
    ("monitoring:\n    alert_threshold: 99999999999", "alert_threshold"),
]


@pytest.mark.parametrize(("section", "says"), CONFIG_VALUES)
def test_config_numbers_are_finite_and_bounded(repo: Path, section: str, says: str) -> None:
    (repo / "hystate.yaml").write_text(f"state_management:\n  {section}\n")
    eid = episode_files(repo)[0].stem
    refused(repo, ["advance", eid, "downloading"], 5, contains=says)


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("metrics.audio_size", 10**30),
        ("metrics.video_size", 2**63),
        ("metrics.audio_duration", math.nan),
        ("metrics.audio_duration", math.inf),
        ("metrics.processing_time", -math.inf),
    ],
)
def test_the_python_api_refuses_them_too(repo: Path, field: str, value: object) -> None:
    manager = StateManager(cwd=repo, worker="w")
    eid = episode_files(repo)[0].stem
    before = episode_files(repo)[0].read_bytes()
    with pytest.raises(InvalidData):
        manager.update_state(eid, "downloading", fields={field: value})
    assert episode_files(repo)[0].read_bytes() == before
