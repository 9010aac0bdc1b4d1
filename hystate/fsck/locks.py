"""fsck: stale locks, hystate's own and git's lock files a dead hystate process left; lock
paths that are not files (removed only when an empty folder or a FIFO nobody has open)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from hystate.core.locks import lock_status
from hystate.fsck import sweep
from hystate.fsck.findings import Finding

if TYPE_CHECKING:
    from hystate.engine.workspace import Workspace


def stale_locks(ws: Workspace, repair: bool) -> list[Finding]:
    found = []
    repo, locks_dir = ws.repo, ws.locks_dir
    for lock in sorted(locks_dir.glob("*.lock")) + sorted(locks_dir.glob("*.lock.break")):
        owner, stale = lock_status(lock)
        if not stale:
            continue
        who = owner.describe() if owner else "an unfinished write"
        finding = Finding("stale-lock", ws.store.name(lock), f"lock of {who}, which is gone")
        if repair:
            lock.unlink(missing_ok=True)
            finding.repaired, finding.action = True, "removed"
        found.append(finding)
    found += sweep.foreign_locks(ws, repair=repair)
    # git's own lock files, left by a hystate process killed while committing: the git
    # layer knows for certain which are hystate's (never a live process's, never git's).
    for lock in repo.git_locks():
        who_left = repo.stale_lock_owner(lock)
        if who_left is None:
            continue
        finding = Finding(
            "stale-lock", str(lock.relative_to(repo.root)),
            f"git lock left by hystate process {who_left}, which is gone",
        )  # fmt: skip
        if repair and repo.break_stale_lock(lock):
            finding.repaired, finding.action = True, "removed"
        found.append(finding)
    return found
