"""``state.db`` (SQLite, WAL) and ``index.json``: disposable caches derived from the tree, kept
in ``.git/hystate/cache/<state dir>/``, out of reach of anything a branch can commit.

Every reading command calls ``StateCache.refresh`` first. It compares what the cache reflects
(meta: format version, the state folder's tree sha at HEAD, the uncommitted files it saw) with
the repository now, and re-reads only the files that differ: the git tree diff (only subtrees
whose shas changed are read) plus what ``git status`` reports under the state folder. So a new
commit, a plain ``git pull``, a ``git checkout`` of another branch or a hand edit all show up,
and the refresh after one transition reads one file whatever the repository's size (index.json
is then spliced, not regenerated: see ``hystate.jsonindex``). A missing, corrupt or old-format
cache is rebuilt. Deleting the caches never loses anything.

Nothing here may grow faster than the number of episodes (tests/test_scale.py): a rebuild
attributes the commits of a 100,000-episode discovery batch in one set-based statement.
"""

from __future__ import annotations

import json
import os
import sqlite3
from collections.abc import Callable, Iterator, Sequence
from contextlib import closing, contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from hystate import audit, jsonindex
from hystate import cache_schema as tables
from hystate.cache_schema import FORMAT_VERSION, episode_row, log_rows
from hystate.errors import Problem

if TYPE_CHECKING:
    from hystate.gitrepo import GitRepo
    from hystate.store import EpisodeStore

INDEX_FILE = jsonindex.INDEX_FILE


@dataclass(frozen=True)
class RefreshResult:
    reread: int  # files read again
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

    # -- connection ------------------------------------------------------------------------

    @contextmanager
    def connect(self, *, write: bool = False) -> Iterator[sqlite3.Connection]:
        """A connection with a transaction: committed on success, rolled back on error.
        ``write`` takes the write lock at once, so concurrent refreshes queue up instead of
        failing to upgrade a stale read snapshot."""
        with closing(sqlite3.connect(self.db_path, timeout=60, isolation_level=None)) as db:
            db.execute("PRAGMA busy_timeout=60000")
            db.execute("PRAGMA journal_mode=WAL")
            db.execute("PRAGMA synchronous=NORMAL")
            db.execute("BEGIN IMMEDIATE" if write else "BEGIN")
            try:
                yield db
            except BaseException:
                db.execute("ROLLBACK")
                raise
            db.execute("COMMIT")

    def _meta(self, db: sqlite3.Connection) -> dict[str, str]:
        """The cache's stamp; an unreadable one (wrong columns, wrong types, values that do
        not parse) reads as none, so the cache is rebuilt instead of crashing."""
        try:
            meta = {str(k): v for k, v in db.execute("SELECT key, value FROM meta").fetchall()}
        except sqlite3.OperationalError as exc:
            if "no such column" not in str(exc):
                raise
            return {}
        try:
            bytes.fromhex(meta.get("tree") or "")
            if not isinstance(json.loads(meta.get("dirty") or "{}"), dict):
                return {}
        except (ValueError, TypeError, RecursionError):
            return {}
        if not all(isinstance(v, str) for v in meta.values()):
            return {}
        return meta

    # -- refresh ---------------------------------------------------------------------------

    def refresh(
        self, *, force: bool = False, progress: Callable[[int, int], None] | None = None
    ) -> RefreshResult:
        """Bring the cache in line with the tree (see the module docstring)."""
        from hystate.paths import ensure_dir

        ensure_dir(self.repo.git_dir, self.cache_dir)
        tree = self.repo.subtree(self.rel_dir)
        dirty = self._dirty()
        try:
            if not force and self._current(tree, dirty):
                return RefreshResult(0, False)
            return self._refresh(tree, dirty, force, progress)
        except sqlite3.OperationalError:
            raise  # busy or locked: a real error, never a reason to throw the cache away
        except sqlite3.DatabaseError as exc:  # not a database, malformed image
            from hystate.locks import StateLock

            with StateLock(self.store.state_dir / ".locks" / "_cache.lock"):
                self._discard()
            self.notice(f"{self.db_path.name} was unreadable ({exc}); rebuilt it from the tree")
            return self._refresh(tree, dirty, True, progress)

    def _current(self, tree: bytes | None, dirty: dict[str, str | None]) -> bool:
        """Whether the cache already reflects this tree and these uncommitted files."""
        if not self.db_path.exists():
            return False
        with self.connect() as db:
            meta = self._meta(db) if _has_tables(db) else {}
        return meta.get("format") == FORMAT_VERSION and self._matches(
            meta, tree.hex() if tree else "", json.dumps(dirty, sort_keys=True)
        )

    def _matches(self, meta: dict[str, str], tree_hex: str, dirty_json: str) -> bool:
        """The tables reflect this tree and these uncommitted files, and index.json is the file
        written for them."""
        return (
            meta.get("tree") == tree_hex
            and meta.get("dirty") == dirty_json
            and meta.get("index") == jsonindex.stamp(self.index_path)
        )

    def _dirty(self) -> dict[str, str | None]:
        """Uncommitted episode files under the state folder -> sha of their content (None:
        deleted)."""
        from hystate.gitrepo.objects import object_id
        from hystate.paths import NotRegularFile, read_bytes

        dirty: dict[str, str | None] = {}
        prefix = "" if self.rel_dir == "." else self.rel_dir + "/"
        for rel in self.repo.dirty_paths(self.rel_dir):
            inner = rel[len(prefix) :]
            if not _is_episode_path(inner):
                continue
            try:
                dirty[inner] = object_id(b"blob", read_bytes(self.repo.root / rel)).hex()
            except NotRegularFile as exc:  # never read through a link; reported when loaded
                dirty[inner] = exc.kind
            except FileNotFoundError:
                dirty[inner] = None
        return dirty

    def _refresh(
        self,
        tree: bytes | None,
        dirty: dict[str, str | None],
        force: bool,
        progress: Callable[[int, int], None] | None,
    ) -> RefreshResult:
        tree_hex = tree.hex() if tree else ""
        dirty_json = json.dumps(dirty, sort_keys=True)
        with self.connect(write=True) as db:
            meta = self._meta(db) if _has_tables(db) else {}
            rebuild = force or meta.get("format") != FORMAT_VERSION
            if not rebuild and self._matches(meta, tree_hex, dirty_json):
                return RefreshResult(0, False)
            if rebuild:
                reason = "forced" if force else ("missing" if not meta else "old format")
                paths = self._rebuild_tables(db)
            else:
                reason = ""
                old_tree = bytes.fromhex(meta["tree"]) if meta.get("tree") else None
                changed = set(self.repo.objects.diff(old_tree, tree))
                was_dirty = json.loads(meta["dirty"])
                changed.update(
                    p
                    for p in dirty.keys() | was_dirty.keys()
                    if dirty.get(p, 0) != was_dirty.get(p, 0)
                )
                paths = sorted(p for p in changed if _is_episode_path(p))
                if any("\ufffd" in p for p in paths):
                    # git reported a name that is not UTF-8 (decoded lossily): only a full
                    # re-read finds the real file, or forgets its problem once it is gone
                    db.execute("DELETE FROM problems")
                    paths = [
                        p.relative_to(self.store.state_dir).as_posix()
                        for p in self.store.iter_paths()
                    ]
            paths, duplicates = self._with_duplicates(paths, full=rebuild)
            # index.json: splice the entries of a few changed episodes, or write it whole
            splice = (
                not rebuild
                and len(paths) <= jsonindex.SPLICE_AT_MOST
                and meta.get("index") == jsonindex.stamp(self.index_path)
            )
            ids = [_key(Path(p).stem) for p in paths] if splice else []
            before = jsonindex.entries(db, ids) if splice else None
            self._reread(db, paths, progress, fresh=rebuild)
            self._mark_duplicates(db, duplicates)
            self._attribute_commits(db, None if rebuild else meta.get("head") or None)
            after = jsonindex.entries(db, ids) if splice else None
            jsonindex.write(db, self.index_path, before=before, after=after)
            db.executemany(
                "INSERT OR REPLACE INTO meta VALUES (?, ?)",
                [
                    ("format", FORMAT_VERSION),
                    ("tree", tree_hex),
                    ("dirty", dirty_json),
                    ("head", self.repo.head().sha or ""),
                    ("index", jsonindex.stamp(self.index_path)),
                ],
            )
        if rebuild and reason != "forced" and reason != "missing":
            self.notice(f"{self.db_path.name}: {reason}; rebuilt it from the tree")
        return RefreshResult(len(paths), rebuild, reason)

    def _with_duplicates(
        self, paths: list[str], *, full: bool
    ) -> tuple[list[str], dict[str, list[str]]]:
        """The paths to re-read, with every other file of the same ids (so a duplicate, or the
        end of one, is seen whichever copy changed), and the ids that have several files."""
        if full or len(paths) > _LIST_ALL_FROM:
            base = self.store.state_dir
            every = (
                paths if full else [p.relative_to(base).as_posix() for p in self.store.iter_paths()]
            )
            wanted = {Path(p).stem for p in paths}
            by_id: dict[str, list[str]] = {}
            for inner in every:
                stem = Path(inner).stem
                if full or stem in wanted:
                    by_id.setdefault(stem, []).append(inner)
        else:
            years = [d.name for d in self.store.year_dirs()]
            by_id = {}
            for stem in {Path(p).stem for p in paths}:
                by_id[stem] = [
                    f"{y}/{stem}.yaml"
                    for y in years
                    if os.path.lexists(self.store.state_dir / y / f"{stem}.yaml")
                ]
        siblings = {p for found in by_id.values() for p in found}
        duplicates = {stem: found for stem, found in by_id.items() if len(found) > 1}
        return sorted(set(paths) | siblings), duplicates

    def _mark_duplicates(self, db: sqlite3.Connection, duplicates: dict[str, list[str]]) -> None:
        """An id with files in two year folders is a problem of each file, never one silently
        shown: reading commands stop and name both."""
        base = self.store.state_dir
        for stem, inners in duplicates.items():
            db.execute("DELETE FROM episode_states WHERE episode_id = ?", (stem,))
            db.execute("DELETE FROM processing_log WHERE episode_id = ?", (stem,))
            for inner in inners:
                others = ", ".join(self.store.name(base / o) for o in inners if o != inner)
                problem = Problem(
                    self.store.name(base / inner), "$.episode_id", f"duplicate id: also in {others}"
                )
                db.execute(
                    "INSERT OR REPLACE INTO problems VALUES (?, ?)",
                    (_key(inner), json.dumps([problem.as_dict()])),
                )

    def _rebuild_tables(self, db: sqlite3.Connection) -> list[str]:
        for (name,) in db.execute(
            "SELECT name FROM sqlite_master WHERE type='table' AND name NOT LIKE 'sqlite_%'"
        ).fetchall():
            db.execute(f'DROP TABLE "{name}"')
        for statement in tables.SCHEMA.split(";"):
            if statement.strip():
                db.execute(statement)
        base = self.store.state_dir
        return [p.relative_to(base).as_posix() for p in self.store.iter_paths()]

    def _reread(
        self,
        db: sqlite3.Connection,
        paths: list[str],
        progress: Callable[[int, int], None] | None,
        *,
        fresh: bool = False,
    ) -> None:
        """Replace the rows of ``paths`` by what the files hold now (``fresh``: the tables are
        empty, nothing to replace), keeping the commits already attributed to their history."""
        done = 0
        for chunk, (rows, logs, problems) in _load_all(self.store, paths):
            known = {}
            if not fresh:
                gone = [(_key(Path(inner).stem),) for inner in chunk]
                for (episode_id,) in gone:
                    for row in db.execute(
                        "SELECT timestamp, from_stage, to_stage, commit_sha FROM processing_log"
                        " WHERE episode_id = ? AND commit_sha IS NOT NULL",
                        (episode_id,),
                    ):
                        known[(episode_id, *row[:3])] = row[3]
                db.executemany(
                    "DELETE FROM problems WHERE path = ?", [(_key(inner),) for inner in chunk]
                )
                db.executemany("DELETE FROM episode_states WHERE episode_id = ?", gone)
                db.executemany("DELETE FROM processing_log WHERE episode_id = ?", gone)
            columns = tables.COLUMNS
            placeholders = ", ".join("?" * len(columns.split(",")))
            db.executemany(
                f"INSERT OR REPLACE INTO episode_states ({columns}) VALUES ({placeholders})", rows
            )
            db.executemany(
                "INSERT INTO processing_log (episode_id, timestamp, from_stage, to_stage, event,"
                " details, commit_sha) VALUES (?, ?, ?, ?, ?, ?, ?)",
                [(*row, known.get((row[0], row[1], row[2], row[3]))) for row in logs],
            )
            db.executemany("INSERT OR REPLACE INTO problems VALUES (?, ?)", problems)
            done += len(chunk)
            if progress is not None:
                progress(done, len(paths))

    def _attribute_commits(self, db: sqlite3.Connection, since: str | None) -> None:
        """Fill processing_log.commit_sha from hystate's commits since the last refresh.

        The k-th commit for (episode, from, to) belongs to the k-th log row without a commit
        for the same (episode, from, to), in (timestamp, id) order: one set-based pass over the
        rows of the episodes those commits name, looked up through processing_log_episode.
        (One correlated UPDATE per commit let the planner scan every row of a stage through
        processing_log_to: quadratic for a discovery batch.)"""
        head = self.repo.head().sha
        if head is None or head == since:
            return
        commits = [
            (t.sha, t.episode_id, t.from_stage, t.to_stage)
            for t in audit.transitions(self.repo, since)
        ]
        if not commits:
            return
        db.execute(
            "CREATE TEMP TABLE IF NOT EXISTS attribution (seq INTEGER PRIMARY KEY, sha TEXT,"
            " episode_id TEXT, from_stage TEXT, to_stage TEXT)"
        )
        db.execute("DELETE FROM temp.attribution")
        db.executemany(
            "INSERT INTO temp.attribution (sha, episode_id, from_stage, to_stage)"
            " VALUES (?, ?, ?, ?)",
            commits,
        )
        db.executemany(
            "UPDATE processing_log SET commit_sha = ? WHERE id = ?",
            db.execute(tables.ATTRIBUTE).fetchall(),
        )
        db.execute("DELETE FROM temp.attribution")

    def _discard(self) -> None:
        for suffix in ("", "-wal", "-shm"):
            Path(f"{self.db_path}{suffix}").unlink(missing_ok=True)

    # -- queries (call refresh first) ------------------------------------------------------

    def check_problems(self) -> None:
        """Reading commands never skip a broken file silently: they stop and name it."""
        with self.connect() as db:
            found = db.execute("SELECT path, detail FROM problems ORDER BY path").fetchall()
        if found:
            from hystate.store import invalid_file

            error = invalid_file([Problem(**p) for _, detail in found for p in json.loads(detail)])
            error.hint = "`hystate validate` lists them all; fix or restore the files"
            raise error

    def query(self, sql: str, params: tuple[Any, ...] = ()) -> list[sqlite3.Row]:
        with self.connect() as db:
            db.row_factory = sqlite3.Row
            return db.execute(sql, params).fetchall()


_Loaded = tuple[list[tuple[Any, ...]], list[tuple[Any, ...]], list[tuple[str, str]]]


def _load_chunk(store: EpisodeStore, chunk: Sequence[str]) -> _Loaded:
    """Rows, log rows and problems for some files of the state folder."""
    rows, logs, problems = [], [], []
    for inner in chunk:
        path = store.state_dir / inner
        if not os.path.lexists(path):  # a link or a folder of that name is loaded: refused
            continue
        _, doc, found = store.load(path)
        if found:
            problems.append((_key(inner), json.dumps([p.as_dict() for p in found])))
        else:
            rows.append(episode_row(doc, store.name(path)))
            logs.extend(log_rows(doc))
    return rows, logs, problems


def _load_all(store: EpisodeStore, paths: list[str]) -> Iterator[tuple[Sequence[str], _Loaded]]:
    """Files are parsed and validated in chunks; a large rebuild uses every core."""
    from functools import partial

    from hystate.parallel import chunked_map

    return chunked_map(partial(_load_chunk, store), paths, chunk=500)


def _key(name: str) -> str:
    """A file name as SQLite can store it: a name that is not UTF-8 (surrogate escapes) gets
    backslash escapes; it is never a valid episode id, so it only ever names a problem."""
    try:
        name.encode("utf-8")
        return name
    except UnicodeEncodeError:
        return name.encode("utf-8", "surrogateescape").decode("utf-8", "backslashreplace")


def _has_tables(db: sqlite3.Connection) -> bool:
    names = {r[0] for r in db.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
    return names >= tables.TABLES


def _is_episode_path(inner: str) -> bool:
    parts = inner.split("/")
    year = parts[0]
    return (
        len(parts) == 2
        and len(year) == 4
        and year.isascii()
        and year.isdigit()
        and parts[1].endswith(".yaml")
    )


_LIST_ALL_FROM = 2000  # changed files from which listing the year folders beats probing them


def cache_dir(git_dir: Path, rel_state_dir: str) -> Path:
    """Where the caches of the state folder ``rel_state_dir`` live: ``.git/hystate/cache/<it,
    %-quoted>/`` (per work tree: a linked work tree has its own git dir)."""
    from urllib.parse import quote

    return git_dir / "hystate" / "cache" / quote(rel_state_dir, safe="")
