"""fsck: git's index out of step with HEAD for state files whose work-tree file is HEAD's
(set back to HEAD with --repair)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from hystate.core.paths import read_bytes
from hystate.fsck.findings import Finding
from hystate.git.objects import object_id
from hystate.git.staged import reset_index_entries

if TYPE_CHECKING:
    from hystate.engine.workspace import Workspace

DRIFT = "git's index differs from HEAD and the work tree"


def index_drift(ws: Workspace, repair: bool) -> list[Finding]:
    repo = ws.repo
    out = repo.git("diff", "--cached", "--name-only", "-z", "--", ws.rel_state_dir)
    found = []
    for rel in filter(None, out.split("\0")):
        worktree = repo.root / rel
        head = repo.head_blob(rel)
        if (
            not worktree.is_symlink()
            and worktree.is_file()
            and head is not None
            and object_id(b"blob", read_bytes(worktree)) == head
        ):
            found.append(Finding("index-drift", rel, DRIFT, *reset_index(ws, rel, repair)))
    return found


def reset_index(ws: Workspace, rel: str, repair: bool) -> tuple[bool, str]:
    """(repaired, action): the index entry of ``rel`` set back to HEAD's, with ``repair``."""
    if not repair:
        return False, ""
    with ws.repo_lock():  # no transition commits while the entry is reset
        reset_index_entries(ws.repo, [rel], wait=ws.config.lock_timeout)
    return True, "index entry set back to HEAD"
