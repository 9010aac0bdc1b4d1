"""git's lock files (``index.lock``, ``HEAD.lock``, ``refs/heads/main.lock``), taken so that a
lock a killed hystate process left can be told, for certain, from a live one.

git takes a lock by creating ``<file>.lock`` with O_EXCL and gives up at once if it exists. hystate
takes the same lock just as atomically, by hard-linking ``<file>.lock`` to an owner file of its own,
``<common dir>/hystate/owners/<pid>.<start>.<n>``: the lock's inode then names its owner (pid and
process start time, so a reused pid is not mistaken for the owner). A lock whose owner file is
found and whose process is gone is stale and removed by the next hystate process that wants it, or
by ``hystate fsck --repair``; any other lock (git's own, a live process's) is never touched.
"""

from __future__ import annotations

import itertools
import os
import time
from pathlib import Path

from hystate.core.errors import GitError, cannot_write, is_cannot_write
from hystate.core.locks import my_start, pid_alive, process_start

_COUNTER = itertools.count()


def owners_dir(common_dir: Path) -> Path:
    return common_dir / "hystate" / "owners"


class LockFile:
    """A held git lock file; write the new content, then ``commit`` (rename) or ``rollback``."""

    def __init__(self, lock: Path, owners: Path, wait: float, what: str) -> None:
        self.path = lock
        self._owner: Path | None = _new_owner(owners)
        deadline = time.monotonic() + wait
        delay = 0.001
        while True:
            try:
                self._fd = self._create()
                return
            except FileExistsError:
                if break_stale(lock, owners):
                    continue
                if time.monotonic() > deadline:
                    self._drop_owner()
                    raise GitError(
                        f"{lock} exists: another git process is updating the {what}",
                        hint="wait for it to finish; if no git process runs, remove the file",
                    ) from None
                time.sleep(delay)
                delay = min(delay * 2, 0.05)
            except BaseException:  # interrupted: never leave a lock nobody can tell is ours
                self._release_if_linked()
                raise

    def _create(self) -> int:
        if self._owner is not None:
            try:
                os.link(self._owner, self.path)
            except FileExistsError:
                raise
            except OSError:  # no hard links on this file system: a plain, anonymous lock
                self._drop_owner()
            else:
                return os.open(self.path, os.O_WRONLY | os.O_TRUNC)
        return os.open(self.path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)

    @property
    def fd(self) -> int:
        return self._fd

    def write(self, data: bytes | bytearray) -> None:
        view = memoryview(data)
        written = 0
        try:
            while written < len(data):
                written += os.write(self._fd, view[written:])
        except OSError as exc:
            if is_cannot_write(exc):
                raise cannot_write(exc, self.path) from exc
            raise

    def commit(self, target: Path, sync: str | None = None) -> None:
        """Rename the lock over ``target``: the new content takes effect. ``sync`` ("fsync" or
        "fdatasync"): the content is synced before the rename, as git does for core.fsync, so
        a power cut leaves the old or the new content, never an empty file; "sync": the whole
        system is flushed (a group commit's objects with it)."""
        if sync == "sync":
            os.sync()
        elif sync:
            getattr(os, sync)(self._fd)
        os.close(self._fd)
        self._fd = -1
        os.replace(self.path, target)
        self._drop_owner()

    def rollback(self) -> None:
        if self._fd >= 0:
            os.close(self._fd)
            self._fd = -1
            self.path.unlink(missing_ok=True)
            self._drop_owner()

    def _release_if_linked(self) -> None:
        if self._owner is not None:
            try:
                if os.lstat(self.path).st_ino == os.lstat(self._owner).st_ino:
                    self.path.unlink()
            except OSError:
                pass
        self._drop_owner()

    def _drop_owner(self) -> None:
        if self._owner is not None:
            self._owner.unlink(missing_ok=True)
            self._owner = None


def _new_owner(owners: Path) -> Path | None:
    pid = os.getpid()
    name = f"{pid}.{my_start(pid) or 0}.{next(_COUNTER)}"
    path = owners / name
    for _ in range(2):
        try:
            os.close(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644))
            return path
        except FileNotFoundError:
            owners.mkdir(parents=True, exist_ok=True)
        except OSError:
            return None
    return None


def _gone(name: str) -> bool:
    """Whether the process named by an owner file (``<pid>.<start>.<n>``) is gone."""
    try:
        pid_s, start, _ = name.split(".")
        pid = int(pid_s)
    except ValueError:
        return False
    if not 0 < pid < 2**31:
        return False
    if not pid_alive(pid):
        return True
    return start != "0" and process_start(pid) not in (None, start)


def stale_owner(lock: Path, owners: Path) -> str | None:
    """The owner file of ``lock`` when it names a hystate process that is gone, else None."""
    try:
        st = os.lstat(lock)
        if st.st_nlink < 2:
            return None
        for entry in os.scandir(owners):
            if entry.inode() == st.st_ino and _gone(entry.name):
                return entry.name
    except OSError:
        return None
    return None


def break_stale(lock: Path, owners: Path) -> bool:
    """Remove ``lock`` if a hystate process that is gone left it; True if it did."""
    name = stale_owner(lock, owners)
    if name is None:
        return False
    owner = owners / name
    try:
        if os.lstat(lock).st_ino != os.lstat(owner).st_ino:
            return False
        lock.unlink()
    except FileNotFoundError:
        return False
    owner.unlink(missing_ok=True)
    return True


def clean_owners(owners: Path) -> int:
    """Remove owner files of processes that are gone and whose lock no longer exists."""
    removed = 0
    try:
        entries = list(os.scandir(owners))
    except OSError:
        return 0
    for entry in entries:
        try:
            if entry.stat(follow_symlinks=False).st_nlink == 1 and _gone(entry.name):
                os.unlink(entry.path)
                removed += 1
        except OSError:
            continue
    return removed
