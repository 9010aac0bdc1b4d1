"""Transition rules: the table, retries and backoff, no-ops; property-based over random walks."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from hystate.core.errors import IllegalTransition, InvalidData
from hystate.core.model import EpisodeState, ProcessingStage, new_episode
from hystate.core.rules import (
    NEXT_STAGES,
    Change,
    ErrorRecovery,
    NoOp,
    StateTransitionValidator,
    allowed_next,
    apply_change,
    check_message,
    parse_assignment,
)
from hystate.core.schema import episode_problems

S = ProcessingStage
AT = "2026-11-24T10:00:00+00:00"
FIELDS_FOR = {
    S.DOWNLOADED: [(("files", "audio_file"), "a.mp3")],
    S.CONVERTED: [(("files", "video_file"), "v.mp4")],
    S.UPLOADED: [(("youtube", "video_id"), "abc_DEF-123")],
    S.SCHEDULED: [(("youtube", "scheduled_date"), AT)],
    S.PUBLISHED: [(("youtube", "published_date"), AT)],
}


def fresh() -> EpisodeState:
    return EpisodeState(new_episode("ep1", title="T", date="2004-04-14", at=AT, by="t"))


def move(ep: EpisodeState, to: S, **kw: object) -> EpisodeState:
    change = Change(to, AT, "tester", worker="tester", fields=FIELDS_FOR.get(to, []), **kw)  # type: ignore[arg-type]
    if to is S.FAILED:
        change.error = "boom"
    return EpisodeState(apply_change(ep, change))


def test_the_seed_table() -> None:
    assert allowed_next(S.DISCOVERED) == (S.DOWNLOADING, S.SKIPPED)
    assert allowed_next(S.DOWNLOADING) == (S.DOWNLOADED, S.FAILED)
    assert allowed_next(S.UPLOADED) == (S.SCHEDULED,)
    assert allowed_next(S.FAILED, S.CONVERTING) == (S.DOWNLOADING, S.CONVERTING, S.SKIPPED)
    assert allowed_next(S.PUBLISHED) == () and allowed_next(S.SKIPPED) == ()


def test_illegal_move_names_the_allowed_stages() -> None:
    with pytest.raises(IllegalTransition, match="allowed next: downloading, skipped"):
        move(fresh(), S.PUBLISHED)
    ep = move(move(fresh(), S.DOWNLOADING), S.FAILED)
    with pytest.raises(IllegalTransition, match="allowed next: downloading, skipped"):
        move(ep, S.CONVERTING)


def test_entering_an_active_stage_counts_an_attempt_and_records_the_worker() -> None:
    ep = move(fresh(), S.DOWNLOADING)
    assert ep.attempts == {"download": 1, "conversion": 0, "upload": 0}
    assert ep.worker == "tester"
    ep = move(move(ep, S.FAILED), S.DOWNLOADING)
    assert ep.attempts["download"] == 2
    assert ep.failed_stage is None


def test_failing_records_failed_stage_and_error_history() -> None:
    ep = move(move(fresh(), S.DOWNLOADING), S.FAILED)
    assert ep.failed_stage is S.DOWNLOADING
    [error] = ep.error_history
    assert error["stage"] == "downloading" and error["attempt"] == 1 and error["error"] == "boom"


def test_same_stage_same_data_is_a_no_op_but_another_worker_is_refused() -> None:
    ep = move(fresh(), S.DOWNLOADING)
    with pytest.raises(NoOp):
        apply_change(ep, Change(S.DOWNLOADING, AT, "tester", worker="tester"))
    with pytest.raises(IllegalTransition, match="already downloading by tester"):
        apply_change(ep, Change(S.DOWNLOADING, AT, "other", worker="other"))


def test_retry_budget_and_backoff() -> None:
    recovery = ErrorRecovery({"download": 3, "conversion": 2, "upload": 3}, retry_delay=300)
    ep = move(move(fresh(), S.DOWNLOADING), S.FAILED)
    decision = recovery.decide(ep)
    failed_at = datetime.fromisoformat(AT)
    assert decision.due_at == failed_at + timedelta(seconds=300)
    assert not decision.due(failed_at + timedelta(seconds=299))
    assert decision.due(failed_at + timedelta(seconds=300))
    ep = move(move(ep, S.DOWNLOADING), S.FAILED)
    assert recovery.decide(ep).due_at == failed_at + timedelta(seconds=600)
    ep = move(move(ep, S.DOWNLOADING), S.FAILED)
    decision = recovery.decide(ep)
    assert decision.exhausted and not decision.due(datetime.now(UTC) + timedelta(days=9))
    assert "3 of 3 download attempts; last error: boom" in recovery.exhausted_reason(ep, decision)


def test_messages_may_not_forge_trailers_or_carry_control_characters() -> None:
    with pytest.raises(InvalidData, match="trailer"):
        check_message("fine\nHystate-To: published")
    with pytest.raises(InvalidData, match="control"):
        check_message("bell\x07")
    assert check_message("  ok  ") == "ok"


def test_parse_assignment() -> None:
    assert parse_assignment("metrics.audio_size=28363609") == ("metrics.audio_size", 28363609)
    assert parse_assignment("files.video_file=") == ("files.video_file", None)
    assert parse_assignment("youtube.playlist_ids=[PL1, PL2]") == (
        "youtube.playlist_ids",
        ["PL1", "PL2"],
    )
    assert (
        parse_assignment("youtube.scheduled_date=2027-01-01T18:00:00+00:00")[1]
        == "2027-01-01T18:00:00+00:00"
    )
    with pytest.raises(InvalidData):
        parse_assignment("no-equals-sign")
    with pytest.raises(InvalidData):
        parse_assignment("files.audio_file={a: 1}")


@settings(max_examples=300, deadline=None)
@given(st.lists(st.integers(min_value=0, max_value=10), max_size=30))
def test_random_walks_stay_legal_and_valid(choices: list[int]) -> None:
    """Following only allowed moves, every state validates and its history matches it."""
    ep = fresh()
    validator = StateTransitionValidator()
    for choice in choices:
        allowed = validator.allowed(ep)
        if not allowed:
            break
        to = allowed[choice % len(allowed)]
        ep = move(ep, to)
        assert episode_problems(ep.data, "x.yaml", expect_id="ep1") == []
        assert ep.history[-1]["to"] == ep.stage.value
        assert validator.is_valid(S(ep.history[-1]["from"]), ep.stage, _failed_before(ep))


def _failed_before(ep: EpisodeState) -> S | None:
    errors = ep.error_history
    return S(errors[-1]["stage"]) if errors else None


@settings(max_examples=200, deadline=None)
@given(st.sampled_from(list(S)), st.sampled_from(list(S)))
def test_every_move_outside_the_table_is_refused(start: S, to: S) -> None:
    ep = fresh()
    for stage in _path_to(start):
        ep = move(ep, stage)
    if to in allowed_next(ep.stage, ep.failed_stage) or to is ep.stage:
        return
    with pytest.raises(IllegalTransition):
        move(ep, to)


def _path_to(stage: S) -> list[S]:
    line = [
        S.DOWNLOADING,
        S.DOWNLOADED,
        S.CONVERTING,
        S.CONVERTED,
        S.UPLOADING,
        S.UPLOADED,
        S.SCHEDULED,
        S.PUBLISHED,
    ]
    if stage is S.DISCOVERED:
        return []
    if stage is S.FAILED:
        return [S.DOWNLOADING, S.FAILED]
    if stage is S.SKIPPED:
        return [S.SKIPPED]
    return line[: line.index(stage) + 1]


def test_next_stages_cover_every_stage() -> None:
    assert set(NEXT_STAGES) == set(S)
