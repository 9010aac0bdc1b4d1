"""The questions the forecast (``hystate.reports.forecast``) asks the cache: the history it
learns from, the waiting episodes in groups, the episodes in an active stage. Part of
``hystate.cache.queries`` (the same rules: see its note on times); the answers that depend on
the tables alone are kept per tree (``hystate.cache.memo``)."""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Any

from hystate.cache import memo
from hystate.cache.follow import CANDIDATES, TRAINING_ROWS, runs_by_episode
from hystate.cache.queries import _rows
from hystate.cache.tables import ACTIVE
from hystate.core.model import parse_time

if TYPE_CHECKING:
    from collections.abc import Sequence

    from hystate.cache.state_cache import StateCache


__all__ = ["ACTIVE", "CANDIDATES", "TRAINING_ROWS"]
SNAPSHOT_COLUMNS = (
    "episode_id, stage, failed_stage, download_attempts, conversion_attempts, upload_attempts,"
    " last_updated, audio_size, audio_duration"
)


def training_log(cache: StateCache, episodes: int) -> list[tuple[Any, ...]]:
    """(episode_id, time, from, to, audio_size, audio_duration) of every history entry of the
    episodes among the ``episodes`` most recent entries into an active stage, each episode's
    entries in time order. "Most recent" by time: the ``episodes``-th newest by string, less
    two days, bounds the candidates (see the module's note)."""
    rows = cache.query(
        "SELECT l.episode_id, l.timestamp, l.from_stage, l.to_stage, e.audio_size,"
        " e.audio_duration FROM processing_log l JOIN episode_states e USING (episode_id)"
        f" WHERE l.episode_id IN ({CANDIDATES})"
        " ORDER BY l.episode_id, julianday(l.timestamp), l.id",
        (max(episodes - 1, 0), episodes),
    )
    return [tuple(r) for r in rows]


def training_runs(cache: StateCache, episodes: int) -> dict[str, Any]:
    """``training_log``'s episodes (``candidates``, sorted) and, by episode, the runs its rows
    make (``runs``: those with any): [stage, start, end, next stage, audio_size,
    audio_duration], times in seconds, as ``hystate.reports.trained`` reads them. Kept per
    tree and carried through a transition (``hystate.cache.follow``)."""

    def compute() -> dict[str, Any]:
        chosen = cache.query(CANDIDATES, (max(episodes - 1, 0), episodes))
        ids = sorted({r[0] for r in chosen})
        rows = cache.query(TRAINING_ROWS, (json.dumps(ids),))
        return {"candidates": ids, "runs": runs_by_episode(rows)}

    name = f"training_runs/1/{episodes}"
    return memo.remembered(cache, name, compute, _training)


def _training(value: Any) -> dict[str, Any]:
    """What ``training_runs`` kept; TypeError for anything else (checked a column at a time:
    9,000 runs at 100,000 episodes, ~2 ms)."""
    chosen, runs = value["candidates"], value["runs"]
    if not isinstance(runs, dict) or not _all(chosen, str) or not _all(runs, str):
        raise TypeError("not a training set")
    if not _all(runs.values(), list):
        raise TypeError("not runs")
    rows = [row for rows in runs.values() for row in rows]
    if not _all(rows, list) or set(map(len, rows)) - {6}:
        raise TypeError("not runs")
    kinds: tuple[Any, ...] = (str, (int, float), (int, float), str, (int, float, None))
    kinds += ((int, float, None),)
    for column, kind in zip(zip(*rows, strict=True), kinds, strict=False):  # none: no columns
        if not _all(column, kind):
            raise TypeError("not runs")
    return {"candidates": chosen, "runs": runs}


def _all(values: Any, kind: type | tuple[Any, ...]) -> bool:
    """Every value of exactly the type ``kind`` (or one of them; None: None)."""
    kinds = {type(None) if k is None else k for k in (kind if isinstance(kind, tuple) else (kind,))}
    return set(map(type, values)) <= kinds


def waiting_groups(
    cache: StateCache, stages: Sequence[str], features: Sequence[str]
) -> list[tuple[Any, ...]]:
    """Episodes in ``stages`` grouped by (stage, failed stage, the three attempt counts): the
    group's size, then per feature count, total, sum of squares, min and max."""
    sums = ", ".join(
        f"count({f}), total({f}), total({f} * 1.0 * {f}), min({f}), max({f})" for f in features
    )

    def compute() -> list[list[Any]]:
        rows = cache.query(
            "SELECT stage, failed_stage, download_attempts, conversion_attempts,"
            f" upload_attempts, count(*), {sums} FROM episode_states"
            f" WHERE stage IN ({','.join('?' * len(stages))}) GROUP BY 1, 2, 3, 4, 5",
            tuple(stages),
        )
        return [list(r) for r in rows]

    name = f"waiting_groups/1/{','.join(stages)}/{','.join(features)}"
    cells = (int, memo.NUMBER, memo.NUMBER, memo.MAYBE_NUMBER, memo.MAYBE_NUMBER) * len(features)
    kinds = (str, memo.MAYBE_TEXT, int, int, int, int, *cells)
    return memo.remembered(cache, name, compute, lambda v: memo.rows(v, kinds))


def active_snapshots(cache: StateCache) -> list[tuple[Any, ...]]:
    """``SNAPSHOT_COLUMNS`` of the episodes in an active stage."""
    marks = ",".join("?" * len(ACTIVE))
    rows = cache.query(
        f"SELECT {SNAPSHOT_COLUMNS} FROM episode_states WHERE stage IN ({marks})", ACTIVE
    )
    return [tuple(r) for r in rows]


def group_members(
    cache: StateCache, stage: str, failed: str | None, attempts: tuple[int, int, int], limit: int
) -> list[tuple[Any, ...]]:
    """``SNAPSHOT_COLUMNS`` of up to ``limit`` episodes of one waiting group, by id. A group
    much larger than ``limit`` (70,000 discovered episodes at 100,000) is read in id order
    until ``limit`` are found (``+stage``: not through the groups index, which would sort the
    whole group: 0.1-0.3 s); a smaller one is found through the index and sorted."""
    where = (
        " WHERE {}stage = ? AND failed_stage IS ? AND download_attempts = ? AND"
        " conversion_attempts = ? AND upload_attempts = ?"
    )
    args = (stage, failed, *attempts)

    def compute() -> list[list[Any]]:
        size = cache.query(f"SELECT count(*) FROM episode_states{where.format('')}", args)
        large = int(size[0][0]) > 8 * _rows(limit)
        rows = cache.query(
            f"SELECT {SNAPSHOT_COLUMNS} FROM episode_states{where.format('+' if large else '')}"
            " ORDER BY episode_id LIMIT ?",
            (*args, _rows(limit)),
        )
        return [list(r) for r in rows]

    name = f"group_members/1/{json.dumps([*args, limit])}"
    return memo.remembered(cache, name, compute, _snapshots)


SNAPSHOT_KINDS = (
    str, str, memo.MAYBE_TEXT, int, int, int, str, memo.MAYBE_NUMBER, memo.MAYBE_NUMBER
)  # fmt: skip


def _snapshots(value: Any) -> list[tuple[Any, ...]]:
    found = memo.rows(value, SNAPSHOT_KINDS)
    for row in found:
        parse_time(row[6])  # ValueError: not a time this code wrote
    return found
