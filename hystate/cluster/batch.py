"""Several claims per push: the workers of one node share its pushes (docs/SYNC.md).

Each worker commits its claim locally, at once, without the node's sync lock; then it waits
for whichever comes first:

- a push by another process of the node carried it: the remote-tracking tip (moved only by a
  push that landed, or a fetch) holds the claim's very history entry (its lease token): it is
  acknowledged with no git process of its own;
- the sync lock: the worker pushes everything the node has not pushed yet (its claim and those
  of the workers that claimed meanwhile), fetching and replaying only when that push lost.

So while one push is in flight, the claims of the node's other workers pile up and the next
push carries them all: a node's pushes carry more claims as contention grows, and the nodes'
throughput is no longer bounded by one push per claim. Each claim is acknowledged exactly when
the push carrying it lands; a claim some replay dropped (another node took the episode first)
is reported lost and its worker claims another. When the worker's own push fails (unreachable,
refused, losing at the deadline), only its own claims are withdrawn; the other waiting workers'
claims stay local and each of them pushes (or withdraws) its own in turn. A worker killed while
waiting leaves a claim nobody was told about, like a claim killed before its push: the next push
carries it and its lease recovers the episode.
"""

from __future__ import annotations

import os
import random
import stat
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING, TypeVar

from hystate.cluster import journal, lease_refs, turns
from hystate.cluster.sync import (
    SYNC_LOCK,
    ClaimsOffline,
    RemoteBusy,
    Report,
    move_forward,
    sync_lock,
    sync_locked,
    timeout,
)
from hystate.core.errors import GitError, HystateError, LockBusy
from hystate.core.locks import StateLock
from hystate.core.yamlio import YAMLError, load
from hystate.engine import claims
from hystate.git import audit, checkout
from hystate.git import remote as gr

if TYPE_CHECKING:
    from hystate.core.model import EpisodeState, ProcessingStage
    from hystate.engine.transition import TransitionResult
    from hystate.engine.workspace import Workspace

# Beyond the caller's deadline, how long a worker whose claim is committed waits for the sync
# lock: the holder is bounded by its own deadline and git's timeouts, and a dead holder's lock
# is broken at once, so this is never reached in practice.
GRACE = 600.0
WALK = 32  # commits walked back from a tip looking for a claim's own commit


@contextmanager
def local(ws: Workspace) -> Iterator[None]:
    """A local claim pushes nothing itself (no ``sync.push: each`` around it): its push is the
    batch's."""
    before = ws.syncing
    ws.syncing = True
    try:
        yield
    finally:
        ws.syncing = before


Carry = Callable[[list["TransitionResult"]], tuple[list["TransitionResult"], "HystateError | None"]]


def claim_loop(
    ws: Workspace,
    remote: str,
    stage: str | ProcessingStage,
    limit: int,
    worker: str | None,
    until: float,
    *,
    order: Callable[[EpisodeState], bytes],
    window: int,
    skip: Callable[[EpisodeState], bool] | None,
    carrier: Callable[[], Carry],
) -> list[TransitionResult]:
    """Claim locally and have ``carrier()``'s answer carry the claims to the remote, until
    ``limit`` are acknowledged or the deadline (``until``). An episode claimed and not
    acknowledged in this call is not claimed again by it; when nothing is ready as the node
    last saw it, one sync looks at the remote's latest first."""
    acked: list[TransitionResult] = []
    tried: set[str] = set()

    def passed(episode: EpisodeState) -> bool:
        return episode.episode_id in tried or (skip is not None and skip(episode))

    fresh = False
    while True:
        carry = carrier()  # (before the claims are made)
        with local(ws):  # committed here, acknowledged only once the remote holds them
            results = claims.claim(
                ws, stage, limit - len(acked), worker, order=order, window=window, skip=passed
            )
        if not results:
            if fresh:
                break
            with sync_lock(ws, wait=max(until - time.monotonic(), 0.0)):
                online(ws, remote, lambda: sync_locked(ws, remote, deadline=until))
            fresh = True
            continue
        got, error = carry(results)
        acked += got
        tried.update(r.episode.episode_id for r in results if r not in got)
        fresh = True
        if error is not None:
            if not acked:
                raise error
            ws.notice(f"{error}; {len(acked)} claim(s) acknowledged before it")
            break  # those are held: returned, never lost
        if len(acked) >= limit:
            break
        if time.monotonic() >= until:
            if acked:
                break
            raise RemoteBusy(
                f"{remote}: every claim lost to other nodes until the deadline",
                hint="claim again, or give a longer --deadline",
            )
    return acked


def check_lock(ws: Workspace) -> None:
    """Before a claim is committed: the node's sync lock path, if present, must be a lock file
    (a directory or a symlink there would make every claim wait in vain), else LockBusy now."""
    path = ws.locks_dir / SYNC_LOCK
    try:
        mode = os.lstat(path).st_mode
    except FileNotFoundError:
        return
    if not stat.S_ISREG(mode):
        StateLock(path, timeout=0).acquire()  # raises, naming what is there
        raise LockBusy(f"{path} is not a lock file hystate made")  # (not reached)


def tracking_tip(ws: Workspace, remote: str) -> str | None:
    """The remote's tip as this node last knew it (moved by a push that landed or a fetch)."""
    return ws.repo.refs.resolve(gr.tracking_ref(remote, gr.branch_of(ws.repo)))


def carried(
    ws: Workspace,
    remote: str,
    results: list[TransitionResult],
    until: float,
    before: str | None,
) -> tuple[list[TransitionResult], HystateError | None]:
    """The claims of ``results`` (committed locally) that reached the remote, by this process's
    push or by another's; the error that stopped this process's own push, if any (its claims
    not acknowledged are then withdrawn). ``before``: the tracking tip before they were made
    (a tip that has not moved since cannot hold them)."""
    tracking = gr.tracking_ref(remote, gr.branch_of(ws.repo))
    waiting = list(results)
    acked: list[TransitionResult] = []
    seen = before

    def carried() -> bool:  # a push (or fetch) of another process of the node moved the tip
        nonlocal seen, waiting
        tip = ws.repo.refs.resolve(tracking)
        if tip != seen:
            landed = [r for r in waiting if _landed(ws, tip, seen, r)]
            seen = tip
            acked.extend(landed)
            waiting = [r for r in waiting if r not in landed]
        return not waiting

    turn = wait_turn(ws, until, carried)
    if turn is None:
        return acked, None
    if isinstance(turn, LockBusy):
        return acked, LockBusy(
            f"{turn.message}; {len(waiting)} claim(s) stay committed on this node, "
            "not acknowledged",
            hint="the next sync pushes them and their leases expire",
        )
    got, error = pushing(ws, turn, lambda: _push(ws, remote, waiting, until, tracking, seen))
    return acked + got, error


def wait_turn(
    ws: Workspace, until: float, carried: Callable[[], bool]
) -> StateLock | LockBusy | None:
    """Wait for whichever comes first: ``carried()`` says another process of the node pushed
    what this one waits for (None), or the node's sync lock (returned, held). Past the
    deadline and ``GRACE``, or when the lock's path is no lock file: that LockBusy."""
    lock = StateLock(ws.locks_dir / SYNC_LOCK, timeout=0)
    delay = 0.002
    while True:
        if carried():
            return None
        try:
            lock.acquire()
            return lock
        except LockBusy as exc:
            if time.monotonic() >= until + GRACE or "not a lock file" in exc.message:
                return exc
        time.sleep(delay * random.uniform(0.5, 1.5))
        delay = min(delay * 1.5, 0.04)


R = TypeVar("R")


def pushing(ws: Workspace, lock: StateLock, push: Callable[[], R]) -> R:
    """``push()`` under the held sync ``lock`` (released after), as a sync: no
    ``sync.push: each`` around what it commits."""
    syncing = ws.syncing
    ws.syncing = True
    try:
        return push()
    finally:
        ws.syncing = syncing
        lock.release()


def _push(
    ws: Workspace,
    remote: str,
    waiting: list[TransitionResult],
    until: float,
    tracking: str,
    seen: str | None,
) -> tuple[list[TransitionResult], HystateError | None]:
    """Under the sync lock: push what the node has not pushed (this worker's claims among it)."""
    tip = ws.repo.refs.resolve(tracking)
    acked = [r for r in waiting if tip != seen and _landed(ws, tip, seen, r)]
    head = ws.repo.refs.head().sha
    # not on the remote and no longer on the branch: a replay dropped it (another node first)
    mine = [r for r in waiting if r not in acked and _landed(ws, head, tip, r)]
    if not mine:
        return acked, None
    withdraw = frozenset(marks(mine))
    turns.before_push(ws, remote, gr.branch_of(ws.repo))  # (meanwhile, the batch grows)
    began = time.monotonic()

    def step(fetched: bool) -> Report:  # pushed first, fetched only when the push lost (CAS)
        return sync_locked(
            ws,
            remote,
            fetched=fetched,
            deadline=until,
            brief=True,
            lost=lambda: turns.lost(ws, remote, timeout(ws)),
        )

    try:
        report = online(ws, remote, lambda: step(True), withdraw, lambda: step(False))
    except HystateError as exc:
        return acked, exc
    if report.landed:
        elapsed = time.monotonic() - began
        turns.after_push(ws, report.rounds, elapsed, report.head, report.base)
        lease_refs.publish(ws, remote, timeout(ws), only_if_changed=True, quiet=True)
    if not report.replayed and not report.dropped:
        return acked + mine, None  # pushed as it was: the tip the remote took holds them
    return acked + [r for r in mine if _landed(ws, report.head, tip, r)], None


def marks(results: list[TransitionResult]) -> list[str]:
    """What finds these claims on the node's branch to withdraw them: their commits and their
    lease tokens (a replay may have rewritten the commit since)."""
    return [x for r in results for x in (r.commit, r.lease) if x]


def _landed(ws: Workspace, commit: str | None, stop: str | None, result: TransitionResult) -> bool:
    """Whether ``commit`` holds the claim: its very commit among the few from ``commit`` back to
    ``stop`` (all written on this node: no git process), else its history entry in the file."""
    sha = commit
    for _ in range(WALK):
        if sha is None or sha == stop:
            break
        if sha == result.commit:
            return True
        try:
            parents = gr.commit_info(ws.repo, sha).parents
        except GitError:
            break  # (a commit this clone lacks: the file decides)
        sha = parents[0] if parents else None
    return _holds(ws, commit, result)


def _holds(ws: Workspace, commit: str | None, result: TransitionResult) -> bool:
    """Whether the episode file at ``commit`` has this claim's very history entry (its lease
    token is random: not an equal entry another node's worker of the same name wrote)."""
    episode = result.episode
    lease = result.lease
    if not commit or not lease or not episode.path or not episode.history:
        return False
    objects = ws.repo.objects
    found = objects.lookup(objects.commit_tree(bytes.fromhex(commit)), str(episode.path))
    if found is None or found[0] not in checkout.REGULAR_MODES:
        return False
    data = objects.read(found[1])[1]
    if lease.encode() not in data:
        return False  # (no parse for the usual answer)
    try:
        doc = load(data)
    except (YAMLError, UnicodeDecodeError):
        return False
    history = doc.get("history") if isinstance(doc, dict) else None
    return isinstance(history, list) and episode.history[-1] in history


def online(
    ws: Workspace,
    remote: str,
    step: Callable[[], Report],
    withdraw: frozenset[str] = frozenset(),
    again: Callable[[], Report] | None = None,
) -> Report:
    """Run a sync step; if it fails, withdraw the claims not acknowledged (``withdraw``), so
    that no episode stays held for a worker that was told no. ``again``: when the step's push
    got no answer (a timeout, a dropped connection), the push may have landed all the same: the
    step run again (it fetches first, so claims the remote holds are found there, not withdrawn
    while the branch holds them); only when that fails too are they withdrawn."""
    try:
        try:
            return step()
        except gr.Unreachable:
            if not withdraw or again is None:
                raise
            return again()
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
