"""``index.json``: ``{episode_id: {path, stage, year, title, last_updated}}`` sorted by id, for
fast lookups by other tools; a cache derived from ``state.db`` (see ``hystate.cache``).

After a rebuild it is generated whole from SQLite (~0.3 s at 100,000 episodes). After a refresh
that changed a few episodes it is spliced instead: the entries that changed are found in the
previous file (a forward scan, since both are in id order) and the new file is the old bytes
with those entries replaced: a copy of the file (~25 ms at 100,000 episodes, 13-22 MB, most of
it the rename freeing the old file) instead of 100,000 entries generated again. Either way the
file is replaced atomically (temp file, rename), so a reader sees the old or the new file.

The stamp (size, mtime, inode) of the file hystate last wrote is kept in ``state.db``; a file
that is missing or not the one hystate wrote, or any entry not found where expected, means the
file is generated whole again. So is a refresh that adds or removes episodes.
"""

from __future__ import annotations

import json
import os
import sqlite3
from pathlib import Path

from hystate.paths import write_atomic

INDEX_FILE = "index.json"
SPLICE_AT_MOST = 1000  # changed entries; beyond that generating the file whole is as quick

# One entry as it appears in the file; a JSON string never contains a bare `"` (it is escaped),
# so `,"<id>":{` can only occur where an entry starts.
_ENTRY = (
    "json_quote(episode_id) || ':' || json_object('path', path, 'stage', stage, 'year', year,"
    " 'title', title, 'last_updated', last_updated)"
)


def stamp(path: Path) -> str:
    """What identifies the file hystate wrote ("" when there is none)."""
    try:
        st = os.stat(path, follow_symlinks=False)
    except FileNotFoundError:
        return ""
    return f"{st.st_size}:{st.st_mtime_ns}:{st.st_ino}"


def entries(db: sqlite3.Connection, episode_ids: list[str]) -> dict[str, str]:
    """The index entries of these episodes as the cache holds them now (absent: no row)."""
    return dict(
        db.execute(
            f"SELECT episode_id, {_ENTRY} FROM episode_states"
            " WHERE episode_id IN (SELECT value FROM json_each(?))",
            (json.dumps(episode_ids),),
        ).fetchall()
    )


def write(
    db: sqlite3.Connection,
    path: Path,
    *,
    before: dict[str, str] | None = None,
    after: dict[str, str] | None = None,
) -> None:
    """Bring ``path`` in line with ``db``: splice the entries that went from ``before`` to
    ``after`` into the file when that is safe, else generate it whole."""
    if before is not None and after is not None and _splice(path, before, after):
        return
    (text,) = db.execute(
        "SELECT '{' || coalesce(group_concat(entry, ','), '') || '}' FROM ("
        f" SELECT {_ENTRY} AS entry FROM episode_states ORDER BY episode_id)"
    ).fetchone()
    _replace(path, [text.encode("utf-8"), b"\n"])


def _splice(path: Path, before: dict[str, str], after: dict[str, str]) -> bool:
    """Replace the changed entries in the file; False when that cannot be done safely."""
    if before.keys() != after.keys() or len(before) > SPLICE_AT_MOST:
        return False  # episodes added or removed: their place in the order is not known here
    changed = sorted(eid for eid in before if before[eid] != after[eid])
    if not changed:
        return True
    try:
        data = path.read_bytes()
    except OSError:
        return False
    view = memoryview(data)
    pieces: list[bytes | memoryview] = []
    pos = 0
    for eid in changed:
        old = before[eid].encode("utf-8")
        if pos == 0 and data.startswith(b"{" + old):
            at = 1
        else:
            at = data.find(b"," + old, pos) + 1
            if at == 0:
                return False
        pieces += [view[pos:at], after[eid].encode("utf-8")]
        pos = at + len(old)
    pieces.append(view[pos:])
    _replace(path, pieces)
    return True


def _replace(path: Path, pieces: list[bytes | memoryview]) -> None:
    # a cache: no fsync (a file that is not the one hystate stamped is generated again)
    write_atomic(path, pieces, sync=False)
