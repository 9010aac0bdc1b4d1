"""Lock paths hystate never made (a folder, a symlink, a FIFO where a lock file belongs): each
refuses work on its episode until it is gone; ``fsck`` lists them and removes the safe ones."""

from __future__ import annotations

import os
import stat
from pathlib import Path

from hystate.core.locks import in_use


def foreign_lock_files(locks_dir: Path) -> list[tuple[Path, str]]:
    """Lock paths (``*.lock``, ``*.lock.break``) that are not regular files: hystate never made
    them, and each one refuses work on its episode (exit 6) until it is gone. (path, what)."""
    found = []
    try:
        with os.scandir(locks_dir) as entries:
            listed = sorted(entries, key=lambda e: e.name)
    except (FileNotFoundError, NotADirectoryError):
        return []
    for entry in listed:
        if not entry.name.endswith((".lock", ".lock.break")):
            continue
        mode = entry.stat(follow_symlinks=False).st_mode
        if stat.S_ISREG(mode):
            continue
        what = (
            "a folder"
            if stat.S_ISDIR(mode)
            else "a symlink"
            if stat.S_ISLNK(mode)
            else "a FIFO"
            if stat.S_ISFIFO(mode)
            else "a special file"
        )
        found.append((Path(entry.path), what))
    return found


def remove_foreign_lock(path: Path) -> str | None:
    """Remove a lock path that is not a file when that is safe: an empty folder or a FIFO that
    no live process has open (or, for a folder, works in). Never a symlink (or what it points
    to), never a folder with something in it. None when removed, else why it was kept."""
    try:
        info = os.lstat(path)
    except FileNotFoundError:
        return None
    if not (stat.S_ISDIR(info.st_mode) or stat.S_ISFIFO(info.st_mode)):
        return "not an empty folder or a FIFO: remove it by hand once you know what it is"
    user = in_use((info.st_dev, info.st_ino))
    if user is not None:
        return f"in use by process {user}"
    try:
        if stat.S_ISDIR(info.st_mode):
            os.rmdir(path)  # fails unless empty: nothing in it is ever removed
        else:
            os.unlink(path)
    except OSError as exc:
        return f"not removed ({exc.strerror or exc})"
    return None
