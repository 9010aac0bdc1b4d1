"""hystate.integrations.prefect with the real Prefect 3 (its ephemeral local server)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path
from typing import Any

import pytest
from prefect import flow
from prefect.client.orchestration import get_client
from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterId
from prefect.futures import wait
from prefect.task_runners import ThreadPoolTaskRunner

from hystate.core.model import EpisodeState
from hystate.integrations.prefect import migration_flow, stage_task
from tests.conftest import git
from tests.harness.orchestrators import configure, keep, replay_uploading
from tests.integrations.prefect.conftest import PREFECT_ENV

AUDIO = {"files.audio_file": "audio/x.mp3"}


def fields_for(stage: str) -> Any:
    def work(episode: EpisodeState) -> dict[str, Any]:
        eid = episode.episode_id
        return {
            "downloading": {"files.audio_file": f"audio/{eid}.mp3"},
            "converting": {"files.video_file": f"video/{eid}.mp4"},
            "uploading": {"youtube.video_id": "abcdefghijk"},
            "scheduled": {"youtube.scheduled_date": "2026-01-01T00:00:00+00:00"},
            "published": {"youtube.published_date": "2026-01-01T00:00:00+00:00"},
        }[stage]

    return work


def task_runs(flow_run_id: Any, until: Any) -> dict[str, tuple[str, str, int]]:
    """{task run id: (name, state, run count)} of a flow run, once ``until(runs)`` holds:
    Prefect 3 records task runs from events, a moment after they happen."""
    deadline = time.monotonic() + 120
    while True:
        with get_client(sync_client=True) as client:
            found = client.read_task_runs(
                flow_run_filter=FlowRunFilter(id=FlowRunFilterId(any_=[flow_run_id])), limit=200
            )
        runs = {
            str(r.id): (r.name, r.state.type.value if r.state else "", r.run_count) for r in found
        }
        if until(runs) or time.monotonic() > deadline:
            return runs
        time.sleep(0.5)


def test_a_failure_is_recorded_and_retried_by_hystate_once_with_run_ids(repo: Path) -> None:
    manager = configure(repo, "state_management:\n  recovery:\n    retry_delay: 0.2\n")
    ids = keep(manager, 4)
    flaky = set(ids[:2])

    def download(episode: EpisodeState) -> dict[str, Any]:
        if episode.episode_id in flaky and episode.attempts["download"] == 1:
            raise ConnectionResetError("connection reset by peer after 18.2 MB")
        return fields_for("downloading")(episode)

    works = {s: fields_for(s) for s in ("converting", "uploading", "scheduled", "published")}
    migrate = migration_flow(
        {"downloading": download, **works}, state_dir=repo / "processed", retry_wait=60
    )
    state = migrate(return_state=True)
    assert state.is_completed()
    flow_run_id = str(state.state_details.flow_run_id)
    for eid in ids:
        episode = manager.episode(eid)
        assert episode.stage.value == "published"
        assert episode.attempts["download"] == (2 if eid in flaky else 1)
    failed = manager.episode(ids[0]).error_history
    assert [e["error"] for e in failed] == [
        "ConnectionResetError: connection reset by peer after 18.2 MB"
    ]
    assert "in download" in failed[0]["traceback"]
    # Prefect never retried: each failure is one Failed task run, run once
    last_task_run = manager.episode(ids[0]).history[-1]["run"]["task_run"]
    named = "published-" + ids[0]  # a task run is recorded first under its default name
    runs = task_runs(
        state.state_details.flow_run_id,
        lambda runs: (
            runs.get(last_task_run, ("",))[0] == named
            and sum(r[1] == "FAILED" for r in runs.values()) >= 2
        ),
    )
    failures = [r for r in runs.values() if r[1] == "FAILED"]
    assert len(failures) == 2 and all(count == 1 for _, _, count in failures)
    assert runs[last_task_run][0] == named
    # every transition the flow made carries its flow run and its task run
    log = git(repo, "log", "--format=%(trailers:key=Hystate-Flow-Run,key=Hystate-Task-Run)%x00")
    made = [block.strip() for block in log.split("\0") if block.strip()]
    flow_made = [b for b in made if flow_run_id in b]
    assert len(flow_made) == 4 * 8 + 2 * 2  # 8 transitions an episode; a retry 2 more
    assert all("Hystate-Task-Run: " in b for b in flow_made)
    assert manager.episode(ids[0]).history[-1]["run"]["flow_run"] == flow_run_id


def test_prefects_own_retries_never_count_an_attempt(repo: Path) -> None:
    text = "state_management:\n  recovery:\n    retry_delay: 3600\n    max_retries: {download: 1}\n"
    manager = configure(repo, text)
    eid = keep(manager, 1)[0]

    def download(episode: EpisodeState) -> None:
        raise RuntimeError("HTTP 503 Service Unavailable from archive.org")

    retried = stage_task(
        "downloading", download, state_dir=repo / "processed", retries=2, retry_delay_seconds=0
    )

    @flow
    def one() -> Any:
        return retried(eid)

    outcome = one()
    # the first run failed it; Prefect's retry found it out of attempts: skipped, no new attempt
    assert outcome["result"] == "skipped" and "giving up after 1 of 1" in outcome["detail"]
    episode = manager.episode(eid)
    assert episode.stage.value == "skipped"
    assert episode.attempts["download"] == 1 and len(episode.error_history) == 1


def test_four_task_runners_keep_the_upload_limits(repo: Path) -> None:
    text = (
        "state_management:\n  recovery:\n    retry_delay: 0.2\n"
        "  limits:\n    uploading: {concurrency: 2, per_day: 6}\n"
    )
    manager = configure(repo, text)
    ids = keep(manager, 10)
    for eid in ids:
        for stage, fields in [
            ("downloading", {}),
            ("downloaded", {"files.audio_file": f"a/{eid}.mp3"}),
            ("converting", {}),
            ("converted", {"files.video_file": f"v/{eid}.mp4"}),
        ]:
            manager.update_state(eid, stage, fields=fields)

    def upload(episode: EpisodeState) -> dict[str, Any]:
        time.sleep(0.2)
        return {"youtube.video_id": "abcdefghijk"}

    # four task runners, one task run an episode, no Prefect limit: hystate's alone holds
    uploading = stage_task("uploading", upload, state_dir=repo / "processed", room_wait=120)

    @flow(task_runner=ThreadPoolTaskRunner(max_workers=4))
    def four() -> list[Any]:
        futures = uploading.map(ids)
        wait(futures)
        return [f.result() for f in futures]

    results = Counter(o["result"] for o in four())
    most, entries = replay_uploading(repo)
    assert most <= 2 and entries == 6
    assert results == {"done": 6, "limited": 4}  # the day's quota: refused, not waited for
    counts = manager.count_by_stage()
    assert (counts["uploaded"], counts["converted"]) == (6, 4)
    # the flow maps the limit onto a Prefect global concurrency limit, and runs its lanes
    summary = migration_flow({"uploading": upload}, state_dir=repo / "processed")()
    assert summary == {"uploading": {}}  # nothing more today
    with get_client(sync_client=True) as client:
        assert client.read_global_concurrency_limit_by_name("hystate-uploading").limit == 2


def test_a_slot_left_on_the_prefect_server_does_not_block_the_work(repo: Path) -> None:
    text = "state_management:\n  limits:\n    downloading: {concurrency: 1}\n"
    manager = configure(repo, text)
    eid = keep(manager, 1)[0]
    with get_client(sync_client=True) as client:
        client.upsert_global_concurrency_limit_by_name("hystate-downloading", 1)
        client.increment_concurrency_slots(["hystate-downloading"], 1, "concurrency")  # leaked
    download = stage_task("downloading", fields_for("downloading"), room_wait=2)

    @flow
    def one() -> Any:
        return download(eid)

    assert one()["result"] == "done"
    assert manager.episode(eid).stage.value == "downloaded"


RUNNER = """
import os, sys, time
from hystate.integrations.prefect import migration_flow

LOG = sys.argv[2]

def work(stage, make):
    def run(episode):
        if stage == "uploading" and os.environ.get("BLOCK") == episode.episode_id:
            open(LOG + ".blocked", "w").close()
            time.sleep(3600)  # killed here
        fields = make(episode)
        with open(LOG, "a") as out:
            out.write(f"{stage} {episode.episode_id}\\n")
        return fields
    return run

eid = lambda e: e.episode_id
works = {
    "downloading": work("downloading", lambda e: {"files.audio_file": f"a/{eid(e)}.mp3"}),
    "converting": work("converting", lambda e: {"files.video_file": f"v/{eid(e)}.mp4"}),
    "uploading": work("uploading", lambda e: {"youtube.video_id": "abcdefghijk"}),
    "scheduled": work("scheduled", lambda e: {"youtube.scheduled_date": "2026-01-01T00:00:00+00:00"}),
    "published": work("published", lambda e: {"youtube.published_date": "2026-01-01T00:00:00+00:00"}),
}
migration_flow(works, state_dir=sys.argv[1], retry_wait=60, max_workers=4)()
"""


@pytest.mark.slow
def test_kill_9_mid_run_then_a_rerun_finishes_with_nothing_done_twice(
    repo: Path, tmp_path: Path
) -> None:
    manager = configure(repo, "state_management:\n  recovery:\n    retry_delay: 0.2\n")
    ids = keep(manager, 5)
    script = tmp_path / "runner.py"
    script.write_text(RUNNER)
    log = tmp_path / "done.log"
    env = {**os.environ, **PREFECT_ENV, "PREFECT_HOME": str(tmp_path / "prefect-home")}
    command = [sys.executable, str(script), str(repo / "processed"), str(log)]
    first = subprocess.Popen(
        command,
        env={**env, "BLOCK": ids[2]},
        start_new_session=True,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + 600
        while time.monotonic() < deadline:
            counts = manager.count_by_stage()
            blocked = Path(f"{log}.blocked").exists()
            if blocked and counts["uploaded"] == 4 and counts["uploading"] == 1:
                break
            assert first.poll() is None, "the first run ended before it was killed"
            time.sleep(0.2)
        else:
            raise AssertionError(f"the first run never got to the upload: {counts}")
    finally:
        os.killpg(first.pid, signal.SIGKILL)  # the flow and its ephemeral server
        first.wait()
    assert manager.episode(ids[2]).stage.value == "uploading"
    rerun = subprocess.run(command, env=env, capture_output=True, text=True, timeout=900)
    assert rerun.returncode == 0, rerun.stderr[-3000:]
    for eid in ids:
        assert manager.episode(eid).stage.value == "published"
    done = log.read_text().splitlines()
    assert len(done) == len(set(done)) == 5 * 5  # every stage of every episode, once
    killed = manager.episode(ids[2])
    assert killed.attempts["upload"] == 2
    assert killed.error_history[-1]["error"].startswith("worker lost")
