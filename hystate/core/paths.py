"""Where hystate may read and write, and how, so hostile content cannot make it escape.

State arrives through pull requests: a branch can commit a symlink, a submodule, a config naming
``.git`` or ``..``. So every path hystate takes from its config or command line is confined to
the work tree (never its root, never ``.git``, never through a symlink, never a file or another
repository), and every file it reads as state, writes or deletes is opened without following
symlinks: ``O_NOFOLLOW`` on the last component, and each folder on the way checked with
``lstat`` (or made by hystate itself).
"""

from __future__ import annotations

import errno
import os
import stat
from collections.abc import Iterable, Sequence
from contextlib import suppress
from pathlib import Path, PurePosixPath

from hystate.core.errors import HystateError, InvalidData, cannot_write, is_cannot_write

_READ_FLAGS = os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | getattr(os, "O_CLOEXEC", 0)
_WRITE_FLAGS = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | getattr(os, "O_CLOEXEC", 0)


class NotRegularFile(OSError):
    """The path is a symlink, a folder, a FIFO or a device: hystate does not read it."""

    def __init__(self, path: Path, kind: str) -> None:
        super().__init__(errno.EINVAL, kind, str(path))
        self.kind = kind


def write_all(fd: int, data: bytes | bytearray | memoryview) -> None:
    """Write all of ``data`` to descriptor ``fd`` (``os.write`` may write less than asked)."""
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view) :]


def kind_of(mode: int) -> str:
    """What a file of mode ``mode`` is, in words, for messages."""
    if stat.S_ISLNK(mode):
        return "a symlink"
    if stat.S_ISDIR(mode):
        return "a folder"
    if stat.S_ISREG(mode):
        return "a file"
    return "a special file"


def read_bytes(path: Path, limit: int | None = None) -> bytes:
    """The content of the regular file ``path`` (its first ``limit`` bytes at most); never
    through a symlink (``NotRegularFile``), never blocking on a FIFO. FileNotFoundError when
    it is missing."""
    try:
        fd = os.open(path, _READ_FLAGS)
    except OSError as exc:
        if exc.errno == errno.ELOOP:
            raise NotRegularFile(path, "a symlink") from None
        raise
    try:
        info = os.fstat(fd)
        if not stat.S_ISREG(info.st_mode):
            raise NotRegularFile(path, kind_of(info.st_mode))
        chunks, size = [], 0
        while limit is None or size < limit:
            chunk = os.read(fd, 1 << 20 if limit is None else min(limit - size, 1 << 20))
            if not chunk:
                break
            chunks.append(chunk)
            size += len(chunk)
        return b"".join(chunks)
    finally:
        os.close(fd)


def read_open(fd: int) -> tuple[os.stat_result, bytes, os.stat_result]:
    """(stat before, whole content, stat after) of the open file ``fd``: a caller compares the
    two stats to know the content was not changed while it was read."""
    before = os.fstat(fd)
    chunks = []
    while chunk := os.read(fd, 1 << 20):
        chunks.append(chunk)
    return before, b"".join(chunks), os.fstat(fd)


def ensure_dir(base: Path, path: Path, *, error: type[HystateError] = InvalidData) -> Path:
    """Make folder ``path`` (under the trusted folder ``base``) one level at a time; refuse when
    any level is a symlink or not a folder, so nothing is ever written through a link."""
    here, parts = _levels(base, path)
    for part in parts:
        here = f"{here}/{part}"
        try:
            info = os.lstat(here)
        except FileNotFoundError:
            try:
                os.mkdir(here)
            except FileExistsError:
                pass
            info = os.lstat(here)
        if not stat.S_ISDIR(info.st_mode):
            raise error(
                f"{_shown(Path(here), base)} is {kind_of(info.st_mode)}, not a folder: hystate"
                " never writes through symlinks or over files",
                hint="remove it (or restore the folder), then run the command again",
            )
    return path


def check_real_dir(base: Path, path: Path) -> str | None:
    """Why ``path`` (under ``base``) cannot be used as a folder, or None: a level is a symlink
    or not a folder. Missing levels are fine (they can be made)."""
    here, parts = _levels(base, path)
    for part in parts:
        here = f"{here}/{part}"
        try:
            info = os.lstat(here)
        except FileNotFoundError:
            return None
        if not stat.S_ISDIR(info.st_mode):
            return f"{_shown(Path(here), base)} is {kind_of(info.st_mode)}, not a folder"
    return None


def _levels(base: Path, path: Path) -> tuple[str, list[str]]:
    """(``base`` as a string, the names from it down to ``path``): ``path.relative_to(base)``
    without a Path per level in the usual case (both absolute and normalised, as Paths are);
    ValueError when ``path`` is not below ``base``."""
    top, text = str(base).rstrip("/"), str(path)
    if text.startswith(top + "/"):
        return top, text[len(top) + 1 :].split("/")
    return str(base), list(path.relative_to(base).parts)


def write_atomic(
    path: Path,
    data: bytes | Sequence[bytes | memoryview],
    *,
    mode: int = 0o644,
    sync: bool = True,
    keep_mode: bool = False,
    tmp: Path | None = None,
) -> None:
    """Replace ``path`` with ``data`` (bytes, or pieces written one after another): a temp file
    made with ``O_EXCL|O_NOFOLLOW`` (a planted file or link of that name is removed first, never
    written through), fsync, rename, fsync of the folder (so the rename survives a power cut);
    with ``sync`` false neither fsync (a batch synced once by the caller, or a disposable
    cache). The rename replaces a symlink at ``path`` itself, never its target. ``keep_mode``
    keeps the permission bits of a regular file being replaced when it is executable. The
    folder must already be checked (``ensure_dir``)."""
    tmp = tmp or path.with_name(f".{path.name}.{os.getpid()}.tmp")
    if keep_mode:
        with suppress(FileNotFoundError):
            old = os.lstat(path).st_mode
            if stat.S_ISREG(old) and old & 0o111:  # git records only the executable bit
                mode = stat.S_IMODE(old)
            else:
                keep_mode = False
    try:
        try:
            fd = os.open(tmp, _WRITE_FLAGS, mode)
        except FileExistsError:
            os.unlink(tmp)  # ours, from a killed run with the same pid, or planted: never followed
            fd = os.open(tmp, _WRITE_FLAGS, mode)
    except OSError as exc:
        if is_cannot_write(exc):
            raise cannot_write(exc, path) from exc
        raise
    except BaseException:  # Ctrl-C is raised right after the call that made the file: ours
        with suppress(FileNotFoundError):
            os.unlink(tmp)
        raise
    try:
        try:
            if keep_mode:
                os.fchmod(fd, mode)  # exactly the old bits, whatever the umask
            for piece in [data] if isinstance(data, bytes) else data:
                write_all(fd, piece)
            if sync:
                os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(tmp, path)
    except BaseException as exc:  # interrupted or failed: leave no temp file behind
        with suppress(FileNotFoundError):
            os.unlink(tmp)
        if is_cannot_write(exc):
            raise cannot_write(exc, path) from exc  # type: ignore[arg-type]
        raise
    if sync:
        fsync_dir(path.parent)


def fsync_dir(folder: Path) -> None:
    """Make the folder's entries (a rename into it) durable."""
    fd = os.open(folder, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _shown(path: Path, base: Path) -> str:
    try:
        return path.relative_to(base).as_posix()
    except ValueError:
        return str(path)


NAME_MAX, PATH_MAX = 255, 4096  # bytes of a name, of a path (Linux; macOS is 255 and 1024)


def confine(
    root: Path,
    value: str,
    what: str,
    *,
    error: type[HystateError],
    cwd: Path | None = None,
    forbidden: Iterable[Path] = (),
) -> Path:
    """The folder ``value`` names (relative to ``cwd``, else ``root``), checked to be a folder
    hystate may own: inside the work tree ``root`` and not the root itself, not in or at ``.git``
    (nor any of ``forbidden``: the git dirs), not through a symlink, not a file, and not another
    repository (a submodule). ``error`` is raised (with ``what`` naming the setting) otherwise.
    """
    if not value or "\0" in value or any(ord(c) < 32 for c in value):
        raise error(f"{what}: {value[:60]!r} is not a usable folder name")
    given = Path(value)
    start = given if given.is_absolute() else (cwd or root) / given
    path = Path(os.path.normpath(start))
    try:
        rel = PurePosixPath(path.relative_to(root).as_posix())
    except ValueError:
        raise error(f"{what}: {value!r} is outside the work tree {root}") from None
    if str(rel) == ".":
        raise error(f"{what}: {value!r} is the root of the work tree; use a folder inside it")
    if len(os.fsencode(path)) >= PATH_MAX or any(len(os.fsencode(p)) > NAME_MAX for p in rel.parts):
        raise error(f"{what}: {value[:60]!r}... is too long for a folder name")
    if any(part.casefold() == ".git" for part in rel.parts):
        raise error(f"{what}: {value!r} is inside .git; hystate's files live in the work tree")
    for git_dir in forbidden:
        git_dir = Path(os.path.normpath(git_dir))
        if path == git_dir or git_dir in path.parents or path in git_dir.parents:
            raise error(f"{what}: {value!r} overlaps the git directory {git_dir}")
    problem = check_real_dir(root, path)
    if problem is not None:
        raise error(f"{what}: {value!r}: {problem}; hystate never follows symlinks")
    if os.path.lexists(path / ".git"):
        raise error(f"{what}: {value!r} is another git repository (a submodule?)")
    return path


def is_within(path: Path, folder: Path) -> bool:
    return path == folder or folder in path.parents
