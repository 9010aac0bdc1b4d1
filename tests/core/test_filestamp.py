"""The stamp-checked memos (``hystate.core.filestamp``) never serve a stale answer: a file
changed by someone else between two reads is read again, also when its size and mtime are put
back as they were (``os.utime`` with nanoseconds), when it is replaced by another file of the
same size and mtime (another inode), and when the change falls in the same clock tick as the
first read (a racy stamp is never kept)."""

from __future__ import annotations

import os
import time
from pathlib import Path

import pytest

from hystate.core import filestamp
from hystate.core.filestamp import FileMemo
from hystate.core.store import EpisodeStore


@pytest.fixture
def settled_now(monkeypatch: pytest.MonkeyPatch) -> None:
    """Every stamp counts as settled, as if each read came long after the file's last
    change: what is left to catch a change is the stamp alone."""
    monkeypatch.setattr(filestamp, "RACY_NS", -(10**12))


class Counting:
    def __init__(self) -> None:
        self.reads: list[bytes | None] = []

    def __call__(self, content: bytes | None) -> bytes | None:
        self.reads.append(content)
        return content


def later_change(path: Path, write: object) -> None:
    """Apply ``write`` (a callable) until the change has a ctime of its own: what the racy
    rule guarantees in real use (a stamp is kept only once a later change must differ)."""
    before = os.lstat(path).st_ctime_ns
    while True:
        write()  # type: ignore[operator]
        if os.lstat(path).st_ctime_ns != before:
            return
        time.sleep(0.005)


def test_a_settled_file_is_read_once(tmp_path: Path, settled_now: None) -> None:
    path = tmp_path / "attributes"
    path.write_bytes(b"one\n")
    parse = Counting()
    memo = FileMemo(parse)
    assert memo.get(str(path)) == b"one\n"
    assert memo.get(str(path)) == b"one\n"
    assert parse.reads == [b"one\n"]


def test_same_size_and_mtime_written_in_place_is_read_again(
    tmp_path: Path, settled_now: None
) -> None:
    path = tmp_path / "attributes"
    path.write_bytes(b"aaaa\n")
    old = os.lstat(path)
    memo = FileMemo(Counting())
    assert memo.get(str(path)) == b"aaaa\n"

    def rewrite() -> None:
        with open(path, "r+b") as fh:  # in place: same inode
            fh.write(b"bbbb\n")
        os.utime(path, ns=(old.st_atime_ns, old.st_mtime_ns))  # mtime put back exactly

    later_change(path, rewrite)
    now = os.lstat(path)
    assert (now.st_ino, now.st_size, now.st_mtime_ns) == (old.st_ino, old.st_size, old.st_mtime_ns)
    assert memo.get(str(path)) == b"bbbb\n"


def test_replaced_by_a_file_of_same_size_and_mtime_is_read_again(
    tmp_path: Path, settled_now: None
) -> None:
    path = tmp_path / "config"
    path.write_bytes(b"x = 1\n")
    old = os.lstat(path)
    memo = FileMemo(Counting())
    assert memo.get(str(path)) == b"x = 1\n"
    other = tmp_path / "config.new"
    other.write_bytes(b"x = 2\n")
    os.utime(other, ns=(old.st_atime_ns, old.st_mtime_ns))
    os.replace(other, path)  # another inode, same size, same mtime
    assert os.lstat(path).st_mtime_ns == old.st_mtime_ns
    assert memo.get(str(path)) == b"x = 2\n"


def test_a_change_in_the_same_tick_is_seen_by_the_racy_rule(tmp_path: Path) -> None:
    """Real clock: a file changed just now is never kept, so a second change with the very
    same stamp (same size, mtime put back, ctime in the same tick) is still read."""
    path = tmp_path / "attributes"
    path.write_bytes(b"aaaa\n")
    old = os.lstat(path)
    parse = Counting()
    memo = FileMemo(parse)
    assert memo.get(str(path)) == b"aaaa\n"
    with open(path, "r+b") as fh:
        fh.write(b"bbbb\n")
    os.utime(path, ns=(old.st_atime_ns, old.st_mtime_ns))
    assert memo.get(str(path)) == b"bbbb\n"
    assert memo.get(str(path)) == b"bbbb\n"
    assert len(parse.reads) == 3  # racy: read each time, never kept


def test_missing_then_made_then_a_symlink(tmp_path: Path, settled_now: None) -> None:
    path = tmp_path / ".gitattributes"
    memo = FileMemo(Counting())
    assert memo.get(str(path)) is None
    path.write_bytes(b"*.yaml -text\n")
    assert memo.get(str(path)) == b"*.yaml -text\n"
    target = tmp_path / "elsewhere"
    target.write_bytes(b"*.yaml -text\n")
    path.unlink()
    path.symlink_to(target)
    assert memo.get(str(path)) is None  # never followed, as git does not


def test_year_folders_listed_again_when_the_state_folder_changes(
    tmp_path: Path, settled_now: None
) -> None:
    state = tmp_path / "processed"
    (state / "2004").mkdir(parents=True)
    (state / "2004" / "a.yaml").write_bytes(b"x")
    store = EpisodeStore(state, tmp_path)
    assert store.year_dirs() == [state / "2004"]
    assert store.find("a") == state / "2004" / "a.yaml"

    def add_year() -> None:
        (state / "2005").mkdir(exist_ok=True)
        os.utime(state)  # the ctime moves on, if the mkdir fell in the same tick

    later_change(state, add_year)
    (state / "2005" / "b.yaml").write_bytes(b"x")
    assert store.year_dirs() == [state / "2004", state / "2005"]
    assert store.find("b") == state / "2005" / "b.yaml"
    # a year folder replaced by a symlink to another folder: never looked into
    elsewhere = tmp_path / "elsewhere"

    def relink() -> None:
        if not elsewhere.exists():
            (state / "2005").rename(elsewhere)
        if not (state / "2005").is_symlink():
            (state / "2005").symlink_to(elsewhere)
        else:
            os.utime(state)  # the ctime moves on

    later_change(state, relink)
    assert store.year_dirs() == [state / "2004"]
    assert store.find("b") is None
