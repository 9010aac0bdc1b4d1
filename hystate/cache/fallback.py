"""Where the disposable caches go when ``.git/hystate/cache/`` cannot be written (a full disk or
cache volume, no free inode, a read-only mount): a private folder under the system's temporary
folder, else an SQLite database in memory. Reads and claims never stop for a cache.

The temporary folder is ``<tmp>/hystate-<uid>/<hash of the git dir and state folder>/``, made
mode 0700 and used only when it is a real folder of this user that no one else can write: a
folder someone else planted in a shared /tmp is never trusted (a cache is only ever made there,
never read from a place hystate did not make)."""

from __future__ import annotations

import errno
import hashlib
import os
import shutil
import sqlite3
import stat
import tempfile
from pathlib import Path

# errors that say "this place cannot take a write", not "the cache is broken"
_ERRNOS = {errno.ENOSPC, errno.EDQUOT, errno.EROFS, errno.EACCES, errno.EPERM, errno.EFBIG}
_SQLITE = (
    "disk is full",
    "readonly database",
    "read-only",
    "unable to open database file",
    "disk i/o error",  # SQLite says this when its WAL cannot grow on a full disk
)


def unwritable(exc: BaseException) -> bool:
    """Whether ``exc`` says the cache's place cannot be written."""
    if isinstance(exc, sqlite3.OperationalError):
        return any(text in str(exc).lower() for text in _SQLITE)
    return isinstance(exc, OSError) and exc.errno in _ERRNOS


def cause(exc: BaseException) -> str:
    if isinstance(exc, OSError):
        return exc.strerror or str(exc)
    return str(exc)


def _key(git_dir: Path, rel_dir: str) -> str:
    return hashlib.sha256(os.fsencode(f"{git_dir}\0{rel_dir}")).hexdigest()[:24]


def _private_dir(path: Path) -> bool:
    """Make ``path`` (mode 0700) if missing; True when it is a real folder of this user that
    nobody else can write."""
    try:
        os.mkdir(path, 0o700)
    except FileExistsError:
        pass
    except OSError:
        return False
    try:
        info = os.lstat(path)
    except OSError:
        return False
    return (
        stat.S_ISDIR(info.st_mode)
        and info.st_uid == os.geteuid()
        and not info.st_mode & (stat.S_IWGRP | stat.S_IWOTH)
    )


def temporary(git_dir: Path, rel_dir: str) -> Path | None:
    """The private temporary folder for this repository's caches, or None when there is none
    to be had (then the cache lives in memory)."""
    base = Path(tempfile.gettempdir()) / f"hystate-{os.geteuid()}"
    where = base / _key(git_dir, rel_dir)
    if _private_dir(base) and _private_dir(where):
        return where
    return None


def memory_name(git_dir: Path, rel_dir: str) -> str:
    return f"hystate-{_key(git_dir, rel_dir)}"


def seed(old_db: Path, old_index: Path, new_db: Path, new_index: Path) -> None:
    """Start the moved cache from a copy of the one that could not be written (when there is
    one and the new place has none): the next refresh then reads only what changed. Best
    effort: a copy that fails leaves nothing, and the cache is made from the tree."""
    if new_db.exists() or not old_db.is_file():
        return
    pairs = [(old_db, new_db), (old_index, new_index)]
    pairs += [(Path(f"{old_db}{s}"), Path(f"{new_db}{s}")) for s in ("-wal",)]
    copied = []
    try:
        for source, target in pairs:
            if source.is_file() and not source.is_symlink():
                shutil.copyfile(source, target)
                copied.append(target)
    except OSError:
        for target in copied:
            target.unlink(missing_ok=True)
