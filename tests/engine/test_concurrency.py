"""Real processes at once: nothing lost, nothing illegal, one winner per step."""

from __future__ import annotations

import subprocess
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import pytest

from hystate.manager import StateManager
from tests.conftest import HYSTATE, commits, full_walk, git, holder_lease

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
        lease = holder_lease(repo, episode_id)  # leaving an active stage: the holder's token
        procs = [
            subprocess.Popen(
                [*HYSTATE, "advance", episode_id, stage, "--worker", f"w{n}", *extra, *lease],
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


def _many_episodes(repo: Path, start: int, stop: int) -> list[str]:
    from hystate.engine.catalog import Record

    manager = StateManager(cwd=repo, worker="setup")
    numbers = range(start, stop)
    records = [
        Record(f"conc-{n:04d}", f"Concurrency episode {n}", f"20{10 + n % 9}-03-03")
        for n in numbers
    ]
    return manager.discover(records).added


def walk_many(args: tuple[str, list[str]]) -> int:
    root, ids = args
    manager = StateManager(cwd=root)
    done = 0
    for eid in ids:
        full_walk(manager, eid)
        done += 8
    return done


def claim_and_work(args: tuple[str, int, int]) -> list[tuple[str, str, str]]:
    """A worker on the shared pool: claim whatever stage has work, finish it; 100 transitions."""
    root, number, budget = args
    manager = StateManager(cwd=root, worker=f"shared-{number}")
    finish = {"downloading": ("downloaded", {"files.audio_file": "a.mp3"}),
              "converting": ("converted", {"files.video_file": "v.mp4"}),
              "uploading": ("uploaded", {"youtube.video_id": "abcDEF12345"})}  # fmt: skip
    claims: list[tuple[str, str, str]] = []
    made = idle = 0
    while made < budget and idle < 20:
        moved = False
        for stage in ("uploading", "converting", "downloading"):
            for result in manager.claim_next(stage, 1):
                episode = result.episode
                attempt = str(
                    episode.attempts[
                        {
                            "downloading": "download",
                            "converting": "conversion",
                            "uploading": "upload",
                        }[stage]
                    ]
                )
                claims.append((episode.episode_id, stage, attempt))
                to, fields = finish[stage]
                manager.update_state(episode.episode_id, to, fields=fields)
                made += 2
                moved = True
        idle = 0 if moved else idle + 1
    return claims


@pytest.mark.slow
def test_eight_processes_a_hundred_transitions_each(repo: Path) -> None:
    """8 x 100 transitions: on distinct episodes (13 each, walked to published), then on a
    shared pool that all 8 claim from at once. No lost commit, no illegal state, no episode
    claimed twice for the same attempt."""
    ids = _many_episodes(repo, 0, 104)
    before = len(commits(repo))
    with ProcessPoolExecutor(max_workers=8) as pool:
        done = sum(pool.map(walk_many, [(str(repo), ids[n::8]) for n in range(8)]))
    assert done == 832 and len(commits(repo)) == before + 832
    shared = _many_episodes(repo, 104, 254)  # 150 more: enough work for 8 x 100 transitions
    before = len(commits(repo))
    with ProcessPoolExecutor(max_workers=8) as pool:
        claims = [
            c for r in pool.map(claim_and_work, [(str(repo), n, 100) for n in range(8)]) for c in r
        ]
    assert len(claims) == len(set(claims)), "an episode was claimed twice for one attempt"
    # 8 workers x at least 50 claims (a pass may end a claim or two over), each claim and its
    # finish two transitions: at least 800
    assert 400 <= len(claims) <= 400 + 8 * 3
    assert len(commits(repo)) == before + 2 * len(claims)
    manager = StateManager(cwd=repo)
    for eid in shared:
        history = manager.get_episode_state(eid).history
        stages = [h["to"] for h in history]
        assert (
            stages
            == [
                "discovered",
                "downloading",
                "downloaded",
                "converting",
                "converted",
                "uploading",
                "uploaded",
            ][: len(stages)]
        )
    assert_repo_sound(repo, manager)
