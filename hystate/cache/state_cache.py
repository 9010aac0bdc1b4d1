"""``state.db`` (SQLite, WAL) and ``index.json``: disposable caches of the state folder's tree
at HEAD, kept in ``.git/hystate/cache/<state dir>/``, out of reach of anything a branch can
commit.

What they reflect: HEAD's tree, never the work tree (see ``hystate.cache.tree`` for why). Every
reading command calls ``StateCache.refresh`` first: it compares the tree the cache was made from
(meta: format version, the state folder's tree sha, the HEAD it attributed commits up to, the
stamp of index.json) with HEAD's now, and re-reads only the entries whose blobs changed. So a
new commit, a plain ``git pull`` or a ``git checkout`` of another branch show up, and the refresh
after one transition reads one blob whatever the repository's size (index.json is then spliced,
not regenerated: see ``hystate.cache.jsonindex``). Uncommitted edits do not change what the caches
say; ``show`` reads the file itself, and ``fsck``/``validate`` report the difference. The state
folder's own entries (a year folder that is a symlink or a file) are checked in the work tree
at every read: one directory listing. A missing, corrupt or old-format cache is rebuilt.
Deleting the caches never loses anything.

Nothing here may grow faster than the number of episodes (tests/cache/test_scale.py): a rebuild
attributes the commits of a 100,000-episode discovery batch in one set-based statement.
"""

from __future__ import annotations

import hashlib
import json
import os
import sqlite3
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import quote

from hystate.cache import fallback, follow, jsonindex, stamps
from hystate.cache.db import CacheDB
from hystate.cache.tables import FORMAT_VERSION
from hystate.cache.tree import Entry, Loader, StateTree, key, stem
from hystate.core.errors import GitError, Problem
from hystate.core.locks import StateLock
from hystate.core.parallel import chunked_map
from hystate.core.paths import ensure_dir
from hystate.core.store import invalid_file
from hystate.git import audit

if TYPE_CHECKING:
    from hystate.core.store import EpisodeStore
    from hystate.git import GitRepo, Head

INDEX_FILE = jsonindex.INDEX_FILE


@dataclass(frozen=True)
class RefreshResult:
    reread: int  # entries read again
    rebuilt: bool
    reason: str = ""


class StateCache:
    def __init__(self, store: EpisodeStore, repo: GitRepo, db_name: str = "state.db") -> None:
        self.store = store
        self.repo = repo
        self.rel_dir = repo.relpath(store.state_dir) if store.state_dir != repo.root else "."
        # Never in the work tree, where a branch can commit (or a link can point) a database
        # with planted rows or triggers: git never fetches, merges or checks out .git/hystate/.
        self.cache_dir = cache_dir(repo.git_dir, self.rel_dir)
        self.db_path = self.cache_dir / db_name
        self.index_path = self.cache_dir / INDEX_FILE
        self.notice: Callable[[str], None] = lambda message: None
        self._held: dict[tuple[int, int], tuple[sqlite3.Connection, tuple[int, int]]] = {}
        self._pinned: dict[tuple[int, int], CacheDB] = {}  # see snapshot
        self.moved = False  # out of .git (it could not be written there)
        self.memory = False  # in memory (nowhere on disk could take it)

    @contextmanager
    def connect(self, *, write: bool = False) -> Iterator[CacheDB]:
        """The cache's tables within one transaction (see ``CacheDB``). The connection is kept
        for the next call (per process and thread): opening one and closing the last one (a
        WAL checkpoint) cost ~10 ms a refresh. A database file replaced or removed meanwhile
        is opened again. Within ``snapshot``, a read joins its transaction."""
        pinned = self._pinned.get((os.getpid(), threading.get_ident()))
        if pinned is not None and not write:
            yield pinned
            return
        with CacheDB.transaction(self._connection(), write=write) as db:
            yield db

    @contextmanager
    def snapshot(self) -> Iterator[CacheDB]:
        """One read transaction for every read of this thread within: they all see the
        tables as one commit of the cache left them (``hystate.cache.memo`` relies on it)."""
        slot = (os.getpid(), threading.get_ident())
        pinned = self._pinned.get(slot)
        if pinned is not None:
            yield pinned
            return
        with CacheDB.transaction(self._connection()) as db:
            self._pinned[slot] = db
            try:
                yield db
            finally:
                del self._pinned[slot]

    def _connection(self) -> sqlite3.Connection:
        slot = (os.getpid(), threading.get_ident())
        try:
            st = os.stat(self.db_path)
            now: tuple[int, int] | None = (st.st_dev, st.st_ino)
        except FileNotFoundError:
            now = (0, 0) if self.memory else None
        held = self._held.get(slot)
        if held is not None and (now is None or held[1] != now):
            self._close(slot)
            held = None
        if held is None:
            db = CacheDB.connection(self.db_path, memory=self.memory)
            if self.memory:
                held = self._held[slot] = (db, (0, 0))
            else:
                st = os.stat(self.db_path)
                held = self._held[slot] = (db, (st.st_dev, st.st_ino))
        return held[0]

    def _close(self, slot: tuple[int, int]) -> None:
        held = self._held.pop(slot, None)
        if held is not None and slot[0] == os.getpid():
            held[0].close()

    def close(self) -> None:
        """Close this process's connections (each thread's)."""
        for slot in list(self._held):
            self._close(slot)

    # -- refresh ---------------------------------------------------------------------------

    def refresh(
        self, *, force: bool = False, progress: Callable[[int, int], None] | None = None
    ) -> RefreshResult:
        """Bring the cache in line with HEAD's tree (see the module docstring). A cache that
        cannot be written where it lives (a full disk or cache volume, a read-only mount)
        moves, for this process, to a private temporary folder, else into memory: a cache is
        disposable, so reads and claims never stop for it."""
        while True:
            try:
                return self._refresh_here(force, progress)
            except (OSError, sqlite3.OperationalError) as exc:
                if not fallback.unwritable(exc) or self.memory:
                    raise
                self._move(exc)

    def _move(self, exc: BaseException) -> None:
        """Use the next place a cache can live (see ``hystate.cache.fallback``)."""
        self.close()
        old_db, old_index = self.db_path, self.index_path
        where = None if self.moved else fallback.temporary(self.repo.git_dir, self.rel_dir)
        self.moved = True
        if where is None:
            self.memory = True
            self.db_path = Path(fallback.memory_name(self.repo.git_dir, self.rel_dir))
            self.index_path = Path(os.devnull)
        else:
            self.cache_dir = where
            self.db_path, self.index_path = where / old_db.name, where / INDEX_FILE
            fallback.seed(old_db, old_index, self.db_path, self.index_path)
        self.notice(
            f"the cache in {old_db.parent} cannot be written ({fallback.cause(exc)}); "
            f"using {'one in memory' if self.memory else self.cache_dir} for now"
        )

    def _refresh_here(
        self, force: bool, progress: Callable[[int, int], None] | None
    ) -> RefreshResult:
        if not self.moved:
            ensure_dir(self.repo.git_dir, self.cache_dir)
        head = self.repo.head()
        tree = self.repo.subtree(self.rel_dir, head)
        try:
            if not force and self._current(tree):
                return RefreshResult(0, False)
            return self._refresh(head, tree, force, progress)
        except sqlite3.OperationalError:
            raise  # busy or locked: a real error, never a reason to throw the cache away
        except sqlite3.DatabaseError as exc:  # not a database, malformed image
            if self.moved:  # a private copy: no other process to wait for
                self._discard()
            else:
                with StateLock(self.store.state_dir / ".locks" / "_cache.lock"):
                    self._discard()
            self.notice(f"{self.db_path.name} was unreadable ({exc}); rebuilt it from the tree")
            return self._refresh(head, tree, True, progress)

    def is_current(self) -> bool:
        """Whether the caches reflect HEAD's tree now (``fsck`` asks)."""
        try:
            return self._current(self.repo.subtree(self.rel_dir))
        except sqlite3.DatabaseError:
            return False

    def _current(self, tree: bytes | None) -> bool:
        if not self.memory and not self.db_path.exists():
            return False
        with self.connect() as db:
            meta = db.meta()
        return meta.get("format") == FORMAT_VERSION and self._matches(meta, tree)

    def _matches(self, meta: dict[str, str], tree: bytes | None) -> bool:
        """The tables reflect this tree, and index.json is the file written for them."""
        return (
            meta.get("tree") == (tree.hex() if tree else "")
            and meta.get("index") == self._index_stamp()
        )

    def _index_stamp(self) -> str:
        return "" if self.memory else jsonindex.stamp(self.index_path)

    def _refresh(
        self,
        head: Head,
        tree: bytes | None,
        force: bool,
        progress: Callable[[int, int], None] | None,
    ) -> RefreshResult:
        new = StateTree(self.repo.objects, tree)
        with self.connect(write=True) as db:
            meta = db.meta()
            rebuild = force or meta.get("format") != FORMAT_VERSION
            if not rebuild and self._matches(meta, tree):
                return RefreshResult(0, False)
            reason = "forced" if force else ("missing" if not meta else "old format")
            if not rebuild:
                old = StateTree(self.repo.objects, bytes.fromhex(meta.get("tree") or "") or None)
                try:
                    changed, moved = new.changed_since(old)
                except GitError:  # the tree it was made from is gone (history rewritten, gc)
                    rebuild, reason = True, "the tree it reflected is gone from git"
            if rebuild:
                db.reset()
                entries = new.everything()
                self.repo.objects.forget_trees()  # before the workers fork: they need none
                first: dict[str, str] = {}
                copies: dict[str, list[str]] = {}
                for path, _, _ in entries:
                    if "/" in path:
                        seen = first.setdefault(stem(path), path)
                        if seen != path:
                            copies.setdefault(stem(path), [seen]).append(path)
                del first
            else:
                reason = ""
                # an id's other copies matter where a file came or went, or was a duplicate
                # (each check reads every year tree: not for a plain transition)
                suspects = moved | db.with_problems([key(p) for p in changed])
                copies = new.copies({stem(p) for p in suspects if "/" in p})
                found = {p for paths in copies.values() for p in paths}
                entries = [new.entry(p) for p in sorted(set(changed) | found)]
            duplicates = {s: paths for s, paths in copies.items() if len(paths) > 1}
            # index.json: splice the entries of a few changed episodes, or write it whole
            splice = (
                not rebuild
                and not self.memory
                and len(entries) <= jsonindex.SPLICE_AT_MOST
                and meta.get("index") == self._index_stamp()
            )
            ids = [key(stem(e[0])) for e in entries if "/" in e[0]] if splice else []
            before = db.index_entries(ids) if splice else None
            changed_ids = [] if rebuild else [key(stem(e[0])) for e in entries if "/" in e[0]]
            old_stamp = None if rebuild else stamps.stamp(db)
            rows = follow.capture(db, changed_ids, old_stamp)
            remake = db.drop_indexes() if rebuild else []
            self._reread(db, entries, progress, fresh=rebuild)
            db.make_indexes(remake)
            self._mark_duplicates(db, duplicates)
            after = db.index_entries(ids) if splice else None
            # index.json is a file for others to read (none in memory); spliced by a thread
            # while the commits are attributed and the kept answers carried (~10 ms of copying
            # at 100,000 episodes), waited for before its stamp is set
            written = (
                db.write_index_beside(self.index_path, before, after) if not self.memory else _done
            )
            try:
                since = None if rebuild else meta.get("head") or None
                if head.sha is not None and head.sha != since:
                    commits = audit.transitions(self.repo, since, head.sha)
                    db.attribute([(t.sha, t.episode_id, t.from_stage, t.to_stage) for t in commits])
                db.set_meta(
                    format=FORMAT_VERSION, tree=tree.hex() if tree else "", head=head.sha or ""
                )
                new_stamp = stamps.stamp(db)
                if rows is not None and old_stamp is not None and new_stamp is not None:
                    follow.carry(db, old_stamp, new_stamp, rows, follow.rows(db, changed_ids))
            finally:
                written()
            db.set_meta(index=self._index_stamp())
        if rebuild and reason not in ("forced", "missing"):
            self.notice(f"{self.db_path.name}: {reason}; rebuilt it from the tree")
        return RefreshResult(len(entries), rebuild, reason)

    def _reread(
        self,
        db: CacheDB,
        entries: list[Entry],
        progress: Callable[[int, int], None] | None,
        *,
        fresh: bool = False,
    ) -> None:
        """Replace the rows of ``entries`` by what their blobs hold (``fresh``: the tables are
        empty, nothing to replace), keeping the commits already attributed to their history.
        Blobs are parsed and validated in chunks; a large rebuild uses every core."""
        objects = self.repo.objects
        load = Loader(self.store, objects.dir, objects.worktree)
        done = 0
        for chunk, (rows, logs, problems) in chunked_map(load, entries, chunk=500):
            known = {}
            if not fresh:
                known = db.forget(
                    [key(e[0]) for e in chunk], [key(stem(e[0])) for e in chunk if "/" in e[0]]
                )
            db.insert(rows, logs, problems, known)
            done += len(chunk)
            if progress is not None:
                progress(done, len(entries))

    def _mark_duplicates(self, db: CacheDB, duplicates: dict[str, list[str]]) -> None:
        """An id with entries in two year folders is a problem of each, never one silently
        shown: reading commands stop and name both."""
        base = self.store.state_dir
        for episode_id, paths in duplicates.items():
            problems = []
            for path in paths:
                others = ", ".join(self.store.name(base / o) for o in paths if o != path)
                problem = Problem(
                    self.store.name(base / path), "$.episode_id", f"duplicate id: also in {others}"
                )
                problems.append((key(path), json.dumps([problem.as_dict()])))
            db.replace_with_problems(key(episode_id), problems)

    def _discard(self) -> None:
        self.close()
        if self.memory:
            return
        for suffix in ("", "-wal", "-shm"):
            Path(f"{self.db_path}{suffix}").unlink(missing_ok=True)

    # -- reading (call refresh first) ------------------------------------------------------

    def check_problems(self) -> None:
        """Reading commands never skip a broken entry silently: they stop and name it. That
        includes what is wrong with the state folder itself in the work tree (a year folder
        that is a symlink or a file: its episodes would otherwise be missing silently)."""
        found = self.store.year_anomalies()
        with self.connect() as db:
            found += [Problem(**p) for _, detail in db.problems() for p in json.loads(detail)]
        if found:
            error = invalid_file(found)
            error.hint = "`hystate validate` lists them all; fix or restore the files"
            raise error

    def query(self, sql: str, params: tuple[Any, ...] = ()) -> list[sqlite3.Row]:
        with self.connect() as db:
            return db.rows(sql, params)

    def stream(self, sql: str, params: tuple[Any, ...] = ()) -> Iterator[sqlite3.Row]:
        """The rows one by one, within one read transaction (one snapshot) held until the
        last row is read or the iterator is closed. It has a connection of its own, so a
        caller that leaves it unfinished can still ask the cache anything meanwhile."""
        conn = CacheDB.connection(self.db_path, memory=self.memory)
        try:
            with CacheDB.transaction(conn) as db:
                yield from db.iter_rows(sql, params)
        finally:
            conn.close()


def _done() -> None:
    """Nothing to wait for."""


def cache_dir(git_dir: Path, rel_state_dir: str) -> Path:
    """Where the caches of the state folder ``rel_state_dir`` live: ``.git/hystate/cache/<it,
    %-quoted>/`` (per work tree: a linked work tree has its own git dir). A name too long for
    the file system keeps its first 180 characters and a hash of the whole."""
    name = quote(rel_state_dir, safe="")
    if len(name) > 200:
        name = f"{name[:180]}~{hashlib.sha256(os.fsencode(rel_state_dir)).hexdigest()[:16]}"
    return git_dir / "hystate" / "cache" / name
