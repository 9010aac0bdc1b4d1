"""The episode: its stages, its file's fixed key order, and a typed view of one file."""

from __future__ import annotations

import copy
import os
import re
from collections.abc import Mapping
from datetime import UTC, datetime, timedelta
from datetime import date as date_type
from enum import Enum, StrEnum
from pathlib import Path
from typing import Any

from hystate.core.errors import UsageError

ID_PATTERN = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,127}")


class ProcessingStage(StrEnum):
    DISCOVERED = "discovered"
    DOWNLOADING = "downloading"
    DOWNLOADED = "downloaded"
    CONVERTING = "converting"
    CONVERTED = "converted"
    UPLOADING = "uploading"
    UPLOADED = "uploaded"
    SCHEDULED = "scheduled"
    PUBLISHED = "published"
    FAILED = "failed"
    SKIPPED = "skipped"

    @classmethod
    def parse(cls, value: str | ProcessingStage) -> ProcessingStage:
        try:
            return cls(value)
        except ValueError:
            names = ", ".join(s.value for s in cls)
            raise UsageError(f"unknown stage {value!r} (stages: {names})") from None

    @property
    def is_active(self) -> bool:
        return self in ACTIVE_STAGES


# Entering an active stage counts an attempt of its kind (the keys of `attempts`).
ACTIVE_STAGES: dict[ProcessingStage, str] = {
    ProcessingStage.DOWNLOADING: "download",
    ProcessingStage.CONVERTING: "conversion",
    ProcessingStage.UPLOADING: "upload",
}

TERMINAL_STAGES = (ProcessingStage.PUBLISHED, ProcessingStage.SKIPPED)

# The fixed order of the keys of ``files``; ``source_md5`` came later and is optional, so a
# file written before it existed lacks it. ``put_file_key`` adds it in its place.
FILES_KEYS = ("source_url", "source_md5", "audio_file", "video_file", "transcript_file")


def check_id(episode_id: str) -> str:
    """Reject anything that is not a plain episode id before it is used to build a path."""
    if not isinstance(episode_id, str) or not ID_PATTERN.fullmatch(episode_id):
        shown = repr(episode_id)[:80]
        raise UsageError(
            f"invalid episode id {shown}: ids are 1-128 letters, digits, '.', '_' or '-', "
            "starting with a letter or digit"
        )
    return episode_id


def check_worker(name: str) -> str:
    """A worker's name: one printable line of at most 200 characters (UsageError otherwise)."""
    text = name.strip()
    if not text or len(text) > 200 or any(c in text for c in "\n\r\0\t") or not text.isprintable():
        raise UsageError(
            f"invalid worker name {name[:60]!r}: one printable line, at most 200 characters"
        )
    return text


def now_utc() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")


def parse_time(value: str) -> datetime:
    return datetime.fromisoformat(value.replace("Z", "+00:00"))


_AGO = re.compile(
    r"(\d{1,6}|an?)\s*(s|sec|secs|seconds?|m|min|mins|minutes?|h|hours?|d|days?|w|weeks?)\s+ago"
)
_UNIT = {"s": "seconds", "m": "minutes", "h": "hours", "d": "days", "w": "weeks"}


def parse_when(text: str, now: datetime | None = None) -> datetime:
    """A point in time as a person writes it, in UTC: an ISO date or time (a time without an
    offset is UTC), ``now``, ``today``, ``yesterday``, or ``N minutes|hours|days|weeks ago``.
    Anything else is a UsageError (exit 2), never a silently wrong string comparison."""
    now = now or datetime.now(UTC)
    word = " ".join(text.strip().lower().split())
    midnight = now.astimezone(UTC).replace(hour=0, minute=0, second=0, microsecond=0)
    named = {"now": now, "today": midnight, "yesterday": midnight - timedelta(days=1)}
    if word in named:
        return named[word].astimezone(UTC)
    ago = _AGO.fullmatch(word)
    if ago:
        count = 1 if ago.group(1) in ("a", "an") else int(ago.group(1))
        unit = _UNIT[ago.group(2)[0]]
        try:
            return (now - timedelta(**{unit: count})).astimezone(UTC)
        except OverflowError:
            raise UsageError(f"{text[:60]!r} is before the year 1") from None
    try:
        when = datetime.fromisoformat(text.strip().replace("Z", "+00:00").replace("z", "+00:00"))
    except ValueError:
        raise UsageError(
            f"cannot read the time {text[:60]!r}: give an ISO date or time "
            "(2026-11-01, 2026-11-01T12:00:00+02:00), 'yesterday' or '2 hours ago'"
        ) from None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    try:
        return when.astimezone(UTC)
    except OverflowError:
        raise UsageError(f"{text[:60]!r} is out of range") from None


def new_episode(
    episode_id: str,
    *,
    title: str,
    date: str,
    archive_identifier: str | None = None,
    source_url: str | None = None,
    source_md5: str | None = None,
    at: str,
    by: str,
) -> dict[str, Any]:
    """A freshly discovered episode, in the file's key order."""
    archive_id = archive_identifier or episode_id
    return {
        "episode_id": episode_id,
        "archive_identifier": archive_id,
        "date": date,
        "title": title,
        "stage": ProcessingStage.DISCOVERED.value,
        "status_message": None,
        "last_updated": at,
        "failed_stage": None,
        "worker": None,
        "files": {
            "source_url": source_url or f"https://archive.org/details/{archive_id}",
            "source_md5": source_md5,
            "audio_file": None,
            "video_file": None,
            "transcript_file": None,
        },
        "youtube": {
            "video_id": None,
            "scheduled_date": None,
            "published_date": None,
            "playlist_ids": [],
        },
        "metrics": {
            "audio_duration": None,
            "audio_size": None,
            "video_size": None,
            "processing_time": None,
        },
        "attempts": {"download": 0, "conversion": 0, "upload": 0},
        "error_history": [],
        "history": [{"at": at, "from": None, "to": ProcessingStage.DISCOVERED.value, "by": by}],
    }


def put_file_key(doc: dict[str, Any], key: str, value: Any) -> None:
    """Set ``files.<key>`` keeping the fixed key order, also when the key is new to the file."""
    files = doc["files"]
    files[key] = value
    order = {k: i for i, k in enumerate(FILES_KEYS)}
    doc["files"] = dict(sorted(files.items(), key=lambda kv: order.get(kv[0], len(order))))


class _Field:
    """One of the seed's ``EpisodeState`` attributes, kept in the file's own keys
    (``audio_file`` is ``files.audio_file``). ``kind``: "path" gives a Path, "time" a datetime,
    "live" the list itself (the seed's ``handle_error`` appends to ``error_history``)."""

    def __init__(self, *keys: str, kind: str = "") -> None:
        self.keys = keys
        self.kind = kind

    def __get__(self, obj: EpisodeState | None, owner: type | None = None) -> Any:
        if obj is None:
            return self
        value: Any = obj.data
        for key in self.keys:
            value = value.get(key) if isinstance(value, dict) else None
        if value is None:
            return None
        if self.kind == "path":
            return Path(value)
        if self.kind == "time":
            return parse_time(str(value))
        return value

    def __set__(self, obj: EpisodeState, value: Any) -> None:
        target = obj.data
        for key in self.keys[:-1]:
            target = target[key]
        target[self.keys[-1]] = to_file_value(value)


def to_file_value(value: Any) -> Any:
    """A Python value as the file keeps it: paths as text, times as ISO 8601 in UTC."""
    if isinstance(value, os.PathLike):
        return os.fspath(value)
    if isinstance(value, datetime):
        aware = value if value.tzinfo else value.astimezone()  # naive: the local time
        return aware.astimezone(UTC).isoformat(timespec="seconds")
    if isinstance(value, date_type):
        return value.isoformat()
    if isinstance(value, Enum):
        return value.value
    return value


class EpisodeState:
    """A view of one episode file (``data`` keeps the file's own keys and order).

    The seed's attributes read (and, on a copy you own, write) the file's keys:
    ``state.audio_file`` is ``Path(data["files"]["audio_file"])``, ``state.download_attempts``
    is ``data["attempts"]["download"]``. ``EpisodeState(episode_id=..., archive_identifier=...,
    date=..., title=..., stage=..., ...)`` builds one the seed's way
    (``seed_document``).
    """

    __slots__ = ("data", "path")

    archive_identifier = _Field("archive_identifier")
    status_message = _Field("status_message")
    source_url = _Field("files", "source_url")
    audio_file = _Field("files", "audio_file", kind="path")
    video_file = _Field("files", "video_file", kind="path")
    transcript_file = _Field("files", "transcript_file", kind="path")
    download_attempts = _Field("attempts", "download")
    conversion_attempts = _Field("attempts", "conversion")
    upload_attempts = _Field("attempts", "upload")
    youtube_video_id = _Field("youtube", "video_id")
    scheduled_date = _Field("youtube", "scheduled_date", kind="time")
    published_date = _Field("youtube", "published_date", kind="time")
    playlist_ids = _Field("youtube", "playlist_ids", kind="live")
    audio_duration = _Field("metrics", "audio_duration")
    audio_size = _Field("metrics", "audio_size")
    video_size = _Field("metrics", "video_size")
    processing_time = _Field("metrics", "processing_time")
    error_history = _Field("error_history", kind="live")

    def __init__(
        self, data: Any = None, path: Any = None, *seed_args: Any, **seed_fields: Any
    ) -> None:
        if isinstance(data, dict) and not seed_args and not seed_fields:
            self.data: dict[str, Any] = data
            self.path: str | None = None if path is None else str(path)
            return
        positional = () if data is None else (data, path, *seed_args)
        self.data = seed_document(positional, seed_fields)
        self.path = None

    @property
    def episode_id(self) -> str:
        return str(self.data["episode_id"])

    @property
    def stage(self) -> ProcessingStage:
        return ProcessingStage(self.data["stage"])

    @property
    def title(self) -> str:
        return str(self.data["title"])

    @property
    def date(self) -> str:
        return str(self.data["date"])

    @property
    def year(self) -> str:
        return self.date[:4]

    @property
    def failed_stage(self) -> ProcessingStage | None:
        value = self.data.get("failed_stage")
        return None if value is None else ProcessingStage(value)

    @property
    def attempts(self) -> dict[str, int]:
        return dict(self.data["attempts"])

    @property
    def worker(self) -> str | None:
        value = self.data.get("worker")
        return None if value is None else str(value)

    @property
    def last_updated(self) -> str:
        return str(self.data["last_updated"])

    @property
    def history(self) -> list[dict[str, Any]]:
        return list(self.data["history"])

    def to_dict(self) -> dict[str, Any]:
        return copy.deepcopy(self.data)

    def __repr__(self) -> str:
        return f"EpisodeState({self.episode_id!r}, stage={self.stage.value!r})"

    def __eq__(self, other: object) -> bool:
        return isinstance(other, EpisodeState) and self.data == other.data

    __hash__ = None  # type: ignore[assignment]


# EpisodeState's fields in the seed's dataclass order (for positional construction).
SEED_ORDER = (
    "episode_id", "archive_identifier", "date", "title", "stage", "status_message",
    "last_updated", "source_url", "audio_file", "video_file", "transcript_file",
    "download_attempts", "conversion_attempts", "upload_attempts", "youtube_video_id",
    "scheduled_date", "published_date", "playlist_ids", "audio_duration", "audio_size",
    "video_size", "processing_time", "error_history",
)  # fmt: skip


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
