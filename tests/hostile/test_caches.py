"""Hostile caches: a ``state.db`` or ``index.json`` hystate did not make (planted, committed by a
branch, a symlink or a hard link to another database, with triggers and forged rows) is never
trusted, never modified, and reported; hystate's own caches live in ``.git/hystate/cache/``,
which no branch can reach."""

from __future__ import annotations

import hashlib
import json
import os
import sqlite3
from collections.abc import Callable
from pathlib import Path

import pytest

from tests.hostile.conftest import commit
from tests.hostile.harness import run_hostile

FORGED_TRIGGER = """
CREATE TRIGGER hide_work AFTER INSERT ON episode_states
BEGIN UPDATE episode_states SET stage = 'published'; END;
"""


def forged_db(path: Path, like: Path) -> None:
    """A copy of a real cache where every episode is published, plus a trigger that keeps it so."""
    with sqlite3.connect(like) as src, sqlite3.connect(path) as dst:
        src.backup(dst)
    with sqlite3.connect(path) as db:
        db.execute("UPDATE episode_states SET stage = 'published'")
        db.executescript(FORGED_TRIGGER)
    for suffix in ("-wal", "-shm"):
        Path(f"{path}{suffix}").unlink(missing_ok=True)


def _real_cache(repo: Path) -> Path:
    run_hostile(repo, ["status"], 0)
    return repo / ".git" / "hystate" / "cache" / "processed" / "state.db"


def planted_db(repo: Path) -> list[Path]:
    forged_db(repo / "processed" / "state.db", _real_cache(repo))
    return [repo / "processed" / "state.db"]


def tracked_db(repo: Path) -> list[Path]:
    watched = planted_db(repo)
    commit(repo, "processed/state.db")
    return watched


def linked_db(repo: Path) -> list[Path]:
    """A symlink to another application's database beside the repository."""
    other = repo.parent / "accounts.db"
    forged_db(other, _real_cache(repo))
    (repo / "processed" / "state.db").symlink_to(other)
    return [other]


def hard_linked_db(repo: Path) -> list[Path]:
    other = repo.parent / "accounts.db"
    forged_db(other, _real_cache(repo))
    os.link(other, repo / "processed" / "state.db")
    return [other]


def tracked_wal(repo: Path) -> list[Path]:
    wal = repo / "processed" / "state.db-wal"
    wal.write_bytes(b"\x37\x7f\x06\x82" + b"\0" * 60)  # a WAL header: would be replayed if opened
    commit(repo, "processed/state.db-wal")
    return [wal]


def linked_index(repo: Path) -> list[Path]:
    other = repo.parent / "index.json"
    other.write_text('{"keep": "me"}\n')
    (repo / "processed" / "index.json").symlink_to(other)
    return [other]


def tracked_index(repo: Path) -> list[Path]:
    index = repo / "processed" / "index.json"
    index.write_text('{"forged": {"stage": "published"}}\n')
    commit(repo, "processed/index.json")
    return [index]


PLANTS: dict[str, Callable[[Path], list[Path]]] = {
    "planted-db": planted_db,
    "tracked-db": tracked_db,
    "linked-db": linked_db,
    "hard-linked-db": hard_linked_db,
    "tracked-wal": tracked_wal,
    "linked-index": linked_index,
    "tracked-index": tracked_index,
}

# validate fails on what a branch can bring (a tracked or linked cache); a plain planted file
# is only listed by fsck (it is never read, so it cannot lie)
VALIDATE_FAILS = {"tracked-db", "linked-db", "tracked-wal", "linked-index", "tracked-index"}


def _digest(paths: list[Path]) -> list[str]:
    return [hashlib.sha256(p.read_bytes()).hexdigest() for p in paths]


def _truthful_status(repo: Path, claimed: int = 0) -> None:
    status = json.loads(run_hostile(repo, ["status", "--json"], 0).stdout)
    assert status["total_episodes"] == 20 and status["progress"]["discovered"] == 20 - claimed
    assert status["progress"]["downloading"] == claimed and status["progress"]["published"] == 0


COMMANDS: dict[str, tuple[list[str], int | None]] = {
    "status": (["status", "--json"], 0),
    "list": (["list", "--stage", "discovered", "--json"], 0),
    "next-claim": (["next", "downloading", "--claim", "--json"], 0),
    "rebuild": (["rebuild"], 0),
    "fsck-repair": (["fsck", "--repair"], None),  # exit 1 when a tracked/linked cache remains
    "validate": (["validate"], None),
}


@pytest.mark.parametrize("command", sorted(COMMANDS))
@pytest.mark.parametrize("plant", sorted(PLANTS))
def test_foreign_cache_is_never_trusted_or_modified(plant: str, command: str, repo: Path) -> None:
    watched = PLANTS[plant](repo)
    before = _digest(watched)
    argv, code = COMMANDS[command]
    if code is None:
        code = 1 if plant in VALIDATE_FAILS else 0
    result = run_hostile(repo, argv, code, unchanged=False)
    if command in ("list", "next-claim"):
        rows = json.loads(result.stdout)
        assert len(rows) == (20 if command == "list" else 1)
    if command == "validate" and code:
        assert "cache file committed" in result.stdout or "is a symlink" in result.stdout
    if plant == "planted-db" and command == "fsck-repair":
        assert not watched[0].exists()  # a plain untracked file: listed, then its name removed
    else:
        assert _digest(watched) == before, "a cache hystate did not make was modified"
    _truthful_status(repo, claimed=1 if command == "next-claim" else 0)


def test_caches_live_in_the_git_directory(repo: Path) -> None:
    run_hostile(repo, ["rebuild"], 0)
    cache = repo / ".git" / "hystate" / "cache" / "processed"
    assert (cache / "state.db").is_file() and (cache / "index.json").is_file()
    assert not (repo / "processed" / "state.db").exists()
    assert not (repo / "processed" / "index.json").exists()


def test_fsck_lists_a_planted_cache_and_repair_removes_only_its_name(repo: Path) -> None:
    planted_db(repo)
    result = run_hostile(repo, ["fsck"], 1)
    assert "processed/state.db: not hystate's cache" in result.stdout
    run_hostile(repo, ["fsck", "--repair"], 0)
    assert not (repo / "processed" / "state.db").exists()


def test_linked_cache_folder_in_state_dir_is_reported(repo: Path) -> None:
    """A tracked state.db reported with the way out, and git's view of it untouched."""
    tracked_db(repo)
    result = run_hostile(repo, ["validate"], 1)
    assert "git rm --cached" in result.stdout
    status = os.popen(f"git -C {repo} status --porcelain").read()
    assert status == ""


def test_case_count() -> None:
    assert len(PLANTS) * len(COMMANDS) >= 40
