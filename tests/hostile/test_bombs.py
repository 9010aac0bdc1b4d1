"""YAML and JSON bombs: depth, aliases and size are bounded before parsing, so a hostile
document is refused at once with exit 5 and one line (before: a segfault of the C loader at
depth ~60,000, a RecursionError at 20,000 nested maps, a MemoryError after 40-60 s for a 1 KB
billion laughs). The same for ``discover``'s input files."""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest

from tests.hostile.checks import commit_all, episode_files, refused, run


def laughs(levels: int = 9) -> str:
    """The billion laughs: ~1 KB that expands to 9**levels strings."""
    lines = ['a: &a ["lol","lol","lol","lol","lol","lol","lol","lol","lol"]']
    names = "abcdefghijklmnop"
    for i in range(1, levels):
        prev = names[i - 1]
        lines.append(f"{names[i]}: &{names[i]} [" + ",".join([f"*{prev}"] * 9) + "]")
    return "\n".join(lines) + "\n"


@pytest.mark.parametrize(
    "value",
    [
        "[" * 70_000,
        "[" * 5_000 + "]" * 5_000,
        "{a: " * 20_000 + "1" + "}" * 20_000,
        "- " * 30_000 + "x",
        "&a [1,2,3,4,5,6,7,8,9]",
    ],
    ids=["flow-list-70000", "flow-list-closed", "flow-map-20000", "block-seq-30000", "anchor"],
)
def test_set_value_bombs_are_refused(repo: Path, value: str) -> None:
    eid = episode_files(repo)[0].stem
    refused(repo, ["advance", eid, "downloading", "--set", f"youtube.playlist_ids={value}"], 5)


def nested_maps(depth: int) -> str:
    return "".join(" " * i + f"k{i}:\n" for i in range(depth)) + " " * depth + "v\n"


FILE_BOMBS = {
    "flow-depth-60000": lambda old: old + "extra: " + "[" * 60_000 + "\n",
    "nested-maps-20000": lambda old: old + "extra:\n" + nested_maps(3_000),
    "block-seqs": lambda old: old + "extra:\n" + "- " * 10_000 + "x\n",
    "billion-laughs-title": lambda old: laughs(9) + old.replace("title: ", "title: *i\nx: ", 1),
    "too-large": lambda old: old + "# " + "x" * (5 * 1024 * 1024) + "\n",
}


@pytest.mark.parametrize("bomb", sorted(FILE_BOMBS))
@pytest.mark.parametrize("command", ["advance", "show", "list"])
def test_episode_file_bombs_are_invalid_data(repo: Path, bomb: str, command: str) -> None:
    path = episode_files(repo)[0]
    path.write_text(FILE_BOMBS[bomb](path.read_text()))
    commit_all(repo)
    argv = {"advance": ["advance", path.stem, "downloading"], "show": ["show", path.stem]}
    refused(repo, argv.get(command, [command]), 5, contains=path.name)


@pytest.mark.parametrize("bomb", ["flow-depth-60000", "billion-laughs-title"])
def test_validate_reports_a_bomb_as_a_problem(repo: Path, bomb: str) -> None:
    path = episode_files(repo)[0]
    path.write_text(FILE_BOMBS[bomb](path.read_text()))
    outcome = run(repo, "validate")
    assert outcome.code == 1, outcome
    assert "Traceback" not in outcome.stderr
    assert len(outcome.stderr.splitlines()) == 1  # the summary; the problems are on stdout
    assert path.name in outcome.stdout


@pytest.mark.parametrize(
    "text",
    [
        laughs(9),
        "state_management:\n  media:\n    directories: " + "[" * 60_000 + "\n",
        "state_management:\n" + nested_maps(2_000),
    ],
    ids=["laughs", "deep-flow", "deep-block"],
)
def test_config_bombs_are_invalid_data(repo: Path, text: str) -> None:
    (repo / "hystate.yaml").write_text(text)
    refused(repo, ["status"], 5, contains="hystate.yaml")


CATALOG_BOMBS = {
    "huge-number.json": '{"items": [' + "9" * 5_000 + "]}",
    "deep.json": "[" * 100_000 + "]" * 100_000,
    "deep-open.json": '{"items": ' + "[" * 100_000,
    "deep-lines.json": '{"identifier": "x"}\n' + '{"a": ' * 50_000 + "1" + "}" * 50_000 + "\n",
    "nan.json": '[{"identifier": "x", "title": "t", "date": NaN}]',
    "infinity.json": '{"items": [Infinity]}',
    "big-field.csv": "identifier,title,date\nx," + "a" * 140_000 + ",2004-01-01\n",
    "nul.csv": "identifier,title,date\nx,t\x00t,2004-01-01\n",
}


@pytest.mark.parametrize("name", sorted(CATALOG_BOMBS))
def test_discover_input_bombs_are_invalid_data(repo: Path, name: str) -> None:
    catalog = repo.parent / name
    catalog.write_text(CATALOG_BOMBS[name])
    refused(repo, ["discover", "--from", str(catalog)], 5, contains=name)


def test_discover_refuses_a_file_too_large_without_reading_it(repo: Path) -> None:
    catalog = repo.parent / "huge.json"
    with open(catalog, "wb") as fh:  # sparse: 300 MB on paper, nothing on disk
        fh.truncate(300 * 1024 * 1024)
    refused(repo, ["discover", "--from", str(catalog)], 5, contains="at most")


def test_a_date_of_20_mb_is_not_quoted_back_whole(repo: Path) -> None:
    catalog = repo.parent / "long-date.json"
    catalog.write_text(json.dumps([{"identifier": "x", "title": "t", "date": "2" * 2_000_000}]))
    outcome = refused(repo, ["discover", "--from", str(catalog)], 5, contains="long-date.json")
    assert len(outcome.stderr) < 1_000


def test_a_bomb_is_refused_about_as_fast_as_a_plain_bad_value(repo: Path) -> None:
    """Compared in one run (no absolute timing): the 1 KB billion laughs costs no more than a
    few times a plain refusal (before: 40-60 s and a MemoryError)."""
    eid = episode_files(repo)[0].stem

    def took(value: str) -> float:
        started = time.perf_counter()
        outcome = run(repo, "advance", eid, "downloading", "--set", f"metrics.audio_size={value}")
        assert outcome.code == 5, outcome
        return time.perf_counter() - started

    plain = min(took("not-a-number") for _ in range(2))
    bomb = min(took("[" * 70_000) for _ in range(2))
    assert bomb < plain * 5
