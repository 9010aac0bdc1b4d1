"""Adversarial tests of claims on per-episode refs (``sync.claims: refs``,
``hystate.cluster.tickets``): nodes dying between a ticket and the branch, chains of moves of
one episode behind one ticket, hostile tickets. Real nodes (clones), a real ``git daemon``."""

from __future__ import annotations

import hashlib
import json
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from hystate.cluster import tickets
from hystate.cluster.sync import ON_REMOTE
from hystate.manager import StateManager
from tests.conftest import catalog_rows, git, run_hystate, write_search_json
from tests.harness.sync import GitServer, branch_docs, clone_nodes, fsck_clean, served

CONFIG = {
    "sync": {"remote": "origin", "claims": "refs"},
    "recovery": {"auto_resume": False},
}


BATCH = {**CONFIG, "sync": {**CONFIG["sync"], "push": "batch"}}  # only syncs and claims push


@pytest.fixture
def cluster(tmp_path: Path) -> Iterator[tuple[GitServer, list[Path]]]:
    with served(tmp_path, CONFIG, 6) as server:
        yield server, clone_nodes(server, tmp_path, 3)


@pytest.fixture
def batched(tmp_path: Path) -> Iterator[tuple[GitServer, list[Path]]]:
    with served(tmp_path, BATCH, 6) as server:
        yield server, clone_nodes(server, tmp_path, 3)


@pytest.fixture
def no_flush(monkeypatch: pytest.MonkeyPatch) -> None:
    """In-process claims never push the branch themselves: only their tickets hold them."""
    monkeypatch.setattr(tickets, "FLUSH_AFTER", 10_000.0)
    monkeypatch.setattr(tickets, "FLUSH_COUNT", 10_000)


def leases_in(doc: dict) -> list[str]:  # type: ignore[type-arg]
    found = [h.get("lease") for h in doc["history"] if h.get("lease")]
    return list(dict.fromkeys(found))


def synced(node: Path) -> dict:  # type: ignore[type-arg]
    """``hystate sync --json``; its ``dropped`` without the moves the remote held already."""
    proc = run_hystate(node, "sync", "--json")
    assert proc.returncode == 0, proc.stderr
    report = json.loads(proc.stdout)
    report["dropped"] = [r for r in report["dropped"] if r["reason"] != ON_REMOTE]
    return report  # type: ignore[no-any-return]


def test_a_chain_of_moves_behind_one_ticket_reaches_the_branch_when_its_node_dies(
    batched: tuple[GitServer, list[Path]], tmp_path: Path, no_flush: None
) -> None:
    """Claim (ticket), finish the stage (no ticket), claim the next stage (ticket again): the
    node dies before it pushed the branch. The ticket's commit alone does not apply on the
    branch (it starts from ``downloaded``): both acknowledged claims must still land."""
    server, (a, b, _) = batched
    sm = StateManager(cwd=a, worker="wa")
    (first,) = sm.claim_next("downloading", 1)
    eid = first.episode.episode_id
    sm.update_state(eid, "downloaded", lease=first.lease, fields={"files.audio_file": "a.mp3"})
    (second,) = sm.claim_next("converting", 1)
    assert second.episode.episode_id == eid
    assert branch_docs(server, tmp_path)[eid]["stage"] == "discovered"  # tickets only
    shutil.rmtree(a)
    report = synced(b)
    assert report["dropped"] == [], [(r["from"], r["to"], r["reason"]) for r in report["dropped"]]
    doc = branch_docs(server, tmp_path)[eid]
    assert doc["stage"] == "converting"
    assert leases_in(doc) == [first.lease, second.lease]
    before = server.tip()
    assert synced(b)["dropped"] == []  # nothing left to carry, nothing dropped again
    assert server.tip() == before
    fsck_clean(server.bare)
    fsck_clean(b)


def test_two_moves_of_one_episode_waiting_for_their_ticket_go_in_one_push(
    batched: tuple[GitServer, list[Path]], tmp_path: Path
) -> None:
    """Two moves leaving a waiting stage of the same episode, made before any push (a retry,
    another failure, a retry again): one sync carries both."""
    server, (a, _, _) = batched
    wa = StateManager(cwd=a, worker="wa")
    (first,) = wa.claim_next("downloading", 1)
    eid = first.episode.episode_id
    wa.fail(eid, "boom", lease=first.lease)
    wa.retry([eid], now=True, worker="wa")
    wa.fail(eid, "boom again")
    wa.retry([eid], now=True, worker="wa")
    report = synced(a)
    assert report["dropped"] == []
    doc = branch_docs(server, tmp_path)[eid]
    tail = [(h["from"], h["to"]) for h in doc["history"]][-4:]
    assert tail == [("downloading", "failed"), ("failed", "downloading")] * 2
    assert doc["stage"] == "downloading"
    assert doc["attempts"]["download"] == 3
    assert git(server.bare, "rev-parse", f"refs/hystate/claims/{eid}").strip()
    fsck_clean(server.bare)


def test_a_take_over_and_the_old_holder_finishing_never_drop_an_acknowledged_claim(
    batched: tuple[GitServer, list[Path]], tmp_path: Path, no_flush: None
) -> None:
    """a's worker holds E; c takes the stage over (``fail --force``) and pushes; a's worker,
    not knowing, finishes E and claims its next stage. Whatever a is told, a claim it
    acknowledges is on the branch after every node synced, and E leaves ``downloading`` once."""
    server, (a, _, c) = batched
    wa = StateManager(cwd=a, worker="wa")
    (first,) = wa.claim_next("downloading", 1)
    eid = first.episode.episode_id
    synced(c)  # c carries a's ticket onto the branch
    proc = run_hystate(c, "fail", eid, "--error", "stuck", "--force", "--worker", "ops")
    assert proc.returncode == 0, proc.stderr
    synced(c)
    assert branch_docs(server, tmp_path)[eid]["stage"] == "failed"
    try:
        wa.update_state(eid, "downloaded", lease=first.lease, fields={"files.audio_file": "x"})
    except Exception:
        pass
    acked = wa.claim_next("converting", 1)
    for node in (a, c):
        synced(node)
    doc = branch_docs(server, tmp_path)[eid]
    moves = [(h.get("from"), h.get("to")) for h in doc["history"]]
    assert moves.count(("downloading", "failed")) + moves.count(("downloading", "downloaded")) == 1
    for result in acked:
        lease = result.lease
        assert lease in leases_in(branch_docs(server, tmp_path)[result.episode.episode_id])
    fsck_clean(server.bare)


def test_claims_into_a_limited_stage_on_two_nodes_keep_the_limit_and_every_ack(
    tmp_path: Path, no_flush: None
) -> None:
    """``limits.downloading.concurrency: 1``: two nodes claim side by side, each seeing the
    stage empty. At most one is acknowledged; the stage never holds more than one; every
    acknowledged claim is on the branch after every node synced."""
    config = {**CONFIG, "limits": {"downloading": {"concurrency": 1}}}
    with served(tmp_path, config, 6) as server:
        a, b = clone_nodes(server, tmp_path, 2)
        acked = StateManager(cwd=a, worker="wa").claim_next("downloading", 1)
        acked += StateManager(cwd=b, worker="wb").claim_next("downloading", 1)
        for node in (a, b, a):
            synced(node)
        docs = branch_docs(server, tmp_path)
        running = sorted(e for e, d in docs.items() if d["stage"] == "downloading")
        assert running == sorted(r.episode.episode_id for r in acked)
        assert len(running) == 1
        fsck_clean(server.bare)


def test_a_claim_of_an_episode_discovered_on_its_node_survives_the_node(
    batched: tuple[GitServer, list[Path]], tmp_path: Path, no_flush: None
) -> None:
    """a discovers episodes (a local commit: ``sync.push: batch``), claims one (ticket) and
    dies before its branch went out: the ticket's replay carries the discovery too."""
    server, (a, b, _) = batched
    StateManager(cwd=b, worker="wb").claim_next("downloading", 6)
    synced(b)
    synced(a)
    rows = catalog_rows(2, start_year=1990)  # (one commit of two new episodes)
    proc = run_hystate(a, "discover", "--from", str(write_search_json(tmp_path / "new.json", rows)))
    assert proc.returncode == 0, proc.stderr
    (got,) = StateManager(cwd=a, worker="wa").claim_next("downloading", 1)
    assert got.episode.episode_id in {r["identifier"] for r in rows}
    assert got.episode.episode_id not in branch_docs(server, tmp_path)  # a's alone
    shutil.rmtree(a)
    assert synced(b)["dropped"] == []
    doc = branch_docs(server, tmp_path)[got.episode.episode_id]
    assert (doc["stage"], leases_in(doc)) == ("downloading", [got.lease])
    assert synced(b)["dropped"] == []
    fsck_clean(server.bare)


def test_hostile_tickets_on_the_remote_block_nothing_else(
    cluster: tuple[GitServer, list[Path]], tmp_path: Path
) -> None:
    """Tickets pointing at a blob, a tree, a commit of no move, a commit of another episode,
    and refs under no episode: claims and syncs go on (those episodes aside), fsck clean."""
    server, (a, b, _) = cluster
    ids = sorted(branch_docs(server, tmp_path))
    bare = server.bare
    blob = (
        subprocess.run(
            ["git", "hash-object", "-w", "--stdin"], cwd=bare, input=b"junk", capture_output=True
        )
        .stdout.decode()
        .strip()
    )
    tree = git(bare, "rev-parse", "main^{tree}").strip()
    tip = server.tip()
    (other,) = StateManager(cwd=b, worker="wb").claim_next("downloading", 1)
    theirs = git(bare, "rev-parse", f"refs/hystate/claims/{other.episode.episode_id}").strip()
    hostile = [e for e in ids if e != other.episode.episode_id][:3]
    for ref, sha in (
        (hostile[0], blob),
        (hostile[1], tree),
        (hostile[2], theirs),  # a commit of another episode's move
        ("nested/deeper", tip),
        ("sha1-" + "0" * 40, tip),
    ):
        git(bare, "update-ref", f"refs/hystate/claims/{ref}", sha)
    got = []
    for node, worker in ((a, "wa"), (b, "wb"), (a, "wa2")):
        proc = run_hystate(node, "next", "downloading", "--claim", "--worker", worker, "--json")
        assert proc.returncode == 0, proc.stderr
        got += [row["episode_id"] for row in json.loads(proc.stdout)]
    assert len(got) == len(set(got)) == 2 and not set(got) & set(hostile)
    for node in (a, b):
        synced(node)
    docs = branch_docs(server, tmp_path)
    assert {e for e, d in docs.items() if d["stage"] == "downloading"} == {
        *got,
        other.episode.episode_id,
    }
    fsck_clean(bare)
    for node in (a, b):
        fsck_clean(node)


def test_a_long_lived_process_keeps_a_bounded_number_of_histories(
    cluster: tuple[GitServer, list[Path]], monkeypatch: pytest.MonkeyPatch
) -> None:
    """One process (``hystate serve``, a worker's own loop) claiming and finishing on and on:
    the histories read from the tickets' commits do not pile up for ever."""
    _, (a, _, _) = cluster
    monkeypatch.setattr(tickets, "HISTORIES", 4, raising=False)
    tickets._HISTORIES.clear()
    wa = StateManager(cwd=a, worker="wa")
    for _ in range(6):
        (got,) = wa.claim_next("downloading", 1)
        wa.fail(got.episode.episode_id, "x", lease=got.lease)
        assert len(tickets._HISTORIES) <= 4


def test_a_claim_whose_ticket_push_was_turned_away_by_a_lock_is_withdrawn(
    batched: tuple[GitServer, list[Path]], tmp_path: Path, no_flush: None
) -> None:
    """The server could not lock the ticket's ref (a ``.lock`` left by a receive killed
    mid-push): the claim is not acknowledged, so it must not stay committed either (else the
    node's next push makes it hold the episode for a worker that was never told)."""
    server, (a, b, _) = batched
    everything = sorted(branch_docs(server, tmp_path))
    StateManager(cwd=b, worker="wb").claim_next("downloading", len(everything) - 1)
    synced(b)
    synced(a)
    (last,) = [e for e, d in branch_docs(server, tmp_path).items() if d["stage"] == "discovered"]
    lock = server.bare / "refs" / "hystate" / "claims" / f"{last}.lock"
    lock.parent.mkdir(parents=True, exist_ok=True)
    lock.write_text("")
    claim = ("next", "downloading", "--claim", "--worker", "wa", "--json", "--deadline", "3")
    proc = run_hystate(a, *claim)
    assert proc.returncode in (0, 6), proc.stderr
    acked = json.loads(proc.stdout) if proc.returncode == 0 else []
    lock.unlink()
    for node in (a, b):
        synced(node)
    doc = branch_docs(server, tmp_path)[last]
    assert [r["lease"] for r in acked] == leases_in(doc)  # held only if acknowledged
    fsck_clean(server.bare)


def test_a_worker_whose_first_choice_cannot_be_ticketed_claims_another(
    batched: tuple[GitServer, list[Path]], tmp_path: Path, no_flush: None
) -> None:
    """Two episodes ready; the ticket ref of the one this worker takes first cannot be
    locked on the server. The claim gets the other one, instead of claiming the same
    episode again and again until its deadline."""
    server, (a, b, _) = batched
    everything = sorted(branch_docs(server, tmp_path))
    StateManager(cwd=b, worker="wb").claim_next("downloading", len(everything) - 2)
    synced(b)
    synced(a)
    ready = sorted(
        e for e, d in branch_docs(server, tmp_path).items() if d["stage"] == "discovered"
    )
    worker = next(  # (a worker whose own order takes ready[0] first: ticket_claims.claim)
        w
        for w in (f"w{i}" for i in range(100))
        if min(ready, key=lambda e: hashlib.sha1(f"n0\0{w}\0{e}".encode()).digest()) == ready[0]
    )
    lock = server.bare / "refs" / "hystate" / "claims" / f"{ready[0]}.lock"
    lock.parent.mkdir(parents=True, exist_ok=True)
    lock.write_text("")
    claim = ("next", "downloading", "--claim", "--worker", worker, "--json", "--deadline", "20")
    proc = run_hystate(a, *claim)
    lock.unlink()
    assert proc.returncode == 0, proc.stderr
    assert [row["episode_id"] for row in json.loads(proc.stdout)] == [ready[1]]


def test_a_ticket_holding_another_episodes_move_is_not_replayed(
    batched: tuple[GitServer, list[Path]], tmp_path: Path, no_flush: None
) -> None:
    """A hostile (or broken) remote: E's ticket points at a move of F that another node made
    offline, older than F's own ticket. A sync neither carries it nor goes round for ever."""
    server, (a, b, c) = batched
    e, f = sorted(branch_docs(server, tmp_path))[:2]
    offline = StateManager(cwd=c, worker="wc")
    offline.sync_remote = None  # (c's move, never ticketed)
    offline.skip(f, "offline", worker="wc")
    (got,) = [
        r
        for r in StateManager(cwd=b, worker="wb").claim_next("downloading", 6)
        if r.episode.episode_id == f
    ] or [None]
    assert got is not None
    git(c, "push", "-q", "origin", f"HEAD:refs/hystate/claims/{e}", "--force")
    proc = run_hystate(a, "sync", "--json", timeout=120)
    assert proc.returncode == 0, proc.stderr
    synced(b)
    doc = branch_docs(server, tmp_path)[f]
    assert (doc["stage"], leases_in(doc)) == ("downloading", [got.lease])
    fsck_clean(server.bare)
