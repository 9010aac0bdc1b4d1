"""Real processes at once: nothing lost, nothing illegal, one winner per step."""

from __future__ import annotations

import subprocess
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import pytest

from hystate.manager import StateManager
from tests.conftest import HYSTATE, commits, full_walk, git

STEPS = [
    ("downloading", []),
    ("downloaded", ["--set", "files.audio_file=audio/x.mp3"]),
    ("converting", []),
    ("converted", ["--set", "files.video_file=video/x.mp4"]),
    ("uploading", []),
    ("uploaded", ["--set", "youtube.video_id=abcDEF12345"]),
    ("scheduled", ["--set", "youtube.scheduled_date=2027-01-01T18:00:00+00:00"]),
    ("published", ["--set", "youtube.published_date=2027-01-01T18:00:00+00:00"]),
]


def walk_one(args: tuple[str, str]) -> int:
    root, episode_id = args
    full_walk(StateManager(cwd=root, worker=f"w-{episode_id}"), episode_id)
    return 8


def assert_repo_sound(repo: Path, manager: StateManager) -> None:
    assert manager.validate() == []
    assert git(repo, "status", "--porcelain") == ""
    assert git(repo, "fsck", "--strict", "--no-progress") == ""


@pytest.mark.slow
def test_eight_processes_on_different_episodes_lose_no_commit(
    repo: Path, manager: StateManager
) -> None:
    ids = sorted(p.stem for p in manager.store.iter_paths())[:8]
    before = len(commits(repo))
    with ProcessPoolExecutor(max_workers=8) as pool:
        done = sum(pool.map(walk_one, [(str(repo), i) for i in ids]))
    assert done == 64
    assert len(commits(repo)) == before + 64
    for sha in commits(repo)[:64]:
        assert len(git(repo, "diff-tree", "--no-commit-id", "--name-only", "-r", sha).split()) == 1
    for eid in ids:
        state = manager.get_episode_state(eid)
        assert state.stage.value == "published" and len(state.history) == 9
        log = git(repo, "log", "--format=%H", f"--grep=Hystate-Episode: {eid}").split()
        assert len(log) == 8
    assert_repo_sound(repo, manager)


@pytest.mark.slow
def test_eight_processes_racing_on_one_episode_make_one_transition_per_step(
    repo: Path, manager: StateManager, episode_id: str
) -> None:
    before = len(commits(repo))
    for stage, extra in STEPS:
        procs = [
            subprocess.Popen(
                [*HYSTATE, "advance", episode_id, stage, "--worker", f"w{n}", *extra],
                cwd=repo,
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                text=True,
            )
            for n in range(8)
        ]
        results = [(p.wait(timeout=120), p.stdout.read(), p.stderr.read()) for p in procs]  # type: ignore[union-attr]
        winners = [r for r in results if "->" in r[1]]
        assert len(winners) == 1, results
        for code, out, err in results:
            if (code, out, err) in winners:
                continue
            # losers either found it already there with the same data (no-op) or were refused
            assert (code == 0 and "nothing to do" in out) or (code == 3 and "already" in err), (
                code,
                out,
                err,
            )
    assert len(commits(repo)) == before + len(STEPS)
    history = manager.get_episode_state(episode_id).history
    assert [h["to"] for h in history[1:]] == [s for s, _ in STEPS]
    assert_repo_sound(repo, manager)
