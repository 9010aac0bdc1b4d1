"""``index.json``: ``{episode_id: {path, stage, year, title, last_updated}}`` sorted by id, for
fast lookups by other tools; a cache derived from ``state.db`` (see ``hystate.cache.state_cache``).

After a rebuild it is generated whole from SQLite (~0.3 s at 100,000 episodes). After a refresh
that changed a few episodes it is spliced instead: the previous file is mapped, each changed
entry found by bisection (entries are in id order) and matched byte for byte, and the new file
is the old one's unchanged ranges copied by the kernel (``copy_file_range``) with the new
entries between them: ~10 ms at 100,000 episodes (13-22 MB) instead of 100,000 entries generated
again. Either way the file is replaced atomically (temp file, rename), so a reader sees the old
or the new file; the replaced file is freed by a thread, off the refresh's path.

The stamp (size, mtime, inode) of the file hystate last wrote is kept in ``state.db``; a file
that is missing or not the one hystate wrote, or any entry not found where expected, means the
file is generated whole again. So is a refresh that adds or removes episodes.
"""

from __future__ import annotations

import itertools
import json
import mmap
import os
import sqlite3
import threading
from collections.abc import Callable
from pathlib import Path

from hystate.core.paths import write_all

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
    remove_leftovers(path)
    (text,) = db.execute(
        "SELECT '{' || coalesce(group_concat(entry, ','), '') || '}' FROM ("
        f" SELECT {_ENTRY} AS entry FROM episode_states ORDER BY episode_id)"
    ).fetchone()
    _free(_replace(path, [text.encode("utf-8") + b"\n"]))


def write_beside(
    db: sqlite3.Connection,
    path: Path,
    *,
    before: dict[str, str] | None = None,
    after: dict[str, str] | None = None,
) -> Callable[[], None]:
    """``write``, with the splice done by a thread of its own while the caller goes on (the
    kernel's copy of 13-22 MB needs no lock of Python's); what it returns waits for it, raises
    what it raised, and writes the file whole (with ``db``: in the caller's thread) if it
    could not splice. Call it, once, before the file's stamp is taken."""
    if before is None or after is None:
        write(db, path)
        return lambda: None
    outcome: list[BaseException | bool] = []

    def splice() -> None:
        try:
            outcome.append(_splice(path, before, after))
        except BaseException as exc:  # raised in the caller's thread, by ``wait``
            outcome.append(exc)

    thread = threading.Thread(target=splice, name="index.json")
    thread.start()

    def wait() -> None:
        thread.join()
        if isinstance(outcome[0], BaseException):
            raise outcome[0]
        if not outcome[0]:
            write(db, path)

    return wait


def _splice(path: Path, before: dict[str, str], after: dict[str, str]) -> bool:
    """Replace the changed entries in the file; False when that cannot be done safely.

    The old file is mapped, not read: each changed entry is found by bisecting the file (its
    entries are in id order) and then matched byte for byte; the new file is the old one's
    unchanged ranges copied by the kernel (``copy_file_range``) with the new entries between
    them. At 100,000 episodes: a few pages read and ~10 ms of copying, not ~40 ms of reading
    and writing 13-22 MB through Python."""
    if before.keys() != after.keys() or len(before) > SPLICE_AT_MOST:
        return False  # episodes added or removed: their place in the order is not known here
    changed = sorted(eid for eid in before if before[eid] != after[eid])
    if not changed:
        return True
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW)
    except OSError:
        return False
    replaced = None
    try:
        size = os.fstat(fd).st_size
        if size == 0:
            return False
        with mmap.mmap(fd, size, prot=mmap.PROT_READ) as mm:
            pieces: list[tuple[int, int] | bytes] = []  # (offset, length) of the old file, or new
            pos = 0
            for eid in changed:
                old = before[eid].encode("utf-8")
                if pos == 0 and mm[: len(old) + 1] == b"{" + old:
                    at = 1
                else:
                    at = mm.find(b"," + old, _near(mm, eid.encode("utf-8"), pos)) + 1
                    if at == 0:
                        return False
                pieces += [(pos, at - pos), after[eid].encode("utf-8")]
                pos = at + len(old)
            pieces.append((pos, size - pos))
            replaced = _replace(path, pieces, source=(fd, mm))
    finally:
        os.close(fd)
    _free(replaced)  # once unmapped and closed here: the last one to let go of a file frees it
    return True


def _near(mm: mmap.mmap, eid: bytes, lo: int) -> int:
    """An offset at or before the start of entry ``eid`` (at or after ``lo``), found by
    bisection: an entry starts after ``},"`` (entries are flat objects, and inside a JSON
    string a quote is escaped, so that sequence only occurs between entries)."""
    hi = len(mm)
    while hi - lo > 65536:
        mid = (lo + hi) // 2
        brace = mm.find(b'},"', mid, hi)
        if brace < 0:
            break
        start = brace + 2
        end = mm.find(b'"', start + 1, start + 1024)
        if end < 0:
            break
        if mm[start + 1 : end] < eid:
            lo = start
        else:
            hi = start
    return lo


def _replace(
    path: Path,
    pieces: list[tuple[int, int] | bytes],
    source: tuple[int, mmap.mmap] | None = None,
) -> Path | None:
    """Write the pieces (bytes, or ranges of ``source``: its fd and its map) to a temp file,
    rename it over ``path``. The file replaced stays linked under the name returned, for
    ``_free``."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    out = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW, 0o644)
    try:
        for piece in pieces:
            if isinstance(piece, bytes):
                write_all(out, piece)
            elif source is not None:
                _copy(source, out, *piece)
    finally:
        os.close(out)
    old = path.with_name(f".{path.name}.{os.getpid()}.{next(_OLD)}.old")
    try:
        os.link(path, old, follow_symlinks=False)  # keeps the replaced file's data alive
        linked = True
    except OSError:
        linked = False  # none yet (or a link cannot be made here): the rename frees it
    os.replace(tmp, path)
    return old if linked else None


def _free(old: Path | None) -> None:
    """Unlink a replaced file in a thread of its own: freeing 13-22 MB costs ~15 ms at 100,000
    episodes (the process waits for it at exit). Only once nothing here has it open or mapped
    any more: else the thread's unlink leaves the freeing to the close, on the refresh's path
    (it was: ~13 ms of every refresh after a transition, issue 29)."""
    if old is not None:
        threading.Thread(target=old.unlink, kwargs={"missing_ok": True}).start()


def _copy(source: tuple[int, mmap.mmap], out: int, offset: int, length: int) -> None:
    fd, mm = source
    end = offset + length
    while offset < end:
        try:
            n = os.copy_file_range(fd, out, end - offset, offset)
        except OSError:  # not supported between these files: through memory
            write_all(out, mm[offset:end])
            return
        if n == 0:
            raise OSError(f"{fd}: file shrank while being copied")
        offset += n


def remove_leftovers(path: Path) -> None:
    """Replaced files a killed process never freed (``.index.json.<pid>.<n>.old``)."""
    for leftover in path.parent.glob(f".{path.name}.*.old"):
        pid = leftover.name.split(".")[-3]
        if pid.isdigit() and int(pid) != os.getpid() and not _alive(int(pid)):
            leftover.unlink(missing_ok=True)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except (PermissionError, OverflowError):
        return True
    return True


_OLD = itertools.count()
