"""Group commit: the holder of the repository lock commits every queued request (``queue.py``)
as a chain of commits, one per request, with one index write and one HEAD update for all.

``lead`` runs under the repository lock (the caller's). Under ``index.lock`` it reads back each
claimed request's work-tree file (it must hold exactly the request's bytes), checks the file's
blob in the chain so far is the one the change was made from, makes the trees and the commit
(parent: the previous request's commit), then stages the new index once, moves HEAD from the
old tip to the last commit compare-and-swap (the reflog gets one line per commit, as git would
write them), renames the index into place and records each outcome.

Crash protocol (a leader killed at any moment; nothing is committed twice or half):
- a request is claimed by renaming it; a claimed request with no outcome is an orphan of a
  dead leader. The next leader (or ``hystate fsck --repair``) looks at HEAD: when HEAD has the
  request's bytes at its path, the dead leader's commit landed (HEAD moved before it died): the
  request is done (its commit is found in the history) and its path is staged again, for the
  index may not have been renamed into place; otherwise nothing of it landed and it goes back
  in the queue (or is dropped when its requester is gone too).
- HEAD moves once, compare-and-swap, so a group lands whole or not at all; the index follows
  (git's order: index staged under ``index.lock`` before HEAD, renamed after).
- a requester that is gone (killed while it waited) is never committed for: its file stays
  written but uncommitted, as when a worker dies between the write and the commit, for
  ``fsck --repair`` to judge; its episode lock is stale and may be broken by then.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING

from hystate.core.errors import GitError, HystateError
from hystate.git import hooks
from hystate.git import index as index_mod
from hystate.git.commit import _entries, commit_object, durability, object_flush, read_back
from hystate.git.objects import object_id
from hystate.git.queue import OWN, Outcome, Queue, Request
from hystate.git.refs import StaleHead

if TYPE_CHECKING:
    from hystate.git.base import RepoBase


@dataclass
class _Step:
    request: Request
    entry: tuple[bytes, bytes]  # (mode, blob)
    stat: os.stat_result
    landed: str | None = None  # already in HEAD (a dead leader's commit): that commit


def prepare(repo: RepoBase, data: bytes) -> None:
    """Store the blob of a request before queueing it (outside the lock: the leader then
    finds it stored), unsynced: the leader of its group flushes before HEAD moves."""
    before, repo.objects.fsync = repo.objects.fsync, None
    try:
        repo.objects.write(b"blob", data)
    finally:
        repo.objects.fsync = before


def lead(
    repo: RepoBase, queue: Queue, mine: str | None = None, own: Request | None = None
) -> Outcome | None:
    """Commit every request in ``queue`` (call it holding the repository lock), and ``own``
    (the caller's, never written to the queue): its outcome. ``mine``: the caller's queued
    request, committed whatever its owner check says."""
    listing = queue.listing()
    requests = [] if own is None else [replace(own, id=OWN)]
    mine = OWN if own is not None else mine
    orphans = set(listing[".claimed"])
    moved: list[bool] = []  # set once HEAD has moved
    for rid in listing[".claimed"]:  # orphans of a leader that died
        request = queue.read_claimed(rid)
        if request is not None:
            requests.append(request)
    for rid in listing[".req"]:
        request = queue.claim(rid)
        if request is not None:
            requests.append(request)
    if listing[".done"] or listing[".failed"]:
        queue.sweep()
    if not requests:
        return None
    try:
        _commit_group(repo, queue, requests, mine, orphans, moved)
    except HystateError as exc:  # the repository refuses (mid-rebase, a hook): all fail
        if moved:
            raise
        for request in requests:
            _settle(repo, queue, request.id, error=exc)
    except BaseException:
        # HEAD has not moved: each is tried again by the next leader (the caller withdraws
        # its own); once it has, the claimed ones are orphans the next leader finds landed
        if not moved:
            for request in requests:
                queue.requeue(request.id)
        raise
    return queue.kept.pop(OWN, None)


def _commit_group(
    repo: RepoBase,
    queue: Queue,
    requests: list[Request],
    mine: str | None,
    orphans: set[str],
    moved: list[bool],
) -> None:
    repo.check_writable()
    repo.settings.refresh()
    sync = durability(repo)
    # A group with queued requests flushes its objects once (as core.fsyncMethod=batch), not
    # one fsync per object: their blobs were stored unsynced by their requesters.
    batch = "loose-object" in sync and any(r.id != OWN for r in requests)
    repo.objects.fsync = None if batch else sync.get("loose-object")
    if batch:
        sync = {**sync, "batch": "yes"}
    else:  # a lone request's few objects synced together, in place before HEAD moves
        repo.objects.defer(object_flush(repo))
    try:
        for _ in range(50):
            with repo.index_lock() as lock:
                steps = _read_back(repo, queue, requests, mine, orphans)
                if not steps:
                    return
                if _chain(repo, queue, lock, steps, sync, moved):
                    return
            requests = [s.request for s in steps]
    finally:
        repo.objects.abandon()  # what a group that did not land wrote: never put in place
        repo.objects.fsync = sync.get("loose-object")
    raise GitError("HEAD kept moving while hystate tried to commit; try again")


def _read_back(
    repo: RepoBase,
    queue: Queue,
    requests: Sequence[Request],
    mine: str | None,
    orphans: set[str],
) -> list[_Step]:
    """The requests whose file holds their bytes (under ``index.lock``); the others settled.
    An orphan whose bytes HEAD has at its path was committed by the leader that died."""
    head_tree = repo.head_tree()
    steps = []
    for request in requests:
        blob = object_id(b"blob", request.data)
        found = repo.objects.lookup(head_tree, request.rel)
        landed = (
            request.id in orphans
            and found is not None
            and found[1] == blob
            and request.expect != blob
        )
        if not landed and request.id != mine and request.owner.gone():
            queue.drop(request.id)  # its requester died waiting: never committed for it
            continue
        try:
            stat = read_back(repo, request.rel, request.data)
            entry = _entries(repo, {request.rel: request.data}, {request.rel: stat})[request.rel]
        except GitError as exc:
            if landed:  # committed; the file changed since: the index is fsck's to mend
                queue.settle(request.id, _last_commit(repo, request.rel))
            else:
                queue.settle(request.id, error=exc)
            continue
        step = _Step(request, entry, stat)
        if landed:
            step.landed = _last_commit(repo, request.rel)
        steps.append(step)
    return steps


def _last_commit(repo: RepoBase, rel: str) -> str | None:
    return repo.git("log", "-1", "--format=%H", "--", rel, check=False).strip() or None


def _chain(
    repo: RepoBase,
    queue: Queue,
    lock: index_mod.IndexLock,
    steps: list[_Step],
    sync: dict[str, str],
    moved: list[bool],
) -> bool:
    """Make the chain, stage the index, move HEAD: False when HEAD moved meanwhile."""
    head = repo.refs.head()
    tree = repo.head_tree(head)
    parent = head.sha
    log: list[tuple[str | None, str, bytes, str]] = []
    made: dict[str, str | None] = {}
    failed: dict[str, GitError] = {}
    staged = []
    for step in steps:
        request = step.request
        if step.landed is not None:
            made[request.id] = step.landed
            staged.append(step)
            continue
        found = repo.objects.lookup(tree, request.rel)
        if (None if found is None else found[1]) != request.expect:
            failed[request.id] = GitError(
                f"{request.rel} was committed by someone else (HEAD is now {(head.sha or '')[:8]})"
                " while hystate waited to commit it: nothing committed by hystate",
                hint="`hystate history` shows that commit; run the command again if still wanted",
            )
            continue
        new_tree = repo.objects.rewrite(tree, {request.rel: step.entry})
        staged.append(step)
        if new_tree == tree:
            made[request.id] = None
            continue
        commit = commit_object(
            repo, new_tree, parent, request.message, request.author, request.committer
        )
        repo.objects.remember_commit(commit, new_tree)
        sha = commit.hex()
        subject = request.message.split("\n", 1)[0]
        log.append((parent, sha, request.committer.line(), f"commit: {subject}"))
        made[request.id] = sha
        parent, tree = sha, new_tree
    if staged:
        lock.stage(
            [
                index_mod.Update(s.request.rel.encode(), s.entry[1], int(s.entry[0], 8), s.stat)
                for s in staged
            ],
            repo.root,
        )
    ref_sync = sync.get("reference")
    repo.objects.publish()  # a lone request's deferred objects: on disk and in place first
    if log and "batch" in sync:
        # every object of the group (and the requesters' blobs) on disk before the branch
        # names them: one flush, which also makes the new branch file durable when references
        # are synced (the flush runs after it is written, before it is renamed into place)
        if ref_sync:
            ref_sync = "sync"
        else:
            os.sync()
    if log:
        try:
            warnings = repo.refs.update(
                head, log[-1][1], log[-1][2], log[-1][3], repo.settings.reflog,
                ref_sync, steps=log,
            )  # fmt: skip
        except StaleHead:
            return False
        moved.append(True)
        repo.warnings += warnings
    # HEAD has moved: nothing raises from here (the transitions are in the history)
    try:
        if staged:
            lock.commit(sync.get("index"))
            hooks.run_hook(repo, "post-index-change", ["0", "0"])
    except OSError as exc:
        repo.warnings.append(f"the commit is made, but git's index was not updated: {exc}")
    for rid, error in failed.items():
        _settle(repo, queue, rid, error=error)
    for rid, made_sha in made.items():
        _settle(repo, queue, rid, made_sha)
    return True


def _settle(
    repo: RepoBase,
    queue: Queue,
    rid: str,
    sha: str | None = None,
    error: HystateError | None = None,
) -> None:
    try:
        queue.settle(rid, sha, error)
    except (OSError, HystateError) as exc:  # a full disk: its requester, still waiting, leads
        # and finds the claimed request (its bytes in HEAD: done)
        repo.warnings.append(f"the outcome of a queued commit could not be recorded: {exc}")
