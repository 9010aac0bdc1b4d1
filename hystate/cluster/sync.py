"""Several machines, one state (SPEC 11): ``hystate sync`` and claims through a shared remote.

One sync: fetch the remote's branch; if the node has commits the remote lacks and the remote
moved on, replay them on the remote's tip (``hystate.cluster.replay`` decides each file; no
``git rebase`` in the work tree, where a person may be working: new commits are written with
the same author, message and trailers, then the checkout moves forward as ``git checkout``
would, see ``gitrepo.checkout.fast_forward``); push the result as a plain fast-forward push,
which the server accepts only on the tip it was built on (compare-and-swap); on a rejection,
fetch and replay again.

Locks, in this order: the node's sync lock (``.locks/_sync.lock``: one sync at a time on a
node), the locks of the episodes whose files the move forward changes (so no transition of
this node is half-way through one of them), the repo lock, git's ``index.lock``.

Claims (``hystate.cluster.remote_claims``) and what a transition's caller is told
(``hystate.cluster.acks``) build on one sync; a push that lost is retried until a deadline.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from hystate.cluster import in_the_way, journal, landed, lease_refs, tickets
from hystate.cluster.replay import Dropped, Move, capped, resolve
from hystate.core.errors import GitError, LockBusy, UsageError
from hystate.core.locks import StateLock
from hystate.engine import limits
from hystate.git import audit, checkout
from hystate.git import remote as gr
from hystate.git.refs import StaleHead

if TYPE_CHECKING:
    from hystate.engine.workspace import Workspace

SYNC_LOCK = "_sync.lock"
ON_REMOTE = "already on the remote"
WITHDRAWN = "claim not acknowledged (remote unreachable or busy): withdrawn"
TURNS = "turns"  # refs/hystate/turns/<node>: when the node last lost a push (cluster.turns)
KINDS = (lease_refs.KIND, TURNS)  # the nodes' own refs every fetch brings
_REMOTES: set[tuple[str, str]] = set()  # (clone, remote) found configured in this process


class RemoteBusy(LockBusy):
    """Pushes kept losing to other nodes until the caller's deadline (exit 6)."""


class ClaimsOffline(gr.Unreachable):
    """New claims need the remote."""


@dataclass
class Report:
    remote: str
    branch: str
    head: str | None = None
    base: str | None = None  # the remote's tip the landed push was built on
    pushed: list[dict[str, Any]] = field(default_factory=list)
    replayed: list[dict[str, Any]] = field(default_factory=list)
    dropped: list[dict[str, Any]] = field(default_factory=list)
    mended: list[dict[str, Any]] = field(default_factory=list)  # dead processes' writes
    rounds: int = 0
    landed: bool = False  # a push of this sync landed (not in as_dict: `pushed` says what)

    def as_dict(self) -> dict[str, Any]:
        return {
            "remote": self.remote,
            "branch": self.branch,
            "head": self.head,
            "rounds": self.rounds,
            "pushed": self.pushed,
            "replayed": self.replayed,
            "dropped": self.dropped,
            "mended": self.mended,
        }


def remote_of(ws: Workspace, override: str | None = None) -> str | None:
    if override is not None:
        try:
            return gr.check_name(override)
        except GitError as exc:
            raise UsageError(exc.message) from None  # --remote on the command line
    name = ws.sync_remote
    return gr.check_name(name) if name else None


def timeout(ws: Workspace) -> float:
    return float(ws.config.get("sync.timeout"))


@contextmanager
def sync_lock(ws: Workspace, wait: float | None = None) -> Iterator[None]:
    lock = StateLock(
        ws.locks_dir / SYNC_LOCK,
        timeout=ws.config.lock_timeout * 4 if wait is None else wait,
    )
    with lock:
        ws.syncing = True
        try:
            yield
        finally:
            ws.syncing = False


def sync(ws: Workspace, remote: str | None = None) -> Report:
    """``hystate sync``: fetch, replay, push (retried), publish this node's leases."""
    name = remote_of(ws, remote)
    if name is None:
        raise GitError(
            "no remote to sync with", hint="set sync.remote in hystate.yaml or give --remote"
        )
    with sync_lock(ws):
        report = sync_locked(ws, name)
        lease_refs.publish(ws, name, timeout(ws), only_if_changed=True)
        return report


def sync_locked(
    ws: Workspace,
    remote: str,
    withdraw: frozenset[str] = frozenset(),
    *,
    fetched: bool = False,
    deadline: float | None = None,
    brief: bool = False,
    lost: Callable[[], None] | None = None,
) -> Report:
    """One sync; ``fetched``: the tracking ref is fresh (just fetched), push before fetching.
    A push that lost to another node's is retried (fetch, replay, push) with a jittered pause
    until ``deadline`` (``time.monotonic()``; default ``sync.deadline`` from now): no fixed
    number of rounds, so no node gives up while the others keep winning. ``lost``: called
    after the fetch that follows each lost push (``cluster.turns`` tells the other nodes)."""
    repo = ws.repo
    if deadline is None:
        deadline = time.monotonic() + float(ws.config.get("sync.deadline"))
    if (str(repo.common_dir), remote) not in _REMOTES:  # (one `git config` per process)
        if not gr.has_remote(repo, remote):
            raise GitError(f"no git remote named {remote!r}", hint=f"`git remote add {remote} URL`")
        _REMOTES.add((str(repo.common_dir), remote))
    branch = gr.branch_of(repo)
    report = Report(remote, branch)
    wait = timeout(ws)
    ticketed = tickets.on(ws)
    kinds = (*KINDS, tickets.KIND) if ticketed else KINDS
    why = WITHDRAWN
    attempt = 0
    while True:
        report.rounds = attempt + 1
        if fetched and attempt == 0:
            tip = repo.refs.resolve(gr.tracking_ref(remote, branch))
        else:
            tip = gr.fetch(repo, remote, branch, wait, kinds=kinds, loose=ticketed)
            if attempt and lost is not None:
                lost()  # (fair turns: tell the other nodes, once their tables are fetched)
        head = repo.refs.head()
        if head.sha is None:
            raise GitError("the branch has no commit yet: clone the remote instead")
        orphans = tickets.ahead_of(ws, tip) if ticketed else []
        if tip == head.sha and not withdraw and not orphans:
            report.head = tip
            return report
        seen = len(report.dropped)
        new = move_forward(ws, tip, report, withdraw, orphans, why)
        # the workers that made them are told (not of one the remote holds already: a push of
        # this node that landed before its answer was lost, or the same change made twice)
        journal.record_dropped(ws, [r for r in report.dropped[seen:] if r["reason"] != ON_REMOTE])
        withdraw = frozenset()
        if new == tip:
            report.head = tip
            return report
        moves: list[tuple[str, str, str | None]] = []
        if ticketed:  # the moves not ticketed yet take their tickets with the branch, or none
            gone, moves = tickets.plan(ws, gr.commits_between(repo, tip, new))
            if gone:
                withdraw, why = frozenset(gone), tickets.LOST
                attempt += 1  # (fetched again, replayed without them)
                continue
        if tickets.push_branch(ws, remote, new, f"refs/heads/{branch}", tip, moves):
            gr.set_ref(repo, gr.tracking_ref(remote, branch), new)
            report.landed = True
            report.base = tip
            landed.note(ws, new)  # (what came after it is other nodes': cluster.turns)
            pushed = gr.commits_between(repo, tip, new) if tip and not brief else []
            report.pushed = [_describe(ws, c.sha) for c in pushed]  # (brief: a claim's)
            report.head = new
            return report
        if time.monotonic() >= deadline:
            raise RemoteBusy(
                f"{remote}: still losing the push to other nodes after {attempt + 1} rounds, "
                "at the deadline; this node's commits stay local",
                hint="sync again (or give a longer --deadline / sync.deadline)",
            )
        gr.wait_backoff(min(attempt, 1))  # short: a longer pause only lets the others win
        attempt += 1


def move_forward(
    ws: Workspace,
    tip: str | None,
    report: Report,
    withdraw: frozenset[str],
    extra: list[gr.CommitInfo] | None = None,
    why: str | None = None,
) -> str:
    """Replay the local commits the remote lacks on ``tip`` and move the checkout there; the
    commit to push (HEAD itself when it already builds on ``tip``). ``extra``: other nodes'
    commits to replay first (``tickets.orphans``); ``why``: the reason a withdrawn commit is
    dropped."""
    repo = ws.repo
    while True:
        head = repo.refs.head()
        if head.ref != f"refs/heads/{report.branch}":
            raise GitError(
                f"the checkout left {report.branch} during the sync (now {gr.branch_of(repo)})",
                hint=f"`git checkout {report.branch}`, then sync again",
            )  # never replay (and push) another branch's commits onto the shared one
        assert head.sha is not None
        if tip is None or (not withdraw and not extra and _descends(repo, head.sha, tip)):
            return head.sha  # the remote has nothing new: push as it is
        base = gr.merge_base(repo, head.sha, tip)
        if base is None:
            raise GitError(
                f"the remote's branch ({tip[:12]}) shares no history with this one: "
                "refusing to replay the state onto an unrelated repository",
                hint="check the remote's URL (`git remote -v`); a node is a clone of the remote",
            )
        local = gr.commits_between(repo, base, head.sha)
        mine = {(c.author, c.message) for c in local}  # (a replay keeps both)
        others = [c for c in extra or [] if (c.author, c.message) not in mine]
        new, replayed, dropped = replay(ws, tip, local, withdraw, why, others)
        if new is None:
            raise GitError("nothing to build on: the remote branch is empty and no commit is local")
        new_tree = repo.objects.commit_tree(bytes.fromhex(new))
        changed = repo.objects.diff(repo.head_tree(head), new_tree)
        in_the_way.refuse_local_files(ws, new_tree, changed)
        try:
            with in_the_way.episode_locks(ws, changed) as mended:
                if not mended:  # (a dead process's write mended: HEAD moved, replay again)
                    with ws.repo_lock():
                        reason = f"replayed {len(replayed)} on {tip[:12]}"
                        checkout.fast_forward(repo, head, new, reason)
        except StaleHead:
            continue  # a transition of this node committed meanwhile: replay it too
        if mended:
            report.mended += mended
            continue  # replayed again, with what was committed for the dead process
        report.replayed += replayed
        report.dropped += dropped
        ws.refresh_once = False
        return new


def _descends(repo: Any, head: str, tip: str) -> bool:
    """Whether ``head`` builds on ``tip``: the few commits a node made since it pushed are
    walked first (no git process), else git decides."""
    sha: str | None = head
    for _ in range(8):
        if sha == tip:
            return True
        if sha is None:
            return False
        parents = gr.commit_info(repo, sha).parents
        if len(parents) != 1:
            break
        sha = parents[0]
    return gr.is_ancestor(repo, tip, head)


def replay(
    ws: Workspace,
    tip: str | None,
    commits: list[gr.CommitInfo],
    withdraw: frozenset[str] = frozenset(),
    why: str | None = None,
    extra: list[gr.CommitInfo] | None = None,
) -> tuple[str | None, list[dict[str, Any]], list[dict[str, Any]]]:
    """Write the replayed commits on ``tip`` (``extra``, other nodes' commits, first);
    (new tip, replayed, dropped)."""
    repo = ws.repo
    objects = repo.objects
    moves = _moves(ws, commits)
    for info in extra or []:
        move = tickets.move_of(info)
        if move is not None:
            moves[info.sha] = move
    commits = [*(extra or []), *commits]
    replayed: list[dict[str, Any]] = []
    dropped: list[dict[str, Any]] = []
    prefix = ws.rel_state_dir.rstrip("/") + "/"
    for commit in commits:
        if len(commit.parents) > 1:
            raise GitError(
                f"commit {commit.sha[:12]} is a merge: sync replays a straight line of commits",
                hint="`git rebase` your branch onto the remote (or reset it), then sync",
            )
        move = moves.get(commit.sha)
        row = _row(commit.sha, move)
        if commit.sha in withdraw or (move is not None and move.lease in withdraw):
            dropped.append({**row, "reason": why or WITHDRAWN})
            continue
        parent_tree = (
            objects.commit_tree(bytes.fromhex(commit.parents[0])) if commit.parents else None
        )
        tip_tree = objects.commit_tree(bytes.fromhex(tip)) if tip else None
        if tip is not None and commit.parents and commit.parents[0] == tip:
            tip = commit.sha  # already on the tip: kept as it is
            continue
        full = move and limits.replay_refusal(
            ws, tip_tree, move.episode_id, move.from_stage, move.to_stage
        )
        if full:  # the remote's tip filled the stage meanwhile: judged again there
            dropped.append({**row, "reason": full})
            continue
        changes: dict[str, tuple[bytes, bytes] | None] = {}
        reason = None
        for path in objects.diff(parent_tree, commit.tree):
            entries = [objects.lookup(t, path) for t in (parent_tree, commit.tree, tip_tree)]
            b, loc, rem = entries
            if rem == b or loc == rem:
                if loc != rem:
                    changes[path] = loc
                continue
            if not (path.startswith(prefix) and path.endswith(".yaml")):
                raise GitError(
                    f"commit {commit.sha[:12]} changes {path}, which the remote changed too",
                    hint="merge or rebase it by hand (`git pull --rebase`), then sync",
                )
            if any(e is not None and e[0] not in checkout.REGULAR_MODES for e in entries):
                reason = f"{path}: a symlink or submodule on one side, not an episode file"
                continue
            datas = [objects.read(e[1])[1] if e else None for e in entries]
            try:
                data = resolve(path, datas[0], datas[1], datas[2], move, ws.recovery)
            except Dropped as exc:
                reason = capped(str(exc))  # it quotes the remote's file (who moved it)
                continue
            mode = (loc or rem or b or (b"100644", b""))[0]
            changes[path] = None if data is None else (mode, objects.write(b"blob", data))
        new_tree = _rewrite(repo, tip_tree, changes) if changes else tip_tree
        if new_tree == tip_tree or new_tree is None:
            dropped.append({**row, "reason": reason or ON_REMOTE})
            continue
        assert tip is not None
        tip = gr.write_commit(repo, new_tree, tip, commit.author, commit.message)
        if reason is not None:
            dropped.append({**row, "reason": reason})
        replayed.append({**row, "new": tip})
    return tip, replayed, dropped


def _rewrite(
    repo: Any, tree: bytes | None, changes: dict[str, tuple[bytes, bytes] | None]
) -> bytes:
    return repo.objects.rewrite(tree, changes)  # type: ignore[no-any-return]


def _moves(ws: Workspace, commits: list[gr.CommitInfo]) -> dict[str, Move]:
    if not commits:
        return {}
    rows = ws.repo.log(
        f"{commits[0].sha}~..{commits[-1].sha}" if commits[0].parents else commits[-1].sha,
        ["%H"],
        trailer_keys=(keys := (audit.EPISODE, audit.FROM, audit.TO, audit.WORKER, audit.LEASE)),
    )
    return {
        sha: Move(*(t[k] or None for k in keys))  # type: ignore[arg-type]
        for sha, t in rows
        if t[audit.EPISODE] and t[audit.FROM] and t[audit.TO]
    }


def _row(sha: str, move: Move | None) -> dict[str, Any]:
    if move is None:
        return {"commit": sha, "id": None, "from": None, "to": None, "worker": None}
    return {
        "commit": sha,
        "id": move.episode_id,
        "from": move.from_stage,
        "to": move.to_stage,
        "worker": move.worker,
    }


def _describe(ws: Workspace, sha: str) -> dict[str, Any]:
    info = gr.commit_info(ws.repo, sha)
    subject = info.message.split(b"\n", 1)[0].decode(errors="replace")
    return {"commit": sha, "subject": subject}
