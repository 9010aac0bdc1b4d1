"""A transition staged into a *split* index in-process, as git writes one (``split-index.c``).

Where the person set ``core.splitIndex=true``, git keeps the index in two files: an immutable
shared index (``sharedindex.<sha1>``, no extensions) and ``.git/index``, which holds only the
entries that differ from it plus a ``link`` extension: the shared index's SHA-1, an EWAH *delete*
bitmap and an EWAH *replace* bitmap over the shared entries. The first entries of
``.git/index`` replace, in the order of the replace bitmap's set bits, the shared entries at
those positions; they are written with an empty name (git requires it). The entries after them
are added, sorted by name and stage. TREE, UNTR and the other extensions live in ``.git/index``.

``stage`` makes the new ``.git/index`` for a transition: a path already replaced or added
updates its entry, a shared path gets its replace bit, a new path is added; every racy entry
is smudged (size 0) as git's ``do_write_index`` does (a racy shared entry is written as a
replacement so that it can be smudged, as ``prepare_to_write_split_index`` does), and the
cache-tree of the touched folders is invalidated. It returns None (git then writes the index,
re-splitting it as it decides) for anything unusual: deleted shared entries, index v4, another
mandatory extension, fsmonitor, extended flags, a path whose folder is a file or the reverse,
or when the entries not in the shared index would pass ``splitIndex.maxPercentChange``.
hystate never splits an index itself: libgit2 and other readers cannot read one.
"""

from __future__ import annotations

import bisect
import hashlib
import os
import struct
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Protocol

from hystate.core.errors import GitError
from hystate.git import ewah
from hystate.git.extensions import (
    entries_end,
    extension_list,
    rewrite_extensions,
    skip_worktree,
)
from hystate.git.shared_index import SharedIndex, entry_name, open_shared

if TYPE_CHECKING:
    from hystate.git.settings import GitSettings


class Update(Protocol):
    """What ``index.Update`` gives: the new entry of one path."""

    @property
    def path(self) -> bytes: ...
    @property
    def sha(self) -> bytes: ...
    @property
    def mode(self) -> int: ...
    @property
    def stat(self) -> os.stat_result: ...


_STAT = struct.Struct(">10I20sH")
_U16, _U32 = struct.Struct(">H"), struct.Struct(">I")
_EXTENDED = 0x4000
_STAGE = 0x3000
_HIGH = 0xF000  # assume-valid, extended, stage: everything but the name length
_MASK = 0xFFFFFFFF
_DEFAULT_MAX_PERCENT = 20


def has_link(data: bytes | bytearray) -> bool:
    """Whether ``data`` (an index) is split: it has a ``link`` extension."""
    ends = _ends(data)
    return ends is not None and any(s == b"link" for s, _, _ in extension_list(data, ends))


def _ends(data: bytes | bytearray) -> int | None:
    """Where the entries end: no walk at 100,000 entries with the EOIE hystate asks git for."""
    ends = entries_end(data)
    return _entries_end(data) if ends is None else ends


def _entries_end(data: bytes | bytearray) -> int | None:
    if len(data) < 32 or data[:4] != b"DIRC" or _U32.unpack_from(data, 4)[0] not in (2, 3):
        return None
    pos = 12
    for _ in range(_U32.unpack_from(data, 8)[0]):
        pos = entry_name(data, pos)[1]
        if pos > len(data) - 20:
            return None
    return pos


def freshen(shared: Path | None) -> None:
    """Touch the shared index of the split index just written (git's ``freshen_shared_index``:
    ``splitIndex.sharedIndexExpire`` deletes only shared indexes no index used lately)."""
    if shared is not None:
        try:
            os.utime(shared)
        except OSError:
            pass


def max_percent(settings: GitSettings) -> int:
    """``splitIndex.maxPercentChange`` as git reads it (outside 0..100: the default)."""
    raw = settings.get("splitindex.maxpercentchange")
    try:
        value = int(raw) if raw is not None else -1
    except ValueError:
        value = -1
    return value if 0 <= value <= 100 else _DEFAULT_MAX_PERCENT


def _entry(st_fields: tuple[int, ...], sha: bytes, flags: int, ext: int, name: bytes) -> bytes:
    head = _STAT.pack(*st_fields, sha, flags) + (_U16.pack(ext) if flags & _EXTENDED else b"")
    size = (len(head) + len(name) + 8) & ~7
    return head + name + b"\0" * (size - len(head) - len(name))


def _smudged(raw: bytes) -> bytes:
    return raw[:36] + b"\0\0\0\0" + raw[40:]


def stage(
    data: bytes | bytearray,
    index_sec: int,
    git_dir: Path,
    updates: Sequence[Update],
    settings: GitSettings | None,
) -> tuple[bytearray, Path] | None:
    """(the new ``.git/index``, the shared index to freshen), or None where git must write it."""
    if settings is None or not settings.flag("core.splitindex"):
        return None  # git would merge the index back (false) or hystate was not asked to keep it
    ends = _ends(data)
    if ends is None:
        return None
    exts = extension_list(data, ends)
    sigs = [s for s, _, _ in exts]
    if b"FSMN" in sigs or any(not s[:1].isupper() and s != b"link" for s in sigs):
        return None
    link = [(a, b) for s, a, b in exts if s == b"link"]
    if len(link) != 1 or link[0][1] - link[0][0] < 20:
        return None
    start, stop = link[0]
    base = bytes(data[start : start + 20])
    if base == bytes(20) or stop == start + 20:
        return None
    deleted, after = ewah.decode(data, start + 20, stop)
    replaced, after = ewah.decode(data, after, stop)
    if deleted or after != stop:
        return None
    shared = open_shared(git_dir, base.hex(), index_sec)
    if shared is None:
        return None
    made = _Split.read(data, ends, replaced, shared)
    if made is None or not made.apply(updates, index_sec):
        return None
    total = shared.count + len(made.added)
    limit = max_percent(settings)
    if limit == 0 or (limit < 100 and total * limit < len(made.added) * 100):
        return None  # git writes a new shared index here
    dirs = {u.path.rpartition(b"/")[0] for u in updates}
    return made.write(data, ends, dirs, base), shared.path


class _Split:
    """The entries of ``.git/index``: replacements by shared ordinal, additions by name."""

    def __init__(self, shared: SharedIndex, version: int) -> None:
        self.shared = shared
        self.version = version
        self.replaced: dict[int, bytes] = {}
        self.added: dict[tuple[bytes, int], bytes] = {}
        self.names: list[bytes] = []  # of the added entries, sorted
        self.conflicted: set[bytes] = set()  # added entries with a stage

    @classmethod
    def read(
        cls, data: bytes | bytearray, ends: int, replaced: list[int], shared: SharedIndex
    ) -> _Split | None:
        made = cls(shared, _U32.unpack_from(data, 4)[0])
        count = _U32.unpack_from(data, 8)[0]
        if len(replaced) > count or (replaced and replaced[-1] >= shared.count):
            return None
        pos = 12
        for i in range(count):
            name, after = entry_name(data, pos)
            raw = bytes(data[pos:after])
            flags = _U16.unpack_from(raw, 60)[0]
            if flags & _EXTENDED:
                return None
            if i < len(replaced):
                if name:
                    return None  # git would refuse this index: let it say so
                made.replaced[replaced[i]] = raw
            else:
                if not name:
                    return None
                made.added[(name, (flags & _STAGE) >> 12)] = raw
            pos = after
        made.names = sorted({name for name, _ in made.added})
        made.conflicted = {name for name, stage in made.added if stage}
        return made if pos == ends else None

    def apply(self, updates: Sequence[Update], index_sec: int) -> bool:
        """Smudge the racy entries, then put ``updates`` in; False where git must do it."""
        shared = self.shared
        data = shared.data
        for key, raw in self.added.items():
            if _U32.unpack_from(raw, 8)[0] >= index_sec and raw[36:40] != b"\0\0\0\0":
                self.added[key] = _smudged(raw)
        for ordinal, raw in self.replaced.items():
            if _U32.unpack_from(raw, 8)[0] >= index_sec and raw[36:40] != b"\0\0\0\0":
                self.replaced[ordinal] = _smudged(raw)
        for ordinal, offset in shared.racy:
            if ordinal in self.replaced or _U32.unpack_from(data, offset + 8)[0] < index_sec:
                continue
            raw = bytes(data[offset : offset + 62])
            flags = _U16.unpack_from(raw, 60)[0]
            if flags & _EXTENDED:
                return False
            if raw[36:40] != b"\0\0\0\0":  # written as a replacement, so that it is smudged
                self.replaced[ordinal] = _smudged(raw[:60]) + _U16.pack(flags & _HIGH) + b"\0\0"
        return all(self._put(update) for update in updates)  # stops at the first False

    def _put(self, update: Update) -> bool:
        path = update.path
        fields = stat_fields(update)
        if path in self.conflicted:
            raise _conflict(path)
        old = self.added.get((path, 0))
        if old is not None:
            flags = _U16.unpack_from(old, 60)[0]
            self.added[(path, 0)] = _entry(fields, update.sha, flags, 0, path)
            return True
        found = self.shared.seek(path)
        if found is not None and found[2] == path:
            ordinal, offset, _ = found
            flags = _U16.unpack_from(self.shared.data, offset + 60)[0]
            if flags & _STAGE:
                raise _conflict(path)
            if flags & _EXTENDED:
                ext = _U16.unpack_from(self.shared.data, offset + 62)[0]
                if ext & 0x4000:
                    raise skip_worktree(path)
                return False
            self.replaced[ordinal] = _entry(fields, update.sha, flags & _HIGH, 0, b"")
            return True
        if not self._new_path_fits(path, found):
            return False
        self.added[(path, 0)] = _entry(fields, update.sha, min(len(path), 0xFFF), 0, path)
        bisect.insort(self.names, path)
        return True

    def _new_path_fits(self, path: bytes, found: tuple[int, int, bytes] | None) -> bool:
        """No folder of ``path`` is a file in the index, and ``path`` is no folder there."""
        names = self.names
        parts = path.split(b"/")
        for i in range(1, len(parts)):
            folder = b"/".join(parts[:i])
            hit = self.shared.seek(folder)
            at = bisect.bisect_left(names, folder)
            if (at < len(names) and names[at] == folder) or (hit is not None and hit[2] == folder):
                return False
        below = path + b"/"
        at = bisect.bisect_left(names, below)
        if at < len(names) and names[at].startswith(below):
            return False
        hit = self.shared.seek(below)
        return hit is None or not hit[2].startswith(below)

    def write(self, data: bytes | bytearray, ends: int, dirs: set[bytes], base: bytes) -> bytearray:
        order = sorted(self.replaced)
        entries = [self.replaced[o] for o in order]
        entries += [self.added[key] for key in sorted(self.added)]
        out = bytearray(b"DIRC" + _U32.pack(self.version) + _U32.pack(len(entries)))
        for raw in entries:
            out += raw
        link = base + ewah.encode([]) + ewah.encode(order)
        start = len(out)
        out += rewrite_extensions(
            data, ends, dirs, replace={b"link": link}, drop={b"IEOT"}, offset=start
        )
        out += hashlib.sha1(out).digest()
        return out


def _conflict(path: bytes) -> GitError:
    return GitError(
        f"{path.decode(errors='replace')} has an unresolved conflict",
        hint="resolve it (git add) or abort the merge first",
    )


def stat_fields(update: Update) -> tuple[int, ...]:
    """An index entry's ten 32-bit stat fields for ``update``, as git records them."""
    st = update.stat
    return (
        int(st.st_ctime) & _MASK,
        st.st_ctime_ns % 1_000_000_000,
        int(st.st_mtime) & _MASK,
        st.st_mtime_ns % 1_000_000_000,
        st.st_dev & _MASK,
        st.st_ino & _MASK,
        update.mode,
        st.st_uid & _MASK,
        st.st_gid & _MASK,
        st.st_size & _MASK,
    )
