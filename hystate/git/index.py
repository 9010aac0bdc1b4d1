"""git's index, updated the way git updates it: under ``index.lock``, held until HEAD has moved.

``IndexLock`` takes ``index.lock`` (O_EXCL, as git does), reads the index, and stages the new
content into the lock file; the caller moves HEAD and then ``commit()`` renames the lock over the
index. While the lock is held no git command can write the index, so a person's ``git commit``
or ``git add`` cannot interleave with a transition (git's own ``commit -a`` holds the lock the
same way).

The new content is made in-process for the common case (index v2/v3, entries already present,
no extension git requires a reader to understand): the entries are found by walking the index
(exact names, never a byte search), patched with the file's stat data, sha and mode, every
*racy* entry is smudged as git does when it writes an index (an entry whose mtime is not older
than the index that was read gets size 0, so git re-reads the file instead of trusting stat),
the cache-tree of the touched folders is invalidated, and a fresh checksum is written. A split
index (``core.splitIndex``) is written by ``split_index.py``. Anything else (index v4, sparse
index, fsmonitor, new paths, skip-worktree or intent-to-add entries, a split index git must
re-split) is staged by ``git update-index`` on a private copy of the index with the same
timestamp, whose result is then written into the held lock.

The lock is taken through ``lockfile.py`` (a lock a killed hystate process left is told, for
certain, from a live one's); ``entry_table.py`` keeps where the entries start for the next process.
"""

from __future__ import annotations

import hashlib
import os
import struct
import subprocess
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from hystate.core.errors import GitError
from hystate.git import entry_table, split_index
from hystate.git import shared as shared_mod
from hystate.git.extensions import (
    has_extension,
    mandatory_extensions,
    rewrite_extensions,
    skip_worktree,
)
from hystate.git.lockfile import LockFile
from hystate.git.settings import GitSettings

# ctime s/ns, mtime s/ns, dev, ino, mode, uid, gid, size, sha, flags
_STAT = struct.Struct(">10I20sH")
_U16, _U32 = struct.Struct(">H"), struct.Struct(">I")
_EXTENDED = 0x4000
_STAGE = 0x3000
_SKIP_FLAGS = 0x6000  # skip-worktree, intent-to-add (extended flags)
_SKIP_WORKTREE = 0x4000
_CHUNK = 1 << 20  # a SHA-1 state is kept at every MiB of the index written


@dataclass(frozen=True)
class Update:
    path: bytes  # repository-relative, "/"-separated
    sha: bytes  # binary blob sha
    mode: int  # 0o100644 or 0o100755
    stat: os.stat_result


@dataclass
class IndexMemo:
    """The index as this process last wrote it: its bytes, where each entry starts, which
    entries may be racy, and SHA-1 states at every MiB, so that the next update (if nobody
    else wrote the index meanwhile) walks nothing and hashes only from the first change."""

    key: tuple[int, int, int, int] | None = None
    buf: bytearray | None = None  # patched in place by the next update
    offsets: Mapping[bytes, int] = field(default_factory=dict)  # or entry_table's
    samples: Sequence[int] = ()  # every entry_table.STEP-th offset, once asked
    racy: list[int] = field(default_factory=list)  # offsets of entries that may be racy
    ext_start: int = 0
    checkpoints: list[tuple[int, Any]] = field(default_factory=list)


# indexes read ahead by a warm fork server (hystate/cli/warmahead.py), by path: a command takes
# its index's (``IndexLock._read`` uses a memo only while the index's stamp is its key)
WARM: dict[str, IndexMemo] = {}


def memo_for(path: Path) -> IndexMemo:
    return WARM.pop(str(path), None) or IndexMemo()


def _key(st: os.stat_result) -> tuple[int, int, int, int]:
    return (st.st_ino, st.st_size, st.st_mtime_ns, st.st_ctime_ns)


class IndexLock:
    """``index.lock`` held from reading the index until ``commit()`` or ``rollback()``."""

    def __init__(
        self,
        git_dir: Path,
        owners: Path,
        wait: float,
        memo: IndexMemo,
        *,
        index: Path | None = None,
        env: Callable[[], dict[str, str]] | None = None,
        shared: int = 0,
        settings: GitSettings | None = None,
    ) -> None:
        self.git_dir = git_dir
        self._settings = settings  # core.splitIndex, splitIndex.maxPercentChange
        shared = settings.shared_repository() if settings is not None else shared
        self.path = index or git_dir / "index"  # GIT_INDEX_FILE, as git resolved it
        self._env = env or (lambda: dict(os.environ))
        self._memo = memo
        self._lock = LockFile(self.path.with_name(self.path.name + ".lock"), owners, wait, "index")
        shared_mod.adjust(self._lock.path, shared)  # core.sharedRepository, as git
        self._staged = False
        self._new: bytearray | None = None  # the index made in-process, once staged
        self._freshen: Path | None = None  # the shared index of a split index written
        try:
            self._read()
        except BaseException:
            self.rollback()
            raise

    def __enter__(self) -> IndexLock:
        return self

    def __exit__(self, *exc: object) -> None:
        self.rollback()

    def _read(self) -> None:
        try:
            st = os.stat(self.path)
        except FileNotFoundError:
            self.stat: os.stat_result | None = None
            self.data: bytes | bytearray = b""
            return
        self.stat = st
        memo = self._memo
        if memo.buf is not None and memo.key == _key(st):
            self.data = memo.buf
            return
        with open(self.path, "rb") as fh:
            self.data = fh.read()
        if len(self.data) != st.st_size:
            raise GitError("the index changed while hystate read it", hint="try again")
        memo.key, memo.buf, memo.checkpoints = None, None, []

    # -- staging the new index into the lock -----------------------------------------------

    def stage(self, updates: Sequence[Update], worktree: Path) -> None:
        """Write the index with ``updates`` applied into the lock file (not yet in effect)."""
        buf: bytes | bytearray | None = self._patch(updates)
        if buf is None and self._split(updates):
            return
        if buf is None:
            buf = self._with_git(updates, worktree)
            self._memo.key = self._memo.buf = None
        else:  # where its entries start, for the next process (see entry_table)
            entry_table.save(self.git_dir, buf, self._memo)
        self._lock.write(buf)
        self._staged = True

    def _split(self, updates: Sequence[Update]) -> bool:
        """Stage a split index in-process (``split_index``), if it is one hystate can write."""
        if self.stat is None or not split_index.has_link(self.data):
            return False
        sec = int(self.stat.st_mtime)
        made = split_index.stage(self.data, sec, self.git_dir, updates, self._settings)
        if made is not None:
            self._memo.key = self._memo.buf = self._new = None
            self._lock.write(made[0])
            self._freshen, self._staged = made[1], True
        return made is not None

    def _patch(self, updates: Sequence[Update]) -> bytearray | None:
        """The new index made in-process, or None where git must make it."""
        if self.stat is None or not _patchable(self.data):
            return None
        memo = self._memo
        index_sec = int(self.stat.st_mtime)
        reused = memo.buf is not None and memo.buf is self.data
        memo.key = None  # until this update is in effect
        if not reused:  # the table hystate wrote beside this very index, or a walk of it
            walked = entry_table.load(self.git_dir, self.data) or _walk(bytes(self.data), index_sec)
            if walked is None:
                return None
            memo.ext_start, memo.offsets, memo.racy = walked
            memo.checkpoints, memo.samples = [], ()
        found = []
        for update in updates:
            offset = memo.offsets.get(update.path)
            if offset is None:
                return None  # a new path
            flags = _U16.unpack_from(self.data, offset + 60)[0]
            if flags & _STAGE:
                raise GitError(
                    f"{update.path.decode(errors='replace')} has an unresolved conflict",
                    hint="resolve it (git add) or abort the merge first",
                )
            extended = _U16.unpack_from(self.data, offset + 62)[0] if flags & _EXTENDED else 0
            if extended & _SKIP_WORKTREE:
                raise skip_worktree(update.path)
            if extended & _SKIP_FLAGS:
                return None
            found.append((offset, flags))
        # The memo's copy is patched in place (it is dropped if this update is not committed).
        buf = self.data if isinstance(self.data, bytearray) and reused else bytearray(self.data)
        memo.buf = None
        changed = [offset for offset, _ in found]
        # Racy entries: what git does whenever it writes an index (see the module docstring).
        racy = [o for o in memo.racy if _U32.unpack_from(buf, o + 8)[0] >= index_sec]
        for offset in racy:
            if _U32.unpack_from(buf, offset + 36)[0] != 0:
                buf[offset + 36 : offset + 40] = b"\0\0\0\0"
                changed.append(offset)
        for update, (offset, flags) in zip(updates, found, strict=True):
            fields = split_index.stat_fields(update)
            buf[offset : offset + _STAT.size] = _STAT.pack(*fields, update.sha, flags)
        ext_start = memo.ext_start
        dirs = {u.path.rpartition(b"/")[0] for u in updates}
        buf[ext_start:] = rewrite_extensions(buf, ext_start, dirs)
        buf += self._digest(buf, min([ext_start, *changed]))
        memo.racy = sorted({*racy, *changed} - {ext_start})
        self._new = buf
        return buf

    def _digest(self, buf: bytearray, first_change: int) -> bytes:
        """SHA-1 of ``buf``, resumed from the last saved state before ``first_change``."""
        kept = [(pos, h) for pos, h in self._memo.checkpoints if pos <= first_change]
        pos, state = kept[-1] if kept else (0, hashlib.sha1())
        digest = state.copy()
        view = memoryview(buf)
        end = len(buf)
        while pos < end:
            stop = min((pos // _CHUNK + 1) * _CHUNK, end)
            digest.update(view[pos:stop])
            pos = stop
            if pos % _CHUNK == 0:
                kept.append((pos, digest.copy()))
        self._memo.checkpoints = kept
        return digest.digest()

    def _with_git(self, updates: Sequence[Update], worktree: Path) -> bytes:
        """``git update-index --add`` on a private copy of the index (same timestamp, so git
        judges racy entries exactly as it would on the index itself); its result."""
        paths = b"".join(u.path + b"\0" for u in updates)
        return self._private_git(
            ["update-index", "--add", "-z", "--stdin"], paths, worktree, check_skip=updates
        )

    def stage_with_git(
        self, args: Sequence[str], worktree: Path, adopt: Sequence[str] = ()
    ) -> None:
        """Stage into the lock what ``git <args>`` makes of the index (run on a private copy,
        as ``_with_git``): e.g. ``read-tree -m -u OLD NEW``, git's own two-tree checkout,
        which also updates the work tree and refuses to overwrite local changes. The copy is
        refreshed first, as ``git checkout`` does (read-tree judges by stat data alone);
        the paths of ``adopt`` are then taken from the work tree into the copy."""
        buf = self._private_git(list(args), b"", worktree, refresh=True, adopt=adopt)
        self._memo.key = self._memo.buf = None
        self._new = None
        self._lock.write(buf)
        self._staged = True

    def _private_git(
        self,
        args: list[str],
        stdin: bytes,
        worktree: Path,
        *,
        refresh: bool = False,
        adopt: Sequence[str] = (),
        check_skip: Sequence[Update] = (),
    ) -> bytes:
        private = self.git_dir / "hystate" / f"index.{os.getpid()}.tmp"
        private.parent.mkdir(exist_ok=True)
        try:
            if self.stat is not None:
                private.write_bytes(self.data)
                os.utime(private, ns=(self.stat.st_atime_ns, self.stat.st_mtime_ns))
            else:
                private.unlink(missing_ok=True)
            # git's hooks (post-index-change) are not run for this private copy
            env = {**self._env(), "GIT_INDEX_FILE": str(private)}
            if check_skip:  # git update-index skips such an entry silently: refuse instead
                wanted = {u.path for u in check_skip}
                folders = sorted({p.rpartition(b"/")[0] or b"." for p in wanted})
                listing = subprocess.run(
                    ["git", "--literal-pathspecs", "ls-files", "-t", "-z", "--", *folders],
                    cwd=worktree, env=env, capture_output=True, check=False,
                ).stdout  # fmt: skip
                for item in filter(None, listing.split(b"\0")):
                    if item.startswith(b"S ") and item[2:] in wanted:
                        raise skip_worktree(item[2:])
            if refresh:  # "needs update" lines are no failure: those entries stay as they are
                subprocess.run(
                    [
                        "git",
                        "-c",
                        "core.hooksPath=/dev/null",
                        "update-index",
                        "-q",
                        "--ignore-submodules",
                        "--refresh",
                    ],
                    cwd=worktree,
                    env=env,
                    capture_output=True,
                    check=False,
                )
            if adopt:  # refused (a path git will not add): the command below then decides
                subprocess.run(
                    [
                        "git",
                        "-c",
                        "core.hooksPath=/dev/null",
                        "update-index",
                        "--add",
                        "--remove",
                        "-z",
                        "--stdin",
                    ],
                    input=b"".join(p.encode("utf-8", "surrogateescape") + b"\0" for p in adopt),
                    cwd=worktree,
                    env=env,
                    capture_output=True,
                    check=False,
                )
            proc = subprocess.run(
                ["git", "-c", "core.hooksPath=/dev/null", *args],
                input=stdin,
                cwd=worktree,
                env=env,
                capture_output=True,
                check=False,
            )
            if proc.returncode != 0:
                lines = proc.stderr.decode(errors="replace").strip().splitlines()
                reason = lines[-1] if lines else proc.returncode
                raise GitError(f"git {args[0]} failed: {reason}")
            return private.read_bytes()
        finally:
            private.unlink(missing_ok=True)

    # -- ending ----------------------------------------------------------------------------

    def commit(self, sync: str | None = None) -> None:
        """Put the staged index in effect (rename the lock over it; ``sync``: LockFile's)."""
        if not self._staged:
            self.rollback()
            return
        self._lock.commit(self.path, sync)
        split_index.freshen(self._freshen)  # as git does after writing a split index
        new = self._new
        if new is not None:
            self._memo.key = _key(os.stat(self.path))
            self._memo.buf = new

    def rollback(self) -> None:
        self._lock.rollback()


def _patchable(data: bytes | bytearray) -> bool:
    if len(data) < 32 or data[:4] != b"DIRC":
        return False
    return _U32.unpack_from(data, 4)[0] in (2, 3)


def _walk(data: bytes, index_sec: int) -> tuple[int, dict[bytes, int], list[int]] | None:
    """Walk every entry once: (where the extensions start, name -> offset, offsets of entries
    whose mtime is not older than the index). None if the index needs git to be handled."""
    count = _U32.unpack_from(data, 8)[0]
    offsets: dict[bytes, int] = {}
    racy: list[int] = []
    flags_at = _U16.unpack_from
    u32_at = _U32.unpack_from
    pos = 12
    end = len(data) - 20
    for _ in range(count):
        flags = flags_at(data, pos + 60)[0]
        head = 64 if flags & _EXTENDED else 62
        start = pos + head
        size = flags & 0xFFF
        if size == 0xFFF:
            size = data.index(b"\x00", start) - start
        offsets[data[start : start + size]] = pos
        if u32_at(data, pos + 8)[0] >= index_sec:
            racy.append(pos)
        pos += (head + size + 8) & ~7
        if pos > end:
            raise GitError("the index is corrupt (entries run past its end)", hint="git status")
    if mandatory_extensions(data, pos) or has_extension(data, pos, b"FSMN"):
        return None
    return pos, offsets, racy
