"""What the caches read: the state folder's tree at HEAD, never the work tree.

The caches (``hystate.cache.state_cache``) reflect HEAD: every hystate write is a commit, so HEAD
is the
state of record; the work tree differs from it only after a crash or a person's uncommitted
edit, which ``fsck`` and ``validate`` find. Reading the tree instead of the work tree means a
refresh needs no scan of the work tree (``git status`` stats every file: ~0.1-0.2 s at 100,000
episodes), only the tree diff: one changed file costs the three trees along its path and its
blob, whatever the size of the repository.

Paths here are relative to the state folder: ``<year>/<id>.yaml`` for an episode entry, or a
bare ``<year>`` for a year-named entry that is not a folder (a symlink, a file: a problem).
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from hystate.cache.tables import episode_row, log_rows
from hystate.core.errors import GitError, Problem
from hystate.core.store import LINK_REFUSED, check_content
from hystate.git import treediff
from hystate.git.objects import EMPTY_TREE, KINDS, ObjectStore
from hystate.git.trees import TREE_MODE

if TYPE_CHECKING:
    from hystate.core.store import EpisodeStore

LINK_MODE = b"120000"

# (path in the state folder, mode, binary sha); mode b"" when the tree has no such entry
Entry = tuple[str, bytes, bytes]
Loaded = tuple[list[tuple[Any, ...]], list[tuple[Any, ...]], list[tuple[str, str]]]


def is_year(name: str) -> bool:
    """Four ASCII digits (full-width digits are not a year)."""
    return len(name) == 4 and name.isascii() and name.isdigit()


def _is_episode_name(name: str) -> bool:
    return name.endswith(".yaml") and not name.startswith(".")


def _text(name: bytes) -> str:
    return name.decode("utf-8", "surrogateescape")


class StateTree:
    """The state folder's tree at one commit (``sha`` None: there is none)."""

    def __init__(self, objects: ObjectStore, sha: bytes | None) -> None:
        self.objects = objects
        self.sha = sha
        self._found: dict[str, bytes | None] = {}  # path -> its entry, as changed_since saw it

    def _top(self) -> dict[bytes, bytes]:
        return self.objects.tree(self.sha).entries() if self.sha is not None else {}

    def _years(self) -> dict[str, bytes]:
        """Year name -> tree sha, for the year entries that are folders."""
        return {
            _text(name): entry[-20:]
            for name, entry in self._top().items()
            if entry[:-20] == TREE_MODE and is_year(_text(name))
        }

    def everything(self) -> list[Entry]:
        """Every episode entry and every year-named entry that is not a folder."""
        found: list[Entry] = []
        for name, entry in self._top().items():
            year = _text(name)
            if not is_year(year):
                continue
            if entry[:-20] != TREE_MODE:
                found.append((year, entry[:-20], entry[-20:]))
                continue
            for inner, sub in self.objects.tree(entry[-20:]).entries().items():
                if _is_episode_name(_text(inner)):
                    found.append((f"{year}/{_text(inner)}", sub[:-20], sub[-20:]))
        return sorted(found)

    def entry(self, path: str) -> Entry:
        year, _, file = path.partition("/")
        if self.sha is None:
            return (path, b"", b"")
        if path in self._found:  # (its year folder's tree is not parsed for it)
            found_entry = self._found[path]
            if found_entry is None:
                return (path, b"", b"")
            return (path, found_entry[: found_entry.index(b" ")], found_entry[-20:])
        found = self.objects.tree(self.sha).get(year.encode("utf-8", "surrogateescape"))
        if found is not None and file:
            if found[0] != TREE_MODE:
                return (path, b"", b"")
            found = self.objects.tree(found[1]).get(file.encode("utf-8", "surrogateescape"))
        return (path, *found) if found is not None else (path, b"", b"")

    def changed_since(self, old: StateTree) -> tuple[list[str], set[str]]:
        """The paths whose entries differ from ``old``'s, and those of them that were added or
        removed (only these can make or end a duplicate id): only the year trees whose shas
        changed are read, and only where they differ (``treediff``)."""
        if old.sha == self.sha:
            return [], set()
        a, b = old._top(), self._top()
        changed: list[str] = []
        moved: set[str] = set()
        for name in a.keys() | b.keys():
            year = _text(name)
            x, y = a.get(name), b.get(name)
            if x == y or not is_year(year):
                continue
            if any(e is not None and e[:-20] != TREE_MODE for e in (x, y)):
                changed.append(year)  # not a folder (a problem), or no longer one
            differ = treediff.changed(self._raw_tree(x), self._raw_tree(y))
            for n, (before, after) in differ.items():
                if _is_episode_name(_text(n)):
                    changed.append(f"{year}/{_text(n)}")
                    self._found[changed[-1]] = after
                    if before is None or after is None:
                        moved.add(changed[-1])
        return sorted(changed), moved

    def _raw_tree(self, entry: bytes | None) -> bytes:
        """The tree object a year entry names, unparsed (b"": none, or not a folder)."""
        if entry is None or entry[:-20] != TREE_MODE or entry[-20:] == EMPTY_TREE:
            return b""
        kind, data = self.objects.read(entry[-20:])
        if kind != b"tree":
            raise GitError(f"object {entry[-20:].hex()} is a {kind.decode()}, not a tree")
        return data

    def copies(self, stems: set[str]) -> dict[str, list[str]]:
        """stem -> every episode path of that stem, in any year folder."""
        found: dict[str, list[str]] = {}
        if not stems:
            return found  # (reading every year tree for none: 0.2 s at 100,000 episodes)
        for year, sha in sorted(self._years().items()):
            tree = self.objects.tree(sha)
            for stem in stems:
                if tree.get(f"{stem}.yaml".encode("utf-8", "surrogateescape")) is not None:
                    found.setdefault(stem, []).append(f"{year}/{stem}.yaml")
        return found


@dataclass(frozen=True)
class Loader:
    """Turns tree entries into cache rows (picklable: runs in worker processes)."""

    store: EpisodeStore
    objects_dir: Path
    worktree: Path

    def __call__(self, chunk: Sequence[Entry]) -> Loaded:
        rows, logs, problems = [], [], []
        files = [e for e in chunk if "/" in e[0] and e[1] and e[1] not in KINDS]
        blobs = ObjectStore(self.objects_dir, self.worktree).read_blobs([e[2] for e in files])
        content = {e[0]: blob for e, blob in zip(files, blobs, strict=True)}
        for path, mode, _sha in chunk:
            if not mode:
                continue  # gone
            name = self.store.name(self.store.state_dir / path)
            found: list[Problem] = []
            if "/" not in path:  # a year-named entry
                if mode == LINK_MODE:
                    found = [Problem(name, "$", LINK_REFUSED)]
                elif mode != TREE_MODE:
                    found = [Problem(name, "$", "year folder is not a folder")]
            elif mode == LINK_MODE:
                found = [Problem(name, "$", LINK_REFUSED)]
            elif mode in KINDS:
                found = [Problem(name, "$", f"is {KINDS[mode]}, not a file")]
            else:
                raw = content.get(path)
                if raw is None:
                    found = [Problem(name, "$", "its git object is missing (run `git fsck`)")]
                else:
                    year, _, file = path.partition("/")
                    doc, found = check_content(raw, name, file[: -len(".yaml")], year)
                    if not found:
                        rows.append(episode_row(doc, name))
                        logs.extend(log_rows(doc))
            if found:
                problems.append((key(path), json.dumps([p.as_dict() for p in found])))
        return rows, logs, problems


def key(name: str) -> str:
    """A file name as SQLite can store it: a name that is not UTF-8 (surrogate escapes) gets
    backslash escapes; it is never a valid episode id, so it only ever names a problem."""
    try:
        name.encode("utf-8")
        return name
    except UnicodeEncodeError:
        return name.encode("utf-8", "surrogateescape").decode("utf-8", "backslashreplace")


def stem(path: str) -> str:
    """The id part of an episode path (a bare year entry names no episode: "")."""
    if "/" not in path:
        return ""
    return path.rpartition("/")[2][: -len(".yaml")]
