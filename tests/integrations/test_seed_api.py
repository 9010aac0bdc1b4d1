"""The seed document's Python API, called as the seed shows it (adapted only where the seed is
pseudo-code: its ``StateLock`` waits 30 s, here 0.2 s)."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import pytest

from hystate import (
    EpisodeState,
    ErrorRecovery,
    InvalidData,
    ProcessingStage,
    RecoveryManager,
    ReportGenerator,
    StateDatabase,
    StateLock,
    StateManager,
    StateTransitionValidator,
    YAMLPersistence,
)


@pytest.fixture
def state_manager(repo: Path) -> StateManager:
    return StateManager(Path("processed"))  # the seed's constructor, from the repo's root


def first_id(manager: StateManager) -> str:
    return sorted(p.stem for p in manager.store.iter_paths())[0]


def test_the_seed_stages() -> None:
    assert [s.name for s in ProcessingStage] == [
        "DISCOVERED", "DOWNLOADING", "DOWNLOADED", "CONVERTING", "CONVERTED", "UPLOADING",
        "UPLOADED", "SCHEDULED", "PUBLISHED", "FAILED", "SKIPPED",
    ]  # fmt: skip
    assert ProcessingStage.DISCOVERED.value == "discovered"


def test_get_episode_state_is_none_for_an_unknown_id(state_manager: StateManager) -> None:
    assert state_manager.get_episode_state("no-such-episode") is None


def test_episode_state_has_the_seed_fields(state_manager: StateManager) -> None:
    state = state_manager.get_episode_state(first_id(state_manager))
    assert state is not None
    assert state.archive_identifier == state.episode_id
    assert state.stage is ProcessingStage.DISCOVERED and state.status_message is None
    assert state.source_url == f"https://archive.org/details/{state.episode_id}"
    assert (state.audio_file, state.video_file, state.transcript_file) == (None, None, None)
    assert (state.download_attempts, state.conversion_attempts, state.upload_attempts) == (0, 0, 0)
    assert (state.youtube_video_id, state.scheduled_date, state.published_date) == (None,) * 3
    assert state.playlist_ids == []
    assert (state.audio_duration, state.audio_size, state.video_size) == (None,) * 3
    assert state.processing_time is None and state.error_history == []
    assert state.title and state.date and state.last_updated


def test_update_state_takes_the_seed_field_names(state_manager: StateManager) -> None:
    eid = first_id(state_manager)
    state_manager.update_state(eid, ProcessingStage.DOWNLOADING)
    state_manager.update_state(
        eid,
        ProcessingStage.DOWNLOADED,
        audio_file=Path(f"audio/2004/{eid}.mp3"),
        audio_size=28363609,
        audio_duration=1804.5,
        status_message="downloaded from archive.org",
    )
    state_manager.update_state(eid, ProcessingStage.CONVERTING)
    state_manager.update_state(
        eid, ProcessingStage.CONVERTED, video_file=Path(f"video/{eid}.mp4"), processing_time=61.2
    )
    state_manager.update_state(eid, ProcessingStage.UPLOADING)
    state_manager.update_state(
        eid, ProcessingStage.UPLOADED, youtube_video_id="dQw4w9WgXcQ", playlist_ids=["PLhy2004"]
    )
    when = datetime(2027, 1, 1, 18, 0, tzinfo=UTC)
    state_manager.update_state(eid, ProcessingStage.SCHEDULED, scheduled_date=when)
    state = state_manager.get_episode_state(eid)
    assert state is not None
    assert state.stage is ProcessingStage.SCHEDULED
    assert state.audio_file == Path(f"audio/2004/{eid}.mp3") and state.audio_size == 28363609
    assert state.video_file == Path(f"video/{eid}.mp4") and state.youtube_video_id == "dQw4w9WgXcQ"
    assert state.scheduled_date == when and state.playlist_ids == ["PLhy2004"]
    assert state.download_attempts == 1 and state.conversion_attempts == 1
    assert state.data["files"]["audio_file"] == f"audio/2004/{eid}.mp3"  # stored as text


def test_update_state_refuses_fields_hystate_keeps(state_manager: StateManager) -> None:
    from hystate import UsageError

    eid = first_id(state_manager)
    with pytest.raises(UsageError, match="counts attempts"):
        state_manager.update_state(eid, ProcessingStage.DOWNLOADING, download_attempts=5)
    with pytest.raises(UsageError, match="unknown field 'audio_path'"):
        state_manager.update_state(eid, ProcessingStage.DOWNLOADING, audio_path="x")


def test_get_next_for_processing_gives_a_batch_of_ten(state_manager: StateManager) -> None:
    batch = state_manager.get_next_for_processing(ProcessingStage.DOWNLOADING)
    assert len(batch) == 10 and all(e.stage is ProcessingStage.DISCOVERED for e in batch)
    assert len(state_manager.get_next_for_processing(ProcessingStage.DOWNLOADING, limit=3)) == 3
    assert len(state_manager.get_episodes_by_stage(ProcessingStage.DISCOVERED)) == 20
    assert state_manager.count_all_episodes() == 20


def test_the_seed_transition_table() -> None:
    S = ProcessingStage
    seed_table = {
        S.DISCOVERED: [S.DOWNLOADING, S.SKIPPED],
        S.DOWNLOADING: [S.DOWNLOADED, S.FAILED],
        S.DOWNLOADED: [S.CONVERTING, S.SKIPPED],
        S.CONVERTING: [S.CONVERTED, S.FAILED],
        S.CONVERTED: [S.UPLOADING, S.SKIPPED],
        S.UPLOADING: [S.UPLOADED, S.FAILED],
        S.UPLOADED: [S.SCHEDULED],
        S.SCHEDULED: [S.PUBLISHED],
        S.FAILED: [S.DOWNLOADING, S.CONVERTING, S.UPLOADING, S.SKIPPED],
    }
    assert seed_table == StateTransitionValidator.VALID_TRANSITIONS
    assert StateTransitionValidator.can_transition(S.FAILED, S.DOWNLOADING)
    assert not StateTransitionValidator.can_transition(S.DISCOVERED, S.PUBLISHED)
    assert not StateTransitionValidator.can_transition(S.PUBLISHED, S.DISCOVERED)


def test_error_recovery_the_seed_way(state_manager: StateManager) -> None:
    S = ProcessingStage
    recovery = ErrorRecovery()
    assert recovery.MAX_RETRIES == {S.DOWNLOADING: 3, S.CONVERTING: 2, S.UPLOADING: 3}
    eid = first_id(state_manager)
    state_manager.update_state(eid, S.DOWNLOADING)
    state = state_manager.get_episode_state(eid)
    assert state is not None and recovery.should_retry(state)
    try:
        raise ConnectionError("HTTP 503 from archive.org")
    except ConnectionError as error:
        next_stage = recovery.handle_error(state, error)
    assert next_stage is S.DOWNLOADING
    entry = state.error_history[-1]
    assert entry["error"] == "HTTP 503 from archive.org" and entry["stage"] == "downloading"
    assert "ConnectionError" in (entry["traceback"] or "")
    # the pipeline records the failure (a commit), then retries the stage handle_error named
    state_manager.update_state(eid, S.FAILED, error="HTTP 503 from archive.org")
    state_manager.update_state(eid, next_stage, force=True)
    assert state_manager.get_episode_state(eid).download_attempts == 2  # type: ignore[union-attr]


def test_handle_error_gives_up_once_retries_are_spent() -> None:
    state = EpisodeState(
        episode_id="hy0_hooting_yard_2004-04-14",
        archive_identifier="hy0_hooting_yard_2004-04-14",
        date=datetime(2004, 4, 14),
        title="Hooting Yard On The Air: Gaudy Flowers",
        stage=ProcessingStage.CONVERTING,
        status_message="converting",
        last_updated=datetime.now(UTC),
        conversion_attempts=2,
    )
    recovery = ErrorRecovery()
    assert not recovery.should_retry(state)
    assert recovery.handle_error(state, RuntimeError("ffmpeg")) is ProcessingStage.SKIPPED
    assert state.date == "2004-04-14" and len(state.error_history) == 1


def test_identify_incomplete_maps_stages_to_ids(state_manager: StateManager) -> None:
    ids = sorted(p.stem for p in state_manager.store.iter_paths())
    state_manager.update_state(ids[0], ProcessingStage.DOWNLOADING)
    state_manager.update_state(ids[1], ProcessingStage.SKIPPED, status_message="rebroadcast")
    incomplete = RecoveryManager(state_manager).identify_incomplete()
    assert incomplete == {
        ProcessingStage.DISCOVERED: ids[2:],
        ProcessingStage.DOWNLOADING: [ids[0]],
    }


def test_report_generator_the_seed_way(state_manager: StateManager) -> None:
    reports = ReportGenerator(state_manager)
    summary = reports.generate_summary()
    assert summary["total_episodes"] == 20 and summary["progress"]["discovered"] == 20
    assert {"timestamp", "completion_percentage", "estimated_completion"} <= set(summary)
    html = reports.generate_html_report()
    assert isinstance(html, str) and html.lstrip().lower().startswith("<!doctype html")


def test_state_lock_episode_lock_times_out_with_a_timeout_error(repo: Path) -> None:
    lock_dir = repo / "processed" / ".locks"
    with StateLock(lock_dir).episode_lock("hy0_hooting_yard_2004-04-14"):
        assert (lock_dir / "hy0_hooting_yard_2004-04-14.lock").exists()
        with (
            pytest.raises(TimeoutError),
            StateLock(lock_dir, timeout=0.2).episode_lock("hy0_hooting_yard_2004-04-14"),
        ):
            pass
    assert not (lock_dir / "hy0_hooting_yard_2004-04-14.lock").exists()


def test_recorded_events_survive_a_cache_rebuild(state_manager: StateManager) -> None:
    eid = first_id(state_manager)
    state_manager.refresh()
    db = StateDatabase(state_manager.state_dir / "state.db")
    db.record_event(eid, "download_progress", "50%")
    db.record_event(eid, "download_progress")
    for name in ("state.db", "state.db-wal", "state.db-shm", "index.json"):
        (state_manager.cache.cache_dir / name).unlink(missing_ok=True)
    state_manager.refresh(force=True)
    events = StateDatabase(state_manager.state_dir / "state.db").events(eid)
    assert [(e["event"], e["details"], e["stage"]) for e in events] == [
        ("download_progress", "50%", "discovered"),
        ("download_progress", None, "discovered"),
    ]
    count = db.conn.execute("SELECT count(*) FROM episode_states").fetchone()[0]
    assert count == 20
    db.close()


def test_yaml_persistence_round_trip(state_manager: StateManager, tmp_path: Path) -> None:
    eid = first_id(state_manager)
    source = state_manager.path_of(eid)
    state = YAMLPersistence.load_state(source)
    copy = tmp_path / f"{eid}.yaml"
    YAMLPersistence.save_state(state, copy)
    assert copy.read_bytes() == source.read_bytes()  # same keys, same order, same bytes
    state.audio_size = -1
    with pytest.raises(InvalidData, match="audio_size"):
        YAMLPersistence.save_state(state, copy)
