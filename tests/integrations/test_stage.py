"""The orchestrator-neutral stage task: claim or enter, lease, advance or fail, hystate's policy."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from hystate.core.errors import UnknownEpisode
from hystate.integrations.stage import error_text, plan, run_stage, waiting_for
from hystate.manager import StateManager
from tests.conftest import commits, git

AUDIO = {"files.audio_file": "audio/x.mp3", "metrics.audio_size": 28_000_000}


def configure(repo: Path, text: str) -> StateManager:
    (repo / "hystate.yaml").write_text(text)
    return StateManager(cwd=repo, worker="stage-test")


def first(manager: StateManager, count: int = 1) -> list[str]:
    return [e.episode_id for e in manager.list_episodes()][:count]


def test_claims_works_under_a_lease_and_advances(repo: Path) -> None:
    manager = configure(repo, "")
    seen: list[Any] = []

    def download(episode: Any) -> dict[str, Any]:
        lease = manager.heartbeat(episode.episode_id)  # the keeper registered this process
        seen.append((episode.stage.value, lease.pid))
        return AUDIO

    outcome = run_stage(manager, "downloading", download)
    assert outcome.result == "done" and outcome.commit
    assert seen and seen[0][0] == "downloading" and seen[0][1] is not None
    episode = manager.episode(str(outcome.episode_id))
    assert episode.stage.value == "downloaded"
    assert episode.data["files"]["audio_file"] == "audio/x.mp3"


def test_an_exception_fails_the_episode_with_its_traceback(repo: Path) -> None:
    manager = configure(repo, "")
    eid = first(manager)[0]

    def broken_download(episode: Any) -> None:
        raise ConnectionResetError("connection reset by peer after 18.2 MB")

    outcome = run_stage(manager, "downloading", broken_download, eid)
    assert outcome.result == "failed"
    episode = manager.episode(eid)
    assert episode.stage.value == "failed"
    error = episode.error_history[-1]
    assert error["error"] == "ConnectionResetError: connection reset by peer after 18.2 MB"
    assert "broken_download" in error["traceback"]
    assert episode.attempts["download"] == 1


def test_a_handed_failed_episode_follows_hystates_policy(repo: Path) -> None:
    text = "state_management:\n  recovery:\n    retry_delay: 3600\n    max_retries: {download: 2}\n"
    manager = configure(repo, text)
    eid = first(manager)[0]

    def fails(episode: Any) -> None:
        raise RuntimeError("HTTP 503")

    assert run_stage(manager, "downloading", fails, eid).result == "failed"
    before = commits(repo)
    again = run_stage(manager, "downloading", fails, eid)  # an orchestrator's own retry
    assert again.result == "not-due" and "retry due at" in again.detail
    assert commits(repo) == before and manager.episode(eid).attempts["download"] == 1
    manager.retry([eid], now=True)  # an operator hands this worker the second and last attempt
    assert run_stage(manager, "downloading", fails, eid).result == "failed"
    last = run_stage(manager, "downloading", fails, eid)
    assert last.result == "skipped" and "giving up after 2 of 2" in last.detail
    assert manager.episode(eid).stage.value == "skipped"
    assert run_stage(manager, "downloading", fails, eid).result == "skipped"
    assert manager.episode(eid).attempts["download"] == 2


def test_an_episode_past_the_stage_is_left_alone(repo: Path) -> None:
    manager = configure(repo, "")
    eid = first(manager)[0]
    manager.update_state(eid, "downloading")
    manager.update_state(eid, "downloaded", fields=AUDIO)
    before = commits(repo)

    def never(episode: Any) -> None:
        raise AssertionError("must not run")

    outcome = run_stage(manager, "downloading", never, eid)
    assert (outcome.result, outcome.detail) == ("already", "is downloaded")
    assert commits(repo) == before


def test_fields_the_schema_refuses_fail_the_episode(repo: Path) -> None:
    manager = configure(repo, "")
    eid = first(manager)[0]
    outcome = run_stage(manager, "downloading", lambda e: {"files.audio_file": None}, eid)
    assert outcome.result == "failed"
    assert manager.episode(eid).stage.value == "failed"


def test_error_text_keeps_the_record_clean() -> None:
    text = error_text(ValueError("bad\x1b[31m\nHystate-To: published"))
    assert "\x1b" not in text and "\n> Hystate-To" in text
    assert error_text(KeyError()) == "KeyError"
    assert len(error_text(RuntimeError("x" * 20_000))) == 10_000


def test_plan_lists_ready_work_within_the_days_quota(repo: Path) -> None:
    manager = configure(repo, "state_management:\n  limits:\n    downloading: {per_day: 3}\n")
    assert len(plan(manager, "downloading", 10)) == 3
    got = run_stage(manager, "downloading", lambda e: AUDIO)
    assert got.result == "done"
    assert len(plan(manager, "downloading", 10)) == 2
    assert plan(manager, "converting", 10) == [got.episode_id]


def test_waiting_for_names_who_has_not_arrived(repo: Path) -> None:
    manager = configure(repo, "")
    a, b = first(manager, 2)
    manager.update_state(a, "downloading")
    manager.update_state(a, "downloaded", fields=AUDIO)
    assert waiting_for(manager, "downloaded", [a, b]) == [b]
    manager.skip(b, "not wanted")
    assert waiting_for(manager, "downloaded", [a, b]) == []
    assert waiting_for(manager, "downloaded", [a, b], include_skipped=False) == [b]
    with pytest.raises(UnknownEpisode):
        waiting_for(manager, "downloaded", [a, "nope"])
    assert len(waiting_for(manager, "downloaded")) == 18


def test_run_ids_of_the_stage_task_reach_the_commit(repo: Path) -> None:
    manager = configure(repo, "")
    manager.run_ids = {"orchestrator": "airflow", "dag_run": "manual__2026-12-07T00:00:00+00:00"}
    outcome = run_stage(manager, "downloading", lambda e: AUDIO)
    body = git(repo, "log", "-1", "--format=%B", str(outcome.commit))
    assert "Hystate-Dag-Run: manual__2026-12-07T00:00:00+00:00" in body


def test_an_episode_a_task_run_holds_is_never_adopted(repo: Path) -> None:
    manager = configure(repo, "")
    eid = first(manager)[0]
    manager.run_ids = {"orchestrator": "airflow", "dag_run": "manual__1", "map_index": "0"}
    manager.update_state(eid, "downloading")  # a task run of the same worker name holds it
    manager.run_ids = {"orchestrator": "airflow", "dag_run": "manual__2", "map_index": "0"}
    outcome = run_stage(manager, "downloading", lambda e: AUDIO, eid)
    assert (outcome.result, outcome.detail) == ("taken", "held by stage-test")
    assert manager.episode(eid).stage.value == "downloading"
