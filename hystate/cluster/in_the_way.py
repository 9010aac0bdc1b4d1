"""What stands in the work tree in the way of a sync's move forward.

- A branch that tracks hystate's local files (its locks, its temporary files) is refused.
- The episodes the move changes are locked while it runs, so no transition of this node is
  half way through one.
- A dead process's uncommitted write. A worker killed between writing an episode file and its
  commit leaves the file changed and its episode lock behind (a lock whose owner is gone). When
  the remote changed that episode too, git's checkout refuses to overwrite the file ("not
  uptodate"), and every later sync of the node (its claims included) would stop there until a
  person ran ``hystate fsck --repair``. So when the move broke such a lock to take the episode,
  it first mends the file exactly as ``fsck --repair`` would (``fsck.uncommitted.mend``): a
  valid, legal transition is committed as the transition it is (the replay then keeps it, or
  drops it and tells its worker, like any pending transition); anything else is put back to the
  committed version and kept under ``.git/hystate-lost/``. A changed file with no stale lock on
  it (a person's edit, a lock removed by hand) is never touched: the sync stops and says so.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any

from hystate.cluster.replay import capped
from hystate.core.errors import GitError
from hystate.core.locks import StateLock
from hystate.core.model import ID_PATTERN
from hystate.core.paths import NotRegularFile, read_bytes
from hystate.core.store import is_episode_path
from hystate.fsck.uncommitted import mend as mend_file
from hystate.git.objects import object_id

if TYPE_CHECKING:
    from hystate.engine.workspace import Workspace


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
def episode_locks(ws: Workspace, paths: list[str]) -> Iterator[list[str]]:
    """Hold the episode locks of ``paths``; yields those of ``paths`` whose lock was left by a
    process that is gone (broken to take it)."""
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
    held: list[StateLock] = []
    try:
        for eid in ids:
            lock = ws.episode_lock(eid)
            lock.acquire()
            held.append(lock)
        stale = {lock.path.name[: -len(".lock")] for lock in held if lock.broke_stale}
        yield [p for p in paths if p.startswith(prefix) and p.rpartition("/")[2][:-5] in stale]
    finally:
        for lock in reversed(held):
            lock.release()


def mend(ws: Workspace, rels: list[str]) -> list[dict[str, Any]]:
    """Mend the files of ``rels`` (episode files whose stale lock the caller broke and holds)
    that differ from HEAD; a row for each file mended, each also told on stderr."""
    rows = []
    for rel in rels:
        if not _differs(ws, rel):
            continue
        finding = mend_file(ws, rel)
        rows.append({"path": rel, "found": finding.message, "action": finding.action})
        ws.notice(
            f"{rel}: written by a process that died before its commit "
            f"({finding.message}): {finding.action}"
        )
    return rows


def _differs(ws: Workspace, rel: str) -> bool:
    committed = ws.repo.head_blob(rel)
    try:
        raw = read_bytes(ws.repo.root / rel)
    except FileNotFoundError:
        return committed is not None
    except NotRegularFile:
        return True
    return object_id(b"blob", raw) != committed
