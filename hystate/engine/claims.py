"""Handing out work: what is ready for a stage, and claiming it.

- ``ready``: episodes that may enter a stage now (a failed one only when its retry of that stage
  is due; ``published`` only once its ``scheduled_date`` has come);
- ``claim``: moves ready episodes into the stage, one commit each, never the same episode for
  two workers; with ``recovery.auto_resume`` it first resumes (``hystate.engine.retries``), so no
  daemon is needed.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime
from typing import TYPE_CHECKING

from hystate.core.errors import IllegalTransition, LockBusy
from hystate.core.model import EpisodeState, ProcessingStage, parse_time
from hystate.core.rules import NEXT_STAGES
from hystate.engine import limits, steps
from hystate.engine.retries import resume

if TYPE_CHECKING:
    from hystate.engine.transition import TransitionResult
    from hystate.engine.workspace import Workspace

S = ProcessingStage


FIRST_PAGE = 32  # waiting episodes read at first when looking for ready ones


def ready(ws: Workspace, stage: str | ProcessingStage, limit: int) -> list[EpisodeState]:
    """Episodes ready to enter ``stage`` (oldest air date first)."""
    target = S.parse(stage)
    before = [s for s, nexts in NEXT_STAGES.items() if target in nexts]
    wanted = [*before, S.FAILED] if target.is_active else before
    now = datetime.now(UTC)
    if limit <= 0 or not wanted:
        return []
    # In date order, a page at a time: parsing all 100,000 waiting episodes to hand out one
    # cost a claim ~1 s; the page grows 4x while too few of it are ready.
    page = max(2 * limit, FIRST_PAGE)
    while True:
        episodes = ws.list_episodes(wanted, limit=page)
        found: list[EpisodeState] = []
        for episode in episodes:
            if episode.stage is S.FAILED:
                if episode.failed_stage is target and ws.recovery.decide(episode).due(now):
                    found.append(episode)
            elif target is not S.PUBLISHED or _scheduled_by(episode, now):
                found.append(episode)
            if len(found) >= limit:
                return found
        if len(episodes) < page:
            return found
        page *= 4


def _scheduled_by(episode: EpisodeState, now: datetime) -> bool:
    when = episode.data["youtube"].get("scheduled_date")
    return when is None or parse_time(when) <= now


def claim(
    ws: Workspace,
    stage: str | ProcessingStage,
    limit: int,
    worker: str | None,
    *,
    order: Callable[[EpisodeState], bytes] | None = None,
    window: int = 0,
    skip: Callable[[EpisodeState], bool] | None = None,
) -> list[TransitionResult]:
    """Move up to ``limit`` ready episodes into ``stage`` for ``worker``, one commit each. Each
    move is made under the episode's lock against its current file; a lost race moves on.
    ``order``: a sort key over the ``window`` oldest ready ones beyond the few needed (nodes
    sharing a remote each take theirs in their own order, so they seldom race for one); ``skip``:
    ready ones to leave alone (another node's claim of it is known, not yet seen here). A
    limited stage (``hystate.engine.limits``) hands out only what fits."""
    target = S.parse(stage)
    if ws.config.get("recovery.auto_resume"):
        resume(ws)
    room = limits.room(ws, target)
    if room is not None and room.free is not None:
        limit = min(limit, room.free)
    claimed: list[TransitionResult] = []
    tried: set[str] = set()
    while len(claimed) < limit:
        batch = [
            e
            for e in ready(ws, target, limit * 2 + len(tried) + 4 + window)
            if e.episode_id not in tried
        ]
        if not batch:
            break
        if order is not None:
            batch.sort(key=order)
        for episode in batch:
            tried.add(episode.episode_id)
            if skip is not None and skip(episode):
                continue
            try:
                result = steps.advance(
                    ws, episode.episode_id, target, worker=worker, force=True, lock_timeout=0
                )
            except limits.LimitReached:
                return claimed  # full meanwhile: another worker took the last slot
            except (IllegalTransition, LockBusy):
                continue
            if result.changed:
                claimed.append(result)
            if len(claimed) >= limit:
                break
    return claimed
