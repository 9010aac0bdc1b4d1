"""Work through the shared remote (see ``hystate.cluster.sync`` and docs/SYNC.md): claims
acknowledged only once the pushed tip holds them, and ``sync.push: each`` around other transitions.

A claim runs under the node's sync lock: claim locally (``claims.claim``, each node in its own
order over the oldest ready episodes, so nodes seldom race for one), push at once (no fetch
first: the push is compare-and-swap); only a push that lost is fetched, replayed and pushed
again, with jittered backoff, until the caller's deadline. A claim that lost the race was
dropped by the replay; another episode is taken, up to the limit. With the
remote unreachable, new claims are refused (exit 7) and a local claim not yet pushed is
withdrawn (the node's unpublished commits are replayed without it).
"""

from __future__ import annotations

import hashlib
import random
import time
from typing import TYPE_CHECKING, Any

from hystate.cluster import journal, lease_refs
from hystate.cluster.sync import (
    ClaimsOffline,
    RemoteBusy,
    Report,
    move_forward,
    remote_of,
    sync_lock,
    sync_locked,
    timeout,
)
from hystate.core.errors import GitError, HystateError
from hystate.core.model import EpisodeState, ProcessingStage
from hystate.engine import claims
from hystate.git import audit
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
    seconds = float(ws.config.get("sync.deadline")) if deadline is None else deadline
    until = time.monotonic() + seconds
    node = lease_refs.node_name(ws)

    def order(episode: EpisodeState) -> bytes:  # this node's own order over the ready window
        return hashlib.sha1(f"{node}\0{episode.episode_id}".encode()).digest()

    acked: list[TransitionResult] = []
    _yield_turn(ws)
    with sync_lock(ws, wait=seconds):
        fresh = False
        while True:
            results = claims.claim(
                ws, stage, limit - len(acked), worker, order=order, window=WINDOW
            )
            if not results:
                if fresh:
                    break
                # nothing ready as this node last saw it: look at the remote's latest once
                _online(ws, name, lambda: sync_locked(ws, name, deadline=until))
                fresh = True
                continue
            # by commit and by lease token: a round may have replayed the commit already
            withdraw = frozenset(x for r in results for x in (r.commit, r.lease) if x)
            began = time.monotonic()
            try:  # pushed first, fetched only when the push lost (compare-and-swap)
                report = _online(
                    ws,
                    name,
                    lambda: sync_locked(ws, name, fetched=True, deadline=until, brief=True),
                    withdraw,
                )
            except HystateError as exc:
                if not acked:
                    raise
                ws.notice(f"{exc}; {len(acked)} claim(s) acknowledged before it")
                break  # those are held: returned, never lost
            fresh = True
            assert report.head is not None
            _took_turn(ws, report.rounds, time.monotonic() - began)
            acked += [r for r in results if _pushed(ws, report, r)]
            if len(acked) >= limit:
                break
            if time.monotonic() >= until:
                if acked:
                    break
                raise RemoteBusy(
                    f"{name}: every claim lost to other nodes' until the deadline ({seconds:g} s)",
                    hint="claim again, or give a longer --deadline",
                )
        lease_refs.publish(ws, name, timeout(ws), only_if_changed=True, quiet=True)
    return acked


BACK_TO_BACK = 2.0  # seconds: a claim this soon after the node's last won push yields a turn
_TURNS: dict[str, tuple[float, float]] = {}  # clone -> (when its push last won, that round's s)


def _took_turn(ws: Workspace, rounds: int, seconds: float) -> None:
    """Remember when this node's push won and how long one round took."""
    _TURNS[str(ws.repo.common_dir)] = (time.monotonic(), seconds / max(rounds, 1))


def _yield_turn(ws: Workspace) -> None:
    """Fairness: a node claiming again right after its push won lets the others have a turn
    first (a jittered pause of up to 1.5 of its push rounds). The node whose push won holds the
    remote's tip and pushes again without a fetch; the ones that lost must fetch and replay
    first, so without the pause one node takes nearly every turn (measured: 42 claims to 1). A
    worker that does real work between its claims never waits."""
    won, seconds = _TURNS.get(str(ws.repo.common_dir), (-BACK_TO_BACK, 0.0))
    if time.monotonic() - won < BACK_TO_BACK:
        time.sleep(random.uniform(0, 1.5 * seconds))


def _online(
    ws: Workspace, remote: str, step: Any, withdraw: frozenset[str] = frozenset()
) -> Report:
    """Run a sync step; if it fails, withdraw the claims not acknowledged (``withdraw``), so
    that no episode stays held for a worker that was told no."""
    try:
        return step()  # type: ignore[no-any-return]
    except HystateError as exc:
        if withdraw:
            try:
                _withdraw(ws, remote, withdraw)
            except HystateError as undo:
                ws.notice(f"could not withdraw the unacknowledged claim: {undo}")
        if not isinstance(exc, gr.Unreachable):
            raise
        raise ClaimsOffline(
            f"{exc}: new claims need the remote (held episodes can still move; `hystate sync`"
            " catches up)"
        ) from None


def _withdraw(ws: Workspace, remote: str, withdraw: frozenset[str]) -> None:
    """Take the unacknowledged claims out of the node's branch: replayed without them on the
    remote's tip as last fetched, or, when that tip cannot be checked out (a hostile branch),
    on the commit the first of them was made on."""
    branch = gr.branch_of(ws.repo)
    report = Report(remote, branch)
    try:
        tip = ws.repo.refs.resolve(gr.tracking_ref(remote, branch))
        move_forward(ws, tip, report, withdraw)
    except HystateError:
        rows = ws.repo.log("HEAD", ["%H", "%P"], trailer_keys=(audit.LEASE,), limit=500)
        base = None
        for sha, parents, trailers in rows:  # newest first: the last match is the first claim
            if sha in withdraw or trailers[audit.LEASE] in withdraw:
                base = parents.split()[0] if parents else None
        if base is None:
            raise GitError("the unacknowledged claim is not on this branch any more") from None
        move_forward(ws, base, report, withdraw)
    # another pending transition of the node that no longer applies on the tip: told too
    journal.record_dropped(ws, [r for r in report.dropped if "withdrawn" not in r["reason"]])


def _pushed(ws: Workspace, report: Report, result: TransitionResult) -> bool:
    """Whether the pushed tip holds this very claim commit (as it was, or as replayed): not
    only an equal history entry, which another node's worker of the same name claiming the
    same episode in the same second also writes."""
    sha = result.commit
    if not sha or report.head is None:
        return False
    if not report.replayed and not report.dropped:
        return True  # pushed as made: HEAD, which holds it, is what the remote took
    for row in report.replayed:  # in order: a commit replayed again in a later round
        if row["commit"] == sha:
            sha = row["new"]
    return gr.is_ancestor(ws.repo, sha, report.head)


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
