"""One episode through one stage, the way every orchestrator integration runs it.

``run_stage(manager, "uploading", upload)`` claims the next ready episode (or enters the one it
is handed), holds its lease with a heartbeat thread while ``upload(episode)`` runs, and advances
it to ``uploaded`` with the fields the function returns; an exception fails the episode with the
error and the traceback. Everything goes through the public ``StateManager`` API, so hystate's
retry policy (attempts per stage, backoff, exhausted -> skipped) and its stage limits are the
only ones: a handed episode that failed is entered again only when hystate says the retry is
due (the entry is the one attempt counted), one out of attempts is skipped, one already past
the stage is left alone. An orchestrator's own retry of the task therefore counts nothing twice.

``plan(manager, stage, limit)`` is what a flow maps over: the ids ready for the stage (due
retries included, stuck work taken back first), no more than the stage's limits let in now.
"""

from __future__ import annotations

import re
import time
import traceback
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from hystate.core.errors import HystateError, IllegalTransition, LockBusy, UnknownEpisode
from hystate.core.model import ACTIVE_STAGES, EpisodeState, ProcessingStage
from hystate.core.rules import MAX_MESSAGE, NEXT_STAGES
from hystate.engine.limits import LimitReached

if TYPE_CHECKING:
    from hystate.manager import StateManager

S = ProcessingStage
Work = Callable[[EpisodeState], Mapping[str, Any] | None]

DONE = {S.DOWNLOADING: S.DOWNLOADED, S.CONVERTING: S.CONVERTED, S.UPLOADING: S.UPLOADED}
ORDER = [
    S.DISCOVERED,
    S.DOWNLOADING,
    S.DOWNLOADED,
    S.CONVERTING,
    S.CONVERTED,
    S.UPLOADING,
    S.UPLOADED,
    S.SCHEDULED,
    S.PUBLISHED,
]
# stage, then what a stage task's work leads to: the stages a flow walks, in order
PIPELINE = ("downloading", "converting", "uploading", "scheduled", "published")


@dataclass(frozen=True)
class Outcome:
    """What one stage task did. ``result``: done | failed | skipped | lost | taken | already |
    not-due | limited | nothing (no ready work)."""

    episode_id: str | None
    stage: str
    result: str
    detail: str = ""
    commit: str | None = None

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


class StageFailed(Exception):
    """The work raised; hystate recorded the failure (the orchestrator should not retry)."""

    def __init__(self, outcome: Outcome) -> None:
        super().__init__(f"{outcome.episode_id}: {outcome.stage} failed: {outcome.detail}")
        self.outcome = outcome


_TRAILERISH = re.compile(r"^(\s*hystate-)", re.IGNORECASE | re.MULTILINE)
_CONTROL = re.compile(r"[\x00-\x08\x0b-\x1f\x7f]")


def error_text(exc: BaseException) -> str:
    """An exception as the one-paragraph error hystate records: its type and message, control
    characters replaced, lines that would read as audit trailers quoted, cut to the limit."""
    message = str(exc).strip()
    text = f"{type(exc).__name__}: {message}" if message else type(exc).__name__
    text = _TRAILERISH.sub(r"> \1", _CONTROL.sub("?", text))
    return text if len(text) <= MAX_MESSAGE else text[: MAX_MESSAGE - 1] + "…"


def _rank(stage: ProcessingStage) -> int:
    return ORDER.index(stage) if stage in ORDER else -1


def enter(manager: StateManager, stage: ProcessingStage, episode_id: str) -> Outcome | None:
    """Put ``episode_id`` into active ``stage`` for this manager's worker, as hystate allows;
    None once it is in, or an Outcome saying why it is not. One already in the stage is this
    worker's only when a person handed it over (``hystate retry ID --worker W``: an entry
    without run ids); one a task run entered is that task run's, alive or not (a dead one is
    marked lost by the next claim, then retried)."""
    episode = manager.episode(episode_id)
    here = episode.stage
    if here is stage:
        handed = episode.worker == manager.worker and not episode.history[-1].get("run")
        if handed:
            return None
        return Outcome(episode_id, stage.value, "taken", f"held by {episode.worker}")
    if here is S.SKIPPED:
        return Outcome(episode_id, stage.value, "skipped", str(episode.status_message or ""))
    if here is S.FAILED:
        try:
            decision = manager.recovery.decide(episode, stage)
        except IllegalTransition as exc:  # failed in an earlier stage: not this stage's retry
            return Outcome(episode_id, stage.value, "taken", exc.message)
        if decision.exhausted:
            reason = manager.recovery.exhausted_reason(episode, decision)
            result = manager.skip(episode_id, reason)
            return Outcome(episode_id, stage.value, "skipped", reason, result.commit)
        if not decision.due(datetime.now(UTC)):
            due = decision.due_at.isoformat(timespec="seconds") if decision.due_at else "now"
            return Outcome(episode_id, stage.value, "not-due", f"retry due at {due}")
    elif stage not in NEXT_STAGES.get(here, ()):
        if _rank(here) > _rank(stage):
            return Outcome(episode_id, stage.value, "already", f"is {here.value}")
        return Outcome(episode_id, stage.value, "taken", f"is {here.value}")
    try:
        manager.update_state(episode_id, stage, force=True, lock_timeout=0)
    except LimitReached as exc:
        return Outcome(episode_id, stage.value, "limited", exc.message)
    except (IllegalTransition, LockBusy) as exc:
        return Outcome(episode_id, stage.value, "taken", str(exc))
    return None


def run_stage(
    manager: StateManager,
    stage: str | ProcessingStage,
    work: Work,
    episode_id: str | None = None,
    *,
    lease_seconds: float | None = None,
    room_wait: float = 0.0,
) -> Outcome:
    """Claim (or enter ``episode_id``), work with a heartbeat, advance or fail. For ``scheduled``
    and ``published`` (no lease, nothing to fail) the work's fields go with the move. A stage
    at its ``limits.concurrency`` is waited for up to ``room_wait`` seconds (never its
    ``per_day``: that frees only at midnight UTC)."""
    deadline = time.monotonic() + room_wait
    while True:
        outcome = _run_stage(manager, stage, work, episode_id, lease_seconds)
        if outcome.result != "limited" or "per_day" in outcome.detail:
            return outcome
        if time.monotonic() >= deadline:
            return outcome
        time.sleep(0.5)


def _run_stage(
    manager: StateManager,
    stage: str | ProcessingStage,
    work: Work,
    episode_id: str | None,
    lease_seconds: float | None,
) -> Outcome:
    target = S.parse(stage)
    if not target.is_active:
        return _advance_only(manager, target, work, episode_id)
    if episode_id is None:
        claimed = manager.claim_next(target, 1)
        if not claimed:
            room = manager.limit_room(target)
            reason = room.refusal() if room is not None else None
            if reason is not None:
                return Outcome(None, target.value, "limited", reason)
            return Outcome(None, target.value, "nothing", "no episode is ready")
        episode_id = claimed[0].episode.episode_id
    else:
        refused = enter(manager, target, episode_id)
        if refused is not None:
            return refused
    episode = manager.episode(episode_id)
    with manager.lease(episode_id, seconds=lease_seconds) as keeper:
        try:
            fields = dict(work(episode) or {})
        except Exception as exc:
            return _fail(manager, target, episode_id, exc, keeper.lost)
    if keeper.lost:
        return Outcome(episode_id, target.value, "lost", keeper.lost)
    try:
        result = manager.update_state(episode_id, DONE[target], fields=fields)
    except IllegalTransition as exc:  # marked lost or taken over meanwhile: not ours any more
        return Outcome(episode_id, target.value, "lost", str(exc))
    except HystateError as exc:  # the work's fields were refused (schema): a failure of it
        return _fail(manager, target, episode_id, exc, None)
    return Outcome(episode_id, target.value, "done", DONE[target].value, result.commit)


def _fail(
    manager: StateManager,
    stage: ProcessingStage,
    episode_id: str,
    exc: BaseException,
    lost: str | None,
) -> Outcome:
    text = error_text(exc)
    trace = traceback.format_exc()
    if lost:
        return Outcome(episode_id, stage.value, "lost", lost)
    try:
        result = manager.fail(episode_id, text, traceback=trace[-100_000:])
    except IllegalTransition as gone:
        return Outcome(episode_id, stage.value, "lost", str(gone))
    return Outcome(episode_id, stage.value, "failed", text, result.commit)


def _advance_only(
    manager: StateManager, target: ProcessingStage, work: Work, episode_id: str | None
) -> Outcome:
    if episode_id is None:
        ready = manager.get_next_for_processing(target, 1)
        if not ready:
            return Outcome(None, target.value, "nothing", "no episode is ready")
        episode_id = ready[0].episode_id
    episode = manager.episode(episode_id)
    if target not in NEXT_STAGES.get(episode.stage, ()):
        result = "already" if _rank(episode.stage) >= _rank(target) else "taken"
        return Outcome(episode_id, target.value, result, f"is {episode.stage.value}")
    fields = dict(work(episode) or {})
    try:
        moved = manager.update_state(episode_id, target, fields=fields, lock_timeout=0)
    except (IllegalTransition, LockBusy) as exc:
        return Outcome(episode_id, target.value, "taken", str(exc))
    return Outcome(episode_id, target.value, "done", target.value, moved.commit)


def plan(
    manager: StateManager,
    stage: str | ProcessingStage,
    limit: int,
    *,
    wait: float = 0.0,
    poll: float = 0.5,
    concurrency_cap: bool = True,
) -> list[str]:
    """Ids to map a stage task over: ready for ``stage`` (due retries included; stuck work
    taken back and exhausted failures skipped first, as claims do), at most ``limit`` and what
    the stage's limits let in. When none is ready but a retry of the stage (or a free slot) is
    coming, wait up to ``wait`` seconds for it. ``concurrency_cap=False``: only the day's
    quota caps the list (an Airflow pool, or the tasks themselves, wait for the slots)."""
    target = S.parse(stage)
    deadline = time.monotonic() + wait
    while True:
        manager.resume()  # any stage's plan: a failure out of attempts is skipped at once
        room = manager.limit_room(target) if target.is_active else None
        room_free = room.free if room is not None else None
        if room is not None and not concurrency_cap:
            room_free = None if room.per_day is None else max(room.per_day - room.today, 0)
        size = limit if room_free is None else min(limit, room_free)
        ids = [e.episode_id for e in manager.get_next_for_processing(target, size)] if size else []
        if ids or time.monotonic() >= deadline or not _coming(manager, target, room, size):
            return ids
        time.sleep(poll)


def _coming(manager: StateManager, stage: ProcessingStage, room: Any, size: int) -> bool:
    """Whether waiting can give work: a retry of ``stage`` not yet due, or a full stage (not
    its day's quota) with ready episodes."""
    if room is not None and (room.refusal() is not None or not size):
        if room.per_day is not None and room.today >= room.per_day:
            return False  # the day's quota: not before midnight UTC
        return bool(manager.get_next_for_processing(stage, 1))
    if stage not in ACTIVE_STAGES:
        return False
    if manager.get_episodes_by_stage(stage):
        return True  # running elsewhere (or stuck): done, or back as a retry once marked lost
    for episode in manager.get_episodes_by_stage(S.FAILED):
        if episode.failed_stage is stage and not manager.recovery.decide(episode).exhausted:
            return True
    return False


def waiting_for(
    manager: StateManager,
    stage: str | ProcessingStage,
    episode_ids: list[str] | None = None,
    include_skipped: bool = True,
) -> list[str]:
    """The ids (of ``episode_ids``, or of every episode) not yet in ``stage`` or past it; a
    skipped one is settled unless ``include_skipped`` is False, a failed one is waiting."""
    target = _rank(S.parse(stage))
    wanted = set(episode_ids) if episode_ids is not None else None
    waiting = []
    for episode in manager.list_episodes():
        if wanted is not None and episode.episode_id not in wanted:
            continue
        if wanted is not None:
            wanted.discard(episode.episode_id)
        if episode.stage is S.SKIPPED and include_skipped:
            continue
        if _rank(episode.stage) < target:
            waiting.append(episode.episode_id)
    if wanted:
        raise UnknownEpisode(f"no episode {sorted(wanted)[0]} (of {len(wanted)} unknown ids)")
    return waiting
