"""What stands in the work tree in the way of a sync's move forward.

- A branch that tracks hystate's local files (its locks, its temporary files) is refused.
- The episodes the move changes are locked while it runs, so no transition of this node is
  half way through one.
- A dead process's uncommitted write. A worker killed between writing an episode file and its
  commit leaves the file changed and its episode lock behind. Whoever takes that lock next (a
  claim, a transition, this move) mends the file first, as ``fsck --repair`` would
  (``engine.workspace.EpisodeLock``, ``fsck.uncommitted.mend_orphan``); the move then starts
  again with what was committed (the replay keeps it, or drops it and tells its worker, like
  any pending transition). A changed file with no dead process's lock on it (a person's edit)
  is never touched: git's checkout refuses it and the sync stops, the file named.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any

from hystate.cluster.replay import capped
from hystate.core.errors import GitError
from hystate.core.model import ID_PATTERN
from hystate.core.store import is_episode_path

if TYPE_CHECKING:
    from hystate.engine.workspace import EpisodeLock, Workspace


def refuse_local_files(ws: Workspace, tree: bytes, paths: list[str]) -> None:
    """A branch that tracks what hystate keeps local in the state folder (its locks, its
    temporary files) is not checked out: a node would honour such a lock (every transition of
    the episode, or every sync, busy for good) or delete such a file."""
    prefix = ws.rel_state_dir.rstrip("/") + "/"
    for path in paths:
        inner = path[len(prefix) :] if path.startswith(prefix) else None
        name = path.rpartition("/")[2]
        if inner is None or ws.repo.objects.lookup(tree, path) is None:
            continue
        if inner.startswith(".locks/") or (name.startswith(".") and name.endswith(".tmp")):
            raise GitError(
                f"the remote's branch tracks {capped(path, 120)}: hystate's locks and "
                "temporary files are never committed",
                hint="`git rm --cached` it on the branch, then sync again",
            )


@contextmanager
def episode_locks(ws: Workspace, paths: list[str]) -> Iterator[list[dict[str, Any]]]:
    """Hold the episode locks of ``paths``; yields what taking them mended (a lock left by a
    process that is gone: what that process left, ``engine.workspace.EpisodeLock``)."""
    prefix = ws.rel_state_dir.rstrip("/") + "/"
    ids = sorted(
        {
            p.rpartition("/")[2][:-5]
            for p in paths
            if p.startswith(prefix)
            and is_episode_path(p[len(prefix) :])
            and ID_PATTERN.fullmatch(p.rpartition("/")[2][:-5])
        }
    )  # only names that can be episodes: a remote's `_sync.yaml` must not take the sync lock
    held: list[EpisodeLock] = []
    try:
        for eid in ids:
            lock = ws.episode_lock(eid)
            lock.acquire()
            held.append(lock)
        yield [row for lock in held for row in lock.mended]
    finally:
        for lock in reversed(held):
            lock.release()
