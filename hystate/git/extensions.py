"""The index's extensions (after the entries), and the refusal of a skip-worktree entry:
the parts of ``index.py`` that read or rewrite what follows the entries.

git requires a reader to understand an extension whose signature starts with a lower-case
letter (split index ``link``, sparse ``sdir``); the others are optional. When hystate patches
entries in-process it invalidates the cache-tree (``TREE``) of the folders it touched and
writes a fresh end-of-index-entries marker (``EOIE``).
"""

from __future__ import annotations

import hashlib
import struct

from hystate.core.errors import GitError

_U32 = struct.Struct(">I")


def skip_worktree(path: bytes) -> GitError:
    """A person marked ``path`` skip-worktree: git would not update its entry (``git add``
    refuses, ``update-index`` skips it), so hystate refuses rather than leave the old blob."""
    rel = path.decode(errors="replace")
    return GitError(
        f"{rel} is marked skip-worktree in git's index: git would not record it, so hystate "
        "does not either; nothing committed",
        hint=f"`git update-index --no-skip-worktree {rel}`, then run the command again",
    )


def extension_list(data: bytes | bytearray, start: int) -> list[tuple[bytes, int, int]]:
    """(signature, body start, body end) of each extension."""
    end = len(data) - 20
    found = []
    pos = start
    while pos + 8 <= end:
        sig = bytes(data[pos : pos + 4])
        size = _U32.unpack_from(data, pos + 4)[0]
        found.append((sig, pos + 8, pos + 8 + size))
        pos += 8 + size
    return found


def mandatory_extensions(data: bytes | bytearray, start: int) -> list[bytes]:
    """Signatures of extensions git requires a reader to understand (split index, sparse)."""
    return [sig for sig, _, _ in extension_list(data, start) if not sig[:1].isupper()]


def entries_end(data: bytes | bytearray) -> int | None:
    """Where the extensions start, as the index's EOIE says (checked: the extensions from
    there lead exactly to it), or None without one."""
    eoie = len(data) - 20 - 32
    if eoie < 12 or data[eoie : eoie + 4] != b"EOIE" or _U32.unpack_from(data, eoie + 4)[0] != 24:
        return None
    start = _U32.unpack_from(data, eoie + 8)[0]
    pos = start
    while 12 <= pos < eoie:
        pos += 8 + _U32.unpack_from(data, pos + 4)[0]
    return start if pos == eoie else None


def has_extension(data: bytes | bytearray, start: int, sig: bytes) -> bool:
    return any(s == sig for s, _, _ in extension_list(data, start))


def rewrite_extensions(
    data: bytes | bytearray,
    start: int,
    dirs: set[bytes],
    *,
    replace: dict[bytes, bytes] | None = None,
    drop: set[bytes] | frozenset[bytes] = frozenset(),
    offset: int | None = None,
) -> bytes:
    """The extensions with the cache-tree of ``dirs`` (and their parents) invalidated, and a
    fresh EOIE (git's end-of-index-entries marker, naming ``offset``: where the extensions
    start in the new index, ``start`` by default); the bodies of ``replace`` put in, the
    extensions of ``drop`` left out."""
    out: list[bytes] = []
    for sig, body_start, body_end in extension_list(data, start):
        if sig == b"EOIE" or sig in drop:
            continue
        body = bytes(data[body_start:body_end])
        if replace and sig in replace:
            body = replace[sig]
        if sig == b"TREE":
            body = _invalidate_cache_tree(body, dirs)
        out.append(sig + _U32.pack(len(body)) + body)
    digest = hashlib.sha1()
    for ext in out:
        digest.update(ext[:8])
    where = start if offset is None else offset
    out.append(b"EOIE" + _U32.pack(24) + _U32.pack(where) + digest.digest())
    return b"".join(out)


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
