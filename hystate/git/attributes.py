"""Whether git's attributes can convert a file on its way into git.

The blob ``git add`` stores is the work-tree file after conversion: line endings (``text``,
``eol``, ``crlf`` and core.autocrlf), ``filter`` clean commands, ``ident`` and
``working-tree-encoding``. hystate computes a blob in-process only where none of these can
apply; everywhere else git computes it. ``hystate init`` writes a ``.gitattributes`` in the state
directory that unsets every converting attribute for ``*.yaml``; that file is the proof looked
for here, provided nothing with higher precedence (``info/attributes``, a ``.gitattributes``
deeper down) can override it.
"""

from __future__ import annotations

import os
from collections.abc import Iterable

from hystate.core.filestamp import FileMemo


def no_conversion(
    root: str | os.PathLike[str], common_dir: str | os.PathLike[str], rels: Iterable[str]
) -> bool:
    """True when no attribute can convert any of ``rels`` (repo-relative ``.yaml`` paths)."""
    if _rules(f"{os.fspath(common_dir)}/info/attributes"):
        return False
    rels = list(rels)
    if not all(rel.endswith(".yaml") for rel in rels):
        return False
    top = os.fspath(root)
    return all(_pinned(top, folder) for folder in {rel.rpartition("/")[0] for rel in rels})


def _pinned(root: str, folder: str) -> bool:
    """The deepest ``.gitattributes`` above ``folder`` (itself included) pins conversion off."""
    parts = folder.split("/") if folder else []
    for depth in range(len(parts), -1, -1):
        rules = _rules("/".join([root, *parts[:depth], ".gitattributes"]))
        if rules:
            return _unsets_conversion(rules)
    return False


def _parse(content: bytes | None) -> list[list[str]]:
    if content is None:
        return []
    text = content.decode(errors="replace")
    return [line.split() for line in text.splitlines() if line.strip() and line[0] != "#"]


# Read again only when the file changed (``hystate.core.filestamp``): a transition asks three
# times, and every transition of a process asks again.
_MEMO = FileMemo(_parse)


def _rules(path: str) -> list[list[str]]:
    """The rules of a gitattributes file (pattern and attributes per line); none for a file
    that is missing or not a regular file (git does not follow a symlinked .gitattributes)."""
    return _MEMO.get(path)


_CONVERTING = ("text", "eol", "crlf", "filter", "ident", "working-tree-encoding", "binary")
_UNSET = {"-text", "-eol", "-filter", "-ident", "-working-tree-encoding"}
_PLAIN_SET = {"diff", "merge", "delta", "export-ignore", "export-subst", "linguist-generated"}


def _unsets_conversion(rules: list[list[str]]) -> bool:
    """One ``*.yaml`` rule unsets every converting attribute, and no rule of the file sets
    one or names something that may be a macro (which could set one)."""
    pinned = False
    for pattern, *attrs in rules:
        if pattern.startswith("[attr]"):
            return False
        for attr in attrs:
            name = attr.lstrip("-!").split("=", 1)[0]
            if pattern == "*.yaml" and attr in _UNSET:
                continue
            if name in _CONVERTING:
                return False
            if attr[0] not in "-!" and "=" not in attr and name not in _PLAIN_SET:
                return False
        pinned = pinned or (pattern == "*.yaml" and set(attrs) >= _UNSET)
    return pinned
