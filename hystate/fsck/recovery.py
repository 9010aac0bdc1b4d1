"""``RecoveryManager``: the seed's recovery API over ``hystate.fsck`` (the checks, one module
each) and ``hystate.fsck.stuck`` (episodes whose worker is gone)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from hystate import fsck
from hystate.core.model import EpisodeState, ProcessingStage
from hystate.fsck import stuck
from hystate.fsck.findings import Finding

if TYPE_CHECKING:
    from hystate.engine.workspace import Workspace

S = ProcessingStage
__all__ = ["Finding", "RecoveryManager"]


class RecoveryManager:
    def __init__(self, ws: Workspace) -> None:
        self.manager = ws
        self.repo = ws.repo
        self.store = ws.store

    def identify_incomplete(self) -> dict[ProcessingStage, list[str]]:
        """The seed's map: every stage but published and skipped -> the ids in it (stages
        with no episode are left out)."""
        incomplete: dict[ProcessingStage, list[str]] = {}
        for stage in S:
            if stage not in (S.PUBLISHED, S.SKIPPED):
                ids = [e.episode_id for e in self.manager.get_episodes_by_stage(stage)]
                if ids:
                    incomplete[stage] = ids
        return incomplete

    def resume_processing(self) -> list[Finding]:
        """Mark stuck episodes failed ("worker lost") so they are retried like any failure."""
        return [f for f in stuck.stuck_findings(self.manager, repair=True) if f.repaired]

    def cleanup_orphaned_files(self, *, remove: bool = False) -> list[Finding]:
        return fsck.orphans(self.manager, remove=remove)

    def fsck(self, *, repair: bool = False, remove_orphans: bool = False) -> list[Finding]:
        """Every check of ``hystate.fsck``, in order (see ``fsck.CHECKS``)."""
        return fsck.fsck(self.manager, repair=repair, remove_orphans=remove_orphans)

    def stuck(self) -> list[tuple[EpisodeState, str]]:
        """Episodes stuck in an active stage (lease expired, or the worker process that
        registered itself on this host is gone), with the reason. See ``hystate.engine.leases``."""
        return stuck.stuck(self.manager)
