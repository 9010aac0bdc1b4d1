"""Work through the shared remote (see ``hystate.cluster.sync`` and docs/SYNC.md): claims
acknowledged only once the pushed tip holds them, and ``sync.push: each`` around other transitions.

A claim runs under the node's sync lock: sync, claim locally (``claims.claim``), push. A claim that
lost the race was dropped by the replay; another episode is taken, up to the limit. With the
remote unreachable, new claims are refused (exit 7) and a local claim not yet pushed is
withdrawn (the node's unpublished commits are replayed without it).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from hystate.cluster import lease_refs
from hystate.cluster.sync import (
    ROUNDS,
    ClaimsOffline,
    Report,
    move_forward,
    remote_of,
    sync_lock,
    sync_locked,
    timeout,
)
from hystate.core.errors import HystateError, LockBusy
from hystate.core.model import ProcessingStage
from hystate.engine import claims
from hystate.git import remote as gr

if TYPE_CHECKING:
    from hystate.engine.transition import TransitionResult
    from hystate.engine.workspace import Workspace


def claim(
    ws: Workspace,
    stage: str | ProcessingStage,
    limit: int,
    worker: str | None,
    remote: str | None = None,
) -> list[TransitionResult]:
    """Claims acknowledged by the remote (see the module docstring)."""
    name = remote_of(ws, remote)
    assert name is not None
    acked: list[TransitionResult] = []
    with sync_lock(ws):
        _online(ws, name, lambda: sync_locked(ws, name))
        for _ in range(ROUNDS):
            results = claims.claim(ws, stage, limit - len(acked), worker)
            if not results:
                break
            withdraw = frozenset(r.commit for r in results if r.commit)
            report = _online(ws, name, lambda: sync_locked(ws, name, fetched=True), withdraw)
            assert report.head is not None
            for result in results:
                if _pushed(ws, report, result):
                    acked.append(result)
            if len(acked) >= limit:
                break
        lease_refs.publish(ws, name, timeout(ws), only_if_changed=True, quiet=True)
    return acked


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
                branch = gr.branch_of(ws.repo)
                tip = ws.repo.refs.resolve(gr.tracking_ref(remote, branch))
                move_forward(ws, tip, Report(remote, branch), withdraw)
            except HystateError as undo:
                ws.notice(f"could not withdraw the unacknowledged claim: {undo}")
        if not isinstance(exc, gr.Unreachable):
            raise
        raise ClaimsOffline(
            f"{exc}: new claims need the remote (held episodes can still move; `hystate sync`"
            " catches up)"
        ) from None


def _pushed(ws: Workspace, report: Report, result: TransitionResult) -> bool:
    """Whether the pushed tip holds this very claim commit (as it was, or as replayed): not
    only an equal history entry, which another node's worker of the same name claiming the
    same episode in the same second also writes."""
    sha = result.commit
    if not sha or report.head is None:
        return False
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


def after_transition(ws: Workspace, sha: str | None) -> None:
    """``sync.push: each``: push after a transition, best effort (never fails it)."""
    name = ws.sync_remote
    if not sha or not name or ws.syncing or ws.config.get("sync.push") != "each":
        return
    try:
        with sync_lock(ws, wait=0):
            report = sync_locked(ws, name)
            lease_refs.publish(ws, name, timeout(ws), only_if_changed=True, quiet=True)
        for row in report.dropped:
            ws.notice(f"sync dropped {row['id']}: {row['from']} -> {row['to']}: {row['reason']}")
    except LockBusy:
        return  # another sync of this node is running; the next one carries this commit
    except HystateError as exc:
        ws.notice(f"not pushed yet ({exc}); the next `hystate sync` carries it")
