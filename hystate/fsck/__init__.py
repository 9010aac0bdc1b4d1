"""``hystate fsck [--repair]``: find and mend what a crash can leave, one module per check.

The checks run in the order of ``CHECKS`` (a later one may use what an earlier one found:
``uncommitted`` leaves alone a reverted transition fsck could not re-apply). Each repair takes
the episode's lock first, so an episode a live worker is moving is left alone.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from hystate.core.errors import InvalidData
from hystate.fsck import (
    caches,
    content,
    groups,
    guard,
    index,
    locks,
    powercut,
    stuck,
    sweep,
    tempfiles,
    uncommitted,
)
from hystate.fsck.findings import Finding
from hystate.review import validate as integrity

if TYPE_CHECKING:
    from hystate.engine.workspace import Workspace


@dataclass
class Run:
    """One fsck run: what the checks share."""

    ws: Workspace
    repair: bool
    remove_orphans: bool = False
    findings: list[Finding] = field(default_factory=list)


def _invalid(run: Run) -> list[Finding]:
    return [
        Finding("invalid", p.file, f"{p.path}: {p.message}") for p in integrity.validate(run.ws)
    ]


def orphans(ws: Workspace, *, remove: bool) -> list[Finding]:
    """Media files no episode points to, and files episodes point to that are missing."""
    if not ws.config.get("media.directories"):
        return []
    try:  # the cache (fresh): validate has just read every file, no need to parse them twice
        episodes = ws.list_episodes()
    except InvalidData:  # a broken file (reported as invalid): read the others directly
        episodes = stuck.readable(ws)
    return sweep.orphans(ws, episodes, remove=remove)


def _orphans(run: Run) -> list[Finding]:
    return orphans(run.ws, remove=run.remove_orphans and run.repair)


CHECKS: list[tuple[str, Callable[[Run], list[Finding]]]] = [
    ("stale locks", lambda r: locks.stale_locks(r.ws, r.repair)),
    ("temp files", lambda r: tempfiles.temp_files(r.ws, r.repair)),
    ("group-commit queue", lambda r: groups.queue_leftovers(r.ws, r.repair)),
    ("power-cut damage", lambda r: powercut.power_cut(r.ws, r.repair)),
    ("reverted transitions", lambda r: guard.fsck_reverts(r.ws, r.repair)),
    ("staged regressions", lambda r: guard.fsck_staged(r.ws, r.repair)),
    ("index vs content", lambda r: content.stale_stat(r.ws, r.repair)),
    ("uncommitted files", lambda r: uncommitted.uncommitted(r.ws, r.repair, r.findings)),
    ("index drift", lambda r: index.index_drift(r.ws, r.repair)),
    ("invalid files", _invalid),
    ("stuck episodes", lambda r: stuck.stuck_findings(r.ws, r.repair)),
    ("orphaned media", _orphans),
    ("foreign caches", lambda r: sweep.foreign_caches(r.ws, repair=r.repair)),
    ("caches out of date", lambda r: caches.out_of_date(r.ws, r.repair)),
]


def fsck(ws: Workspace, *, repair: bool = False, remove_orphans: bool = False) -> list[Finding]:
    """Every check in order; several see the same index drift, so each (kind, file) once."""
    run = Run(ws, repair, remove_orphans)
    for _name, check in CHECKS:
        run.findings += check(run)
    unique: dict[tuple[str, str], Finding] = {}
    for finding in run.findings:
        unique.setdefault((finding.kind, finding.path), finding)
    return list(unique.values())
