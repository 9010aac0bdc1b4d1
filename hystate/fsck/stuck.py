"""fsck: episodes stuck in an active stage (their lease expired, or the worker process that
registered itself on this host is gone: see ``hystate.engine.leases``) become failed with "worker
lost", so the retry budget applies."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import TYPE_CHECKING

from hystate.core.errors import InvalidData
from hystate.core.model import EpisodeState, ProcessingStage
from hystate.engine import leases
from hystate.fsck.findings import Finding

if TYPE_CHECKING:
    from hystate.engine.workspace import Workspace


def readable(ws: Workspace) -> list[EpisodeState]:
    """Every episode whose file reads; broken ones are left to the `invalid` check."""
    found = []
    for path in ws.store.iter_paths():
        try:
            found.append(ws.store.read(path)[1])
        except InvalidData:
            continue
    return found


def stuck(ws: Workspace) -> list[tuple[EpisodeState, str]]:
    """Episodes stuck in an active stage, with the reason."""
    now = datetime.now(UTC)
    try:
        candidates = ws.list_episodes([s for s in ProcessingStage if s.is_active])
    except InvalidData:  # a broken file (reported as invalid): read the others directly
        candidates = [e for e in readable(ws) if e.stage.is_active]
    found = []
    for episode in candidates:
        reason = leases.stuck_reason(ws, episode, now)
        if reason is not None:
            found.append((episode, reason))
    return found


def stuck_findings(ws: Workspace, repair: bool) -> list[Finding]:
    found = []
    if repair and ws.locks_dir.is_dir():
        active = [e.episode_id for e in readable(ws) if e.stage.is_active]
        leases.prune(ws.locks_dir, active, datetime.now(UTC))
    for episode, reason in stuck(ws):
        path = episode.path or episode.episode_id
        finding = Finding("stuck", path, f"{episode.stage.value}: {reason}")
        if repair:
            try:
                leases.mark_lost(ws, episode.episode_id, by="hystate-fsck")
                finding.repaired, finding.action = True, "marked failed (worker lost)"
            except leases.StillWorking:
                continue  # renewed meanwhile: not stuck after all
            except Exception as exc:
                finding.action = f"not repaired: {exc}"
        found.append(finding)
    return found
