"""Retries and ``auto_resume``.

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

from hystate.core.errors import IllegalTransition, LockBusy, UnknownEpisode
from hystate.core.model import ACTIVE_STAGES, EpisodeState, ProcessingStage, check_id
from hystate.engine import steps
from hystate.engine.leases import mark_lost, stuck_reason

if TYPE_CHECKING:
    from hystate.engine.workspace import Workspace

S = ProcessingStage


@dataclass(frozen=True)
class RetryOutcome:
    episode_id: str
    action: str  # retried | skipped | waiting | would-retry | would-skip | lost | changed-meanwhile
    detail: str = ""
    commit: str | None = None


def resume(ws: Workspace) -> list[RetryOutcome]:
    """Stuck episodes -> failed ("worker lost"); failed ones out of attempts -> skipped."""
    outcomes = []
    now = datetime.now(UTC)
    for episode in ws.list_episodes([*ACTIVE_STAGES, S.FAILED]):  # one query
        try:
            if episode.stage is S.FAILED:
                if ws.recovery.decide(episode).exhausted:
                    outcomes.append(_retry_one(ws, episode, now))
                continue
            reason = stuck_reason(ws, episode, now)
            if reason is not None:
                result = mark_lost(ws, episode.episode_id, by=ws.worker)
                outcomes.append(RetryOutcome(episode.episode_id, "lost", reason, result.commit))
                if ws.recovery.decide(result.episode).exhausted:
                    outcomes.append(_retry_one(ws, result.episode, now))
        except (IllegalTransition, LockBusy, UnknownEpisode):
            continue  # renewed, moved or being moved meanwhile: not ours to change
    return outcomes


def retry(
    ws: Workspace,
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
        targets = ws.list_episodes([S.FAILED])
    else:
        targets = [ws.episode(check_id(i)) for i in episode_ids]
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
            outcomes.append(_retry_one(ws, episode, clock, now, dry_run, target, worker))
        except (IllegalTransition, LockBusy) as exc:
            if episode_ids is not None:
                raise
            # --all: another worker moved it meanwhile (claimed the retry itself)
            outcomes.append(RetryOutcome(episode.episode_id, "changed-meanwhile", str(exc)))
    return outcomes


def _retry_one(
    ws: Workspace,
    episode: EpisodeState,
    clock: datetime,
    now: bool = False,
    dry_run: bool = False,
    to: ProcessingStage | None = None,
    worker: str | None = None,
) -> RetryOutcome:
    decision = ws.recovery.decide(episode, to)
    eid = episode.episode_id
    if decision.exhausted:
        reason = ws.recovery.exhausted_reason(episode, decision)
        if dry_run:
            return RetryOutcome(eid, "would-skip", reason)
        result = steps.skip(ws, eid, reason)
        return RetryOutcome(eid, "skipped", reason, result.commit)
    if now or decision.due(clock):
        attempt = f"attempt {decision.attempts + 1} of {decision.max_attempts}"
        detail = f"{decision.stage.value}, {attempt}"
        if dry_run:
            return RetryOutcome(eid, "would-retry", detail)
        result = steps.advance(ws, eid, decision.stage, force=True, worker=worker)
        return RetryOutcome(eid, "retried", detail, result.commit)
    return RetryOutcome(eid, "waiting", f"due at {steps.due_text(decision)}")
