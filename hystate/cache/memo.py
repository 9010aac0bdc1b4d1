"""Answers computed from the cache's tables, kept beside them in ``state.db`` (table ``memo``)
so that a read after no change costs a lookup instead of a scan: ``status`` at 100,000
episodes re-read 26,000 history rows and 100,000 states for its forecast at every call.

Each answer is stamped with the cache's format and the tree its tables reflected when it was
computed, read in one snapshot with the tables themselves. It is used only while the cache's
stamp (``meta``) is that same tree and format, which ``StateCache.refresh`` has just compared
with HEAD: a new commit, a checkout, a pull, a cache copied from another repository or left by
another HEAD all change or fail that stamp, and the answer is computed again, unless the
refresh that re-read a few changed episodes carried it to the new tree (``hystate.cache.follow``).
The tables are a function of the tree alone (``hystate.cache.tree``), so an answer that reads
only them (no clock, no configuration) is too. A rebuild drops the table with the others.

Keeping an answer is best effort: a read-only or busy ``state.db`` answers from the tables,
without waiting for a writer, and an unreadable row is computed again."""

from __future__ import annotations

import json
import sqlite3
import threading
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, TypeVar

from hystate.cache.stamps import CODE, FORMAT_VERSION, code_stamp, stamp

if TYPE_CHECKING:
    from hystate.cache.state_cache import StateCache

T = TypeVar("T")
__all__ = ["CODE", "FORMAT_VERSION", "code_stamp", "remembered", "rows", "stamp"]
SCHEMA = (
    "CREATE TABLE IF NOT EXISTS memo (name TEXT PRIMARY KEY, stamp TEXT NOT NULL,"
    " value TEXT NOT NULL)"
)
_local = threading.local()  # answers computed within another's computation (``remembered``)
WAIT_MS = 20  # at most this long for the write lock; then the answer is simply not kept


def remembered(
    cache: StateCache,
    name: str,
    compute: Callable[[], Any],
    decode: Callable[[Any], T],
) -> T:
    """``decode(compute())``, where ``compute`` reads only the cache's tables and returns
    plain JSON data (lists, dicts, strings, numbers, None); kept under ``name`` (which names
    the computation and its parameters) for the tree the tables reflect. ``compute`` may ask
    for other answers: they are kept with it, once its read transaction is over."""
    pending: list[tuple[str, str, str]] = _local.__dict__.setdefault("pending", [])
    outer = not getattr(_local, "busy", False)
    _local.busy = True
    try:
        found = _remembered(cache, name, compute, decode, pending)
    finally:
        if outer:
            _local.busy = False
            kept, pending[:] = list(pending), []
    if outer:
        for args in kept:
            _keep(cache, *args)
    return found


def _remembered(
    cache: StateCache,
    name: str,
    compute: Callable[[], Any],
    decode: Callable[[Any], T],
    pending: list[tuple[str, str, str]],
) -> T:
    with cache.snapshot() as db:
        now = stamp(db)
        if now is not None:
            try:
                row = db.db.execute("SELECT stamp, value FROM memo WHERE name = ?", (name,))
                found = row.fetchone()
            except sqlite3.DatabaseError:  # no memo table (yet), or a damaged one
                found = None
            if found is not None and found[0] == now and isinstance(found[1], str):
                try:
                    return decode(json.loads(found[1]))
                except (ValueError, TypeError, KeyError, IndexError, AttributeError, OverflowError):
                    pass  # not what this code wrote: computed again
        value = compute()
    try:
        text = json.dumps(value, allow_nan=False)
    except ValueError:  # not plain JSON (an infinity): used once, not kept
        return decode(value)
    if now is not None:
        pending.append((name, now, text))
    return decode(json.loads(text))


NUMBER = (int, float)
MAYBE_NUMBER = (int, float, type(None))
MAYBE_TEXT = (str, type(None))


def rows(value: Any, kinds: tuple[Any, ...]) -> list[tuple[Any, ...]]:
    """``value`` as rows of ``len(kinds)`` cells, each an instance of its kind (a type or a
    tuple of types; a bool only where ``bool`` is named); TypeError for anything else, so a
    row this code did not write is computed again instead of failing later."""
    if not isinstance(value, list):
        raise TypeError("not a list of rows")
    found = []
    for row in value:
        if not isinstance(row, list) or len(row) != len(kinds):
            raise TypeError("not a row")
        for cell, kind in zip(row, kinds, strict=True):
            named = kind if isinstance(kind, tuple) else (kind,)
            if not isinstance(cell, named) or (isinstance(cell, bool) and bool not in named):
                raise TypeError(f"{cell!r} is not {kind}")
        found.append(tuple(row))
    return found


def _keep(cache: StateCache, name: str, kept: str, text: str) -> None:
    """Store an answer if the cache still reflects the tree it was computed from."""
    try:
        conn = cache._connection()
        conn.execute(f"PRAGMA busy_timeout={WAIT_MS}")
        try:
            with cache.connect(write=True) as db:
                if stamp(db) != kept:
                    return  # refreshed meanwhile: the answer is of another tree
                db.db.execute(SCHEMA)
                # answers of other trees (or other code) are of no use any more
                db.db.execute("DELETE FROM memo WHERE stamp != ?", (kept,))
                db.db.execute("INSERT OR REPLACE INTO memo VALUES (?, ?, ?)", (name, kept, text))
        finally:
            conn.execute("PRAGMA busy_timeout=60000")
    except (sqlite3.Error, OSError):
        pass  # read-only, busy, full: the answer is used once, not kept
