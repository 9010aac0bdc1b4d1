"""Real file systems that fail (issue 26): tmpfs mounts that are full of bytes or of inodes,
or read-only. Mounting needs root, as CI has; without it the harness fails loudly (a fault
test that cannot make its fault must not pass)."""

from __future__ import annotations

import errno
import os
import shutil
import subprocess
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path


def _mount(*args: str) -> None:
    proc = subprocess.run(["mount", *args], capture_output=True, text=True, check=False)
    if proc.returncode != 0:
        raise AssertionError(
            f"mount {' '.join(args)} failed (the fault tests need root): {proc.stderr}"
        )


@contextmanager
def tmpfs(where: Path, *, size: str = "4m", nr_inodes: int | None = None) -> Iterator[Path]:
    """A tmpfs mounted at ``where`` (made if missing; what was there is copied in, so a folder
    of a repository can be moved onto it), unmounted afterwards with its content copied back
    out of the way (the folder is left as it was before the mount)."""
    where.mkdir(parents=True, exist_ok=True)
    saved = where.with_name(where.name + ".saved")
    shutil.copytree(where, saved, symlinks=True)
    options = f"size={size}" + (f",nr_inodes={nr_inodes}" if nr_inodes else "")
    _mount("-t", "tmpfs", "-o", options, "tmpfs", str(where))
    try:
        shutil.copytree(saved, where, symlinks=True, dirs_exist_ok=True)
        yield where
    finally:
        subprocess.run(["umount", "-l", str(where)], check=False)
        shutil.rmtree(where, ignore_errors=True)
        saved.rename(where)


def remount(where: Path, option: str) -> None:
    """``ro`` or ``rw``: the mount at ``where`` read-only, or writable again."""
    _mount("-o", f"remount,{option}", str(where))


def fill(where: Path) -> Path:
    """Fill the file system of ``where`` up (bytes): one filler file grown until ENOSPC."""
    filler = where / ".filler"
    # unbuffered: a write that only partly fits writes what fits, and nothing is left in a
    # buffer for close() to fail on
    for size in (65536, 4096, 512, 1):  # the last partial pages too
        with open(filler, "ab", buffering=0) as fh:
            try:
                while True:
                    fh.write(b"\0" * size)
            except OSError as exc:
                if exc.errno != errno.ENOSPC:
                    raise
    return filler


def fill_inodes(where: Path) -> int:
    """Take every free inode of ``where``'s file system (empty files); how many were made."""
    folder = where / ".inodes"
    try:
        folder.mkdir()
    except OSError as exc:
        if exc.errno != errno.ENOSPC:
            raise
        return 0
    made = 0
    while True:
        try:
            os.close(os.open(folder / str(made), os.O_CREAT | os.O_WRONLY, 0o644))
        except OSError as exc:
            if exc.errno != errno.ENOSPC:
                raise
            return made
        made += 1
