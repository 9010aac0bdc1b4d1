"""Handing out work: what is ready for a stage, claiming it, retries, and ``auto_resume``.

- ``ready``: episodes that may enter a stage now (a failed one only when its retry of that stage
  is due; ``published`` only once its ``scheduled_date`` has come);
- ``claim``: moves ready episodes into the stage, one commit each, never the same episode for
  two workers; with ``recovery.auto_resume`` it first resumes (below), so no daemon is needed;
- ``resume``: stuck episodes (lease expired, or registered worker process gone) become failed
  ("worker lost"), and failed episodes out of attempts go to skipped with the reason, as the
  seed's ``handle_error`` does; due retries are then claimed like any other work;
- ``retry``: failed episodes back to the stage that failed, or to an earlier active stage
  (``--from downloading``), counting the attempt in that stage.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TYPE_CHECKING

from hystate import limits
from hystate.errors import IllegalTransition, LockBusy, UnknownEpisode
from hystate.leases import mark_lost, stuck_reason
from hystate.model import ACTIVE_STAGES, EpisodeState, ProcessingStage, check_id, parse_time
from hystate.rules import NEXT_STAGES, RetryDecision

if TYPE_CHECKING:
    from hystate.manager import StateManager
    from hystate.transition import TransitionResult

S = ProcessingStage


@dataclass(frozen=True)
class RetryOutcome:
    episode_id: str
    action: str  # retried | skipped | waiting | would-retry | would-skip | lost | changed-meanwhile
    detail: str = ""
    commit: str | None = None


FIRST_PAGE = 32  # waiting episodes read at first when looking for ready ones


def ready(manager: StateManager, stage: str | ProcessingStage, limit: int) -> list[EpisodeState]:
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
        episodes = manager.list_episodes(wanted, limit=page)
        found: list[EpisodeState] = []
        for episode in episodes:
            if episode.stage is S.FAILED:
                if episode.failed_stage is target and manager.recovery.decide(episode).due(now):
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
    manager: StateManager, stage: str | ProcessingStage, limit: int, worker: str | None
) -> list[TransitionResult]:
    """Move up to ``limit`` ready episodes into ``stage`` for ``worker``, one commit each. Each
    move is made under the episode's lock against its current file; a lost race moves on. A
    limited stage (``hystate.limits``) hands out only what fits."""
    target = S.parse(stage)
    if manager.config.get("recovery.auto_resume"):
        resume(manager)
    room = limits.room(manager, target)
    if room is not None and room.free is not None:
        limit = min(limit, room.free)
    claimed: list[TransitionResult] = []
    tried: set[str] = set()
    while len(claimed) < limit:
        batch = [
            e
            for e in ready(manager, target, limit * 2 + len(tried) + 4)
            if e.episode_id not in tried
        ]
        if not batch:
            break
        for episode in batch:
            tried.add(episode.episode_id)
            try:
                result = manager.update_state(
                    episode.episode_id, target, worker=worker, force=True, lock_timeout=0
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


def resume(manager: StateManager) -> list[RetryOutcome]:
    """Stuck episodes -> failed ("worker lost"); failed ones out of attempts -> skipped."""
    outcomes = []
    now = datetime.now(UTC)
    for episode in manager.list_episodes([*ACTIVE_STAGES, S.FAILED]):  # one query
        try:
            if episode.stage is S.FAILED:
                if manager.recovery.decide(episode).exhausted:
                    outcomes.append(_retry_one(manager, episode, now))
                continue
            reason = stuck_reason(manager, episode, now)
            if reason is not None:
                result = mark_lost(manager, episode.episode_id, by=manager.worker)
                outcomes.append(RetryOutcome(episode.episode_id, "lost", reason, result.commit))
                if manager.recovery.decide(result.episode).exhausted:
                    outcomes.append(_retry_one(manager, result.episode, now))
        except (IllegalTransition, LockBusy, UnknownEpisode):
            continue  # renewed, moved or being moved meanwhile: not ours to change
    return outcomes


def retry(
    manager: StateManager,
    episode_ids: Iterable[str] | None = None,
    *,
    now: bool = False,
    dry_run: bool = False,
    to: str | ProcessingStage | None = None,
    worker: str | None = None,
) -> list[RetryOutcome]:
    """Send failed episodes back to the stage that failed (or ``to``, an earlier active stage)
    when their delay has passed (``now`` ignores it); those out of attempts in that stage go to
    skipped with the reason. The stage entered is held by ``worker`` (default: the manager's),
    who must do the work and renew the lease."""
    target = S.parse(to) if to is not None else None
    if target is not None and not target.is_active:
        raise IllegalTransition(f"a retry goes back to an active stage, not {target.value}")
    if episode_ids is None:
        targets = manager.list_episodes([S.FAILED])
    else:
        targets = [manager.episode(check_id(i)) for i in episode_ids]
        for episode in targets:
            if episode.stage is not S.FAILED:
                stage = episode.stage.value
                raise IllegalTransition(
                    f"{episode.episode_id} is {stage}, not failed: nothing to retry"
                )
    clock = datetime.now(UTC)
    outcomes = []
    for episode in targets:
        try:
            outcomes.append(_retry_one(manager, episode, clock, now, dry_run, target, worker))
        except (IllegalTransition, LockBusy) as exc:
            if episode_ids is not None:
                raise
            # --all: another worker moved it meanwhile (claimed the retry itself)
            outcomes.append(RetryOutcome(episode.episode_id, "changed-meanwhile", str(exc)))
    return outcomes


def _retry_one(
    manager: StateManager,
    episode: EpisodeState,
    clock: datetime,
    now: bool = False,
    dry_run: bool = False,
    to: ProcessingStage | None = None,
    worker: str | None = None,
) -> RetryOutcome:
    decision = manager.recovery.decide(episode, to)
    eid = episode.episode_id
    if decision.exhausted:
        reason = manager.recovery.exhausted_reason(episode, decision)
        if dry_run:
            return RetryOutcome(eid, "would-skip", reason)
        result = manager.skip(eid, reason)
        return RetryOutcome(eid, "skipped", reason, result.commit)
    if now or decision.due(clock):
        attempt = f"attempt {decision.attempts + 1} of {decision.max_attempts}"
        detail = f"{decision.stage.value}, {attempt}"
        if dry_run:
            return RetryOutcome(eid, "would-retry", detail)
        result = manager.update_state(eid, decision.stage, force=True, worker=worker)
        return RetryOutcome(eid, "retried", detail, result.commit)
    return RetryOutcome(eid, "waiting", f"due at {_due_text(decision)}")


def _due_text(decision: RetryDecision) -> str:
    return decision.due_at.isoformat(timespec="seconds") if decision.due_at else "now"


def check_retry(
    manager: StateManager, episode: EpisodeState, target: ProcessingStage, force: bool
) -> None:
    """A move from failed back into ``target``: within the budget, and due unless forced."""
    decision = manager.recovery.decide(episode, target)
    if decision.exhausted:
        raise IllegalTransition(
            f"{episode.episode_id}: {target.value} retries exhausted ({decision.attempts} of "
            f"{decision.max_attempts}); `hystate retry {episode.episode_id}` marks it skipped"
        )
    if not force and not decision.due(datetime.now(UTC)):
        raise IllegalTransition(
            f"{episode.episode_id}: retry not due until {_due_text(decision)}",
            hint="wait, or force it with `hystate retry --now`",
        )
