"""Group commit on full disks (real tmpfs mounts): a request that cannot be queued, and a group
whose objects cannot be written, fail with the one-line full-disk error (exit 7), their files
put back, nothing committed, the queue left empty."""

from __future__ import annotations

import os
from pathlib import Path

from hystate.engine import grouping
from tests.conftest import commits, git
from tests.engine.test_group_commit import finish, hold, setup, start, wait_queued
from tests.harness.disk import fill, tmpfs


def assert_nothing_changed(repo: Path, head: list[str]) -> None:
    assert commits(repo) == head
    assert git(repo, "status", "--porcelain") == ""
    assert git(repo, "diff", "--cached", "--name-only") == ""


def test_a_request_that_cannot_be_queued_fails_and_puts_its_file_back(repo: Path) -> None:
    manager, ids, _ = setup(repo)
    queue = grouping.queue_of(manager).dir
    queue.mkdir(parents=True, exist_ok=True)
    head = commits(repo)
    with tmpfs(queue, size="64k") as mounted:
        fill(mounted)
        lock = hold(manager)  # busy: the worker must queue
        try:
            ((code, out, err),) = finish(start(repo, ids[:1]))
        finally:
            lock.release()
        (mounted / ".filler").unlink()
    assert code == 7, (out, err)
    assert "No space left on device" in err and "Traceback" not in err
    assert len(err.strip().splitlines()) <= 2, err  # the error, its hint
    assert_nothing_changed(repo, head)
    assert os.listdir(queue) == []


def test_a_group_whose_objects_cannot_be_written_fails_every_request_cleanly(
    repo: Path,
) -> None:
    manager, ids, _ = setup(repo)
    head = commits(repo)
    objects = repo / ".git" / "objects"
    with tmpfs(objects, size="8m") as mounted:
        lock = hold(manager)
        procs = start(repo, ids[:3])
        wait_queued(manager, 3)  # their blobs are stored; now the disk fills up
        fill(mounted)
        lock.release()
        results = finish(procs)
        (mounted / ".filler").unlink()
        for code, out, err in results:
            assert code == 7, (out, err)
            assert "No space left on device" in err and "Traceback" not in err
        assert_nothing_changed(repo, head)
        assert git(repo, "fsck", "--strict", "--no-progress", "--no-dangling") == ""
    assert os.listdir(grouping.queue_of(manager).dir) == []
