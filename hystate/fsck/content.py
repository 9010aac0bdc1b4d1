"""fsck: index entries whose stat data vouches for content the work-tree file does not hold.

git trusts an entry whose stat data matches the file and never reads the file again; an entry
written with the stat data of another version (what a transition committed beside a person's
``git stash`` left before issue 25) makes ``git status`` clean while the file holds other
content. So fsck compares each entry's blob with the file's content itself, not only with
``git status``; ``--repair`` drops the stat data of those entries (git then sees the file as it
is, and the uncommitted-files check that follows judges it)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from hystate.core.paths import NotRegularFile, read_bytes
from hystate.fsck.findings import Finding
from hystate.git.objects import object_id
from hystate.git.staged import index_entries, smudge_index_entries

if TYPE_CHECKING:
    from hystate.engine.workspace import Workspace

STALE_STAT = (
    "git's index vouches for other content than the file holds (stat data of another "
    "version): git status, stash and commit -a do not see the file as it is"
)


def stale_stat(manager: Workspace, repair: bool) -> list[Finding]:
    repo = manager.repo
    dirty = set(repo.dirty_paths(manager.rel_state_dir))
    entries = [
        e
        for e in index_entries(repo, manager.rel_state_dir)
        if not e.skip_worktree and e.path not in dirty and e.mode.startswith("100")
    ]
    plain = repo.plain_attributes(e.path for e in entries)
    lying = []
    for entry in entries:
        try:
            data = read_bytes(repo.root / entry.path)
        except (OSError, NotRegularFile):
            continue  # missing or not a file: git status reports those itself
        sha = object_id(b"blob", data) if plain else repo.blob_id(entry.path, data)
        if sha.hex() != entry.sha:
            lying.append(entry)
    if repair and lying:
        with manager.repo_lock():
            smudge_index_entries(repo, lying, wait=manager.config.lock_timeout)
    action = "stat data dropped: git now reads the file" if repair else ""
    return [Finding("index-content", e.path, STALE_STAT, repair, action) for e in lying]
