"""``state.db``'s SQL, behind methods: one ``CacheDB`` per transaction. Nothing else in hystate
writes these tables; readers ask ``StateCache.query`` (see ``hystate.cache.queries``)."""

from __future__ import annotations

import json
import random
import sqlite3
import time
import weakref
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from hystate.cache import jsonindex, tables


class _Connection(sqlite3.Connection):
    """A connection ``close_all`` can find (sqlite3.Connection itself takes no weak reference)."""


_OPEN: weakref.WeakSet[sqlite3.Connection] = weakref.WeakSet()


def close_all() -> None:
    """Close this process's connections still open, as the interpreter's end does: the last
    one to close folds the WAL back in and removes ``state.db-wal`` and ``-shm``. For a process
    that ends with os._exit (a warm server's child, hystate/cli/forkchild.py)."""
    for db in list(_OPEN):
        try:
            db.close()
        except sqlite3.Error:
            pass


class CacheDB:
    """The tables of ``state.db`` within one transaction."""

    def __init__(self, db: sqlite3.Connection) -> None:
        self.db = db

    @staticmethod
    def connection(path: Path, *, memory: bool = False) -> sqlite3.Connection:
        """``memory``: ``path`` is the name of a shared in-memory database (it lives while one
        of this process's connections to it is open)."""
        target = f"file:{path}?mode=memory&cache=shared" if memory else path
        db = sqlite3.connect(
            target,
            timeout=60,
            isolation_level=None,
            check_same_thread=False,
            uri=memory,
            factory=_Connection,
        )
        _OPEN.add(db)
        db.execute("PRAGMA busy_timeout=60000")
        # Switching to WAL (and opening a WAL file while another process runs its recovery or
        # closes the last connection) can be refused at once, without the busy handler: wait.
        deadline = time.monotonic() + 60
        while True:
            try:
                db.execute("PRAGMA journal_mode=WAL")
                break
            except sqlite3.OperationalError as exc:
                if "locked" not in str(exc) or time.monotonic() > deadline:
                    db.close()
                    raise
                time.sleep(0.01 + random.random() * 0.05)
        db.execute("PRAGMA synchronous=NORMAL")
        return db

    @classmethod
    @contextmanager
    def transaction(cls, db: sqlite3.Connection, *, write: bool = False) -> Iterator[CacheDB]:
        """A transaction: committed on success, rolled back on error. ``write`` takes the
        write lock at once, so concurrent refreshes queue up instead of failing to upgrade a
        stale read snapshot."""
        db.execute("BEGIN IMMEDIATE" if write else "BEGIN")
        try:
            yield cls(db)
        except BaseException:
            if db.in_transaction:
                db.execute("ROLLBACK")
            raise
        db.execute("COMMIT")

    # -- the stamp -------------------------------------------------------------------------

    def meta(self) -> dict[str, str]:
        """The cache's stamp (format, tree, head, index); an unreadable one (no tables, wrong
        columns, wrong types, values that do not parse) reads as none, so the cache is rebuilt
        instead of crashing."""
        names = {r[0] for r in self.db.execute("SELECT name FROM sqlite_master WHERE type='table'")}
        if not names >= tables.TABLES:
            return {}
        try:
            rows = self.db.execute("SELECT key, value FROM meta").fetchall()
        except sqlite3.OperationalError as exc:
            if "no such column" not in str(exc):
                raise
            return {}
        meta = {str(k): v for k, v in rows}
        if not all(isinstance(v, str) for v in meta.values()):
            return {}
        tree = meta.get("tree") or ""
        try:
            if len(bytes.fromhex(tree)) not in (0, 20):
                return {}
        except ValueError:
            return {}
        return meta

    def set_meta(self, **values: str) -> None:
        self.db.executemany("INSERT OR REPLACE INTO meta VALUES (?, ?)", sorted(values.items()))

    def reset(self) -> None:
        """Every table dropped and made again, empty."""
        for (name,) in self.db.execute(
            "SELECT name FROM sqlite_master WHERE type='table' AND name NOT LIKE 'sqlite_%'"
        ).fetchall():
            self.db.execute(f'DROP TABLE "{name}"')
        for statement in tables.SCHEMA.split(";"):
            if statement.strip():
                self.db.execute(statement)

    def drop_indexes(self) -> list[str]:
        """Drop the tables' own indexes and return the statements that make them again: a
        rebuild fills empty tables, ~2x faster without indexes to keep up row by row, then
        makes each index once (``make_indexes``) before anything queries them."""
        found = self.db.execute(
            "SELECT name, sql FROM sqlite_master WHERE type='index' AND sql IS NOT NULL"
            " ORDER BY rowid"
        ).fetchall()
        for name, _ in found:
            self.db.execute(f'DROP INDEX "{name}"')
        return [sql for _, sql in found]

    def make_indexes(self, statements: list[str]) -> None:
        for statement in statements:
            self.db.execute(statement)

    # -- rows ------------------------------------------------------------------------------

    def forget(
        self, paths: Iterable[str], episode_ids: Iterable[str]
    ) -> dict[tuple[Any, ...], str]:
        """Remove the problems of ``paths`` and the rows of ``episode_ids``; return the commits
        already attributed to their log rows, by (episode, timestamp, from, to)."""
        ids = [(e,) for e in episode_ids]
        known = {}
        for (episode_id,) in ids:
            for row in self.db.execute(
                "SELECT timestamp, from_stage, to_stage, commit_sha FROM processing_log"
                " WHERE episode_id = ? AND commit_sha IS NOT NULL",
                (episode_id,),
            ):
                known[(episode_id, *row[:3])] = row[3]
        self.db.executemany("DELETE FROM problems WHERE path = ?", [(p,) for p in paths])
        self.db.executemany("DELETE FROM episode_states WHERE episode_id = ?", ids)
        self.db.executemany("DELETE FROM processing_log WHERE episode_id = ?", ids)
        return known

    def insert(
        self,
        rows: list[tuple[Any, ...]],
        logs: list[tuple[Any, ...]],
        problems: list[tuple[str, str]],
        known: dict[tuple[Any, ...], str],
    ) -> None:
        """Episode rows, their log rows (with the commits in ``known``), file problems."""
        columns = tables.COLUMNS
        placeholders = ", ".join("?" * len(columns.split(",")))
        self.db.executemany(
            f"INSERT OR REPLACE INTO episode_states ({columns}) VALUES ({placeholders})", rows
        )
        self.db.executemany(
            "INSERT INTO processing_log (episode_id, timestamp, from_stage, to_stage, event,"
            " details, commit_sha) VALUES (?, ?, ?, ?, ?, ?, ?)",
            [(*row, known.get((row[0], row[1], row[2], row[3]))) for row in logs],
        )
        self.db.executemany("INSERT OR REPLACE INTO problems VALUES (?, ?)", problems)

    def replace_with_problems(self, episode_id: str, problems: list[tuple[str, str]]) -> None:
        """The episode is shown nowhere; these problems (path, JSON list) are reported."""
        self.db.execute("DELETE FROM episode_states WHERE episode_id = ?", (episode_id,))
        self.db.execute("DELETE FROM processing_log WHERE episode_id = ?", (episode_id,))
        self.db.executemany("INSERT OR REPLACE INTO problems VALUES (?, ?)", problems)

    def attribute(self, commits: list[tuple[str, str, str | None, str]]) -> None:
        """Fill processing_log.commit_sha from hystate's commits (sha, episode, from, to), in
        order: the k-th commit for (episode, from, to) belongs to the k-th log row without a
        commit for the same key, in (timestamp, id) order; one set-based pass over the rows of
        the episodes named (never a scan of a stage: see ``cache_schema.ATTRIBUTE``)."""
        if not commits:
            return
        self.db.execute(
            "CREATE TEMP TABLE IF NOT EXISTS attribution (seq INTEGER PRIMARY KEY, sha TEXT,"
            " episode_id TEXT, from_stage TEXT, to_stage TEXT)"
        )
        self.db.execute("DELETE FROM temp.attribution")
        self.db.executemany(
            "INSERT INTO temp.attribution (sha, episode_id, from_stage, to_stage)"
            " VALUES (?, ?, ?, ?)",
            commits,
        )
        self.db.executemany(
            "UPDATE processing_log SET commit_sha = ? WHERE id = ?",
            self.db.execute(tables.ATTRIBUTE).fetchall(),
        )
        self.db.execute("DELETE FROM temp.attribution")

    def problems(self) -> list[tuple[str, str]]:
        """(path, JSON list of problems) of every file the cache could not take in."""
        return self.db.execute("SELECT path, detail FROM problems ORDER BY path").fetchall()

    def with_problems(self, paths: list[str]) -> set[str]:
        """Those of ``paths`` that have problems recorded."""
        found = self.db.execute(
            "SELECT path FROM problems WHERE path IN (SELECT value FROM json_each(?))",
            (json.dumps(paths),),
        ).fetchall()
        return {path for (path,) in found}

    def rows(self, sql: str, params: tuple[Any, ...] = ()) -> list[sqlite3.Row]:
        self.db.row_factory = sqlite3.Row
        return self.db.execute(sql, params).fetchall()

    def iter_rows(self, sql: str, params: tuple[Any, ...] = ()) -> Iterator[sqlite3.Row]:
        self.db.row_factory = sqlite3.Row
        yield from self.db.execute(sql, params)

    # -- index.json ------------------------------------------------------------------------

    def index_entries(self, episode_ids: list[str]) -> dict[str, str]:
        return jsonindex.entries(self.db, episode_ids)

    def write_index(
        self,
        path: Path,
        before: dict[str, str] | None = None,
        after: dict[str, str] | None = None,
    ) -> None:
        jsonindex.write(self.db, path, before=before, after=after)

    def write_index_beside(
        self, path: Path, before: dict[str, str] | None, after: dict[str, str] | None
    ) -> Callable[[], None]:
        """``write_index``, its splice done by a thread: see ``jsonindex.write_beside``."""
        return jsonindex.write_beside(self.db, path, before=before, after=after)
