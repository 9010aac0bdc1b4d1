"""The table of where the index's entries start (git/entry_table.py, issue 29): a fresh process
finds its entry without walking the index, and any index the table does not describe exactly
(git rewrote it, the table is torn) is walked as before, with the same result."""

from __future__ import annotations

import os
import random
from pathlib import Path

import pytest

from hystate.git import entry_table
from hystate.git import index as index_mod
from hystate.manager import StateManager
from tests.conftest import git, run_hystate


def walk_forbidden(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """Make a walk of the index fail the test; the list counts attempts."""
    walks: list[int] = []

    def refuse(data: bytes, index_sec: int) -> None:
        walks.append(1)
        raise AssertionError("the index was walked")

    monkeypatch.setattr(index_mod, "_walk", refuse)
    return walks


def ids(manager: StateManager) -> list[str]:
    return sorted(p.stem for p in manager.store.iter_paths())


def in_step(repo: Path) -> None:
    """HEAD, index and work tree agree (git's own view)."""
    assert git(repo, "status", "--porcelain") == ""
    assert git(repo, "diff", "--cached", "--name-only") == ""


def test_a_fresh_process_uses_the_table_and_never_walks(
    repo: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    first = StateManager(cwd=repo, worker="a")
    episodes = ids(first)
    first.update_state(episodes[0], "downloading")
    assert entry_table.table_path(repo / ".git").exists()
    walk_forbidden(monkeypatch)
    for eid in episodes[1:4]:  # each a new process's first transition
        StateManager(cwd=repo, worker="b").update_state(eid, "downloading")
    in_step(repo)


def test_an_index_git_rewrote_is_walked_and_the_result_agrees(
    repo: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    manager = StateManager(cwd=repo, worker="a")
    episodes = ids(manager)
    manager.update_state(episodes[0], "downloading")
    git(repo, "update-index", "--force-write-index")  # git's own write: a new checksum
    (repo / "notes.txt").write_text("staged\n")
    git(repo, "add", "notes.txt")  # and a new entry: every offset after it moved
    table = entry_table.table_path(repo / ".git").read_bytes()
    assert entry_table.load(repo / ".git", (repo / ".git" / "index").read_bytes()) is None
    StateManager(cwd=repo, worker="b").update_state(episodes[1], "downloading")
    assert entry_table.table_path(repo / ".git").read_bytes() != table  # written anew
    assert git(repo, "diff", "--cached", "--name-only").split() == ["notes.txt"]
    git(repo, "reset", "-q", "notes.txt")
    (repo / "notes.txt").unlink()
    in_step(repo)


def test_a_torn_table_is_ignored(repo: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    manager = StateManager(cwd=repo, worker="a")
    episodes = ids(manager)
    manager.update_state(episodes[0], "downloading")
    path = entry_table.table_path(repo / ".git")
    raw = bytearray(path.read_bytes())
    raw[len(raw) // 2] ^= 0xFF  # the crc no longer matches
    path.write_bytes(bytes(raw))
    data = (repo / ".git" / "index").read_bytes()
    assert entry_table.load(repo / ".git", data) is None
    path.write_bytes(bytes(raw[: len(raw) // 2]))
    assert entry_table.load(repo / ".git", data) is None
    StateManager(cwd=repo, worker="b").update_state(episodes[1], "downloading")
    in_step(repo)


@pytest.mark.parametrize("kind", ["fifo", "symlink"])
def test_a_table_that_is_no_file_is_neither_read_nor_written(repo: Path, kind: str) -> None:
    """A FIFO (which would block its reader and its writer for ever) or a symlink (to
    /dev/zero: read for ever) where the table goes: ignored, transitions go on."""
    episodes = ids(StateManager(cwd=repo, worker="a"))
    path = entry_table.table_path(repo / ".git")
    path.parent.mkdir(exist_ok=True)
    path.unlink(missing_ok=True)
    if kind == "fifo":
        os.mkfifo(path)
    else:
        path.symlink_to("/dev/zero")
    for eid in episodes[:2]:
        done = run_hystate(repo, "advance", eid, "downloading")
        assert done.returncode == 0, done.stderr
    assert entry_table.load(repo / ".git", (repo / ".git" / "index").read_bytes()) is None
    assert path.is_symlink() or path.is_fifo()
    in_step(repo)


def test_the_sampled_lookup_finds_exactly_what_the_walk_finds(tmp_path: Path) -> None:
    """Names of every length (one over 4,095 bytes, git's 0xFFF marker), names that are
    prefixes of others, an intent-to-add entry (extended flags): every name and non-names."""
    root = tmp_path / "r"
    root.mkdir()
    git(root, "init", "-q", "-b", "main")
    rng = random.Random(29)
    names = {"a", "a.b", "a/b", "ab", "b" * 300, "c/" + "d" * 250 + "/" + "e" * 4000}
    while len(names) < 700:
        depth = rng.randint(1, 3)
        names.add(
            "/".join("".join(rng.choices("ab-._z0", k=rng.randint(1, 9))) for _ in range(depth))
        )
    for name in sorted(names):
        path = root / name
        if any(p.is_file() for p in [*path.parents][:-1] if p != root and p.exists()):
            continue
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(name[:20])
        except OSError:
            continue
    git(root, "add", "-A")
    (root / "zz-intent").write_text("x")
    git(root, "add", "-N", "zz-intent")
    data = (root / ".git" / "index").read_bytes()
    walked = index_mod._walk(data, 0)
    assert walked is not None
    ext_start, offsets, _ = walked
    count = int.from_bytes(data[8:12], "big")
    for step in (1, 2, 7, 32, 1000):
        samples = list(offsets.values())[::step]
        sampled = entry_table.SampledOffsets(data, samples, count, ext_start)
        for name, offset in offsets.items():
            assert sampled.get(name) == offset
        for missing in (b"", b"0", b"a/", b"a/b/c", b"aa", b"zzz", b"c/d"):
            assert sampled.get(missing) == offsets.get(missing)
        assert list(sampled) == list(offsets)
