"""What a claim costs in git processes (docs/SYNC.md "What a claim costs"): packed objects read
through one long-lived ``git cat-file`` per object store, refs listed from their files, and the
nodes pushing the branch in turn (``ticket_claims._due``). Real repositories, a real ``git
daemon``, real processes."""

from __future__ import annotations

import os
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from hystate.cluster import ticket_claims, tickets
from hystate.core.errors import GitError
from hystate.git import GitRepo
from hystate.manager import StateManager
from tests.conftest import git, run_hystate
from tests.harness.sync import GitServer, clone_nodes, served, server_tickets

CONFIG = {
    "sync": {"remote": "origin", "claims": "refs"},
    "recovery": {"auto_resume": False},
}


def commit_file(repo: Path, name: str, text: str) -> str:
    (repo / name).write_text(text)
    git(repo, "add", name)
    git(repo, "-c", "user.name=t", "-c", "user.email=t@t", "commit", "-qm", name)
    return git(repo, "rev-parse", f"HEAD:{name}").strip()


@pytest.fixture
def packed(tmp_path: Path) -> Path:
    repo = tmp_path / "repo"
    repo.mkdir()
    git(repo, "init", "-q", "-b", "main")
    return repo


def test_packed_objects_are_read_by_one_process_that_finds_packs_made_after_it(
    packed: Path,
) -> None:
    first = commit_file(packed, "a.txt", "one\n")
    git(packed, "gc", "-q")
    store = GitRepo.discover(packed).objects
    assert store.read(bytes.fromhex(first)) == (b"blob", b"one\n")
    proc = store._catfile._proc
    assert proc is not None and proc.poll() is None
    second = commit_file(packed, "b.txt", "two\n")
    git(packed, "gc", "-q", "--prune=now")  # a new pack; the one the process opened is gone
    assert not (packed / ".git" / "objects" / second[:2] / second[2:]).exists()
    assert store.read(bytes.fromhex(second)) == (b"blob", b"two\n")
    assert store.read(bytes.fromhex(first)) == (b"blob", b"one\n")
    assert store._catfile._proc is proc  # the same process answered all three
    with pytest.raises(GitError, match="missing"):
        store.read(bytes.fromhex("1" * 40))
    assert store._catfile._proc is proc  # ("missing" is an answer, not a failure)


def test_a_forked_child_starts_its_own_reader_and_a_dead_one_is_replaced(packed: Path) -> None:
    sha = bytes.fromhex(commit_file(packed, "a.txt", "one\n"))
    git(packed, "gc", "-q")
    store = GitRepo.discover(packed).objects
    assert store.read(sha)[1] == b"one\n"
    parent = store._catfile._proc
    assert parent is not None
    pid = os.fork()
    if pid == 0:  # (the parent's pipes are not this process's to use)
        ok = store.read(sha)[1] == b"one\n" and store._catfile._proc is not parent
        os._exit(0 if ok else 1)
    assert os.waitpid(pid, 0)[1] == 0
    assert store._catfile._proc is parent and parent.poll() is None
    parent.kill()
    parent.wait()
    assert store.read(sha)[1] == b"one\n"  # (a failed read falls back, the next one restarts)
    assert store.read(sha)[1] == b"one\n"
    assert store._catfile._proc is not None and store._catfile._proc is not parent
    store._catfile.close()
    assert parent.returncode is not None


def test_refs_listed_from_files_are_what_git_for_each_ref_lists(packed: Path) -> None:
    commit_file(packed, "a.txt", "one\n")
    head = git(packed, "rev-parse", "HEAD").strip()
    for ref in ("refs/hystate/a/x", "refs/hystate/a/y/z", "refs/hystate/ab", "refs/hystate/ax"):
        git(packed, "update-ref", ref, head)
    git(packed, "pack-refs", "--all")
    git(packed, "update-ref", "refs/hystate/a/w", head)  # loose beside packed
    git(packed, "symbolic-ref", "refs/hystate/a/sym", "refs/hystate/a/x")
    (packed / ".git" / "refs" / "hystate" / "a" / "broken").write_text("")
    (packed / ".git" / "refs" / "hystate" / "a" / "q.lock").write_text(head + "\n")
    refs = GitRepo.discover(packed).refs
    for prefix in ("refs/hystate/a/", "refs/hystate/a", "refs/hystate/a/x", "refs/hystate/", "x"):
        out = subprocess.run(
            ["git", "for-each-ref", "--format=%(refname) %(objectname)", prefix],
            cwd=packed,
            capture_output=True,
            text=True,
            check=True,
        ).stdout
        assert refs.under(prefix) == [tuple(line.split()) for line in out.splitlines()], prefix


@pytest.fixture
def two(tmp_path: Path) -> Iterator[tuple[GitServer, list[Path]]]:
    with served(tmp_path, CONFIG, 12) as server:
        nodes = clone_nodes(server, tmp_path, 2)
        for node in (*nodes, nodes[0]):  # each publishes its lease table, both know the other
            done = run_hystate(node, "sync")
            assert done.returncode == 0, done.stderr
        yield server, nodes


def clock(monkeypatch: pytest.MonkeyPatch, shift: float) -> None:
    """``ticket_claims`` sees the time ``shift`` seconds ahead (the moves' ages with it)."""
    real = ticket_claims.time.time
    monkeypatch.setattr(ticket_claims.time, "time", lambda: real() + shift)


def tip(server: GitServer) -> str:
    return git(server.bare, "rev-parse", "main").strip()


@pytest.mark.parametrize(("on_duty", "waited", "pushed"), [
    (True, 1, True),  # its slot, its move old enough: it pushes the branch
    (False, 1, False),  # another node's slot: that node pushes it
    (False, 3, True),  # every node's turn and one more went by: the node on duty went away
])  # fmt: skip
def test_nodes_push_the_branch_in_turn(
    two: tuple[GitServer, list[Path]],
    monkeypatch: pytest.MonkeyPatch,
    on_duty: bool,
    waited: int,
    pushed: bool,
) -> None:
    server, (a, _) = two
    slot = 1000.0
    monkeypatch.setattr(tickets, "FLUSH_AFTER", slot)
    nodes = sorted(["n0", "n1"])
    place = nodes.index("n0")
    manager = StateManager(cwd=a, worker="wa")
    first = manager.claim_next("downloading", 1)  # ticketed; the branch does not follow yet
    before = tip(server)
    assert first and first[0].episode.episode_id in server_tickets(server)
    # the oldest move off the branch has waited ``waited`` slots and a bit, and the slot is
    # this node's or the other's
    now = time.time() + waited * slot + 1
    turn = int(now // slot) % len(nodes)
    if (turn == place) != on_duty:
        now += slot
    clock(monkeypatch, now - time.time())
    second = manager.claim_next("downloading", 1)
    assert second and second[0].episode.episode_id in server_tickets(server)
    assert (tip(server) != before) == pushed
    if pushed:  # both claims are on the branch
        log = git(server.bare, "log", "--format=%B", "main")
        for got in (first, second):
            assert f"Hystate-Lease: {got[0].lease}" in log


@pytest.mark.parametrize(("waited", "pushed"), [(1.2, False), (1.6, True)])
def test_a_node_that_knows_no_other_waits_its_own_part_of_one_more_slot(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, waited: float, pushed: bool
) -> None:
    slot = 1000.0
    monkeypatch.setattr(tickets, "FLUSH_AFTER", slot)
    monkeypatch.setattr(ticket_claims, "_PHASE", 0.5)
    with served(tmp_path, CONFIG, 12) as server:
        (a,) = clone_nodes(server, tmp_path, 1)
        manager = StateManager(cwd=a, worker="wa")
        assert manager.claim_next("downloading", 1)
        before = tip(server)
        clock(monkeypatch, waited * slot)
        assert manager.claim_next("downloading", 1)
        assert (tip(server) != before) == pushed


def test_a_forked_child_that_lives_on_does_not_keep_the_parents_reader_open(packed: Path) -> None:
    """The reader's pipes are inherited by a fork (the warm server's children): the parent
    closing its store must see its reader end, not wait on it and kill it (5 s, under the
    store's lock) because a child still holds the write end of the reader's stdin."""
    sha = bytes.fromhex(commit_file(packed, "a.txt", "one\n"))
    git(packed, "gc", "-q")
    store = GitRepo.discover(packed).objects
    assert store.read(sha)[1] == b"one\n"
    reader = store._catfile._proc
    assert reader is not None
    hold, release = os.pipe()
    pid = os.fork()
    if pid == 0:  # a child that lives on (until the parent lets it go) and reads nothing
        os.close(release)
        os.read(hold, 1)
        os._exit(0)
    os.close(hold)
    try:
        store._catfile.close()
        assert reader.returncode == 0  # it saw its stdin end: not killed after a wait
    finally:
        os.close(release)
        os.waitpid(pid, 0)
