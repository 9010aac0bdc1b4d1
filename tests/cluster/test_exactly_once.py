"""Exactly once across 3 nodes (issue 24), as a hypothesis state machine against a real
``git daemon``: random claims, completions, take-overs (a lease expired and recovered
elsewhere, or a person's ``--force``), killed workers (their tokens forgotten) and syncs;
after every step the invariants hold:

- every transition acknowledged as on the remote (``sync.push: each``: returned, not pending)
  is in the remote's history;
- no episode is completed twice within one attempt, and every step that left an active
  stage was made under that attempt's lease token or recorded as a take-over;
- a worker whose episode was taken over is refused (never "succeeds" at its old step).
"""

from __future__ import annotations

import shutil
import tempfile
from itertools import pairwise
from pathlib import Path

import pytest
import yaml
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, precondition, rule

from hystate.core.errors import HystateError, IllegalTransition
from hystate.manager import StateManager
from tests.conftest import catalog_rows, git, write_search_json
from tests.harness.sync import GitServer, clone_node, seed_remote

CONFIG = {
    "sync": {"remote": "origin", "push": "each", "deadline": 120},
    "recovery": {"retry_delay": 0, "auto_resume": False, "max_retries": {"download": 50}},
}
NODES = 3
AUDIO = {"files.audio_file": "audio/x.mp3", "metrics.audio_size": 1}

pytestmark = pytest.mark.slow


class ExactlyOnce(RuleBasedStateMachine):
    def __init__(self) -> None:
        super().__init__()
        self.tmp = Path(tempfile.mkdtemp(prefix="hystate-exactly-once-"))
        self.server = GitServer(self.tmp / "srv")
        self.server.start()
        catalog = write_search_json(self.tmp / "catalog.json", catalog_rows(6))
        seed_remote(self.server, self.tmp / "seed", catalog, CONFIG)
        self.paths = [clone_node(self.server, self.tmp / f"node{i}", f"n{i}") for i in range(3)]
        self.generation = [0] * NODES
        self.managers = [self._worker(i) for i in range(NODES)]
        self.held: list[tuple[int, str, str]] = []  # (node, episode, token) told to a worker
        self.acked: list[tuple[str, dict[str, object]]] = []  # (episode, history entry)
        self.lost: list[tuple[int, str, str]] = []  # held, then taken over elsewhere

    def _worker(self, node: int) -> StateManager:
        name = f"w{node}g{self.generation[node]}"
        return StateManager(cwd=self.paths[node], worker=name)

    def teardown(self) -> None:
        self.server.kill()
        shutil.rmtree(self.tmp, ignore_errors=True)

    def _ack(self, eid: str, entry: dict[str, object], pending: str | None) -> None:
        if pending is None:
            self.acked.append((eid, entry))

    @rule(node=st.integers(0, NODES - 1))
    def claim(self, node: int) -> None:
        manager = self.managers[node]
        try:
            got = manager.claim_next("downloading", 1)
        except IllegalTransition:  # told about an earlier dropped step: claim again
            got = manager.claim_next("downloading", 1)
        for result in got:
            assert result.lease is not None and result.pending is None
            eid = result.episode.episode_id
            self.held.append((node, eid, result.lease))
            self._ack(eid, result.episode.history[-1], None)

    @precondition(lambda self: self.held)
    @rule(pick=st.integers(0, 100), fail=st.booleans())
    def complete(self, pick: int, fail: bool) -> None:
        node, eid, token = self.held.pop(pick % len(self.held))
        manager = self.managers[node]
        try:
            if fail:
                result = manager.fail(eid, "simulated", lease=token)
            else:
                result = manager.update_state(eid, "downloaded", fields=AUDIO, lease=token)
        except HystateError:
            return  # refused or dropped: it was not done, and the worker knows
        self._ack(eid, result.episode.history[-1], result.pending)

    @precondition(lambda self: self.held)
    @rule(pick=st.integers(0, 100), by=st.integers(0, NODES - 1))
    def take_over(self, pick: int, by: int) -> None:
        """The lease expired and another node recovered it, or a person forced it."""
        node, eid, token = self.held.pop(pick % len(self.held))
        other = StateManager(cwd=self.paths[by], worker=f"ops{by}")
        try:
            result = other.fail(eid, "worker lost (test)", take_over=True)
        except HystateError:
            self.held.append((node, eid, token))  # another step got there first
            return
        self._ack(eid, result.episode.history[-1], result.pending)
        if result.changed and result.pending is None:
            self.lost.append((node, eid, token))

    @precondition(lambda self: self.lost)
    @rule()
    def old_holder_tries(self) -> None:
        node, eid, token = self.lost.pop()
        manager = StateManager(cwd=self.paths[node], worker=f"late{node}")
        with pytest.raises(HystateError):
            manager.update_state(eid, "downloaded", fields=AUDIO, lease=token)

    @rule(node=st.integers(0, NODES - 1))
    def kill(self, node: int) -> None:
        """The worker process dies: its tokens are gone; its episodes stay held."""
        self.generation[node] += 1
        self.managers[node] = self._worker(node)
        self.held = [h for h in self.held if h[0] != node]

    @rule(node=st.integers(0, NODES - 1))
    def sync(self, node: int) -> None:
        from hystate.cluster.sync import sync

        sync(StateManager(cwd=self.paths[node]))

    @rule(pick=st.integers(0, 100))
    def retry_failed(self, pick: int) -> None:
        node = pick % NODES
        manager = self.managers[node]
        failed = manager.list_episodes(["failed"])
        if not failed:
            return
        eid = failed[pick % len(failed)].episode_id
        try:
            (outcome,) = manager.retry([eid], now=True)
        except HystateError:
            return  # moved meanwhile (another node retried it first)
        if outcome.lease is not None:
            self.held.append((node, eid, outcome.lease))

    @invariant()
    def acknowledged_are_kept_and_leases_hold(self) -> None:
        docs = _remote_docs(self.server)
        for eid, entry in self.acked:
            assert entry in docs[eid]["history"], (eid, entry)
        for eid, doc in docs.items():
            history = doc["history"]
            for before, after in pairwise(history):
                if before["to"] in ("downloading", "converting", "uploading"):
                    assert before.get("lease"), (eid, before)
                    under = after.get("lease") == before["lease"]
                    assert under or after.get("took_over"), (eid, before, after)
            done = [h.get("lease") for h in history if h["to"] == "downloaded"]
            assert len(done) == len(set(done)), (eid, history)  # never twice in one attempt


def _remote_docs(server: GitServer) -> dict[str, dict]:  # type: ignore[type-arg]
    names = git(server.bare, "ls-tree", "-r", "--name-only", "main", "--", "processed").split()
    return {
        Path(n).stem: yaml.safe_load(git(server.bare, "show", f"main:{n}"))
        for n in names
        if n.endswith(".yaml")
    }


TestExactlyOnce = ExactlyOnce.TestCase
TestExactlyOnce.settings = settings(
    max_examples=4,
    stateful_step_count=12,
    deadline=None,
    suppress_health_check=list(HealthCheck),
)
