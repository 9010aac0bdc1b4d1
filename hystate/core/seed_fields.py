"""The seed document's field names for ``update_state(episode_id, stage, audio_file=...)``,
translated to the episode file's dotted keys."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from hystate.core.errors import UsageError
from hystate.core.model import ProcessingStage, to_file_value

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


@dataclass(frozen=True)
class SeedUpdate:
    """What ``update_state`` called with the seed's keyword arguments asks for: a failure
    (``error`` set) or a move to ``stage`` with ``fields`` (dotted keys)."""

    stage: ProcessingStage
    message: str | None
    fields: dict[str, Any]
    error: str | None = None
    traceback: str | None = None


def seed_arguments(
    stage: str | ProcessingStage,
    seed_fields: Mapping[str, Any],
    *,
    message: str | None = None,
    fields: Mapping[str, Any] | None = None,
) -> SeedUpdate:
    """The seed's keyword arguments (``status_message``, ``error`` and ``traceback`` for a
    failure, and the fields of ``FIELD_KEYS``) as hystate's."""
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
        return SeedUpdate(target, message, dotted, error=text, traceback=trace)
    return SeedUpdate(target, message, dotted)
