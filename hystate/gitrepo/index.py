"""Update a few entries of git's index in place, under git's own ``index.lock``.

``git update-index`` parses and rewrites the whole index: 3.4 ms at 1,000 files, ~57 ms at
100,000. Here the entries to change are found without parsing the others (the EOIE extension
gives where the entries end; hystate writes it so the next update finds it), patched at their
fixed offsets, the cache-tree of their folders invalidated, and the file written back with a
fresh checksum. Anything unusual (index v4, split index, sparse index, an entry not yet in the
index, a conflicted entry) is not handled here: ``prepare`` returns None and the caller runs
``git update-index`` instead.
"""

from __future__ import annotations

import hashlib
import os
import struct
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from hystate.gitrepo.refs import take_git_lock

_ENTRY = struct.Struct(">10I20sH")  # ctime s/ns, mtime s/ns, dev, ino, mode, uid, gid, size
_EXTENDED = 0x4000
_STAGE = 0x3000
_SKIP_FLAGS = 0x6000  # skip-worktree, intent-to-add (extended flags)
_MASK = 0xFFFFFFFF


@dataclass(frozen=True)
class Update:
    path: bytes  # repository-relative, "/"-separated
    sha: bytes  # binary blob sha
    stat: os.stat_result


_CHUNK = 1 << 20  # a SHA-1 state is kept at every MiB of the index written


@dataclass
class IndexMemo:
    """The index as this process last wrote it, with SHA-1 states at every MiB, so the next
    update (if nobody else wrote the index meanwhile) neither reads the file again nor hashes
    the unchanged bytes before the first patched entry."""

    key: tuple[int, int, int, int] | None = None
    buf: bytearray | None = None
    checkpoints: list[tuple[int, Any]] | None = None


def _key(st: os.stat_result) -> tuple[int, int, int, int]:
    return (st.st_ino, st.st_size, st.st_mtime_ns, st.st_ctime_ns)


class IndexPatch:
    """The index read under ``index.lock``; ``commit`` writes the patched copy and renames it."""

    def __init__(
        self, git_dir: Path, fd: int, buf: bytearray, ext_start: int, memo: IndexMemo, reused: bool
    ) -> None:
        self.path = git_dir / "index"
        self.lock = git_dir / "index.lock"
        self._fd = fd
        self._buf = buf
        self._ext_start = ext_start
        self._memo = memo
        self._checkpoints = (memo.checkpoints or []) if reused else []

    def release(self) -> None:
        if self._fd >= 0:
            os.close(self._fd)
            self._fd = -1
            self.lock.unlink(missing_ok=True)

    def locate(self, updates: list[Update]) -> list[tuple[int, int]] | None:
        """(entry offset, flags) per update, or None when one cannot be patched in place."""
        found = []
        for update in updates:
            where = _find_entry(self._buf, update.path, self._ext_start)
            if where is None:
                return None
            found.append(where)
        return found

    def commit(self, updates: list[Update], found: list[tuple[int, int]]) -> None:
        buf = self._buf
        for update, (offset, flags) in zip(updates, found, strict=True):
            st = update.stat
            old_mode = struct.unpack_from(">I", buf, offset + 24)[0]
            buf[offset : offset + _ENTRY.size] = _ENTRY.pack(
                int(st.st_ctime) & _MASK,
                st.st_ctime_ns % 1_000_000_000,
                int(st.st_mtime) & _MASK,
                st.st_mtime_ns % 1_000_000_000,
                st.st_dev & _MASK,
                st.st_ino & _MASK,
                old_mode,
                st.st_uid & _MASK,
                st.st_gid & _MASK,
                st.st_size & _MASK,
                update.sha,
                flags,
            )
        dirs = {p.path.rpartition(b"/")[0] for p in updates}
        buf[self._ext_start :] = _rewrite_extensions(buf, self._ext_start, dirs)
        first_change = min([self._ext_start, *(offset for offset, _ in found)])
        buf += self._digest(first_change)
        view = memoryview(buf)
        written = 0
        while written < len(buf):
            written += os.write(self._fd, view[written:])
        os.close(self._fd)
        self._fd = -1
        os.replace(self.lock, self.path)
        self._memo.key = _key(os.stat(self.path))
        self._memo.buf = buf

    def _digest(self, first_change: int) -> bytes:
        """SHA-1 of the new content, resumed from the last saved state before ``first_change``."""
        kept = [(pos, h) for pos, h in self._checkpoints if pos <= first_change]
        pos, state = kept[-1] if kept else (0, hashlib.sha1())
        digest = state.copy()
        view = memoryview(self._buf)
        end = len(self._buf)
        while pos < end:
            stop = min((pos // _CHUNK + 1) * _CHUNK, end)
            digest.update(view[pos:stop])
            pos = stop
            if pos % _CHUNK == 0:
                kept.append((pos, digest.copy()))
        self._memo.checkpoints = kept
        return digest.digest()


def prepare(git_dir: Path, wait: float, memo: IndexMemo | None = None) -> IndexPatch | None:
    """Take ``index.lock`` and read the index; None (lock released) if it is not patchable."""
    memo = memo if memo is not None else IndexMemo()
    lock = git_dir / "index.lock"
    fd = take_git_lock(lock, wait)
    ext_start = None
    reused = False
    try:
        st = os.stat(git_dir / "index")
        if memo.buf is not None and memo.key == _key(st):
            buf, reused = memo.buf, True
        else:
            memo.buf = memo.key = memo.checkpoints = None
            buf = bytearray(st.st_size)
            with open(git_dir / "index", "rb") as fh:
                if fh.readinto(buf) != st.st_size:
                    raise ValueError("index changed while read")
        ext_start = _entries_end(buf)
    except (FileNotFoundError, ValueError, struct.error):
        ext_start = None
    if ext_start is None or mandatory_extensions(buf, ext_start):
        os.close(fd)
        lock.unlink(missing_ok=True)
        return None
    return IndexPatch(git_dir, fd, buf, ext_start, memo, reused)


def _entries_end(data: bytes | bytearray) -> int | None:
    """Offset where the entries end (and extensions begin); None for unsupported indexes."""
    if len(data) < 32 or data[:4] != b"DIRC":
        return None
    version, count = struct.unpack_from(">II", data, 4)
    if version not in (2, 3):
        return None
    eoie = len(data) - 20 - 32
    if eoie > 12 and data[eoie : eoie + 8] == b"EOIE\x00\x00\x00\x18":
        offset = struct.unpack_from(">I", data, eoie + 8)[0]
        if 12 <= offset <= eoie and _ext_hash(data, offset, eoie) == data[eoie + 12 : eoie + 32]:
            return int(offset)
    # No (valid) EOIE: walk the entries once; the index written back carries one.
    pos = 12
    for _ in range(count):
        flags = struct.unpack_from(">H", data, pos + 60)[0]
        head = 64 if flags & _EXTENDED else 62
        name_len = flags & 0xFFF
        if name_len == 0xFFF:
            name_len = data.index(b"\x00", pos + head) - pos - head
        pos += (head + name_len + 8) & ~7
    return pos


def _ext_hash(data: bytes | bytearray, start: int, stop: int) -> bytes:
    digest = hashlib.sha1()
    pos = start
    while pos < stop:
        size = struct.unpack_from(">I", data, pos + 4)[0]
        digest.update(data[pos : pos + 8])
        pos += 8 + size
    return digest.digest()


def _find_entry(data: bytes | bytearray, path: bytes, stop: int) -> tuple[int, int] | None:
    """(offset, flags) of ``path``'s stage-0 entry, found without walking the index."""
    needle = path + b"\x00"
    pos = data.find(needle, 12, stop)
    while pos >= 0:
        for head in (62, 64):
            start = pos - head
            if start < 12 or (start - 12) % 8:
                continue
            flags = struct.unpack_from(">H", data, start + 60)[0]
            extended = bool(flags & _EXTENDED)
            if extended != (head == 64) or (flags & 0xFFF) != min(len(path), 0xFFF):
                continue
            if flags & _STAGE:
                return None  # conflicted: let git handle it
            if extended and struct.unpack_from(">H", data, start + 62)[0] & _SKIP_FLAGS:
                return None
            return start, flags
        pos = data.find(needle, pos + 1, stop)
    return None


def _rewrite_extensions(data: bytes | bytearray, start: int, dirs: set[bytes]) -> bytes:
    """The extensions with the cache-tree of ``dirs`` (and their parents) invalidated, and a
    fresh EOIE. An unknown mandatory extension (lower-case signature) is refused earlier."""
    end = len(data) - 20
    out: list[bytes] = []
    pos = start
    while pos < end:
        sig = bytes(data[pos : pos + 4])
        size = struct.unpack_from(">I", data, pos + 4)[0]
        body = bytes(data[pos + 8 : pos + 8 + size])
        pos += 8 + size
        if sig == b"EOIE":
            continue
        if sig == b"TREE":
            body = _invalidate_cache_tree(body, dirs)
        out.append(sig + struct.pack(">I", len(body)) + body)
    digest = hashlib.sha1()
    for ext in out:
        digest.update(ext[:8])
    out.append(b"EOIE" + struct.pack(">I", 24) + struct.pack(">I", start) + digest.digest())
    return b"".join(out)


def mandatory_extensions(data: bytes | bytearray, start: int) -> list[bytes]:
    """Signatures of extensions git requires a reader to understand (split index, sparse)."""
    end = len(data) - 20
    found = []
    pos = start
    while pos < end:
        sig = data[pos : pos + 4]
        if not sig[:1].isupper():
            found.append(bytes(sig))
        pos += 8 + struct.unpack_from(">I", data, pos + 4)[0]
    return found


def _invalidate_cache_tree(body: bytes, dirs: set[bytes]) -> bytes:
    """Mark the cache-tree nodes of ``dirs`` and all their ancestors as invalid (count -1)."""
    stale = {b""}
    for d in dirs:
        parts = d.split(b"/") if d else []
        for i in range(1, len(parts) + 1):
            stale.add(b"/".join(parts[:i]))
    out = []
    stack: list[tuple[bytes, int]] = []  # (path of the open node, children still to come)
    pos = 0
    while pos < len(body):
        nul = body.index(b"\x00", pos)
        nl = body.index(b"\n", nul)
        name = body[pos:nul]
        count_s, subtrees_s = body[nul + 1 : nl].split(b" ")
        count, subtrees = int(count_s), int(subtrees_s)
        pos = nl + 1
        sha = b""
        if count >= 0:
            sha = body[pos : pos + 20]
            pos += 20
        while stack and stack[-1][1] == 0:
            stack.pop()
        if stack:
            parent, left = stack[-1]
            stack[-1] = (parent, left - 1)
            full = parent + b"/" + name if parent else name
        else:
            full = b""
        stack.append((full, subtrees))
        if full in stale:
            count, sha = -1, b""
        out.append(name + b"\x00" + b"%d %d\n" % (count, subtrees) + sha)
    return b"".join(out)
