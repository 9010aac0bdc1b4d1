"""O_EXCL locks: busy locks wait then fail (exit 6); locks of dead or reused pids are broken."""

from __future__ import annotations

import errno
import json
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from hystate.core.errors import LockBusy
from hystate.core.locks import LockOwner, StateLock, lock_status, process_start
from tests.conftest import Cli, commits

HOLD = """
import sys, time
from pathlib import Path
from hystate.core.locks import StateLock
lock = StateLock(Path(sys.argv[1]))
lock.acquire()
print("held", flush=True)
time.sleep(float(sys.argv[2]))
"""


def hold_lock(path: Path, seconds: float) -> subprocess.Popen[str]:
    proc = subprocess.Popen(
        [sys.executable, "-c", HOLD, str(path), str(seconds)], stdout=subprocess.PIPE, text=True
    )
    assert proc.stdout is not None and proc.stdout.readline().strip() == "held"
    return proc


def dead_pid() -> int:
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid


def write_owner(path: Path, **fields: object) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    data = {
        "host": socket.gethostname(),
        "pid": os.getpid(),
        "start": "1",
        "acquired_at": "2026-01-01T00:00:00+00:00",
    }
    data.update(fields)
    path.write_text(json.dumps(data))


def test_lock_file_records_its_owner(tmp_path: Path) -> None:
    path = tmp_path / "a.lock"
    with StateLock(path):
        owner = LockOwner.read(path)
        assert owner is not None and owner.pid == os.getpid()
        assert owner.start == process_start(os.getpid())
    assert not path.exists()


def test_busy_lock_times_out(tmp_path: Path) -> None:
    path = tmp_path / "a.lock"
    holder = hold_lock(path, 30)
    try:
        started = time.monotonic()
        with pytest.raises(LockBusy, match=f"pid {holder.pid}"):
            StateLock(path, timeout=0.3).acquire()
        assert time.monotonic() - started >= 0.3
    finally:
        holder.kill()
        holder.wait()


def test_lock_of_a_killed_process_is_broken_at_once(tmp_path: Path) -> None:
    path = tmp_path / "a.lock"
    holder = hold_lock(path, 30)
    holder.kill()
    holder.wait()
    assert lock_status(path)[1]  # stale
    with StateLock(path, timeout=0):
        assert LockOwner.read(path).pid == os.getpid()  # type: ignore[union-attr]


def test_dead_pid_is_stale(tmp_path: Path) -> None:
    path = tmp_path / "a.lock"
    write_owner(path, pid=dead_pid())
    with StateLock(path, timeout=0):
        pass


def test_reused_pid_is_stale(tmp_path: Path) -> None:
    """A live pid whose start time differs from the recorded one is not the owner."""
    path = tmp_path / "a.lock"
    write_owner(path, pid=os.getppid(), start="1")
    assert lock_status(path)[1]
    with StateLock(path, timeout=0):
        pass


def test_other_host_is_never_stale(tmp_path: Path) -> None:
    path = tmp_path / "a.lock"
    write_owner(path, host="some-other-host", pid=dead_pid())
    with pytest.raises(LockBusy, match="some-other-host"):
        StateLock(path, timeout=0.05).acquire()


def test_empty_lock_file_is_trusted_briefly(tmp_path: Path) -> None:
    path = tmp_path / "a.lock"
    path.write_text("")
    with pytest.raises(LockBusy):
        StateLock(path, timeout=0.05).acquire()
    old = time.time() - 60
    os.utime(path, (old, old))
    with StateLock(path, timeout=0):
        pass


def test_cli_exit_6_when_the_episode_is_locked(repo: Path, run: Cli, episode_id: str) -> None:
    (repo / "hystate.yaml").write_text("state_management:\n  locks:\n    timeout: 0.2\n")
    holder = hold_lock(repo / "processed" / ".locks" / f"{episode_id}.lock", 30)
    before = commits(repo)
    try:
        result = run("advance", episode_id, "downloading")
    finally:
        holder.kill()
        holder.wait()
    assert result.exit_code == 6 and "is held by" in result.output
    assert commits(repo) == before
    assert run("advance", episode_id, "downloading").exit_code == 0  # dead holder: broken


def test_a_lock_that_cannot_be_made_is_a_repository_problem(
    repo: Path, run: Cli, episode_id: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A read-only or full file system (root ignores chmod, so the error is made here): one
    line naming the lock, exit 7 like the reading commands there, nothing committed."""
    real_open = os.open

    def read_only(path: object, flags: int, *args: int) -> int:
        if str(path).endswith(".lock") and flags & os.O_CREAT:
            raise OSError(errno.EROFS, os.strerror(errno.EROFS), str(path))
        return real_open(path, flags, *args)  # type: ignore[arg-type]

    before = commits(repo)
    monkeypatch.setattr("hystate.core.locks.os.open", read_only)
    result = run("advance", episode_id, "downloading")
    assert result.exit_code == 7, result.output
    assert "cannot make the lock" in result.output and "Read-only file system" in result.output
    assert "Traceback" not in result.output and len(result.output.strip().splitlines()) == 1
    assert commits(repo) == before


def test_a_lock_of_a_killed_process_not_yet_reaped_is_broken(tmp_path: Path) -> None:
    """A CLI killed with its wrapper shell stays a zombie until its new parent reaps it (slow
    under load): it runs no more, so its lock is stale (a kill -9 round once left fsck waiting
    on such a process's index.lock)."""
    path = tmp_path / "ep.lock"
    holder = hold_lock(path, 60)
    holder.kill()
    deadline = time.monotonic() + 5
    while process_start(holder.pid) is not None and time.monotonic() < deadline:
        with open(f"/proc/{holder.pid}/stat") as fh:
            if fh.read().rsplit(")", 1)[1].split()[0] == "Z":
                break
        time.sleep(0.01)
    assert process_start(holder.pid) is not None  # a zombie: the pid exists, not reaped
    try:
        with StateLock(path, timeout=0.5):
            pass
    finally:
        holder.wait()
