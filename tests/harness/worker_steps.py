"""The simulated pipeline's next step from each stage, shared by the fault and person harnesses
(API workers get it pasted into their script; CLI workers as ``--set`` options)."""

from __future__ import annotations

STEPS: dict[str, tuple[str, dict[str, object]]] = {
    "discovered": ("downloading", {}),
    "downloading": ("downloaded", {"files.audio_file": "audio/x.mp3", "metrics.audio_size": 1}),
    "downloaded": ("converting", {}),
    "converting": ("converted", {"files.video_file": "video/x.mp4"}),
    "converted": ("uploading", {}),
    "uploading": ("uploaded", {"youtube.video_id": "abcDEF12345"}),
    "uploaded": ("scheduled", {"youtube.scheduled_date": "2027-01-01T18:00:00+00:00"}),
    "scheduled": ("published", {"youtube.published_date": "2027-01-01T18:00:00+00:00"}),
}


def with_steps(script: str) -> str:
    """``script`` (a worker run with ``python -c``) with its ``STEPS = ...`` line defined."""
    return script.replace("STEPS = ...", f"STEPS = {STEPS!r}")


def cli_sets(fields: dict[str, object]) -> str:
    """The fields of a step as ``hystate advance`` options."""
    return " ".join(f"--set {key}={value}" for key, value in fields.items())
