"""The seed document's Python API, for pipeline code written against it.

Most of the seed's names are hystate's own classes, which carry the seed's methods beside
their richer ones (``StateManager``, ``EpisodeState``, ``StateTransitionValidator``,
``ErrorRecovery``, ``RecoveryManager``, ``ReportGenerator``, ``StateLock``). This module holds
what only the seed's shape needs (the seed's ``update_state`` keywords are
``hystate.core.seed_fields``; ``EpisodeState(episode_id=..., ...)`` is ``model.seed_document``):

- ``StateDatabase``: the seed's SQLite backend; ``record_event`` keeps its events in
  ``<state_dir>/events.jsonl`` (append-only, not tracked), so a cache rebuild never loses them;
- ``YAMLPersistence``: ``save_state``/``load_state`` of one episode file, validated.
"""

from __future__ import annotations

import errno
import json
import os
import sqlite3
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from hystate.core.errors import HystateError, InvalidData
from hystate.core.model import EpisodeState, check_id
from hystate.core.paths import NotRegularFile, read_bytes
from hystate.core.rules import check_message
from hystate.core.schema import episode_problems
from hystate.core.store import EpisodeStore, dump, invalid_file, parse_content
from hystate.manager import StateManager


class StateDatabase:
    """The seed's SQLite backend. ``state.db`` itself is a cache derived from the episode
    files (rebuilt whenever it is missing or stale); the events of ``record_event`` live in
    ``events.jsonl`` beside it, so they survive every rebuild (the file is not tracked: each
    node keeps its own event log)."""

    EVENTS_FILE = "events.jsonl"
    MAX_DETAILS = 10_000

    def __init__(self, db_path: str | os.PathLike[str]) -> None:
        self.db_path = Path(db_path)
        self.state_dir = self.db_path.parent
        self.events_path = self.state_dir / self.EVENTS_FILE
        self._conn: sqlite3.Connection | None = None

    @property
    def conn(self) -> sqlite3.Connection:
        """A connection to the cache database, for the seed's own SQL (read it, never write).
        In a state directory that is hystate's cache in ``.git/hystate/cache/`` (brought up to
        date first), never a ``state.db`` in the work tree, which a branch could have planted."""
        if self._conn is None:
            self._conn = sqlite3.connect(self._trusted_path())
        return self._conn

    def _trusted_path(self) -> Path:
        try:
            manager = StateManager(self.state_dir)
        except HystateError:
            return self.db_path  # not a state directory: a plain database of the caller's
        manager.refresh()
        return manager.cache.db_path

    def close(self) -> None:
        if self._conn is not None:
            self._conn.close()
            self._conn = None

    def record_event(self, episode_id: str, event: str, details: str | None = None) -> None:
        """Log a processing event (one line appended to ``events.jsonl``; no commit)."""
        check_id(episode_id)
        name = check_message(str(event), "event")
        if not name or len(name) > 200:
            raise InvalidData("event: one line of at most 200 characters")
        if details is not None and len(str(details)) > self.MAX_DETAILS:
            raise InvalidData(f"details: at most {self.MAX_DETAILS} characters")
        path = EpisodeStore(self.state_dir).find(episode_id)
        stage = None
        if path is not None:
            try:
                stage = EpisodeStore(self.state_dir).read(path)[1].stage.value
            except InvalidData:
                stage = None
        line = json.dumps(
            {
                "episode_id": episode_id,
                "timestamp": datetime.now(UTC).isoformat(timespec="milliseconds"),
                "stage": stage,
                "event": name,
                "details": None if details is None else str(details),
            },
            ensure_ascii=False,
        )
        self.state_dir.mkdir(parents=True, exist_ok=True)
        try:  # never through a symlink a branch committed under that name
            fd = os.open(
                self.events_path, os.O_WRONLY | os.O_CREAT | os.O_APPEND | os.O_NOFOLLOW, 0o644
            )
        except OSError as exc:
            if exc.errno != errno.ELOOP:
                raise
            raise InvalidData(
                f"{self.events_path} is a symlink: hystate never follows it"
            ) from None
        try:
            os.write(fd, (line + "\n").encode())  # one write: lines from processes never mix
        finally:
            os.close(fd)

    def events(self, episode_id: str | None = None) -> list[dict[str, Any]]:
        """The recorded events, oldest first (a torn last line from a crash is skipped)."""
        try:
            lines = read_bytes(self.events_path).decode("utf-8", "replace").splitlines()
        except (FileNotFoundError, NotRegularFile):
            return []
        found = []
        for line in lines:
            try:
                event = json.loads(line)
            except ValueError:
                continue
            if isinstance(event, dict) and episode_id in (None, event.get("episode_id")):
                found.append(event)
        return found


class YAMLPersistence:
    """The seed's file-level persistence of one episode. A raw write: inside a state directory
    use ``StateManager.update_state``, which also commits (a file written here and not
    committed is what ``hystate fsck`` reports as uncommitted)."""

    @staticmethod
    def save_state(state: EpisodeState, path: str | os.PathLike[str]) -> None:
        """Validate and write atomically, in the file's fixed key order."""
        target = Path(path)
        problems = episode_problems(state.data, str(target), expect_id=state.episode_id)
        if problems:
            raise invalid_file(problems)
        EpisodeStore(target.parent).write(target, dump(state.data))

    @staticmethod
    def load_state(path: str | os.PathLike[str]) -> EpisodeState:
        """Read and validate one episode file."""
        target = Path(path)
        doc, problems = parse_content(target.read_bytes(), str(target))
        if not problems:
            problems = episode_problems(doc, str(target), expect_id=target.stem)
        if problems:
            raise invalid_file(problems)
        return EpisodeState(doc, str(target))
