"""fsck: what the group-commit queue (``hystate.git.group``) can be left holding: requests
claimed by a leader that died, requests of requesters that are gone, outcomes nobody will
read. ``--repair`` takes the repository lock and does what the next leader would: a claimed
request whose bytes HEAD has is done (its path staged again), the others go back in the queue
and are committed for their live requesters or dropped; stale outcomes are removed."""

from __future__ import annotations

from typing import TYPE_CHECKING

from hystate.core.errors import LockBusy
from hystate.core.locks import StateLock, lock_status
from hystate.engine import grouping
from hystate.fsck.findings import Finding
from hystate.git import group

if TYPE_CHECKING:
    from hystate.engine.workspace import Workspace


def queue_leftovers(ws: Workspace, repair: bool) -> list[Finding]:
    queue = grouping.queue_of(ws)
    listing = queue.listing()
    lock_path = ws.repo_lock().path
    owner, stale = lock_status(lock_path) if lock_path.exists() else (None, True)
    leaderless = stale or owner is None  # no live leader: what is claimed is an orphan
    found = []
    # the queue lives in the git directory, which may be outside the work tree (GIT_DIR,
    # core.worktree): shown from the work tree when it is inside it
    inside = queue.dir.is_relative_to(ws.repo.root)
    where = str(queue.dir.relative_to(ws.repo.root) if inside else queue.dir)
    for rid in listing[".claimed"] if leaderless else []:
        found.append(Finding("group-commit", f"{where}/{rid}", "claimed by a leader that is gone"))
    for rid in listing[".req"]:
        if queue.owner_gone(rid):
            found.append(
                Finding("group-commit", f"{where}/{rid}", "queued by a process that is gone")
            )
    for suffix in (".done", ".failed"):
        for rid in listing[suffix]:
            if queue.owner_gone(rid):
                found.append(Finding("group-commit", f"{where}/{rid}", "an outcome nobody reads"))
    if not repair or not found:
        return found
    lock = StateLock(lock_path, timeout=2)
    try:
        lock.acquire()
    except LockBusy:
        for finding in found:
            finding.action = "left alone: a leader is committing"
        return found
    try:
        group.lead(ws.repo, queue)
        queue.sweep()
    finally:
        lock.release()
    for finding in found:
        finding.repaired, finding.action = True, "recovered as the next leader would"
    return found
