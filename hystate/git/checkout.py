"""Moving the checkout forward to a commit the way ``git checkout`` does, for ``hystate sync``:
git's own two-tree checkout (``read-tree -m -u``) computes the index and writes the changed
files (refusing to overwrite a person's local changes), run on a private copy of the index
while hystate holds ``index.lock``; the branch moves compare-and-swap before the lock is
renamed over the index, the same order as every hystate commit (``commit.py``).

A move killed after git wrote the files and before the branch moved leaves files that already
are what the target has, with the index still at the old commit: the next move takes those
as they are (``_already_there``) instead of refusing them as a person's changes.
"""

from __future__ import annotations

import os
import stat
from pathlib import Path
from typing import TYPE_CHECKING

from hystate.core.errors import CannotWrite, GitError, disk_full
from hystate.git import hooks
from hystate.git.objects import EXEC_MODE, FILE_MODE
from hystate.git.refs import Head, StaleHead

if TYPE_CHECKING:
    from hystate.git.repo import GitRepo

REGULAR_MODES = (FILE_MODE, EXEC_MODE)  # a file's modes; not a symlink, submodule or folder


def fast_forward(repo: GitRepo, old: Head, new: str, reason: str) -> None:
    """Move the checkout from ``old`` (HEAD as read) to commit ``new``: files and index as
    ``git checkout`` would leave them, the branch compare-and-swap. StaleHead when HEAD is no
    longer ``old``; GitError naming the file when a local change would be overwritten."""
    repo.check_writable()
    repo.settings.refresh()
    if old.sha is None:
        raise GitError("the branch has no commit yet: clone the remote instead")
    with repo.index_lock() as lock:
        if repo.refs.head() != old:
            raise StaleHead(old.ref or "HEAD")
        try:
            lock.stage_with_git(
                ["read-tree", "-m", "-u", old.sha, new],
                repo.root,
                _already_there(repo, old.sha, new),
            )
        except GitError as exc:
            local = any(m in exc.message for m in ("overwritten", "not uptodate", "untracked"))
            full = disk_full(repo.root, repo.git_dir)
            if full:  # git blames the files it could not refresh or write
                raise CannotWrite(
                    "cannot move the checkout to the remote's state: No space left on device"
                    f" (git said: {exc.message})",
                    hint=full,
                ) from None
            raise GitError(
                f"cannot move the checkout to the remote's state: {exc.message}",
                hint=(
                    "commit or stash your changes to those files, then sync again; "
                    "`hystate fsck --repair` mends what a dead hystate process left there"
                    if local
                    else "git will not check that commit out here: mend the remote's branch"
                ),
            ) from None
        committer = repo.settings.committer().line()
        repo.warnings += repo.refs.update(
            old, new, committer, f"hystate sync: {reason}", repo.settings.reflog
        )
        try:
            lock.commit()
            hooks.run_hook(repo, "post-index-change", ["1", "0"])  # the work tree was updated
        except OSError as exc:
            repo.warnings.append(f"the branch moved, but git's index was not updated: {exc}")


def _already_there(repo: GitRepo, old: str, new: str) -> list[str]:
    """Paths ``old..new`` changes that the work tree already holds as ``new`` has them (a
    regular file with the same blob and mode, or absent where ``new`` deletes it): what a
    move forward killed after git wrote the files and before the branch moved leaves behind.
    The checkout takes them as they are instead of refusing them as local changes."""
    objects = repo.objects
    old_tree, new_tree = (objects.commit_tree(bytes.fromhex(sha)) for sha in (old, new))
    changed = objects.diff(old_tree, new_tree)
    if not changed:
        return []
    staged = _index_entries(repo, changed)
    found = []
    for rel in changed:
        before = objects.lookup(old_tree, rel)
        if staged.get(rel) != (None if before is None else (before[0], before[1].hex())):
            continue  # a person staged something there: git's checkout decides
        entry = objects.lookup(new_tree, rel)
        if not _plain_parents(repo.root, rel):
            continue  # never read (or adopt) through a link
        try:
            st = os.lstat(repo.root / rel)
        except (FileNotFoundError, NotADirectoryError):
            if entry is None:
                found.append(rel)
            continue
        except OSError:
            continue
        if entry is None or not stat.S_ISREG(st.st_mode) or entry[0] not in REGULAR_MODES:
            continue
        if (entry[0] == EXEC_MODE) != bool(st.st_mode & 0o100) or st.st_size > 64 << 20:
            continue
        try:
            fd = os.open(repo.root / rel, os.O_RDONLY | os.O_NOFOLLOW)
            with os.fdopen(fd, "rb") as fh:
                data = fh.read()
        except OSError:
            continue
        if repo.blob_id(rel, data) == entry[1]:
            found.append(rel)
    return found


def _plain_parents(root: Path, rel: str) -> bool:
    """Every folder on the way to ``rel`` is a real folder (or absent), never a link."""
    here = root
    for part in rel.split("/")[:-1]:
        here = here / part
        try:
            if not stat.S_ISDIR(os.lstat(here).st_mode):
                return False
        except FileNotFoundError:
            return True
        except OSError:
            return False
    return True


def _index_entries(repo: GitRepo, rels: list[str]) -> dict[str, tuple[bytes, str]]:
    """(mode, blob sha) of each of ``rels`` in git's index (stage 0), absent when not there."""
    specs = [f":(literal){r}" for r in rels] if len(rels) <= 1000 else []  # argv stays short
    out = repo.git_bytes("ls-files", "-s", "-z", "--", *specs).decode("utf-8", "surrogateescape")
    entries = {}
    for item in out.split("\0"):
        meta, _, rel = item.partition("\t")
        parts = meta.split()
        if len(parts) == 3 and parts[2] == "0":
            entries[rel] = (parts[0].encode(), parts[1])
    return entries
