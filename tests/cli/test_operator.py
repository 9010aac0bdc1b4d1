"""What the seed promises an operator (issue 12): leases instead of guessed pids, retries from
any earlier active stage, auto_resume on claims, failing a failed episode, config that acts."""

from __future__ import annotations

import json
import os
import shlex
import subprocess
import sys
import time
from pathlib import Path

from hystate.core.model import ProcessingStage
from hystate.fsck.recovery import RecoveryManager
from hystate.manager import StateManager
from tests.conftest import Cli, commits, git

S = ProcessingStage
HYSTATE_SH = f"{shlex.quote(sys.executable)} -m hystate.cli"

SEED_CONFIG = """\
state_management:
  state_directory: ./processed
  database_file: state.db

  retention:
    yaml_files: true  # Keep individual YAML files
    compress_old: true  # Compress files older than 30 days

  reporting:
    generate_daily: true
    generate_weekly: true
    report_format: html  # html, json, csv

  recovery:
    auto_resume: true
    max_retries:
      download: 3
      conversion: 2
      upload: 3
    retry_delay: 300  # seconds

  monitoring:
    alert_on_failure: true
    alert_threshold: 5  # consecutive failures
    webhook_url: null  # Optional webhook for alerts
"""


def sh(
    repo: Path, command: str, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    """hystate called the way a pipeline calls it: through a short-lived shell."""
    return subprocess.run(
        ["sh", "-c", command.replace("hystate ", f"{HYSTATE_SH} ")],
        cwd=repo,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
        env={**os.environ, **(env or {})},
    )


def configure(repo: Path, text: str) -> None:
    (repo / "hystate.yaml").write_text("state_management:\n" + text)


def stuck_ids(manager: StateManager) -> list[str]:
    return [e.episode_id for e, _ in RecoveryManager(manager).stuck()]


def to_failed_conversion(manager: StateManager, eid: str) -> None:
    manager.update_state(eid, "downloading")
    manager.update_state(eid, "downloaded", fields={"files.audio_file": f"audio/{eid}.mp3"})
    manager.update_state(eid, "converting")
    manager.fail(eid, "ffmpeg exited with status 1: Invalid data found when processing input")


# -- leases -------------------------------------------------------------------------------------


def test_a_worker_called_through_a_shell_is_not_lost_when_the_shell_exits(
    repo: Path, episode_id: str
) -> None:
    assert sh(repo, f"hystate advance {episode_id} downloading").returncode == 0
    fsck = sh(repo, "hystate fsck --repair --json")
    assert [f for f in json.loads(fsck.stdout)["findings"] if f["kind"] == "stuck"] == []
    done = sh(repo, f"hystate advance {episode_id} downloaded --set files.audio_file=a/x.mp3")
    assert done.returncode == 0, done.stderr
    assert StateManager(cwd=repo).episode(episode_id).stage is S.DOWNLOADED


def test_heartbeat_renews_the_lease_without_a_commit(repo: Path, episode_id: str) -> None:
    configure(repo, "  recovery:\n    stage_timeouts: {downloading: 1}\n")
    assert sh(repo, f"hystate advance {episode_id} downloading --worker dl-1").returncode == 0
    before = commits(repo)
    beat = sh(repo, f"hystate heartbeat {episode_id} --worker dl-1 --seconds 60 --json")
    assert beat.returncode == 0, beat.stderr
    lease = json.loads(beat.stdout)
    assert lease["worker"] == "dl-1" and lease["stage"] == "downloading"
    time.sleep(1.5)  # past the committed deadline (1 s), inside the renewed one (60 s)
    manager = StateManager(cwd=repo)
    assert stuck_ids(manager) == []
    assert commits(repo) == before
    assert git(repo, "status", "--porcelain", "--", "processed") == ""


def test_without_heartbeats_the_lease_expires(repo: Path, episode_id: str) -> None:
    configure(repo, "  recovery:\n    stage_timeouts: {downloading: 3}\n")
    manager = StateManager(cwd=repo, worker="dl-2")
    manager.update_state(episode_id, "downloading")
    assert stuck_ids(manager) == []
    time.sleep(4.1)
    [(episode, reason)] = RecoveryManager(manager).stuck()
    assert episode.episode_id == episode_id and "lease of worker dl-2 expired" in reason


def test_heartbeat_refuses_another_worker_and_an_inactive_episode(
    run: Cli, repo: Path, episode_id: str
) -> None:
    assert run("heartbeat", episode_id).exit_code == 3  # discovered: no lease
    assert run("advance", episode_id, "downloading", "--worker", "dl-1").exit_code == 0
    assert run("heartbeat", episode_id, "--worker", "dl-2").exit_code == 3
    assert run("heartbeat", episode_id, "--worker", "dl-1").exit_code == 0
    assert run("heartbeat", episode_id).exit_code == 0  # unnamed: not checked


def test_hystate_worker_names_the_worker(repo: Path, episode_id: str) -> None:
    done = sh(repo, f"hystate advance {episode_id} downloading", env={"HYSTATE_WORKER": "dl-env"})
    assert done.returncode == 0, done.stderr
    assert StateManager(cwd=repo).episode(episode_id).worker == "dl-env"
    assert "Hystate-Worker: dl-env" in git(repo, "log", "-1", "--format=%B")


def test_the_lease_context_manager_renews_in_the_background(repo: Path, episode_id: str) -> None:
    configure(repo, "  recovery:\n    stage_timeouts: {downloading: 1}\n")
    manager = StateManager(cwd=repo, worker="dl-3")
    manager.update_state(episode_id, "downloading")
    before = commits(repo)
    with manager.lease(episode_id) as keeper:
        time.sleep(3.5)  # more than three lease lengths
        assert stuck_ids(StateManager(cwd=repo)) == [] and keeper.lost is None
    assert commits(repo) == before
    time.sleep(2.5)
    assert stuck_ids(StateManager(cwd=repo)) == [episode_id]


def test_a_lease_of_another_host_is_judged_by_its_deadline_only(
    manager: StateManager, episode_id: str
) -> None:
    manager.update_state(episode_id, "downloading")
    lease = manager.heartbeat(episode_id, seconds=600)
    path = manager.locks_dir / f"{episode_id}.lease"
    data = json.loads(path.read_text())
    data.update(host="some-other-node", pid=2**22 + 12345, start="1")
    path.write_text(json.dumps(data))
    assert stuck_ids(manager) == []  # a pid of another host means nothing here
    assert lease.expires_at == data["expires_at"]


def test_the_lease_keeper_reports_a_lost_lease(repo: Path, episode_id: str) -> None:
    configure(repo, "  recovery:\n    stage_timeouts: {downloading: 0.3}\n")
    manager = StateManager(cwd=repo, worker="dl-4")
    manager.update_state(episode_id, "downloading")
    with manager.lease(episode_id) as keeper:
        StateManager(cwd=repo, worker="op").fail(episode_id, "taken away by hand")
        for _ in range(100):  # the next renewal (every 0.1 s) finds it gone
            if keeper.lost:
                break
            time.sleep(0.1)
        assert keeper.lost is not None and "failed" in keeper.lost


# -- retries ------------------------------------------------------------------------------------


def test_retry_from_an_earlier_stage_counts_the_attempt_there(
    run: Cli, manager: StateManager, episode_id: str
) -> None:
    to_failed_conversion(manager, episode_id)
    result = run("retry", episode_id, "--from", "downloading", "--now", "--worker", "dl-9")
    assert result.exit_code == 0, result.output
    episode = manager.episode(episode_id)
    assert episode.stage is S.DOWNLOADING and episode.failed_stage is None
    assert episode.worker == "dl-9"  # the stage and its lease go to who will do the work
    assert episode.attempts == {"download": 2, "conversion": 1, "upload": 0}


def test_retry_cannot_jump_past_the_failed_stage(
    run: Cli, manager: StateManager, episode_id: str
) -> None:
    to_failed_conversion(manager, episode_id)
    result = run("retry", episode_id, "--from", "uploading", "--now")
    assert result.exit_code == 3 and "not uploading" in result.output


def test_retry_from_an_earlier_stage_respects_the_backoff(
    run: Cli, manager: StateManager, episode_id: str
) -> None:
    to_failed_conversion(manager, episode_id)
    waiting = run("retry", episode_id, "--from", "downloading")
    assert waiting.exit_code == 0 and "waiting" in waiting.output
    assert manager.episode(episode_id).stage is S.FAILED


def test_retry_from_an_exhausted_stage_skips_with_the_reason(
    repo: Path, run: Cli, episode_id: str
) -> None:
    configure(repo, "  recovery:\n    max_retries: {download: 1}\n")
    manager = StateManager(cwd=repo)
    to_failed_conversion(manager, episode_id)
    result = run("retry", episode_id, "--from", "downloading", "--now")
    assert result.exit_code == 0 and "skipped" in result.output
    episode = manager.episode(episode_id)
    assert episode.stage is S.SKIPPED
    assert "giving up after 1 of 1 download attempts" in str(episode.status_message)


def test_advance_back_to_an_earlier_stage_is_legal_from_failed(
    manager: StateManager, episode_id: str
) -> None:
    to_failed_conversion(manager, episode_id)
    result = manager.update_state(episode_id, "downloading", force=True)
    assert result.changed and result.episode.attempts["download"] == 2


def test_auto_resume_marks_stuck_lost_and_skips_exhausted_before_claiming(
    repo: Path, run: Cli
) -> None:
    configure(
        repo,
        "  recovery:\n    auto_resume: true\n    retry_delay: 0\n"
        "    max_retries: {download: 1}\n    stage_timeouts: {downloading: 0.5}\n",
    )
    manager = StateManager(cwd=repo, worker="dl-1")
    lost, exhausted = sorted(p.stem for p in manager.store.iter_paths())[:2]
    manager.update_state(lost, "downloading")
    manager.update_state(exhausted, "downloading")
    manager.fail(exhausted, "HTTP 404")
    time.sleep(1.2)
    result = run("next", "downloading", "--claim", "--worker", "dl-2", "--json")
    assert result.exit_code == 0, result.output
    now_lost = manager.episode(lost)
    assert any("worker lost" in e["error"] for e in now_lost.error_history)
    assert now_lost.stage is S.SKIPPED  # its one download attempt was used: exhausted
    assert manager.episode(exhausted).stage is S.SKIPPED
    assert "HTTP 404" in str(manager.episode(exhausted).status_message)


def test_auto_resume_turns_a_lost_episode_into_a_due_retry(repo: Path, run: Cli) -> None:
    configure(
        repo,
        "  recovery:\n    auto_resume: true\n    retry_delay: 0\n"
        "    stage_timeouts: {downloading: 0.5}\n",
    )
    manager = StateManager(cwd=repo, worker="dl-1")
    lost = sorted(p.stem for p in manager.store.iter_paths())[0]
    manager.update_state(lost, "downloading")
    time.sleep(1.2)
    result = run("next", "downloading", "--claim", "--worker", "dl-2", "--json")
    assert [e["episode_id"] for e in json.loads(result.output)] == [lost]  # oldest first
    episode = manager.episode(lost)
    assert episode.stage is S.DOWNLOADING and episode.worker == "dl-2"
    assert episode.attempts["download"] == 2


def test_without_auto_resume_claims_leave_stuck_episodes_alone(repo: Path, run: Cli) -> None:
    configure(repo, "  recovery:\n    auto_resume: false\n    stage_timeouts: {downloading: 0.5}\n")
    manager = StateManager(cwd=repo, worker="dl-1")
    lost = sorted(p.stem for p in manager.store.iter_paths())[0]
    manager.update_state(lost, "downloading")
    time.sleep(1.2)
    assert run("next", "downloading", "--claim").exit_code == 0
    assert manager.episode(lost).stage is S.DOWNLOADING


def test_failing_a_failed_episode_appends_the_error(
    run: Cli, repo: Path, manager: StateManager, episode_id: str
) -> None:
    manager.update_state(episode_id, "downloading")
    manager.fail(episode_id, "HTTP 503")
    before = commits(repo)
    result = run("fail", episode_id, "--error", "HTTP 503 again, from the CDN")
    assert result.exit_code == 0 and "failed -> failed" in result.output
    assert len(commits(repo)) == len(before) + 1
    episode = manager.episode(episode_id)
    assert [e["error"] for e in episode.error_history] == [
        "HTTP 503",
        "HTTP 503 again, from the CDN",
    ]
    assert episode.failed_stage is S.DOWNLOADING and episode.attempts["download"] == 1
    assert run("validate", "--base", before[-1]).exit_code == 0
    events = [e["event"] for e in manager.events(episode_id=episode_id)]
    assert events[-2:] == ["failed", "failed"]


def test_advance_to_failed_needs_an_error(run: Cli, manager: StateManager, episode_id: str) -> None:
    manager.update_state(episode_id, "downloading")
    result = run("advance", episode_id, "failed")
    assert result.exit_code == 2 and "--error" in result.output
    assert manager.episode(episode_id).stage is S.DOWNLOADING
    assert run("advance", episode_id, "failed", "--error", "disk full").exit_code == 0
    assert manager.episode(episode_id).error_history[-1]["error"] == "disk full"


# -- config that acts ---------------------------------------------------------------------------


def test_the_seed_config_block_pasted_verbatim_is_valid(repo: Path, run: Cli) -> None:
    (repo / "hystate.yaml").write_text(SEED_CONFIG)
    result = run("config", "--json")
    assert result.exit_code == 0, result.output
    assert json.loads(result.output)["retention"]["yaml_files"] is True
    assert run("status").exit_code == 0


def test_yaml_files_false_is_refused_naming_the_key(repo: Path, run: Cli) -> None:
    (repo / "hystate.yaml").write_text("state_management:\n  retention: {yaml_files: false}\n")
    result = run("status")
    assert result.exit_code == 5 and "retention.yaml_files" in result.output


def test_report_writes_what_the_config_asks_for(repo: Path, run: Cli) -> None:
    (repo / "hystate.yaml").write_text(SEED_CONFIG)
    result = run("report")
    assert result.exit_code == 0, result.output
    names = [Path(line).name for line in result.output.split()]
    assert len(names) == 3 and names[2] == "summary.json"
    assert names[0].startswith("daily_report_") and names[0].endswith(".html")
    assert names[1].startswith("weekly_report_") and names[1].endswith(".html")
    summary = json.loads((repo / "processed" / "reports" / "summary.json").read_text())
    assert {"timestamp", "total_episodes", "progress", "completion_percentage"} <= set(summary)
    assert "estimated_completion" in summary and summary["total_episodes"] == 20


def test_report_in_json_weekly_only(repo: Path, run: Cli) -> None:
    configure(
        repo,
        "  reporting: {generate_daily: false, generate_weekly: true, report_format: json}\n",
    )
    result = run("report")
    names = [Path(line).name for line in result.output.split()]
    assert len(names) == 2 and names[1] == "summary.json"
    assert names[0].startswith("weekly_report_") and names[0].endswith(".json")


def test_a_custom_database_file_is_ignored_by_git(repo: Path, run: Cli) -> None:
    configure(repo, "  database_file: hystate-cache.sqlite\n")
    git(repo, "add", "hystate.yaml")
    git(repo, "-c", "user.name=t", "-c", "user.email=t@t", "commit", "-qm", "config")
    assert run("init").exit_code == 0
    assert run("status").exit_code == 0
    assert (repo / ".git" / "hystate" / "cache" / "processed" / "hystate-cache.sqlite").exists()
    assert git(repo, "status", "--porcelain") == ""


def test_fsck_reports_an_invalid_file_when_media_directories_are_set(
    repo: Path, run: Cli, episode_id: str
) -> None:
    configure(repo, "  media:\n    directories: [media]\n")
    (repo / "media").mkdir()
    path = StateManager(cwd=repo).path_of(episode_id)
    path.write_text(path.read_text().replace("stage: discovered", "stage: nowhere"))
    result = run("fsck", "--json")
    assert result.exit_code == 1, result.output
    kinds = {f["kind"] for f in json.loads(result.output)["findings"]}
    assert "invalid" in kinds


def _to_scheduled(manager: StateManager, eid: str, when: str) -> None:
    steps: list[tuple[str, dict[str, object]]] = [
        ("downloading", {}),
        ("downloaded", {"files.audio_file": f"audio/{eid}.mp3"}),
        ("converting", {}),
        ("converted", {"files.video_file": f"video/{eid}.mp4"}),
        ("uploading", {}),
        ("uploaded", {"youtube.video_id": "dQw4w9WgXcQ"}),
        ("scheduled", {"youtube.scheduled_date": when}),
    ]
    for stage, fields in steps:
        manager.update_state(eid, stage, fields=fields)


def test_next_published_waits_for_the_scheduled_date(run: Cli, manager: StateManager) -> None:
    past, future = sorted(p.stem for p in manager.store.iter_paths())[:2]
    _to_scheduled(manager, past, "2020-01-01T18:00:00+00:00")
    _to_scheduled(manager, future, "2999-01-01T18:00:00+00:00")
    offered = json.loads(run("next", "published", "--limit", "5", "--json").output)
    assert [e["episode_id"] for e in offered] == [past]


def test_published_before_scheduled_is_refused(
    run: Cli, manager: StateManager, episode_id: str
) -> None:
    _to_scheduled(manager, episode_id, "2027-01-01T18:00:00+00:00")
    early = run(
        "advance", episode_id, "published", "--set",
        "youtube.published_date=2026-12-31T18:00:00+00:00",
    )  # fmt: skip
    assert early.exit_code == 5 and "earlier than youtube.scheduled_date" in early.output
    on_time = run(
        "advance", episode_id, "published", "--set",
        "youtube.published_date=2027-01-01T18:00:00Z",
    )  # fmt: skip
    assert on_time.exit_code == 0, on_time.output
