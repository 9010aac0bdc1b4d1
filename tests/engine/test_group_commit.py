"""Group commit with real processes (hystate.git.group): while the repository lock is held the
workers' requests queue up; whoever takes the lock next commits all of them as a chain, one
commit per transition. Leaders and followers killed with -9 at set points (a git hook kills the
leader, as git runs it from inside the commit) lose nothing and double nothing."""

from __future__ import annotations

import os
import signal
import subprocess
import time
from pathlib import Path

import pytest

from hystate.core.locks import StateLock
from hystate.engine import grouping
from hystate.manager import StateManager
from tests.conftest import HYSTATE, commits, git, run_hystate

N = 4
PATIENT = "state_management:\n  locks:\n    timeout: 600\n"


def patient(repo: Path) -> StateManager:
    """Workers that wait as long as the test holds the repository lock (a loaded machine)."""
    (repo / "hystate.yaml").write_text(PATIENT)
    git(repo, "add", "hystate.yaml")
    git(repo, "-c", "user.name=t", "-c", "user.email=t@t", "commit", "-q", "-m", "patient")
    return StateManager(cwd=repo, worker="test")


def hold(manager: StateManager) -> StateLock:
    lock = StateLock(manager.repo_lock().path, timeout=60)
    lock.acquire()
    return lock


def start(repo: Path, ids: list[str]) -> list[subprocess.Popen[str]]:
    return [
        subprocess.Popen(
            [*HYSTATE, "advance", eid, "downloading", "--worker", f"w{n}"],
            cwd=repo,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for n, eid in enumerate(ids)
    ]


def wait_queued(manager: StateManager, count: int) -> None:
    """Until ``count`` requests wait in the queue (a condition, not a duration)."""
    queue = grouping.queue_of(manager)
    deadline = time.monotonic() + 600
    while len(queue.listing()[".req"]) < count:
        assert time.monotonic() < deadline, f"{count} requests never queued"
        time.sleep(0.05)


def finish(procs: list[subprocess.Popen[str]]) -> list[tuple[int, str, str]]:
    return [(p.wait(timeout=600), *p.communicate()) for p in procs]


def hook(repo: Path, state: str) -> Path:
    """A reference-transaction hook that kills its caller (the leader) with -9 the first time
    it runs in ``state``; and a log of every run."""
    marker = repo / ".git" / "killed"
    path = repo / ".git" / "hooks" / "reference-transaction"
    path.parent.mkdir(exist_ok=True)
    path.write_text(
        "#!/bin/sh\n"
        f'echo "$1" >> "{repo}/.git/transactions"\n'
        f'if [ "$1" = "{state}" ] && [ ! -e "{marker}" ]; then\n'
        f'  touch "{marker}"; kill -9 $PPID\n'
        "fi\n"
    )
    path.chmod(0o755)
    return marker


def episode_commits(repo: Path, manager: StateManager, eid: str) -> int:
    rel = manager.repo.relpath(manager.path_of(eid))
    return len(git(repo, "log", "--format=%H", "--", rel).split())


def assert_sound(repo: Path) -> None:
    assert git(repo, "status", "--porcelain") == ""
    assert git(repo, "diff", "--cached", "--name-only") == ""
    assert (
        git(repo, "fsck", "--strict", "--no-progress", "--no-dangling") == ""
    )  # a killed group leaves unreferenced commits, as a killed git commit does


def assert_one_file_each(repo: Path, shas: list[str]) -> None:
    for sha in shas:
        assert len(git(repo, "diff-tree", "--no-commit-id", "--name-only", "-r", sha).split()) == 1
        assert len(git(repo, "rev-list", "--parents", "-n", "1", sha).split()) == 2  # one parent


def setup(repo: Path) -> tuple[StateManager, list[str], dict[str, int]]:
    manager = patient(repo)
    ids = sorted(p.stem for p in manager.store.iter_paths())[:N]
    return manager, ids, {eid: episode_commits(repo, manager, eid) for eid in ids}


def test_queued_requests_land_as_one_chain_with_one_head_move(repo: Path) -> None:
    manager, ids, before = setup(repo)
    hook(repo, "never")
    reflog = len(git(repo, "reflog", "show", "HEAD").splitlines())
    head = commits(repo)
    lock = hold(manager)
    procs = start(repo, ids)
    wait_queued(manager, N)
    lock.release()
    results = finish(procs)
    assert [code for code, _, _ in results] == [0] * N, results
    new = commits(repo)[:N]
    assert commits(repo)[N:] == head  # a chain on the old tip, nothing else
    assert_one_file_each(repo, new)
    for eid in ids:
        assert episode_commits(repo, manager, eid) == before[eid] + 1
        assert manager.get_episode_state(eid).stage.value == "downloading"
    # one HEAD update for the group (one reference transaction), one reflog line per commit
    assert (repo / ".git" / "transactions").read_text().split() == ["prepared", "committed"]
    assert len(git(repo, "reflog", "show", "HEAD").splitlines()) == reflog + N
    assert_sound(repo)
    assert not grouping.queue_of(manager).listing()[".req"]


@pytest.mark.parametrize("state", ["prepared", "committed"])
def test_a_leader_killed_mid_group_loses_and_doubles_nothing(repo: Path, state: str) -> None:
    """``prepared``: killed before HEAD moves (nothing of the group landed; the others are
    committed by the next leader). ``committed``: killed after HEAD moved, before the index was
    renamed into place (the group landed; the next leader finds it and mends the index)."""
    manager, ids, before = setup(repo)
    marker = hook(repo, state)
    head = commits(repo)
    lock = hold(manager)
    procs = start(repo, ids)
    wait_queued(manager, N)
    lock.release()
    results = finish(procs)
    assert marker.exists()
    killed = [eid for eid, (code, _, _) in zip(ids, results, strict=True) if code == -9]
    assert len(killed) == 1, results
    for eid, (code, out, err) in zip(ids, results, strict=True):
        if eid not in killed:
            assert code == 0, (out, err)
            assert episode_commits(repo, manager, eid) == before[eid] + 1
    if state == "committed":  # the whole group landed, the index is mended: nothing for fsck
        assert episode_commits(repo, manager, killed[0]) == before[killed[0]] + 1
        assert git(repo, "status", "--porcelain") == ""
    repaired = run_hystate(repo, "fsck", "--repair")
    assert repaired.returncode in (0, 1), repaired.stderr
    assert run_hystate(repo, "fsck").returncode == 0
    assert episode_commits(repo, manager, killed[0]) in (before[killed[0]], before[killed[0]] + 1)
    now = commits(repo)
    assert_one_file_each(repo, now[: len(now) - len(head)])
    assert_sound(repo)


def test_a_follower_killed_while_waiting_is_never_committed_for(repo: Path) -> None:
    manager, ids, before = setup(repo)
    lock = hold(manager)
    procs = start(repo, ids)
    wait_queued(manager, N)
    procs[0].kill()
    assert procs[0].wait(timeout=600) == -9
    lock.release()
    results = finish(procs[1:])
    assert [code for code, _, _ in results] == [0] * (N - 1), results
    for eid in ids[1:]:
        assert episode_commits(repo, manager, eid) == before[eid] + 1
    # its request was dropped: its file is written but not committed, as when a worker dies
    # between the write and the commit; fsck --repair commits it as the transition it is
    assert episode_commits(repo, manager, ids[0]) == before[ids[0]]
    assert grouping.queue_of(manager).listing()[".req"] == []
    repaired = run_hystate(repo, "fsck", "--repair")
    assert repaired.returncode in (0, 1), repaired.stderr
    assert episode_commits(repo, manager, ids[0]) == before[ids[0]] + 1
    assert manager.get_episode_state(ids[0]).stage.value == "downloading"
    assert run_hystate(repo, "fsck").returncode == 0
    assert_sound(repo)


def test_an_interrupted_follower_withdraws_its_request_and_its_write(repo: Path) -> None:
    manager, ids, before = setup(repo)
    lock = hold(manager)
    procs = start(repo, ids[:2])
    wait_queued(manager, 2)
    procs[0].send_signal(signal.SIGINT)
    code, _, _ = finish(procs[:1])[0]
    assert code != 0
    assert len(grouping.queue_of(manager).listing()[".req"]) == 1  # the other one's
    rel = manager.repo.relpath(manager.path_of(ids[0]))
    assert git(repo, "status", "--porcelain", "--", rel) == ""  # its write undone
    lock.release()
    assert finish(procs[1:])[0][0] == 0
    assert episode_commits(repo, manager, ids[0]) == before[ids[0]]
    assert episode_commits(repo, manager, ids[1]) == before[ids[1]] + 1
    assert_sound(repo)
    assert os.listdir(grouping.queue_of(manager).dir) == []


def test_fsck_repair_finds_the_orphan_of_a_leader_killed_after_head_moved(repo: Path) -> None:
    """The leader and the follower it committed for are both killed (no next leader): fsck
    names the claimed request and --repair finds it landed (committed once), mends the index."""
    manager, ids, before = setup(repo)
    hook(repo, "committed")
    lock = hold(manager)
    (follower,) = start(repo, ids[:1])
    wait_queued(manager, 1)
    follower.send_signal(signal.SIGSTOP)  # it waits, and will never lead
    lock.release()
    ((code, _, _),) = finish(start(repo, ids[1:2]))  # leads both, killed once HEAD moved
    assert code == -9
    follower.kill()
    assert follower.wait(timeout=600) == -9
    for eid in ids[:2]:
        assert episode_commits(repo, manager, eid) == before[eid] + 1  # HEAD moved
    assert grouping.queue_of(manager).listing()[".claimed"]
    told = run_hystate(repo, "fsck", "--json")
    assert told.returncode == 1 and "group-commit" in told.stdout, told.stdout
    repaired = run_hystate(repo, "fsck", "--repair")
    assert repaired.returncode in (0, 1), repaired.stderr
    assert run_hystate(repo, "fsck").returncode == 0
    for eid in ids[:2]:
        assert episode_commits(repo, manager, eid) == before[eid] + 1
        assert manager.get_episode_state(eid).stage.value == "downloading"
    assert_sound(repo)
    assert os.listdir(grouping.queue_of(manager).dir) == []


def test_group_commit_turned_off_moves_head_once_per_commit(repo: Path) -> None:
    """``git config hystate.groupCommit false``: every transition commits under the lock itself
    (one HEAD move each, nothing queued)."""
    manager, ids, before = setup(repo)
    git(repo, "config", "hystate.groupCommit", "false")
    hook(repo, "never")
    results = finish(start(repo, ids))
    assert [code for code, _, _ in results] == [0] * N, results
    for eid in ids:
        assert episode_commits(repo, manager, eid) == before[eid] + 1
    assert (repo / ".git" / "transactions").read_text().split() == ["prepared", "committed"] * N
    assert not grouping.queue_of(manager).dir.exists()
    assert_sound(repo)
