"""Fencing (SPEC 3): a lease token issued on entering an active stage, required to leave it or
renew it; anyone else refused with exit 3 naming the holder; a person's --force recorded."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from hystate.core.errors import IllegalTransition, UsageError
from hystate.engine.fencing import LeaseRefused
from hystate.manager import StateManager
from tests.conftest import git, run_hystate

AUDIO = ("--set", "files.audio_file=audio/x.mp3", "--set", "metrics.audio_size=1")


def _claim(repo: Path, worker: str) -> tuple[str, str]:
    proc = run_hystate(repo, "next", "downloading", "--claim", "--worker", worker, "--json")
    assert proc.returncode == 0, proc.stderr
    (claimed,) = json.loads(proc.stdout)
    return claimed["episode_id"], claimed["lease"]


def test_a_claim_prints_a_token_that_only_grows(repo: Path) -> None:
    eid, token = _claim(repo, "dl-1")
    assert token.startswith("1.")
    doc = StateManager(cwd=repo).episode(eid)
    assert doc.history[-1]["lease"] == token  # recorded in the file
    assert f"Hystate-Lease: {token}" in git(repo, "log", "-1", "--format=%B")
    proc = run_hystate(repo, "fail", eid, "--error", "HTTP 503", "--lease", token)
    assert proc.returncode == 0, proc.stderr
    proc = run_hystate(repo, "advance", eid, "downloading", "--force", "--worker", "dl-2")
    assert proc.returncode == 0, proc.stderr
    second = proc.stdout.split("lease ")[-1].strip()
    assert second.startswith("2.") and second != token


def test_another_worker_is_refused_naming_the_holder(repo: Path) -> None:
    eid, token = _claim(repo, "dl-1")
    before = git(repo, "rev-parse", "HEAD")
    proc = run_hystate(repo, "advance", eid, "downloaded", *AUDIO, "--worker", "dl-2")
    assert proc.returncode == 3
    assert "held by dl-1" in proc.stderr and token in proc.stderr
    assert "Traceback" not in proc.stderr
    proc = run_hystate(repo, "heartbeat", eid, "--worker", "dl-2")
    assert proc.returncode == 3 and "held by dl-1" in proc.stderr
    proc = run_hystate(repo, "fail", eid, "--error", "x", "--lease", "7.0badc0de")
    assert proc.returncode == 3 and "lease 7.0badc0de is not it" in proc.stderr
    assert git(repo, "rev-parse", "HEAD") == before  # nothing committed
    # the holder, its token from the environment
    proc = subprocess_env(repo, token, "heartbeat", eid)
    assert proc.returncode == 0, proc.stderr
    proc = subprocess_env(repo, token, "advance", eid, "downloaded", *AUDIO)
    assert proc.returncode == 0, proc.stderr
    assert StateManager(cwd=repo).episode(eid).history[-1]["lease"] == token


def subprocess_env(repo: Path, token: str, *args: str) -> object:
    import os
    import subprocess

    from tests.conftest import HYSTATE

    env = {**os.environ, "HYSTATE_LEASE": token}
    return subprocess.run(
        [*HYSTATE, *args], cwd=repo, capture_output=True, text=True, env=env, check=False
    )


def test_a_worker_whose_episode_was_taken_over_is_refused(repo: Path) -> None:
    """The issue's first story: A claims, a person finishes it with --force; A's own finish
    (even the very same step) and A's heartbeat are refused, naming what happened."""
    eid, token = _claim(repo, "A")
    proc = run_hystate(repo, "advance", eid, "downloaded", *AUDIO, "--worker", "B", "--force")
    assert proc.returncode == 0, proc.stderr
    for args in (
        ("advance", eid, "downloaded", *AUDIO, "--worker", "A"),  # the same step: no no-op
        ("fail", eid, "--error", "x", "--worker", "A"),
        ("heartbeat", eid, "--worker", "A"),
    ):
        proc = run_hystate(repo, *args, "--lease", token)
        assert proc.returncode == 3, (args, proc.stdout, proc.stderr)
        assert "downloading -> downloaded by B" in proc.stderr, proc.stderr
    # API: the manager that claimed holds the token; it is refused the same way
    a = StateManager(cwd=repo, worker="A2")
    (claim,) = a.claim_next("downloading", 1)
    other = claim.episode.episode_id
    StateManager(cwd=repo, worker="B").fail(other, "taken over", take_over=True)
    with pytest.raises(LeaseRefused, match="taken over"):
        a.update_state(other, "downloaded", fields={"files.audio_file": "a.mp3"})
    with pytest.raises(IllegalTransition, match="ended"):
        a.heartbeat(other)


def test_a_persons_force_is_recorded(repo: Path) -> None:
    eid, token = _claim(repo, "dl-1")
    proc = run_hystate(
        repo, "fail", eid, "--error", "stuck: restarting", "--force", "--worker", "ops"
    )
    assert proc.returncode == 0, proc.stderr
    entry = StateManager(cwd=repo).episode(eid).history[-1]
    assert entry["took_over"] == "dl-1" and entry["by"] == "ops" and "lease" not in entry
    body = git(repo, "log", "-1", "--format=%B")
    assert "Hystate-Took-Over: dl-1" in body
    trailers = git(repo, "log", "-1", "--format=%(trailers:key=Hystate-Took-Over,valueonly)")
    assert trailers.strip() == "dl-1"
    proc = run_hystate(repo, "history", eid, "--json")
    assert proc.returncode == 0 and json.loads(proc.stdout)[-1]["took_over"] == "dl-1"
    proc = run_hystate(repo, "heartbeat", eid, "--lease", token)  # the old holder
    assert proc.returncode == 3 and "taken over" in proc.stderr


def test_the_lease_object_carries_the_token(manager: StateManager) -> None:
    (claim,) = manager.claim_next("downloading", 1)
    eid = claim.episode.episode_id
    other = StateManager(cwd=manager.repo.root, worker="someone-else")
    with pytest.raises(LeaseRefused, match="held by test-worker"):
        other.update_state(eid, "downloaded", fields={"files.audio_file": "a.mp3"})
    with other.lease(eid, token=claim.lease) as held:
        assert held.lease is not None and held.lease.token == claim.lease
        result = held.advance("downloaded", fields={"files.audio_file": "a.mp3"})
    assert result.episode.history[-1]["lease"] == claim.lease
    # a token left set for another episode does not stop a move that needs none
    (second,) = manager.claim_next("downloading", 1)
    manager.update_state(eid, "converting", lease=second.lease)


def test_a_token_of_the_wrong_shape_is_refused(manager: StateManager, episode_id: str) -> None:
    manager.update_state(episode_id, "downloading")
    with pytest.raises(UsageError, match="not one hystate issued"):
        manager.fail(episode_id, "x", lease="../../etc")


@pytest.mark.parametrize("seconds", ["nan", "inf", "0", "-5"])
def test_a_heartbeat_length_out_of_range_is_a_usage_error(repo: Path, seconds: str) -> None:
    claimed = run_hystate(repo, "next", "downloading", "--claim", "--worker", "w", "--json")
    (held,) = json.loads(claimed.stdout)
    done = run_hystate(
        repo, "heartbeat", held["episode_id"], "--lease", held["lease"], "--seconds", seconds
    )
    assert done.returncode == 2, done.stderr
