"""``core.sharedRepository``: the permissions git gives what it creates in the git directory
(folders, loose objects, refs, reflogs, the index), applied the same way to what hystate
creates there, so another member of the group can still run ``git commit``.

This is git's ``calc_shared_perm`` / ``adjust_shared_perm`` (path.c): ``group`` (or ``true``)
adds group read/write, ``all``/``world``/``everybody`` also world read, an octal ``0xxx`` sets
exactly that mode; write bits only where the owner has them, execute bits copied from the read
bits where the owner may execute, and folders get the set-group-id bit.
"""

from __future__ import annotations

import os
import stat

from hystate.core.errors import GitError

PERM_GROUP = 0o660
PERM_EVERYBODY = 0o664


def parse(value: str | None) -> int:
    """git's ``git_config_perm``: 0 (umask), a positive mode to add, or minus an exact mode."""
    if value is None:
        return 0
    text = value.strip().lower()
    if text in ("", "umask", "false", "no", "off"):
        return 0
    if text in ("group", "true", "yes", "on"):
        return PERM_GROUP
    if text in ("all", "world", "everybody"):
        return PERM_EVERYBODY
    try:
        number = int(text, 8)
    except ValueError:
        raise GitError(f"core.sharedRepository = {value!r} is not a value git knows") from None
    if number in (0, 1, 2):
        return (0, PERM_GROUP, PERM_EVERYBODY)[number]
    if number & 0o600 != 0o600:
        raise GitError(
            f"core.sharedRepository = {value}: the owner of files must always have read and "
            "write permissions (as git says)"
        )
    return -(number & 0o666)


def mode_for(shared: int, mode: int) -> int:
    """The mode git gives a path of ``mode`` (with its type bits) under ``shared``."""
    tweak = -shared if shared < 0 else shared
    if not mode & stat.S_IWUSR:
        tweak &= ~0o222
    if mode & stat.S_IXUSR:
        tweak |= (tweak & 0o444) >> 2
    new = (mode & ~0o777) | tweak if shared < 0 else mode | tweak
    if stat.S_ISDIR(mode):
        new |= (new & 0o444) >> 2
        new |= stat.S_ISGID
    return new


def adjust(path: str | os.PathLike[str], shared: int) -> None:
    """Give ``path`` git's shared permissions (nothing when ``shared`` is 0)."""
    if not shared:
        return
    try:
        mode = os.stat(path).st_mode
        new = mode_for(shared, mode)
        if (mode ^ new) & ~stat.S_IFMT(mode):
            os.chmod(path, stat.S_IMODE(new))
    except OSError:
        pass  # not ours to change (another member's file): git fails the same way


def makedirs(path: str | os.PathLike[str], shared: int) -> None:
    """``os.makedirs`` with git's shared permissions on every folder it creates."""
    missing = []
    here = os.path.abspath(path)
    while not os.path.isdir(here):
        missing.append(here)
        parent = os.path.dirname(here)
        if parent == here:
            break
        here = parent
    for folder in reversed(missing):
        try:
            os.mkdir(folder)
        except FileExistsError:
            continue
        adjust(folder, shared)
