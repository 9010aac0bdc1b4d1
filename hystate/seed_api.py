"""The seed document's Python API, for pipeline code written against it.

Most of the seed's names are hystate's own classes, which carry the seed's methods beside
their richer ones (``StateManager``, ``EpisodeState``, ``StateTransitionValidator``,
``ErrorRecovery``, ``RecoveryManager``, ``ReportGenerator``, ``StateLock``). This module holds
what only the seed's shape needs:

- ``seed_update``: ``update_state(episode_id, stage, audio_file=Path(...), ...)`` with the
  seed's field names, translated to the file's dotted keys;
- ``seed_document``: ``EpisodeState(episode_id=..., title=..., ...)`` built the seed's way;
- ``StateDatabase``: the seed's SQLite backend; ``record_event`` keeps its events in
  ``<state_dir>/events.jsonl`` (append-only, not tracked), so a cache rebuild never loses them;
- ``YAMLPersistence``: ``save_state``/``load_state`` of one episode file, validated.
"""

from __future__ import annotations

import errno
import json
import os
import sqlite3
from collections.abc import Mapping
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from hystate.errors import HystateError, InvalidData, UsageError
from hystate.model import EpisodeState, ProcessingStage, check_id, new_episode, to_file_value
from hystate.paths import NotRegularFile, read_bytes
from hystate.rules import check_message
from hystate.store import EpisodeStore, dump, invalid_file, parse_content
from hystate.validation import episode_problems

if TYPE_CHECKING:
    from hystate.manager import StateManager
    from hystate.transition import TransitionResult

# The seed's field names -> the file's dotted keys, for update_state(**kwargs).
FIELD_KEYS = {
    "title": "title",
    "source_url": "files.source_url",
    "audio_file": "files.audio_file",
    "video_file": "files.video_file",
    "transcript_file": "files.transcript_file",
    "youtube_video_id": "youtube.video_id",
    "scheduled_date": "youtube.scheduled_date",
    "published_date": "youtube.published_date",
    "playlist_ids": "youtube.playlist_ids",
    "audio_duration": "metrics.audio_duration",
    "audio_size": "metrics.audio_size",
    "video_size": "metrics.video_size",
    "processing_time": "metrics.processing_time",
}
# Kept by hystate itself: attempts are counted on entering a stage, errors recorded by failing.
KEPT = {
    "episode_id": "it names the file",
    "archive_identifier": "it is set at discovery",
    "date": "it is set at discovery",
    "stage": "it is the second argument",
    "last_updated": "hystate stamps every transition",
    "download_attempts": "hystate counts attempts on entering a stage",
    "conversion_attempts": "hystate counts attempts on entering a stage",
    "upload_attempts": "hystate counts attempts on entering a stage",
    "error_history": "failing records the error (pass error=...)",
}
# EpisodeState's fields in the seed's dataclass order (for positional construction).
SEED_ORDER = (
    "episode_id", "archive_identifier", "date", "title", "stage", "status_message",
    "last_updated", "source_url", "audio_file", "video_file", "transcript_file",
    "download_attempts", "conversion_attempts", "upload_attempts", "youtube_video_id",
    "scheduled_date", "published_date", "playlist_ids", "audio_duration", "audio_size",
    "video_size", "processing_time", "error_history",
)  # fmt: skip


def seed_update(
    manager: StateManager,
    episode_id: str,
    stage: str | ProcessingStage,
    seed_fields: Mapping[str, Any],
    *,
    message: str | None = None,
    fields: Mapping[str, Any] | None = None,
    worker: str | None = None,
    force: bool = False,
    lock_timeout: float | None = None,
    lease: str | None = None,
    take_over: bool = False,
) -> TransitionResult:
    """``update_state`` with the seed's keyword arguments (``status_message``, ``error`` and
    ``traceback`` for a failure, and the fields of ``FIELD_KEYS``)."""
    extra = dict(seed_fields)
    error = extra.pop("error", None)
    trace = extra.pop("traceback", None)
    if "status_message" in extra:
        message = extra.pop("status_message")
    dotted = dict(fields or {})
    for name, value in extra.items():
        if name in KEPT:
            raise UsageError(f"update_state: {name} cannot be set: {KEPT[name]}")
        if name not in FIELD_KEYS:
            known = ", ".join(["status_message", "error", "traceback", *FIELD_KEYS])
            raise UsageError(f"update_state: unknown field {name!r} (fields: {known})")
        if name == "playlist_ids" and value is not None:
            value = [str(v) for v in value]
        dotted[FIELD_KEYS[name]] = to_file_value(value)
    target = ProcessingStage.parse(stage)
    if error is not None or trace is not None:
        if target is not ProcessingStage.FAILED or dotted:
            raise UsageError("update_state: error= and traceback= go with the failed stage only")
        text = str(error) if error is not None else (message or "")
        return manager.fail(
            episode_id, text, traceback=trace, worker=worker, lease=lease, take_over=take_over
        )
    return manager.update_state(
        episode_id,
        target,
        message=message,
        fields=dotted,
        worker=worker,
        force=force,
        lock_timeout=lock_timeout,
        lease=lease,
        take_over=take_over,
    )


def seed_document(positional: tuple[Any, ...], named: Mapping[str, Any]) -> dict[str, Any]:
    """The episode document of ``EpisodeState(...)`` called with the seed's fields."""
    values = dict(named)
    args = list(positional)
    while args and args[-1] is None:
        args.pop()
    if len(args) > len(SEED_ORDER):
        raise TypeError(f"EpisodeState() takes at most {len(SEED_ORDER)} fields")
    for name, value in zip(SEED_ORDER, args, strict=False):
        if name in values:
            raise TypeError(f"EpisodeState() got multiple values for argument {name!r}")
        values[name] = value
    unknown = sorted(set(values) - set(SEED_ORDER))
    if unknown:
        raise TypeError(f"EpisodeState() got an unexpected keyword argument {unknown[0]!r}")
    missing = [n for n in ("episode_id", "date", "title") if values.get(n) is None]
    if missing:
        raise TypeError(f"EpisodeState() missing required argument {missing[0]!r}")
    episode_id = check_id(str(values.pop("episode_id")))
    at = to_file_value(values.pop("last_updated", None) or datetime.now(UTC))
    stage = ProcessingStage.parse(to_file_value(values.pop("stage", None) or "discovered"))
    doc = new_episode(
        episode_id,
        title=str(values.pop("title")),
        date=_air_date(values.pop("date")),
        archive_identifier=values.pop("archive_identifier", None),
        at=str(at),
        by="seed-api",
    )
    doc["stage"] = stage.value
    doc["history"][0]["to"] = stage.value
    state = EpisodeState(doc)
    for name, value in values.items():
        setattr(state, name, value)
    return doc


def _air_date(value: Any) -> str:
    if isinstance(value, datetime):
        return value.date().isoformat()  # the air date as given, not shifted to UTC
    return str(to_file_value(value))[:10]


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
        from hystate.manager import StateManager  # here: hystate.manager imports this module

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
