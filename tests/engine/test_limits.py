"""Per-stage limits (``limits:`` in hystate.yaml) and orchestrator run ids on transitions."""

from __future__ import annotations

import multiprocessing
import sys
from pathlib import Path

import pytest

from hystate.core.config import Config
from hystate.core.errors import InvalidData, UsageError
from hystate.engine.limits import LimitReached, room
from hystate.manager import StateManager
from tests.conftest import commits, git, run_hystate
from tests.harness.orchestrators import replay_uploading

LIMITS = "state_management:\n  limits:\n    uploading: {concurrency: 2, per_day: 3}\n"


def to_converted(manager: StateManager, ids: list[str]) -> None:
    for eid in ids:
        manager.update_state(eid, "downloading")
        manager.update_state(eid, "downloaded", fields={"files.audio_file": f"a/{eid}.mp3"})
        manager.update_state(eid, "converting")
        manager.update_state(eid, "converted", fields={"files.video_file": f"v/{eid}.mp4"})


def limited(repo: Path, text: str = LIMITS, worker: str = "w") -> StateManager:
    (repo / "hystate.yaml").write_text(text)
    git(repo, "add", "hystate.yaml")
    git(repo, "-c", "user.name=t", "-c", "user.email=t@t", "commit", "-q", "-m", "limits")
    return StateManager(cwd=repo, worker=worker)


def ids_of(manager: StateManager, count: int) -> list[str]:
    return sorted(p.stem for p in manager.store.iter_paths())[:count]


def test_config_takes_limits_and_names_a_bad_one(tmp_path: Path) -> None:
    config = Config.parse(LIMITS.encode(), tmp_path / "hystate.yaml")
    assert config.get("limits.uploading") == {"concurrency": 2, "per_day": 3}
    assert config.get("limits.downloading") == {"concurrency": None, "per_day": None}
    bad = b"state_management:\n  limits:\n    uploading: {concurrency: 0}\n"
    with pytest.raises(InvalidData, match=r"limits\.uploading\.concurrency"):
        Config.parse(bad, tmp_path / "hystate.yaml")
    with pytest.raises(InvalidData, match="limits"):
        Config.parse(b"state_management:\n  limits:\n    converted: {per_day: 1}\n", tmp_path)


def test_entering_a_full_stage_is_refused_and_changes_nothing(repo: Path) -> None:
    manager = limited(repo)
    ids = ids_of(manager, 4)
    to_converted(manager, ids)
    manager.update_state(ids[0], "uploading")
    manager.update_state(ids[1], "uploading")
    before = commits(repo)
    with pytest.raises(LimitReached, match=r"2 of 2 running \(limits\.concurrency\)"):
        manager.update_state(ids[2], "uploading")
    assert commits(repo) == before
    assert manager.episode(ids[2]).stage.value == "converted"
    assert git(repo, "status", "--porcelain", "processed") == ""
    # the CLI: exit 3, one line
    proc = run_hystate(repo, "advance", ids[2], "uploading")
    assert proc.returncode == 3
    assert "limit reached" in proc.stderr and "Traceback" not in proc.stderr


def test_per_day_counts_retries_and_holds_after_the_slots_free(repo: Path) -> None:
    manager = limited(repo)
    ids = ids_of(manager, 4)
    to_converted(manager, ids)
    manager.update_state(ids[0], "uploading")
    manager.fail(ids[0], "YouTube upload endpoint returned HTTP 500")
    manager.update_state(ids[0], "uploading", force=True)  # the retry: a second entry today
    manager.update_state(ids[0], "uploaded", fields={"youtube.video_id": "dQw4w9WgXcQ"})
    manager.update_state(ids[1], "uploading")
    manager.update_state(ids[1], "uploaded", fields={"youtube.video_id": "dQw4w9WgXcZ"})
    current = room(manager, "uploading")
    assert current is not None
    assert (current.running, current.today, current.free) == (0, 3, 0)
    with pytest.raises(LimitReached, match=r"3 of 3 entries on .* UTC \(limits\.per_day\)"):
        manager.update_state(ids[2], "uploading")
    assert manager.claim_next("uploading", 2) == []


def test_claims_hand_out_only_what_fits(repo: Path) -> None:
    manager = limited(repo, LIMITS.replace("per_day: 3", "per_day: 10"))
    ids = ids_of(manager, 5)
    to_converted(manager, ids)
    got = manager.claim_next("uploading", 5)
    assert len(got) == 2
    assert manager.count_by_stage()["uploading"] == 2
    assert manager.claim_next("uploading", 5) == []
    manager.update_state(
        got[0].episode.episode_id, "uploaded", fields={"youtube.video_id": "x" * 11}
    )
    assert len(manager.claim_next("uploading", 5)) == 1


def test_a_claim_held_back_by_a_limit_says_so(repo: Path) -> None:
    manager = limited(repo, LIMITS.replace("per_day: 3", "per_day: 10"))
    to_converted(manager, ids_of(manager, 3))
    assert len(manager.claim_next("uploading", 2)) == 2
    done = run_hystate(repo, "next", "uploading", "--claim", "--worker", "w")
    assert done.returncode == 0 and done.stdout == ""
    assert "limit reached: 2 of 2 running" in done.stderr


def test_run_ids_go_into_the_trailers_and_the_history(repo: Path) -> None:
    manager = StateManager(cwd=repo, worker="flow-1")
    manager.run_ids = {"orchestrator": "prefect", "flow_run": "1b2c", "task_run": "9f8e-7d"}
    eid = ids_of(manager, 1)[0]
    result = manager.update_state(eid, "downloading")
    body = git(repo, "log", "-1", "--format=%B", str(result.commit))
    assert "Hystate-Orchestrator: prefect" in body
    assert "Hystate-Flow-Run: 1b2c" in body and "Hystate-Task-Run: 9f8e-7d" in body
    assert manager.episode(eid).history[-1]["run"]["task_run"] == "9f8e-7d"
    manager.fail(eid, "HTTP 503")
    assert manager.episode(eid).history[-1]["run"]["flow_run"] == "1b2c"
    proc = run_hystate(repo, "history", eid)
    assert proc.returncode == 0, proc.stderr
    assert "flow_run=1b2c task_run=9f8e-7d" in proc.stdout.splitlines()[-1]
    assert run_hystate(repo, "validate").returncode == 0


@pytest.mark.parametrize(
    "bad",
    [{"Flow": "x"}, {"worker": "x"}, {"flow_run": "a\nHystate-To: published"}, {"a": ""}],
)
def test_bad_run_ids_are_refused(manager: StateManager, bad: dict[str, str]) -> None:
    with pytest.raises(UsageError, match="run ids"):
        manager.run_ids = bad


def _uploader(root: str, number: int) -> None:
    manager = StateManager(cwd=root, worker=f"up-{number}")
    idle = 0
    while idle < 30:
        got = manager.claim_next("uploading", 1)
        if not got:
            idle += 1
            continue
        idle = 0
        eid = got[0].episode.episode_id
        manager.update_state(eid, "uploaded", fields={"youtube.video_id": f"vid{eid[-6:]}"[:11]})


@pytest.mark.slow
def test_four_processes_never_exceed_the_limits(repo: Path) -> None:
    manager = limited(repo, LIMITS.replace("per_day: 3", "per_day: 6"))
    to_converted(manager, ids_of(manager, 9))
    context = multiprocessing.get_context("fork" if sys.platform != "win32" else "spawn")
    procs = [context.Process(target=_uploader, args=(str(repo), n)) for n in range(4)]
    for proc in procs:
        proc.start()
    for proc in procs:
        proc.join()
        assert proc.exitcode == 0
    most, entries = replay_uploading(repo)
    assert 1 <= most <= 2  # never exceeded
    assert entries == 6
    counts = manager.count_by_stage()
    assert (counts["uploaded"], counts["converted"], counts["uploading"]) == (6, 3, 0)
