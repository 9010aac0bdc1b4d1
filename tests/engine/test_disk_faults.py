"""Full and read-only disks (issue 26), on real tmpfs mounts: once HEAD moved nothing reports
failure and a claim reaches its caller; reads work when the disposable cache cannot be written;
every full-disk error names the file, the cause and the way out, with exit 7."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import pytest

from tests.conftest import HYSTATE, commits, git
from tests.harness.disk import fill, fill_inodes, remount, tmpfs


def hystate(
    repo: Path, *args: str, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*HYSTATE, *args],
        cwd=repo,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
        env={**os.environ, **(env or {})},
    )


def ids(repo: Path) -> list[str]:
    return sorted(p.stem for p in (repo / "processed").rglob("*.yaml"))


def test_a_reflog_that_cannot_grow_never_fails_a_landed_transition(repo: Path) -> None:
    """The reflog lives on a file system with no free inode: the commit lands (HEAD moved),
    so ``advance`` succeeds with a warning and ``next --claim`` hands out what it claimed."""
    eid = ids(repo)[0]
    logs = repo / ".git" / "logs"
    with tmpfs(logs, size="1m", nr_inodes=64):
        for log in [logs / "HEAD", *(logs / "refs" / "heads").iterdir()]:
            log.unlink()  # so the next append must make the file: an inode
        fill_inodes(logs)
        before = commits(repo)
        moved = hystate(repo, "advance", eid, "downloading")
        assert moved.returncode == 0, moved.stderr
        assert "reflog" in moved.stderr and str(logs / "HEAD") in moved.stderr, moved.stderr
        assert len(commits(repo)) == len(before) + 1
        claimed = hystate(repo, "next", "downloading", "--claim", "--json")
        assert claimed.returncode == 0, claimed.stderr
        (got,) = json.loads(claimed.stdout)
        assert got["stage"] == "downloading"
        assert got["worker"]
        assert len(commits(repo)) == len(before) + 2
        assert git(repo, "status", "--porcelain", "--", "processed") == ""


@pytest.mark.parametrize("tmp_full", [False, True], ids=["temporary-folder", "in-memory"])
def test_reads_and_claims_work_when_the_cache_volume_is_full(repo: Path, tmp_full: bool) -> None:
    """The cache volume is full (and, the second time, so is the temporary folder: the cache
    then lives in memory for the command's life)."""
    cache = repo / ".git" / "hystate" / "cache"
    hystate(repo, "status")  # the cache exists
    with tmpfs(cache, size="256k") as mounted:
        fill(mounted)
        (mounted / "processed" / "state.db").unlink()  # must be made again: cannot be
        env = {"TMPDIR": str(mounted)} if tmp_full else {"TMPDIR": str(repo.parent)}
        for args in (("status",), ("list",), ("log",), ("fsck", "--repair")):
            done = hystate(repo, *args, env=env)
            assert done.returncode == 0, (args, done.stderr)
            assert "internal error" not in done.stderr
            if args == ("status",):
                assert ("in memory" in done.stderr) is tmp_full, done.stderr
        claimed = hystate(repo, "next", "downloading", "--claim", "--json", env=env)
        assert claimed.returncode == 0, claimed.stderr
        assert len(json.loads(claimed.stdout)) == 1
        counts = json.loads(hystate(repo, "status", "--json", env=env).stdout)["progress"]
        assert counts["downloading"] == 1


def test_reads_work_on_a_read_only_repository(tmp_path: Path, repo: Path) -> None:
    eid = ids(repo)[0]
    hystate(repo, "advance", eid, "downloading")
    mount = tmp_path / "ro"
    with tmpfs(mount, size="64m"):
        subprocess.run(["cp", "-a", f"{repo}/.", str(mount)], check=True)
        clone = mount
        (clone / ".git" / "hystate").exists() and subprocess.run(
            ["rm", "-rf", str(clone / ".git" / "hystate" / "cache")], check=True
        )
        remount(mount, "ro")
        for args in (
            ("status",),
            ("list",),
            ("log",),
            ("show", eid),
            ("history", eid),
            ("next", "downloaded"),
            ("validate",),
            ("fsck",),
            ("locks",),
            ("metrics",),
            ("report", "--format", "json", "-o", "-"),
        ):
            done = hystate(clone, *args)
            assert done.returncode == 0, (args, done.stderr)
            assert "internal error" not in done.stderr, (args, done.stderr)
        listed = json.loads(hystate(clone, "list", "--json").stdout)
        assert {e["episode_id"]: e["stage"] for e in listed}[eid] == "downloading"
        refused = hystate(clone, "advance", eid, "downloaded")
        assert refused.returncode == 7, refused.stderr
        line = refused.stderr.strip()
        assert "\n" not in line and "read-only" in line.lower() and str(clone) in line, line
        remount(mount, "rw")
        # an uncommitted file (a process died before its commit) is found, not an error
        path = next((clone / "processed").rglob(f"{eid}.yaml"))
        path.write_bytes(path.read_bytes().replace(b"title: ", b"title: (edited) ", 1))
        remount(mount, "ro")
        found = hystate(clone, "fsck")
        assert found.returncode == 1, found.stderr
        assert f"uncommitted    processed/{path.parent.name}/{path.name}: " in found.stdout
        repair = hystate(clone, "fsck", "--repair")
        assert repair.returncode == 7 and "read-only" in repair.stderr.lower(), repair.stderr
        remount(mount, "rw")


def test_a_full_disk_names_the_file_the_cause_and_the_way_out(tmp_path: Path, repo: Path) -> None:
    eid = ids(repo)[0]
    mount = tmp_path / "full"
    with tmpfs(mount, size="64m"):
        subprocess.run(["cp", "-a", f"{repo}/.", str(mount)], check=True)
        hystate(mount, "status")
        filler = fill(mount)
        for args in (("advance", eid, "downloading"), ("next", "downloading", "--claim")):
            failed = hystate(mount, *args)
            assert failed.returncode == 7, (args, failed.stderr)
            line = failed.stderr.strip()
            assert "\n" not in line, line
            assert "No space left on device" in line and str(mount) in line, line
            assert "free" in line, line  # the way out
        assert git(mount, "--no-optional-locks", "status", "--porcelain", "--", "processed") == ""
        assert hystate(mount, "status").returncode == 0
        filler.unlink()
        assert hystate(mount, "advance", eid, "downloading").returncode == 0


@pytest.mark.parametrize("room", [4, 16, 64, 256], ids=lambda k: f"{k}k-free")
def test_a_nearly_full_disk_fails_whole_or_not_at_all(
    tmp_path: Path, repo: Path, room: int
) -> None:
    """Whatever little room is left, a transition is done (and everything agrees) or not done
    (nothing half-written), with one line and exit 7: never exit 1, never a traceback."""
    eid = ids(repo)[0]
    mount = tmp_path / "full"
    with tmpfs(mount, size="64m"):
        subprocess.run(["cp", "-a", f"{repo}/.", str(mount)], check=True)
        hystate(mount, "status")
        reserve = mount / ".reserve"
        reserve.write_bytes(b"\0" * room * 1024)
        filler = fill(mount)
        reserve.unlink()
        before = git(mount, "rev-parse", "HEAD")
        done = hystate(mount, "advance", eid, "downloading")
        if done.returncode == 0:
            assert git(mount, "rev-parse", "HEAD") != before
        else:
            assert done.returncode == 7, done.stderr
            line = done.stderr.strip().splitlines()[-1]
            assert "No space left on device" in line and "free" in line, line
            assert "Traceback" not in done.stderr and "internal error" not in done.stderr
            assert git(mount, "rev-parse", "HEAD") == before
        filler.unlink()
        repaired = hystate(mount, "fsck", "--repair")
        assert repaired.returncode == 0, repaired.stdout + repaired.stderr
        assert git(mount, "status", "--porcelain", "--", "processed") == ""
        shown = json.loads(hystate(mount, "show", eid, "--json").stdout)
        assert shown["stage"] == ("downloading" if done.returncode == 0 else "discovered")


def test_an_inode_full_disk_is_the_same_line_and_code(tmp_path: Path, repo: Path) -> None:
    """No free inode (bytes to spare): the same one line, exit 7, nothing half-written; reads
    go on."""
    eid = ids(repo)[0]
    mount = tmp_path / "inodes"
    with tmpfs(mount, size="64m", nr_inodes=4096):
        subprocess.run(["cp", "-a", f"{repo}/.", str(mount)], check=True)
        hystate(mount, "status")
        before = git(mount, "rev-parse", "HEAD")
        fill_inodes(mount)
        failed = hystate(mount, "advance", eid, "downloading")
        assert failed.returncode == 7, failed.stderr
        line = failed.stderr.strip()
        assert "\n" not in line and "No space left on device" in line and "df -i" in line, line
        assert git(mount, "rev-parse", "HEAD") == before
        assert hystate(mount, "status").returncode == 0
        assert hystate(mount, "list", "--json").returncode == 0
