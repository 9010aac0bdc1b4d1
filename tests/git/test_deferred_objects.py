"""A commit's loose objects are written first and synced together (``ObjectStore.defer`` /
``publish``): still each one synced before it is put in place, all of them in place before
the branch moves, none left behind by a commit that was not made."""

from __future__ import annotations

import os
import threading
import zlib
from collections.abc import Iterator
from pathlib import Path

import pytest

from hystate.git.objects import FLUSH_SYNC, ObjectStore, intact, object_id
from hystate.manager import StateManager
from tests.conftest import git


@pytest.fixture
def store(tmp_path: Path) -> ObjectStore:
    objects = tmp_path / "objects"
    objects.mkdir()
    found = ObjectStore(objects, tmp_path)
    found.fsync = "fsync"
    return found


def object_file(store: ObjectStore, sha: bytes) -> Path:
    return Path(store.dir) / sha.hex()[:2] / sha.hex()[2:]


def temp_files(store: ObjectStore) -> list[Path]:
    return sorted(Path(store.dir).glob("*/tmp_obj_*"))


@pytest.fixture
def calls(monkeypatch: pytest.MonkeyPatch) -> Iterator[list[tuple[str, str]]]:
    """("fsync", path) and ("replace", destination) in the order this process makes them."""
    seen: list[tuple[str, str]] = []
    real_fsync, real_replace, real_sync = os.fsync, os.replace, os.sync

    def fsync(fd: int) -> None:
        seen.append(("fsync", os.readlink(f"/proc/self/fd/{fd}")))
        real_fsync(fd)

    def replace(src: str | os.PathLike[str], dst: str | os.PathLike[str]) -> None:
        seen.append(("replace", os.fspath(dst)))
        real_replace(src, dst)

    def sync() -> None:
        seen.append(("sync", ""))
        real_sync()

    monkeypatch.setattr(os, "fsync", fsync)
    monkeypatch.setattr(os, "replace", replace)
    monkeypatch.setattr(os, "sync", sync)
    yield seen


def test_deferred_objects_are_in_place_only_once_published(
    store: ObjectStore, calls: list[tuple[str, str]]
) -> None:
    store.defer()
    shas = [store.write(b"blob", b"one\n"), store.write(b"blob", b"two\n")]
    assert store.write(b"blob", b"one\n") == shas[0]  # twice in one batch: one object
    assert not any(object_file(store, sha).exists() for sha in shas)
    assert len(temp_files(store)) == 2
    store.publish()
    for sha in shas:
        path = object_file(store, sha)
        assert intact(path.read_bytes(), sha)
        temp = f"tmp_obj_{os.getpid()}_{sha.hex()[2:10]}"
        synced = [i for i, c in enumerate(calls) if c[0] == "fsync" and c[1].endswith(temp)]
        placed = calls.index(("replace", str(path)))
        assert synced and synced[0] < placed  # on disk before it is in place
    assert temp_files(store) == []
    store.abandon()


def test_one_flush_for_all_of_them(store: ObjectStore, calls: list[tuple[str, str]]) -> None:
    store.defer(FLUSH_SYNC)
    shas = [store.write(b"blob", b"%d\n" % i) for i in range(5)]
    store.publish()
    store.abandon()
    assert [c[0] for c in calls[:6]] == ["sync"] + ["replace"] * 5
    assert all(os.path.isdir(c[1]) for c in calls[6:])  # then the new fan-out folders' entries
    assert all(intact(object_file(store, sha).read_bytes(), sha) for sha in shas)


def test_abandoned_objects_leave_nothing(store: ObjectStore) -> None:
    store.defer()
    sha = store.write(b"blob", b"never committed\n")
    store.abandon()
    assert not object_file(store, sha).exists()
    assert temp_files(store) == []
    again = store.write(b"blob", b"never committed\n")  # no longer deferred: in place at once
    assert object_file(store, again).exists()


def test_another_threads_objects_are_not_deferred(store: ObjectStore) -> None:
    store.defer()
    found: list[bytes] = []
    worker = threading.Thread(target=lambda: found.append(store.write(b"blob", b"other\n")))
    worker.start()
    worker.join()
    assert object_file(store, found[0]).exists()
    store.abandon()
    assert object_file(store, found[0]).exists()


def test_a_broken_object_file_is_written_again_when_deferred(store: ObjectStore) -> None:
    sha = object_id(b"blob", b"torn\n")
    path = object_file(store, sha)
    path.parent.mkdir()
    path.write_bytes(zlib.compress(b"blob 5\x00to")[:4])  # what a power cut can leave
    store.defer()
    assert store.write(b"blob", b"torn\n") == sha
    store.publish()
    store.abandon()
    assert intact(path.read_bytes(), sha)


def test_a_transition_syncs_each_object_before_placing_it_and_all_before_the_branch(
    repo: Path, calls: list[tuple[str, str]]
) -> None:
    manager = StateManager(cwd=repo, worker="w")
    eid = sorted(p.stem for p in manager.store.iter_paths())[0]
    before = set(git(repo, "rev-list", "--objects", "--all").split())
    calls.clear()
    result = manager.update_state(eid, "downloading")
    assert result.commit
    objects = str(repo / ".git" / "objects")
    placed = [i for i, c in enumerate(calls) if c[0] == "replace" and c[1].startswith(objects)]
    branch = next(i for i, c in enumerate(calls) if c[0] == "replace" and "/refs/heads/" in c[1])
    assert len(placed) == 5  # the blob, three trees, the commit
    assert max(placed) < branch
    for i in placed:
        temp = f"tmp_obj_{os.getpid()}_{calls[i][1].rsplit('/', 1)[1][:8]}"
        assert any(c[0] == "fsync" and c[1].endswith(temp) for c in calls[:i]), calls
    after = set(git(repo, "rev-list", "--objects", "--all").split())
    assert result.commit in after - before
    git(repo, "fsck", "--strict")
    assert not list((repo / ".git" / "objects").glob("*/tmp_obj_*"))


def test_a_commit_that_fails_before_the_branch_moves_leaves_no_temp_files(repo: Path) -> None:
    manager = StateManager(cwd=repo, worker="w")
    eid = sorted(p.stem for p in manager.store.iter_paths())[0]
    head = git(repo, "rev-parse", "HEAD")
    objects = manager.repo.objects

    def full(*args: object) -> None:
        raise OSError(28, "No space left on device")

    objects.publish = full  # type: ignore[method-assign]
    with pytest.raises(OSError):
        manager.update_state(eid, "downloading")
    del objects.publish
    assert git(repo, "rev-parse", "HEAD") == head
    assert not list((repo / ".git" / "objects").glob("*/tmp_obj_*"))
    assert git(repo, "status", "--porcelain", "--", "processed") == ""
    assert manager.update_state(eid, "downloading").commit  # and the next one lands


def test_core_fsync_method_batch_flushes_a_transitions_objects_once(
    repo: Path, calls: list[tuple[str, str]]
) -> None:
    git(repo, "config", "core.fsyncMethod", "batch")
    manager = StateManager(cwd=repo, worker="w")
    eid = sorted(p.stem for p in manager.store.iter_paths())[0]
    calls.clear()
    assert manager.update_state(eid, "downloading").commit
    objects = str(repo / ".git" / "objects")
    assert calls.count(("sync", "")) == 1
    synced = [c for c in calls if c[0] == "fsync" and c[1].startswith(objects)]
    assert all(os.path.isdir(c[1]) for c in synced)  # a new fan-out folder's entry only
    flushed = calls.index(("sync", ""))
    placed = [i for i, c in enumerate(calls) if c[0] == "replace" and c[1].startswith(objects)]
    assert len(placed) == 5 and min(placed) > flushed
    assert any(c[0] == "fsync" and "/refs/heads/" in c[1] for c in calls)  # the branch: fsync
    git(repo, "fsck", "--strict")
