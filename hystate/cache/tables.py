"""The tables of ``state.db``: the schema (its format version), how an episode file becomes
rows (``episode_states``, one ``processing_log`` row per history entry), and the set-based
statement that attributes commits to log rows."""

from __future__ import annotations

import json
from typing import Any

# 4: episode_states_stage also covers the forecast's groups (status at 100k: 240 -> 75 ms)
# 5: the caches reflect HEAD's tree only (hystate.cache.tree); episode_states_groups streams
#    the forecast's GROUP BY in index order (100k: 71 -> 30 ms)
# 6: episode_states_date: a page of every episode in air-date order without sorting them all
#    (`hystate serve`'s list at 100k: 78 -> a few ms)
# 7: partial indexes of the entries into an active stage (``ACTIVE``), by time and by instant,
#    covering: the forecast's training candidates are their first few thousand, read in order
#    from the index alone instead of every entry sorted (status after a transition at 100k:
#    ~43 -> ~1.5 ms)
FORMAT_VERSION = "7"
ACTIVE = ("downloading", "converting", "uploading")  # the stages a run is a stay in
ACTIVE_SQL = "(" + ", ".join(f"'{stage}'" for stage in ACTIVE) + ")"
SCHEMA = """
CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE episode_states (
    episode_id TEXT PRIMARY KEY,
    path TEXT NOT NULL,
    year TEXT NOT NULL,
    date TEXT NOT NULL,
    title TEXT NOT NULL,
    stage TEXT NOT NULL,
    status_message TEXT,
    last_updated TEXT NOT NULL,
    failed_stage TEXT,
    worker TEXT,
    audio_file TEXT,
    video_file TEXT,
    youtube_video_id TEXT,
    scheduled_date TEXT,
    published_date TEXT,
    audio_duration REAL,
    audio_size INTEGER,
    video_size INTEGER,
    processing_time REAL,
    download_attempts INTEGER NOT NULL,
    conversion_attempts INTEGER NOT NULL,
    upload_attempts INTEGER NOT NULL,
    error_count INTEGER NOT NULL,
    last_error TEXT,
    last_error_at TEXT,
    data TEXT NOT NULL
);
CREATE INDEX episode_states_stage ON episode_states (stage, date, episode_id, failed_stage,
    download_attempts, conversion_attempts, upload_attempts, audio_size, audio_duration);
CREATE INDEX episode_states_groups ON episode_states (stage, failed_stage, download_attempts,
    conversion_attempts, upload_attempts, audio_size, audio_duration);
CREATE INDEX episode_states_year ON episode_states (year);
CREATE INDEX episode_states_date ON episode_states (date, episode_id);
CREATE TABLE processing_log (
    id INTEGER PRIMARY KEY,
    episode_id TEXT NOT NULL,
    timestamp TEXT NOT NULL,
    from_stage TEXT,
    to_stage TEXT NOT NULL,
    event TEXT NOT NULL,
    details TEXT,
    commit_sha TEXT
);
CREATE INDEX processing_log_episode ON processing_log (episode_id);
CREATE INDEX processing_log_time ON processing_log (timestamp);
CREATE INDEX processing_log_to ON processing_log (to_stage, timestamp);
CREATE INDEX processing_log_active_time ON processing_log (timestamp, to_stage)
    WHERE to_stage IN ACTIVE;
CREATE INDEX processing_log_active_rank ON processing_log (julianday(timestamp) DESC, episode_id,
    timestamp, to_stage) WHERE to_stage IN ACTIVE;
CREATE TABLE problems (path TEXT PRIMARY KEY, detail TEXT NOT NULL);
""".replace("IN ACTIVE", f"IN {ACTIVE_SQL}")

COLUMNS = (
    "episode_id, path, year, date, title, stage, status_message, last_updated, failed_stage, "
    "worker, audio_file, video_file, youtube_video_id, scheduled_date, published_date, "
    "audio_duration, audio_size, video_size, processing_time, download_attempts, "
    "conversion_attempts, upload_attempts, error_count, last_error, last_error_at, data"
)


def episode_row(doc: dict[str, Any], path: str) -> tuple[Any, ...]:
    files, youtube, metrics, attempts = (
        doc["files"],
        doc["youtube"],
        doc["metrics"],
        doc["attempts"],
    )
    errors = doc["error_history"]
    last = errors[-1] if errors else {}
    return (
        doc["episode_id"], path, doc["date"][:4], doc["date"], doc["title"], doc["stage"],
        doc["status_message"], doc["last_updated"], doc["failed_stage"], doc["worker"],
        files["audio_file"], files["video_file"], youtube["video_id"], youtube["scheduled_date"],
        youtube["published_date"], metrics["audio_duration"], metrics["audio_size"],
        metrics["video_size"], metrics["processing_time"], attempts["download"],
        attempts["conversion"], attempts["upload"], len(errors), last.get("error"), last.get("at"),
        json.dumps(doc, ensure_ascii=False, separators=(",", ":")),
    )  # fmt: skip


def log_rows(doc: dict[str, Any]) -> list[tuple[Any, ...]]:
    """One processing_log row per history entry; failures carry their error."""
    errors = iter(doc["error_history"])  # the n-th failure entry is the n-th error
    rows = []
    for entry in doc["history"]:
        old, new = entry["from"], entry["to"]
        details: dict[str, Any] = {"by": entry["by"]}
        if entry.get("run"):
            details["run"] = entry["run"]
        if old is None:
            event = "discovered"
        elif new == "failed":
            event = "failed"
            error = next(errors, None)
            if error:
                details["error"] = error["error"]
                details["attempt"] = error["attempt"]
        elif old == "failed":
            event = "skipped" if new == "skipped" else "retried"
        elif new == "skipped":
            event = "skipped"
        else:
            event = "transition"
        if new == "skipped" and entry is doc["history"][-1] and doc["status_message"]:
            details["reason"] = doc["status_message"]
        rows.append(
            (
                doc["episode_id"],
                entry["at"],
                old,
                new,
                event,
                json.dumps(details, ensure_ascii=False),
            )
        )
    return rows


TABLES = {"meta", "episode_states", "processing_log", "problems"}

# Pairs (sha, log row id): the k-th commit of a key with the k-th unattributed row of that key.
# The log rows are found by episode (INDEXED BY: never by stage and time).
ATTRIBUTE = """
WITH wanted AS (
    SELECT sha, episode_id, from_stage, to_stage,
           row_number() OVER (PARTITION BY episode_id, from_stage, to_stage ORDER BY seq) AS k
    FROM temp.attribution
), rows AS (
    SELECT id, episode_id, from_stage, to_stage,
           row_number() OVER (
               PARTITION BY episode_id, from_stage, to_stage ORDER BY timestamp, id) AS k
    FROM processing_log INDEXED BY processing_log_episode
    WHERE episode_id IN (SELECT episode_id FROM temp.attribution) AND commit_sha IS NULL
)
SELECT wanted.sha, rows.id FROM wanted JOIN rows
  ON rows.episode_id = wanted.episode_id AND rows.from_stage IS wanted.from_stage
 AND rows.to_stage = wanted.to_stage AND rows.k = wanted.k
"""
