"""Files read again only when they changed: what a transition reads every time but that rarely
changes (git's attributes files, git's config files, the list of year folders) is kept with the
file's stamp and used while a fresh ``lstat`` gives the same stamp.

The stamp is everything ``lstat`` says a change touches: device, inode, type and permission
bits, size, mtime and ctime in nanoseconds. A write in place changes mtime and ctime; a
replacement (rename over it) changes the inode; ``os.utime`` can put mtime back but always
sets ctime to now; a folder's mtime and ctime change when an entry is added, removed or renamed.

Timestamps are coarse (a kernel tick, or a second or two on some file systems), so two
changes close together can leave the same stamp. As git does for its index ("racy git"), a
stamp is trusted only once it is settled: the file's mtime and ctime are older than the
moment the ``lstat`` was made minus ``RACY_NS``; a file changed more recently is read again
every time until it is settled. A later change then gets a later timestamp, so a stale answer
is never served; this assumes the file system's clock is this machine's (a local file system;
a network file system whose server clock lags by more than ``RACY_NS`` is not covered).
"""

from __future__ import annotations

import os
import stat
import time
from collections.abc import Callable
from typing import Generic, TypeVar

from hystate.core.paths import read_open

T = TypeVar("T")
RACY_NS = 2_000_000_000  # FAT's mtime has a 2 s granularity; ext4 and most others, ns
_READ_FLAGS = os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | getattr(os, "O_CLOEXEC", 0)

Stamp = tuple[int, int, int, int, int, int]


def stamp(st: os.stat_result) -> Stamp:
    return (st.st_dev, st.st_ino, st.st_mode, st.st_size, st.st_mtime_ns, st.st_ctime_ns)


def settled(st: os.stat_result, since_ns: int) -> bool:
    """Whether no later change can leave ``st``'s stamp as it is (see the module's text)."""
    return max(st.st_mtime_ns, st.st_ctime_ns) < since_ns - RACY_NS


def lstat_now(path: str) -> tuple[os.stat_result | None, int]:
    """(``lstat`` of ``path``, or None when it is missing or unreachable; the time before it)."""
    now = time.time_ns()
    try:
        return os.lstat(path), now
    except OSError:
        return None, now


class FileMemo(Generic[T]):
    """``parse(content)`` of regular files by path (``parse(None)`` for a path that is missing
    or not a regular file: symlinks are never followed), read again whenever the file's stamp
    differs from the one it was read with or was not settled then."""

    def __init__(self, parse: Callable[[bytes | None], T], limit: int = 256) -> None:
        self._parse = parse
        self._limit = limit
        self._kept: dict[str, tuple[Stamp | None, T]] = {}

    def get(self, path: str) -> T:
        st, now = lstat_now(path)
        key = None if st is None else stamp(st)
        kept = self._kept.get(path)
        if kept is not None and kept[0] == key:
            return kept[1]
        content, same = (None, True) if st is None else _read_regular(path, st)
        value = self._parse(content)
        if same and (st is None or settled(st, now)):
            if len(self._kept) >= self._limit:
                self._kept.clear()
            self._kept[path] = (key, value)
        else:
            self._kept.pop(path, None)
        return value

    def clear(self) -> None:
        self._kept.clear()


def _read_regular(path: str, st: os.stat_result) -> tuple[bytes | None, bool]:
    """(content of the regular file ``path``, or None; whether what was read is the file the
    ``lstat`` ``st`` saw, unchanged while read)."""
    if not stat.S_ISREG(st.st_mode):
        return None, True
    try:
        fd = os.open(path, _READ_FLAGS)
    except OSError:
        return None, False
    try:
        before, content, after = read_open(fd)
    except OSError:
        return None, False
    finally:
        os.close(fd)
    if not stat.S_ISREG(before.st_mode):
        return None, False
    return content, stamp(before) == stamp(st) == stamp(after)
