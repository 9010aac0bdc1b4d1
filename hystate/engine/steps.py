"""The transitions a caller asks for by name: ``advance`` to a stage, ``fail``, ``skip``. Each is
one ``transition.run``: one commit of one file, or nothing."""

from __future__ import annotations

from collections.abc import Mapping
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from hystate.core.errors import IllegalTransition, InvalidData
from hystate.core.model import EpisodeState, ProcessingStage, check_worker, now_utc
from hystate.core.rules import Change, RetryDecision, check_message, field_path
from hystate.core.schema import check_value
from hystate.engine import transition
from hystate.engine.transition import TransitionResult

if TYPE_CHECKING:
    from hystate.engine.workspace import Workspace

S = ProcessingStage


def advance(
    ws: Workspace,
    episode_id: str,
    stage: str | ProcessingStage,
    *,
    message: str | None = None,
    fields: Mapping[str, Any] | None = None,
    worker: str | None = None,
    force: bool = False,
    lock_timeout: float | None = None,
) -> TransitionResult:
    """Move an episode to ``stage`` with ``fields`` (dotted keys) set; ``force`` lets a retry
    go before its backoff delay has passed."""
    target = S.parse(stage)
    message = check_message(message)
    by = check_worker(worker) if worker else ws.worker

    def build(episode: EpisodeState) -> Change:
        if episode.stage is S.FAILED and target.is_active:
            check_retry(ws, episode, target, force)
        paths = [
            (field_path(k, episode.data), check_value(k, v)) for k, v in (fields or {}).items()
        ]
        return Change(target, now_utc(), by, worker=by, message=message, fields=paths)

    return transition.run(ws, episode_id, build, lock_timeout)


def fail(
    ws: Workspace,
    episode_id: str,
    error: str,
    *,
    traceback: str | None = None,
    worker: str | None = None,
) -> TransitionResult:
    """Record a failure of the active stage the episode is in."""
    text = check_message(error, "error")
    if not text:
        raise InvalidData("--error must not be empty")
    by = check_worker(worker) if worker else ws.worker
    trace = traceback if traceback and traceback.strip() else None
    return transition.run(
        ws, episode_id, lambda _: Change(S.FAILED, now_utc(), by, error=text, traceback=trace)
    )


def skip(
    ws: Workspace, episode_id: str, reason: str, *, worker: str | None = None
) -> TransitionResult:
    text = check_message(reason, "reason")
    if not text:
        raise InvalidData("--reason must not be empty")
    by = check_worker(worker) if worker else ws.worker
    return transition.run(ws, episode_id, lambda _: Change(S.SKIPPED, now_utc(), by, message=text))


def check_retry(ws: Workspace, episode: EpisodeState, target: ProcessingStage, force: bool) -> None:
    """A move from failed back into ``target``: within the budget, and due unless forced."""
    decision = ws.recovery.decide(episode, target)
    if decision.exhausted:
        raise IllegalTransition(
            f"{episode.episode_id}: {target.value} retries exhausted ({decision.attempts} of "
            f"{decision.max_attempts}); `hystate retry {episode.episode_id}` marks it skipped"
        )
    if not force and not decision.due(datetime.now(UTC)):
        raise IllegalTransition(
            f"{episode.episode_id}: retry not due until {due_text(decision)}",
            hint="wait, or force it with `hystate retry --now`",
        )


def due_text(decision: RetryDecision) -> str:
    return decision.due_at.isoformat(timespec="seconds") if decision.due_at else "now"
