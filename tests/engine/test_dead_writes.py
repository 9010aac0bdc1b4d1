"""A worker killed between its write and its commit: whoever takes the episode's lock next mends
the write first, as `fsck --repair` would (hystate/engine/workspace.EpisodeLock). Real
processes, a real kill -9 between the write and the commit, real tmpfs mounts."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

from tests.conftest import HYSTATE, git
from tests.harness.dead_write import killed_mid_commit
from tests.harness.disk import fill, tmpfs


def hystate(repo: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*HYSTATE, *args], cwd=repo, capture_output=True, text=True, timeout=120, check=False
    )


def first_id(repo: Path) -> str:
    return sorted(p.stem for p in (repo / "processed").rglob("*.yaml"))[0]


def subjects(repo: Path, eid: str) -> list[str]:
    return git(repo, "log", "--format=%s", "--", f"processed/*/{eid}.yaml").splitlines()


def dead_lock(repo: Path, eid: str) -> None:
    """The lock a process that is gone left on ``eid`` (no such pid on this host)."""
    record = {"host": os.uname().nodename, "pid": 4_000_000, "start": "1", "acquired_at": "x"}
    (repo / "processed" / ".locks" / f"{eid}.lock").write_text(json.dumps(record))


def test_plain_fsck_leaves_the_dead_lock_and_the_next_taker_mends(
    repo: Path, tmp_path: Path
) -> None:
    eid = first_id(repo)
    killed_mid_commit(repo, tmp_path, "advance", eid, "downloading", "--worker", "dead")
    lock = repo / "processed" / ".locks" / f"{eid}.lock"
    assert lock.exists()
    looked = hystate(repo, "fsck")
    assert looked.returncode == 1 and "uncommitted" in looked.stdout, looked.stdout
    assert lock.exists()  # fsck without --repair changes nothing, the dead lock included
    taken = hystate(repo, "advance", eid, "failed", "--error", "gone", "--force")
    assert taken.returncode == 0, taken.stderr
    assert "died before its commit" in taken.stderr
    assert subjects(repo, eid)[:2] == [
        f"{eid}: downloading -> failed",
        f"{eid}: discovered -> downloading",
    ]
    assert git(repo, "status", "--porcelain", "--untracked-files=no") == ""
    assert not lock.exists()


def test_a_mend_that_cannot_be_written_leaves_the_dead_lock_for_the_next(
    repo: Path, tmp_path: Path
) -> None:
    mount = tmp_path / "small"
    with tmpfs(mount, size="16m"):
        subprocess.run(["cp", "-a", f"{repo}/.", str(mount)], check=True)
        eid = first_id(mount)
        killed_mid_commit(mount, tmp_path, "advance", eid, "downloading", "--worker", "dead")
        lock = mount / "processed" / ".locks" / f"{eid}.lock"
        dead = lock.read_bytes()
        filler = fill(mount)
        full = hystate(mount, "advance", eid, "failed", "--error", "gone", "--force")
        assert full.returncode == 7, full.stderr
        assert lock.read_bytes() == dead  # handed back to the dead owner: still to be mended
        filler.unlink()
        taken = hystate(mount, "advance", eid, "failed", "--error", "gone", "--force")
        assert taken.returncode == 0, taken.stderr
        assert "died before its commit" in taken.stderr
        assert subjects(mount, eid)[:2] == [
            f"{eid}: downloading -> failed",
            f"{eid}: discovered -> downloading",
        ]


def test_every_version_put_aside_is_kept(repo: Path) -> None:
    eid = first_id(repo)
    path = next((repo / "processed").rglob(f"{eid}.yaml"))
    for garbage in (b"garbage one: [\n", b"garbage two: {{\n"):  # within one second
        path.write_bytes(garbage)
        dead_lock(repo, eid)
        assert hystate(repo, "show", eid).returncode == 5  # a reader takes no lock
        mended = hystate(repo, "advance", eid, "skipped")
        assert mended.returncode == 0, mended.stderr
        assert "kept in .git/hystate-lost/" in mended.stderr
        git(repo, "-c", "user.name=t", "-c", "user.email=t@x", "revert", "--no-edit", "HEAD")
    kept = sorted(p.read_bytes() for p in (repo / ".git" / "hystate-lost").iterdir())
    assert kept == [b"garbage one: [\n", b"garbage two: {{\n"]
