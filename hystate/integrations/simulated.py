"""Simulated pipeline work for ``make demo-prefect`` / ``make demo-airflow`` and the tests: the
stage functions a real pipeline would give the orchestrators (download, convert, upload,
schedule, publish), each returning the fields to set, failing now and then with the errors the
real tools give. Sizes and durations are drawn like ``hystate.demo``'s, from a generator seeded
by the episode and its attempt, so a re-run draws the same. ``HYSTATE_SIM_FAILURES`` (default
0.1) sets the failure rate, ``HYSTATE_SIM_SECONDS`` (default 0.01) the work's duration.
"""

from __future__ import annotations

import os
import random
import time
from datetime import UTC, datetime
from typing import Any

from hystate.core.model import EpisodeState

# The errors the real tools give (the demos draw from them).
ERRORS = {
    "downloading": [
        "HTTP 503 Service Unavailable from archive.org",
        "connection reset by peer after 18.2 MB",
        "md5 mismatch: archive.org metadata says 7e10053385866b87e64a09314be58618",
    ],
    "converting": [
        "ffmpeg exited with status 1: Invalid data found when processing input",
        "ffmpeg exited with status 234: Error while decoding stream #0:0",
    ],
    "uploading": [
        "YouTube Data API 403: quotaExceeded",
        "YouTube upload endpoint returned HTTP 500",
    ],
}
ALPHABET = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-_"


class SimulatedFailure(RuntimeError):
    """The error a real download, conversion or upload would have raised."""


def _rng(episode: EpisodeState, stage: str) -> random.Random:
    kind = {"downloading": "download", "converting": "conversion", "uploading": "upload"}[stage]
    return random.Random(f"{episode.episode_id}/{stage}/{episode.attempts[kind]}")


def _work(episode: EpisodeState, stage: str) -> random.Random:
    rng = _rng(episode, stage)
    time.sleep(float(os.environ.get("HYSTATE_SIM_SECONDS", "0.01")))
    if rng.random() < float(os.environ.get("HYSTATE_SIM_FAILURES", "0.1")):
        raise SimulatedFailure(rng.choice(ERRORS[stage]))
    return rng


def download(episode: EpisodeState) -> dict[str, Any]:
    rng = _work(episode, "downloading")
    eid, year = episode.episode_id, episode.date[:4]
    return {
        "files.audio_file": f"audio/{year}/{eid}.mp3",
        "metrics.audio_duration": round(max(600.0, rng.gauss(1800, 300)), 2),
        "metrics.audio_size": int(rng.uniform(25, 75) * 1_000_000),
    }


def convert(episode: EpisodeState) -> dict[str, Any]:
    rng = _work(episode, "converting")
    eid, year = episode.episode_id, episode.date[:4]
    return {
        "files.video_file": f"video/{year}/{eid}.mp4",
        "metrics.video_size": int(rng.uniform(60, 180) * 1_000_000),
        "metrics.processing_time": round(rng.uniform(40, 160), 1),
    }


def upload(episode: EpisodeState) -> dict[str, Any]:
    rng = _work(episode, "uploading")
    return {"youtube.video_id": "".join(rng.choice(ALPHABET) for _ in range(11))}


def schedule(episode: EpisodeState) -> dict[str, Any]:
    """The simulation publishes at once: the slot is now (a real one: the next weekly slot)."""
    return {"youtube.scheduled_date": datetime.now(UTC).isoformat(timespec="seconds")}


def publish(episode: EpisodeState) -> dict[str, Any]:
    slot = episode.data["youtube"]["scheduled_date"]
    now = datetime.now(UTC).isoformat(timespec="seconds")
    return {"youtube.published_date": max(str(slot), now)}


WORKS = {
    "downloading": download,
    "converting": convert,
    "uploading": upload,
    "scheduled": schedule,
    "published": publish,
}
PATHS = {stage: f"{__name__}:{fn.__name__}" for stage, fn in WORKS.items()}
