"""Claims on per-episode refs (``sync.claims: refs``, ``hystate.cluster.tickets``): a claim is
acknowledged once its ticket ``refs/hystate/claims/<id>`` is set on the remote, compare-and-swap;
the branch follows. Real nodes (clones), a real ``git daemon`` on 127.0.0.1."""

from __future__ import annotations

import json
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from hystate.manager import StateManager
from tests.conftest import git, run_hystate
from tests.harness.sync import (
    GitServer,
    branch_docs,
    clone_nodes,
    fsck_clean,
    served,
    server_tickets,
)

CONFIG = {
    "sync": {"remote": "origin", "claims": "refs"},
    "recovery": {"auto_resume": False},
}


@pytest.fixture
def cluster(tmp_path: Path) -> Iterator[tuple[GitServer, list[Path]]]:
    with served(tmp_path, CONFIG, 12) as server:
        yield server, clone_nodes(server, tmp_path, 3)


def claim(node: Path, worker: str) -> subprocess.CompletedProcess[str]:
    return run_hystate(node, "next", "downloading", "--claim", "--worker", worker, "--json")


def test_a_claim_is_acknowledged_by_its_ticket_and_the_branch_follows(
    cluster: tuple[GitServer, list[Path]], tmp_path: Path
) -> None:
    server, (a, b, _) = cluster
    proc = claim(a, "wa")
    assert proc.returncode == 0, proc.stderr
    (row,) = json.loads(proc.stdout)
    eid = row["episode_id"]
    held = server_tickets(server)
    assert list(held) == [eid]
    message = git(server.bare, "log", "-1", "--format=%B", held[eid])
    assert f"Hystate-Lease: {row['lease']}" in message  # the ticket is the claim's own commit
    # b, which has not fetched anything, claims another episode (its ticket refused otherwise)
    proc = claim(b, "wb")
    assert proc.returncode == 0, proc.stderr
    (other,) = json.loads(proc.stdout)
    assert other["episode_id"] != eid
    for node in (a, b):
        done = run_hystate(node, "sync")
        assert done.returncode == 0, done.stderr
    docs = branch_docs(server, tmp_path)
    assert docs[eid]["stage"] == "downloading"
    assert docs[eid]["history"][-1]["lease"] == row["lease"]
    assert docs[other["episode_id"]]["history"][-1]["lease"] == other["lease"]
    fsck_clean(server.bare)


def test_a_move_made_offline_on_a_stale_view_loses_to_the_ticket(
    cluster: tuple[GitServer, list[Path]], tmp_path: Path
) -> None:
    server, (a, b, _) = cluster
    got = StateManager(cwd=a, worker="wa").claim_next("downloading", 1)
    eid = got[0].episode.episode_id
    server.kill()  # b cannot look first: its skip is committed locally, pending
    proc = run_hystate(b, "advance", eid, "skipped", "--worker", "person")
    assert proc.returncode == 0, proc.stderr
    assert "pending" in proc.stderr
    server.start()
    proc = run_hystate(b, "sync", "--json")
    assert proc.returncode == 0, proc.stderr
    (row,) = json.loads(proc.stdout)["dropped"]
    assert (row["episode_id"], row["to"], row["worker"]) == (eid, "skipped", "person")
    docs = branch_docs(server, tmp_path)
    assert docs[eid]["stage"] == "downloading"  # the acknowledged claim, carried by b's sync
    assert docs[eid]["history"][-1]["lease"] == got[0].lease
    other = next(e for e, d in docs.items() if d["stage"] == "discovered")
    told = run_hystate(b, "skip", other, "--reason", "x", "--worker", "person")
    assert told.returncode == 0, told.stderr
    assert f"{eid}: discovered -> skipped by person was dropped" in told.stderr


def test_a_claim_whose_node_went_away_reaches_the_branch_by_another_node(
    cluster: tuple[GitServer, list[Path]], tmp_path: Path
) -> None:
    server, (a, b, _) = cluster
    got = StateManager(cwd=a, worker="wa").claim_next("downloading", 1)
    eid = got[0].episode.episode_id
    shutil.rmtree(a)  # gone before it pushed the branch: only its ticket holds the claim
    assert branch_docs(server, tmp_path)[eid]["stage"] == "discovered"
    proc = run_hystate(b, "sync")
    assert proc.returncode == 0, proc.stderr
    doc = branch_docs(server, tmp_path)[eid]
    assert doc["stage"] == "downloading"
    assert (doc["history"][-1]["by"], doc["history"][-1]["lease"]) == ("wa", got[0].lease)
    # taken once: b's next sync has nothing more to carry
    before = server.tip()
    assert run_hystate(b, "sync").returncode == 0
    assert server.tip() == before
    fsck_clean(server.bare)


def test_nodes_claiming_side_by_side_never_share_an_episode(
    cluster: tuple[GitServer, list[Path]], tmp_path: Path
) -> None:
    server, nodes = cluster
    procs = [
        subprocess.Popen(
            [*HYSTATE_CLAIM, "--worker", f"w{i}-{j}"],
            cwd=node,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for i, node in enumerate(nodes)
        for j in range(3)
    ]
    acked: dict[str, str] = {}
    for proc in procs:
        out, err = proc.communicate(timeout=300)
        assert proc.returncode == 0, err
        for row in json.loads(out):
            assert row["episode_id"] not in acked  # never acknowledged twice
            acked[row["episode_id"]] = row["lease"]
    assert len(acked) == 9
    held = server_tickets(server)
    assert set(held) == set(acked)
    for node in nodes:
        assert run_hystate(node, "sync").returncode == 0
    docs = branch_docs(server, tmp_path)
    on_branch = {
        e: d["history"][-1]["lease"] for e, d in docs.items() if d["stage"] == "downloading"
    }
    assert on_branch == acked


from tests.conftest import HYSTATE  # noqa: E402

HYSTATE_CLAIM = [*HYSTATE, "next", "downloading", "--claim", "--json"]
