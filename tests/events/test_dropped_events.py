"""Dropped transitions on the event stream (issue 24): a pending transition that a sync had to
drop is published once to ``<stream>:dropped`` with its worker and the reason, from any process
of the node; a broker that was down gets it at the next ``events publish``."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest

from hystate.cluster.acks import TransitionDropped
from hystate.manager import StateManager
from tests.conftest import run_hystate
from tests.harness.redis import RedisServer, needs_redis
from tests.harness.sync import GitServer, clone_nodes, served

pytestmark = needs_redis
DROPS = "hystate:transitions:dropped"


@pytest.fixture
def nodes(tmp_path: Path, broker: RedisServer) -> Iterator[tuple[GitServer, list[Path]]]:
    config = {
        "sync": {"remote": "origin", "push": "batch"},
        "recovery": {"retry_delay": 0},
        "events": {"enabled": True, "url": broker.url},
    }
    with served(tmp_path, config, 4) as srv:
        yield srv, clone_nodes(srv, tmp_path)


def drop_one(a_path: Path, b_path: Path) -> str:
    """Node a's worker finishes, locally, an episode node b took over on the remote; a sync of
    node a (another process) then drops that step, and the worker is still told. The id."""
    a = StateManager(cwd=a_path, worker="wa")
    (claim,) = a.claim_next("downloading", 1)
    eid = claim.episode.episode_id
    run_hystate(b_path, "sync")
    StateManager(cwd=b_path, worker="ops").fail(eid, "worker lost (by hand)", take_over=True)
    assert run_hystate(b_path, "sync").returncode == 0
    assert a.update_state(eid, "downloaded", fields={"files.audio_file": "a.mp3"}).pending
    proc = run_hystate(a_path, "sync", "--json")
    assert [d["episode_id"] for d in json.loads(proc.stdout)["dropped"]] == [eid]
    with pytest.raises(TransitionDropped, match=f"{eid}: downloading -> downloaded by wa"):
        a.claim_next("downloading", 1)
    return eid


def test_a_dropped_step_is_published_once_with_its_worker_and_reason(
    nodes: tuple[GitServer, list[Path]], broker: RedisServer
) -> None:
    _server, (a_path, b_path) = nodes
    eid = drop_one(a_path, b_path)
    rows = broker.client().xrange(DROPS)
    assert len(rows) == 1
    fields = rows[0][1]
    assert (fields["episode_id"], fields["from"], fields["to"]) == (
        eid,
        "downloading",
        "downloaded",
    )
    assert fields["worker"] == "wa" and fields["node"] == "n0" and fields["reason"]
    # publishing again, from any process of the node, sends nothing twice
    for _ in range(2):
        proc = run_hystate(a_path, "events", "publish", "--json")
        assert proc.returncode == 0 and json.loads(proc.stdout)["dropped"] == 0, proc.stderr
    assert len(broker.client().xrange(DROPS)) == 1
    # a consumer reads it in the one vocabulary
    proc = run_hystate(a_path, "events", "tail", "--dropped", "--json")
    (line,) = proc.stdout.splitlines()
    assert json.loads(line)["episode_id"] == eid and json.loads(line)["worker"] == "wa"
    proc = run_hystate(a_path, "events", "tail", "--dropped")
    assert "dropped: wa: " in proc.stdout


def test_drops_made_while_the_broker_is_down_go_out_at_the_next_publish(
    nodes: tuple[GitServer, list[Path]], broker: RedisServer
) -> None:
    _server, (a_path, b_path) = nodes
    broker.stop()
    eid = drop_one(a_path, b_path)  # the sync says so in a notice, and goes on
    broker.start()
    assert broker.client().xrange(DROPS) == []
    proc = run_hystate(a_path, "events", "publish")
    assert proc.returncode == 0 and "1 dropped transition(s)" in proc.stdout, proc.stderr
    (row,) = broker.client().xrange(DROPS)
    assert row[1]["episode_id"] == eid
