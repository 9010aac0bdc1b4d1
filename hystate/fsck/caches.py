"""fsck: the caches (state.db, index.json) out of date with the tree: refreshed with --repair."""

from __future__ import annotations

from typing import TYPE_CHECKING

from hystate.fsck.findings import Finding

if TYPE_CHECKING:
    from hystate.manager import StateManager


def out_of_date(manager: StateManager, repair: bool) -> list[Finding]:
    cache = manager.cache
    if cache.is_current():
        return []
    finding = Finding("cache", manager.store.name(cache.db_path), "caches out of date")
    if repair:
        manager.refresh()
        finding.repaired, finding.action = True, "refreshed"
    return [finding]
