"""Locks made with ``os.open(O_CREAT | O_EXCL)``: one per episode, one for the commit step.

A lock file holds JSON ``{host, pid, start, acquired_at}``. ``start`` is the owner's process start
time (from /proc), so a pid reused by another process is not mistaken for the owner. A lock
whose owner is provably gone (same host; pid dead, or alive with another start time) is broken
at once; any other busy lock is waited on with backoff up to the timeout, then LockBusy (exit 6).
Breaking is itself serialized by a short-lived ``.break`` lock, and the stale content is
re-read under it, so a live lock is never removed by two breakers racing.
"""

from __future__ import annotations

import json
import os
import stat
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from types import TracebackType

from hystate.core.errors import GitError, LockBusy, cannot_write, is_cannot_write, shown
from hystate.core.model import check_id

# gethostname(2) is uname's nodename on Linux; os.uname spares importing socket (~2 ms)
HOST = os.uname().nodename
_UNWRITTEN_GRACE = 5.0  # seconds of wall clock an empty lock is trusted where there is no /proc
_SECOND_LOOK = 0.05  # seconds between the two looks at an empty lock nobody has open


def process_start(pid: int) -> str | None:
    """The kernel's start time of ``pid`` (clock ticks since boot), or None if it is gone."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as fh:
            stat = fh.read()
    except (FileNotFoundError, ProcessLookupError, PermissionError):
        return None
    fields = stat[stat.rindex(b")") + 2 :].split()
    return fields[19].decode()


_STARTS: dict[int, str | None] = {}


def my_start(pid: int) -> str | None:
    """``process_start`` of this process (``pid``: ``os.getpid()``), read from /proc once;
    keyed by pid, so a forked child reads its own."""
    if pid not in _STARTS:
        _STARTS[pid] = process_start(pid)
    return _STARTS[pid]


def pid_alive(pid: int) -> bool:
    """Whether ``pid`` runs. A zombie (killed, not yet reaped by its parent: under load, for a
    CLI whose wrapper shell was killed with it, that can take a while) runs no more."""
    if pid <= 0:
        return False  # 0 and negative numbers name process groups, never a lock's owner
    try:
        os.kill(pid, 0)
    except (ProcessLookupError, OverflowError, ValueError):
        return False  # gone, or a number no process can have
    except PermissionError:
        return True
    return not _zombie(pid)


def _zombie(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat", "rb") as fh:
            stat = fh.read()
    except OSError:
        return False
    return stat[stat.rindex(b")") + 2 : stat.rindex(b")") + 3] == b"Z"


@dataclass(frozen=True)
class LockOwner:
    host: str
    pid: int
    start: str | None
    acquired_at: str

    @classmethod
    def me(cls) -> LockOwner:
        pid = os.getpid()
        now = datetime.now(UTC).isoformat(timespec="seconds")
        return cls(HOST, pid, my_start(pid), now)

    @classmethod
    def read(cls, path: Path) -> LockOwner | None:
        """The owner recorded in ``path``; None if the file is empty or not a lock record."""
        try:
            # never follow a symlink, never block on a FIFO, never read more than a record
            fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK)
            try:
                if not stat.S_ISREG(os.fstat(fd).st_mode):
                    return None
                raw = os.read(fd, 4096)
            finally:
                os.close(fd)
            data = json.loads(raw)
            pid = data["pid"]
            if not isinstance(pid, int) or isinstance(pid, bool) or pid <= 0:
                return None  # hystate writes a positive int; 1.5 or "1" is not its record
            return cls(str(data["host"]), pid, data.get("start"), str(data["acquired_at"]))
        except (OSError, ValueError, KeyError, TypeError, RecursionError):
            return None  # gone meanwhile, empty (owner still writing), or not a lock record

    def to_json(self) -> bytes:
        return json.dumps(self.__dict__).encode()

    def gone(self) -> bool:
        """True only when the owner provably no longer runs: same host, pid dead or reused."""
        if self.host != HOST:
            return False
        if not pid_alive(self.pid):
            return True
        return self.start is not None and process_start(self.pid) not in (None, self.start)

    def describe(self) -> str:
        return f"{self.host} pid {self.pid} since {self.acquired_at}"


class LockTimeout(LockBusy, TimeoutError):
    """The seed's ``episode_lock`` raises a ``TimeoutError``; this is both that and LockBusy."""


class StateLock:
    """An exclusive lock file; use as a context manager.

    The seed's form also works: ``StateLock(lock_dir).episode_lock(episode_id)`` locks
    ``<lock_dir>/<episode_id>.lock`` and raises ``LockTimeout`` (a ``TimeoutError``)."""

    def __init__(self, path: str | os.PathLike[str], *, timeout: float = 30.0) -> None:
        self.path = Path(path)
        self.timeout = timeout
        self.held = False
        self.broke_stale = False  # this acquire removed the lock of a process that is gone
        self._stale_record: bytes | None = None  # that lock's content (``hand_back``)

    @contextmanager
    def episode_lock(self, episode_id: str) -> Iterator[StateLock]:
        lock = StateLock(self.path / f"{check_id(episode_id)}.lock", timeout=self.timeout)
        try:
            lock.acquire()
        except LockBusy as exc:
            raise LockTimeout(exc.message, hint=exc.hint) from None
        try:
            yield lock
        finally:
            lock.release()

    def acquire(self) -> None:
        deadline = time.monotonic() + self.timeout
        delay = 0.002
        while True:
            if self._try_create():
                return
            self._check_kind()
            if self._break_if_stale():
                continue
            if time.monotonic() >= deadline:
                owner = LockOwner.read(self.path)
                who = owner.describe() if owner else "a process that is still writing it"
                raise LockBusy(
                    f"{self.path} is held by {who}; waited {self.timeout:g}s",
                    hint="try again later; `hystate unlock` removes it if that process is gone",
                )
            import random  # only a lock that is busy waits

            time.sleep(delay * random.uniform(0.5, 1.5))
            delay = min(delay * 1.6, 0.25)

    def _check_kind(self) -> None:
        """A lock path that is a directory, a symlink (dangling or not) or a FIFO was not made
        by hystate: waiting on it would never end, removing it could remove someone's data."""
        try:
            mode = os.lstat(self.path).st_mode
        except FileNotFoundError:
            return
        if stat.S_ISREG(mode):
            return
        kind = (
            "a directory"
            if stat.S_ISDIR(mode)
            else "a symlink"
            if stat.S_ISLNK(mode)
            else "not a regular file"
        )
        raise LockBusy(
            f"{shown(str(self.path))} is {kind}, not a lock file hystate made",
            hint="remove it by hand once you know what it is",
        )

    def _try_create(self, made: bool = False) -> bool:
        try:
            fd = os.open(self.path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
        except FileExistsError:
            return False
        except OSError as exc:
            if isinstance(exc, FileNotFoundError) and not made:
                self.path.parent.mkdir(parents=True, exist_ok=True)  # made on first use
                return self._try_create(made=True)
            # a read-only or full file system, no permission: the repository's
            if is_cannot_write(exc):
                raise cannot_write(exc, shown(str(self.path)), "make the lock") from exc
            raise GitError(
                f"cannot make the lock {shown(str(self.path))}: {exc.strerror or exc}",
                hint="hystate writes its locks and state in the repository; make it writable",
            ) from exc
        try:
            os.write(fd, LockOwner.me().to_json())
        except BaseException as exc:  # no room for the record: leave no empty lock behind
            os.close(fd)
            self.path.unlink(missing_ok=True)
            if is_cannot_write(exc):
                raise cannot_write(exc, shown(str(self.path)), "make the lock") from exc  # type: ignore[arg-type]
            raise
        os.close(fd)
        self.held = True
        return True

    def _break_if_stale(self) -> bool:
        """Remove the lock if its owner is gone. True if it was removed (or vanished)."""
        if not _is_stale(self.path):
            return not os.path.lexists(self.path)
        breaker = self.path.with_name(self.path.name + ".break")
        try:
            fd = os.open(breaker, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
        except FileExistsError:
            try:
                st = os.lstat(breaker)
                if not stat.S_ISREG(st.st_mode):
                    raise LockBusy(
                        f"{breaker} is not a lock file hystate made; hystate never removes it",
                        hint="remove it by hand if nothing uses it",
                    )
                if _abandoned(breaker, st):
                    breaker.unlink()  # a breaker died mid-break (it holds the file open)
            except FileNotFoundError:
                pass
            return False
        try:
            if _is_stale(self.path):
                try:
                    self._stale_record = self.path.read_bytes()
                except OSError:
                    self._stale_record = None
                self.path.unlink(missing_ok=True)
                self.broke_stale = True
            return True
        finally:
            breaker.unlink(missing_ok=True)
            os.close(fd)

    def hand_back(self) -> None:
        """Let go of a lock this acquire broke from a dead owner by writing that owner's record
        back over it, so the next taker finds it stale as this one did (and does what this one
        could not); a plain release when that cannot be done."""
        record = self._stale_record if self.broke_stale else None
        if self.held and record is not None:
            try:
                fd = os.open(self.path, os.O_WRONLY | os.O_NOFOLLOW)
                try:
                    os.pwrite(fd, record, 0)
                    os.ftruncate(fd, len(record))
                finally:
                    os.close(fd)
            except OSError:
                pass
            else:
                self.held = False
                return
        self.release()

    def release(self) -> None:
        if self.held:
            self.path.unlink(missing_ok=True)
            self.held = False

    def __enter__(self) -> StateLock:
        self.acquire()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.release()


def _is_stale(path: Path) -> bool:
    try:
        info = os.lstat(path)
    except FileNotFoundError:
        return False
    if not stat.S_ISREG(info.st_mode):
        return False  # not hystate's: never broken automatically
    owner = LockOwner.read(path)
    if owner is None:
        return _abandoned(path, info)
    return owner.gone()


def _abandoned(path: Path, info: os.stat_result) -> bool:
    """Whether an empty or torn lock file (no owner record) was left by a process that died,
    or by a power cut. Never judged by its date (a wall clock steps: a lock dated in the future
    would block for good, a clock stepped forward would break a live one): its owner writes
    the record through the descriptor that created the file and holds it open until then, so
    a file no process has open, looked at twice a moment apart, is abandoned. Without /proc,
    its age either way of now beyond the grace."""
    identity = (info.st_dev, info.st_ino)
    user = in_use(identity)
    if user == 0:  # no /proc to ask
        return abs(time.time() - info.st_mtime) > _UNWRITTEN_GRACE
    if user is not None:
        return False
    time.sleep(_SECOND_LOOK)  # an owner between creating the file and holding it
    try:
        again = os.lstat(path)
    except FileNotFoundError:
        return False
    if (again.st_dev, again.st_ino) != identity or again.st_size != info.st_size:
        return False
    return in_use(identity) is None


def dated_in_future(path: Path) -> bool:
    """Whether ``path``'s date is ahead of the wall clock by more than the grace (the clock
    stepped back since it was written): fsck says so."""
    try:
        return os.lstat(path).st_mtime - time.time() > _UNWRITTEN_GRACE
    except OSError:
        return False


def lock_status(path: Path) -> tuple[LockOwner | None, bool]:
    """(owner, stale) of an existing lock file, for ``hystate locks`` and fsck."""
    return LockOwner.read(path), _is_stale(path)


def in_use(identity: tuple[int, int]) -> int | None:
    """A live process that has the file ``(st_dev, st_ino)`` open or as its working folder
    (Linux's /proc), or None. Without /proc every file counts as in use (by pid 0)."""
    proc = Path("/proc")
    if not (proc / "self" / "fd").is_dir():
        return 0
    for pid_dir in proc.iterdir():
        if not pid_dir.name.isdigit():
            continue
        try:
            links = [pid_dir / "cwd", *(pid_dir / "fd").iterdir()]
        except OSError:
            continue  # gone, or not ours to look at
        for link in links:
            try:
                st = os.stat(link)  # what the descriptor refers to
            except OSError:
                continue
            if (st.st_dev, st.st_ino) == identity:
                return int(pid_dir.name)
    return None
