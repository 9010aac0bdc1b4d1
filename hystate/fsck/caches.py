"""fsck: the caches (state.db, index.json) out of date with the tree: refreshed with --repair."""

from __future__ import annotations

from typing import TYPE_CHECKING

from hystate.fsck.findings import Finding

if TYPE_CHECKING:
    from hystate.engine.workspace import Workspace


def out_of_date(ws: Workspace, repair: bool) -> list[Finding]:
    cache = ws.cache
    if cache.is_current():
        return []
    finding = Finding("cache", ws.store.name(cache.db_path), "caches out of date")
    if repair:
        ws.refresh()
        finding.repaired, finding.action = True, "refreshed"
    return [finding]
