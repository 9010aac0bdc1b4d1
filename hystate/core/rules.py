"""The transition rules of SPEC section 3, as pure functions over episode documents."""

from __future__ import annotations

import copy
import re
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from hystate.core import yamlio
from hystate.core.errors import IllegalTransition, InvalidData, UsageError
from hystate.core.model import (
    ACTIVE_STAGES,
    EpisodeState,
    ProcessingStage,
    now_utc,
    parse_time,
    put_file_key,
)

S = ProcessingStage

NEXT_STAGES: dict[ProcessingStage, tuple[ProcessingStage, ...]] = {
    S.DISCOVERED: (S.DOWNLOADING, S.SKIPPED),
    S.DOWNLOADING: (S.DOWNLOADED, S.FAILED),
    S.DOWNLOADED: (S.CONVERTING, S.SKIPPED),
    S.CONVERTING: (S.CONVERTED, S.FAILED),
    S.CONVERTED: (S.UPLOADING, S.SKIPPED),
    S.UPLOADING: (S.UPLOADED, S.FAILED),
    S.UPLOADED: (S.SCHEDULED,),
    S.SCHEDULED: (S.PUBLISHED,),
    S.FAILED: (),  # back to its failed_stage or an earlier active stage, or skipped
    S.PUBLISHED: (),
    S.SKIPPED: (),
}

# Fields `--set` may change: the file's own keys under these objects, plus the title.
SETTABLE_OBJECTS = ("files", "youtube", "metrics")
SETTABLE_TOP = ("title",)

_TRAILER_LINE = re.compile(r"^\s*hystate-[a-z-]*\s*:", re.IGNORECASE | re.MULTILINE)
_CONTROL = re.compile(r"[\x00-\x08\x0b-\x1f\x7f]")


ACTIVE_ORDER = tuple(ACTIVE_STAGES)  # downloading, converting, uploading


def retry_stages(failed_stage: ProcessingStage | None) -> tuple[ProcessingStage, ...]:
    """Where a failed episode may go back to: the stage that failed or any earlier active one
    (a corrupt download shows up as a failed conversion)."""
    if failed_stage is None:
        return ()
    return ACTIVE_ORDER[: ACTIVE_ORDER.index(failed_stage) + 1]


def allowed_next(
    stage: ProcessingStage, failed_stage: ProcessingStage | None = None
) -> tuple[ProcessingStage, ...]:
    if stage is S.FAILED:
        return (*retry_stages(failed_stage), S.SKIPPED)
    return NEXT_STAGES[stage]


def legal_move(
    stage: ProcessingStage, failed_stage: ProcessingStage | None, to: ProcessingStage
) -> bool:
    """A history step that is allowed: a transition, or one more failure of a failed episode."""
    return to in allowed_next(stage, failed_stage) or stage is to is S.FAILED


class StateTransitionValidator:
    """Which moves are legal. ``VALID_TRANSITIONS`` and ``can_transition`` are the seed's
    table (failed may go back to any active stage); ``check`` applies the episode's own
    ``failed_stage``."""

    VALID_TRANSITIONS: dict[ProcessingStage, list[ProcessingStage]] = {
        **{stage: list(nexts) for stage, nexts in NEXT_STAGES.items() if nexts},
        S.FAILED: [*ACTIVE_STAGES, S.SKIPPED],
    }

    @classmethod
    def can_transition(cls, from_stage: ProcessingStage, to_stage: ProcessingStage) -> bool:
        return ProcessingStage(to_stage) in cls.VALID_TRANSITIONS.get(
            ProcessingStage(from_stage), []
        )

    def allowed(self, episode: EpisodeState) -> tuple[ProcessingStage, ...]:
        return allowed_next(episode.stage, episode.failed_stage)

    def is_valid(
        self,
        from_stage: ProcessingStage,
        to_stage: ProcessingStage,
        failed_stage: ProcessingStage | None = None,
    ) -> bool:
        return to_stage in allowed_next(from_stage, failed_stage)

    def check(self, episode: EpisodeState, to_stage: ProcessingStage) -> None:
        allowed = self.allowed(episode)
        if to_stage not in allowed:
            raise IllegalTransition(
                f"{episode.episode_id}: cannot move from {episode.stage.value} to "
                f"{to_stage.value}; {_allowed_text(episode.stage, allowed)}"
            )


def _allowed_text(stage: ProcessingStage, allowed: tuple[ProcessingStage, ...]) -> str:
    if not allowed:
        return f"{stage.value} is final"
    return "allowed next: " + ", ".join(s.value for s in allowed)


@dataclass(frozen=True)
class RetryDecision:
    """Whether a failed episode may go back to its failed stage now."""

    stage: ProcessingStage
    attempts: int
    max_attempts: int
    due_at: datetime | None

    @property
    def exhausted(self) -> bool:
        return self.attempts >= self.max_attempts

    def due(self, now: datetime) -> bool:
        return not self.exhausted and (self.due_at is None or now >= self.due_at)


class ErrorRecovery:
    """Retry budget and backoff: ``retry_delay * 2**(attempts-1)`` after the last failure.

    ``ErrorRecovery()`` has the seed's budget (``MAX_RETRIES``: download 3, conversion 2,
    upload 3); the manager builds one from ``recovery.max_retries`` and ``retry_delay``."""

    MAX_RETRIES: dict[ProcessingStage, int] = {
        S.DOWNLOADING: 3,
        S.CONVERTING: 2,
        S.UPLOADING: 3,
    }

    def __init__(self, max_retries: dict[str, int] | None = None, retry_delay: float = 300) -> None:
        defaults = {kind: self.MAX_RETRIES[stage] for stage, kind in ACTIVE_STAGES.items()}
        self.max_retries = {**defaults, **(max_retries or {})}
        self.retry_delay = float(retry_delay)
        self.MAX_RETRIES = {stage: self.max_retries[k] for stage, k in ACTIVE_STAGES.items()}

    def delay_after(self, attempts: int) -> timedelta:
        # capped: an attempts count from a hostile file must not make 2**n huge
        doublings = min(max(attempts - 1, 0), 32)
        return timedelta(seconds=min(self.retry_delay * 2**doublings, 10 * 365 * 86400))

    def should_retry(self, state: EpisodeState) -> bool:
        """The seed's question: may the stage the episode is in (or failed in) run again?"""
        stage = state.failed_stage if state.stage is S.FAILED else state.stage
        if stage not in ACTIVE_STAGES:
            return False
        return state.attempts[ACTIVE_STAGES[stage]] < self.MAX_RETRIES[stage]

    def handle_error(self, state: EpisodeState, error: BaseException | str) -> ProcessingStage:
        """The seed's decision after an error: the stage to run again, or skipped. The error is
        added to ``state.error_history`` in memory; record it for good with
        ``StateManager.fail`` (a commit)."""
        stage = state.failed_stage if state.stage is S.FAILED else state.stage
        kind = ACTIVE_STAGES.get(stage) if stage else None
        state.data["error_history"].append(
            {
                "at": now_utc(),
                "stage": stage.value if stage else state.stage.value,
                "attempt": state.attempts[kind] if kind else 0,
                "error": str(error) or type(error).__name__,
                "traceback": _traceback_text(),
            }
        )
        if stage is not None and self.should_retry(state):
            return stage
        return S.SKIPPED

    def decide(self, episode: EpisodeState, to: ProcessingStage | None = None) -> RetryDecision:
        """The retry of a failed episode into ``to`` (default: the stage that failed)."""
        failed = episode.failed_stage
        if episode.stage is not S.FAILED or failed is None:
            raise IllegalTransition(f"{episode.episode_id} is {episode.stage.value}, not failed")
        stage = failed if to is None else to
        if stage not in retry_stages(failed):
            allowed = ", ".join(s.value for s in retry_stages(failed))
            raise IllegalTransition(
                f"{episode.episode_id} failed in {failed.value}: a retry may go back to "
                f"{allowed}, not {stage.value}"
            )
        kind = ACTIVE_STAGES[stage]
        attempts = episode.attempts[kind]
        errors = episode.error_history
        due_at = parse_time(errors[-1]["at"]) + self.delay_after(attempts) if errors else None
        return RetryDecision(stage, attempts, self.max_retries[kind], due_at)

    def exhausted_reason(self, episode: EpisodeState, decision: RetryDecision) -> str:
        last = episode.error_history[-1]["error"] if episode.error_history else "unknown error"
        kind = ACTIVE_STAGES[decision.stage]
        return (
            f"giving up after {decision.attempts} of {decision.max_attempts} {kind} attempts; "
            f"last error: {last}"
        )


@dataclass
class Change:
    """One transition to apply to an episode document."""

    to: ProcessingStage
    at: str
    by: str
    worker: str | None = None
    message: str | None = None
    fields: list[tuple[tuple[str, ...], Any]] = field(default_factory=list)
    error: str | None = None
    traceback: str | None = None
    lease: str | None = None  # the lease token presented (hystate.engine.fencing)
    take_over: bool = False  # leave an active stage held by another lease, on purpose
    run: dict[str, str] | None = None  # the orchestrator's run ids (``check_run_ids``)


class NoOp(Exception):
    """The episode already is in that stage with that data: nothing to do, nothing to commit."""


def apply_change(episode: EpisodeState, change: Change) -> dict[str, Any]:
    """The document after ``change``; raises NoOp or IllegalTransition. Pure: no I/O."""
    doc = copy.deepcopy(episode.data)
    current = episode.stage
    if change.to is S.FAILED and not (change.error or change.message):
        raise UsageError(f"{episode.episode_id}: failing needs the error (--error MSG)")
    if change.to is current is S.FAILED:
        _add_failure(doc, episode.failed_stage or S.DOWNLOADING, change)
        doc["history"].append(_entry(change, "failed"))
        return doc
    if change.to is current:
        _set_fields(doc, change.fields)
        same_worker = not current.is_active or change.worker in (None, episode.worker)
        if doc == episode.data and same_worker:
            raise NoOp(episode.episode_id)
        held = f" by {episode.worker}" if current.is_active and episode.worker else ""
        raise IllegalTransition(
            f"{episode.episode_id} is already {current.value}{held}; "
            f"{_allowed_text(current, allowed_next(current, episode.failed_stage))}"
        )
    StateTransitionValidator().check(episode, change.to)
    _set_fields(doc, change.fields)
    doc["stage"] = change.to.value
    doc["status_message"] = change.message
    doc["last_updated"] = change.at
    if change.to is S.FAILED:
        doc["failed_stage"] = current.value
        _add_failure(doc, current, change)
    elif change.to is not S.SKIPPED:
        doc["failed_stage"] = None
    if change.to.is_active:
        doc["attempts"][ACTIVE_STAGES[change.to]] += 1
        doc["worker"] = change.worker or change.by
    doc["history"].append(_entry(change, current.value))
    check_dates(doc)
    return doc


def _entry(change: Change, old: str) -> dict[str, Any]:
    entry: dict[str, Any] = {"at": change.at, "from": old, "to": change.to.value, "by": change.by}
    if change.run:
        entry["run"] = dict(change.run)
    return entry


def _add_failure(doc: dict[str, Any], stage: ProcessingStage, change: Change) -> None:
    error = change.error or change.message
    doc["error_history"].append(
        {
            "at": change.at,
            "stage": stage.value,
            "attempt": doc["attempts"][ACTIVE_STAGES[stage]],
            "error": error,
            "traceback": change.traceback,
        }
    )
    doc["status_message"] = error
    doc["last_updated"] = change.at


def check_dates(doc: dict[str, Any]) -> None:
    """An episode cannot be published before the time it was scheduled for."""
    youtube = doc["youtube"]
    scheduled, published = youtube.get("scheduled_date"), youtube.get("published_date")
    if not (scheduled and published):
        return
    try:
        early = parse_time(published) < parse_time(scheduled)
    except (TypeError, ValueError):
        return  # not timestamps: the schema names that problem
    if early:
        raise InvalidData(
            f"{doc['episode_id']}: youtube.published_date {published} is earlier than "
            f"youtube.scheduled_date {scheduled}"
        )


def _traceback_text() -> str | None:
    import traceback  # a failure only: traceback imports linecache and tokenize

    text = traceback.format_exc()
    return None if text.strip() == "NoneType: None" else text


def _set_fields(doc: dict[str, Any], fields: list[tuple[tuple[str, ...], Any]]) -> None:
    for path, value in fields:
        if path[:1] == ("files",) and len(path) == 2:
            put_file_key(doc, path[1], value)  # keeps the fixed order for a key new to the file
            continue
        target = doc
        for part in path[:-1]:
            target = target[part]
        target[path[-1]] = value


def field_path(key: str, known: dict[str, Any]) -> tuple[str, ...]:
    """Check a dotted field name against the settable keys of episode document ``known``."""
    settable = [*SETTABLE_TOP, *(f"{o}.{k}" for o in SETTABLE_OBJECTS for k in known.get(o, {}))]
    if "files.source_md5" not in settable:  # optional: older files lack the key
        settable.append("files.source_md5")
    if key not in settable:
        raise InvalidData(
            f"--set {key}: unknown or read-only field (settable: {', '.join(settable)})"
        )
    return tuple(key.split("."))


def parse_assignment(text: str) -> tuple[str, Any]:
    """``files.audio_file=audio/x.mp3`` -> ("files.audio_file", "audio/x.mp3").

    The value is read as a YAML scalar (or a flow list, for ``youtube.playlist_ids``); an empty
    value clears the field. The schema checks the type when the episode is written.
    """
    key, sep, raw = text.partition("=")
    key = key.strip()
    if not sep or not key:
        raise InvalidData(f"--set {text!r}: expected FIELD=VALUE, e.g. metrics.audio_size=28363609")
    try:
        value = yamlio.load(raw) if raw.strip() else None
    except yamlio.YAMLError as exc:
        raise InvalidData(
            f"--set {key}: value is not valid YAML: {yamlio.error_text(exc)}"
        ) from exc
    if isinstance(value, dict) or (isinstance(value, list) and key != "youtube.playlist_ids"):
        raise InvalidData(f"--set {key}: expected a single value, got {type(value).__name__}")
    return key, value


MAX_MESSAGE = 10_000  # the schema's maxLength of status_message and of an attempt's error


def check_message(text: str | None, what: str = "message") -> str | None:
    """A status message or error goes into the file and the commit body; it may not carry
    control characters or lines that would read as hystate's own audit trailers, nor be longer
    than the file allows."""
    if text is None:
        return None
    if _CONTROL.search(text):
        raise InvalidData(f"{what} contains control characters")
    if _TRAILER_LINE.search(text):
        raise InvalidData(
            f"{what} has a line that looks like a Hystate- trailer; hystate writes those itself"
        )
    text = text.strip()
    if len(text) > MAX_MESSAGE:
        raise InvalidData(f"{what} is {len(text):,} characters long; at most {MAX_MESSAGE:,}")
    return text or None
