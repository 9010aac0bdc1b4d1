"""``hystate fsck [--repair]``: find and mend what a crash can leave, one module per check.

The checks run in the order of ``CHECKS`` (a later one may use what an earlier one found:
``uncommitted`` leaves alone a reverted transition fsck could not re-apply). Each repair takes
the episode's lock first, so an episode a live worker is moving is left alone.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from hystate import guard, integrity, sweep
from hystate.errors import InvalidData
from hystate.findings import Finding
from hystate.fsck import caches, content, index, locks, stuck, tempfiles, uncommitted

if TYPE_CHECKING:
    from hystate.manager import StateManager


@dataclass
class Run:
    """One fsck run: what the checks share."""

    manager: StateManager
    repair: bool
    remove_orphans: bool = False
    findings: list[Finding] = field(default_factory=list)


def _invalid(run: Run) -> list[Finding]:
    return [
        Finding("invalid", p.file, f"{p.path}: {p.message}")
        for p in integrity.validate(run.manager)
    ]


def orphans(manager: StateManager, *, remove: bool) -> list[Finding]:
    """Media files no episode points to, and files episodes point to that are missing."""
    if not manager.config.get("media.directories"):
        return []
    try:  # the cache (fresh): validate has just read every file, no need to parse them twice
        episodes = manager.list_episodes()
    except InvalidData:  # a broken file (reported as invalid): read the others directly
        episodes = stuck.readable(manager)
    return sweep.orphans(manager, episodes, remove=remove)


def _orphans(run: Run) -> list[Finding]:
    return orphans(run.manager, remove=run.remove_orphans and run.repair)


CHECKS: list[tuple[str, Callable[[Run], list[Finding]]]] = [
    ("stale locks", lambda r: locks.stale_locks(r.manager, r.repair)),
    ("temp files", lambda r: tempfiles.temp_files(r.manager, r.repair)),
    ("reverted transitions", lambda r: guard.fsck_reverts(r.manager, r.repair)),
    ("staged regressions", lambda r: guard.fsck_staged(r.manager, r.repair)),
    ("index vs content", lambda r: content.stale_stat(r.manager, r.repair)),
    ("uncommitted files", lambda r: uncommitted.uncommitted(r.manager, r.repair, r.findings)),
    ("index drift", lambda r: index.index_drift(r.manager, r.repair)),
    ("invalid files", _invalid),
    ("stuck episodes", lambda r: stuck.stuck_findings(r.manager, r.repair)),
    ("orphaned media", _orphans),
    ("foreign caches", lambda r: sweep.foreign_caches(r.manager, repair=r.repair)),
    ("caches out of date", lambda r: caches.out_of_date(r.manager, r.repair)),
]


def fsck(
    manager: StateManager, *, repair: bool = False, remove_orphans: bool = False
) -> list[Finding]:
    """Every check in order; several see the same index drift, so each (kind, file) once."""
    run = Run(manager, repair, remove_orphans)
    for _name, check in CHECKS:
        run.findings += check(run)
    unique: dict[tuple[str, str], Finding] = {}
    for finding in run.findings:
        unique.setdefault((finding.kind, finding.path), finding)
    return list(unique.values())
