"""Claims acknowledged by their tickets (``sync.claims: refs``; ``hystate.cluster.tickets``).

A claim is committed locally at once (as on one machine, in the worker's own order over a wide
window of the oldest ready episodes, leaving alone those whose ticket another node holds), then
waits for whichever comes first: a ticket push by another process of the node set its ticket
(no git process of its own), or the node's sync lock, and this worker pushes the ticket of every
move the node has not ticketed yet, each compare-and-swap on its own, in one push. A claim is
acknowledged once its ticket is set: the remote holds its commit. A claim whose ticket another
node took first is withdrawn and another episode is claimed. The branch follows: the worker
holding the lock also pushes it (one round, atomically with any move not ticketed yet) once the
node's ticketed moves off the branch are ``FLUSH_AFTER`` old or ``FLUSH_COUNT`` many; a push
that lost leaves them for the next one (``hystate sync`` retries until its deadline).
"""

from __future__ import annotations

import hashlib
import random
import time
from collections.abc import Callable
from typing import TYPE_CHECKING

from hystate.cluster import batch, journal, lease_refs, tickets
from hystate.cluster.sync import (
    WITHDRAWN,
    ClaimsOffline,
    RemoteBusy,
    Report,
    move_forward,
    sync_locked,
)
from hystate.core.errors import HystateError, LockBusy
from hystate.core.model import EpisodeState, ProcessingStage
from hystate.engine import limits
from hystate.git import remote as gr

if TYPE_CHECKING:
    from hystate.engine.transition import TransitionResult
    from hystate.engine.workspace import Workspace

WINDOW = 256  # ready episodes beyond the few asked for: nodes claiming at once rarely meet
LEASES = f"refs/hystate/remote-{lease_refs.KIND}/"  # the nodes that published a lease table
WALK = 512  # commits walked in-process from HEAD back to the branch's tip
_NEXT: dict[str, float] = {}  # clone: when this process may push the branch again
_INFOS: dict[str, gr.CommitInfo] = {}  # commits read by ``_unpushed`` (each claim walks them all)
# knowing no other node: how much of one more FLUSH_AFTER this process waits (the nodes of a
# new cluster, each still alone as far as it knows, would all push the branch at once)
_PHASE = random.random()


def claim(
    ws: Workspace,
    remote: str,
    stage: str | ProcessingStage,
    limit: int,
    worker: str | None,
    until: float,
) -> list[TransitionResult]:
    """Up to ``limit`` claims, each acknowledged by its ticket (see the module docstring)."""
    node = lease_refs.node_name(ws)
    who = worker or ws.worker
    nodes = _nodes(ws, node)
    stripe = _stripe(nodes, node)

    def order(episode: EpisodeState) -> bytes:  # this worker's own order over the window
        eid = episode.episode_id
        mine = b"0" if stripe is None or stripe(eid) else b"1"
        return mine + hashlib.sha1(f"{node}\0{who}\0{eid}".encode()).digest()

    def skip(episode: EpisodeState) -> bool:
        return tickets.ahead(ws, episode)

    def carrier() -> batch.Carry:
        return lambda results: _carried(ws, remote, results, until, nodes.index(node), len(nodes))

    return batch.claim_loop(
        ws, remote, stage, limit, worker, until, order=order, window=WINDOW, skip=skip,
        carrier=carrier,
    )  # fmt: skip


def _nodes(ws: Workspace, node: str) -> list[str]:
    """The nodes that published a lease table (and this one), sorted."""
    return sorted({ref.rpartition("/")[2] for ref, _ in gr.refs_under(ws.repo, LEASES)} | {node})


def _stripe(nodes: list[str], node: str) -> Callable[[str], bool] | None:
    """Whether an episode is in this node's stripe of the catalog: of ``nodes``, each first
    takes the episodes whose id hashes to its place, so nodes claiming at once seldom want the
    same one; None with no other node known."""
    if len(nodes) < 2:
        return None
    count, place = len(nodes), nodes.index(node)

    def inside(episode_id: str) -> bool:
        digest = hashlib.sha1(episode_id.encode()).digest()
        return int.from_bytes(digest[:4], "big") % count == place

    return inside


def _mine(ws: Workspace, result: TransitionResult) -> bool:
    return tickets.is_mine(ws, result.episode.episode_id, result.episode.history[-1])


def _carried(
    ws: Workspace,
    remote: str,
    results: list[TransitionResult],
    until: float,
    place: int,
    count: int,
) -> tuple[list[TransitionResult], HystateError | None]:
    """The claims of ``results`` whose tickets are set, by this process's push or another's;
    the error that stopped this process's push (its claims not acknowledged are withdrawn)."""
    turn = batch.wait_turn(ws, until, lambda: all(_mine(ws, r) for r in results))
    if turn is None:
        return results, None  # another process of the node pushed them
    if isinstance(turn, LockBusy):
        return [r for r in results if _mine(ws, r)], LockBusy(
            f"{turn.message}; claims stay committed on this node, not acknowledged",
            hint="the next sync pushes them and their leases expire",
        )
    return batch.pushing(ws, turn, lambda: _push(ws, remote, results, until, (place, count)))


def _push(
    ws: Workspace,
    remote: str,
    results: list[TransitionResult],
    until: float,
    duty: tuple[int, int] = (0, 1),
) -> tuple[list[TransitionResult], HystateError | None]:
    """Under the sync lock: the tickets of every move of the node not ticketed yet, this
    worker's claims among them; the lost ones withdrawn; then the branch, when due. Moves
    into a stage with limits take their tickets with the branch only (``tickets.with_branch``):
    this worker's are pushed so now."""
    repo = ws.repo
    tip = repo.refs.resolve(gr.tracking_ref(remote, gr.branch_of(repo)))
    head = repo.refs.head().sha
    assert head is not None
    commits = _unpushed(ws, tip, head)
    try:
        gone, moves = tickets.plan(ws, commits)
        read = {c.sha: c for c in commits}  # (every move is one of them)
        moves = [m for m in moves if not tickets.with_branch(ws, read[m[1]])]
        table = lease_refs.prepare(ws, remote, only_if_changed=True) if moves else None
        leases = table[:2] if table else None
        if moves and not _take(ws, remote, moves, leases):
            gone = tickets.plan(ws, commits)[0]  # (tickets fetched again: who lost theirs)
        elif table:
            lease_refs.published(ws, table[2])
    except HystateError as exc:
        mine = [r for r in results if not _mine(ws, r)]
        _withdraw(ws, remote, mine, [r.commit for r in mine if r.commit], WITHDRAWN)
        return [r for r in results if _mine(ws, r)], _offline(exc)
    acked = [r for r in results if _mine(ws, r)]
    lost = [r for r in results if r not in acked]
    if gone:
        _withdraw(ws, remote, lost, gone, tickets.LOST)
    rest = [r for r in lost if r.commit not in gone]
    held = [r for r in rest if limits.limited(ws, r.episode.stage)]
    turned = [r for r in rest if r not in held]  # (the remote could not lock its ticket's ref)
    if turned:
        _withdraw(ws, remote, turned, batch.marks(turned), WITHDRAWN)
    if not held:
        _flush(ws, remote, commits, duty)
        return acked, None
    try:  # (the branch judges the stage's limits: a claim it refuses is not acknowledged)
        sync_locked(ws, remote, deadline=until)
    except HystateError as exc:
        waiting = [r for r in held if not _mine(ws, r)]
        _withdraw(ws, remote, waiting, batch.marks(waiting), WITHDRAWN)
        return acked + [r for r in held if _mine(ws, r)], _offline(exc)
    return acked + [r for r in held if _mine(ws, r)], None


def _take(
    ws: Workspace,
    remote: str,
    moves: list[tuple[str, str, str | None]],
    leases: tuple[str, str] | None,
) -> bool:
    """``tickets.take``; when the push's answer never came (a timeout, a dropped connection)
    the tickets may have landed all the same: the remote is asked (the tickets fetched again),
    so a claim it holds is returned, not withdrawn while its ticket holds it. Still no answer:
    Unreachable, and the claims are withdrawn."""
    try:
        return tickets.take(ws, remote, moves, leases=leases)
    except gr.Unreachable:
        tickets.fetch(ws, remote)
        return False


def _unpushed(ws: Workspace, tip: str | None, head: str) -> list[gr.CommitInfo]:
    """The node's commits from ``tip`` to ``head``, oldest first: the few since the branch last
    followed, walked in-process (git decides when they are many, or not a straight line)."""
    found: list[gr.CommitInfo] = []
    sha: str | None = head
    if len(_INFOS) >= 8 * WALK:
        _INFOS.clear()
    while sha != tip and sha is not None and len(found) < WALK:
        info = _INFOS.get(sha) or _INFOS.setdefault(sha, gr.commit_info(ws.repo, sha))
        if len(info.parents) > 1:
            break
        found.append(info)
        sha = info.parents[0] if info.parents else None
    else:
        if sha == tip:
            return found[::-1]
    return gr.commits_between(ws.repo, tip, head)


def _offline(exc: HystateError) -> HystateError:
    if isinstance(exc, gr.Unreachable):
        return ClaimsOffline(
            f"{exc}: new claims need the remote (held episodes can still move; `hystate sync`"
            " catches up)"
        )
    return exc


def _withdraw(
    ws: Workspace, remote: str, own: list[TransitionResult], commits: list[str], why: str
) -> None:
    """Take ``commits`` out of the node's branch (replayed without them on the remote's tip as
    last fetched); the workers of those not among ``own`` (this process's) are told."""
    if not commits:
        return
    report = Report(remote, gr.branch_of(ws.repo))
    tip = ws.repo.refs.resolve(gr.tracking_ref(remote, report.branch))
    try:
        move_forward(ws, tip, report, frozenset(commits), why=why)
    except HystateError as exc:
        ws.notice(f"could not withdraw a claim that lost its ticket: {exc}")
        return
    told = {r.episode.episode_id for r in own}
    journal.record_dropped(ws, [r for r in report.dropped if r["id"] not in told])


def _flush(ws: Workspace, remote: str, commits: list[gr.CommitInfo], duty: tuple[int, int]) -> None:
    """Push the branch once (no retry) when the node's ticketed moves off it are old or many
    enough and this node is on duty (``_due``); after a push that lost to another node's (which
    carried every ticket it knew, this node's among them), this process waits one to three
    ``FLUSH_AFTER`` before it tries again."""
    now = time.time()
    key = str(ws.repo.common_dir)
    if not _due(commits, now, duty) or now < _NEXT.get(key, 0.0):
        return
    try:
        sync_locked(ws, remote, deadline=time.monotonic())
    except RemoteBusy:
        _NEXT[key] = now + tickets.FLUSH_AFTER * random.uniform(1, 3)
    except HystateError:
        return  # (offline: the tickets hold the claims; the branch follows later)


def _due(commits: list[gr.CommitInfo], now: float, duty: tuple[int, int]) -> bool:
    """Whether this node pushes the branch now. A push carries every node's tickets, so the
    nodes take the duty in turn, one ``FLUSH_AFTER`` slot each (``duty``: this node's place
    among ``count`` nodes, sorted by name): one push per slot for the whole cluster instead of
    every node fetching, replaying everything and racing for the branch, all but one of them
    in vain. A node off duty pushes anyway once its oldest move off the branch has waited
    every node's turn and one more (the node on duty went away, or claims nothing). A node
    that knows no other one (a new cluster: the nodes learn of one another from the lease
    tables a push of the branch fetches) waits a random part of one more ``FLUSH_AFTER``."""
    if not commits:
        return False
    place, count = duty
    age = now - tickets.when(commits[0])
    if count > 1 and int(now // tickets.FLUSH_AFTER) % count != place:
        return age >= tickets.FLUSH_AFTER * (count + 1)
    wait = tickets.FLUSH_AFTER * (1 + (_PHASE if count < 2 else 0))
    return len(commits) >= tickets.FLUSH_COUNT or age >= wait
