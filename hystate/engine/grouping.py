"""A transition's commit through the group-commit queue (``hystate.git.group``).

The requester stores its blob, queues its request and then either finds it committed by the
holder of the repository lock or takes that lock itself and commits every queued request.
Used when nothing must be judged under the repository lock for this transition (no stage
limit to check, no subscriber that runs under the lock), git makes no commit itself (no
signing, no GIT_*_DATE) and the file is stored as written (plain attributes); ``git config
hystate.groupCommit false`` turns it off. Interrupted while waiting, the requester withdraws
its request; if a leader has already claimed it, it waits for that outcome first (its file is
then committed or not, never half), and leads itself when that leader is gone.
"""

from __future__ import annotations

import os
import random
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from hystate.core.errors import GitError, LockBusy
from hystate.core.locks import LockOwner, StateLock
from hystate.engine import limits
from hystate.git import group
from hystate.git.queue import Outcome, Queue, Request

if TYPE_CHECKING:
    from hystate.core.model import EpisodeState
    from hystate.core.rules import Change
    from hystate.engine.workspace import Workspace

_MIN_DELAY = 0.0003  # seconds between two looks for the outcome or the lock, at first
_MAX_DELAY = 0.003  # ... and at most (a look is a stat or two: cheap)
_HOLDER_LOOK = 0.05  # seconds between two full tries of a held lock (its holder checked)
_MORE_GROUPS = 4  # groups a leader commits after its own while requests keep arriving


@dataclass
class Ticket:
    """What the caller may undo: ``unsettled`` once the outcome of a claimed request is not
    known (the file is then left as it is, for the leader or fsck)."""

    unsettled: bool = False


def eligible(ws: Workspace, episode: EpisodeState, change: Change, rel: str) -> bool:
    """Whether this transition's commit may go through the queue."""
    settings = ws.repo.settings
    if not settings.flag("hystate.groupcommit", default=True):
        return False
    if settings.sign() or settings.dates_from_env() or not ws.repo.plain_attributes([rel]):
        return False
    if any(serial(ws, change) for serial in ws.subscribers.serial):
        return False
    entering = change.to.is_active and episode.stage is not change.to
    return not (entering and limits.limited(ws, change.to))


def queue_of(ws: Workspace) -> Queue:
    return Queue(ws.repo.git_dir, ws.rel_state_dir)


def commit(
    ws: Workspace, ticket: Ticket, rel: str, data: bytes, message: str, expect: bytes | None
) -> str | None:
    """Commit ``rel`` (already written with ``data``) as one commit of a group; its sha (None:
    HEAD had it already). Raises the error the leader recorded for it."""
    repo = ws.repo
    settings = repo.settings
    request = Request(
        rel, data, message, expect, settings.author(), settings.committer(), LockOwner.me()
    )
    queue = queue_of(ws)
    lock = ws.repo_lock()
    free = StateLock(lock.path, timeout=0)
    try:
        free.acquire()
    except LockBusy:
        pass
    else:  # nobody leads: lead, with this request in memory (no file, no waiting)
        try:
            outcome = group.lead(repo, queue, own=request)
            _keep_leading(ws, queue)
        finally:
            free.release()
        if outcome is None:  # never: its own request is always settled
            raise GitError("the group commit gave no outcome", hint="run `hystate fsck`")
        return outcome.result()
    group.prepare(repo, data)
    rid = queue.submit(request)
    try:
        outcome = _await(ws, queue, rid, lock.path, lock.timeout)
    except BaseException:
        if queue.cancel(rid):
            raise  # withdrawn before any leader saw it: nothing of it is committed
        ticket.unsettled = True
        try:  # claimed: its outcome decides whether the file is committed
            _await(ws, queue, rid, lock.path, None)
            ticket.unsettled = False
        except BaseException:
            pass
        raise
    if outcome is None:  # waited for the lock in vain: withdrawn
        owner = LockOwner.read(lock.path)
        who = owner.describe() if owner else "a process that is still writing it"
        raise LockBusy(
            f"{lock.path} is held by {who}; waited {lock.timeout:g}s",
            hint="try again later; `hystate unlock` removes it if that process is gone",
        )
    return outcome.result()


def _await(
    ws: Workspace, queue: Queue, rid: str, path: Path, timeout: float | None
) -> Outcome | None:
    """The request's outcome, leading when the repository lock is free; None once withdrawn
    after ``timeout`` seconds, or when the request is gone (never while it may land).

    A look is cheap (whether the outcome and the lock file exist): the lock is tried in full
    (its holder read, and broken when gone) once it is free, or every ``_HOLDER_LOOK``
    seconds while it is held."""
    deadline = None if timeout is None else time.monotonic() + timeout
    delay = _MIN_DELAY
    lock = StateLock(path, timeout=0)
    lock_path = os.fspath(path)
    tried = 0.0  # when the lock was last tried in full
    while True:
        known = queue.outcome(rid)
        if known is not None:
            return known
        now = time.monotonic()
        if now - tried >= _HOLDER_LOOK or not os.path.lexists(lock_path):
            tried = now
            try:
                lock.acquire()
            except LockBusy:
                pass
            else:
                try:
                    group.lead(ws.repo, queue, mine=rid)
                    _keep_leading(ws, queue)
                finally:
                    lock.release()
                known = queue.outcome(rid)
                if known is not None:
                    return known
                if not queue.exists(rid):
                    return None  # withdrawn or dropped: never committed
                delay = _MIN_DELAY
                continue
        if deadline is not None and now >= deadline:
            if queue.cancel(rid):
                return None
            deadline = None  # claimed meanwhile: wait for its outcome
        time.sleep(delay * random.uniform(0.5, 1.5))
        delay = min(delay * 1.5, _MAX_DELAY)


def _keep_leading(ws: Workspace, queue: Queue) -> None:
    """Commit what was queued meanwhile before letting the lock go (a few groups at most, so
    the leader's own caller is not kept waiting): no hand-over of the lock between groups,
    and the index this process just wrote is patched, not read again. The caller's own
    transition is committed by now: a failure here is the next leader's to meet."""
    for _ in range(_MORE_GROUPS):
        if not queue.listing()[".req"]:
            return
        try:
            group.lead(ws.repo, queue)
        except Exception:
            return
