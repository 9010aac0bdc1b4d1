"""The questions the API asks the cache (``state.db``), in SQL: episodes by stage and year,
counts, and the processing log. Every answer is read from a refreshed cache."""

from __future__ import annotations

import json
from collections.abc import Iterable
from typing import TYPE_CHECKING, Any

from hystate.model import EpisodeState, ProcessingStage

if TYPE_CHECKING:
    from hystate.cache import StateCache


def episodes(
    cache: StateCache,
    stages: Iterable[str | ProcessingStage] = (),
    years: Iterable[str] = (),
    limit: int | None = None,
) -> list[EpisodeState]:
    """Episodes, oldest air date first, optionally only some stages and years, at most
    ``limit``."""
    wanted = [ProcessingStage.parse(s).value for s in stages]
    sql, params = "SELECT data, path FROM episode_states WHERE 1=1", list[Any]()
    if wanted:
        sql += f" AND stage IN ({','.join('?' * len(wanted))})"
        params.extend(wanted)
    years = list(years)
    if years:
        sql += f" AND year IN ({','.join('?' * len(years))})"
        params.extend(years)
    sql += " ORDER BY date, episode_id"
    if limit is not None:
        sql += " LIMIT ?"
        params.append(max(limit, 0))
    rows = cache.query(sql, tuple(params))
    return [EpisodeState(json.loads(row["data"]), row["path"]) for row in rows]


def count(cache: StateCache) -> int:
    return int(cache.query("SELECT count(*) FROM episode_states")[0][0])


def count_by_stage(cache: StateCache) -> dict[str, int]:
    rows = cache.query("SELECT stage, count(*) FROM episode_states GROUP BY stage")
    counts = {row[0]: row[1] for row in rows}
    return {s.value: counts.get(s.value, 0) for s in ProcessingStage}


def events(
    cache: StateCache,
    *,
    since: str | None = None,
    until: str | None = None,
    episode_id: str | None = None,
) -> list[dict[str, Any]]:
    """One event per history entry, oldest first."""
    sql, params = "SELECT * FROM processing_log WHERE 1=1", []
    for clause, value in (
        ("timestamp >= ?", since),
        ("timestamp <= ?", until),
        ("episode_id = ?", episode_id),
    ):
        if value is not None:
            sql += f" AND {clause}"
            params.append(value)
    rows = cache.query(sql + " ORDER BY timestamp, id", tuple(params))
    return [
        {
            "at": r["timestamp"],
            "episode_id": r["episode_id"],
            "event": r["event"],
            "from": r["from_stage"],
            "to": r["to_stage"],
            "commit": r["commit_sha"],
            **json.loads(r["details"] or "{}"),
        }
        for r in rows
    ]
