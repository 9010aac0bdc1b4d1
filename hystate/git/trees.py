"""A git tree object, parsed: its entries found by name, changed, and written back in git's order
(a subtree's name compared as if it ended in "/")."""

from __future__ import annotations

import os
from collections.abc import Mapping

from hystate.core.errors import GitError

TREE_MODE = b"40000"
# Trees parsed ahead by the warm fork server (hystate/cli/warmahead.py) for the commands it
# forks, read-only there: (objects folder, sha) -> tree. A tree is its sha's content: never stale,
# but the object may have gone since (deleted, a repository replaced by another at the same path):
# one read from a loose file (LOOSE) is used only while that file is there, as a new process
# would have found it (else it is read, and a missing object is reported as it would be).
WARM: dict[tuple[str, bytes], Tree] = {}
LOOSE: set[tuple[str, bytes]] = set()


def warm(objects: str, sha: bytes, loose: str) -> Tree | None:
    """The warm server's parse of tree ``sha`` in ``objects`` (its loose file: ``loose``)."""
    found = WARM.get((objects, sha))
    if found is not None and (objects, sha) in LOOSE and not os.path.exists(loose):
        return None
    return found


class Tree:
    """A parsed tree: entries kept serialized, in git's order, with a name -> position map."""

    __slots__ = ("_items", "_pos")

    def __init__(self, items: list[bytes], pos: dict[bytes, int] | None = None) -> None:
        self._items = items
        if pos is None:
            pos = {item[item.index(b" ") + 1 : -21]: i for i, item in enumerate(items)}
        self._pos = pos

    @classmethod
    def parse(cls, data: bytes) -> Tree:
        items = []
        pos, end = 0, len(data)
        find = data.find
        while pos < end:
            nul = find(b"\x00", pos)
            if nul < 0 or nul + 21 > end:
                raise GitError("corrupt tree object", hint="run `git fsck`")
            items.append(data[pos : nul + 21])
            pos = nul + 21
        return cls(items)

    def get(self, name: bytes) -> tuple[bytes, bytes] | None:
        """(mode, binary sha) of entry ``name``, or None."""
        i = self._pos.get(name)
        if i is None:
            return None
        item = self._items[i]
        return item[: item.index(b" ")], item[-20:]

    def __len__(self) -> int:
        return len(self._items)

    def entries(self) -> dict[bytes, bytes]:
        """name -> the entry's mode and sha, as one bytes value (cheap to compare)."""
        return {
            item[item.index(b" ") + 1 : -21]: item[: item.index(b" ")] + item[-20:]
            for item in self._items
        }

    def changed(self, other: Tree) -> set[bytes]:
        """Names whose entries differ between this tree and ``other`` (present in one only, or
        with another mode or sha): set operations on the raw entries, no dicts built."""
        return {item[item.index(b" ") + 1 : -21] for item in set(self._items) ^ set(other._items)}

    def serialize(self) -> bytes:
        return b"".join(self._items)

    def with_changes(self, changes: Mapping[bytes, tuple[bytes, bytes] | None]) -> Tree:
        """A copy with entries set to (mode, sha), or removed where the value is None."""
        items = list(self._items)
        inserts = []
        removed = False
        for name, value in changes.items():
            i = self._pos.get(name)
            if value is None:
                if i is not None:
                    items[i] = b""
                    removed = True
                continue
            item = value[0] + b" " + name + b"\x00" + value[1]
            if i is None:
                inserts.append(item)
            else:
                items[i] = item
        if not removed and not inserts:
            return Tree(items, self._pos)  # same names at the same places: share the map
        if removed:
            items = [item for item in items if item]
        if inserts:
            items.extend(inserts)
            items.sort(key=_sort_key)
        return Tree(items)


def _sort_key(item: bytes) -> bytes:
    # git orders a tree's entries by name, comparing a subtree's name as if it ended in "/"
    space = item.index(b" ")
    name = item[space + 1 : -21]
    return name + b"/" if item[:space] == TREE_MODE else name
