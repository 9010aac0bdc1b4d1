"""Discovery: every accepted input format, idempotence, and whole-file rejection."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from hystate.core.errors import InvalidData
from hystate.engine.catalog import read_records
from hystate.manager import StateManager
from tests.conftest import commits, files_in, git

ROWS = [
    {
        "identifier": "hy0_hooting_yard_2004-04-14",
        "title": "Burnt Maps",
        "date": "2004-04-14T00:00:00Z",
    },
    {
        "identifier": "hooting-yard-live",
        "title": "An Evening of Lugubrious Music",
        "date": "2008-01-01",
    },
]


def write(tmp_path: Path, name: str, text: str) -> Path:
    path = tmp_path / name
    path.write_text(text)
    return path


@pytest.mark.parametrize(
    ("name", "text"),
    [
        ("search.json", json.dumps({"response": {"numFound": 2, "docs": ROWS}})),
        ("scrape.json", json.dumps({"items": ROWS, "count": 2})),
        ("array.json", json.dumps(ROWS)),
        ("lines.jsonl", "\n".join(json.dumps(r) for r in ROWS) + "\n"),
        (
            "cat.csv",
            "identifier,title,date\n"
            + "\n".join(f'{r["identifier"]},"{r["title"]}",{r["date"]}' for r in ROWS),
        ),
    ],
)
def test_formats(tmp_path: Path, name: str, text: str) -> None:
    records = read_records(write(tmp_path, name, text))
    assert [(r.identifier, r.date) for r in records] == [
        ("hy0_hooting_yard_2004-04-14", "2004-04-14"),
        ("hooting-yard-live", "2008-01-01"),
    ]


def test_json_lines_with_one_line(tmp_path: Path) -> None:
    records = read_records(write(tmp_path, "one.jsonl", json.dumps(ROWS[0]) + "\n"))
    assert [(r.identifier, r.date) for r in records] == [
        ("hy0_hooting_yard_2004-04-14", "2004-04-14")
    ]


def test_year_comes_from_the_date_not_the_id(tmp_path: Path) -> None:
    git(tmp_path, "init", "-q")
    manager = StateManager(cwd=tmp_path)
    result = manager.discover(read_records(write(tmp_path, "a.json", json.dumps(ROWS))))
    assert sorted(files_in(tmp_path)) == [
        "processed/2004/hy0_hooting_yard_2004-04-14.yaml",
        "processed/2008/hooting-yard-live.yaml",
    ]
    assert len(result.added) == 2 and len(commits(tmp_path)) == 1


def test_discovery_is_idempotent_and_leaves_existing_files_alone(
    manager: StateManager, repo: Path, episode_id: str, tmp_path: Path
) -> None:
    manager.update_state(episode_id, "downloading")
    before = commits(repo)
    path = manager.path_of(episode_id)
    content = path.read_bytes()
    rows = [{"identifier": episode_id, "title": "Other title", "date": "2004-01-01"}]
    result = manager.discover(read_records(write(tmp_path, "again.json", json.dumps(rows))))
    assert result.added == [] and result.existing == [episode_id]
    assert commits(repo) == before and path.read_bytes() == content


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("", "empty"),
        ("{not json", "not JSON"),
        (json.dumps({"response": {"docs": "nope"}}), "not a list"),
        (json.dumps({"something": 1}), "unknown JSON shape"),
        (
            json.dumps([{"identifier": "../etc", "title": "t", "date": "2004-01-01"}]),
            "invalid episode id",
        ),
        (
            json.dumps([{"identifier": "a b", "title": "t", "date": "2004-01-01"}]),
            "invalid episode id",
        ),
        (json.dumps([{"identifier": "ok", "title": "", "date": "2004-01-01"}]), "missing title"),
        (json.dumps([{"identifier": "ok", "title": "t", "date": "2004-13-01"}]), "not a real date"),
        (
            json.dumps([{"identifier": "ok", "title": "t", "date": "2004-01-01T12:30:00Z"}]),
            "not YYYY-MM-DD",
        ),
        (json.dumps([{"identifier": "ok", "title": "t"}]), "missing date"),
        (json.dumps([ROWS[0], ROWS[0]]), "listed twice"),
        (json.dumps([ROWS[0], 7]), "expected an object"),
    ],
)
def test_malformed_files_are_rejected_whole(
    manager: StateManager, repo: Path, tmp_path: Path, text: str, expected: str
) -> None:
    source = write(tmp_path, "bad.json", text)
    before = commits(repo)
    with pytest.raises(InvalidData, match=expected):
        manager.discover(read_records(source))
    assert commits(repo) == before
    assert git(repo, "status", "--porcelain") == ""


def test_one_bad_record_rejects_all(tmp_path: Path) -> None:
    rows = [*ROWS, {"identifier": "x/y", "title": "t", "date": "2004-01-01"}]
    with pytest.raises(InvalidData, match=r"\[2\].*nothing was written"):
        read_records(write(tmp_path, "mixed.json", json.dumps(rows)))


def test_csv_without_header(tmp_path: Path) -> None:
    with pytest.raises(InvalidData, match="header"):
        read_records(write(tmp_path, "x.csv", ""))


def test_discover_from_hystate_s_own_state_folder(repo: Path, tmp_path: Path) -> None:
    """The README's walkthrough from a bare clone: `discover --from processed/` of the
    checkout; the episodes arrive anew in stage discovered, whatever their stage there."""
    from tests.conftest import REPO_ROOT, Cli

    fresh = tmp_path / "fresh"
    fresh.mkdir()
    git(fresh, "init", "-q", "-b", "main")
    run = Cli(fresh)
    assert run("init").exit_code == 0
    result = run("discover", "--from", str(REPO_ROOT / "processed"), "--json")
    assert result.exit_code == 0, result.output
    shipped = sorted(p.stem for p in (REPO_ROOT / "processed").glob("[0-9]*/*.yaml"))
    assert sorted(json.loads(result.output)["added"]) == shipped and len(shipped) > 500
    again = run("discover", "--from", str(REPO_ROOT / "processed"))
    assert again.exit_code == 0 and f"0 new episodes; {len(shipped)} already known" in again.output
    # a state folder with a broken file is refused whole, naming it
    bad = tmp_path / "state"
    (bad / "2004").mkdir(parents=True)
    src = sorted((REPO_ROOT / "processed" / "2004").glob("*.yaml"))[:2]
    (bad / "2004" / src[0].name).write_bytes(src[0].read_bytes())
    (bad / "2004" / src[1].name).write_text("episode_id: [\n")
    head = git(fresh, "rev-parse", "HEAD")
    refused = run("discover", "--from", str(bad))
    assert refused.exit_code == 5 and src[1].name in refused.output
    assert git(fresh, "rev-parse", "HEAD") == head
