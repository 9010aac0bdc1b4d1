"""Work through the shared remote (see ``hystate.cluster.sync`` and docs/SYNC.md): claims
acknowledged only once the pushed tip holds them, and ``sync.push: each`` around other transitions.

A claim: claim locally (``claims.claim``, each worker in its own order over the oldest ready
episodes, so nodes and workers seldom race for one), then wait until a push of the node carries
it (``hystate.cluster.batch``: the worker that gets the sync lock pushes every claim the node's
workers made meanwhile; no fetch first, the push is compare-and-swap); only a push that lost is
fetched, replayed and pushed again, with jittered backoff, until the caller's deadline. A claim
that lost the race was dropped by the replay; another episode is taken, up to the limit. With
the remote unreachable, new claims are refused (exit 7) and a local claim not yet pushed is
withdrawn (the node's unpublished commits are replayed without it).
"""

from __future__ import annotations

import hashlib
import time
from typing import TYPE_CHECKING

from hystate.cluster import batch, lease_refs, ticket_claims, tickets
from hystate.cluster.sync import remote_of, sync_lock, sync_locked
from hystate.core.errors import HystateError
from hystate.core.model import EpisodeState, ProcessingStage
from hystate.git import remote as gr

if TYPE_CHECKING:
    from hystate.engine.transition import TransitionResult
    from hystate.engine.workspace import Workspace


WINDOW = 24  # ready episodes beyond the few asked for, over which a node spreads its claims


def claim(
    ws: Workspace,
    stage: str | ProcessingStage,
    limit: int,
    worker: str | None,
    remote: str | None = None,
    deadline: float | None = None,
) -> list[TransitionResult]:
    """Claims acknowledged by the remote (see the module docstring). ``deadline``: seconds
    to go on when pushes keep losing to other nodes (default ``sync.deadline``); the claims
    acknowledged by then are returned, the others withdrawn."""
    name = remote_of(ws, remote)
    assert name is not None
    # a claim goes through the branch: on a detached HEAD (even opted in) it could be neither
    # pushed nor withdrawn, so it is refused before anything is committed
    gr.branch_of(ws.repo)
    batch.check_lock(ws)
    seconds = float(ws.config.get("sync.deadline")) if deadline is None else deadline
    until = time.monotonic() + seconds
    if tickets.on(ws):  # claims on their own refs: nodes do not wait for one another
        return ticket_claims.claim(ws, name, stage, limit, worker, until)
    node = lease_refs.node_name(ws)
    who = worker or ws.worker

    def order(episode: EpisodeState) -> bytes:  # this worker's own order over the ready window
        return hashlib.sha1(f"{node}\0{who}\0{episode.episode_id}".encode()).digest()

    def carrier() -> batch.Carry:
        before = batch.tracking_tip(ws, name)  # (a tip that has not moved cannot hold them)
        return lambda results: batch.carried(ws, name, results, until, before)

    return batch.claim_loop(
        ws, name, stage, limit, worker, until, order=order, window=WINDOW, skip=None,
        carrier=carrier,
    )  # fmt: skip


def before_transition(ws: Workspace) -> None:
    """``sync.push: each``: bring the node up to date first (best effort, offline is fine),
    so a move the remote already made impossible is refused now (exit 3), not dropped later."""
    name = ws.sync_remote
    if not name or ws.syncing or ws.config.get("sync.push") != "each":
        return
    try:
        with sync_lock(ws, wait=0):
            sync_locked(ws, name)
    except HystateError:
        return  # offline or another sync of this node runs: the transition goes on locally
