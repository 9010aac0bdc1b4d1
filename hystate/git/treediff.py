"""The entries that differ between two versions of one tree object, found in their bytes: the
common start and end are skipped (compared, not parsed), and only the entries between them are
cut out. A refresh after one transition compares the old and new tree of one year folder
(5,000 entries at 100,000 episodes): parsing both into ``hystate.git.trees.Tree`` took ~10-15
ms of each ``status`` after a transition (issue 29); this takes ~2 ms.

A tree object is a run of entries ``<mode> <name>\\0<20-byte sha>``, sorted by name, each name
once. Bytes equal at the same distance from the start (or from the end) of both objects are
the same entries once both are cut at an entry's start; so is whatever lies before the first
differing byte's entry, and after the point where both have as many bytes left, at an entry's
start, within their common end. It reads git's tree format, as ``hystate.git.trees`` does,
and lives beside it in the git layer (it was in ``hystate.cache`` until issue 29's status
work)."""

from __future__ import annotations

import re
from collections.abc import Callable

from hystate.core.errors import GitError

SHA = 20
# whole entries, cut as ``Tree.parse`` cuts them: up to a NUL, then the sha's 20 bytes
_ENTRIES = re.compile(rb"(?:[^\0]*\0.{20})*", re.DOTALL)


def changed(a: bytes, b: bytes) -> dict[bytes, tuple[bytes | None, bytes | None]]:
    """Name -> (its entry in ``a``, in ``b``: ``<mode> <name>\\0<sha>``, or None where there
    is none) of every name whose entry is not the same in tree objects ``a`` and ``b``."""
    if a == b:
        return {}
    shorter = min(len(a), len(b))
    head = _common(lambda n: a[:n] == b[:n], shorter)
    tail = _common(lambda n: a[len(a) - n :] == b[len(b) - n :], shorter - head)
    # where the entry the first difference is in starts (the same in b: all before is equal)
    whole = _ENTRIES.match(a, 0, head)  # (always matches: maybe none)
    start = whole.end() if whole is not None else 0
    old: dict[bytes, bytes] = {}
    new: dict[bytes, bytes] = {}
    i = j = start
    while i < len(a) - tail:
        i = _cut(a, i, old)
    while j < len(b) - tail:
        j = _cut(b, j, new)
    while len(a) - i != len(b) - j:  # as many bytes left in both: the same entries follow
        if len(a) - i > len(b) - j:
            i = _cut(a, i, old)
        else:
            j = _cut(b, j, new)
    names = old.keys() | new.keys()
    return {n: (old.get(n), new.get(n)) for n in names if old.get(n) != new.get(n)}


def _common(equal: Callable[[int], bool], most: int) -> int:
    """The largest n <= most for which ``equal(n)`` (true up to some n, false beyond)."""
    low, high = 0, most
    while low < high:
        mid = (low + high + 1) // 2
        if equal(mid):
            low = mid
        else:
            high = mid - 1
    return low


def _end(data: bytes, start: int) -> int:
    """Where the entry starting at ``start`` ends."""
    nul = data.find(b"\0", start)
    if nul < 0 or nul + 1 + SHA > len(data):
        raise GitError("corrupt tree object", hint="run `git fsck`")
    return nul + 1 + SHA


def _cut(data: bytes, start: int, into: dict[bytes, bytes]) -> int:
    """Put the entry at ``start`` into ``into`` (by name); where the next one starts."""
    end = _end(data, start)
    entry = data[start:end]
    space = entry.find(b" ")
    if space < 0:
        raise GitError("corrupt tree object", hint="run `git fsck`")
    into[entry[space + 1 : -1 - SHA]] = entry
    return end
