"""Acknowledged means kept (SPEC 11, issue 24): under ``sync.push: each`` a transition returns
once it is on the remote, or raises when it was not kept; under ``batch`` it says pending, and
a pending transition a later sync drops is told to its worker (API: raised at its next call;
CLI: printed at its next command; ``sync --json``: listed with the worker)."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest

from hystate import manager as facade
from hystate.cluster.acks import TransitionDropped
from hystate.manager import StateManager
from tests.conftest import git, run_hystate
from tests.harness.sync import GitServer, clone_nodes, served

AUDIO = {"files.audio_file": "a.mp3"}


def _nodes(tmp_path: Path, push: str) -> Iterator[tuple[GitServer, list[Path]]]:
    config = {"sync": {"remote": "origin", "push": push}, "recovery": {"retry_delay": 0}}
    with served(tmp_path, config, 4) as srv:
        yield srv, clone_nodes(srv, tmp_path)


@pytest.fixture
def each(tmp_path: Path) -> Iterator[tuple[GitServer, list[Path]]]:
    yield from _nodes(tmp_path, "each")


@pytest.fixture
def batch(tmp_path: Path) -> Iterator[tuple[GitServer, list[Path]]]:
    yield from _nodes(tmp_path, "batch")


def test_each_acknowledges_on_the_remote_or_raises(each: tuple[GitServer, list[Path]]) -> None:
    server, (a_path, b_path) = each
    a = StateManager(cwd=a_path, worker="wa")
    (claim,) = a.claim_next("downloading", 1)
    eid = claim.episode.episode_id
    done = a.update_state(eid, "downloaded", fields=AUDIO)
    assert done.pending is None  # on the remote:
    assert git(server.bare, "rev-parse", "main").strip() == git(a_path, "rev-parse", "HEAD").strip()
    # b, not synced since, enters an episode that a has skipped meanwhile
    b = StateManager(cwd=b_path, worker="wb")
    b.subscribers.before.remove(facade._before_transition)  # b decides on what it saw
    other = sorted(p.stem for p in b.store.iter_paths() if p.stem != eid)[0]
    a.update_state(other, "skipped", message="first")
    with pytest.raises(TransitionDropped, match="not kept"):
        b.update_state(other, "downloading")
    assert b.episode(other).stage.value == "skipped"  # the remote's version: nothing held


def test_batch_says_pending_and_tells_a_dropped_step(batch: tuple[GitServer, list[Path]]) -> None:
    server, (a_path, b_path) = batch
    a = StateManager(cwd=a_path, worker="wa")
    (claim,) = a.claim_next("downloading", 1)
    eid = claim.episode.episode_id
    # the lease is recovered on node b (a person's take-over there) and that reaches the remote
    b = StateManager(cwd=b_path, worker="ops")
    run_hystate(b_path, "sync")
    b.fail(eid, "worker lost (by hand)", take_over=True)
    assert run_hystate(b_path, "sync").returncode == 0
    # a, not synced, finishes it: recorded locally, and said so
    done = a.update_state(eid, "downloaded", fields=AUDIO)
    assert done.pending is not None and "next sync" in done.pending
    proc = run_hystate(a_path, "sync", "--json")  # another process of node a drops it
    (dropped,) = json.loads(proc.stdout)["dropped"]
    assert (dropped["episode_id"], dropped["to"], dropped["worker"]) == (eid, "downloaded", "wa")
    # the API worker is told at its next call, whatever it is
    with pytest.raises(TransitionDropped, match=f"{eid}: downloading -> downloaded by wa"):
        a.claim_next("downloading", 1)
    assert a.claim_next("downloading", 1)  # told once; then it goes on
    # a CLI worker is told at its next command
    c = StateManager(cwd=a_path, worker="cli-w")
    (mine,) = c.claim_next("downloading", 1)
    cid = mine.episode.episode_id
    run_hystate(b_path, "sync")
    StateManager(cwd=b_path, worker="ops").fail(cid, "taken", take_over=True)
    assert run_hystate(b_path, "sync").returncode == 0
    proc = run_hystate(
        a_path, "advance", cid, "downloaded", "--set", "files.audio_file=a.mp3",
        "--worker", "cli-w", "--lease", str(mine.lease),
    )  # fmt: skip
    assert proc.returncode == 0 and "pending" in proc.stderr, proc.stderr
    assert run_hystate(a_path, "sync").returncode == 0
    proc = run_hystate(a_path, "skip", cid, "--reason", "x", "--worker", "cli-w")
    assert f"{cid}: downloading -> downloaded by cli-w was dropped" in proc.stderr, proc.stderr
    assert server.tip()
